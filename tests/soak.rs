//! Soak test (ignored by default; run with `--ignored`): 8 threads read,
//! write, copy between files (`copy_from`, which moves whole pages),
//! truncate, sync and shrink three 2 MiB files through a 64-page
//! cache for `SOAK_SECS` seconds (default 20), checking every read against
//! an exact model. With the `fault-injection` feature the files sit on
//! faulty backings that fail or cut short reads, writes and syncs at random.
//! Two more threads each write, read and cut a region of anonymous memory
//! (`PageCache::anonymous`, 4x the cache each) against a model of their
//! own, so file pages, anonymous pages and the swap area all compete for
//! the same 64 frames. The cache has a compressed tier of 16 pages, so
//! clean file pages go through cleancache and anonymous ones through
//! frontswap.
//! A watchdog aborts the process if any thread makes no progress for 10 s.
//! At the end, with faults off, every file is synced and compared with its
//! model on disk. A file that differs from its model on disk is explained:
//! where it differs, what the cache holds there, and the logged
//! operations (each file keeps its last 4,096) that touched those pages.
//!
//! `SOAK_SECS=20 cargo test --release --features fault-injection --test soak -- --ignored --nocapture`

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use page_cache::{CachedFile, PageCache, PAGE_SIZE};

#[cfg(feature = "fault-injection")]
use page_cache::fault::{FaultPlan, FaultyBacking};

const THREADS: usize = 8;
const FILES: usize = 3;
const FILE_SIZE: usize = 2 << 20;
const CACHE_PAGES: usize = 64;
const MAX_IO: u64 = 64 * 1024;
const STALL: Duration = Duration::from_secs(10);
/// Threads that use anonymous memory, each its own region.
const ANON_THREADS: usize = 2;

/// One thread's work on anonymous memory: random writes, reads, `set_len`
/// down and back up, checked against a `Vec<u8>`; errors from a full swap
/// area (`StorageFull`) or a full cache (`OutOfMemory`) are acceptable
/// and leave the model as it was.
fn anon_worker(id: usize, seed: u64, cache: PageCache, stop: Arc<AtomicBool>, c: Arc<Counters>, p: Arc<Progress>) {
    let len = (4 * CACHE_PAGES * PAGE_SIZE) as u64;
    let mem = cache.anonymous(len).unwrap();
    let mut model = vec![0u8; len as usize];
    let mut s = seed ^ (0xa11 + id as u64);
    let mut cut = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let off = xorshift(&mut s) % (len - MAX_IO);
        let n = 1 + (xorshift(&mut s) % MAX_IO) as usize;
        match xorshift(&mut s) % 16 {
            0 => {
                // Cut and grow back: the cut bytes read as zeros.
                let at = xorshift(&mut s) % len;
                *lock(&p.doing) = format!("anon {id}: set_len {at}");
                match mem.set_len(at).and_then(|()| mem.set_len(len)) {
                    Ok(()) => {
                        model[at as usize..].fill(0);
                        cut += 1;
                    }
                    Err(e) => panic!("anon {id}: set_len {at}: {e}"),
                }
            }
            1..=7 => {
                *lock(&p.doing) = format!("anon {id}: write {n} at {off}");
                let v = xorshift(&mut s);
                // Half compressible (a pattern), half random bytes.
                let data: Vec<u8> = if v % 2 == 0 {
                    (0..n).map(|i| (v >> (i % 7 * 8)) as u8 ^ (i / 512) as u8).collect()
                } else {
                    let mut r = v;
                    (0..n).map(|_| xorshift(&mut r) as u8).collect()
                };
                match mem.write_all_at(&data, off) {
                    Ok(()) => {
                        model[off as usize..off as usize + n].copy_from_slice(&data);
                        c.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::OutOfMemory) => {
                        // A page-sized write either landed or not; longer
                        // ones may have landed in part: read back the truth
                        // of what was asked and take it when it is either.
                        let mut got = vec![0u8; n];
                        mem.read_exact_at(&mut got, off).unwrap();
                        for (i, (g, (old, new))) in got.iter().zip(model[off as usize..].iter().zip(&data)).enumerate()
                        {
                            assert!(g == old || g == new, "anon {id}: byte {} after a failed write", off + i as u64);
                        }
                        model[off as usize..off as usize + n].copy_from_slice(&got);
                        c.out_of_memory.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("anon {id}: write {n} at {off}: {e}"),
                }
            }
            _ => {
                *lock(&p.doing) = format!("anon {id}: read {n} at {off}");
                let mut got = vec![0u8; n];
                match mem.read_exact_at(&mut got, off) {
                    Ok(()) => {
                        let want = &model[off as usize..off as usize + n];
                        if got != want {
                            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
                            panic!(
                                "anon {id}: read {n} at {off}: byte {} is {} not {}",
                                off + i as u64,
                                got[i],
                                want[i]
                            );
                        }
                        c.reads.fetch_add(1, Ordering::Relaxed);
                        c.bytes_verified.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::OutOfMemory => {
                        c.out_of_memory.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("anon {id}: read {n} at {off}: {e}"),
                }
            }
        }
        c.ops.fetch_add(1, Ordering::Relaxed);
        p.ops.fetch_add(1, Ordering::Relaxed);
    }
    // Everything once more, then the memory goes.
    let mut all = vec![0u8; len as usize];
    mem.read_exact_at(&mut all, 0).unwrap();
    assert!(all == model, "anon {id}: the memory differs from its model at the end");
    c.bytes_verified.fetch_add(len, Ordering::Relaxed);
    println!("soak: anonymous memory {id}: {cut} cuts");
    *lock(&p.doing) = "done".into();
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

struct SoakFile {
    path: PathBuf,
    handle: CachedFile,
    /// The file's exact contents; every operation on the file runs while
    /// holding this lock, so the model and the cache move together.
    model: Mutex<Vec<u8>>,
    /// The last `LOG_OPS` operations that changed the file or synced it
    /// (byte range, what), appended while holding `model`, to explain a
    /// difference from the model when one is found.
    log: Mutex<std::collections::VecDeque<(u64, u64, String)>>,
    #[cfg(feature = "fault-injection")]
    plan: Arc<FaultPlan>,
}

/// Operations each file's log keeps.
const LOG_OPS: usize = 4096;

impl SoakFile {
    /// Notes an operation on `[start, end)` (the caller holds `model`).
    fn note(&self, start: u64, end: u64, what: String) {
        let mut log = lock(&self.log);
        if log.len() == LOG_OPS {
            log.pop_front();
        }
        log.push_back((start, end, what));
    }

    /// Says where the file on disk differs from the model, what the cache
    /// holds there, and which logged operations touched those pages.
    fn explain(&self, disk: &[u8], model: &[u8]) -> String {
        let diff: Vec<usize> = (0..disk.len().min(model.len())).filter(|&i| disk[i] != model[i]).collect();
        let (Some(&first), Some(&last)) = (diff.first(), diff.last()) else {
            return format!("sizes differ: disk {} model {}", disk.len(), model.len());
        };
        let mut cached = vec![0u8; 16];
        let got = self.handle.read_at(&mut cached, first as u64).map(|n| cached[..n].to_vec());
        let end = (first + 16).min(disk.len()).min(model.len());
        let ps = PAGE_SIZE as u64;
        let (lo, hi) = (first as u64 / ps * ps, (last as u64 / ps + 1) * ps);
        let touched: Vec<String> = lock(&self.log)
            .iter()
            .filter(|(s, e, _)| *s < hi && *e > lo)
            .map(|(s, e, w)| match *e {
                u64::MAX => format!("    [{s}, end) {w}"),
                e => format!("    [{s}, {e}) {w}"),
            })
            .collect();
        format!(
            "{} bytes differ, from {first} to {last}; at {first}: disk {:?}, model {:?}, cache {got:?}\n  \
             logged operations on pages [{lo}, {hi}), oldest first:\n{}",
            diff.len(),
            &disk[first..end],
            &model[first..end],
            touched.join("\n")
        )
    }
}

#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    copies: AtomicU64,
    set_lens: AtomicU64,
    syncs: AtomicU64,
    shrinks: AtomicU64,
    failed: AtomicU64,
    out_of_memory: AtomicU64,
    short_reads: AtomicU64,
    bytes_verified: AtomicU64,
    disk_checks: AtomicU64,
}

/// Per-thread progress for the watchdog: ops done and what it does now.
struct Progress {
    ops: AtomicU64,
    doing: Mutex<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an error may come from an injected fault (or a full cache).
fn acceptable(e: &io::Error, c: &Counters) -> bool {
    if e.kind() == ErrorKind::OutOfMemory {
        c.out_of_memory.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    cfg!(feature = "fault-injection")
        && (e.raw_os_error() == Some(libc::EIO)
            || e.raw_os_error() == Some(libc::ENOSPC)
            || e.kind() == ErrorKind::Other)
}

/// A `read_at` of `len` bytes at `off`, checked against the model.
fn read_and_check(what: &str, f: &SoakFile, model: &[u8], off: u64, len: usize, c: &Counters) {
    let mut buf = vec![0u8; len];
    match f.handle.read_at(&mut buf, off) {
        Ok(n) => check_read(what, model, off, len, &buf[..n], c),
        Err(e) => {
            assert!(acceptable(&e, c), "{what}: read at {off}+{len}: {e}");
            c.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    c.reads.fetch_add(1, Ordering::Relaxed);
}

fn check_read(what: &str, model: &[u8], off: u64, len: usize, got: &[u8], c: &Counters) {
    let want = model.get(off as usize..).map_or(&[][..], |m| &m[..m.len().min(len)]);
    assert!(got.len() <= want.len(), "{what}: read {} bytes at {off}, the file has {} there", got.len(), want.len());
    if got != &want[..got.len()] {
        let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
        panic!(
            "{what}: read at {off}+{len}: byte {} (file offset {}) is {:#x}, model says {:#x}",
            i,
            off + i as u64,
            got[i],
            want[i]
        );
    }
    if got.len() < want.len() {
        c.short_reads.fetch_add(1, Ordering::Relaxed);
        assert!(!got.is_empty() || cfg!(feature = "fault-injection"), "{what}: empty read inside the file");
    }
    c.bytes_verified.fetch_add(got.len() as u64, Ordering::Relaxed);
}

fn worker(
    id: usize,
    seed: u64,
    cache: PageCache,
    files: Arc<Vec<SoakFile>>,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
    p: Arc<Progress>,
) {
    let mut rng = seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut cursors: Vec<_> = files.iter().map(|f| f.handle.cursor()).collect();
    while !stop.load(Ordering::Relaxed) {
        let fi = (xorshift(&mut rng) % FILES as u64) as usize;
        let f = &files[fi];
        let dice = xorshift(&mut rng) % 100;
        let (a, b) = (xorshift(&mut rng), xorshift(&mut rng));
        let len = (b % MAX_IO) as usize + 1;
        if dice < 5 {
            *lock(&p.doing) = "shrink".into();
            cache.shrink((a % (CACHE_PAGES as u64 * PAGE_SIZE as u64)) as usize);
            c.shrinks.fetch_add(1, Ordering::Relaxed);
        } else if (75..=84).contains(&dice) {
            // Copy from another file into this one; both models locked, in
            // file order. Half the copies are page-aligned, so pages move.
            let si = (fi + 1 + (a % 2) as usize) % FILES;
            let src = &files[si];
            let what = format!("thread {id} copy file {si} -> {fi}");
            *lock(&p.doing) = what.clone();
            let (mut dst_model, src_model) = if fi < si {
                let d = lock(&f.model);
                (d, lock(&src.model))
            } else {
                let s = lock(&src.model);
                (lock(&f.model), s)
            };
            let align = |x: u64| if a & 1 == 0 { x / PAGE_SIZE as u64 * PAGE_SIZE as u64 } else { x };
            let soff = align((a >> 8) % (src_model.len() as u64 + 8192));
            let doff = align((b >> 8) % (FILE_SIZE as u64 + MAX_IO));
            let copied = f.handle.copy_from(&src.handle, soff, doff, len);
            f.note(
                doff,
                doff + len as u64,
                format!("thread {id}: copy {len} from file {si} at {soff} (aligned {}): {copied:?}", a & 1 == 0),
            );
            match copied {
                Ok(n) => {
                    let avail = (src_model.len() as u64).saturating_sub(soff) as usize;
                    assert!(n <= len.min(avail), "{what}: copied {n} of {len} at {soff} (source has {avail})");
                    assert!(n == len.min(avail) || cfg!(feature = "fault-injection"), "{what}: short copy {n}");
                    if n > 0 {
                        let end = doff as usize + n;
                        if dst_model.len() < end {
                            dst_model.resize(end, 0);
                        }
                        dst_model[doff as usize..end].copy_from_slice(&src_model[soff as usize..soff as usize + n]);
                    }
                }
                Err(e) => {
                    assert!(acceptable(&e, &c), "{what}: copy {soff} -> {doff} +{len}: {e}");
                    c.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            assert_eq!(f.handle.len(), dst_model.len() as u64, "{what}: size after copy");
            assert_eq!(src.handle.len(), src_model.len() as u64, "{what}: source size after copy");
            c.copies.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut model = lock(&f.model);
            let size = model.len() as u64;
            let what = format!("thread {id} file {fi} op {dice}");
            *lock(&p.doing) = what.clone();
            match dice {
                5..=8 => {
                    // Scattered prefetch, then a read of one of its pages.
                    let offs: Vec<u64> = (0..8).map(|k| a.rotate_left(k * 7) % (size + 8192)).collect();
                    if let Err(e) = f.handle.prefetch(&offs) {
                        assert!(acceptable(&e, &c), "{what}: prefetch: {e}");
                        c.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    read_and_check(&what, f, &model, offs[0], len, &c);
                }
                9..=44 => read_and_check(&what, f, &model, a % (size + 8192), len, &c),
                45..=49 => {
                    // Through a cursor: seek, then read.
                    let off = a % (size + 8192);
                    let cur = &mut cursors[fi];
                    assert_eq!(cur.seek(SeekFrom::Start(off)).unwrap(), off);
                    let mut buf = vec![0u8; len];
                    match cur.read(&mut buf) {
                        Ok(n) => {
                            check_read(&what, &model, off, len, &buf[..n], &c);
                            assert_eq!(cur.position(), off + n as u64);
                        }
                        Err(e) => {
                            assert!(acceptable(&e, &c), "{what}: cursor read at {off}: {e}");
                            c.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    c.reads.fetch_add(1, Ordering::Relaxed);
                }
                50..=84 => {
                    let off = a % (FILE_SIZE as u64 + MAX_IO);
                    let byte = (a >> 40) as u8;
                    let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add((i / 97) as u8)).collect();
                    let wrote = f.handle.write_at(&data, off);
                    f.note(off, off + len as u64, format!("thread {id}: write {len} of {byte:#x}+: {wrote:?}"));
                    match wrote {
                        Ok(n) => {
                            assert!(n > 0 && n <= len, "{what}: write returned {n} of {len}");
                            let end = off as usize + n;
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[off as usize..end].copy_from_slice(&data[..n]);
                        }
                        Err(e) => {
                            assert!(acceptable(&e, &c), "{what}: write at {off}+{len}: {e}");
                            c.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    assert_eq!(f.handle.len(), model.len() as u64, "{what}: size after write");
                    c.writes.fetch_add(1, Ordering::Relaxed);
                }
                85..=88 => {
                    let new = FILE_SIZE as u64 / 2 + a % FILE_SIZE as u64;
                    f.handle.set_len(new).unwrap_or_else(|e| panic!("{what}: set_len({new}): {e}"));
                    f.note(new.min(size), u64::MAX, format!("thread {id}: set_len {new} (was {size})"));
                    model.resize(new as usize, 0);
                    c.set_lens.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    let synced = f.handle.sync_data();
                    f.note(0, u64::MAX, format!("thread {id}: sync_data: {synced:?}"));
                    match synced {
                        Ok(()) => {
                            // Acknowledged: the file on disk is the model.
                            if a % 4 == 0 {
                                let disk = std::fs::read(&f.path).unwrap();
                                if disk != *model {
                                    let i = disk.iter().zip(model.iter()).position(|(a, b)| a != b);
                                    panic!(
                                        "{what}: after a good sync the file differs from the model: {} vs {} bytes, \
                                         first difference at {i:?}\n  {}",
                                        disk.len(),
                                        model.len(),
                                        f.explain(&disk, &model)
                                    );
                                }
                                c.disk_checks.fetch_add(1, Ordering::Relaxed);
                                c.bytes_verified.fetch_add(disk.len() as u64, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            assert!(acceptable(&e, &c), "{what}: sync: {e}");
                            c.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    c.syncs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        c.ops.fetch_add(1, Ordering::Relaxed);
        p.ops.fetch_add(1, Ordering::Relaxed);
    }
    *lock(&p.doing) = "done".into();
}

fn open(cache: &PageCache, path: &PathBuf, plain: bool) -> SoakFile {
    let initial: Vec<u8> = (0..FILE_SIZE).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect();
    std::fs::write(path, &initial).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    #[cfg(feature = "fault-injection")]
    {
        let plan = FaultPlan::new();
        if plain {
            // One file without faults, treated as O_DIRECT (whole aligned
            // pages), so its writeback runs and prefetches go on io_uring.
            let handle = cache.open_backing(Arc::new(page_cache::FileBacking::new(file, true)), true).unwrap();
            return SoakFile { path: path.clone(), handle, model: Mutex::new(initial), log: Mutex::default(), plan };
        }
        let handle = cache.open_backing(Arc::new(FaultyBacking::from_file(file, plan.clone())), true).unwrap();
        SoakFile { path: path.clone(), handle, model: Mutex::new(initial), log: Mutex::default(), plan }
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = plain;
        drop(file);
        let handle = cache.open_with(path, OpenOptions::new().read(true).write(true)).unwrap();
        SoakFile { path: path.clone(), handle, model: Mutex::new(initial), log: Mutex::default() }
    }
}

#[test]
#[ignore = "long: run with --ignored (SOAK_SECS sets the duration)"]
fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!(
        "soak: {secs} s, seed {seed} (SOAK_SEED={seed} repeats the choices), faults {}",
        cfg!(feature = "fault-injection")
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder()
        .capacity(CACHE_PAGES * PAGE_SIZE)
        .readahead_max(32 * PAGE_SIZE)
        .huge_pages(false)
        .dirty_expire(Duration::from_millis(200))
        .compressed_tier(16 * PAGE_SIZE)
        .swap_dir(dir.path())
        .build()
        .unwrap();
    let files: Arc<Vec<SoakFile>> =
        Arc::new((0..FILES).map(|i| open(&cache, &dir.path().join(format!("soak{i}")), i == FILES - 1)).collect());
    #[cfg(feature = "fault-injection")]
    for (i, f) in files.iter().enumerate() {
        // 1% of calls fail with EIO, 5% go short.
        f.plan.set_random(seed.wrapping_add(i as u64), 10_000, 50_000);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let progress: Vec<Arc<Progress>> = (0..THREADS + ANON_THREADS)
        .map(|_| Arc::new(Progress { ops: AtomicU64::new(0), doing: Mutex::new("start".into()) }))
        .collect();

    // The watchdog: any thread without progress for STALL ends the process.
    let watchdog_done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (progress, done, cache) = (progress.clone(), watchdog_done.clone(), cache.clone());
        std::thread::spawn(move || {
            let mut last: Vec<(u64, Instant)> = progress.iter().map(|_| (0, Instant::now())).collect();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                for (i, p) in progress.iter().enumerate() {
                    let now = p.ops.load(Ordering::Relaxed);
                    if now != last[i].0 || *lock(&p.doing) == "done" {
                        last[i] = (now, Instant::now());
                    } else if last[i].1.elapsed() > STALL {
                        eprintln!("soak watchdog: thread {i} made no progress for {STALL:?}");
                        for (j, q) in progress.iter().enumerate() {
                            eprintln!("  thread {j}: {} ops, doing {}", q.ops.load(Ordering::Relaxed), lock(&q.doing));
                        }
                        eprintln!("{}", cache.stats());
                        std::process::abort();
                    }
                }
            }
        })
    };

    let mut workers: Vec<_> = (0..THREADS)
        .map(|id| {
            let (cache, files, stop, c, p) =
                (cache.clone(), files.clone(), stop.clone(), counters.clone(), progress[id].clone());
            std::thread::Builder::new()
                .name(format!("soak-{id}"))
                .spawn(move || worker(id, seed, cache, files, stop, c, p))
                .unwrap()
        })
        .collect();
    workers.extend((0..ANON_THREADS).map(|id| {
        let (cache, stop, c, p) = (cache.clone(), stop.clone(), counters.clone(), progress[THREADS + id].clone());
        std::thread::Builder::new()
            .name(format!("soak-anon-{id}"))
            .spawn(move || anon_worker(id, seed, cache, stop, c, p))
            .unwrap()
    }));
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut panicked = false;
    for w in workers {
        panicked |= w.join().is_err();
    }
    assert!(!panicked, "a worker failed (see above)");

    // Faults off; everything acknowledged must land.
    #[cfg(feature = "fault-injection")]
    let fault_stats: Vec<_> = files.iter().map(|f| f.plan.stats()).collect();
    #[cfg(feature = "fault-injection")]
    for f in files.iter() {
        f.plan.clear();
    }
    let mut final_bytes = 0u64;
    for (i, f) in files.iter().enumerate() {
        let model = lock(&f.model);
        if f.handle.sync_all().is_err() {
            // One earlier failure may still be unreported; the retry must succeed.
            f.handle.sync_all().unwrap_or_else(|e| panic!("file {i}: final sync: {e}"));
        }
        let disk = std::fs::read(&f.path).unwrap();
        let first = disk.iter().zip(model.iter()).position(|(a, b)| a != b);
        assert!(
            disk == *model,
            "file {i}: on disk {} bytes, model {} bytes, first difference at {first:?}\n  {}",
            disk.len(),
            model.len(),
            f.explain(&disk, &model)
        );
        final_bytes += disk.len() as u64;
        // And through the cache.
        let mut back = vec![0; model.len()];
        f.handle.read_exact_at(&mut back, 0).unwrap();
        assert!(back == *model, "file {i}: cache differs from the model after the final sync");
        final_bytes += back.len() as u64;
    }
    counters.bytes_verified.fetch_add(final_bytes, Ordering::Relaxed);
    cache.shrink(usize::MAX);
    std::thread::sleep(Duration::from_millis(300));
    cache.check_invariants();
    let st = cache.stats();
    assert_eq!(st.swap_pages, 0, "swap slots left after the anonymous memory went");
    assert_eq!(st.anon_pages, 0, "anonymous pages left after the memory went");
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file()
                && !e.as_ref().unwrap().file_name().to_string_lossy().starts_with("soak"))
            .count(),
        0,
        "a swap file left behind"
    );
    watchdog_done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();

    let c = &counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak: {} ops ({} reads, {} writes, {} copies, {} set_len, {} syncs, {} shrinks); {} failed with an error, \
         {} out of memory, {} short reads; {} good-sync disk comparisons; {} bytes verified; 0 lost",
        get(&c.ops),
        get(&c.reads),
        get(&c.writes),
        get(&c.copies),
        get(&c.set_lens),
        get(&c.syncs),
        get(&c.shrinks),
        get(&c.failed),
        get(&c.out_of_memory),
        get(&c.short_reads),
        get(&c.disk_checks),
        get(&c.bytes_verified)
    );
    #[cfg(feature = "fault-injection")]
    {
        let ops: u64 = fault_stats.iter().map(|s| s.operations()).sum();
        let errors: u64 = fault_stats.iter().map(|s| s.errors_injected).sum();
        let shorts: u64 = fault_stats.iter().map(|s| s.short_ops).sum();
        println!(
            "soak: backing saw {ops} operations; {} faults injected ({errors} EIO, {shorts} short)",
            errors + shorts
        );
    }
    println!("{}", cache.stats());
}
