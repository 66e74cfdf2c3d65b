//! Files with pages larger than 4 KiB (`open_with_page_size`,
//! `open_backing_with_page_size`): bad page sizes and a second page size for
//! an open file are refused without touching the file or the cache; page
//! indices, `read`/`data` lengths, `read_page`, `read_pages` and the dirty
//! tag count large pages; writeback writes only the 4 KiB blocks that were
//! written; a partial write into a large page that is not cached keeps the
//! old bytes around it; and files of 4, 16 and 64 KiB pages share a small
//! cache under four threads without a wrong byte, an error, or more cached
//! bytes than the cache holds.

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::settle;
use page_cache::{Backing, CachedFile, FileBacking, PageCache, Tag, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;
const K16: usize = 16 << 10;
const K64: usize = 64 << 10;

// ---- helpers ------------------------------------------------------------------

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

/// Read-write, created if missing, truncated: what a refused open must not do.
fn rw_create_truncate() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(true);
    o
}

/// Byte `i` of the test pattern with seed `seed`.
fn pat(seed: u64, i: u64) -> u8 {
    let x = (i ^ seed.rotate_left(23)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn pattern(seed: u64, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pat(seed, start + i)).collect()
}

/// Where two byte strings first differ, for readable failures.
#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let i = got.iter().zip(want).position(|(x, y)| x != y).unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: lengths {} vs {}; first difference at byte {i} (4 KiB block {}): {:?} vs {:?}",
            got.len(),
            want.len(),
            i / PAGE_SIZE,
            got.get(i),
            want.get(i)
        );
    }
}

fn read_vec(f: &CachedFile, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    let n = f.read_at(&mut buf, off).unwrap();
    buf.truncate(n);
    buf
}

fn read_all(f: &CachedFile) -> Vec<u8> {
    read_vec(f, 0, f.len() as usize)
}

/// A cache whose flusher stays out of the way: writeback happens when a
/// test syncs.
fn quiet_cache(capacity: usize) -> PageCache {
    PageCache::builder()
        .capacity(capacity)
        .dirty_ratios(90, 100)
        .dirty_expire(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// A backing over a real file that records every write and `set_len`.
struct Recording {
    inner: FileBacking,
    bytes_written: AtomicU64,
    writes: Mutex<Vec<(u64, usize)>>,
    set_lens: AtomicU64,
}

impl Recording {
    fn open(path: &Path) -> Arc<Recording> {
        let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
        Arc::new(Recording {
            inner: FileBacking::new(f, false),
            bytes_written: AtomicU64::new(0),
            writes: Mutex::new(Vec::new()),
            set_lens: AtomicU64::new(0),
        })
    }

    /// The writes since the last call, as (offset, bytes), and their total.
    fn take(&self) -> (Vec<(u64, usize)>, u64) {
        (std::mem::take(&mut *self.writes.lock().unwrap()), self.bytes_written.swap(0, Ordering::SeqCst))
    }
}

impl Backing for Recording {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        self.inner.read_vectored_at(bufs, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let n = self.inner.write_vectored_at(bufs, offset)?;
        self.bytes_written.fetch_add(n as u64, Ordering::SeqCst);
        self.writes.lock().unwrap().push((offset, n));
        Ok(n)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.set_lens.fetch_add(1, Ordering::SeqCst);
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

// ---- 1. refused opens ------------------------------------------------------------

const BAD_SIZES: [usize; 6] = [0, 1000, 4095, 12288, 131072, usize::MAX];

/// Bad page sizes fail with `InvalidInput` for both opens, before anything
/// happens to the file: not created, not truncated, nothing written through
/// the backing. Every good size then works, and the cache is unharmed.
#[test]
fn bad_page_sizes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let path = dir.path().join("f");
    let data = pattern(1, 0, 3 * K64 + 123);
    std::fs::write(&path, &data).unwrap();
    // A file of the cache's, cached, that the refusals must not disturb.
    let other_path = dir.path().join("other");
    let other_data = pattern(2, 0, 5 * K16 + 7);
    std::fs::write(&other_path, &other_data).unwrap();
    let other = cache.open_with_page_size(&other_path, &rw(), K16).unwrap();
    assert_same("other before", &read_all(&other), &other_data);
    let missing = dir.path().join("missing");

    for ps in BAD_SIZES {
        for opts in [rw(), rw_create_truncate(), OpenOptions::new().read(true).clone()] {
            let e = cache.open_with_page_size(&path, &opts, ps).expect_err("a bad page size");
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "page size {ps}: {e}");
            assert_same(&format!("file after a refused open at {ps}"), &std::fs::read(&path).unwrap(), &data);
        }
        let e = cache.open_with_page_size(&missing, &rw_create_truncate(), ps).expect_err("a bad page size");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "page size {ps}: {e}");
        assert!(!missing.exists(), "a refused open at {ps} created the file");

        let rec = Recording::open(&path);
        for writable in [true, false] {
            let e = cache.open_backing_with_page_size(rec.clone(), writable, ps).expect_err("a bad page size");
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "backing, page size {ps}: {e}");
        }
        assert_eq!(rec.take().1, 0, "a refused backing open wrote");
        assert_eq!(rec.set_lens.load(Ordering::SeqCst), 0, "a refused backing open resized the file");
        assert_same(&format!("file after a refused backing open at {ps}"), &std::fs::read(&path).unwrap(), &data);
    }
    assert_same("other after", &read_all(&other), &other_data);

    // Every good size opens, in turn, and reads the file.
    let mut ps = PAGE_SIZE;
    while ps <= K64 {
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        assert_eq!(f.mapping().page_size(), ps);
        assert_same(&format!("read at {ps}"), &read_all(&f), &data);
        drop(f);
        let b = cache.open_backing_with_page_size(Recording::open(&path), false, ps).unwrap();
        assert_eq!(b.mapping().page_size(), ps);
        assert_same(&format!("read through a backing at {ps}"), &read_all(&b), &data);
        ps *= 2;
    }
    // The cache still works: a write, a sync, its invariants.
    let f = cache.open_with_page_size(&path, &rw(), K64).unwrap();
    f.write_all_at(b"still usable", 5000).unwrap();
    f.sync_all().unwrap();
    let mut want = data.clone();
    want[5000..5012].copy_from_slice(b"still usable");
    assert_same("after the refusals", &std::fs::read(&path).unwrap(), &want);
    drop((f, other));
    settle(&cache);
    cache.check_invariants();
}

/// A file open with 16 KiB pages refuses opens with another page size
/// (plain `open`, `open_with`, `create`, 64 KiB), whatever their options,
/// while any handle (or clone) is open, and they change nothing: not the
/// file, not its cached and dirty bytes. Once the last handle closes (and
/// writes back), another size opens and reads the right bytes.
#[test]
fn a_file_open_with_one_page_size_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let path = dir.path().join("f");
    let mut model = pattern(3, 0, 5 * K64 + 1234);
    std::fs::write(&path, &model).unwrap();

    let a = cache.open_with_page_size(&path, &rw(), K16).unwrap();
    assert_eq!(a.mapping().page_size(), K16);
    assert_same("first read", &read_all(&a), &model);
    let patch = pattern(4, 0, 3 * K16 + 99);
    a.write_all_at(&patch, 2 * K16 as u64 + 77).unwrap();
    model[2 * K16 + 77..][..patch.len()].copy_from_slice(&patch);
    let on_disk = std::fs::read(&path).unwrap();
    // A second handle of the same size is fine.
    let same = cache.open_with_page_size(&path, &rw(), K16).unwrap();
    assert!(std::ptr::eq(same.mapping(), a.mapping()));
    drop(same);

    let refuse = |what: &str| {
        let tries: [(&str, io::Result<CachedFile>); 6] = [
            ("open", cache.open(&path)),
            ("open_with", cache.open_with(&path, &rw())),
            ("create", cache.create(&path)),
            (
                "open_with_page_size 4 KiB, truncating",
                cache.open_with_page_size(&path, &rw_create_truncate(), PAGE_SIZE),
            ),
            ("open_with_page_size 64 KiB", cache.open_with_page_size(&path, &rw(), K64)),
            ("open_with_page_size 64 KiB, truncating", cache.open_with_page_size(&path, &rw_create_truncate(), K64)),
        ];
        for (how, r) in tries {
            match r {
                Ok(f) => panic!(
                    "{what}: {how} of a file open with 16 KiB pages worked ({} B pages)",
                    f.mapping().page_size()
                ),
                Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {how}: {e}"),
            }
        }
    };
    refuse("while open");
    assert_same("file on disk after refused opens", &std::fs::read(&path).unwrap(), &on_disk);
    assert_eq!(a.len(), model.len() as u64, "a refused open changed the size");
    assert_same("cached bytes after refused opens", &read_all(&a), &model);

    // A clone keeps the open alive.
    let clone = a.clone();
    drop(a);
    refuse("while a clone is open");
    assert_same("through the clone", &read_all(&clone), &model);
    drop(clone);

    // Closed (written back): another size opens and reads the written bytes.
    let b = cache.open_with_page_size(&path, &rw(), K64).unwrap();
    assert_eq!(b.mapping().page_size(), K64);
    assert_same("at 64 KiB after the close", &read_all(&b), &model);
    assert_same("on disk after the close", &std::fs::read(&path).unwrap(), &model);
    assert!(cache.open(&path).is_err_and(|e| e.kind() == ErrorKind::InvalidInput), "4 KiB while open at 64 KiB");
    b.write_all_at(b"sixty-four", K64 as u64 - 3).unwrap();
    model[K64 - 3..K64 + 7].copy_from_slice(b"sixty-four");
    drop(b);
    // And back to plain 4 KiB pages.
    let c = cache.open(&path).unwrap();
    assert_eq!(c.mapping().page_size(), PAGE_SIZE);
    assert_same("at 4 KiB after the second close", &read_all(&c), &model);
    drop(c);
    assert_same("on disk at the end", &std::fs::read(&path).unwrap(), &model);
    settle(&cache);
    cache.check_invariants();
}

// ---- 2. page geometry ---------------------------------------------------------------

/// Page indices count pages of the file's size: `find_get_page`,
/// `find_lock_page`, `find_or_create_page`, `read_page`, `read_pages`,
/// `find_get_pages`, `find_get_pages_tag`, `readahead` and `prefetch` at
/// every page size, with a partial last page.
#[test]
fn page_apis_count_pages_of_the_files_size() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [PAGE_SIZE, 8 << 10, K16, 32 << 10, K64] {
        let cache = quiet_cache(8 << 20);
        let path = dir.path().join(format!("f{ps}"));
        let len = 5 * ps + ps / 2 + 123;
        let mut model = pattern(ps as u64, 0, len);
        std::fs::write(&path, &model).unwrap();
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        let m = f.mapping();
        assert_eq!(m.page_size(), ps);
        // Six pages, the last one partial.
        let pages = len.div_ceil(ps) as u64;
        // The bytes of page i, padded with zeros past the end of the file.
        let page_bytes = |model: &[u8], i: u64| {
            let start = (i as usize * ps).min(model.len());
            let mut v = model[start..model.len().min(start + ps)].to_vec();
            v.resize(ps, 0);
            v
        };

        // Explicit readahead and prefetch bring in the pages holding their
        // bytes, counted in pages of the file's size.
        f.readahead(ps as u64 + 1, ps as u64).unwrap(); // pages 1 and 2
        assert!(m.find_get_page(1).is_some() && m.find_get_page(2).is_some(), "{ps}: readahead of pages 1-2");
        assert!(m.find_get_page(4).is_none(), "{ps}: readahead brought in page 4");
        f.prefetch(&[4 * ps as u64 + 17, (4 * ps + ps / 2) as u64, len as u64 + 5]).unwrap();
        assert!(m.find_get_page(4).is_some_and(|p| p.is_uptodate()), "{ps}: prefetch of page 4");
        assert_eq!(m.nr_pages(), 3, "{ps}: pages 1, 2 and 4 cached, and no other");

        for i in [0, 3, pages - 1] {
            let p = m.read_page(i).unwrap();
            assert_eq!(p.index(), i);
            assert!(p.is_uptodate());
            assert_same(&format!("{ps}: read_page({i})"), &p.read(), &page_bytes(&model, i));
            drop(p);
            let p = m.find_get_page(i).expect("read_page caches the page");
            assert_eq!(p.read().len(), ps, "{ps}: find_get_page({i}).read().len()");
            drop(p);
            let l = m.find_lock_page(i).unwrap();
            assert_eq!((l.index(), l.data().len()), (i, ps), "{ps}: find_lock_page({i})");
            assert_same(&format!("{ps}: find_lock_page({i}).data()"), l.data(), &page_bytes(&model, i));
        }

        // read_pages: ranges in pages, clipped at the end of the file.
        let mut out = Vec::new();
        m.read_pages(1, 3, &mut out).unwrap();
        assert_eq!(out.iter().map(|p| p.index()).collect::<Vec<_>>(), [1, 2, 3], "{ps}: read_pages(1, 3)");
        for p in &out {
            assert_same(&format!("{ps}: read_pages page {}", p.index()), &p.read(), &page_bytes(&model, p.index()));
        }
        out.clear();
        m.read_pages(4, 100, &mut out).unwrap();
        assert_eq!(out.iter().map(|p| p.index()).collect::<Vec<_>>(), (4..pages).collect::<Vec<_>>(), "{ps}: clipped");
        out.clear();
        m.read_pages(pages, 4, &mut out).unwrap();
        assert!(out.is_empty(), "{ps}: read_pages past the end");
        drop(out);
        let all = m.find_get_pages(0, 1000);
        assert_eq!(all.iter().map(|p| p.index()).collect::<Vec<_>>(), (0..pages).collect::<Vec<_>>(), "{ps}");
        assert!(all.iter().all(|p| p.read().len() == ps));
        drop(all);
        assert_eq!(m.find_get_pages_contig(2, 2).iter().map(|p| p.index()).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(m.nr_pages() as u64, pages, "{ps}: nr_pages");

        // Small writes into pages 1 and 4 dirty those two pages.
        f.write_all_at(b"one", (ps + ps / 2 + 3) as u64).unwrap();
        f.write_all_at(b"four", 4 * ps as u64 + 7).unwrap();
        model[ps + ps / 2 + 3..][..3].copy_from_slice(b"one");
        model[4 * ps + 7..][..4].copy_from_slice(b"four");
        assert_eq!(m.nr_dirty(), 2, "{ps}: nr_dirty");
        let mut index = 0;
        let dirty = m.find_get_pages_tag(&mut index, Tag::Dirty, 16);
        assert_eq!(dirty.iter().map(|p| p.index()).collect::<Vec<_>>(), [1, 4], "{ps}: dirty pages");
        assert_eq!(index, 5, "{ps}: find_get_pages_tag advances past the last page");
        drop(dirty);
        let mut index = 2;
        let dirty = m.find_get_pages_tag(&mut index, Tag::Dirty, 16);
        assert_eq!(dirty.iter().map(|p| p.index()).collect::<Vec<_>>(), [4], "{ps}: dirty pages from 2");
        drop(dirty);
        assert!(m.page_has_tag(1, Tag::Dirty) && !m.page_has_tag(2, Tag::Dirty));
        assert_same(
            &format!("{ps}: page 1 after the write"),
            &m.find_get_page(1).unwrap().read(),
            &page_bytes(&model, 1),
        );

        // A page made by hand: page 2 dropped (all clean), then created, filled and
        // dirtied; the sync puts its bytes at 2 * ps.
        f.sync_data().unwrap();
        let mut index = 0;
        assert!(m.find_get_pages_tag(&mut index, Tag::Dirty, 16).is_empty(), "{ps}: dirty after sync");
        assert_eq!(m.nr_dirty(), 0);
        cache.shrink(usize::MAX);
        assert!(m.find_get_page(2).is_none(), "{ps}: page 2 still cached after a shrink of a clean file");
        let fill = pattern(99, 0, ps);
        let mut l = m.find_or_create_page(2).unwrap();
        assert!(!l.page_ref().is_uptodate(), "{ps}: a new page is not uptodate");
        assert_eq!((l.index(), l.data().len()), (2, ps), "{ps}: find_or_create_page(2)");
        l.data_mut().copy_from_slice(&fill);
        l.set_uptodate();
        l.set_dirty();
        drop(l);
        model[2 * ps..3 * ps].copy_from_slice(&fill);
        assert_same(&format!("{ps}: read_at over the made page"), &read_vec(&f, 2 * ps as u64, ps), &fill);
        f.sync_all().unwrap();
        assert_same(&format!("{ps}: on disk"), &std::fs::read(&path).unwrap(), &model);
        drop(f);
        settle(&cache);
        cache.check_invariants();
    }
}

// ---- 3. writeback by blocks -----------------------------------------------------------

/// The 4 KiB blocks that `writes` (offset, bytes) cover, each once, each
/// written whole.
#[track_caller]
fn blocks_written(what: &str, writes: &[(u64, usize)]) -> Vec<u64> {
    let mut blocks = Vec::new();
    for &(off, len) in writes {
        assert!(off % PS == 0 && len % PAGE_SIZE == 0, "{what}: a write of part of a block: {writes:?}");
        blocks.extend(off / PS..(off + len as u64) / PS);
    }
    blocks.sort_unstable();
    let n = blocks.len();
    blocks.dedup();
    assert_eq!(n, blocks.len(), "{what}: a block written twice: {writes:?}");
    blocks
}

/// With pages of 16 and 64 KiB (and 4 KiB, where every block is a page)
/// through a recording backing, `sync_data` writes exactly the 4 KiB
/// blocks that were written to: an aligned 4 KiB write into an uptodate
/// page writes its block (4 KiB); an unaligned one across two blocks, those
/// two (8 KiB); two small writes in the first and last blocks of a page,
/// those two and not the ones between; an aligned 4 KiB write and a 10-byte
/// write into pages that are not cached, their one block each. The file is
/// right after each.
#[test]
fn writeback_writes_only_the_dirty_blocks_of_a_large_page() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [PAGE_SIZE, K16, K64] {
        let path = dir.path().join(format!("f{ps}"));
        let mut model = pattern(5, 0, 4 * ps);
        std::fs::write(&path, &model).unwrap();
        let cache = quiet_cache(8 << 20);
        let rec = Recording::open(&path);
        let f = cache.open_backing_with_page_size(rec.clone(), true, ps).unwrap();
        assert_eq!(f.mapping().page_size(), ps);
        let blocks = ps / PAGE_SIZE;
        // Writes (offset, length) at once, then syncs: the blocks written back.
        let write = |model: &mut Vec<u8>, ranges: &[(usize, usize)], seed: u64| {
            rec.take();
            for &(off, len) in ranges {
                let data = pattern(seed ^ off as u64, 0, len);
                f.write_all_at(&data, off as u64).unwrap();
                model[off..off + len].copy_from_slice(&data);
            }
            f.sync_data().unwrap();
            assert_same(&format!("{ps}: file after the writes {ranges:?}"), &std::fs::read(&path).unwrap(), model);
            let (writes, bytes) = rec.take();
            let what = format!("{ps}: writes {ranges:?}");
            let written = blocks_written(&what, &writes);
            assert_eq!(bytes, written.len() as u64 * PS, "{what}");
            (written, bytes)
        };
        let block = |page: usize, b: usize| ((page * ps) / PAGE_SIZE + b) as u64;

        // Page 1, read whole first: it is uptodate.
        assert_same("page 1", &read_vec(&f, ps as u64, ps), &model[ps..2 * ps]);
        assert!(f.mapping().find_get_page(1).is_some_and(|p| p.is_uptodate()), "{ps}: page 1 not uptodate");
        let last = blocks - 1;
        let (written, bytes) = write(&mut model, &[(ps + last * PAGE_SIZE, PAGE_SIZE)], 6);
        assert_eq!(bytes, PS, "{ps}: an aligned 4 KiB write into an uptodate page wrote back {written:?}");
        assert_eq!(written, [block(1, last)], "{ps}");

        let (written, bytes) = write(&mut model, &[(ps + PAGE_SIZE + 100, PAGE_SIZE)], 7);
        assert!(bytes <= 2 * PS, "{ps}: an unaligned 4 KiB write wrote back blocks {written:?}");
        assert_eq!(written, [block(1, 1), block(1, 2)], "{ps}: an unaligned 4 KiB write");

        // Page 2: two small writes, in its first and last blocks.
        assert_same("page 2", &read_vec(&f, 2 * ps as u64, ps), &model[2 * ps..3 * ps]);
        let (written, bytes) = write(&mut model, &[(2 * ps + 5, 10), (2 * ps + last * PAGE_SIZE + 7, 10)], 8);
        assert!(bytes <= 2 * PS, "{ps}: two blocks dirty, blocks {written:?} written back");
        let mut want = vec![block(2, 0), block(2, last)];
        want.dedup();
        assert_eq!(written, want, "{ps}: two small writes");

        // Pages 3 and 0, not cached: a whole aligned block into one, ten
        // bytes into the other.
        cache.shrink(usize::MAX);
        assert!(f.mapping().find_get_page(3).is_none(), "{ps}: page 3 still cached");
        let (written, bytes) = write(&mut model, &[(3 * ps + last * PAGE_SIZE, PAGE_SIZE)], 9);
        assert_eq!(bytes, PS, "{ps}: an aligned 4 KiB write into an uncached page wrote back {written:?}");
        assert_eq!(written, [block(3, last)], "{ps}");
        assert_same(&format!("{ps}: page 3 read after"), &read_vec(&f, 3 * ps as u64, ps), &model[3 * ps..4 * ps]);
        cache.shrink(usize::MAX);
        assert!(f.mapping().find_get_page(0).is_none(), "{ps}: page 0 still cached");
        let mid = blocks / 2;
        let (written, _) = write(&mut model, &[(mid * PAGE_SIZE + 1000, 10)], 10);
        assert_eq!(written, [block(0, mid)], "{ps}: ten bytes into an uncached page");
        assert_same(&format!("{ps}: page 0 read after"), &read_vec(&f, 0, ps), &model[..ps]);

        assert_eq!(rec.set_lens.load(Ordering::SeqCst), 0, "{ps}: writes inside the file resized it");
        drop(f);
        settle(&cache);
        cache.check_invariants();
    }
}

// ---- 4. partial writes into uncached pages -----------------------------------------------

/// A write of a few bytes into a page that is not cached (the middle of the
/// file, the partial last page past its old end, a page wholly past the
/// end): reading the whole page afterwards gives the file's old bytes
/// around the new ones, and zeros between the old end and the new bytes
/// and past the new end. The same on disk after `sync_all`, and through a
/// new cache.
#[test]
fn partial_writes_into_uncached_pages_keep_the_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [PAGE_SIZE, K16, K64] {
        let path = dir.path().join(format!("f{ps}"));
        let old_len = 3 * ps + ps / 2 + 5;
        let mut model = pattern(11, 0, old_len);
        std::fs::write(&path, &model).unwrap();
        let cache = quiet_cache(8 << 20);
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        let m = f.mapping();
        let put = |model: &mut Vec<u8>, off: usize, data: &[u8]| {
            if model.len() < off + data.len() {
                model.resize(off + data.len(), 0);
            }
            model[off..off + data.len()].copy_from_slice(data);
        };
        // The whole page `i` as the model has it, zero past its end.
        let page_bytes = |model: &[u8], i: usize| {
            let start = (i * ps).min(model.len());
            let mut v = model[start..model.len().min(start + ps)].to_vec();
            v.resize(ps, 0);
            v
        };
        let writes = [
            (ps + ps / 2 - 50, 100),         // inside page 1
            (2 * ps - 50, 100),              // the end of page 1 and the start of page 2
            (3 * ps + ps / 2 + ps / 4, 100), // page 3, past the old end of the file
            (5 * ps + 17, 33),               // page 5, past the end: page 4 is a hole
        ];
        for (k, &(off, len)) in writes.iter().enumerate() {
            // Every page clean, and none cached.
            f.sync_data().unwrap();
            cache.shrink(usize::MAX);
            let first = off / ps;
            let last = (off + len - 1) / ps;
            for i in first..=last {
                assert!(m.find_get_page(i as u64).is_none(), "{ps}: page {i} cached before write {k}");
            }
            let data = pattern(20 + k as u64, 0, len);
            f.write_all_at(&data, off as u64).unwrap();
            put(&mut model, off, &data);
            assert_eq!(f.len(), model.len() as u64, "{ps}: size after write {k}");
            for i in first..=last {
                let want = page_bytes(&model, i);
                let in_file = model.len().saturating_sub(i * ps).min(ps);
                assert_same(
                    &format!("{ps}: write {k}: read_at of page {i}"),
                    &read_vec(&f, (i * ps) as u64, ps),
                    &want[..in_file],
                );
                let p = m.find_get_page(i as u64).unwrap_or_else(|| panic!("{ps}: write {k}: page {i} not cached"));
                assert_same(&format!("{ps}: write {k}: page {i}'s bytes"), &p.read(), &want);
            }
            assert_same(&format!("{ps}: after write {k}"), &read_all(&f), &model);
        }
        f.sync_all().unwrap();
        assert_same(&format!("{ps}: on disk"), &std::fs::read(&path).unwrap(), &model);
        drop(f);
        settle(&cache);
        cache.check_invariants();
        drop(cache);
        let cache = PageCache::new(4 << 20).unwrap();
        let g = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        assert_same(&format!("{ps}: through a new cache"), &read_all(&g), &model);
    }
}

// ---- 5. page sizes mixed in one small cache ------------------------------------------------

/// Each file's model is cut into regions of this many bytes, each under its
/// own lock; an operation locks the regions it touches (at most two), so the
/// model is exact while threads work on the file at once.
const REGION: usize = 256 << 10;
const THREADS: usize = 4;
const ROUNDS: usize = 4;
const OPS_PER_ROUND: usize = 500;

struct Model {
    path: std::path::PathBuf,
    file: CachedFile,
    ps: usize,
    regions: Vec<Mutex<Vec<u8>>>,
}

impl Model {
    /// Locks the regions holding `off..off + len`, calls `f` with the
    /// model's bytes there (a copy) and returns what it returns; `f` may
    /// change the bytes, which then go back to the model.
    fn with_range<R>(&self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let (first, last) = (off / REGION, (off + len.max(1) - 1) / REGION);
        let mut guards: Vec<_> = (first..=last).map(|r| lock(&self.regions[r])).collect();
        let mut bytes: Vec<u8> = guards.iter().flat_map(|g| g.iter().copied()).collect();
        let start = off - first * REGION;
        let r = f(&mut bytes[start..start + len]);
        for (k, g) in guards.iter_mut().enumerate() {
            g.copy_from_slice(&bytes[k * REGION..(k + 1) * REGION]);
        }
        r
    }

    fn bytes(&self) -> Vec<u8> {
        self.regions.iter().flat_map(|r| lock(r).clone()).collect()
    }
}

/// A region's lock; a thread that panicked holding it (a failed check) has
/// said what went wrong, so the others go on to their own.
fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the cache holds, checked while the worker threads are stopped:
/// frames and cached bytes within the capacity.
fn check_capacity(cache: &PageCache, models: &[Model], when: &str) {
    let s = cache.stats();
    assert_eq!(s.total_pages as usize * PAGE_SIZE, cache.capacity(), "{when}: {s}");
    assert!(s.free_pages <= s.total_pages, "{when}: {s}");
    assert!(s.cached_pages <= s.total_pages, "{when}: {s}");
    assert!(s.active_pages + s.inactive_pages <= s.total_pages, "{when}: {s}");
    assert!(s.cached_bytes <= cache.capacity() as u64, "{when}: {s}");
    // Background work now only frees pages (no readahead workers), so the
    // sum over the files cannot count a frame twice.
    let free = cache.stats().free_pages as usize * PAGE_SIZE;
    let cached: usize = models.iter().map(|m| m.file.mapping().nr_pages() * m.ps).sum();
    let s = cache.stats();
    assert!(
        s.cached_bytes as usize <= cached,
        "{when}: stats count {} cached bytes, the files {cached}",
        s.cached_bytes
    );
    assert!(
        cached <= cache.capacity() && free + cached <= cache.capacity(),
        "{when}: {cached} bytes cached and {free} free in a cache of {} (pages: {:?})",
        cache.capacity(),
        models.iter().map(|m| (m.ps, m.file.mapping().nr_pages())).collect::<Vec<_>>()
    );
}

/// One random operation of a worker on one of the files: reads and writes
/// of a few bytes, a block, up to three pages, or across a page boundary;
/// half of them in the first 512 KiB of the file (which the cache can
/// keep), half anywhere; now and then a `read_page` or a `sync_data`.
fn random_op(rng: &mut Rng, models: &[Model], log: &str) {
    let m = &models[rng.below(models.len())];
    let size = m.regions.len() * REGION;
    let ps = m.ps;
    let kind = rng.below(100);
    if kind < 2 {
        m.file.sync_data().unwrap_or_else(|e| panic!("{log}: sync_data of the {ps} B file: {e}"));
        return;
    }
    let span = if rng.below(2) == 0 { 512 << 10 } else { size };
    let (off, len) = match rng.below(4) {
        0 => (rng.below(span), 1 + rng.below(64)),
        1 => (rng.below(span / PAGE_SIZE) * PAGE_SIZE, PAGE_SIZE),
        2 => (rng.below(span), 1 + rng.below(3 * ps)),
        _ => {
            let edge = (1 + rng.below(span / ps - 1)) * ps;
            let back = 1 + rng.below(ps.min(8 << 10));
            (edge - back, back + 1 + rng.below(ps.min(8 << 10)))
        }
    };
    let len = len.min(size - off);
    if kind < 10 {
        // A page through the page-level interface.
        let index = off / ps;
        m.with_range(index * ps, ps, |want| {
            let p = m.file.mapping().read_page(index as u64).unwrap_or_else(|e| panic!("{log}: read_page: {e}"));
            assert_eq!(p.index(), index as u64);
            assert_same(&format!("{log}: read_page({index}) of the {ps} B file"), &p.read(), want);
        });
    } else if kind < 55 {
        m.with_range(off, len, |want| {
            let mut buf = vec![0u8; len];
            m.file
                .read_exact_at(&mut buf, off as u64)
                .unwrap_or_else(|e| panic!("{log}: read {off}+{len} of the {ps} B file: {e}"));
            assert_same(&format!("{log}: read {off}+{len} of the {ps} B file"), &buf, want);
        });
    } else {
        let data = pattern(rng.next(), 0, len);
        m.with_range(off, len, |bytes| {
            m.file
                .write_all_at(&data, off as u64)
                .unwrap_or_else(|e| panic!("{log}: write {off}+{len} to the {ps} B file: {e}"));
            bytes.copy_from_slice(&data);
        });
    }
}

/// Files of 4, 16 and 64 KiB pages, each 16 times the size of a 2 MiB
/// cache, under four threads of random reads and writes: every byte read
/// is the model's, no operation fails (no `OutOfMemory` while clean pages
/// can be reclaimed), the cache never holds more bytes than it has, its
/// invariants hold, and the files on disk equal the models.
#[test]
fn mixed_page_sizes_share_a_small_cache() {
    const CAPACITY: usize = 2 << 20;
    const FILE: usize = 16 * CAPACITY;
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder().capacity(CAPACITY).readahead_threads(0).build().unwrap();
    assert_eq!(cache.capacity(), CAPACITY);
    let models: Vec<Model> = [PAGE_SIZE, K16, K64]
        .into_iter()
        .enumerate()
        .map(|(k, ps)| {
            let path = dir.path().join(format!("f{k}-{ps}"));
            let data = pattern(ps as u64, 0, FILE);
            std::fs::write(&path, &data).unwrap();
            let file = cache.open_with_page_size(&path, &rw(), ps).unwrap();
            assert_eq!(file.mapping().page_size(), ps);
            Model { path, file, ps, regions: data.chunks(REGION).map(|c| Mutex::new(c.to_vec())).collect() }
        })
        .collect();

    for round in 0..ROUNDS {
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let models = &models;
                s.spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((round * THREADS + t) as u64 + 1) << 17);
                    for i in 0..OPS_PER_ROUND {
                        random_op(&mut rng, models, &format!("round {round}, thread {t}, op {i}"));
                    }
                });
            }
        });
        check_capacity(&cache, &models, &format!("after round {round}"));
    }

    for m in &models {
        m.file.sync_all().unwrap();
    }
    settle(&cache);
    check_capacity(&cache, &models, "at the end");
    cache.check_invariants();
    for m in &models {
        let disk = std::fs::read(&m.path).unwrap();
        assert_same(&format!("the {} B file on disk", m.ps), &disk, &m.bytes());
    }
    let s = cache.stats();
    eprintln!("{s}");
    assert!(s.evictions > 0, "the files did not go through the cache: {s}");
}

// ---- 6. O_DIRECT and revalidation --------------------------------------------------------

/// Through O_DIRECT (where the file system takes it): partial writes into
/// cached and uncached large pages, an extending write ending inside a
/// page, a shrink to the middle of a block, and a sync, at 16 and 64 KiB;
/// the file equals the model, and so does a fresh buffered read of it.
#[test]
fn direct_io_with_large_pages() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [K16, K64] {
        let path = dir.path().join(format!("d{ps}"));
        let mut model = pattern(30, 0, 3 * ps + 1000);
        std::fs::write(&path, &model).unwrap();
        let cache = PageCache::builder().capacity(4 << 20).direct_io(true).build().unwrap();
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        assert_same(&format!("{ps}: first read"), &read_vec(&f, 0, 4 * ps), &model);
        let put = |model: &mut Vec<u8>, off: usize, len: usize, seed: u64| {
            let data = pattern(seed, 0, len);
            f.write_all_at(&data, off as u64).unwrap();
            if model.len() < off + len {
                model.resize(off + len, 0);
            }
            model[off..off + len].copy_from_slice(&data);
        };
        put(&mut model, ps + 777, 5000, 31); // cached page, two blocks
        f.sync_data().unwrap();
        cache.shrink(usize::MAX);
        put(&mut model, 2 * ps + ps / 2 + 3, 10, 32); // uncached page, one block
        put(&mut model, 3 * ps + 500, ps, 33); // past the end, into page 4
        f.sync_data().unwrap();
        assert_same(&format!("{ps}: on disk after the writes"), &std::fs::read(&path).unwrap(), &model);
        f.set_len((3 * ps + 2000) as u64).unwrap();
        model.truncate(3 * ps + 2000);
        put(&mut model, 3 * ps + 3000, 7, 34); // regrows: zeros between
        f.sync_all().unwrap();
        assert_same(&format!("{ps}: through the cache"), &read_all(&f), &model);
        assert_same(&format!("{ps}: on disk at the end"), &std::fs::read(&path).unwrap(), &model);
        drop(f);
        settle(&cache);
        cache.check_invariants();
    }
}

/// A file closed and then changed behind the cache (another size, other
/// bytes) reads the new bytes when opened again with the same large page
/// size, and with another one; the cache's own writes before the close do
/// not count as a change.
#[test]
fn a_closed_large_page_file_changed_behind_the_cache_reads_new_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for ps in [K16, K64] {
        let path = dir.path().join(format!("r{ps}"));
        let cache = PageCache::new(4 << 20).unwrap();
        let mut model = pattern(40, 0, 4 * ps + 99);
        std::fs::write(&path, &model).unwrap();
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        assert_same(&format!("{ps}: first read"), &read_all(&f), &model);
        f.write_all_at(b"own write", (ps + 10) as u64).unwrap();
        model[ps + 10..ps + 19].copy_from_slice(b"own write");
        drop(f);
        let stale_before = cache.stats().stale_opens;
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        assert_eq!(cache.stats().stale_opens, stale_before, "{ps}: the cache's own write counted as a change");
        assert!(f.mapping().nr_pages() > 0, "{ps}: clean pages kept across the close");
        assert_same(&format!("{ps}: after the close"), &read_all(&f), &model);
        drop(f);

        let new = pattern(41, 0, 3 * ps + ps / 2);
        std::fs::write(&path, &new).unwrap();
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        assert_eq!(f.len(), new.len() as u64, "{ps}: the new size");
        assert_same(&format!("{ps}: after the change"), &read_all(&f), &new);
        drop(f);
        let newer = pattern(42, 0, 5 * ps + 1);
        std::fs::write(&path, &newer).unwrap();
        let other = if ps == K16 { K64 } else { K16 };
        let f = cache.open_with_page_size(&path, &rw(), other).unwrap();
        assert_same(&format!("{ps}: after a change, at {other}"), &read_all(&f), &newer);
        drop(f);
        settle(&cache);
        cache.check_invariants();
    }
}

// ---- 7. dirty limits ---------------------------------------------------------------------

/// `dirty_ratios` are percents of the capacity: a writer of whole pages
/// into a file of 4, 16 or 64 KiB pages is held near the dirty limit in
/// bytes, whatever the page size (the limit is 20% of 8 MiB; a writer
/// above it writes its own pages back before it goes on).
#[test]
fn the_dirty_limit_holds_in_bytes_whatever_the_page_size() {
    const CAPACITY: usize = 8 << 20;
    const LIMIT: usize = CAPACITY / 5;
    let dir = tempfile::tempdir().unwrap();
    for ps in [PAGE_SIZE, K16, K64] {
        let cache = PageCache::builder()
            .capacity(CAPACITY)
            .dirty_ratios(10, 20)
            .dirty_expire(Duration::from_secs(3600))
            .build()
            .unwrap();
        let f = cache.open_with_page_size(dir.path().join(format!("w{ps}")), &rw_create_truncate(), ps).unwrap();
        let chunk = pattern(50, 0, K64);
        let mut most = 0;
        for i in 0..(2 * CAPACITY / K64) as u64 {
            f.write_all_at(&chunk, i * K64 as u64).unwrap();
            most = most.max(f.mapping().nr_dirty() * ps);
        }
        assert!(
            most <= LIMIT + (512 << 10),
            "{ps} B pages: {most} bytes dirty at once in a cache of {CAPACITY} with a dirty limit of 20% \
             ({} throttles)",
            cache.stats().throttles
        );
        f.sync_all().unwrap();
    }
}

// ---- 8. blocks of one page written at once -------------------------------------------------

/// Four threads write disjoint 4 KiB blocks (thread t the blocks t, t + 4,
/// ... of every page, over and over, each time with new bytes) of a file of
/// 16 or 64 KiB pages while a fifth syncs in a loop and a sixth shrinks the
/// cache: writeback clearing a page's dirty blocks races writers dirtying
/// others of the same page, and no block's last bytes may be lost. The
/// file after `sync_all` holds every block's last write.
#[test]
fn writers_of_blocks_of_one_page_racing_writeback_lose_nothing() {
    const WRITERS: usize = 4;
    const ROUNDS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    for ps in [K16, K64] {
        let path = dir.path().join(format!("b{ps}"));
        let pages = 8;
        std::fs::write(&path, pattern(60, 0, pages * ps)).unwrap();
        let cache = PageCache::builder().capacity(4 << 20).build().unwrap();
        let f = cache.open_with_page_size(&path, &rw(), ps).unwrap();
        let blocks = pages * ps / PAGE_SIZE;
        // The bytes of block b's write in round r.
        let block_bytes = |b: usize, r: u64| pattern(r << 32 | b as u64, 0, PAGE_SIZE);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|t| {
                    let f = &f;
                    s.spawn(move || {
                        for r in 0..ROUNDS {
                            for b in (t..blocks).step_by(WRITERS) {
                                f.write_all_at(&block_bytes(b, r), (b * PAGE_SIZE) as u64).unwrap();
                            }
                        }
                    })
                })
                .collect();
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    f.sync_data().unwrap();
                }
            });
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    cache.shrink(ps);
                    std::thread::yield_now();
                }
            });
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });
        let want: Vec<u8> = (0..blocks).flat_map(|b| block_bytes(b, ROUNDS - 1)).collect();
        assert_same(&format!("{ps}: through the cache"), &read_all(&f), &want);
        f.sync_all().unwrap();
        assert_same(&format!("{ps}: on disk"), &std::fs::read(&path).unwrap(), &want);
        drop(f);
        settle(&cache);
        cache.check_invariants();
    }
}
