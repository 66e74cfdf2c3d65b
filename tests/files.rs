//! The file API against std's semantics: a model test over two handles of
//! one file (with pages of 4, 16 and 64 KiB), write errors (ENOSPC) reported to every handle, readahead,
//! sharing between opens, end-of-file behaviour, durability on drop, the
//! cursor, and error kinds.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{run_model_cases, settle};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};
use proptest::prelude::*;

const PS: u64 = PAGE_SIZE as u64;

// ---- helpers ------------------------------------------------------------------

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

/// Byte `i` of the test pattern with seed `seed`.
fn pat(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pat(seed, start + i)).collect()
}

/// Where two byte strings first differ, for readable failures.
fn first_diff(a: &[u8], b: &[u8]) -> Option<String> {
    if a == b {
        return None;
    }
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    Some(format!(
        "lengths {} vs {}; first difference at byte {i} (page {}): {:?} vs {:?}",
        a.len(),
        b.len(),
        i / PAGE_SIZE,
        a.get(i),
        b.get(i)
    ))
}

#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if let Some(d) = first_diff(got, want) {
        panic!("{what}: {d}");
    }
}

// ---- 1. model test ----------------------------------------------------------------

/// The model test's ranges, in pages of the file's page size `ps`: offsets
/// up to 18 pages, writes and reads up to 3 pages, files of up to 16 pages
/// at the start (72, 12 and 64 KiB at 4 KiB).
fn max_off(ps: usize) -> u64 {
    18 * ps as u64
}

fn max_len(ps: usize) -> usize {
    3 * ps
}

#[derive(Clone, Debug)]
enum Op {
    Read {
        h: usize,
        off: u64,
        len: usize,
    },
    Write {
        h: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    SetLen {
        h: usize,
        len: u64,
    },
    Sync {
        h: usize,
    },
    /// `invalidate_range`: changes nothing the model sees (the file was
    /// not changed behind the cache), whatever writeback is doing.
    Invalidate {
        h: usize,
        off: u64,
        len: u64,
    },
}

/// Offsets anywhere, or within a few bytes of a page boundary (in a file of
/// large pages, also of a 4 KiB block boundary inside a page).
fn offset(ps: usize) -> BoxedStrategy<u64> {
    let (max, ps) = (max_off(ps), ps as u64);
    let near = move |unit: u64| {
        (0..=max / unit, -3i64..=3).prop_map(move |(p, d)| (p * unit).saturating_add_signed(d).min(max))
    };
    if ps == PS {
        prop_oneof![0..max, near(PS)].boxed()
    } else {
        prop_oneof![2 => 0..max, 1 => near(ps), 1 => near(PS)].boxed()
    }
}

fn length(ps: usize) -> BoxedStrategy<usize> {
    let max = max_len(ps);
    let near = move |unit: usize| {
        (0..=max / unit, -2isize..=2).prop_map(move |(p, d)| (p * unit).saturating_add_signed(d).min(max))
    };
    if ps == PAGE_SIZE {
        prop_oneof![0..=max, near(PAGE_SIZE)].boxed()
    } else {
        // Short writes too: a few bytes or blocks into a large page.
        prop_oneof![2 => 0..=max, 1 => 0..=2 * PAGE_SIZE, 1 => near(ps), 1 => near(PAGE_SIZE)].boxed()
    }
}

fn op(ps: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, offset(ps), length(ps)).prop_map(|(h, off, len)| Op::Read { h, off, len }),
        4 => (0..2usize, offset(ps), length(ps), any::<u64>())
            .prop_map(|(h, off, len, seed)| Op::Write { h, off, len, seed }),
        1 => (0..2usize, offset(ps)).prop_map(|(h, len)| Op::SetLen { h, len }),
        1 => (0..2usize).prop_map(|h| Op::Sync { h }),
        1 => (0..2usize, offset(ps), offset(ps)).prop_map(|(h, off, len)| Op::Invalidate { h, off, len }),
    ]
}

fn run_model(cache: &PageCache, path: &Path, ps: usize, initial_len: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    run_model_on(cache, path, ps, initial_len, ops, |path| {
        [cache.open_with_page_size(path, &rw(), ps).unwrap(), cache.open_with_page_size(path, &rw(), ps).unwrap()]
    })
}

/// The model test over two handles that `open` makes of the file at
/// `path`, which holds the model's first bytes when it is called.
fn run_model_on(
    cache: &PageCache,
    path: &Path,
    ps: usize,
    initial_len: usize,
    ops: &[Op],
    open: impl FnOnce(&Path) -> [CachedFile; 2],
) -> Result<(), TestCaseError> {
    let mut model = pattern(1, 0, initial_len);
    std::fs::write(path, &model).unwrap();
    let hs = open(path);
    prop_assert_eq!(hs[0].mapping().page_size(), ps);
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Read { h, off, len } => {
                let mut buf = vec![0xA5; len];
                let n = hs[h].read_at(&mut buf, off).unwrap();
                let want = if off >= model.len() as u64 { 0 } else { len.min(model.len() - off as usize) };
                prop_assert_eq!(n, want, "step {}: read_at({}, {}) count, size {}", step, off, len, model.len());
                let o = (off as usize).min(model.len());
                if let Some(d) = first_diff(&buf[..n], &model[o..o + n]) {
                    prop_assert!(false, "step {}: read_at({}, {}) bytes: {}", step, off, len, d);
                }
            }
            Op::Write { h, off, len, seed } => {
                let data = pattern(seed, 0, len);
                let n = hs[h].write_at(&data, off).unwrap();
                prop_assert_eq!(n, len, "step {}: write_at({}, {}) was short", step, off, len);
                if len > 0 {
                    let (o, end) = (off as usize, off as usize + len);
                    if end > model.len() {
                        model.resize(end, 0);
                    }
                    model[o..end].copy_from_slice(&data);
                }
            }
            Op::SetLen { h, len } => {
                hs[h].set_len(len).unwrap();
                model.resize(len as usize, 0);
            }
            Op::Sync { h } => hs[h].sync_data().unwrap(),
            Op::Invalidate { h, off, len } => {
                hs[h].invalidate_range(off, len).unwrap();
            }
        }
        for f in &hs {
            prop_assert_eq!(f.len(), model.len() as u64, "step {}: size after {:?}", step, op);
        }
    }
    hs[0].sync_all().unwrap();
    hs[1].sync_all().unwrap();
    let disk = std::fs::read(path).unwrap();
    if let Some(d) = first_diff(&disk, &model) {
        prop_assert!(false, "file after sync_all: {}", d);
    }
    settle(cache);
    cache.check_invariants();
    Ok(())
}

/// Runs the model test with pages of `ps` bytes in one cache of `capacity`
/// bytes (a cache per case would cost more to start and stop than the case
/// itself). Each case gets a new file, and later cases run against the
/// pages earlier ones left behind.
fn model_test(capacity: usize, ps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(capacity).unwrap();
    let case = std::cell::Cell::new(0);
    let strategy = (0..=16 * ps, prop::collection::vec(op(ps), 1..48));
    run_model_cases(&strategy, |(initial, ops)| {
        case.set(case.get() + 1);
        run_model(&cache, &dir.path().join(format!("f{}", case.get())), ps, initial, &ops)
    });
}

#[test]
fn model_two_handles_big_cache() {
    model_test(4 << 20, PAGE_SIZE);
}

#[test]
fn model_two_handles_eight_page_cache() {
    model_test(8 * PAGE_SIZE, PAGE_SIZE);
}

/// The model test over a backing whose writes are slow, in a cache of 16
/// pages with a flusher that starts at once: writeback by the flusher, by
/// reclaim and by sync is in flight while `invalidate_range` looks at the
/// file's size (issue 28).
#[cfg(feature = "fault-injection")]
#[test]
fn model_two_handles_slow_writes_with_invalidation() {
    use page_cache::fault::{FaultPlan, FaultyBacking};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder()
        .capacity(16 * PAGE_SIZE)
        .dirty_expire(std::time::Duration::from_millis(1))
        .build()
        .unwrap();
    let case = std::cell::Cell::new(0);
    let strategy = (0..=16 * PAGE_SIZE, prop::collection::vec(op(PAGE_SIZE), 1..48));
    run_model_cases(&strategy, |(initial, ops)| {
        case.set(case.get() + 1);
        let path = dir.path().join(format!("f{}", case.get()));
        run_model_on(&cache, &path, PAGE_SIZE, initial, &ops, |path| {
            let plan = FaultPlan::new();
            plan.set_delay(std::time::Duration::from_micros(300));
            let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
            let f = cache.open_backing(Arc::new(FaultyBacking::from_file(file, plan)), true).unwrap();
            [f.clone(), f]
        })
    });
}

/// The model test in files of 16 and 64 KiB pages: a cache of 16 MiB, and
/// one of 16 pages (smaller than most of the files).
mod large_pages {
    use super::*;

    #[test]
    fn model_two_handles_big_cache_16k() {
        model_test(16 << 20, 16 << 10);
    }

    #[test]
    fn model_two_handles_sixteen_page_cache_16k() {
        model_test(16 * (16 << 10), 16 << 10);
    }

    #[test]
    fn model_two_handles_big_cache_64k() {
        model_test(16 << 20, 64 << 10);
    }

    #[test]
    fn model_two_handles_sixteen_page_cache_64k() {
        model_test(16 * (64 << 10), 64 << 10);
    }
}

/// The model test's data loss, made likely: extending multi-page writes while
/// another thread syncs. Writeback must never see a dirty page beyond the
/// file size it reads (the size must cover a page before the page can be
/// written back), or it writes nothing of it, marks it clean, and the bytes
/// never reach the file.
#[test]
fn extending_writes_racing_with_sync_lose_nothing() {
    const CHUNK: usize = 16 * PAGE_SIZE + 123;
    const CHUNKS: usize = 128;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(16 << 20).unwrap();
    let f = cache.create(&path).unwrap();
    let data = pattern(11, 0, CHUNK * CHUNKS);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                f.sync_data().unwrap();
            }
        });
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            f.write_all_at(chunk, (i * CHUNK) as u64).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    f.sync_all().unwrap();
    assert_same("file after extending writes racing with sync", &std::fs::read(&path).unwrap(), &data);
}

// ---- 2. ENOSPC ----------------------------------------------------------------------

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Unmounts on drop, also when the test panics.
struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the file system holding `path` with a file there, then frees
/// `leave` bytes of it again.
fn fill_fs(path: &Path, leave: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the file system: {e}"),
        }
    }
    f.set_len(written.saturating_sub(leave)).unwrap();
}

#[test]
fn enospc_is_reported_to_every_handle_and_data_survives() {
    if !is_root() {
        eprintln!("skipping enospc test: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // 512 KiB: room for the 256 KiB file once the filler is gone.
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"]).arg(&mnt).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipping enospc test: mount -t tmpfs failed");
        return;
    }
    let _umount = Umount(mnt.clone());
    let cache = PageCache::new(16 << 20).unwrap();
    let path = mnt.join("data");
    let a = cache.create(&path).unwrap();
    let b = cache.open_with(&path, &rw()).unwrap();
    let filler = mnt.join("filler");
    fill_fs(&filler, 8 << 10);

    let data = pattern(7, 0, 256 << 10);
    assert_eq!(a.write_at(&data, 0).unwrap(), data.len(), "a cached write cannot run out of disk space");
    let mut back = vec![0; data.len()];
    b.read_exact_at(&mut back, 0).unwrap();
    assert_same("read through b before sync", &back, &data);

    let e = a.sync_data().expect_err("sync on a full file system must fail");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "a: {e}");
    let e = b.sync_data().expect_err("b must see the write error too");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "b: {e}");
    // The data the file did not take stays in the cache, dirty.
    assert!(a.mapping().nr_dirty() > 0, "failed pages must stay dirty");
    b.read_exact_at(&mut back, 0).unwrap();
    assert_same("read after failed syncs", &back, &data);

    std::fs::remove_file(&filler).unwrap();
    // b has seen every error so far; this sync writes everything.
    b.sync_data().expect("b: sync after freeing space");
    // a has not seen the error of b's failed attempt: it gets it once...
    let e = a.sync_data().expect_err("a must get the error from b's failed writeback once");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "a: {e}");
    // ...and then no more.
    a.sync_data().expect("a: error reported twice");
    b.sync_data().expect("b: error reported twice");
    assert_eq!(a.mapping().nr_dirty(), 0);
    assert_same("file after recovery", &std::fs::read(&path).unwrap(), &data);
    drop((a, b));
    drop(cache);
}

// ---- 3. readahead --------------------------------------------------------------------

#[test]
fn sequential_reads_read_ahead_and_random_reads_do_not() {
    const SIZE: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let content = pattern(3, 0, SIZE);
    std::fs::write(&path, &content).unwrap();

    let cache = PageCache::new(128 << 20).unwrap();
    let f = cache.open(&path).unwrap();
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for (i, want) in content.chunks(1 << 20).enumerate() {
        f.read_exact_at(&mut buf, (i << 20) as u64).unwrap();
        assert_same("sequential read", &buf, want);
    }
    let s = cache.stats();
    let pages = (SIZE / PAGE_SIZE) as u64;
    eprintln!(
        "sequential: {pages} pages, {} read calls, {} readahead pages, {} readahead hits, {:?}",
        s.read_calls,
        s.readahead_pages,
        s.readahead_hits,
        t.elapsed()
    );
    assert!(s.read_calls <= pages / 16, "{} read calls for {pages} pages", s.read_calls);
    assert!(s.readahead_pages >= pages / 2, "readahead brought in only {} pages", s.readahead_pages);
    drop(f);
    drop(cache);

    // Random page-aligned 4 KiB reads: each reads its page and no more.
    let cache = PageCache::new(128 << 20).unwrap();
    let f = cache.open(&path).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const READS: u64 = 2000;
    let mut page = vec![0u8; PAGE_SIZE];
    for _ in 0..READS {
        let off = next() % pages * PS;
        f.read_exact_at(&mut page, off).unwrap();
        assert_same("random aligned read", &page, &content[off as usize..off as usize + PAGE_SIZE]);
    }
    let s = cache.stats();
    eprintln!("random aligned: {READS} reads, {} read calls, {} readahead pages", s.read_calls, s.readahead_pages);
    assert!(s.readahead_pages <= READS / 16, "random aligned reads read ahead {} pages", s.readahead_pages);
    assert!(s.read_calls <= READS, "{} read calls for {READS} reads", s.read_calls);

    // Unaligned 4 KiB reads ask for two pages each: at most that.
    let before = cache.stats();
    for _ in 0..READS {
        let off = next() % (SIZE as u64 - PS);
        f.read_exact_at(&mut page, off).unwrap();
        assert_same("random unaligned read", &page, &content[off as usize..off as usize + PAGE_SIZE]);
    }
    let s = cache.stats();
    let (ra, calls) = (s.readahead_pages - before.readahead_pages, s.read_calls - before.read_calls);
    eprintln!("random unaligned: {READS} reads, {calls} read calls, {ra} readahead pages");
    assert!(ra <= READS + READS / 16, "random unaligned reads read ahead {ra} pages");
    assert!(calls <= READS, "{calls} read calls for {READS} reads");
}

/// `CachedFile::readahead` brings exactly the asked range (clipped at end of
/// file) in with few read calls, leaves cached pages alone, rejects an
/// overflowing range, and two threads filling alternate windows of one file
/// while a third reads it all get the file's bytes.
#[test]
fn explicit_readahead_fills_the_range_and_threads_can_share_it() {
    const SIZE: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ra");
    let content = pattern(5, 0, SIZE - 100);
    std::fs::write(&path, &content).unwrap();
    let cache = PageCache::new(64 << 20).unwrap();
    let f = cache.open(&path).unwrap();

    // Pages 10..20 cached first by a read; then readahead of pages 4..40.
    let mut buf = vec![0u8; 10 * PAGE_SIZE];
    f.read_exact_at(&mut buf, 10 * PS).unwrap();
    let before = cache.stats();
    f.readahead(4 * PS + 1, 36 * PS - 1).unwrap();
    let s = cache.stats();
    let cached: Vec<u64> = (0..64).filter(|&i| f.mapping().find_get_page(i).is_some()).collect();
    assert!((4..40).all(|i| cached.contains(&i)), "pages 4..40 are not all cached: {cached:?}");
    assert_eq!(s.readahead_pages - before.readahead_pages, 36 - 10, "pages read: only the missing ones");
    assert!(s.read_calls - before.read_calls <= 2, "{} read calls for two runs", s.read_calls - before.read_calls);
    assert_eq!(s.misses, before.misses, "readahead is not a miss");
    f.read_exact_at(&mut buf, 4 * PS).unwrap();
    assert_same("after readahead", &buf, &content[4 * PAGE_SIZE..14 * PAGE_SIZE]);
    assert_eq!(cache.stats().misses, before.misses, "reading a range read ahead misses nothing");

    // The last page (partial) and ranges past the end.
    let last = (SIZE / PAGE_SIZE - 1) as u64;
    f.readahead(last * PS, 10 * PS).unwrap();
    assert!(f.mapping().find_get_page(last).is_some());
    assert!(f.mapping().find_get_page(last + 1).is_none());
    f.readahead(SIZE as u64 * 2, PS).unwrap();
    f.readahead(0, 0).unwrap();
    let e = f.readahead(u64::MAX - 10, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    cache.check_invariants();
    drop(f);
    drop(cache);

    // Two fillers on alternate 64-page windows, one reader behind them, in
    // a cache a quarter of the file: the reader sees the file's bytes.
    let cache = PageCache::new(2 << 20).unwrap();
    let f = cache.open(&path).unwrap();
    let window = 64 * PS;
    let windows = (SIZE as u64).div_ceil(window);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let f = &f;
            s.spawn(move || {
                for w in (t..windows).step_by(2) {
                    f.readahead(w * window, window).unwrap();
                }
            });
        }
        let mut got = vec![0u8; window as usize];
        for w in 0..windows {
            let off = w * window;
            let n = f.read_at(&mut got, off).unwrap();
            let end = (off as usize + n).min(content.len());
            assert_same("reader behind two fillers", &got[..n], &content[off as usize..end]);
        }
    });
    cache.check_invariants();
}

/// `AddressSpace::read_pages` returns uptodate pages in index order, from
/// the cache where they are and read (with readahead) where they are not,
/// clipped at end of file, in a cache smaller than the file.
#[test]
fn read_pages_returns_the_range_in_order_cached_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rp");
    let size = 3 * (1 << 20) + 123;
    let content = pattern(9, 0, size);
    std::fs::write(&path, &content).unwrap();
    // Readahead in the reading thread: the read-call count is deterministic.
    let cache = PageCache::builder().capacity(1 << 20).readahead_threads(0).build().unwrap();
    let f = cache.open(&path).unwrap();
    // Some pages cached, in the middle of a later batch.
    let mut buf = vec![0u8; 3 * PAGE_SIZE];
    f.read_exact_at(&mut buf, 70 * PS).unwrap();
    let pages_in_file = size.div_ceil(PAGE_SIZE) as u64;
    let mut pages = Vec::new();
    let mut index = 0u64;
    for batch in [1usize, 7, 64, 3, 100].iter().cycle() {
        pages.clear();
        f.mapping().read_pages(index, *batch, &mut pages).unwrap();
        if pages.is_empty() {
            break;
        }
        assert_eq!(pages.len() as u64, (*batch as u64).min(pages_in_file - index), "batch at page {index}");
        for p in &pages {
            assert_eq!(p.index(), index);
            let at = index as usize * PAGE_SIZE;
            let n = (size - at).min(PAGE_SIZE);
            assert_same("read_pages", &p.read()[..n], &content[at..at + n]);
            index += 1;
        }
        cache.check_invariants();
    }
    assert_eq!(index, pages_in_file);
    let s = cache.stats();
    // Page by page would be 769 calls. Readahead reads 7-8 pages a call
    // here (93 calls with 4 frames kept free at least, 100 with 1): the
    // cache is 256 frames and a batch pins 100 of them.
    assert!(s.read_calls < pages_in_file / 6, "{} read calls for {pages_in_file} pages: no readahead", s.read_calls);
    pages.clear();
    f.mapping().read_pages(pages_in_file + 5, 4, &mut pages).unwrap();
    assert!(pages.is_empty());
}

/// A sequential reader of a small cache with the default readahead worker:
/// the worker's windows are in the cache, locked, before it reads them, so
/// the reader waits for them instead of missing and reading them itself.
#[test]
fn sequential_reader_does_not_overtake_the_readahead_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seq");
    let size = 16 << 20;
    let content = pattern(13, 0, size);
    std::fs::write(&path, &content).unwrap();
    let cache = PageCache::builder().capacity(4 << 20).readahead_threads(1).build().unwrap();
    let f = cache.open(&path).unwrap();
    const BS: usize = 16 << 10;
    let mut buf = vec![0u8; BS];
    for (i, want) in content.chunks(BS).enumerate() {
        f.read_exact_at(&mut buf, (i * BS) as u64).unwrap();
        assert_same("sequential read with a worker", &buf, want);
    }
    let s = cache.stats();
    let pages = (size / PAGE_SIZE) as u64;
    eprintln!("{pages} pages: {} misses, {} read calls, {} readahead pages", s.misses, s.read_calls, s.readahead_pages);
    // 64-page windows: 64 reads at the least. Before the pages went in
    // in the reader's thread, this reader missed 506 of 4096 pages and
    // read 734 twice.
    assert!(s.misses <= pages / 32, "{} misses in {pages} pages", s.misses);
    assert!(s.read_calls <= pages / 32, "{} read calls for {pages} pages", s.read_calls);
    cache.check_invariants();
}

// ---- 4. two opens share pages -------------------------------------------------------

#[test]
fn two_opens_of_one_path_share_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, pattern(4, 0, 5 * PAGE_SIZE)).unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let a = cache.open_with(&path, &rw()).unwrap();
    let b = cache.open_with(&path, &rw()).unwrap();
    let data = pattern(5, 0, 3 * PAGE_SIZE + 100);
    a.write_all_at(&data, 2000).unwrap();
    let mut back = vec![0; data.len()];
    b.read_exact_at(&mut back, 2000).unwrap();
    assert_same("b sees a's unsynced write", &back, &data);
    assert!(a.mapping().nr_pages() > 0);
    assert_eq!(a.mapping().nr_pages(), b.mapping().nr_pages());
    assert!(std::ptr::eq(a.mapping(), b.mapping()), "two opens of one file must share the mapping");
    let (pa, pb) = (a.mapping().find_get_page(1).unwrap(), b.mapping().find_get_page(1).unwrap());
    assert_eq!(pa.pfn(), pb.pfn());
    drop((pa, pb));
    // A write extending the file is seen through the other handle's size.
    b.write_all_at(b"tail", 10 * PS).unwrap();
    assert_eq!(a.len(), 10 * PS + 4);
    // A read-only open shares the same pages too.
    let c = cache.open(&path).unwrap();
    let mut tail = [0u8; 4];
    c.read_exact_at(&mut tail, 10 * PS).unwrap();
    assert_eq!(&tail, b"tail");
    assert_eq!(c.mapping().nr_pages(), a.mapping().nr_pages());
}

// ---- 5. end of file -------------------------------------------------------------------

fn read_vec(f: &CachedFile, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    let n = f.read_at(&mut buf, off).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn reads_past_eof_holes_and_regrown_tails_are_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(4 << 20).unwrap();
    let f = cache.create(&path).unwrap();
    let data = pattern(6, 0, 10_000);
    f.write_all_at(&data, 0).unwrap();

    // At and after EOF: 0; across EOF: short.
    assert_eq!(f.read_at(&mut [0; 10], 10_000).unwrap(), 0);
    assert_eq!(f.read_at(&mut [0; 10], 1 << 40).unwrap(), 0);
    assert_eq!(f.read_at(&mut [0; 100], 9_950).unwrap(), 50);
    assert_eq!(f.read_at(&mut [], 0).unwrap(), 0);

    // Extending with set_len: the rest of the last partial page, and beyond, read as zeros.
    f.set_len(20_000).unwrap();
    let got = read_vec(&f, 0, 30_000);
    assert_eq!(got.len(), 20_000);
    assert_same("data before old EOF", &got[..10_000], &data);
    assert_same("extension", &got[10_000..], &[0; 10_000]);

    // Shrink to mid-page, then grow: the regrown part is zeros.
    f.set_len(5_000).unwrap();
    assert_eq!(f.len(), 5_000);
    assert_eq!(read_vec(&f, 4_000, 2_000).len(), 1_000);
    f.set_len(12_000).unwrap();
    let got = read_vec(&f, 0, 12_000);
    assert_same("kept part", &got[..5_000], &data[..5_000]);
    assert_same("regrown part", &got[5_000..], &[0; 7_000]);

    // A write far past EOF leaves a hole of zeros.
    let far = (1 << 20) + 123;
    f.write_all_at(b"far", far).unwrap();
    assert_eq!(f.len(), far + 3);
    let got = read_vec(&f, 0, far as usize + 10);
    assert_eq!(got.len(), far as usize + 3);
    assert_same("kept part", &got[..5_000], &data[..5_000]);
    assert!(got[5_000..far as usize].iter().all(|&b| b == 0), "hole not zero");
    assert_eq!(&got[far as usize..], b"far");

    f.sync_all().unwrap();
    let disk = std::fs::read(&path).unwrap();
    assert_same("on disk", &disk, &got);

    // The same through pages that come from the file rather than from writes.
    drop(f);
    drop(cache);
    std::fs::write(&path, &data).unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let f = cache.open_with(&path, &rw()).unwrap();
    assert_same("read from file", &read_vec(&f, 0, 20_000), &data);
    f.set_len(6_000).unwrap(); // last page cached
    f.set_len(9_000).unwrap();
    let mut want = data[..6_000].to_vec();
    want.resize(9_000, 0);
    assert_same("shrink/grow of a cached page from the file", &read_vec(&f, 0, 20_000), &want);
    f.sync_all().unwrap();
    assert_same("on disk after shrink/grow", &std::fs::read(&path).unwrap(), &want);
    cache.check_invariants();
}

// ---- 6. drop without sync -------------------------------------------------------------

#[test]
fn dropping_handles_and_cache_without_sync_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    for cache_first in [false, true] {
        let path = dir.path().join(format!("f{cache_first}"));
        let cache = PageCache::new(4 << 20).unwrap();
        let f = cache.create(&path).unwrap();
        let data = pattern(8, 0, 300_001);
        f.write_all_at(&data, 0).unwrap();
        if cache_first {
            drop(cache);
            drop(f);
        } else {
            drop(f);
            drop(cache);
        }
        assert_same(&format!("file (cache dropped first: {cache_first})"), &std::fs::read(&path).unwrap(), &data);
    }
}

// ---- 7. cursor ----------------------------------------------------------------------------

#[test]
fn flush_puts_dirty_pages_in_the_file_without_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(4 << 20).unwrap();
    let f = cache.create(&path).unwrap();
    let data = pattern(4, 0, 3 * PAGE_SIZE + 17);
    let mut c = f.cursor();
    c.write_all(&data).unwrap();
    assert_eq!(cache.stats().dirty_pages, 4);
    c.flush().unwrap();
    assert_eq!(cache.stats().dirty_pages, 0);
    assert_same("file after flush", &std::fs::read(&path).unwrap(), &data);
}

#[test]
fn cursor_reads_writes_and_seeks_like_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(4 << 20).unwrap();
    let f = cache.create(&path).unwrap();
    let data = pattern(9, 0, 100_000);
    let mut c = f.cursor();
    for chunk in data.chunks(777) {
        c.write_all(chunk).unwrap();
    }
    assert_eq!(c.position(), data.len() as u64);
    assert_eq!(c.stream_position().unwrap(), data.len() as u64);

    c.seek(SeekFrom::Start(0)).unwrap();
    let mut out = Vec::new();
    let n = std::io::copy(&mut c, &mut out).unwrap();
    assert_eq!(n, data.len() as u64);
    assert_same("io::copy", &out, &data);

    assert_eq!(c.seek(SeekFrom::End(-10)).unwrap(), data.len() as u64 - 10);
    let mut tail = Vec::new();
    c.read_to_end(&mut tail).unwrap();
    assert_same("tail", &tail, &data[data.len() - 10..]);
    assert_eq!(c.seek(SeekFrom::Current(-20)).unwrap(), data.len() as u64 - 20);
    let e = c.seek(SeekFrom::Current(-(data.len() as i64) - 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(c.position(), data.len() as u64 - 20, "a failed seek must not move the cursor");

    // Seek past the end and write: a hole.
    c.seek(SeekFrom::End(5000)).unwrap();
    c.write_all(b"xyz").unwrap();
    c.flush().unwrap();
    let mut want = data.clone();
    want.resize(data.len() + 5000, 0);
    want.extend_from_slice(b"xyz");
    c.rewind().unwrap();
    let mut out = Vec::new();
    std::io::copy(&mut c, &mut out).unwrap();
    assert_same("io::copy after hole", &out, &want);

    f.sync_data().unwrap();
    assert_same("on disk", &std::fs::read(&path).unwrap(), &want);
    // A second cursor is independent.
    let mut d = f.cursor();
    let mut first = [0u8; 16];
    d.read_exact(&mut first).unwrap();
    assert_eq!(&first, &want[..16]);
    assert_eq!(c.position(), want.len() as u64);
}

// ---- 8. error kinds ------------------------------------------------------------------------

#[test]
fn error_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(1 << 20).unwrap();

    let e = cache.open(dir.path().join("missing")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    let e = PageCache::new(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = PageCache::new(PAGE_SIZE - 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    let e = cache.open(dir.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IsADirectory, "{e}");

    let path = dir.path().join("f");
    std::fs::write(&path, b"hello").unwrap();
    let ro = cache.open(&path).unwrap();
    let e = ro.write_at(b"x", 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = ro.set_len(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let mut buf = [0u8; 5];
    ro.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"hello", "a refused write must not change the file");

    let f = cache.open_with(&path, &rw()).unwrap();
    for off in [u64::MAX, u64::MAX - 1, u64::MAX - PS, u64::MAX / 2 * 2 - 1] {
        let e = f.write_at(b"ab", off).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "write at {off}: {e}");
    }
    let e = f.set_len(u64::MAX).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(f.len(), 5, "failed calls must not change the size");
    assert_eq!(f.read_at(&mut buf, u64::MAX).unwrap(), 0);
    // The read-only handle still refuses writes after a writable open of the same file.
    let e = ro.write_at(b"x", 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
}

/// std's `File::write_at` refuses offsets a file cannot have (`off_t` is
/// signed: EINVAL at 2^63 and above). The cache must refuse them when the
/// write is made, not accept bytes that no writeback can ever store.
#[test]
fn writes_beyond_off_t_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"hello").unwrap();
    let std_err = std::os::unix::fs::FileExt::write_at(
        &std::fs::File::options().write(true).open(&path).unwrap(),
        b"ab",
        1 << 63,
    )
    .unwrap_err();
    assert_eq!(std_err.kind(), ErrorKind::InvalidInput, "std: {std_err}");
    let cache = PageCache::new(1 << 20).unwrap();
    let f = cache.open_with(&path, &rw()).unwrap();
    for off in [1u64 << 63, (1u64 << 63) + 3 * PS + 17, u64::MAX - 2 * PS] {
        if let Ok(n) = f.write_at(b"ab", off) {
            let sync = f.sync_data();
            panic!("write_at({off}) accepted {n} bytes (file size now {}); sync_data then says {sync:?}", f.len());
        }
    }
    let e = f.set_len(1 << 63).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(f.len(), 5);
}
