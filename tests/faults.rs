#![cfg(feature = "fault-injection")]
//! Guarantees under injected I/O faults (see `page_cache::fault`): no panic,
//! every failed operation returns an error, data acknowledged by a
//! successful `sync_data` is in the file, a failed writeback keeps the pages
//! dirty and reports its error once per open, a failed read leaves no page
//! uptodate with wrong bytes, and readahead failures beyond what the user
//! asked for do not fail the user's read. The tests of `cases` run with
//! pages of 4, 16 and 64 KiB; those of readahead windows at 4 KiB only.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use page_cache::fault::{FaultPlan, FaultyBacking};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    plan: Arc<FaultPlan>,
    cache: PageCache,
    file: CachedFile,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32 * 7 + (i >> 12) as u32) as u8).collect()
}

fn cache(capacity: usize) -> PageCache {
    // Background writeback stays out of the way: high dirty ratios, long expiry.
    PageCache::builder()
        .capacity(capacity)
        .huge_pages(false)
        .dirty_ratios(90, 100)
        .dirty_expire(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// A file opened through a faulty backing, with pages of `ps` bytes.
fn open_faulty(cache: &PageCache, path: &Path, plan: &Arc<FaultPlan>, ps: usize) -> CachedFile {
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
    let file =
        cache.open_backing_with_page_size(Arc::new(FaultyBacking::from_file(f, plan.clone())), true, ps).unwrap();
    assert_eq!(file.mapping().page_size(), ps);
    file
}

/// A file holding `initial` on disk, opened through a faulty backing.
fn setup(capacity: usize, initial: &[u8]) -> Setup {
    setup_ps(capacity, initial, PAGE_SIZE)
}

/// `setup` with pages of `ps` bytes.
fn setup_ps(capacity: usize, initial: &[u8], ps: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, initial).unwrap();
    let plan = FaultPlan::new();
    let cache = cache(capacity);
    let file = open_faulty(&cache, &path, &plan, ps);
    Setup { _dir: dir, path, plan, cache, file }
}

/// `bytes` of cache at 4 KiB pages, as many pages of `ps` bytes.
fn scaled(bytes: usize, ps: usize) -> usize {
    bytes / PAGE_SIZE * ps
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

/// No page of the file may be uptodate with bytes that differ from `want`.
fn assert_no_bad_uptodate(f: &CachedFile, want: &[u8]) {
    let ps = f.mapping().page_size();
    let pages = want.len().div_ceil(ps) as u64;
    for i in 0..pages {
        if let Some(p) = f.mapping().find_get_page(i) {
            if p.is_uptodate() {
                let start = i as usize * ps;
                let end = want.len().min(start + ps);
                assert_eq!(&p.read()[..end - start], &want[start..end], "page {i} uptodate with wrong bytes");
            }
        }
    }
}

/// Each test of `cases` with pages of 4 KiB under its own name, and with
/// pages of 16 and 64 KiB as `at_16k::NAME` and `at_64k::NAME`.
macro_rules! at_page_sizes {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { cases::$name(PAGE_SIZE) })*
        mod at_16k { $(#[test] fn $name() { super::cases::$name(16 << 10) })* }
        mod at_64k { $(#[test] fn $name() { super::cases::$name(64 << 10) })* }
    };
}

at_page_sizes!(
    failed_writeback_keeps_pages_dirty_and_reports_once,
    enospc_while_set_then_lands,
    error_reported_once_per_open_and_clones_share_it,
    separate_opens_each_see_their_own_errors,
    fsync_failure_is_reported_once,
    short_writes_and_reads_still_move_every_byte,
    slow_io_is_still_correct,
    copy_whose_source_fails_changes_nothing_and_a_short_one_grows_only_by_its_bytes,
    failed_read_leaves_nothing_wrong_and_retry_succeeds,
    failed_set_len_returns_error_and_retry_works,
    explicit_readahead_failure_caches_nothing_bad_and_the_reader_gets_the_error,
    random_faults_never_lose_acknowledged_data,
    extending_writes_racing_writeback_lose_nothing,
);

/// The guarantees that hold whatever the page size.
mod cases {
    use super::*;

    pub(super) fn failed_writeback_keeps_pages_dirty_and_reports_once(ps: usize) {
        let s = setup_ps(scaled(1 << 20, ps), &[], ps);
        let data = pattern(3 * ps, 1);
        s.file.write_all_at(&data, 0).unwrap();
        s.plan.fail_nth_write(1);
        let e = s.file.sync_data().expect_err("the write failed");
        assert!(is_errno(&e, libc::EIO), "{e:?}");
        for i in 0..3 {
            assert!(s.file.mapping().find_get_page(i).unwrap().is_dirty(), "page {i} lost its dirty bit");
        }
        assert_eq!(s.file.mapping().nr_dirty(), 3);
        assert_eq!(std::fs::read(&s.path).unwrap().len(), 0, "nothing reached the file");
        // The fault was one-shot: the retry lands, and the error is not reported twice.
        s.file.sync_data().expect("second sync reports nothing new and writes the data");
        assert_eq!(std::fs::read(&s.path).unwrap(), data);
        assert_eq!(s.file.mapping().nr_dirty(), 0);
        assert_eq!(s.plan.errors_injected(), 1);
        s.cache.check_invariants();
    }

    pub(super) fn enospc_while_set_then_lands(ps: usize) {
        let s = setup_ps(scaled(1 << 20, ps), &[], ps);
        let data = pattern(5 * ps + 123, 2);
        s.file.write_all_at(&data, 77).unwrap();
        s.plan.set_fail_writes(true);
        for _ in 0..3 {
            // Every sync tries again, fails again, and says so.
            let e = s.file.sync_data().expect_err("disk full");
            assert!(is_errno(&e, libc::ENOSPC), "{e:?}");
            assert!(s.file.mapping().nr_dirty() >= 6);
            assert!((0..6).all(|i| s.file.mapping().find_get_page(i).unwrap().is_dirty()));
        }
        // Reads still see the cached data.
        let mut back = vec![0; data.len()];
        s.file.read_exact_at(&mut back, 77).unwrap();
        assert_eq!(back, data);
        s.plan.set_fail_writes(false);
        s.file.sync_all().unwrap();
        let disk = std::fs::read(&s.path).unwrap();
        assert_eq!(&disk[77..], &data[..]);
        assert_eq!(&disk[..77], &[0; 77][..]);
        s.file.sync_data().unwrap();
    }

    pub(super) fn error_reported_once_per_open_and_clones_share_it(ps: usize) {
        let s = setup_ps(scaled(1 << 20, ps), &[], ps);
        let other = s.file.clone(); // clones share the open, and its errseq cursor
        s.file.write_all_at(b"abc", 0).unwrap();
        s.plan.set_fail_writes(true);
        // A writeback nobody waits on (the cache-wide sync) fails: the error is
        // kept for the handle.
        assert!(s.cache.sync().is_err());
        s.plan.set_fail_writes(false);
        // The next sync writes the data but reports the error it missed...
        let e = s.file.sync_data().expect_err("the earlier failure is reported");
        assert!(is_errno(&e, libc::ENOSPC), "{e:?}");
        assert_eq!(std::fs::read(&s.path).unwrap(), b"abc");
        // ...once: not again through the same open, nor through its clone.
        s.file.sync_data().unwrap();
        other.sync_data().unwrap();

        s.plan.set_fail_writes(true);
        other.write_all_at(b"def", 3).unwrap();
        assert!(other.sync_data().is_err());
        s.plan.set_fail_writes(false);
        // The clone already consumed it for the shared open.
        s.file.sync_data().unwrap();
        assert_eq!(std::fs::read(&s.path).unwrap(), b"abcdef");
    }

    pub(super) fn separate_opens_each_see_their_own_errors(ps: usize) {
        // `open_backing` makes a new mapping per call, so two opens of the same
        // path are two caches of it; each reports its own failures.
        let s = setup_ps(scaled(1 << 20, ps), &[], ps);
        let plan2 = FaultPlan::new();
        let second = open_faulty(&s.cache, &s.path, &plan2, ps);
        s.file.write_all_at(b"one", 0).unwrap();
        second.write_all_at(b"two", 8).unwrap();
        s.plan.set_fail_writes(true);
        assert!(s.file.sync_data().is_err());
        second.sync_data().unwrap();
        s.plan.set_fail_writes(false);
        s.file.sync_data().unwrap();
        let disk = std::fs::read(&s.path).unwrap();
        assert_eq!(&disk[..3], b"one");
        assert_eq!(&disk[8..11], b"two");
    }

    pub(super) fn fsync_failure_is_reported_once(ps: usize) {
        let s = setup_ps(scaled(1 << 20, ps), &[], ps);
        s.file.write_all_at(b"xyz", 10).unwrap();
        s.plan.set_fail_sync(true);
        assert!(is_errno(&s.file.sync_data().unwrap_err(), libc::EIO));
        assert!(s.file.sync_all().is_err());
        s.plan.set_fail_sync(false);
        s.file.sync_data().unwrap();
        assert_eq!(&std::fs::read(&s.path).unwrap()[10..], b"xyz");
    }

    pub(super) fn short_writes_and_reads_still_move_every_byte(ps: usize) {
        let s = setup_ps(scaled(1 << 20, ps), &[], ps);
        s.plan.set_short_writes(true);
        let data = pattern(10 * ps + 999, 3);
        s.file.write_all_at(&data, 4000).unwrap();
        s.file.sync_data().unwrap();
        assert_eq!(&std::fs::read(&s.path).unwrap()[4000..], &data[..]);
        assert!(s.plan.stats().short_ops > 0);
        s.plan.set_short_writes(false);

        // A fresh mapping reads everything back through short reads.
        let plan2 = FaultPlan::new();
        plan2.set_short_reads(true);
        let cache2 = cache(scaled(1 << 20, ps));
        let g = open_faulty(&cache2, &s.path, &plan2, ps);
        let mut back = vec![0; data.len()];
        g.read_exact_at(&mut back, 4000).unwrap();
        assert_eq!(back, data);
        assert!(plan2.stats().short_ops > 0);
    }

    pub(super) fn slow_io_is_still_correct(ps: usize) {
        let initial = pattern(8 * ps, 4);
        let s = setup_ps(scaled(1 << 20, ps), &initial, ps);
        s.plan.set_delay(Duration::from_millis(2));
        let mut back = vec![0; initial.len()];
        s.file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, initial);
        s.file.write_all_at(b"slow", 5000).unwrap();
        s.file.sync_data().unwrap();
        assert_eq!(&std::fs::read(&s.path).unwrap()[5000..5004], b"slow");
    }

    pub(super) fn copy_whose_source_fails_changes_nothing_and_a_short_one_grows_only_by_its_bytes(ps: usize) {
        let p = ps as u64;
        let initial = pattern(8 * ps, 3);
        let s = setup_ps(scaled(1 << 20, ps), &initial, ps);
        let mut create = OpenOptions::new();
        create.write(true).create(true).truncate(true);
        let dst = s.cache.open_with_page_size(s.path.with_extension("dst"), &create, ps).unwrap();
        dst.write_all_at(b"head", 0).unwrap();
        // Every read fails: nothing copied, and the destination does not grow
        // to the offset the copy was aimed at.
        s.plan.set_fail_reads(true);
        assert!(dst.copy_from(&s.file, 0, 10 * p, 2 * ps).is_err());
        assert_eq!(dst.len(), 4);
        s.plan.set_fail_reads(false);
        // Pages 0 and 1 cached, and reads from page 2 on fail: the copy stops
        // after the two good pages (moved, whole and aligned) and the size
        // covers exactly those.
        let mut two = vec![0u8; 2 * ps];
        s.file.read_exact_at(&mut two, 0).unwrap();
        s.plan.set_fail_reads_from(Some(2 * p));
        assert_eq!(dst.copy_from(&s.file, 0, 10 * p, 4 * ps).unwrap(), 2 * ps);
        assert_eq!(dst.len(), 12 * p);
        s.plan.set_fail_reads(false);
        s.plan.set_fail_reads_from(None);
        let mut buf = vec![0u8; 2 * ps];
        dst.read_exact_at(&mut buf, 10 * p).unwrap();
        assert_eq!(buf, &initial[..2 * ps]);
        dst.sync_all().unwrap();
        let disk = std::fs::read(s.path.with_extension("dst")).unwrap();
        assert_eq!(disk.len() as u64, 12 * p);
        assert_eq!(&disk[..4], b"head");
        assert_eq!(&disk[10 * ps..], &initial[..2 * ps]);
        // The source lost nothing.
        let mut all = vec![0u8; initial.len()];
        s.file.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, initial);
    }

    pub(super) fn failed_read_leaves_nothing_wrong_and_retry_succeeds(ps: usize) {
        let p = ps as u64;
        let initial = pattern(16 * ps, 5);
        let s = setup_ps(scaled(1 << 20, ps), &initial, ps);
        s.plan.set_fail_reads(true);
        let mut buf = vec![0; 3 * ps];
        let e = s.file.read_at(&mut buf, 100).expect_err("reads fail");
        assert!(is_errno(&e, libc::EIO), "{e:?}");
        assert_no_bad_uptodate(&s.file, &initial);
        for i in 0..16 {
            assert!(s.file.mapping().find_get_page(i).is_none_or(|p| !p.is_uptodate()), "page {i} uptodate");
        }
        // A partial-page write needs the old bytes: it fails too, and dirties nothing.
        assert!(s.file.write_at(b"patch", 5000).is_err());
        assert_eq!(s.file.mapping().nr_dirty(), 0);
        s.plan.set_fail_reads(false);
        s.file.read_exact_at(&mut buf, 100).unwrap();
        assert_eq!(buf, &initial[100..100 + buf.len()]);
        assert_no_bad_uptodate(&s.file, &initial);

        // One-shot: the first read fails, the retry succeeds.
        let plan = FaultPlan::new();
        let cache2 = cache(scaled(1 << 20, ps));
        let g = open_faulty(&cache2, &s.path, &plan, ps);
        plan.fail_nth_read(1);
        assert!(g.read_at(&mut buf, 9 * p).is_err());
        assert_no_bad_uptodate(&g, &initial);
        g.read_exact_at(&mut buf, 9 * p).unwrap();
        assert_eq!(buf, &initial[9 * ps..12 * ps]);
        // The patch now lands.
        g.write_all_at(b"patch", 5000).unwrap();
        g.sync_data().unwrap();
        let disk = std::fs::read(&s.path).unwrap();
        assert_eq!(&disk[5000..5005], b"patch");
        assert_eq!(&disk[..5000], &initial[..5000]);
        assert_eq!(&disk[5005..], &initial[5005..]);
    }

    pub(super) fn failed_set_len_returns_error_and_retry_works(ps: usize) {
        let p = ps as u64;
        let initial = pattern(4 * ps, 6);
        let s = setup_ps(scaled(1 << 20, ps), &initial, ps);
        s.plan.set_fail_set_len(true);
        assert!(s.file.set_len(10 * p).is_err(), "grow");
        assert_eq!(s.file.len(), 4 * p, "a failed grow changes nothing");
        assert!(s.file.set_len(p).is_err(), "shrink");
        s.plan.set_fail_set_len(false);
        s.file.set_len(p).unwrap();
        s.file.sync_all().unwrap();
        assert_eq!(std::fs::read(&s.path).unwrap(), &initial[..ps]);
    }

    /// `CachedFile::readahead` over a failing region returns Ok and caches none
    /// of the pages it could not read; the read that needs one gets the error,
    /// and once the fault is gone the same read succeeds.
    pub(super) fn explicit_readahead_failure_caches_nothing_bad_and_the_reader_gets_the_error(ps: usize) {
        let p = ps as u64;
        let initial = pattern(64 * ps, 10);
        let s = setup_ps(scaled(4 << 20, ps), &initial, ps);
        // Short reads: the window's read goes on in calls that reach page 16.
        s.plan.set_short_reads(true);
        s.plan.set_fail_reads_from(Some(16 * p));
        s.file.readahead(0, 64 * p).unwrap();
        assert!(s.plan.errors_injected() > 0, "the fault did not fire; the test lost its point");
        assert_no_bad_uptodate(&s.file, &initial);
        assert!(s.file.mapping().find_get_page(3).is_some(), "pages before the bad region were read");
        // The pages whose read failed are not cached; a read of one fails.
        let missing = (16..64u64).find(|&i| s.file.mapping().find_get_page(i).is_none());
        let missing = missing.expect("every page cached although reads past page 16 failed");
        let mut page = vec![0; ps];
        assert!(s.file.read_at(&mut page, missing * p).is_err(), "page {missing} is in the bad region");
        s.plan.set_fail_reads_from(None);
        s.plan.set_short_reads(false);
        let mut all = vec![0; 64 * ps];
        s.file.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, initial);
        s.cache.check_invariants();
    }

    /// A single-threaded run of random operations under seeded random faults
    /// (EIO and short I/O on reads, writes and syncs) in a cache much smaller
    /// than the file: reads that succeed return the model's bytes, and after
    /// every successful `sync_data` the file on disk equals the model.
    pub(super) fn random_faults_never_lose_acknowledged_data(ps: usize) {
        // The cache holds 32 pages of 4 KiB or 16 large pages, and the file
        // grows to twice that.
        let capacity = (32 * PAGE_SIZE).max(16 * ps);
        let s = setup_ps(capacity, &[], ps);
        let mut model: Vec<u8> = Vec::new();
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        s.plan.set_random(42, 50_000, 100_000);
        let (mut ok_syncs, mut failed_ops, mut verified) = (0u64, 0u64, 0u64);
        let mut log: Vec<String> = Vec::new();
        for step in 0..3000u64 {
            let limit = 2 * capacity as u64;
            let op = next() % 10;
            let (a, b) = (next(), next());
            // Writes up to 3 pages; with large pages, half of them up to 3
            // blocks of 4 KiB.
            let max_len = if ps > PAGE_SIZE && b >> 63 == 0 { 3 * PS } else { 3 * ps as u64 };
            match op {
                0..=3 => {
                    let off = a % limit;
                    let len = (b % max_len) as usize + 1;
                    let data = pattern(len, step as u8);
                    let r = s.file.write_at(&data, off);
                    log.push(format!("{step}: write {off}+{len} -> {r:?}"));
                    match r {
                        Ok(n) => {
                            assert!(n > 0 && n <= len);
                            let end = off as usize + n;
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[off as usize..end].copy_from_slice(&data[..n]);
                        }
                        Err(_) => failed_ops += 1,
                    }
                }
                4..=6 => {
                    let off = a % (limit + ps as u64);
                    let len = (b % max_len) as usize + 1;
                    let mut buf = vec![0xee; len];
                    match s.file.read_at(&mut buf, off) {
                        Ok(n) => {
                            let want = model.get(off as usize..).map_or(&[][..], |m| &m[..m.len().min(len)]);
                            assert!(n <= want.len(), "step {step}: read {n} past the end");
                            assert_eq!(&buf[..n], &want[..n], "step {step}: read at {off}");
                            verified += n as u64;
                        }
                        Err(_) => failed_ops += 1,
                    }
                }
                7 => {
                    let len = a % limit;
                    log.push(format!("{step}: set_len {len} (model {})", model.len()));
                    s.file.set_len(len).unwrap();
                    model.resize(len as usize, 0);
                }
                _ => {
                    let r = s.file.sync_data();
                    log.push(format!("{step}: sync -> {r:?}"));
                    match r {
                        Ok(()) => {
                            ok_syncs += 1;
                            let disk = std::fs::read(&s.path).unwrap();
                            if disk != model {
                                let first = disk.iter().zip(&model).position(|(a, b)| a != b);
                                panic!(
                                "step {step}: file differs from acknowledged data after sync: disk {} bytes, model {}, \
                                 first difference at {first:?} (page {:?}); last ops: {:?}",
                                disk.len(),
                                model.len(),
                                first.map(|f| f / ps),
                                &log[log.len().saturating_sub(12)..]
                            );
                            }
                            verified += disk.len() as u64;
                        }
                        Err(_) => failed_ops += 1,
                    }
                }
            }
            if step % 500 == 0 {
                s.cache.shrink(usize::MAX);
            }
        }
        s.plan.clear();
        // At most one stale error, then the data lands.
        if s.file.sync_data().is_err() {
            s.file.sync_data().unwrap();
        }
        assert_eq!(std::fs::read(&s.path).unwrap(), model);
        s.cache.check_invariants();
        let st = s.plan.stats();
        println!(
            "random faults: {} backing ops, {} faults injected ({} errors, {} short), {failed_ops} failed cache ops, \
             {ok_syncs} good syncs, {verified} bytes verified",
            st.operations(),
            st.faults_injected(),
            st.errors_injected,
            st.short_ops
        );
        assert!(st.errors_injected > 0 && ok_syncs > 0);
    }

    /// Writes that extend the file race with writeback that nobody waits on
    /// (the cache-wide sync, standing in for the flusher and reclaim): after a
    /// final successful `sync_data` the file must hold every byte written.
    /// (The chunks are not whole pages: with large pages, most of them end
    /// inside a page.)
    pub(super) fn extending_writes_racing_writeback_lose_nothing(ps: usize) {
        let s = setup_ps(4 << 20, &[], ps);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let syncer = {
            let (cache, stop) = (s.cache.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = cache.sync();
                    n += 1;
                }
                n
            })
        };
        let mut model = Vec::new();
        for i in 0..800usize {
            let chunk = pattern(5 * PAGE_SIZE + 333, i as u8);
            s.file.write_all_at(&chunk, model.len() as u64).unwrap();
            model.extend_from_slice(&chunk);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let syncs = syncer.join().unwrap();
        s.file.sync_data().unwrap();
        let disk = std::fs::read(&s.path).unwrap();
        let first = disk.iter().zip(&model).position(|(a, b)| a != b);
        assert!(
            disk == model,
            "after {syncs} racing syncs: disk {} bytes, model {}, first difference at {first:?}",
            disk.len(),
            model.len()
        );
    }
}

/// Asynchronous readahead inserts its window locked in the reader's thread
/// and leaves the read to a worker. A reader that reaches pages the worker
/// has in hand waits for them (or reads a queued window meanwhile) instead
/// of reading them again, under slow I/O; dropping the cache right after
/// does not hang. (A job that never runs: `readahead`'s unit tests.)
#[test]
fn queued_async_windows_are_read_or_dropped_at_shutdown() {
    let initial = pattern(256 * PAGE_SIZE, 11);
    // 8 MiB: windows of 4, 16, 64 pages (a window is at most 1/16 of the cache).
    let s = setup(8 << 20, &initial);
    s.plan.set_delay(Duration::from_millis(30));
    let mut page = vec![0; PAGE_SIZE];
    // Page 0 misses and reads 0..4 with the marker on page 1; reading
    // page 1 queues 4..20; reading page 4 (the next marker, still locked
    // under the worker's slow read) queues 20..84 and waits for page 4.
    for i in 0..5u64 {
        s.file.read_exact_at(&mut page, i * PS).unwrap();
        assert_eq!(page, &initial[i as usize * PAGE_SIZE..][..PAGE_SIZE], "page {i}");
    }
    let st = s.cache.stats();
    assert!(st.read_calls <= 3, "{} read calls: a page the worker had in hand was read again", st.read_calls);
    assert!(st.readahead_pages >= 16, "no asynchronous window went out ({} pages)", st.readahead_pages);
    for i in 5..84u64 {
        s.file.read_exact_at(&mut page, i * PS).unwrap();
        assert_eq!(page, &initial[i as usize * PAGE_SIZE..][..PAGE_SIZE], "page {i}");
    }
    s.cache.check_invariants();

    // Drop the cache while the worker may still be reading: no hang.
    let Setup { cache, file, _dir, .. } = s;
    drop(file);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(cache);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("dropping the cache hung on a queued readahead window");
}

#[test]
fn readahead_failure_beyond_request_does_not_fail_read_split_window() {
    let initial = pattern(16 * PAGE_SIZE, 7);
    // 4 MiB: the full 2 MiB window is allowed (a window is at most 1/16 of the cache).
    let s = setup(4 << 20, &initial);
    let mut page = vec![0; PAGE_SIZE];
    s.file.read_exact_at(&mut page, 2 * PS).unwrap(); // random access: page 2 only
    assert!(s.file.mapping().find_get_page(3).is_none());
    s.plan.set_fail_reads_from(Some(3 * PS));
    let r = s.file.read_at(&mut page, 0);
    assert!(s.plan.errors_injected() > 0, "the fault did not fire; the test lost its point");
    assert_no_bad_uptodate(&s.file, &initial);
    assert_eq!(r.ok(), Some(PAGE_SIZE), "reading page 0 failed because readahead of page 3 failed");
    assert_eq!(page, &initial[..PAGE_SIZE]);
}

/// Short reads make readahead continue a window with a second call that
/// starts past the page the user asked for; that call fails.
#[test]
fn readahead_failure_beyond_request_does_not_fail_read_short_reads() {
    let initial = pattern(16 * PAGE_SIZE, 8);
    // 4 MiB: the full 2 MiB window is allowed (a window is at most 1/16 of the cache).
    let s = setup(4 << 20, &initial);
    s.plan.set_short_reads(true);
    s.plan.set_fail_reads_from(Some(2 * PS));
    let mut page = vec![0; PAGE_SIZE];
    let r = s.file.read_at(&mut page, 0);
    assert!(s.plan.errors_injected() > 0, "the fault did not fire; the test lost its point");
    assert_no_bad_uptodate(&s.file, &initial);
    assert_eq!(r.ok(), Some(PAGE_SIZE), "reading page 0 failed because readahead of page 2 failed");
    assert_eq!(page, &initial[..PAGE_SIZE]);
}

/// Sequential reads: the asynchronous window starting at page 20 fails;
/// every read before it succeeds, the first read that needs page 20 fails,
/// and once the fault is gone it succeeds.
#[test]
fn async_readahead_failure_only_fails_reads_that_need_it() {
    let initial = pattern(64 * PAGE_SIZE, 9);
    // 8 MiB: windows grow as they would uncapped (a window is at most 1/16
    // of the cache), so the async window starts at page 20.
    let s = setup(8 << 20, &initial);
    s.plan.set_fail_reads_from(Some(20 * PS));
    let mut page = vec![0; PAGE_SIZE];
    for i in 0..20u64 {
        s.file.read_exact_at(&mut page, i * PS).unwrap_or_else(|e| panic!("page {i}: {e}"));
        assert_eq!(page, &initial[i as usize * PAGE_SIZE..(i as usize + 1) * PAGE_SIZE], "page {i}");
    }
    // Give the async worker time to fail the next window.
    std::thread::sleep(Duration::from_millis(300));
    assert_no_bad_uptodate(&s.file, &initial);
    assert!(s.file.read_at(&mut page, 20 * PS).is_err(), "page 20 is in the bad region");
    assert_no_bad_uptodate(&s.file, &initial);
    s.plan.set_fail_reads_from(None);
    for i in 20..64u64 {
        s.file.read_exact_at(&mut page, i * PS).unwrap();
        assert_eq!(page, &initial[i as usize * PAGE_SIZE..(i as usize + 1) * PAGE_SIZE], "page {i}");
    }
    s.cache.check_invariants();
}
