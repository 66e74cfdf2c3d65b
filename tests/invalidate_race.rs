//! Issue 28: `invalidate_range` and `invalidate` (and revalidation on open)
//! must never take a smaller size from the file while a write of the
//! cache's own is in flight. Writeback clears a page's DIRTY before its
//! write reaches the file, so a look at the file's size during the write
//! sees the old size; adopting it hid bytes the user wrote and synced.
//! Each test races an invalidation against `sync_data`, the flusher or
//! reclaim's writeback, over a backing whose writes are slow.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;
use page_cache::{Backing, CachedFile, FileBacking, FileStat, PageCache, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;

/// A file whose writes sleep first (`delay_ms`, changeable while it runs),
/// and which tells the cache what the file system says of it.
struct SlowBacking {
    inner: FileBacking,
    delay_ms: Arc<AtomicU64>,
}

impl Backing for SlowBacking {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        self.inner.read_vectored_at(bufs, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        self.inner.write_vectored_at(bufs, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn stat(&self) -> io::Result<Option<FileStat>> {
        self.inner.stat()
    }
}

fn rw_file(path: &Path) -> File {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap()
}

/// A file of two pages on disk, open through `cache` over a slow backing.
fn slow_file(cache: &PageCache, path: &Path) -> (CachedFile, Arc<AtomicU64>) {
    std::fs::write(path, vec![7u8; 2 * PAGE_SIZE]).unwrap();
    let delay = Arc::new(AtomicU64::new(0));
    let backing = SlowBacking { inner: FileBacking::new(rw_file(path), false), delay_ms: delay.clone() };
    (cache.open_backing(Arc::new(backing), true).unwrap(), delay)
}

/// The third page, written past the end of the file (the cache's size is
/// now three pages; the file's is two until writeback lands).
fn extend(f: &CachedFile) {
    f.write_all_at(&[9u8; PAGE_SIZE], 2 * PS).unwrap();
    assert_eq!(f.len(), 3 * PS);
}

/// What every test checks once the write has landed: the cache's size and
/// bytes are the user's, and so is the file.
fn check_after(f: &CachedFile, path: &Path) {
    assert_eq!(f.len(), 3 * PS, "the cache's size shrank under its own write");
    let mut buf = vec![0u8; PAGE_SIZE];
    assert_eq!(f.read_at(&mut buf, 2 * PS).unwrap(), PAGE_SIZE, "the written page reads as past the end");
    assert!(buf.iter().all(|&b| b == 9));
    f.sync_data().unwrap();
    let disk = std::fs::read(path).unwrap();
    assert_eq!(disk.len() as u64, 3 * PS);
    assert!(disk[2 * PAGE_SIZE..].iter().all(|&b| b == 9));
}

/// Waits until a write of the file is in flight (a page under writeback).
fn wait_for_writeback(cache: &PageCache) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().writeback_now == 0 {
        assert!(std::time::Instant::now() < deadline, "no writeback started");
        std::thread::yield_now();
    }
}

fn race_with_sync(whole: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(4 << 20).unwrap();
    let (f, delay) = slow_file(&cache, &path);
    extend(&f);
    delay.store(300, Ordering::SeqCst);
    let syncer = {
        let f = f.clone();
        std::thread::spawn(move || f.sync_data())
    };
    wait_for_writeback(&cache);
    if whole {
        f.invalidate().unwrap();
    } else {
        f.invalidate_range(0, PS).unwrap();
    }
    // Before the write lands, and after.
    assert_eq!(f.len(), 3 * PS, "invalidation adopted the size on disk under a write in flight");
    syncer.join().unwrap().unwrap();
    delay.store(0, Ordering::SeqCst);
    check_after(&f, &path);
    common::settle(&cache);
    cache.check_invariants();
}

#[test]
fn invalidate_range_racing_sync_keeps_the_size() {
    race_with_sync(false);
}

#[test]
fn invalidate_racing_sync_keeps_the_size() {
    race_with_sync(true);
}

#[test]
fn invalidate_racing_the_flusher_keeps_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::builder().capacity(4 << 20).dirty_expire(Duration::from_millis(10)).build().unwrap();
    let (f, delay) = slow_file(&cache, &path);
    delay.store(300, Ordering::SeqCst);
    extend(&f);
    wait_for_writeback(&cache);
    f.invalidate_range(0, PS).unwrap();
    assert_eq!(f.len(), 3 * PS, "invalidation adopted the size on disk under the flusher's write");
    f.invalidate().unwrap();
    assert_eq!(f.len(), 3 * PS);
    // Let the flusher's write land, then look again: the file agrees now.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().writeback_now > 0 || cache.stats().dirty_pages > 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    delay.store(0, Ordering::SeqCst);
    f.invalidate().unwrap();
    check_after(&f, &path);
}

#[test]
fn invalidate_racing_reclaim_writeback_keeps_the_size() {
    const PAGES: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    // A tiny cache and no flusher to speak of: reclaim writes the dirty
    // pages out when other files push them to the tail.
    let cache = PageCache::builder()
        .capacity(64 * PAGE_SIZE)
        .dirty_ratios(90, 95)
        .dirty_expire(Duration::from_secs(3600))
        .readahead_max(0)
        .build()
        .unwrap();
    let (f, delay) = slow_file(&cache, &path);
    // Many dirty pages past the end of the file: too many to stay active.
    for i in 2..PAGES {
        f.write_all_at(&[i as u8; PAGE_SIZE], i * PS).unwrap();
    }
    delay.store(100, Ordering::SeqCst);
    // Read another file through the cache until reclaim writes a page.
    let other = dir.path().join("other");
    std::fs::write(&other, vec![1u8; 512 * PAGE_SIZE]).unwrap();
    let g = cache.open(&other).unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut off = 0;
    let mut raced = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (f.mapping().nr_dirty() > 0 || cache.stats().writeback_now > 0) && raced < 20 {
        // Twice each: the other file's pages go active too, so the
        // active list ages and the dirty pages reach the inactive tail.
        g.read_at(&mut buf, off % (512 * PS)).unwrap();
        g.read_at(&mut buf, off % (512 * PS)).unwrap();
        off += PS;
        assert!(std::time::Instant::now() < deadline, "reclaim never wrote the dirty pages");
        if cache.stats().writeback_now > 0 {
            raced += 1;
            f.invalidate_range(0, PS).unwrap();
            assert_eq!(f.len(), PAGES * PS, "invalidation adopted the size on disk under reclaim's write");
        }
    }
    assert!(raced > 0, "no invalidation ran beside reclaim's writeback");
    delay.store(0, Ordering::SeqCst);
    f.sync_data().unwrap();
    f.invalidate().unwrap();
    assert_eq!(f.len(), PAGES * PS);
    for i in 2..PAGES {
        f.read_exact_at(&mut buf, i * PS).unwrap();
        assert!(buf.iter().all(|&b| b == i as u8), "page {i}");
    }
    let disk = std::fs::read(&path).unwrap();
    assert_eq!(disk.len() as u64, PAGES * PS);
    common::settle(&cache);
    cache.check_invariants();
}

/// A file changed behind the cache (truncated by another writer) while no
/// write of the cache's is pending: the size on disk is taken.
#[test]
fn invalidate_takes_a_smaller_size_when_nothing_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let cache = PageCache::new(4 << 20).unwrap();
    let (f, _delay) = slow_file(&cache, &path);
    extend(&f);
    f.sync_data().unwrap();
    rw_file(&path).set_len(PS).unwrap();
    f.invalidate().unwrap();
    assert_eq!(f.len(), PS);
    cache.check_invariants();
}

/// Revalidation on open: a second open of the path while the cache's own
/// write is in flight must not take the size on disk either.
#[test]
fn open_racing_writeback_keeps_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, vec![7u8; 2 * PAGE_SIZE]).unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let f = cache.open_with(&path, OpenOptions::new().read(true).write(true)).unwrap();
    extend(&f);
    // Another process changes the file's times (so the open finds it
    // changed) while our write of the third page is pending.
    let other = rw_file(&path);
    other.set_len(2 * PS).unwrap();
    let syncer = {
        let f = f.clone();
        std::thread::spawn(move || f.sync_data())
    };
    let g = cache.open_with(&path, OpenOptions::new().read(true).write(true)).unwrap();
    syncer.join().unwrap().unwrap();
    assert_eq!(f.len(), g.len());
    assert_eq!(g.len(), 3 * PS, "an open adopted the size on disk under a write of the cache's own");
    check_after(&g, &path);
}

#[cfg(feature = "fault-injection")]
mod with_fault_plan {
    use super::*;
    use page_cache::fault::{FaultPlan, FaultyBacking};

    /// The same race over the fault-injection backing's delays.
    #[test]
    fn invalidate_range_racing_sync_over_delays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 2 * PAGE_SIZE]).unwrap();
        let plan = FaultPlan::new();
        let cache = PageCache::new(4 << 20).unwrap();
        let f = cache.open_backing(Arc::new(FaultyBacking::from_file(rw_file(&path), plan.clone())), true).unwrap();
        extend(&f);
        plan.set_delay(Duration::from_millis(300));
        let syncer = {
            let f = f.clone();
            std::thread::spawn(move || f.sync_data())
        };
        wait_for_writeback(&cache);
        f.invalidate_range(0, PS).unwrap();
        assert_eq!(f.len(), 3 * PS);
        syncer.join().unwrap().unwrap();
        plan.set_delay(Duration::ZERO);
        check_after(&f, &path);
    }
}
