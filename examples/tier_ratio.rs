//! The compressed tier's compression ratio and memory per stored page on
//! real engine page images (issue 25): redb's file after a load of shuffled
//! keys, walkv's files after its `bench` workload, a text file and random
//! bytes. Every page of each file goes into a fresh
//! `CompressedTier::new(256 << 20)` (large enough to keep them all) under
//! one `FileKey`, at 4 KiB and 16 KiB pages, and the tier's `usage()` gives:
//!
//! - kept: pages the tier kept, of the pages offered (it refuses pages
//!   that do not compress, and samples a file whose pages keep failing);
//! - data ratio: `logical_bytes / stored_bytes`, the lz4 ratio alone;
//! - memory per kept page: `(bytes - fixed) / pages`, the tier's index,
//!   slab and allocator overhead included, and the ratio that gives; `fixed`
//!   is what the empty tier reports (tables sized by its 256 MiB budget),
//!   charged in the last column too (`bytes / pages`), where it dominates
//!   for small inputs.
//!
//! ```text
//! cargo run --release --features redb --example tier_ratio [-- REDB_KEYS WALKV_PUTS]
//! ```
//!
//! Defaults: 200,000 redb keys of 128-byte values (inserted in a shuffled
//! order, 10,000 a transaction, as `examples/record_redb.rs` loads them),
//! and `walkv bench DIR 100000 2`.

// walkv's engine and workload, reused as they are; this example does not
// call all of them.
#[allow(dead_code)]
#[path = "walkv/engine/mod.rs"]
mod engine;
#[allow(dead_code)]
#[path = "walkv/workload.rs"]
mod workload;

use std::path::Path;

use page_cache::tier::compressed::CompressedTier;
use page_cache::tier::{FileKey, SecondTier};
use page_cache::{PageCache, PAGE_SIZE};
use redb::{Database, TableDefinition};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");

#[path = "shared/rng.rs"]
mod rng;
use rng::Rng;

/// Builds a redb database of `keys` shuffled keys with 128-byte values, as
/// `examples/record_redb.rs` loads it, closes it and returns its bytes.
fn redb_image(dir: &Path, keys: u64) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let path = dir.join("ratio.redb");
    {
        let db = Database::create(&path)?;
        let mut rng = Rng(0x5EED_0024);
        let mut order: Vec<u64> = (0..keys).collect();
        rng.shuffle(&mut order);
        let mut value = [0u8; 128];
        for chunk in order.chunks(10_000) {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                for &k in chunk {
                    value.iter_mut().enumerate().for_each(|(i, b)| *b = (k as u8).wrapping_add(i as u8));
                    table.insert(k, value.as_slice())?;
                }
            }
            txn.commit()?;
        }
    }
    Ok(std::fs::read(&path)?)
}

/// An input's name and bytes.
type Named = (String, Vec<u8>);

/// Runs walkv's `bench` workload into `dir`, checkpoints the data file and
/// returns each file's name and bytes.
fn walkv_images(dir: &Path, puts: u64) -> Result<Vec<Named>, Box<dyn std::error::Error>> {
    let cache = || PageCache::builder().capacity(1024 * PAGE_SIZE).build();
    workload::bench(dir, puts, 2, cache)?;
    {
        // Every data page on the file, not only in the log.
        let c = cache()?;
        let store = engine::Store::open_dir(&c, dir)?;
        store.checkpoint()?;
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push((entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path())?));
        }
    }
    files.sort();
    Ok(files)
}

/// Puts every `1 << page_shift` page of `bytes` (the tail padded with
/// zeros) into a fresh tier and prints a table row.
fn row(what: &str, bytes: &[u8], page_shift: u8) {
    let tier = CompressedTier::new(256 << 20);
    // The tier's fixed tables (sized by its budget, not by what it holds).
    let fixed = tier.usage().bytes;
    let file = FileKey { dev: 1, ino: 1, generation: 1, page_shift };
    let ps = file.page_size();
    let mut page = vec![0u8; ps];
    let (mut total, mut zeros) = (0u64, 0u64);
    for (i, chunk) in bytes.chunks(ps).enumerate() {
        page[..chunk.len()].copy_from_slice(chunk);
        page[chunk.len()..].fill(0);
        zeros += page.iter().all(|&b| b == 0) as u64;
        tier.put_page(&file, i as u64, &page);
        total += 1;
    }
    let u = tier.usage();
    let per_page = |bytes: u64| match bytes.checked_div(u.pages) {
        None => "-".to_string(),
        Some(each) => format!("{each} B ({:.2}x)", u.logical_bytes as f64 / bytes.max(1) as f64),
    };
    let data_ratio = if u.pages == 0 {
        "-".to_string()
    } else {
        format!("{:.2}x", u.logical_bytes as f64 / u.stored_bytes.max(1) as f64)
    };
    println!(
        "| {what} | {} KiB | {total} ({zeros} zero) | {} ({:.0}%) | {data_ratio} | {} | {} |",
        ps >> 10,
        u.pages,
        100.0 * u.pages as f64 / total.max(1) as f64,
        per_page(u.bytes - fixed),
        per_page(u.bytes),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let redb_keys: u64 = args.first().map_or(Ok(200_000), |a| a.parse())?;
    let walkv_puts: u64 = args.get(1).map_or(Ok(100_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;

    let mut inputs: Vec<Named> = Vec::new();
    let redb = redb_image(dir.path(), redb_keys)?;
    inputs.push((format!("redb file, {redb_keys} keys x 128 B, {} MiB", redb.len() >> 20), redb));
    let walkv_dir = dir.path().join("walkv");
    for (name, bytes) in walkv_images(&walkv_dir, walkv_puts)? {
        inputs.push((format!("walkv `{name}` after `bench {walkv_puts} 2`, {} KiB", bytes.len() >> 10), bytes));
    }
    let readme = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))?;
    inputs.push((format!("README.md, {} KiB", readme.len() >> 10), readme));
    let mut rng = Rng(0xBAD5EED);
    let random: Vec<u8> = (0..(8 << 20) / 8).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
    inputs.push(("random bytes, 8 MiB".to_string(), random));

    println!();
    println!(
        "| input | page | pages | kept | data ratio | memory per kept page (ratio incl. overhead) | the same with the tier's fixed tables |"
    );
    println!("|---|---|---|---|---|---|---|");
    for page_shift in [12u8, 14] {
        for (what, bytes) in &inputs {
            row(what, bytes, page_shift);
        }
    }
    Ok(())
}
