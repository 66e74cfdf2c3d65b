//! Anonymous memory (issue 26): `PageCache::anonymous` regions that reclaim
//! swaps out (to the compressed tier first, then to the swap area) and
//! brings back, checked against `Vec<u8>` models.
//!
//! - Model tests: memory 4x the cache, written and read from 4 threads
//!   (each its own region, so each model is exact), `set_len` down and up,
//!   with and without the compressed tier, at 4 and 16 KiB pages, while a
//!   monitor checks that `cached_bytes` never exceeds the capacity; after
//!   the last handle drops no swap slot, no resident page and no swap file
//!   (nor descriptor) is left. A proptest of op sequences (write, read,
//!   `set_len`, prefetch, sync, clone, drop, recreate) on a cache of 64
//!   frames, with `check_invariants` after every op.
//! - Files and anonymous memory under pressure in one cache: both right,
//!   and both kinds of reclaim visible in `Stats`.
//! - Faults: the swap limit reached, a swap directory on a full tmpfs, swap
//!   writes and reads failing (`FaultyBacking` as the swap area): clean
//!   errors, nothing lost, never zeros for bytes that could not be read.
//! - Limits (`len` beyond swap limit + capacity refused), `sync_data` as a
//!   no-op, clones sharing memory and the last drop freeing it.
//!
//! Seeds: the random workloads print their seed on failure; set
//! `ANON_SEED` to rerun one. `PAGE_CACHE_SANITIZER` shortens the runs.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

mod common;
use common::settle;
use page_cache::{CachedFile, PageCache, PAGE_SIZE};
use proptest::prelude::*;

const PS: u64 = PAGE_SIZE as u64;

// ---- helpers ------------------------------------------------------------------

fn sanitizer() -> bool {
    std::env::var_os("PAGE_CACHE_SANITIZER").is_some()
}

/// `full` iterations normally, `small` under a sanitizer.
fn scaled(full: usize, small: usize) -> usize {
    if sanitizer() {
        small
    } else {
        full
    }
}

/// The seed of the random workloads: `ANON_SEED` if set, else fixed.
fn base_seed() -> u64 {
    std::env::var("ANON_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x26_a11c)
}

/// splitmix64: small, seeded, good enough for workloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Compressible runs and noise (so the compressed tier keeps some pages
/// and refuses others); never a whole zero page, so zeros read where data
/// was written show up.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let b = if (i / 1024 + seed) % 3 == 0 {
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).rotate_left(13) as u8
            } else {
                ((i / 64) as u8).wrapping_add(seed as u8)
            };
            b | 1
        })
        .collect()
}

/// Bytes lz4 cannot shrink, none of them zero.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| (r.next() >> 24) as u8 | 1).collect()
}

/// Panics at the first byte that differs, saying where and whether the
/// bytes read were zeros.
#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8], at: u64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let pos = at + i as u64;
        let end = (i + 16).min(got.len());
        let zeros = got[i..(i + 256).min(got.len())].iter().all(|&b| b == 0);
        panic!(
            "{what}: bytes differ at offset {pos} (4 KiB page {}, byte {} of it): got {:?} want {:?}{}",
            pos / PS,
            pos % PS,
            &got[i..end],
            &want[i..end],
            if zeros { " (read zeros)" } else { "" }
        );
    }
}

/// Reads `model.len()` bytes at `at` in chunks and compares them with `model`.
#[track_caller]
fn check_all(what: &str, f: &CachedFile, model: &[u8], at: u64) {
    let mut buf = vec![0xEEu8; 64 << 10];
    let mut done = 0usize;
    while done < model.len() {
        let n = buf.len().min(model.len() - done);
        let off = at + done as u64;
        f.read_exact_at(&mut buf[..n], off).unwrap_or_else(|e| panic!("{what}: read_exact_at({off}, {n}): {e}"));
        assert_same(what, &buf[..n], &model[done..done + n], off);
        done += n;
    }
}

fn anon(cache: &PageCache, len: u64, ps: usize) -> io::Result<CachedFile> {
    if ps == PAGE_SIZE {
        cache.anonymous(len)
    } else {
        cache.anonymous_with_page_size(len, ps)
    }
}

/// The entries of the swap directory (the swap file is unlinked: none).
fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

/// Descriptors of this process open on something under `dir` (an unlinked
/// O_TMPFILE shows as `dir/#123 (deleted)`).
fn fds_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).filter(|p| p.starts_with(&dir)).collect()
}

/// Checks that no anonymous memory is left: no swap slot, no resident
/// anonymous page, nothing in the swap directory.
#[track_caller]
fn assert_all_freed(what: &str, cache: &PageCache, swap_dir: &Path) {
    let s = cache.stats();
    assert_eq!(s.swap_pages, 0, "{what}: swap slots still in use: {s:?}");
    assert_eq!(s.anon_pages, 0, "{what}: anonymous pages still resident: {s:?}");
    assert_eq!(dir_entries(swap_dir), Vec::<PathBuf>::new(), "{what}: files left in the swap directory");
}

/// Drops the cache and checks that it left no descriptor open on the swap
/// directory and no file in it.
fn drop_cache_and_check(cache: PageCache, swap_dir: &Path) {
    drop(cache);
    assert_eq!(fds_under(swap_dir), Vec::<PathBuf>::new(), "the dropped cache left its swap file open");
    assert_eq!(dir_entries(swap_dir), Vec::<PathBuf>::new(), "files left in the swap directory");
}

/// Sets a flag when dropped: stops the monitor thread also when a worker
/// panics (else the scope would wait for it forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Checks `cached_bytes <= capacity` in a loop until `stop`; returns the
/// number of checks and the peak seen.
fn monitor(cache: &PageCache, stop: &AtomicBool) -> (u64, u64) {
    let cap = cache.capacity() as u64;
    let (mut checks, mut peak) = (0u64, 0u64);
    loop {
        let last = stop.load(Ordering::SeqCst);
        let s = cache.stats();
        assert!(s.cached_bytes <= cap, "cached_bytes {} above the capacity {cap}: {s:?}", s.cached_bytes);
        peak = peak.max(s.cached_bytes);
        checks += 1;
        if last {
            return (checks, peak);
        }
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
}

/// Writes `data` at `off` with `write_at` until done or an error, applying
/// what was acknowledged to `model` (`model` covers offset 0 on).
fn write_tracked(f: &CachedFile, data: &[u8], off: u64, model: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < data.len() {
        match f.write_at(&data[done..], off + done as u64) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "write_at took nothing")),
            Ok(n) => {
                assert!(n <= data.len() - done, "write_at returned {n} for {} bytes", data.len() - done);
                let at = off as usize + done;
                model[at..at + n].copy_from_slice(&data[done..done + n]);
                done += n;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_out_of_room(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::OutOfMemory)
}

// ---- 1. model tests: 4 threads, 4x the cache ------------------------------------------

/// One thread's share of the workload: its own region of `mem`, its own model.
fn worker(mem: CachedFile, base: u64, model: &mut [u8], ps: usize, seed: u64, fill: bool, iters: usize) {
    let mut rng = Rng::new(seed);
    let region = model.len() as u64;
    let ctx = |i: usize| format!("seed {seed:#x}, region at {base}, op {i}");
    if fill {
        let data = pattern(rng.next(), model.len());
        for (k, chunk) in data.chunks(64 << 10).enumerate() {
            let off = base + (k * (64 << 10)) as u64;
            mem.write_all_at(chunk, off).unwrap_or_else(|e| panic!("{}: filling at {off}: {e}", ctx(0)));
        }
        model.copy_from_slice(&data);
    }
    let mut buf = vec![0u8; 3 * ps];
    for i in 0..iters {
        let off = rng.below(region);
        let len = 1 + rng.below((3 * ps as u64).min(region - off)) as usize;
        match rng.below(20) {
            0..=7 => {
                let data = pattern(rng.next(), len);
                mem.write_all_at(&data, base + off)
                    .unwrap_or_else(|e| panic!("{}: write_all_at({}, {len}): {e}", ctx(i), base + off));
                model[off as usize..off as usize + len].copy_from_slice(&data);
            }
            8..=18 => {
                let b = &mut buf[..len];
                b.fill(0xEE);
                mem.read_exact_at(b, base + off)
                    .unwrap_or_else(|e| panic!("{}: read_exact_at({}, {len}): {e}", ctx(i), base + off));
                assert_same(&ctx(i), b, &model[off as usize..off as usize + len], base + off);
            }
            _ => {
                // A whole-page write now and then: no read of the old bytes.
                let page = off / ps as u64 * ps as u64;
                let len = ps.min((region - page) as usize);
                let data = pattern(rng.next(), len);
                mem.write_all_at(&data, base + page).unwrap_or_else(|e| panic!("{}: whole-page write: {e}", ctx(i)));
                model[page as usize..page as usize + len].copy_from_slice(&data);
            }
        }
    }
    check_all(&format!("{}: whole region at the end", ctx(iters)), &mem, model, base);
}

/// Runs the 4 workers once, each on a clone of `mem`.
fn run_workers(mem: &CachedFile, models: &mut [Vec<u8>], ps: usize, seed: u64, fill: bool, iters: usize) {
    let region = models[0].len() as u64;
    std::thread::scope(|s| {
        for (t, model) in models.iter_mut().enumerate() {
            let m = mem.clone();
            let seed = seed ^ ((t as u64 + 1) << 32);
            s.spawn(move || worker(m, t as u64 * region, model, ps, seed, fill, iters));
        }
    });
}

fn check_models(what: &str, mem: &CachedFile, models: &[Vec<u8>]) {
    let region = models[0].len() as u64;
    for (t, m) in models.iter().enumerate() {
        check_all(&format!("{what}, region {t}"), mem, m, t as u64 * region);
    }
}

/// Truncates to `to` and grows back to `len`: the models zero from `to` on.
fn shrink_and_grow(mem: &CachedFile, models: &mut [Vec<u8>], to: u64, len: u64) {
    mem.set_len(to).unwrap();
    assert_eq!(mem.len(), to);
    let mut buf = vec![0u8; 100];
    assert_eq!(mem.read_at(&mut buf, to).unwrap(), 0, "read at the new end after set_len({to})");
    if to >= 10 {
        assert_eq!(mem.read_at(&mut buf, to - 10).unwrap(), 10, "read across the new end after set_len({to})");
    }
    mem.set_len(len).unwrap();
    assert_eq!(mem.len(), len);
    let region = models[0].len() as u64;
    for (t, m) in models.iter_mut().enumerate() {
        let base = t as u64 * region;
        let from = to.saturating_sub(base).min(region) as usize;
        m[from..].fill(0);
    }
}

fn threaded_model(ps: usize, tier: bool) {
    let seed = base_seed() ^ ps as u64 ^ u64::from(tier);
    eprintln!("threaded_model: ps {ps}, tier {tier}, seed {seed:#x} (ANON_SEED={})", base_seed());
    let capacity = 512usize << 10;
    let len = 4 * capacity as u64;
    let swap_dir = tempfile::tempdir().unwrap();
    let mut b = PageCache::builder().capacity(capacity).swap_dir(swap_dir.path()).swap_limit(8 * capacity as u64);
    if tier {
        b = b.compressed_tier(capacity / 2);
    }
    let cache = b.build().unwrap();
    let mem = anon(&cache, len, ps).unwrap();
    assert_eq!(mem.len(), len);
    assert_eq!(mem.mapping().page_size(), ps);

    // Zero-filled, and nothing past the end.
    let mut buf = vec![0xEEu8; 3 * ps];
    for off in [0, len / 2 - 17, len - buf.len() as u64] {
        mem.read_exact_at(&mut buf, off).unwrap();
        assert_same("a new region", &buf, &vec![0; buf.len()], off);
    }
    assert_eq!(mem.read_at(&mut buf, len).unwrap(), 0, "read at the end");

    let region = (len / 4) as usize;
    let mut models = vec![vec![0u8; region]; 4];
    let iters = scaled(1500, 200);
    let stop = AtomicBool::new(false);
    let (checks, peak) = std::thread::scope(|s| {
        let mon = s.spawn(|| monitor(&cache, &stop));
        let _stop = StopOnDrop(&stop);
        run_workers(&mem, &mut models, ps, seed, true, iters);
        check_models("after phase 1", &mem, &models);

        // Down (not on a page boundary) and up again: zeros past the cut.
        shrink_and_grow(&mem, &mut models, len / 2 + 1234, len);
        check_models("after set_len down to len/2+1234 and up", &mem, &models);
        shrink_and_grow(&mem, &mut models, 3 * ps as u64 + 5, len);
        check_models("after set_len down to 3 pages + 5 and up", &mem, &models);

        run_workers(&mem, &mut models, ps, seed.rotate_left(7), false, iters);
        check_models("after phase 2", &mem, &models);
        drop(_stop);
        mon.join().unwrap()
    });
    let s = cache.stats();
    eprintln!("threaded_model ps {ps} tier {tier}: {checks} capacity checks, peak cached_bytes {peak}; {s:?}");
    assert!(s.anon_reclaims > 0, "4x the cache of anonymous memory and no anonymous reclaim: {s:?}");
    if tier {
        assert!(s.frontswap_stores > 0 && s.frontswap_loads > 0, "the compressed tier was not used: {s:?}");
    } else {
        assert!(s.swap_outs > 0 && s.swap_ins > 0, "no swap traffic: {s:?}");
        assert!(s.swap_bytes_written > 0 && s.swap_bytes_read > 0, "swap bytes not counted: {s:?}");
    }
    assert!(s.swap_outs + s.frontswap_stores > 0, "{s:?}");

    // Truncating to 0 frees every slot while the handle lives.
    mem.set_len(0).unwrap();
    let s = cache.stats();
    assert_eq!(s.swap_pages, 0, "set_len(0) left swap slots in use: {s:?}");
    assert_eq!(s.anon_pages, 0, "set_len(0) left anonymous pages resident: {s:?}");
    mem.set_len(len).unwrap();
    check_all("after set_len(0) and back", &mem, &vec![0; len as usize], 0);

    drop(mem);
    assert_all_freed("after the last handle dropped", &cache, swap_dir.path());
    if tier {
        assert_eq!(cache.stats().tier_pages, 0, "the tier kept anonymous pages of freed memory: {:?}", cache.stats());
    }
    settle(&cache);
    cache.check_invariants();
    drop_cache_and_check(cache, swap_dir.path());
}

#[test]
fn model_threads_4k() {
    threaded_model(PAGE_SIZE, false);
}

#[test]
fn model_threads_4k_compressed_tier() {
    threaded_model(PAGE_SIZE, true);
}

#[test]
fn model_threads_16k_pages() {
    threaded_model(16 << 10, false);
}

#[test]
fn model_threads_16k_pages_compressed_tier() {
    threaded_model(16 << 10, true);
}

// ---- 2. proptest of op sequences ----------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Write {
        h: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    Read {
        h: usize,
        off: u64,
        len: usize,
    },
    SetLen {
        h: usize,
        len: u64,
    },
    Prefetch {
        h: usize,
        offs: Vec<u64>,
    },
    Sync {
        h: usize,
    },
    Clone {
        h: usize,
    },
    DropHandle {
        h: usize,
    },
    /// Drops every handle (all memory freed) and makes a new region.
    Recreate {
        len: u64,
    },
    /// Reads every byte.
    Scan,
}

fn op(ps: usize, max: u64) -> impl Strategy<Value = Op> {
    let len = 3 * ps;
    prop_oneof![
        6 => (0..4usize, 0..max, 0..=len, any::<u64>()).prop_map(|(h, off, len, seed)| Op::Write { h, off, len, seed }),
        6 => (0..4usize, 0..max, 0..=len).prop_map(|(h, off, len)| Op::Read { h, off, len }),
        2 => (0..4usize, 0..=max).prop_map(|(h, len)| Op::SetLen { h, len }),
        1 => (0..4usize, prop::collection::vec(0..max, 0..8)).prop_map(|(h, offs)| Op::Prefetch { h, offs }),
        1 => (0..4usize).prop_map(|h| Op::Sync { h }),
        1 => (0..4usize).prop_map(|h| Op::Clone { h }),
        1 => (0..4usize).prop_map(|h| Op::DropHandle { h }),
        1 => (0..=max).prop_map(|len| Op::Recreate { len }),
        1 => Just(Op::Scan),
    ]
}

fn prop_read(f: &CachedFile, model: &[u8], off: u64, len: usize, what: &str) -> Result<(), TestCaseError> {
    let mut buf = vec![0xEEu8; len];
    let n = f.read_at(&mut buf, off).map_err(|e| TestCaseError::fail(format!("{what}: read_at({off}, {len}): {e}")))?;
    let want = if off >= model.len() as u64 { 0 } else { len.min(model.len() - off as usize) };
    prop_assert_eq!(n, want, "{}: read_at({}, {}) count", what, off, len);
    let o = (off as usize).min(model.len());
    if let Some(i) = (0..n).find(|&i| buf[i] != model[o + i]) {
        let at = o + i;
        prop_assert!(
            false,
            "{}: read_at({}, {}) differs at {} (page {} of {} bytes, byte {}): got {:?} want {:?}, len {}, resident {}",
            what,
            off,
            len,
            at,
            at / f.mapping().page_size(),
            f.mapping().page_size(),
            at % f.mapping().page_size(),
            &buf[i..(i + 8).min(n)],
            &model[at..(at + 8).min(model.len())],
            model.len(),
            f.mapping().find_get_page((at / f.mapping().page_size()) as u64).is_some()
        );
    }
    Ok(())
}

fn scan(f: &CachedFile, model: &[u8], what: &str) -> Result<(), TestCaseError> {
    let mut off = 0;
    while off < model.len() {
        let n = (64 << 10).min(model.len() - off);
        prop_read(f, model, off as u64, n, what)?;
        off += n;
    }
    prop_read(f, model, model.len() as u64, 10, what)
}

fn run_ops(cache: &PageCache, ps: usize, max: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let cap = cache.capacity() as u64;
    let mut model = pattern(7, max as usize);
    let first = anon(cache, max, ps).unwrap();
    first.write_all_at(&model, 0).unwrap();
    let mut hs = vec![first];
    for (step, op) in ops.iter().enumerate() {
        let what = format!("step {step} ({op:?})");
        match op {
            Op::Write { h, off, len, seed } => {
                let data = pattern(*seed, *len);
                hs[h % hs.len()]
                    .write_all_at(&data, *off)
                    .map_err(|e| TestCaseError::fail(format!("{what}: write_all_at: {e}")))?;
                let end = *off as usize + len;
                if *len > 0 {
                    if end > model.len() {
                        model.resize(end, 0);
                    }
                    model[*off as usize..end].copy_from_slice(&data);
                }
            }
            Op::Read { h, off, len } => prop_read(&hs[h % hs.len()], &model, *off, *len, &what)?,
            Op::SetLen { h, len } => {
                hs[h % hs.len()].set_len(*len).map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                model.resize(*len as usize, 0);
            }
            Op::Prefetch { h, offs } => {
                hs[h % hs.len()].prefetch(offs).map_err(|e| TestCaseError::fail(format!("{what}: prefetch: {e}")))?;
            }
            Op::Sync { h } => {
                hs[h % hs.len()].sync_data().map_err(|e| TestCaseError::fail(format!("{what}: sync_data: {e}")))?;
            }
            Op::Clone { h } => {
                let c = hs[h % hs.len()].clone();
                hs.push(c);
            }
            Op::DropHandle { h } => {
                if hs.len() > 1 {
                    let i = h % hs.len();
                    hs.remove(i);
                }
            }
            Op::Recreate { len } => {
                hs.clear();
                let s = cache.stats();
                prop_assert_eq!(s.swap_pages, 0, "{}: swap slots left after the last handle dropped: {:?}", what, s);
                prop_assert_eq!(s.anon_pages, 0, "{}: anonymous pages left after the last handle dropped", what);
                hs.push(anon(cache, *len, ps).unwrap());
                model = vec![0; *len as usize];
            }
            Op::Scan => scan(&hs[0], &model, &what)?,
        }
        for (i, h) in hs.iter().enumerate() {
            prop_assert_eq!(h.len(), model.len() as u64, "{}: len through handle {}", what, i);
        }
        cache.check_invariants();
        let s = cache.stats();
        prop_assert!(s.cached_bytes <= cap, "{}: cached_bytes {} above capacity {}", what, s.cached_bytes, cap);
    }
    scan(&hs[0], &model, "at the end")?;
    drop(hs);
    let s = cache.stats();
    prop_assert_eq!(s.swap_pages, 0, "swap slots left after the last handle dropped: {:?}", s);
    prop_assert_eq!(s.anon_pages, 0, "anonymous pages left after the last handle dropped: {:?}", s);
    Ok(())
}

fn prop_model(ps: usize, tier: bool) {
    let capacity = 64 * PAGE_SIZE;
    let max = 4 * capacity as u64;
    let swap_dir = tempfile::tempdir().unwrap();
    let mut b = PageCache::builder().capacity(capacity).swap_dir(swap_dir.path()).swap_limit(8 * capacity as u64);
    if tier {
        b = b.compressed_tier(capacity / 2);
    }
    let cache = b.build().unwrap();
    let config = proptest::test_runner::Config {
        cases: scaled(32, 6) as u32,
        max_shrink_iters: 1000,
        max_shrink_time: 15_000,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    };
    let strategy = prop::collection::vec(op(ps, max), 1..40);
    if let Err(e) = proptest::test_runner::TestRunner::new(config).run(&strategy, |ops| run_ops(&cache, ps, max, &ops))
    {
        panic!("ps {ps}, tier {tier}: {e}");
    }
    let s = cache.stats();
    eprintln!("prop_model ps {ps} tier {tier}: {s:?}");
    assert!(s.swap_outs + s.frontswap_stores > 0, "nothing was ever swapped out: {s:?}");
    if tier {
        assert!(s.frontswap_stores > 0, "the compressed tier was not used: {s:?}");
        assert_eq!(s.tier_pages, 0, "the tier kept anonymous pages of freed memory: {s:?}");
    }
    assert_all_freed("after every case", &cache, swap_dir.path());
    drop_cache_and_check(cache, swap_dir.path());
}

#[test]
fn prop_ops_4k() {
    prop_model(PAGE_SIZE, false);
}

#[test]
fn prop_ops_4k_compressed_tier() {
    prop_model(PAGE_SIZE, true);
}

#[test]
fn prop_ops_16k_pages() {
    prop_model(16 << 10, false);
}

#[test]
fn prop_ops_16k_pages_compressed_tier() {
    prop_model(16 << 10, true);
}

// ---- 3. files and anonymous memory in one cache -----------------------------------------

fn mixed_pressure(tier: bool, swappiness: Option<u8>) {
    let seed = base_seed() ^ 0x3;
    let capacity = 512usize << 10;
    let dir = tempfile::tempdir().unwrap();
    let swap_dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream");
    let content = pattern(seed, 4 * capacity);
    std::fs::write(&path, &content).unwrap();
    let mut b = PageCache::builder().capacity(capacity).swap_dir(swap_dir.path()).swap_limit(8 * capacity as u64);
    if tier {
        b = b.compressed_tier(capacity / 2);
    }
    if let Some(v) = swappiness {
        b = b.swappiness(v);
    }
    let cache = b.build().unwrap();
    let file = cache.open(&path).unwrap();
    let mem = cache.anonymous(4 * capacity as u64).unwrap();
    let passes = scaled(4, 1);
    let stop = AtomicBool::new(false);
    let anon_model = std::thread::scope(|s| {
        let mon = s.spawn(|| monitor(&cache, &stop));
        let _stop = StopOnDrop(&stop);
        let streamer = s.spawn(|| {
            let mut buf = vec![0u8; 48 << 10];
            for pass in 0..passes {
                let mut off = 0usize;
                while off < content.len() {
                    let n = buf.len().min(content.len() - off);
                    file.read_exact_at(&mut buf[..n], off as u64).unwrap();
                    assert_same(&format!("file pass {pass}"), &buf[..n], &content[off..off + n], off as u64);
                    off += n;
                }
            }
        });
        let filler = s.spawn(|| {
            let mut rng = Rng::new(seed);
            let mut model = vec![0u8; mem.len() as usize];
            for pass in 0..passes {
                let data = pattern(rng.next(), model.len());
                for (k, chunk) in data.chunks(32 << 10).enumerate() {
                    mem.write_all_at(chunk, (k * (32 << 10)) as u64).unwrap();
                }
                model.copy_from_slice(&data);
                for _ in 0..200 {
                    let off = rng.below(model.len() as u64 - 9000);
                    let d = pattern(rng.next(), 9000);
                    mem.write_all_at(&d, off).unwrap();
                    model[off as usize..off as usize + 9000].copy_from_slice(&d);
                }
                check_all(&format!("anonymous pass {pass} (seed {seed:#x})"), &mem, &model, 0);
            }
            model
        });
        streamer.join().unwrap();
        let model = filler.join().unwrap();
        drop(_stop);
        mon.join().unwrap();
        model
    });
    check_all("anonymous memory afterwards", &mem, &anon_model, 0);
    check_all("file afterwards", &file, &content, 0);
    let s = cache.stats();
    eprintln!(
        "mixed (tier {tier}, swappiness {swappiness:?}): file_reclaims {} anon_reclaims {} swap_outs {} frontswap_stores {}; {s:?}",
        s.file_reclaims, s.anon_reclaims, s.swap_outs, s.frontswap_stores
    );
    assert!(s.file_reclaims > 0, "file pages were never reclaimed: {s:?}");
    assert!(s.anon_reclaims > 0, "anonymous pages were never reclaimed: {s:?}");
    assert!(s.swap_outs + s.frontswap_stores > 0, "anonymous reclaim without a swap-out or a frontswap store: {s:?}");
    drop(mem);
    assert_all_freed("anonymous memory dropped, file still open", &cache, swap_dir.path());
    check_all("file after the anonymous memory is gone", &file, &content, 0);
    drop(file);
    settle(&cache);
    cache.check_invariants();
    drop_cache_and_check(cache, swap_dir.path());
}

#[test]
fn files_and_anonymous_memory_share_pressure() {
    mixed_pressure(false, None);
}

#[test]
fn files_and_anonymous_memory_share_pressure_tier_swappiness_0() {
    mixed_pressure(true, Some(0));
}

#[test]
fn files_and_anonymous_memory_share_pressure_swappiness_200() {
    mixed_pressure(false, Some(200));
}

// ---- 4. limits and faults --------------------------------------------------------------

fn rw() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true);
    o
}

/// A file in the same cache still reads its bytes, takes a write and
/// syncs it to disk; the first thing that failed, if any. Wrong bytes panic.
fn file_still_works(cache: &PageCache, dir: &Path, what: &str) -> Result<(), String> {
    let path = dir.join("still-works");
    let content = pattern(99, 96 << 10);
    std::fs::write(&path, &content).unwrap();
    let f = cache.open_with(&path, &rw()).map_err(|e| format!("{what}: opening a file: {e}"))?;
    let read_back = |want: &[u8], when: &str| -> Result<(), String> {
        let mut buf = vec![0u8; want.len()];
        f.read_exact_at(&mut buf, 0).map_err(|e| format!("{what}: file read {when}: {e} ({:?})", e.kind()))?;
        assert_same(&format!("{what}: file read {when}"), &buf, want, 0);
        Ok(())
    };
    read_back(&content, "before a write")?;
    let new = pattern(100, 40 << 10);
    f.write_all_at(&new, 20 << 10).map_err(|e| format!("{what}: file write: {e} ({:?})", e.kind()))?;
    f.sync_data().map_err(|e| format!("{what}: file sync: {e}"))?;
    let mut want = content.clone();
    want[20 << 10..60 << 10].copy_from_slice(&new);
    read_back(&want, "after a write")?;
    drop(f);
    assert_same(&format!("{what}: file on disk"), &std::fs::read(&path).unwrap(), &want, 0);
    std::fs::remove_file(&path).unwrap();
    Ok(())
}

/// With the swap area full: pages in memory must read right; the others
/// read right or fail with StorageFull/OutOfMemory (never wrong bytes).
/// Returns the reads that failed (it stops trying pages out of memory
/// after 2 failures: each takes reclaim's whole bounded effort).
fn read_back_when_full(what: &str, m: &CachedFile, model: &[u8]) -> Vec<String> {
    let mut failed = Vec::new();
    let mut buf = vec![0u8; PAGE_SIZE];
    for p in 0..model.len() as u64 / PS {
        let want = &model[(p * PS) as usize..((p + 1) * PS) as usize];
        let resident = m.mapping().find_get_page(p).is_some();
        if !resident && failed.len() >= 2 {
            continue;
        }
        match m.read_exact_at(&mut buf, p * PS) {
            Ok(()) => assert_same(&format!("{what}, page {p}"), &buf, want, p * PS),
            Err(e) => {
                assert!(!resident, "{what}: page {p}, in memory, failed to read: {e}");
                assert!(is_out_of_room(&e), "{what}: page {p}: an unclear error {e:?}");
                failed.push(format!("{what}: reading page {p}: {e} ({:?})", e.kind()));
            }
        }
    }
    failed
}

/// The contract with the swap area full: every byte written before reads
/// back, and files keep working (`problems` lists what did not).
#[track_caller]
fn assert_full_contract(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} failures of the contract \"what was written before stays readable; files keep working\" \
         (nothing was lost: all read right once there was room again). First ones: {:#?}",
        problems.len(),
        &problems[..problems.len().min(4)]
    );
}

/// Writes page after page of `mems` (in order) until a write fails;
/// returns the region, page and error of the failure.
fn fill_until_error(mems: &[&CachedFile], models: &mut [Vec<u8>], what: &str) -> Option<(usize, u64, io::Error)> {
    for (w, m) in mems.iter().enumerate() {
        for p in 0..m.len() / PS {
            let data = noise((w as u64) << 32 | p, PAGE_SIZE);
            if let Err(e) = write_tracked(m, &data, p * PS, &mut models[w]) {
                eprintln!("{what}: region {w} page {p}: {e} ({:?})", e.kind());
                return Some((w, p, e));
            }
        }
    }
    None
}

#[test]
fn swap_limit_reached_is_an_error_and_nothing_is_lost() {
    let capacity = 256usize << 10;
    let limit = 256u64 << 10;
    let swap_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder().capacity(capacity).swap_dir(swap_dir.path()).swap_limit(limit).build().unwrap();
    // Each alone fits; both do not.
    let each = limit + capacity as u64;
    let a = cache.anonymous(each).unwrap();
    let b = cache.anonymous(each).unwrap();
    let mut models = vec![vec![0u8; each as usize]; 2];
    let (w, p, e) = fill_until_error(&[&a, &b], &mut models, "swap limit")
        .expect("2 x (swap limit + capacity) of anonymous memory written without an error");
    assert!(is_out_of_room(&e), "want StorageFull or OutOfMemory, got {e:?} (kind {:?})", e.kind());
    let written = (w as u64 * each + p * PS) as usize;
    assert!(written > capacity, "refused after {written} bytes: before the swap area was used");
    let s = cache.stats();
    eprintln!("swap limit reached after {written} bytes: {e}; {s:?}");
    assert!(s.swap_pages * PS <= limit, "more swap slots in use than the limit allows: {s:?}");
    assert!(s.swap_pages > 0 && s.swap_outs > 0, "refused with no swap in use: {s:?}");

    // The same write again: no hang, and either refused the same way or,
    // if reclaim finished making room meanwhile (kswapd may have been
    // mid-batch when the first one failed), taken whole.
    let data = noise(1, PAGE_SIZE);
    match write_tracked([&a, &b][w], &data, p * PS, &mut models[w]) {
        Ok(()) => eprintln!("the retry found room: {:?}", cache.stats()),
        Err(e) => assert!(is_out_of_room(&e), "the retry: {e:?}"),
    }
    // Everything written before stays readable (checked at the end, after
    // the rest), and files keep working in the same cache.
    let mut problems = read_back_when_full("swap limit reached: region a", &a, &models[0]);
    problems.extend(read_back_when_full("swap limit reached: region b", &b, &models[1]));
    problems.extend(file_still_works(&cache, dir.path(), "swap limit reached").err());

    // Room again (b dropped, a truncated to half): the half left reads
    // right, and takes writes again.
    drop(b);
    a.set_len(each / 2).unwrap();
    models[0].truncate((each / 2) as usize);
    check_all("region a after truncating it to half", &a, &models[0], 0);
    for p in 0..each / 2 / PS {
        let data = noise(7 << 40 | p, PAGE_SIZE);
        write_tracked(&a, &data, p * PS, &mut models[0])
            .unwrap_or_else(|e| panic!("after making room, page {p} of a: {e}"));
    }
    check_all("region a rewritten after making room", &a, &models[0], 0);
    drop(a);
    assert_all_freed("both regions dropped", &cache, swap_dir.path());
    settle(&cache);
    cache.check_invariants();
    drop_cache_and_check(cache, swap_dir.path());
    assert_full_contract("swap limit reached", &problems);
}

#[test]
fn swap_on_a_full_file_system_is_enospc_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("swap");
    let Some(_mounted) = common::tmpfs(&mnt, "1m") else {
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        return;
    };
    let capacity = 256usize << 10;
    let cache =
        PageCache::builder().capacity(capacity).swap_dir(&mnt).swap_limit(16 << 20).build().expect("build a cache");
    let len = 4u64 << 20;
    let mem = cache.anonymous(len).unwrap();
    let mut models = vec![vec![0u8; len as usize]];
    let (_, p, e) = fill_until_error(&[&mem], &mut models, "tmpfs").expect("4 MiB written to a 1 MiB swap tmpfs");
    eprintln!("the full swap file system: {e} (kind {:?}, errno {:?})", e.kind(), e.raw_os_error());
    assert!(is_out_of_room(&e), "want StorageFull (ENOSPC) or OutOfMemory, got {e:?}");
    assert!(!e.to_string().is_empty());
    assert!(p * PS > capacity as u64, "refused after {} bytes, before the swap file took anything", p * PS);
    assert!(cache.stats().swap_outs > 0, "{:?}", cache.stats());
    let mut problems = read_back_when_full("swap file system full", &mem, &models[0]);
    problems.extend(file_still_works(&cache, dir.path(), "swap file system full").err());

    // Room again (the second half truncated): the first half rewritten, all right.
    mem.set_len(len / 8).unwrap();
    models[0].truncate((len / 8) as usize);
    for p in 0..len / 8 / PS {
        write_tracked(&mem, &noise(3 << 40 | p, PAGE_SIZE), p * PS, &mut models[0])
            .unwrap_or_else(|e| panic!("after truncating, page {p}: {e}"));
    }
    check_all("after truncating and rewriting", &mem, &models[0], 0);
    drop(mem);
    assert_all_freed("memory dropped", &cache, &mnt);
    drop_cache_and_check(cache, &mnt);
    // The tmpfs has all its room back: the swap file is gone.
    let st = statvfs(&mnt);
    assert_eq!(st.0, st.1, "tmpfs blocks free {} of {} after the cache dropped", st.0, st.1);
    assert_full_contract("swap file system full", &problems);
}

/// (free blocks, total blocks) of the file system at `path`.
fn statvfs(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed is a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs: {}", io::Error::last_os_error());
    (st.f_bfree as u64, st.f_blocks as u64)
}

#[test]
fn len_beyond_swap_limit_and_capacity_is_refused_up_front() {
    let capacity = 256usize << 10;
    let limit = 1u64 << 20;
    let swap_dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder().capacity(capacity).swap_dir(swap_dir.path()).swap_limit(limit).build().unwrap();
    let over = limit + cache.capacity() as u64 + PS;
    for len in [over, 2 * over, u64::MAX / 2, u64::MAX] {
        let e = cache.anonymous(len).expect_err(&format!("anonymous({len}) beyond swap limit + capacity"));
        assert!(
            matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::OutOfMemory),
            "anonymous({len}): {e:?} (kind {:?})",
            e.kind()
        );
        let e = cache.anonymous_with_page_size(len, 16 << 10).expect_err("with 16 KiB pages");
        assert!(matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::OutOfMemory), "{e:?}");
    }
    // Bad page sizes.
    for ps in [0usize, 512, 2048, 12288, 131072] {
        let e = cache.anonymous_with_page_size(1 << 16, ps).expect_err(&format!("page size {ps}"));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "page size {ps}: {e:?}");
    }
    // Within the limit is fine, and nothing leaked from the refusals.
    let ok = cache.anonymous(limit).unwrap();
    ok.write_all_at(b"fits", limit - 4).unwrap();
    drop(ok);
    assert_all_freed("after the refusals", &cache, swap_dir.path());
    drop_cache_and_check(cache, swap_dir.path());
}

#[test]
fn clones_share_memory_and_the_last_drop_frees_it() {
    let capacity = 256usize << 10;
    let swap_dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder().capacity(capacity).swap_dir(swap_dir.path()).swap_limit(4 << 20).build().unwrap();
    let len = 4 * capacity as u64;
    let a = cache.anonymous(len).unwrap();
    let other = cache.anonymous(len).unwrap();
    let b = a.clone();
    let mut model = pattern(11, len as usize);
    a.write_all_at(&model, 0).unwrap();
    check_all("written through a, read through b", &b, &model, 0);
    let d = pattern(12, 10_000);
    b.write_all_at(&d, 5_000).unwrap();
    model[5_000..15_000].copy_from_slice(&d);
    check_all("written through b, read through a", &a, &model, 0);
    check_all("another region is separate (zeros)", &other, &vec![0; len as usize], 0);
    b.set_len(len / 2).unwrap();
    assert_eq!(a.len(), len / 2, "set_len through b seen through a");
    model.truncate((len / 2) as usize);
    let s = cache.stats();
    assert!(s.swap_pages > 0, "4x the cache written and no swap slot in use: {s:?}");

    // A clone dropped on another thread: the memory stays.
    let c = a.clone();
    std::thread::spawn(move || drop(c)).join().unwrap();
    drop(a);
    check_all("only b left", &b, &model, 0);
    assert!(cache.stats().swap_pages > 0, "swap freed while a handle lives: {:?}", cache.stats());

    // The last handle dropped on another thread frees it all.
    std::thread::spawn(move || drop(b)).join().unwrap();
    drop(other);
    assert_all_freed("after the last clone dropped", &cache, swap_dir.path());
    settle(&cache);
    cache.check_invariants();
    drop_cache_and_check(cache, swap_dir.path());
}

#[cfg(feature = "fault-injection")]
mod faulty {
    //! The swap area on a `FaultyBacking`.

    use std::sync::Arc;

    use page_cache::fault::{FaultPlan, FaultyBacking};
    use page_cache::Backing;

    use super::*;

    struct Swap {
        plan: Arc<FaultPlan>,
        cache: PageCache,
    }

    fn cache_on_faulty_swap(capacity: usize, tier: Option<usize>) -> Swap {
        let plan = FaultPlan::new();
        let file = tempfile::tempfile().unwrap();
        let backing: Arc<dyn Backing> = Arc::new(FaultyBacking::from_file(file, plan.clone()));
        let mut b = PageCache::builder().capacity(capacity).swap_backing(backing).swap_limit(16 << 20);
        if let Some(t) = tier {
            b = b.compressed_tier(t);
        }
        Swap { plan, cache: b.build().unwrap() }
    }

    /// After a write of `new` at `off` failed: the bytes there must be the
    /// old ones or the new ones, wholly; the model takes what is there.
    fn resolve(what: &str, f: &CachedFile, off: u64, new: &[u8], model: &mut [u8]) {
        let mut got = vec![0u8; new.len()];
        f.read_exact_at(&mut got, off).unwrap_or_else(|e| panic!("{what}: reading back a failed write: {e}"));
        let range = off as usize..off as usize + new.len();
        if got != new {
            assert_same(
                &format!("{what}: a failed write left neither the old nor the new bytes"),
                &got,
                &model[range],
                off,
            );
        } else {
            model[range].copy_from_slice(new);
        }
    }

    #[test]
    fn swap_sync_data_is_a_noop() {
        let s = cache_on_faulty_swap(1 << 20, None);
        let mem = s.cache.anonymous(128 << 10).unwrap();
        let data = pattern(5, 128 << 10);
        mem.write_all_at(&data, 0).unwrap();
        let (before, st0) = (s.plan.stats(), s.cache.stats());
        mem.sync_data().expect("sync_data of anonymous memory");
        s.plan.set_fail_writes(true);
        s.plan.set_fail_sync(true);
        mem.sync_data().expect("sync_data of anonymous memory with a failing swap area");
        s.plan.clear();
        let (after, st1) = (s.plan.stats(), s.cache.stats());
        assert_eq!(after.writes, before.writes, "sync_data wrote to the swap area");
        assert_eq!(after.syncs, before.syncs, "sync_data synced the swap area");
        assert_eq!(st1.swap_bytes_written, st0.swap_bytes_written, "{st1:?}");
        assert_eq!(st1.swap_outs, st0.swap_outs, "{st1:?}");
        check_all("after sync_data", &mem, &data, 0);
    }

    #[test]
    fn swap_write_failures_keep_pages_and_data_stays_right() {
        let seed = base_seed() ^ 0x57;
        eprintln!("seed {seed:#x}");
        let s = cache_on_faulty_swap(256 << 10, None);
        let len = 1u64 << 20;
        let mem = s.cache.anonymous(len).unwrap();
        let mut model = vec![0u8; len as usize];
        let t0 = std::time::Instant::now();

        // Every swap write fails (ENOSPC): writes succeed while frames
        // last, then fail cleanly (the first 3 failures: each takes
        // reclaim's whole bounded effort); none hangs.
        s.plan.set_fail_writes(true);
        let mut failed = Vec::new();
        let mut next = 0;
        while next < len / PS && failed.len() < 3 {
            let data = noise(seed ^ next, PAGE_SIZE);
            if let Err(e) = write_tracked(&mem, &data, next * PS, &mut model) {
                failed.push((next, data, e));
            }
            next += 1;
        }
        let injected = s.plan.errors_injected();
        eprintln!(
            "swap writes failing: {} of {next} page writes failed, {injected} swap writes refused ({:?})",
            failed.len(),
            t0.elapsed()
        );
        assert!(injected > 0, "4x the cache written and no swap write tried: {:?}", s.cache.stats());
        assert!(!failed.is_empty(), "4x the cache written with every swap write failing, and no write_at failed");
        for (p, _, e) in &failed {
            assert!(is_out_of_room(e) || e.raw_os_error().is_some(), "page {p}: an unclear error {e:?}");
        }
        // What the cache took is there while the faults last.
        for p in 0..4 {
            let mut b = vec![0u8; PAGE_SIZE];
            mem.read_exact_at(&mut b, p * PS).unwrap();
            assert_same("with swap writes failing", &b, &model[(p * PS) as usize..((p + 1) * PS) as usize], p * PS);
        }
        s.plan.clear();
        for (p, data, _) in &failed {
            resolve("after the faults stopped", &mem, p * PS, data, &mut model);
        }
        for (p, data, _) in &failed {
            write_tracked(&mem, data, p * PS, &mut model)
                .unwrap_or_else(|e| panic!("page {p} once the faults stopped: {e}"));
        }
        for p in next..len / PS {
            write_tracked(&mem, &noise(seed ^ p, PAGE_SIZE), p * PS, &mut model)
                .unwrap_or_else(|e| panic!("page {p} once the faults stopped: {e}"));
        }
        check_all("once swap writes work again", &mem, &model, 0);
        assert!(s.cache.stats().swap_outs > 0, "{:?}", s.cache.stats());

        // One-shot EIOs in a random workload.
        let mut rng = Rng::new(seed);
        let before = s.plan.errors_injected();
        let (mut write_errors, mut read_errors) = (0, 0);
        for i in 0..scaled(3000, 400) {
            if i % 8 == 0 {
                s.plan.fail_nth_write(1 + rng.below(3));
            }
            let off = rng.below(len - 3 * PS);
            let n = 1 + rng.below(3 * PS) as usize;
            if rng.below(2) == 0 {
                let data = pattern(rng.next(), n);
                if let Err(e) = write_tracked(&mem, &data, off, &mut model) {
                    write_errors += 1;
                    s.plan.fail_nth_write(0);
                    resolve(&format!("op {i}: write_at({off}, {n}) failed with {e}"), &mem, off, &data, &mut model);
                }
            } else {
                let mut b = vec![0xEEu8; n];
                match mem.read_exact_at(&mut b, off) {
                    Ok(()) => assert_same(
                        &format!("op {i} (seed {seed:#x})"),
                        &b,
                        &model[off as usize..off as usize + n],
                        off,
                    ),
                    Err(_) => read_errors += 1,
                }
            }
        }
        s.plan.clear();
        let injected = s.plan.errors_injected() - before;
        eprintln!(
            "one-shot EIOs: {injected} injected, {write_errors} write_at and {read_errors} read errors ({:?})",
            t0.elapsed()
        );
        assert!(injected > 0, "no one-shot swap write fault fired: {:?}", s.cache.stats());
        check_all(&format!("after one-shot faults (seed {seed:#x})"), &mem, &model, 0);
        drop(mem);
        let st = s.cache.stats();
        assert_eq!((st.swap_pages, st.anon_pages), (0, 0), "{st:?}");
        s.cache.check_invariants();
    }

    /// Pages not resident now: their bytes live in the swap area (or the tier).
    fn not_resident(mem: &CachedFile) -> Vec<u64> {
        let ps = mem.mapping().page_size() as u64;
        (0..mem.len() / ps).filter(|&i| mem.mapping().find_get_page(i).is_none()).collect()
    }

    fn read_failures(tier: Option<usize>, data: fn(u64, usize) -> Vec<u8>) {
        let s = cache_on_faulty_swap(256 << 10, tier);
        let len = 1u64 << 20;
        let mem = s.cache.anonymous(len).unwrap();
        let model = data(3, len as usize);
        mem.write_all_at(&model, 0).unwrap();
        let st = s.cache.stats();
        eprintln!("after the fill: {st:?}");
        if tier.is_some() {
            assert!(st.frontswap_stores > 0, "nothing stored in the tier: {st:?}");
            assert!(st.frontswap_writebacks > 0, "the full tier wrote nothing back to the swap area: {st:?}");
        }
        assert!(s.plan.stats().writes > 0, "nothing was written to the swap area: {st:?}");

        let gone = not_resident(&mem);
        assert!(gone.len() as u64 > len / PS / 2, "only {} pages out of memory", gone.len());
        s.plan.set_fail_reads(true);
        let (mut errors, mut right) = (0, 0);
        for &p in gone.iter().step_by(7).take(12) {
            let mut b = vec![0u8; PAGE_SIZE];
            match mem.read_at(&mut b, p * PS) {
                Err(_) => errors += 1,
                Ok(n) => {
                    // Only the tier may serve it while the swap area fails.
                    assert!(tier.is_some(), "page {p}: read_at returned Ok({n}) while every swap read fails");
                    assert_same(
                        &format!("page {p} with swap reads failing"),
                        &b[..n],
                        &model[(p * PS) as usize..][..n],
                        p * PS,
                    );
                    right += 1;
                }
            }
        }
        eprintln!("with swap reads failing: {errors} errors, {right} right reads");
        assert!(errors > 0, "no read of a swapped-out page failed while every swap read fails");

        // A partial write into a page out of memory needs its old bytes:
        // with swap reads failing it fails, or keeps the old bytes around.
        let target = *gone.iter().rev().find(|&&p| mem.mapping().find_get_page(p).is_none()).unwrap();
        let at = target * PS + 100;
        let w = mem.write_at(b"partial", at);
        s.plan.clear();
        let mut want = model.clone();
        if let Ok(n) = w {
            want[at as usize..at as usize + n].copy_from_slice(&b"partial"[..n]);
        }
        eprintln!("partial write into swapped-out page {target} with reads failing: {w:?}");
        check_all("after the faults stopped", &mem, &want, 0);

        // A one-shot failure: that read fails, the next one is right.
        let p = *not_resident(&mem).first().expect("some page out of memory");
        let mut b = vec![0u8; PAGE_SIZE];
        if tier.is_none() {
            s.plan.fail_nth_read(1);
            assert!(mem.read_at(&mut b, p * PS).is_err(), "page {p}: the one failing swap read was not reported");
        }
        mem.read_exact_at(&mut b, p * PS).unwrap();
        assert_same("after a one-shot read failure", &b, &want[(p * PS) as usize..((p + 1) * PS) as usize], p * PS);
        drop(mem);
        let st = s.cache.stats();
        assert_eq!((st.swap_pages, st.anon_pages), (0, 0), "{st:?}");
        s.cache.check_invariants();
    }

    #[test]
    fn swap_read_failures_are_errors_never_zeros() {
        read_failures(None, noise);
    }

    #[test]
    fn swap_read_failures_behind_the_compressed_tier() {
        // Compressible bytes in a small tier: it fills and writes its cold
        // entries to the swap area, whose reads then fail.
        read_failures(Some(64 << 10), pattern);
    }
}
