//! Records a real engine's page-access trace: runs a redb workload over a
//! `page_cache::redb::CachedBackend` wrapped in a recorder that notes, for
//! every `StorageBackend::read(offset, len)` redb makes, the 4 KiB page
//! indices it touches, and writes them as a trace of little-endian u64 page
//! indices for `examples/replay.rs` and `scripts/policy_table.py`.
//!
//! The workload: `--keys` u64 keys (default 200,000) with `--value-bytes`
//! values (default 128) inserted in a shuffled order, `--batch` keys a
//! transaction; then `--reads` point reads (default 300,000) whose keys
//! follow Zipf(`--zipf`, default 0.99) over the keys (ranks scattered by a
//! fixed permutation), with a range scan of `--scan-len` keys (default 100)
//! from a Zipf-chosen key every `--scan-every` reads (default 100).
//!
//! redb's own read cache is set to `--redb-cache` bytes (default 0), so each
//! page redb reads reaches the backend: the trace is the stream a page cache
//! under the engine sees. Writes are not recorded unless `--include-writes`
//! (redb writes whole pages from its write buffer at commit). By default
//! both phases' reads are recorded; `--reads-only` keeps the read phase's.
//! Fixed seeds: the same options give the same trace.
//!
//! ```text
//! cargo run --release --features redb --example record_redb -- OUT.u64 [options]
//! ```

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use page_cache::redb::CachedBackend;
use page_cache::PageCache;
use redb::{BackendError, Database, ReadableDatabase, StorageBackend, TableDefinition};

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv");
const TRACE_PAGE: u64 = 4096;

/// A `StorageBackend` that passes everything to a `CachedBackend` and
/// records the pages each read touches.
#[derive(Debug)]
struct Recorder {
    inner: CachedBackend,
    trace: Arc<Mutex<Vec<u64>>>,
    on: Arc<AtomicBool>,
    writes: bool,
}

impl Recorder {
    fn note(&self, offset: u64, len: usize) {
        if len == 0 || !self.on.load(Ordering::Relaxed) {
            return;
        }
        let first = offset / TRACE_PAGE;
        let last = (offset + len as u64 - 1) / TRACE_PAGE;
        self.trace.lock().expect("trace lock").extend(first..=last);
    }
}

impl StorageBackend for Recorder {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.note(offset, out.len());
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.writes {
            self.note(offset, data.len());
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[path = "shared/rng.rs"]
mod rng;
use rng::Rng;

/// Bounded Zipf(alpha) over `n` ranks by inverse CDF, ranks scattered over
/// the keys by a fixed permutation.
struct Zipf {
    cdf: Vec<f64>,
    perm: Vec<u64>,
}

impl Zipf {
    fn new(n: u64, alpha: f64, rng: &mut Rng) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for r in 1..=n {
            sum += (r as f64).powf(-alpha);
            cdf.push(sum);
        }
        cdf.iter_mut().for_each(|c| *c /= sum);
        let mut perm: Vec<u64> = (0..n).collect();
        rng.shuffle(&mut perm);
        Zipf { cdf, perm }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let r = self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1);
        self.perm[r]
    }
}

struct Opts {
    out: PathBuf,
    keys: u64,
    value_bytes: usize,
    batch: u64,
    reads: u64,
    zipf: f64,
    scan_every: u64,
    scan_len: usize,
    redb_cache: usize,
    include_writes: bool,
    reads_only: bool,
}

const USAGE: &str = "Usage: record_redb OUT.u64 [--keys N] [--value-bytes N] [--batch N] [--reads N] \
[--zipf A] [--scan-every N] [--scan-len N] [--redb-cache BYTES] [--include-writes] [--reads-only]";

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        out: PathBuf::new(),
        keys: 200_000,
        value_bytes: 128,
        batch: 10_000,
        reads: 300_000,
        zipf: 0.99,
        scan_every: 100,
        scan_len: 100,
        redb_cache: 0,
        include_writes: false,
        reads_only: false,
    };
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<String, String> { args.next().ok_or(format!("{name} needs a value")) };
        let bad = |e: &dyn std::fmt::Display| format!("{a}: {e}");
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--keys" => o.keys = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--value-bytes" => o.value_bytes = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--batch" => o.batch = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--reads" => o.reads = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--zipf" => o.zipf = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--scan-every" => o.scan_every = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--scan-len" => o.scan_len = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--redb-cache" => o.redb_cache = num(&a)?.parse().map_err(|e| bad(&e))?,
            "--include-writes" => o.include_writes = true,
            "--reads-only" => o.reads_only = true,
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ if out.is_none() => out = Some(PathBuf::from(a)),
            _ => return Err(format!("one output only (got {a} too)")),
        }
    }
    o.out = out.ok_or("no output path given")?;
    if o.keys == 0 || o.batch == 0 {
        return Err("--keys and --batch must be positive".into());
    }
    Ok(o)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("record_redb: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("record.redb");
    // The cache under the recorder does not shape the trace (redb's
    // requests do); large enough to keep the run quick.
    let cache = PageCache::builder().capacity(256 << 20).build()?;
    let trace = Arc::new(Mutex::new(Vec::new()));
    let on = Arc::new(AtomicBool::new(!o.reads_only));
    let recorder = Recorder {
        inner: CachedBackend::create(&cache, &path)?,
        trace: trace.clone(),
        on: on.clone(),
        writes: o.include_writes,
    };
    let db = Database::builder().set_cache_size(o.redb_cache).create_with_backend(recorder)?;
    let mut rng = Rng(0x5EED_0024);

    // Load: shuffled keys, values derived from the key.
    let mut keys: Vec<u64> = (0..o.keys).collect();
    rng.shuffle(&mut keys);
    let mut value = vec![0u8; o.value_bytes];
    for chunk in keys.chunks(o.batch as usize) {
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
    let load_accesses = trace.lock().expect("trace lock").len();
    on.store(true, Ordering::Relaxed);

    // Read: Zipf point reads, and a range scan every `scan_every` reads.
    let zipf = Zipf::new(o.keys, o.zipf, &mut rng);
    let txn = db.begin_read()?;
    let table = txn.open_table(TABLE)?;
    let (mut found, mut scanned) = (0u64, 0u64);
    for i in 0..o.reads {
        let k = zipf.sample(&mut rng);
        if table.get(k)?.is_some_and(|v| v.value().len() == o.value_bytes) {
            found += 1;
        }
        if o.scan_every > 0 && i % o.scan_every == o.scan_every - 1 {
            let from = zipf.sample(&mut rng);
            for row in table.range(from..)?.take(o.scan_len) {
                row?;
                scanned += 1;
            }
        }
    }
    drop(table);
    drop(txn);
    drop(db);
    assert_eq!(found, o.reads, "every key read back");

    let trace = std::mem::take(&mut *trace.lock().expect("trace lock"));
    let mut bytes = Vec::with_capacity(trace.len() * 8);
    trace.iter().for_each(|p| bytes.extend_from_slice(&p.to_le_bytes()));
    std::fs::write(&o.out, bytes)?;
    let mut distinct = trace.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!(
        "{}: {} accesses ({} in the load phase), {} distinct pages, file {} pages; {} reads, {} rows scanned",
        o.out.display(),
        trace.len(),
        if o.reads_only { 0 } else { load_accesses },
        distinct.len(),
        std::fs::metadata(&path)?.len() / TRACE_PAGE,
        o.reads,
        scanned,
    );
    Ok(())
}
