//! `CachedFile::copy_from` (copy_file_range through the cache) against a
//! model: random copies, reads and writes between two files compared with
//! two `Vec<u8>`s, in a cache big enough for both and in one of eight pages
//! (and the same with files of 16 and 64 KiB pages, of one size and of two);
//! whole aligned pages move instead of being copied and the source loses
//! nothing; copies across caches, within one file, and the errors.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

mod common;
use common::{run_model_cases, settle};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};
use proptest::prelude::*;

const PS: u64 = PAGE_SIZE as u64;

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((i ^ seed.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
}

fn read_all(f: &CachedFile) -> Vec<u8> {
    let mut buf = vec![0u8; f.len() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[derive(Clone, Debug)]
enum Op {
    Copy { from: usize, to: usize, soff: u64, doff: u64, len: usize },
    Read { f: usize, off: u64, len: usize },
    Write { f: usize, off: u64, len: usize, seed: u64 },
    SetLen { f: usize, len: u64 },
    Sync { f: usize },
}

/// The page sizes of the model's two files, and the unit its ranges are
/// made of: the larger page. Offsets go up to 12 units, lengths up to 6,
/// files start with up to 10 (48, 24 and 40 KiB with 4 KiB pages).
#[derive(Clone, Copy, Debug)]
struct Sizes {
    ps: [usize; 2],
}

impl Sizes {
    fn unit(self) -> usize {
        self.ps[0].max(self.ps[1])
    }
    fn max_off(self) -> u64 {
        12 * self.unit() as u64
    }
    fn max_len(self) -> usize {
        6 * self.unit()
    }
    /// The boundaries that matter: 4 KiB blocks, and each file's pages.
    fn units(self) -> Vec<usize> {
        let mut u = vec![PAGE_SIZE, self.ps[0], self.ps[1]];
        u.sort_unstable();
        u.dedup();
        u
    }
}

/// Offsets anywhere, on page (or block) boundaries (where pages move), or
/// just off them.
fn offset(sz: Sizes) -> BoxedStrategy<u64> {
    let max = sz.max_off();
    let at = |unit: u64| (0..=max / unit).prop_map(move |p| p * unit).boxed();
    let near = |unit: u64| {
        (0..=max / unit, -2i64..=2).prop_map(move |(p, d)| (p * unit).saturating_add_signed(d).min(max)).boxed()
    };
    let units = sz.units();
    if units == [PAGE_SIZE] {
        return prop_oneof![0..max, at(PS), near(PS)].boxed();
    }
    let mut arms: Vec<(u32, BoxedStrategy<u64>)> = vec![(units.len() as u32, (0..max).boxed())];
    for &u in &units {
        arms.push((1, at(u as u64)));
        arms.push((1, near(u as u64)));
    }
    proptest::strategy::Union::new_weighted(arms).boxed()
}

fn length(sz: Sizes) -> BoxedStrategy<usize> {
    let max = sz.max_len();
    let at = |unit: usize| (0..=max / unit).prop_map(move |p| p * unit).boxed();
    let near =
        |unit: usize| (1..=max / unit, -2isize..=2).prop_map(move |(p, d)| (p * unit).saturating_add_signed(d)).boxed();
    let units = sz.units();
    if units == [PAGE_SIZE] {
        return prop_oneof![0..=max, at(PAGE_SIZE), near(PAGE_SIZE)].boxed();
    }
    let mut arms: Vec<(u32, BoxedStrategy<usize>)> = vec![(units.len() as u32, (0..=max).boxed())];
    for &u in &units {
        arms.push((1, at(u)));
        arms.push((1, near(u)));
    }
    proptest::strategy::Union::new_weighted(arms).boxed()
}

fn op(sz: Sizes) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..2usize, offset(sz), offset(sz), length(sz))
            .prop_map(|(from, to, soff, doff, len)| Op::Copy { from, to, soff, doff, len }),
        3 => (0..2usize, offset(sz), length(sz)).prop_map(|(f, off, len)| Op::Read { f, off, len }),
        2 => (0..2usize, offset(sz), length(sz), any::<u64>())
            .prop_map(|(f, off, len, seed)| Op::Write { f, off, len, seed }),
        1 => (0..2usize, offset(sz)).prop_map(|(f, len)| Op::SetLen { f, len }),
        1 => (0..2usize).prop_map(|f| Op::Sync { f }),
    ]
}

fn put(model: &mut Vec<u8>, off: u64, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let (o, end) = (off as usize, off as usize + data.len());
    if end > model.len() {
        model.resize(end, 0);
    }
    model[o..end].copy_from_slice(data);
}

fn run_model(
    cache: &PageCache,
    dir: &Path,
    case: usize,
    sz: Sizes,
    lens: (usize, usize),
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let paths = [dir.join(format!("a{case}")), dir.join(format!("b{case}"))];
    let mut models = [pattern(case as u64, lens.0), pattern(!(case as u64), lens.1)];
    for (p, m) in paths.iter().zip(&models) {
        std::fs::write(p, m).unwrap();
    }
    let fs = [
        cache.open_with_page_size(&paths[0], &rw(), sz.ps[0]).unwrap(),
        cache.open_with_page_size(&paths[1], &rw(), sz.ps[1]).unwrap(),
    ];
    prop_assert_eq!([fs[0].mapping().page_size(), fs[1].mapping().page_size()], sz.ps);
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Copy { from, to, soff, doff, len } => {
                let src_len = models[from].len() as u64;
                let n = if soff >= src_len { 0 } else { (len as u64).min(src_len - soff) };
                let overlap = from == to && n > 0 && soff < doff + n && doff < soff + n;
                let res = fs[to].copy_from(&fs[from], soff, doff, len);
                if overlap {
                    let e = res.expect_err("overlapping copy within one file");
                    prop_assert_eq!(e.kind(), ErrorKind::InvalidInput, "step {}: {:?}", step, op);
                } else {
                    let got = res.unwrap();
                    prop_assert_eq!(got as u64, n, "step {}: {:?} count", step, op);
                    if n > 0 {
                        let data = models[from][soff as usize..(soff + n) as usize].to_vec();
                        put(&mut models[to], doff, &data);
                    }
                }
            }
            Op::Read { f, off, len } => {
                let mut buf = vec![0xA5; len];
                let n = fs[f].read_at(&mut buf, off).unwrap();
                let m = &models[f];
                let want = if off >= m.len() as u64 { 0 } else { len.min(m.len() - off as usize) };
                prop_assert_eq!(n, want, "step {}: {:?} count", step, op);
                let o = (off as usize).min(m.len());
                prop_assert!(buf[..n] == m[o..o + n], "step {}: {:?} bytes differ", step, op);
            }
            Op::Write { f, off, len, seed } => {
                let data = pattern(seed, len);
                fs[f].write_all_at(&data, off).unwrap();
                put(&mut models[f], off, &data);
            }
            Op::SetLen { f, len } => {
                fs[f].set_len(len).unwrap();
                models[f].resize(len as usize, 0);
            }
            Op::Sync { f } => fs[f].sync_data().unwrap(),
        }
        for (f, m) in fs.iter().zip(&models) {
            prop_assert_eq!(f.len(), m.len() as u64, "step {}: size after {:?}", step, op);
        }
    }
    for ((f, m), p) in fs.iter().zip(&models).zip(&paths) {
        prop_assert!(read_all(f) == *m, "cache contents at the end differ from the model");
        f.sync_all().unwrap();
        prop_assert!(std::fs::read(p).unwrap() == *m, "file after sync_all differs from the model");
    }
    settle(cache);
    cache.check_invariants();
    Ok(())
}

/// The model test with files of `ps` bytes per page in a cache of
/// `capacity` bytes. With 4 KiB pages, some copy moves a page (with large
/// pages, aligned copies of whole cached pages are rarer: see
/// `aligned_whole_large_pages_move_and_the_source_loses_nothing`).
fn model_test(capacity: usize, ps: [usize; 2]) {
    let sz = Sizes { ps };
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(capacity).unwrap();
    let case = std::cell::Cell::new(0);
    let initial = 0..=10 * sz.unit();
    let strategy = (initial.clone(), initial, prop::collection::vec(op(sz), 1..40));
    run_model_cases(&strategy, |(a, b, ops)| {
        case.set(case.get() + 1);
        run_model(&cache, dir.path(), case.get(), sz, (a, b), &ops)
    });
    if ps == [PAGE_SIZE; 2] {
        assert!(cache.stats().pages_moved > 0, "no copy moved a page: {}", cache.stats());
    }
}

#[test]
fn model_two_files_big_cache() {
    model_test(4 << 20, [PAGE_SIZE; 2]);
}

#[test]
fn model_two_files_eight_page_cache() {
    model_test(8 * PAGE_SIZE, [PAGE_SIZE; 2]);
}

/// The model test with files of 16 and 64 KiB pages, both of one size or
/// of two (4 and 64 KiB; 64 and 16 KiB in the small cache only), in a
/// cache of 16 MiB and in one of 16 of the larger pages.
mod large_pages {
    use super::*;

    const K16: usize = 16 << 10;
    const K64: usize = 64 << 10;

    #[test]
    fn model_two_files_big_cache_16k() {
        model_test(16 << 20, [K16; 2]);
    }

    #[test]
    fn model_two_files_sixteen_page_cache_16k() {
        model_test(16 * K16, [K16; 2]);
    }

    #[test]
    fn model_two_files_big_cache_64k() {
        model_test(16 << 20, [K64; 2]);
    }

    #[test]
    fn model_two_files_sixteen_page_cache_64k() {
        model_test(16 * K64, [K64; 2]);
    }

    #[test]
    fn model_two_files_big_cache_4k_and_64k() {
        model_test(16 << 20, [PAGE_SIZE, K64]);
    }

    #[test]
    fn model_two_files_sixteen_page_cache_4k_and_64k() {
        model_test(16 * K64, [PAGE_SIZE, K64]);
    }

    #[test]
    fn model_two_files_sixteen_page_cache_64k_and_16k() {
        model_test(16 * K64, [K64, K16]);
    }
}

#[test]
fn aligned_whole_pages_move_and_the_source_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let data = pattern(7, (1 << 20) + 100);
    std::fs::write(&a, &data).unwrap();
    let src = cache.open(&a).unwrap();
    let dst = cache.create(&b).unwrap();
    // Bring the source in, then copy it whole: every whole page moves; the
    // 100-byte tail is copied.
    assert_eq!(read_all(&src), data);
    let moved_before = cache.stats().pages_moved;
    let cached_before = cache.stats().cached_pages;
    assert_eq!(dst.copy_from(&src, 0, 0, usize::MAX).unwrap(), data.len());
    let s = cache.stats();
    assert_eq!(s.pages_moved - moved_before, 256, "{s}");
    // One frame more: the tail page of the destination.
    assert_eq!(s.cached_pages, cached_before + 1, "{s}");
    assert_eq!(s.dirty_pages, 257, "{s}");
    assert_eq!(src.mapping().nr_pages(), 1, "only the source's tail page stays");
    // The source reads its bytes again from its file; the destination has them.
    assert_eq!(read_all(&src), data);
    assert_eq!(read_all(&dst), data);
    dst.sync_all().unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), data);
    // Pages held by someone else are copied, not moved.
    let held = src.mapping().find_get_page(3).expect("page 3 cached again");
    let moved_before = cache.stats().pages_moved;
    assert_eq!(dst.copy_from(&src, 3 * PS, 10 * PS, PAGE_SIZE).unwrap(), PAGE_SIZE);
    assert_eq!(cache.stats().pages_moved, moved_before);
    drop(held);
    // A destination page already cached is overwritten in place.
    assert_eq!(dst.copy_from(&src, 5 * PS, 0, PAGE_SIZE).unwrap(), PAGE_SIZE);
    assert_eq!(cache.stats().pages_moved, moved_before);
    let mut want = data.clone();
    want.copy_within(5 * PAGE_SIZE..6 * PAGE_SIZE, 0);
    want.copy_within(3 * PAGE_SIZE..4 * PAGE_SIZE, 10 * PAGE_SIZE);
    assert_eq!(read_all(&dst), want);
    dst.sync_all().unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), want);
    settle(&cache);
    cache.check_invariants();
}

/// The same with 16 and 64 KiB pages: whole aligned pages move between
/// files of one page size (the tail is copied), and between files of two
/// page sizes every byte is copied; the source loses nothing.
#[test]
fn aligned_whole_large_pages_move_and_the_source_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let create = {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(true);
        o
    };
    for ps in [16 << 10, 64 << 10] {
        let cache = PageCache::new(16 << 20).unwrap();
        let (a, b, c) =
            (dir.path().join(format!("a{ps}")), dir.path().join(format!("b{ps}")), dir.path().join(format!("c{ps}")));
        let data = pattern(ps as u64, (1 << 20) + 100);
        std::fs::write(&a, &data).unwrap();
        let src = cache.open_with_page_size(&a, &rw(), ps).unwrap();
        let dst = cache.open_with_page_size(&b, &create, ps).unwrap();
        assert_eq!(read_all(&src), data);
        let whole = ((1 << 20) / ps) as u64;
        let moved_before = cache.stats().pages_moved;
        assert_eq!(dst.copy_from(&src, 0, 0, usize::MAX).unwrap(), data.len());
        let s = cache.stats();
        assert_eq!(s.pages_moved - moved_before, whole, "{ps}: {s}");
        assert_eq!(src.mapping().nr_pages(), 1, "{ps}: only the source's tail page stays");
        assert_eq!(dst.mapping().nr_dirty() as u64, whole + 1, "{ps}");
        assert_eq!(read_all(&src), data, "{ps}: the source reads its bytes again");
        assert_eq!(read_all(&dst), data, "{ps}");
        dst.sync_all().unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), data, "{ps}");

        // Into a file of another page size: copied, nothing moves.
        let other = if ps == 16 << 10 { PAGE_SIZE } else { 16 << 10 };
        let dst2 = cache.open_with_page_size(&c, &create, other).unwrap();
        let moved_before = cache.stats().pages_moved;
        assert_eq!(dst2.copy_from(&src, ps as u64, 0, 3 * ps).unwrap(), 3 * ps);
        assert_eq!(cache.stats().pages_moved, moved_before, "{ps} to {other}: a page moved");
        assert_eq!(read_all(&dst2), &data[ps..4 * ps], "{ps} to {other}");
        assert_eq!(read_all(&src), data, "{ps}: the source after copying to {other}");
        dst2.sync_all().unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), &data[ps..4 * ps]);
        drop((src, dst, dst2));
        settle(&cache);
        cache.check_invariants();
    }
}

#[test]
fn dirty_source_pages_are_copied_and_stay_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let src = cache.create(dir.path().join("a")).unwrap();
    let dst = cache.create(dir.path().join("b")).unwrap();
    let data = pattern(3, 8 * PAGE_SIZE);
    src.write_all_at(&data, 0).unwrap();
    assert_eq!(dst.copy_from(&src, 0, 0, data.len()).unwrap(), data.len());
    assert_eq!(cache.stats().pages_moved, 0, "dirty pages must not move");
    src.sync_all().unwrap();
    dst.sync_all().unwrap();
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), data);
    assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), data);
}

#[test]
fn copies_across_caches_copy_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2) = (PageCache::new(1 << 20).unwrap(), PageCache::new(1 << 20).unwrap());
    let data = pattern(9, 20 * PAGE_SIZE + 5);
    std::fs::write(dir.path().join("a"), &data).unwrap();
    let src = c1.open(dir.path().join("a")).unwrap();
    let dst = c2.create(dir.path().join("b")).unwrap();
    assert_eq!(dst.copy_from(&src, 0, PS, usize::MAX).unwrap(), data.len());
    assert_eq!(c1.stats().pages_moved + c2.stats().pages_moved, 0);
    let mut want = vec![0u8; PAGE_SIZE];
    want.extend_from_slice(&data);
    assert_eq!(read_all(&dst), want);
    assert_eq!(read_all(&src), data);
    c1.check_invariants();
    c2.check_invariants();
}

#[test]
fn bad_copies_fail_cleanly_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(1 << 20).unwrap();
    let data = pattern(5, 6 * PAGE_SIZE);
    std::fs::write(dir.path().join("a"), &data).unwrap();
    let f = cache.open_with(dir.path().join("a"), &rw()).unwrap();
    // Overlapping ranges of one file.
    let e = f.copy_from(&f, 0, PS, 2 * PAGE_SIZE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Into a read-only handle.
    let ro = cache.open(dir.path().join("a")).unwrap();
    let e = ro.copy_from(&f, 0, 0, PAGE_SIZE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    // Past the largest file size.
    let e = f.copy_from(&f, 0, u64::MAX - 10, PAGE_SIZE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(read_all(&f), data);
    // At or past the source's end: nothing to copy.
    assert_eq!(f.copy_from(&f, data.len() as u64, 0, PAGE_SIZE).unwrap(), 0);
    // Within one file, not overlapping: copied.
    assert_eq!(f.copy_from(&f, 0, 4 * PS, 2 * PAGE_SIZE).unwrap(), 2 * PAGE_SIZE);
    let mut want = data.clone();
    want.copy_within(0..2 * PAGE_SIZE, 4 * PAGE_SIZE);
    assert_eq!(read_all(&f), want);
    f.sync_all().unwrap();
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), want);
}

/// Moves racing readers, reclaim and a second copier: a small cache, one
/// thread copying the source into one destination page by page, another
/// copying it into a second destination, two threads reading the source
/// and checking every byte, and one streaming a third file to keep reclaim
/// busy. The source never changes, so every read of it must match; at the
/// end both destinations hold the source, in the cache and on disk.
#[test]
fn moves_race_readers_reclaim_and_other_copies() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(96 * PAGE_SIZE).unwrap();
    let data = pattern(11, 64 * PAGE_SIZE + 123);
    let noise = pattern(12, 256 * PAGE_SIZE);
    std::fs::write(dir.path().join("src"), &data).unwrap();
    std::fs::write(dir.path().join("noise"), &noise).unwrap();
    let src = cache.open(dir.path().join("src")).unwrap();
    let dsts = [cache.create(dir.path().join("d0")).unwrap(), cache.create(dir.path().join("d1")).unwrap()];
    let noise_f = cache.open(dir.path().join("noise")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut copiers = Vec::new();
        for (k, dst) in dsts.iter().enumerate() {
            let (src, data) = (&src, &data);
            copiers.push(s.spawn(move || {
                for round in 0..200u64 {
                    // Pages in a different order each round, some unaligned.
                    let pages = data.len().div_ceil(PAGE_SIZE) as u64;
                    for i in 0..pages {
                        let p = (i * 7 + round + k as u64) % pages;
                        let skew = if (p + round) % 5 == 0 { 1 } else { 0 };
                        let off = (p * PS).saturating_sub(skew);
                        let n = dst.copy_from(src, off, off, PAGE_SIZE).unwrap();
                        assert_eq!(n as u64, PS.min(data.len() as u64 - off));
                    }
                }
            }));
        }
        for r in 0..2u64 {
            let (src, data, stop) = (&src, &data, &stop);
            s.spawn(move || {
                let mut buf = vec![0u8; 3 * PAGE_SIZE];
                let mut i = r;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let off = (i * 4093) % data.len() as u64;
                    let n = src.read_at(&mut buf, off).unwrap();
                    assert!(buf[..n] == data[off as usize..off as usize + n], "source bytes at {off} changed");
                    i += 1;
                }
            });
        }
        {
            let (noise_f, noise, stop) = (&noise_f, &noise, &stop);
            s.spawn(move || {
                let mut buf = vec![0u8; 16 * PAGE_SIZE];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for off in (0..noise.len()).step_by(buf.len()) {
                        let n = noise_f.read_at(&mut buf, off as u64).unwrap();
                        assert!(buf[..n] == noise[off..off + n]);
                    }
                }
            });
        }
        // Stop the readers once both copiers are done.
        for c in copiers {
            c.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for (k, d) in dsts.iter().enumerate() {
        assert!(read_all(d) == data, "destination {k} differs from the source");
        d.sync_all().unwrap();
        assert!(std::fs::read(dir.path().join(format!("d{k}"))).unwrap() == data, "destination {k} on disk");
    }
    assert_eq!(read_all(&src), data);
    assert!(cache.stats().pages_moved > 0, "{}", cache.stats());
    settle(&cache);
    cache.check_invariants();
}
