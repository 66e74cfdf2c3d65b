//! Batched I/O on io_uring: scattered prefetch (cached pages, pages past
//! the end, duplicates, nothing at all, injected read errors), writeback of
//! many runs at once into a file system that fills up, and a model test run
//! with io_uring on and with it refused (the positioned syscalls serve),
//! and O_DIRECT readahead windows on the shared ring (right bytes, drained
//! at drop).

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

mod common;
use page_cache::{PageCache, PAGE_SIZE};
use proptest::prelude::*;

const PS: u64 = PAGE_SIZE as u64;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i / PAGE_SIZE) as u8).collect()
}

#[test]
fn prefetch_brings_scattered_pages_in_and_skips_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = pattern(200 * PAGE_SIZE + 100, 3);
    std::fs::write(&path, &data).unwrap();
    let cache = PageCache::builder().capacity(8 << 20).readahead_max(0).build().unwrap();
    eprintln!("io_uring in use: {}", cache.stats().io_uring);
    let f = cache.open(&path).unwrap();
    // Page 7 is cached already.
    let mut buf = vec![0u8; 10];
    f.read_exact_at(&mut buf, 7 * PS).unwrap();
    f.prefetch(&[]).unwrap();
    let before = cache.stats();
    let offsets = [7 * PS + 5, 3, 100 * PS + 17, 100 * PS, 199 * PS, 200 * PS + 50, 201 * PS, u64::MAX, 55 * PS + 4095];
    f.prefetch(&offsets).unwrap();
    let after = cache.stats();
    // New pages: 0, 100, 199, 200 (the partial last page), 55.
    assert_eq!(after.prefetch_pages - before.prefetch_pages, 5);
    for i in [0u64, 7, 55, 100, 199, 200] {
        let p = f.mapping().find_get_page(i).expect("cached");
        assert!(p.is_uptodate(), "page {i}");
        let want = &data[(i * PS) as usize..((i + 1) * PS).min(data.len() as u64) as usize];
        assert_eq!(&p.read()[..want.len()], want, "page {i}");
        if i == 200 {
            assert!(p.read()[want.len()..].iter().all(|&b| b == 0), "the tail past the end is zeros");
        }
    }
    assert!(f.mapping().find_get_page(201).is_none(), "nothing past the end");
    // Reads of them now are hits.
    let misses = cache.stats().misses;
    for i in [0u64, 55, 100, 199] {
        f.read_exact_at(&mut buf, i * PS).unwrap();
    }
    assert_eq!(cache.stats().misses, misses);
    // Again: nothing to read.
    let n = cache.stats().prefetch_pages;
    f.prefetch(&offsets).unwrap();
    assert_eq!(cache.stats().prefetch_pages, n);
    cache.check_invariants();
}

#[test]
fn prefetch_more_pages_than_the_cache_holds_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = pattern(1024 * PAGE_SIZE, 9);
    std::fs::write(&path, &data).unwrap();
    let cache = PageCache::builder().capacity(64 * PAGE_SIZE).build().unwrap();
    let f = cache.open(&path).unwrap();
    let offsets: Vec<u64> = (0..1024u64).map(|i| (i * 37 % 1024) * PS).collect();
    f.prefetch(&offsets).unwrap();
    // The last batch is still cached and right.
    let mut buf = vec![0u8; PAGE_SIZE];
    for i in 0..1024u64 {
        f.read_exact_at(&mut buf, i * PS).unwrap();
        assert_eq!(buf, data[(i * PS) as usize..((i + 1) * PS) as usize], "page {i}");
    }
    cache.check_invariants();
}

#[cfg(feature = "fault-injection")]
#[test]
fn prefetch_with_failing_reads_keeps_what_was_read_and_retries_the_rest() {
    use page_cache::fault::{FaultPlan, FaultyBacking};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = pattern(64 * PAGE_SIZE, 5);
    std::fs::write(&path, &data).unwrap();
    let plan = FaultPlan::new();
    let backing = Arc::new(FaultyBacking::from_file(std::fs::File::open(&path).unwrap(), plan.clone()));
    let cache = PageCache::new(4 << 20).unwrap();
    let f = cache.open_backing(backing, false).unwrap();
    // Reads from page 40 on fail.
    plan.set_fail_reads_from(Some(40 * PS));
    let offsets: Vec<u64> = [2u64, 9, 33, 41, 50, 63].iter().map(|i| i * PS).collect();
    let e = f.prefetch(&offsets).unwrap_err();
    assert_ne!(e.kind(), ErrorKind::Other, "the injected error comes back: {e}");
    for i in [2u64, 9, 33] {
        assert!(f.mapping().find_get_page(i).is_some_and(|p| p.is_uptodate()), "page {i} was read and stays");
    }
    for i in [41u64, 50, 63] {
        assert!(f.mapping().find_get_page(i).is_none(), "failed page {i} left the cache");
    }
    plan.clear();
    let mut buf = vec![0u8; PAGE_SIZE];
    f.read_exact_at(&mut buf, 50 * PS).unwrap();
    assert_eq!(buf, data[50 * PAGE_SIZE..51 * PAGE_SIZE], "a later read tries the file again");
    cache.check_invariants();
}

#[test]
fn writeback_of_many_runs_into_a_full_file_system_keeps_data_dirty_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mounted) = common::tmpfs(&mnt, "1m") else {
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        return;
    };
    let cache = PageCache::builder().capacity(16 << 20).dirty_ratios(90, 95).build().unwrap();
    let path = mnt.join("f");
    // tmpfs has no O_DIRECT; a backing that says it is direct gets the
    // O_DIRECT treatment (whole aligned pages, on the ring) all the same.
    let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let f = cache.open_backing(Arc::new(page_cache::FileBacking::new(file, true)), true).unwrap();
    // 600 scattered pages (every other one: 600 runs), 2.4 MiB into 1 MiB.
    let page = pattern(PAGE_SIZE, 1);
    for i in 0..600u64 {
        f.write_all_at(&page, 2 * i * PS).unwrap();
    }
    let e = f.sync_data().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    let s = cache.stats();
    assert!(s.dirty_pages > 0, "what did not fit stays dirty");
    eprintln!("io_uring {}: {} ops on the ring, {} pages dirty after ENOSPC", s.io_uring, s.uring_ops, s.dirty_pages);
    if s.io_uring {
        assert!(s.uring_ops > 0, "the runs went through the ring");
    }
    // Room again (shrink the file to nothing, grow the mount): every page
    // reaches the file.
    std::process::Command::new("mount").args(["-o", "remount,size=8m"]).arg(&mnt).status().unwrap();
    f.sync_data().unwrap();
    let on_disk = std::fs::File::open(&path).unwrap();
    let mut got = vec![0u8; PAGE_SIZE];
    for i in 0..600u64 {
        on_disk.read_exact_at(&mut got, 2 * i * PS).unwrap();
        assert_eq!(got, page, "page {}", 2 * i);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, u16, u8),
    Read(u64, u16),
    Prefetch(Vec<u64>),
    Sync,
    Drop,
}

fn op() -> impl Strategy<Value = Op> {
    let off = 0..64 * PS;
    prop_oneof![
        4 => (off.clone(), 1..9000u16, any::<u8>()).prop_map(|(o, n, b)| Op::Write(o, n, b)),
        3 => (off.clone(), 1..9000u16).prop_map(|(o, n)| Op::Read(o, n)),
        2 => prop::collection::vec(off, 0..12).prop_map(Op::Prefetch),
        1 => Just(Op::Sync),
        1 => Just(Op::Drop),
    ]
}

fn run_model(io_uring: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::builder().capacity(24 * PAGE_SIZE).io_uring(io_uring).build().unwrap();
    if !io_uring {
        prop_assert!(!cache.stats().io_uring, "turned off means the syscalls serve");
    }
    let f = cache.create(&path).unwrap();
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Write(o, n, b) => {
                let buf = vec![*b; *n as usize];
                f.write_all_at(&buf, *o).unwrap();
                let end = *o as usize + buf.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[*o as usize..end].copy_from_slice(&buf);
            }
            Op::Read(o, n) => {
                let mut buf = vec![0u8; *n as usize];
                let got = f.read_at(&mut buf, *o).unwrap();
                let want = model.get(*o as usize..).map_or(&[][..], |m| &m[..m.len().min(buf.len())]);
                prop_assert_eq!(&buf[..got], want);
            }
            Op::Prefetch(offs) => f.prefetch(offs).unwrap(),
            Op::Sync => f.sync_data().unwrap(),
            Op::Drop => {
                cache.shrink(usize::MAX);
            }
        }
    }
    f.sync_all().unwrap();
    prop_assert!(std::fs::read(&path).unwrap() == model, "the file equals the model");
    cache.check_invariants();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn model_with_io_uring(ops in prop::collection::vec(op(), 1..60)) {
        run_model(true, &ops)?;
    }

    #[test]
    fn model_with_io_uring_refused(ops in prop::collection::vec(op(), 1..60)) {
        run_model(false, &ops)?;
    }
}

/// Sequential O_DIRECT readers whose asynchronous windows go on the shared
/// ring (a reaper thread completes them): every byte right at 4 and 64 KiB
/// pages, in a cache smaller than the file and in one larger; windows go on
/// the ring when io_uring works; and a cache dropped while windows are in
/// flight waits for them (the reaper returns only when none is left).
#[test]
fn readahead_windows_on_the_ring_read_right_and_drain_at_drop() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("f");
    let data = pattern(24 << 20, 9);
    std::fs::write(&path, &data).unwrap();
    // Whether this file system takes O_DIRECT (tmpfs does not: the cache
    // then reads through the kernel's cache, off the ring).
    let direct = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path).is_ok()
    };
    for ps in [4096usize, 65536] {
        for cap in [4usize << 20, 64 << 20] {
            let cache = PageCache::builder().capacity(cap).direct_io(true).build().unwrap();
            let f = cache.open_with_page_size(&path, std::fs::OpenOptions::new().read(true), ps).unwrap();
            let mut buf = vec![0u8; 100_000];
            let mut off = 0usize;
            while off < data.len() {
                let n = f.read_at(&mut buf, off as u64).unwrap();
                assert!(n > 0, "short read at {off}");
                assert!(buf[..n] == data[off..off + n], "{ps}-byte pages, {cap}-byte cache: wrong bytes at {off}");
                off += n;
            }
            let s = cache.stats();
            if s.io_uring && direct {
                assert!(s.uring_ops > 0, "no window went on the ring: {s}");
            }
            // Start a window, then drop everything while it may be in flight.
            f.read_at(&mut buf, 0).unwrap();
            drop(f);
            cache.check_invariants();
            drop(cache);
        }
    }
}
