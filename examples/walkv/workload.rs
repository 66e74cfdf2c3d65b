//! The `bench` and `crash-child` workloads: random commits from several
//! threads over one store.
//!
//! `crash-child` prints, for every commit, `try KEY HASH` before it starts
//! and `ack KEY HASH LSN` once it returned (the log is durable past it),
//! one line each, flushed; HASH is the FNV-1a 64 hash of the value in 16
//! hex digits, or `-` for a delete. Each thread owns the keys equal to its
//! number modulo the thread count, so a key's commits run one after the
//! other: after a kill, the recovered value of a key is its last
//! acknowledged value or the one of the `try` after it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use page_cache::PageCache;

use crate::engine::{page, trace, Store};

/// Keys the crash child uses: 2 per data page on average.
const CHILD_KEYS: u64 = 512;

/// xorshift64*: a small, seedable generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// FNV-1a 64 of a value, as the crash child prints it.
pub fn value_hash(value: &[u8]) -> String {
    let h = value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

fn line(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Random commits forever from `threads` threads (see the module docs).
/// The first error (a failed commit, or stdout closed) ends the process
/// with status 1.
pub fn crash_child(cache: &PageCache, dir: &Path, seed: u64, threads: usize) -> io::Result<()> {
    let store = Store::open_dir(cache, dir)?;
    let r = store.recovery();
    line(format_args!("open {} {} {}", r.records, r.replayed, r.rebuilt_pages))?;
    let per_thread = (CHILD_KEYS / threads as u64).max(1);
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let store = &store;
            s.spawn(move || {
                let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x5851_f42d_4c95_7f2d));
                let err = loop {
                    let key = t + threads as u64 * rng.below(per_thread);
                    let value: Option<Vec<u8>> = if rng.below(5) == 0 {
                        None
                    } else {
                        let len = 1 + rng.below(page::MAX_VALUE as u64) as usize;
                        Some((0..len).map(|_| rng.next() as u8).collect())
                    };
                    let hash = value.as_deref().map_or_else(|| "-".to_string(), value_hash);
                    if let Err(e) = line(format_args!("try {key} {hash}")) {
                        break e;
                    }
                    let lsn = match store.commit(key, value.as_deref()) {
                        Ok(lsn) => lsn,
                        Err(e) => break e,
                    };
                    if let Err(e) = line(format_args!("ack {key} {hash} {lsn}")) {
                        break e;
                    }
                };
                eprintln!("walkv crash-child: {}: {err}", dir.display());
                std::process::exit(1);
            });
        }
    });
    Ok(())
}

/// `n` puts of 32-byte values at random keys from `threads` threads, then
/// `n` gets, then a reopen (recovery over the whole log); prints the rates.
/// The keys and values come from fixed seeds.
///
/// With `WALKV_TRACE=FILE` in the environment, the pages the puts and the
/// gets read and write (data and log; not the opens' recovery) are written
/// to FILE as a trace (see `engine::trace`), and one line about it goes to
/// stderr. With one thread, the same `n` over a new `dir` gives the same
/// trace.
pub fn bench(dir: &Path, n: u64, threads: usize, cache: impl Fn() -> io::Result<PageCache>) -> io::Result<()> {
    let keys = n.clamp(1, 10_000);
    let c = cache()?;
    let mut store = Store::open_dir(&c, dir)?;
    let trace_to = std::env::var_os("WALKV_TRACE").map(PathBuf::from);
    let trace = trace_to.as_ref().map(|_| trace::Trace::default());
    if let Some(trace) = &trace {
        store.set_trace(trace.clone());
    }
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> io::Result<()> {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (store, next) = (&store, &next);
                s.spawn(move || -> io::Result<()> {
                    let mut rng = Rng::new(0xbe7c4 + t);
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let key = rng.below(keys);
                        let value: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
                        store.put(key, &value)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("worker panicked"))))
    })?;
    let put_secs = start.elapsed().as_secs_f64();
    let syncs = store.log_syncs();
    let start = Instant::now();
    let mut rng = Rng::new(7);
    let mut found = 0u64;
    for _ in 0..n {
        found += store.get(rng.below(keys))?.is_some() as u64;
    }
    let get_secs = start.elapsed().as_secs_f64();
    if let (Some(path), Some(trace)) = (&trace_to, &trace) {
        let accesses = trace.take();
        let distinct = trace::write(path, &accesses)?;
        eprintln!("walkv trace: {} accesses, {distinct} distinct pages -> {}", accesses.len(), path.display());
    }
    let stats = c.stats();
    drop(store);
    drop(c);
    let start = Instant::now();
    let c = cache()?;
    let store = Store::open_dir(&c, dir)?;
    let open_secs = start.elapsed().as_secs_f64();
    let r = store.recovery();
    let report = format!(
        "puts: {n} from {threads} threads in {put_secs:.3} s = {:.0}/s, {syncs} log syncs ({:.1} commits per sync)\n\
         gets: {n} in {get_secs:.3} s = {:.2} us each ({found} found)\n\
         cache: {} flushes of the log asked by the cache, {} pages reclaim left for the log, \
         {} data+log pages written back, {} read checks failed\n\
         reopen: {open_secs:.3} s to scan {} records (last LSN {}) and replay {}\n",
        n as f64 / put_secs,
        n as f64 / syncs.max(1) as f64,
        get_secs * 1e6 / n.max(1) as f64,
        stats.log_flushes,
        stats.log_skips,
        stats.writeback_pages,
        stats.verify_failures,
        r.records,
        r.last_lsn,
        r.replayed
    );
    // A closed stdout (`| head -1`) is not an error of the bench.
    let _ = io::stdout().write_all(report.as_bytes());
    Ok(())
}
