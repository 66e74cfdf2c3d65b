//! `s3cat s3://BUCKET/KEY...`: copies objects in S3-compatible storage
//! through one [`PageCache`] to standard output.
//!
//! The endpoint, region and credentials come from the usual environment
//! variables (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); an
//! `http://` endpoint is allowed without `AWS_ALLOW_HTTP`. Each object is
//! opened with one HEAD and read in 64 KiB pages, a readahead window per
//! ranged GET. Errors are reported as `s3cat: URL: reason`; the remaining
//! operands are still copied and the exit status is 1.
//!
//! ```sh
//! AWS_ENDPOINT_URL=http://127.0.0.1:5000 cargo run --release --features object-store \
//!   --example s3cat -- s3://bucket/key > copy
//! ```

use std::io::{self, Write};
use std::sync::Arc;

use page_cache::object::object_store::aws::AmazonS3Builder;
use page_cache::object::object_store::path::Path;
use page_cache::object::ObjectBacking;
use page_cache::PageCache;

/// Pages of 64 KiB: few requests and few page descriptors per object.
const PAGE: usize = 65536;

/// `s3://bucket/key` as (bucket, key).
fn parse(url: &str) -> io::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an s3://BUCKET/KEY URL"))?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok((bucket, key)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not an s3://BUCKET/KEY URL")),
    }
}

fn cat(cache: &PageCache, url: &str, out: &mut impl Write) -> io::Result<()> {
    let (bucket, key) = parse(url)?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok();
    if let Some(endpoint) = endpoint {
        builder = builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint);
    }
    let store = builder.build().map_err(io::Error::other)?;
    let backing = ObjectBacking::new(Arc::new(store), Path::from(key))?;
    let file = cache.open_backing_with_page_size(Arc::new(backing), false, PAGE)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
}

fn main() {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() || urls.iter().any(|a| a == "--help") {
        eprintln!("usage: s3cat s3://BUCKET/KEY... (endpoint and credentials from AWS_* variables)");
        std::process::exit(if urls.is_empty() { 1 } else { 0 });
    }
    let cache = match PageCache::builder().capacity(64 << 20).readahead_max(8 << 20).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("s3cat: {e}");
            std::process::exit(1);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut status = 0;
    for url in &urls {
        if let Err(e) = cat(&cache, url, &mut out).and_then(|()| out.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                std::process::exit(1);
            }
            eprintln!("s3cat: {url}: {e}");
            status = 1;
        }
    }
    std::process::exit(status);
}
