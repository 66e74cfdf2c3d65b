//! The miss path: random 4 KiB reads over a 256 MiB file through a cache of
//! a tenth of it, readahead off, so nearly every read allocates a frame
//! (reclaiming one), fills it from the file and evicts (vs `pread` of the
//! same offsets from the kernel's cache).
//!
//! Before criterion runs, a hit-ratio comparison (not a timing) is printed
//! to stderr: misses of our replacement policy (a real cache over a real
//! file) against a plain LRU and `quick_cache` at the same capacity, on a
//! Zipf trace, the same trace mixed with sequential scans, and a loop a
//! little larger than the cache. Set PAGE_CACHE_BENCH_NO_HIT_RATIO=1 to skip it.
//!
//! The data files live in /var/tmp/page-cache-bench/. Run: `cargo bench --bench reclaim`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{data_file, xorshift, MIB};
use criterion::{criterion_group, Criterion, Throughput};
use page_cache::{PageCache, PAGE_SIZE};

/// Reads the first `len` bytes with buffered reads, so the kernel caches them.
fn warm_kernel(path: &Path, len: u64) {
    let f = File::open(path).expect("open");
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while off < len {
        match f.read_at(&mut buf, off) {
            Ok(n @ 1..) => off += n as u64,
            _ => break,
        }
    }
}

fn miss_fill_evict(c: &mut Criterion) {
    const SIZE: u64 = 256 << 20;
    let path = data_file("data-256m", SIZE);
    warm_kernel(&path, SIZE);
    let cache = PageCache::builder().capacity(SIZE as usize / 10).readahead_max(0).build().expect("cache");
    let file = cache.open(&path).expect("open through cache");
    let std = File::open(&path).expect("open");
    let pages = SIZE / PAGE_SIZE as u64;
    let mut seed = 0x2545_F491_4F6C_DD1D;
    let offsets: Vec<u64> = (0..1 << 16).map(|_| xorshift(&mut seed) % pages * PAGE_SIZE as u64).collect();
    let mask = offsets.len() - 1;
    let mut i = 0usize;
    let mut next = || {
        i = i.wrapping_add(1);
        offsets[i & mask]
    };
    let mut buf = [0u8; PAGE_SIZE];

    let before = cache.stats();
    let mut g = c.benchmark_group("miss_fill_evict");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(PAGE_SIZE as u64));
    g.bench_function("page_cache_read_at", |b| {
        b.iter(|| {
            let n = file.read_at(&mut buf, next()).expect("read");
            black_box((n, &buf));
        })
    });
    g.bench_function("pread", |b| {
        b.iter(|| {
            let n = std.read_at(&mut buf, next()).expect("pread");
            black_box((n, &buf));
        })
    });
    // The data movement any cache of its own pays on a miss, with no
    // bookkeeping at all: pread into a frame of an arena as large as our
    // cache (round robin, so the frame is cold as a recycled one is), then
    // copy the frame out to the caller.
    let frames = cache.stats().total_pages as usize;
    let mut arena = vec![0u8; frames * PAGE_SIZE];
    let mut f = 0usize;
    g.bench_function("pread_into_cold_frame_then_copy", |b| {
        b.iter(|| {
            f = (f + 1) % frames;
            let frame = &mut arena[f * PAGE_SIZE..(f + 1) * PAGE_SIZE];
            let n = std.read_at(frame, next()).expect("pread");
            buf.copy_from_slice(frame);
            black_box((n, &buf));
        })
    });
    g.finish();
    let s = cache.stats();
    let (hits, misses) = (s.hits - before.hits, s.misses - before.misses);
    eprintln!(
        "miss_fill_evict: page cache hit ratio {:.1}% ({hits} hits, {misses} misses), {} evictions \
         ({} by kswapd, {} direct)",
        100.0 * hits as f64 / (hits + misses).max(1) as f64,
        s.evictions - before.evictions,
        s.kswapd_reclaims - before.kswapd_reclaims,
        s.direct_reclaims - before.direct_reclaims,
    );
}

// ---- hit ratios -------------------------------------------------------------

/// Cache size of every policy, in pages (32 MiB).
const CACHE_PAGES: u64 = 8192;
/// Pages the Zipf distribution covers.
const ZIPF_PAGES: u64 = 100_000;

/// `n` page indices drawn from Zipf(`s`) over `ZIPF_PAGES` pages; rank k goes
/// to a fixed random page, so hot pages are scattered over the file.
fn zipf_trace(n: usize, s: f64, seed: &mut u64) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(ZIPF_PAGES as usize);
    let mut sum = 0.0;
    for k in 1..=ZIPF_PAGES {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    let mut perm: Vec<u64> = (0..ZIPF_PAGES).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, (xorshift(seed) % (i as u64 + 1)) as usize);
    }
    (0..n)
        .map(|_| {
            let u = (xorshift(seed) >> 11) as f64 / (1u64 << 53) as f64 * sum;
            perm[cdf.partition_point(|&c| c < u).min(cdf.len() - 1)]
        })
        .collect()
}

/// `zipf` with a sequential scan of `scan` pages (from a random start)
/// inserted after every `every` accesses.
fn with_scans(zipf: &[u64], every: usize, scan: u64, seed: &mut u64) -> Vec<u64> {
    let mut out = Vec::new();
    for chunk in zipf.chunks(every) {
        out.extend_from_slice(chunk);
        let start = xorshift(seed) % (ZIPF_PAGES - scan);
        out.extend(start..start + scan);
    }
    out
}

/// Misses of our cache: every access a 4 KiB `read_at` through a fresh
/// cache of `CACHE_PAGES` frames over the real file, readahead off.
fn misses_ours(path: &Path, trace: &[u64]) -> (u64, u64) {
    let cache =
        PageCache::builder().capacity((CACHE_PAGES as usize) * PAGE_SIZE).readahead_max(0).build().expect("cache");
    let file = cache.open(path).expect("open through cache");
    let mut buf = [0u8; PAGE_SIZE];
    for &p in trace {
        file.read_exact_at(&mut buf, p * PAGE_SIZE as u64).expect("read");
    }
    let s = cache.stats();
    (s.misses, s.cached_pages)
}

/// Misses of a plain LRU of `CACHE_PAGES` pages.
fn misses_lru(trace: &[u64]) -> u64 {
    let mut stamp_of: HashMap<u64, u64> = HashMap::new();
    let mut by_stamp: BTreeMap<u64, u64> = BTreeMap::new();
    let mut misses = 0;
    for (now, &p) in trace.iter().enumerate() {
        let now = now as u64;
        match stamp_of.insert(p, now) {
            Some(old) => {
                by_stamp.remove(&old);
            }
            None => {
                misses += 1;
                if stamp_of.len() as u64 > CACHE_PAGES {
                    let (_, victim) = by_stamp.pop_first().expect("nonempty");
                    stamp_of.remove(&victim);
                }
            }
        }
        by_stamp.insert(now, p);
    }
    misses
}

/// Misses of `quick_cache::unsync::Cache` holding `CACHE_PAGES` entries.
fn misses_quick_cache(trace: &[u64]) -> u64 {
    let mut q = quick_cache::unsync::Cache::<u64, ()>::new(CACHE_PAGES as usize);
    let mut misses = 0;
    for &p in trace {
        if q.get(&p).is_none() {
            misses += 1;
            q.insert(p, ());
        }
    }
    misses
}

fn hit_ratio_report() {
    let path = data_file("data-1g", 1 << 30);
    let mut seed = 0x1234_5678_9ABC_DEF1;
    let zipf = zipf_trace(200_000, 0.99, &mut seed);
    let scans = with_scans(&zipf, 10_000, 20_000, &mut seed);
    let loop_pages = CACHE_PAGES * 11 / 10;
    let looped: Vec<u64> = (0..10).flat_map(|_| 0..loop_pages).collect();
    let traces: [(&str, &[u64]); 3] = [
        ("zipf(0.99) over 100k pages", &zipf),
        ("zipf + 20k-page scan every 10k", &scans),
        ("loop over 1.1x cache, 10 passes", &looped),
    ];
    eprintln!("\nhit ratio: misses per policy, cache of {CACHE_PAGES} pages (4 KiB reads, readahead off)");
    eprintln!("{:<34} {:>9} {:>16} {:>16} {:>16}", "trace", "accesses", "page-cache", "LRU", "quick_cache");
    for (name, trace) in traces {
        let t0 = Instant::now();
        warm_kernel(&path, ZIPF_PAGES * PAGE_SIZE as u64);
        let (ours, resident) = misses_ours(&path, trace);
        let lru = misses_lru(trace);
        let quick = misses_quick_cache(trace);
        let cell = |m: u64| format!("{m} ({:.1}%)", 100.0 * m as f64 / trace.len() as f64);
        eprintln!(
            "{:<34} {:>9} {:>16} {:>16} {:>16}   [{} pages resident at end; {:.1?}]",
            name,
            trace.len(),
            cell(ours),
            cell(lru),
            cell(quick),
            resident,
            t0.elapsed()
        );
    }
    eprintln!();
}

criterion_group!(benches, miss_fill_evict);

fn main() {
    common::print_machine();
    let bench_mode = std::env::args().any(|a| a == "--bench");
    if bench_mode && std::env::var_os("PAGE_CACHE_BENCH_NO_HIT_RATIO").is_none() {
        hit_ratio_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
