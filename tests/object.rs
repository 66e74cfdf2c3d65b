//! `page_cache::object::ObjectBacking` against a real S3-compatible server:
//! moto's `moto_server`, which `.ci/run` starts and names in
//! `PAGE_CACHE_S3_ENDPOINT` (`http://127.0.0.1:PORT`). Without it each test
//! says it is skipped and passes, unless `CI` is set (then it fails). The
//! test that stops the server mid-read starts a private `moto_server`
//! (`PAGE_CACHE_MOTO_SERVER`, else `moto_server` on the `PATH`).
#![cfg(feature = "object-store")]

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use page_cache::object::object_store::aws::AmazonS3Builder;
use page_cache::object::object_store::path::Path;
use page_cache::object::object_store::{ObjectStore, ObjectStoreExt, RetryConfig};
use page_cache::object::ObjectBacking;
use page_cache::{Backing, PageCache};

#[path = "common/s3.rs"]
mod s3;
use s3::create_bucket;

/// The shared server's endpoint, or `None` (and a note) to skip.
fn endpoint(test: &str) -> Option<String> {
    match std::env::var("PAGE_CACHE_S3_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e.trim_end_matches('/').to_string()),
        _ if std::env::var_os("CI").is_some() => panic!("{test}: CI is set but PAGE_CACHE_S3_ENDPOINT is not"),
        _ => {
            eprintln!("{test}: skipped (set PAGE_CACHE_S3_ENDPOINT to an S3-compatible server, e.g. moto_server)");
            None
        }
    }
}

/// A bucket name no other test uses.
fn bucket_name(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("pc-{}-{}-{}", test.replace('_', "-"), std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn store(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    let retry = RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(5), ..RetryConfig::default() };
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .with_retry(retry)
            .build()
            .expect("build the S3 store"),
    )
}

/// Runs `f` on a runtime of the test's own (uploads and deletes).
fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn put(store: &Arc<dyn ObjectStore>, key: &str, bytes: &[u8]) {
    run(store.put(&Path::from(key), bytes.to_vec().into())).expect("put");
}

/// Deterministic bytes (xorshift), so a mismatch is reproducible.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_all(file: &page_cache::CachedFile) -> Vec<u8> {
    let mut out = vec![0u8; file.len() as usize];
    let mut done = 0;
    while done < out.len() {
        let end = (done + 100_000).min(out.len());
        let n = file.read_at(&mut out[done..end], done as u64).expect("read");
        assert!(n > 0, "early end at {done}");
        done += n;
    }
    out
}

#[test]
fn reads_equal_the_object_at_4_16_and_64_kib_pages() {
    let Some(ep) = endpoint("reads_equal_the_object") else { return };
    let bucket = bucket_name("reads");
    create_bucket(&ep, &bucket);
    let s = store(&ep, &bucket);
    // Not a multiple of any page size: the last page is short.
    let data = bytes(1_300_000 + 123, 7);
    put(&s, "dir/obj", &data);
    for ps in [4096usize, 16384, 65536] {
        let cache = PageCache::builder().capacity(32 << 20).build().unwrap();
        let backing = Arc::new(ObjectBacking::new(s.clone(), Path::from("dir/obj")).unwrap());
        assert_eq!(backing.len().unwrap(), data.len() as u64);
        let file = cache.open_backing_with_page_size(backing.clone(), false, ps).unwrap();
        assert_eq!(file.len(), data.len() as u64);
        // Random reads first (cold), then the whole object.
        let mut x = 12345u64 + ps as u64;
        for _ in 0..200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let off = (x >> 16) as usize % data.len();
            let len = 1 + (x >> 40) as usize % 20_000;
            let mut buf = vec![0u8; len];
            let n = file.read_at(&mut buf, off as u64).unwrap();
            let want = len.min(data.len() - off);
            assert!(n > 0 && n <= want, "page size {ps}: read {n} at {off}");
            assert_eq!(&buf[..n], &data[off..off + n], "page size {ps}: bytes at {off}");
        }
        assert!(read_all(&file) == data, "page size {ps}: whole object differs");
        // Past the end: nothing, as a file.
        let mut buf = [0u8; 10];
        assert_eq!(file.read_at(&mut buf, data.len() as u64).unwrap(), 0);
        let n = file.read_at(&mut buf, data.len() as u64 - 3).unwrap();
        assert_eq!(&buf[..n], &data[data.len() - 3..]);
        // The backing itself reads short at the end, with no request past it.
        let before = backing.requests();
        let mut tail = vec![0u8; 100];
        let n = backing.read_vectored_at(&mut [std::io::IoSliceMut::new(&mut tail)], data.len() as u64 - 40).unwrap();
        assert_eq!(n, 40);
        assert_eq!(&tail[..40], &data[data.len() - 40..]);
        assert_eq!(backing.read_vectored_at(&mut [std::io::IoSliceMut::new(&mut tail)], 1 << 40).unwrap(), 0);
        assert_eq!(backing.requests(), before + 1);
        // Fewer requests than pages: readahead windows are one GET each.
        let pages = data.len().div_ceil(ps) as u64;
        eprintln!("page size {ps}: {} GETs for {pages} pages", backing.requests());
    }
}

#[test]
fn writes_and_writable_opens_are_refused() {
    let Some(ep) = endpoint("writes_are_refused") else { return };
    let bucket = bucket_name("ro");
    create_bucket(&ep, &bucket);
    let s = store(&ep, &bucket);
    put(&s, "ro", b"immutable");
    let backing = Arc::new(ObjectBacking::new(s, Path::from("ro")).unwrap());
    let cache = PageCache::new(4 << 20).unwrap();
    let e = cache.open_backing(backing.clone(), true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnlyFilesystem, "{e}");
    let e = backing.write_vectored_at(&[std::io::IoSlice::new(b"x")], 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnlyFilesystem, "{e}");
    assert_eq!(backing.set_len(0).unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
    assert_eq!(backing.sync_data().unwrap_err().kind(), ErrorKind::ReadOnlyFilesystem);
    let file = cache.open_backing(backing, false).unwrap();
    let mut buf = [0u8; 9];
    file.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"immutable");
    assert!(file.write_at(b"x", 0).is_err());
}

#[test]
fn an_overwritten_object_is_new_on_reopen_and_stale_before() {
    let Some(ep) = endpoint("overwritten_object") else { return };
    let bucket = bucket_name("overwrite");
    create_bucket(&ep, &bucket);
    let s = store(&ep, &bucket);
    let old = bytes(200_000, 1);
    put(&s, "obj", &old);
    let cache = PageCache::builder().capacity(16 << 20).readahead_max(0).build().unwrap();
    let b1 = Arc::new(ObjectBacking::new(s.clone(), Path::from("obj")).unwrap());
    let f1 = cache.open_backing(b1.clone(), false).unwrap();
    let mut buf = vec![0u8; 4096];
    f1.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, old[..4096]);

    let new = bytes(300_000, 2);
    put(&s, "obj", &new);
    // The old open's cached page stays; an uncached one would mix versions:
    // refused as stale (If-Match).
    f1.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, old[..4096]);
    let e = f1.read_exact_at(&mut buf, 100_000).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleNetworkFileHandle, "{e}");

    // A new open (a new HEAD): a new identity and the new bytes.
    let b2 = Arc::new(ObjectBacking::new(s.clone(), Path::from("obj")).unwrap());
    let (st1, st2) = (b1.stat().unwrap().unwrap(), b2.stat().unwrap().unwrap());
    assert_eq!((st1.dev, st1.ino), (st2.dev, st2.ino), "same store and path");
    assert!(!st1.same_file(&st2), "a new ETag is a new file");
    assert_eq!(st2.size, new.len() as u64);
    assert!(st2.is_file());
    let f2 = cache.open_backing(b2, false).unwrap();
    assert_eq!(f2.len(), new.len() as u64);
    assert!(read_all(&f2) == new);
}

#[test]
fn a_deleted_object_is_not_found() {
    let Some(ep) = endpoint("deleted_object") else { return };
    let bucket = bucket_name("deleted");
    create_bucket(&ep, &bucket);
    let s = store(&ep, &bucket);
    put(&s, "gone", &bytes(50_000, 3));
    let cache = PageCache::builder().capacity(4 << 20).readahead_max(0).build().unwrap();
    let file = cache.open_backing(Arc::new(ObjectBacking::new(s.clone(), Path::from("gone")).unwrap()), false).unwrap();
    run(s.delete(&Path::from("gone"))).unwrap();
    let mut buf = [0u8; 100];
    let e = file.read_exact_at(&mut buf, 8192).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = ObjectBacking::new(s.clone(), Path::from("gone")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("gone"), "the message names the object: {e}");
    let e = ObjectBacking::new(s, Path::from("never-was")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn prefetch_of_64_scattered_pages_takes_few_requests() {
    let Some(ep) = endpoint("prefetch_scattered") else { return };
    let bucket = bucket_name("prefetch");
    create_bucket(&ep, &bucket);
    let s = store(&ep, &bucket);
    let data = bytes(24 << 20, 4);
    put(&s, "big", &data);
    let cache = PageCache::builder().capacity(64 << 20).readahead_max(0).build().unwrap();
    let backing = Arc::new(ObjectBacking::new(s, Path::from("big")).unwrap());
    let file = cache.open_backing(backing.clone(), false).unwrap();
    // 64 pages in 8 clusters 3 MiB apart, 44 to 60 KiB between the pages
    // of a cluster (under COALESCE_GAP, 64 KiB): one GET per cluster.
    let offsets: Vec<u64> =
        (0..64u64).map(|i| (i / 8) * (3 << 20) + (i % 8) * (56 << 10) + (i * 7919 % 3) * 4096).collect();
    file.prefetch(&offsets).unwrap();
    let gets = backing.requests();
    eprintln!("prefetch of 64 pages in 8 clusters: {gets} GETs");
    assert_eq!(gets, 8, "{gets} GETs for 64 pages in 8 clusters");
    for &off in &offsets {
        let mut buf = vec![0u8; 4096];
        file.read_exact_at(&mut buf, off).unwrap();
        assert!(buf == data[off as usize..off as usize + 4096], "page at {off}");
    }
    assert_eq!(backing.requests(), gets, "the prefetched pages were cached");
    // Two far clusters: two requests.
    let backing = Arc::new(ObjectBacking::new(backing_store(&backing), Path::from("big")).unwrap());
    let file = cache.open_backing(backing.clone(), false).unwrap();
    let far: Vec<u64> = (0..8u64).map(|i| i * 8192).chain((0..8u64).map(|i| (20 << 20) + i * 8192)).collect();
    file.prefetch(&far).unwrap();
    assert_eq!(backing.requests(), 2);
    // 16 pages 384 KiB apart (wider than the gap): a GET each, not one
    // GET dragging megabytes of gaps along.
    let backing = Arc::new(ObjectBacking::new(backing_store(&backing), Path::from("big")).unwrap());
    let file = cache.open_backing(backing.clone(), false).unwrap();
    let spread: Vec<u64> = (0..16u64).map(|i| (4 << 20) + i * (384 << 10)).collect();
    file.prefetch(&spread).unwrap();
    assert_eq!(backing.requests(), 16);
    for &off in &spread {
        let mut buf = vec![0u8; 4096];
        file.read_exact_at(&mut buf, off).unwrap();
        assert!(buf == data[off as usize..off as usize + 4096], "page at {off}");
    }
    assert_eq!(backing.requests(), 16, "the prefetched pages were cached");
}

/// The store of a backing, for a second open in the same test.
fn backing_store(b: &ObjectBacking) -> Arc<dyn ObjectStore> {
    b.store().clone()
}

#[test]
fn a_call_inside_a_tokio_runtime_is_refused_not_a_panic() {
    // No server needed: refused before any request.
    let s: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:9")
            .with_allow_http(true)
            .with_bucket_name("b")
            .with_region("us-east-1")
            .with_access_key_id("x")
            .with_secret_access_key("x")
            .build()
            .unwrap(),
    );
    let e = run(async { ObjectBacking::new(s, Path::from("k")).unwrap_err() });
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}

/// A private moto_server on a port of its own.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn binary() -> Option<String> {
        if let Ok(b) = std::env::var("PAGE_CACHE_MOTO_SERVER") {
            return Some(b);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
            .map(|p| p.display().to_string())
    }

    fn start(binary: &str, port: u16) -> Moto {
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_gone_mid_read_fails_within_the_timeout_and_reads_resume_after() {
    if endpoint("server_gone_mid_read").is_none() {
        return;
    }
    let Some(binary) = Moto::binary() else {
        assert!(std::env::var_os("CI").is_none(), "CI is set but no moto_server (PAGE_CACHE_MOTO_SERVER) was found");
        eprintln!("server_gone_mid_read: skipped (no moto_server: set PAGE_CACHE_MOTO_SERVER)");
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let moto = Moto::start(&binary, port);
    let ep = moto.endpoint();
    create_bucket(&ep, "private");
    let s = store(&ep, "private");
    let data = bytes(1 << 20, 5);
    put(&s, "obj", &data);

    let timeout = Duration::from_secs(3);
    let backing = Arc::new(ObjectBacking::with_timeout(s.clone(), Path::from("obj"), timeout).unwrap());
    let cache = PageCache::builder().capacity(8 << 20).readahead_max(0).build().unwrap();
    let file = cache.open_backing(backing, false).unwrap();
    let mut buf = vec![0u8; 4096];
    file.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data[..4096]);

    // Stopped: connections are refused (retried by the store, bounded by the timeout).
    moto.stop();
    let t = Instant::now();
    let e = file.read_exact_at(&mut buf, 65536).unwrap_err();
    eprintln!("server stopped: {:?} after {:?}: {e}", e.kind(), t.elapsed());
    assert!(t.elapsed() < timeout + Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::TimedOut), "{e}");

    // Hung: a listener that takes connections and never answers.
    {
        let hang = TcpListener::bind(("127.0.0.1", port)).expect("rebind the port");
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            hang.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(8);
            while Instant::now() < end {
                if let Ok((c, _)) = hang.accept() {
                    conns.push(c);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let t = Instant::now();
        let e = file.read_exact_at(&mut buf, 131072).unwrap_err();
        eprintln!("server hung: {:?} after {:?}: {e}", e.kind(), t.elapsed());
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        assert!(t.elapsed() >= timeout && t.elapsed() < timeout + Duration::from_secs(2), "took {:?}", t.elapsed());
        assert!(e.to_string().contains("obj"), "the message names the object: {e}");
        held.join().unwrap();
    }

    // Back (moto keeps objects in memory: the same bytes again, so the same ETag).
    let moto = Moto::start(&binary, port);
    create_bucket(&ep, "private");
    put(&s, "obj", &data);
    for off in [0u64, 65536, 131072, (1 << 20) - 4096] {
        file.read_exact_at(&mut buf, off).unwrap();
        assert!(buf == data[off as usize..off as usize + 4096], "page at {off}");
    }
    moto.stop();
}
