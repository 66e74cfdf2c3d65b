//! Replays a page-access trace through a [`PageCache`] and prints its miss
//! ratio: the cache side of the hit-ratio harness (`scripts/policy_table.py`
//! runs the same traces through libCacheSim's policies and Belady).
//!
//! A trace is a file of little-endian u64 page indices, one per access
//! (`scripts/gen_traces.py` writes them, `--features redb --example
//! record_redb` records one from redb), or libCacheSim's `oracleGeneral`
//! binary (24-byte records `u32 time, u64 id, u32 size, i64 next`; detected
//! by the `.oracleGeneral` suffix; object ids are numbered densely in order of
//! first access and sizes ignored: one object, one page).
//!
//! The replay makes a sparse temporary file of the trace's footprint (highest
//! index + 1 pages), opens it through a cache of the asked capacity with
//! readahead off, and reads a few bytes at `index * page_size` for each
//! access, on one thread. Misses are the cache's own count
//! ([`Stats::misses`](page_cache::Stats::misses): lookups that had to read the
//! file). Reclaim frees a batch when no frame is free (one frame below 1,024
//! frames, 16 to 32 above), so a few frames can sit free between batches:
//! `resident_avg` is the mean resident pages sampled after the cache first
//! filled, the capacity the policy actually had.
//!
//! ```text
//! cargo run --release --example replay -- TRACE [--capacity-pages N]... \
//!     [--capacities 1,10,40] [--page-size 4096] [--read-bytes 8] [--dir DIR]
//! ```
//!
//! `--capacities` takes percents of the trace's footprint in distinct pages
//! (rounded to at least one page); both options may be given and repeated.
//! One line per capacity:
//!
//! ```text
//! trace=loop capacity_pages=1000 frames=1000 accesses=500000 hits=0 misses=500000 miss_ratio=1.000000 resident_avg=976.4 resident_end=984 ...
//! ```

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use page_cache::PageCache;

const USAGE: &str = "Usage: replay TRACE [--capacity-pages N]... [--capacities P,P,...] \
[--page-size BYTES] [--read-bytes N] [--dir DIR] [--segment N]
Replay a page-access trace (little-endian u64 page indices, or libCacheSim
oracleGeneral by its .oracleGeneral suffix) through a page cache with
readahead off, and print its miss ratio at each capacity.

  --capacity-pages N   cache capacity in pages (repeatable)
  --capacities LIST    capacities as percents of the trace's distinct pages
  --page-size BYTES    file page size (default 4096)
  --read-bytes N       bytes read per access, at the page's start (default 8)
  --dir DIR            where to make the sparse temporary file (default: the temp dir)
  --segment N          also print, to stderr, the misses and the policy's counters
                       of every N accesses (where in a trace the misses are)";

struct Args {
    trace: PathBuf,
    pages: Vec<usize>,
    percents: Vec<f64>,
    page_size: usize,
    read_bytes: usize,
    dir: Option<PathBuf>,
    segment: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut trace = None;
    let mut pages = Vec::new();
    let mut percents = Vec::new();
    let mut page_size = 4096;
    let mut read_bytes = 8;
    let mut dir = None;
    let mut segment = 0;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--capacity-pages" => {
                pages.push(value(&a)?.parse().map_err(|e| format!("--capacity-pages: {e}"))?);
            }
            "--capacities" => {
                for p in value(&a)?.split(',').filter(|p| !p.is_empty()) {
                    percents.push(p.trim_end_matches('%').parse().map_err(|e| format!("--capacities {p}: {e}"))?);
                }
            }
            "--page-size" => page_size = value(&a)?.parse().map_err(|e| format!("--page-size: {e}"))?,
            "--read-bytes" => read_bytes = value(&a)?.parse().map_err(|e| format!("--read-bytes: {e}"))?,
            "--dir" => dir = Some(PathBuf::from(value(&a)?)),
            "--segment" => segment = value(&a)?.parse().map_err(|e| format!("--segment: {e}"))?,
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ if trace.is_none() => trace = Some(PathBuf::from(a)),
            _ => return Err(format!("one trace only (got {a} too)")),
        }
    }
    let trace = trace.ok_or("no trace given")?;
    if pages.is_empty() && percents.is_empty() {
        return Err("give --capacity-pages or --capacities".into());
    }
    if read_bytes == 0 || read_bytes > page_size {
        return Err(format!("--read-bytes must be 1..={page_size}"));
    }
    Ok(Args { trace, pages, percents, page_size, read_bytes, dir, segment })
}

/// The trace's page indices.
fn load_trace(path: &Path) -> std::io::Result<Vec<u64>> {
    let bytes = std::fs::read(path)?;
    let oracle = path.extension().is_some_and(|e| e == "oracleGeneral");
    if oracle {
        // u32 time, u64 id, u32 size, i64 next access: 24 bytes, packed.
        if bytes.len() % 24 != 0 {
            return Err(std::io::Error::other("oracleGeneral trace: length not a multiple of 24"));
        }
        let mut dense = HashMap::new();
        Ok(bytes
            .chunks_exact(24)
            .map(|r| {
                let id = u64::from_le_bytes(r[4..12].try_into().expect("8 bytes"));
                let next = dense.len() as u64;
                *dense.entry(id).or_insert(next)
            })
            .collect())
    } else {
        if bytes.len() % 8 != 0 {
            return Err(std::io::Error::other("u64 trace: length not a multiple of 8"));
        }
        Ok(bytes.chunks_exact(8).map(|r| u64::from_le_bytes(r.try_into().expect("8 bytes"))).collect())
    }
}

struct Run {
    frames: u64,
    hits: u64,
    misses: u64,
    resident_avg: f64,
    resident_end: u64,
    evictions: u64,
    refaults: u64,
    refault_activations: u64,
    readahead_pages: u64,
    /// Mean inactive list target (the climber's share) as a fraction of
    /// the pages on the lists, sampled as `resident_avg` is.
    inactive_share_avg: f64,
    /// Pages kswapd freed (the rest were freed by the reading thread): a
    /// replay is repeatable when this is 0.
    kswapd_reclaims: u64,
    secs: f64,
}

fn replay(trace: &[u64], file_path: &Path, args: &Args, capacity_pages: usize) -> std::io::Result<Run> {
    let cache = PageCache::builder()
        .capacity(capacity_pages * args.page_size)
        .readahead_max(0)
        .readahead_threads(0)
        .revalidate_on_open(false)
        .io_uring(false)
        .build()?;
    let file = cache.open_with_page_size(file_path, OpenOptions::new().read(true), args.page_size)?;
    let frames = cache.stats().total_pages;
    let mut buf = vec![0u8; args.read_bytes];
    let ps = args.page_size as u64;
    let (mut samples, mut sum, mut share_sum) = (0u64, 0u64, 0f64);
    let mut filled = false;
    let mut last = cache.stats();
    let start = Instant::now();
    for (i, &index) in trace.iter().enumerate() {
        let n = file.read_at(&mut buf, index * ps)?;
        debug_assert_eq!(n, buf.len());
        if args.segment > 0 && (i + 1) % args.segment == 0 {
            let s = cache.stats();
            eprintln!(
                "segment end={} misses={} main_evictions={} admissions={} recency_admissions={} phase_changes={} \
                 inactive_target={} active={} inactive={} free={}",
                i + 1,
                s.misses - last.misses,
                s.main_evictions - last.main_evictions,
                s.admissions - last.admissions,
                s.refault_activations - last.refault_activations,
                s.phase_changes - last.phase_changes,
                s.inactive_target,
                s.active_pages,
                s.inactive_pages,
                s.free_pages,
            );
            last = s;
        }
        if i % 1024 == 1023 {
            let s = cache.stats();
            filled = filled || s.evictions > 0;
            if filled {
                samples += 1;
                sum += s.cached_pages;
                share_sum += s.inactive_target as f64 / (s.active_pages + s.inactive_pages).max(1) as f64;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let s = cache.stats();
    // Before the cache first evicted (a trace that fits), what is resident
    // now is what it had.
    let resident_avg = if samples > 0 { sum as f64 / samples as f64 } else { s.cached_pages as f64 };
    Ok(Run {
        frames,
        hits: s.hits,
        misses: s.misses,
        resident_avg,
        resident_end: s.cached_pages,
        evictions: s.evictions,
        refaults: s.refaults,
        refault_activations: s.refault_activations,
        readahead_pages: s.readahead_pages,
        inactive_share_avg: if samples > 0 { share_sum / samples as f64 } else { 0.0 },
        kswapd_reclaims: s.kswapd_reclaims,
        secs,
    })
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let trace = load_trace(&args.trace)?;
    if trace.is_empty() {
        return Err("empty trace".into());
    }
    let mut sorted = trace.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let distinct = sorted.len();
    let max_index = *sorted.last().expect("not empty");
    let name = args.trace.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();

    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let file_path = dir.path().join("footprint");
    let file = std::fs::File::create(&file_path)?;
    // Sparse: reads of holes are zeros, nothing is written.
    file.set_len((max_index + 1) * args.page_size as u64)?;
    drop(file);

    let mut capacities = args.pages.clone();
    capacities.extend(args.percents.iter().map(|p| ((distinct as f64 * p / 100.0).round() as usize).max(1)));
    for (i, &cap) in capacities.iter().enumerate() {
        let r = replay(&trace, &file_path, args, cap)?;
        let accesses = trace.len() as u64;
        if r.hits + r.misses != accesses {
            eprintln!("warning: hits {} + misses {} != accesses {accesses}", r.hits, r.misses);
        }
        let percent = if i >= args.pages.len() {
            format!("{}", args.percents[i - args.pages.len()])
        } else {
            format!("{:.2}", cap as f64 * 100.0 / distinct as f64)
        };
        println!(
            "trace={name} capacity_pages={cap} capacity_percent={percent} frames={} distinct={distinct} \
             accesses={accesses} hits={} misses={} miss_ratio={:.6} resident_avg={:.1} resident_end={} \
             evictions={} refaults={} refault_activations={} readahead_pages={} inactive_share_avg={:.4} kswapd_reclaims={} secs={:.2}",
            r.frames,
            r.hits,
            r.misses,
            r.misses as f64 / accesses as f64,
            r.resident_avg,
            r.resident_end,
            r.evictions,
            r.refaults,
            r.refault_activations,
            r.readahead_pages,
            r.inactive_share_avg,
            r.kswapd_reclaims,
            r.secs,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replay: {}: {e}", args.trace.display());
            ExitCode::FAILURE
        }
    }
}
