//! Coherence with the file underneath: close-to-open revalidation (a file
//! changed, truncated, extended, replaced or deleted while it had no handle
//! is never served from stale pages), descriptors released at the last
//! close (a deleted file's space is freed at once), inode numbers reused by
//! a new file, and `invalidate` / `invalidate_range` for engines that write
//! behind the cache while a handle is open.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use page_cache::{Invalidated, PageCache, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn read_all(file: &page_cache::CachedFile) -> Vec<u8> {
    let mut buf = vec![0u8; file.len() as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Whether this process holds a descriptor naming `path` (or its deleted
/// ghost, which /proc shows as "PATH (deleted)").
fn holds_descriptor(path: &Path) -> bool {
    let want = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd").unwrap().flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|t| {
            let t = t.to_string_lossy().into_owned();
            t == want || t == format!("{want} (deleted)")
        })
    })
}

/// Waits (up to 5 s) for `cond`; background I/O queued before a close may
/// hold the descriptor for the length of one read.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

fn free_bytes(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain old data, valid zeroed; `c` is a valid
    // NUL-terminated path and `st` is valid for writes.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bfree * st.f_frsize
}

#[test]
fn a_closed_file_holds_no_descriptor_and_a_deleted_one_frees_its_space() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let len = 64usize << 20;
    let data = pattern(7, len);
    std::fs::write(&path, &data).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let cache = PageCache::new(128 << 20).unwrap();
    {
        let file = cache.open(&path).unwrap();
        assert_eq!(read_all(&file), data);
        assert!(holds_descriptor(&path), "an open handle holds its descriptor");
    }
    let cached = cache.stats().cached_pages;
    assert!(cached >= (len / PAGE_SIZE) as u64 / 2, "the clean pages stay cached after close: {cached}");
    assert!(eventually(|| !holds_descriptor(&path)), "the last close released the descriptor");
    let before = free_bytes(dir.path());
    std::fs::remove_file(&path).unwrap();
    // ext4 frees an unlinked inode's blocks when its last descriptor goes.
    assert!(
        eventually(|| free_bytes(dir.path()) >= before + len as u64 / 2),
        "deleting the closed file freed its space: {} -> {}",
        before,
        free_bytes(dir.path())
    );
    assert!(!holds_descriptor(&path));
    // The orphaned pages are ordinary clean pages: shrink takes them.
    let freed = cache.shrink(usize::MAX);
    assert!(freed >= len / 2, "orphaned pages are reclaimable: {freed}");
    cache.check_invariants();
}

#[test]
fn a_new_file_on_a_reused_inode_number_sees_only_its_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    let mut reused = 0;
    for round in 0..20u8 {
        let old = dir.path().join(format!("old{round}"));
        let old_bytes = pattern(round, 5 * PAGE_SIZE);
        std::fs::write(&old, &old_bytes).unwrap();
        let ino = std::fs::metadata(&old).unwrap().ino();
        {
            let f = cache.open(&old).unwrap();
            assert_eq!(read_all(&f), old_bytes);
        }
        std::fs::remove_file(&old).unwrap();
        // A new file, as long as the old one's pages (ext4 hands the freed
        // inode number straight out again, usually).
        let new = dir.path().join(format!("new{round}"));
        let new_bytes = pattern(round.wrapping_add(100), 5 * PAGE_SIZE);
        std::fs::write(&new, &new_bytes).unwrap();
        if std::fs::metadata(&new).unwrap().ino() == ino {
            reused += 1;
        }
        let f = cache.open(&new).unwrap();
        assert_eq!(read_all(&f), new_bytes, "round {round}: the new file reads its own bytes");
        drop(f);
        std::fs::remove_file(&new).unwrap();
    }
    eprintln!("inode numbers reused in {reused} of 20 rounds");
    cache.check_invariants();
}

#[test]
fn a_closed_file_rewritten_with_the_same_size_and_mtime_reads_new_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let old = pattern(1, 3 * PAGE_SIZE + 100);
    std::fs::write(&path, &old).unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    {
        let f = cache.open(&path).unwrap();
        assert_eq!(read_all(&f), old);
    }
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let new = pattern(2, old.len());
    std::fs::write(&path, &new).unwrap();
    // The same size and the very same mtime: only ctime tells.
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let before = cache.stats().stale_opens;
    let f = cache.open(&path).unwrap();
    assert_eq!(read_all(&f), new);
    assert_eq!(cache.stats().stale_opens, before + 1);
    drop(f);
    // Unchanged since: the next open keeps the pages and counts nothing.
    let misses = cache.stats().misses;
    let f = cache.open(&path).unwrap();
    assert_eq!(read_all(&f), new);
    assert_eq!(cache.stats().stale_opens, before + 1);
    assert_eq!(cache.stats().misses, misses, "an unchanged file is served from the cache");
    cache.check_invariants();
}

#[test]
fn the_caches_own_writes_do_not_count_as_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(16 << 20).unwrap();
    {
        let f = cache.create(&path).unwrap();
        f.write_all_at(&pattern(3, 4 * PAGE_SIZE), 0).unwrap();
        f.set_len(3 * PS + 5).unwrap();
    }
    let misses = cache.stats().misses;
    let f = cache.open(&path).unwrap();
    assert_eq!(read_all(&f), pattern(3, 3 * PAGE_SIZE + 5));
    assert_eq!(cache.stats().stale_opens, 0);
    assert_eq!(cache.stats().misses, misses, "the cache's own writes keep its pages");
    assert_eq!(std::fs::read(&path).unwrap(), pattern(3, 3 * PAGE_SIZE + 5));
}

#[test]
fn truncated_and_extended_behind_the_cache_while_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = pattern(4, 6 * PAGE_SIZE);
    std::fs::write(&path, &data).unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    {
        let f = cache.open(&path).unwrap();
        assert_eq!(read_all(&f), data);
    }
    // Shrink to the middle of page 2.
    let short = 2 * PS + 10;
    std::fs::File::options().write(true).open(&path).unwrap().set_len(short).unwrap();
    {
        let f = cache.open(&path).unwrap();
        assert_eq!(f.len(), short);
        assert_eq!(read_all(&f), &data[..short as usize]);
        let mut buf = [0u8; 16];
        assert_eq!(f.read_at(&mut buf, short).unwrap(), 0, "nothing past the new end");
        assert!(f.mapping().find_get_page(3).is_none(), "no page past the new end");
    }
    // Extend with new bytes past the old end.
    let tail = pattern(5, 3 * PAGE_SIZE);
    let w = std::fs::File::options().write(true).open(&path).unwrap();
    w.write_all_at(&tail, 4 * PS).unwrap();
    drop(w);
    let f = cache.open(&path).unwrap();
    assert_eq!(f.len(), 7 * PS);
    let mut want = data[..short as usize].to_vec();
    want.resize(4 * PAGE_SIZE, 0);
    want.extend_from_slice(&tail);
    assert_eq!(read_all(&f), want);
    cache.check_invariants();
}

#[test]
fn a_file_replaced_by_rename_is_a_different_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let tmp = dir.path().join("f.tmp");
    let old = pattern(6, 4 * PAGE_SIZE);
    std::fs::write(&path, &old).unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    let held = cache.open(&path).unwrap();
    assert_eq!(read_all(&held), old);
    let new = pattern(8, 4 * PAGE_SIZE);
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // Even with the old file still open through the cache, the path names
    // a new file, and its open sees only its own bytes.
    let f = cache.open(&path).unwrap();
    assert_eq!(read_all(&f), new);
    assert_eq!(read_all(&held), old, "the old handle keeps the old (unlinked) file");
    drop(held);
    drop(f);
    let f = cache.open(&path).unwrap();
    assert_eq!(read_all(&f), new);
}

#[test]
fn an_open_handle_and_an_outside_writer_meet_at_the_next_open_or_invalidate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let old = pattern(9, 4 * PAGE_SIZE);
    std::fs::write(&path, &old).unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    let a = cache.open(&path).unwrap();
    assert_eq!(read_all(&a), old);
    // Written behind the cache's back while a handle is open: not coherent
    // (documented), the handle still reads what it cached.
    let new = pattern(10, 4 * PAGE_SIZE);
    std::fs::File::options().write(true).open(&path).unwrap().write_all_at(&new, 0).unwrap();
    assert_eq!(read_all(&a), old);
    // `invalidate` drops the clean pages; the next read goes to the file.
    a.invalidate().unwrap();
    assert_eq!(read_all(&a), new);
    // Again, and this time a second open notices (nobody holds the pages).
    let newer = pattern(11, 4 * PAGE_SIZE);
    std::fs::File::options().write(true).open(&path).unwrap().write_all_at(&newer, 0).unwrap();
    let stale = cache.stats().stale_opens;
    let b = cache.open(&path).unwrap();
    assert_eq!(cache.stats().stale_opens, stale + 1);
    assert_eq!(read_all(&b), newer);
    assert_eq!(read_all(&a), newer, "both handles share the one mapping");
    cache.check_invariants();
}

#[test]
fn invalidate_keeps_dirty_and_used_pages_and_drops_clean_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, pattern(12, 8 * PAGE_SIZE)).unwrap();
    let cache = PageCache::new(16 << 20).unwrap();
    let f = cache.open_with(&path, &rw()).unwrap();
    read_all(&f);
    let m = f.mapping();
    // Page 1 dirty, page 2 referenced, pages 0 and 3..8 clean.
    f.write_all_at(b"dirty", PS).unwrap();
    let held = m.find_get_page(2).unwrap();
    let r = f.invalidate_range(0, 8 * PS).unwrap();
    assert_eq!(r, Invalidated { dropped: 6, dirty: 1, busy: 1 });
    assert!(m.find_get_page(0).is_none());
    assert!(m.find_get_page(1).is_some_and(|p| p.is_dirty()));
    assert!(m.find_get_page(2).is_some());
    drop(held);
    // A range drops every page it touches, and only those.
    read_all(&f);
    let r = f.invalidate_range(3 * PS + 1, PS).unwrap();
    assert_eq!(r, Invalidated { dropped: 2, dirty: 0, busy: 0 });
    assert!(m.find_get_page(3).is_none() && m.find_get_page(4).is_none());
    assert!(m.find_get_page(5).is_some());
    // Empty ranges and ranges past the end drop nothing; an offset past
    // the largest file size is refused.
    assert_eq!(f.invalidate_range(5 * PS, 0).unwrap(), Invalidated::default());
    assert_eq!(f.invalidate_range(1 << 40, 1 << 20).unwrap(), Invalidated::default());
    assert_eq!(f.invalidate_range(u64::MAX, 1).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    // Nothing is lost: the dirty bytes reach the file.
    f.sync_data().unwrap();
    let mut want = pattern(12, 8 * PAGE_SIZE);
    want[PAGE_SIZE..PAGE_SIZE + 5].copy_from_slice(b"dirty");
    assert_eq!(std::fs::read(&path).unwrap(), want);
    assert_eq!(read_all(&f), want);
    assert!(cache.stats().invalidated_pages >= 8);
    cache.check_invariants();
}

#[test]
fn revalidation_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let old = pattern(13, 2 * PAGE_SIZE);
    std::fs::write(&path, &old).unwrap();
    let cache = PageCache::builder().capacity(16 << 20).revalidate_on_open(false).build().unwrap();
    drop(read_all(&cache.open(&path).unwrap()));
    std::fs::write(&path, pattern(14, 2 * PAGE_SIZE)).unwrap();
    // Off: the cache trusts that nothing else writes its files.
    assert_eq!(read_all(&cache.open(&path).unwrap()), old);
    assert_eq!(cache.stats().stale_opens, 0);
}

#[test]
fn a_closed_file_that_cannot_be_written_back_keeps_its_descriptor_and_its_data() {
    // A tiny file system that fills up: the last close's writeback fails,
    // the pages stay dirty, and the descriptor stays so the flusher (or a
    // later handle) can retry once there is room.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mounted) = common::tmpfs(&mnt, "1m") else {
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        return;
    };
    let path = mnt.join("f");
    let filler = mnt.join("filler");
    let cache = PageCache::builder().capacity(16 << 20).dirty_ratios(90, 95).build().unwrap();
    let data = pattern(15, 512 << 10);
    {
        let f = cache.create(&path).unwrap();
        f.write_all_at(&data, 0).unwrap();
        // Something else takes the room first.
        let mut big = std::fs::File::create(&filler).unwrap();
        let _ = std::io::Write::write_all(&mut big, &vec![1u8; 1 << 20]);
    }
    assert!(cache.stats().dirty_pages > 0, "the failed writeback left the pages dirty");
    assert!(holds_descriptor(&path), "a file with dirty pages keeps its descriptor");
    std::fs::remove_file(&filler).unwrap();
    let f = cache.open(&path).unwrap();
    assert_eq!(read_all(&f), data, "the cache still has every byte");
    cache.sync().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
}
