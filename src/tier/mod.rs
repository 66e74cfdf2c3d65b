//! The second tier behind reclaim, after the kernel's cleancache
//! (`mm/cleancache.c`, Documentation/vm/cleancache.rst): clean pages that
//! reclaim evicts are offered to it, and a miss asks it before the file.
//!
//! This layer needs nothing above `mem/`: a tier sees keys and bytes, never
//! pages, mappings or the LRU. Reclaim calls [`SecondTier::put_page`], the
//! read path [`SecondTier::get_page`], and every writer of bytes or sizes
//! the invalidations (docs/design.md lists the calls).
//!
//! The contract, cleancache's:
//! - a tier may refuse any put and drop any page at any time;
//! - after two puts to one key a get never returns the older bytes;
//! - after an invalidate of a key (or a miss on it), gets of it miss until
//!   the next put.
//!
//! The cache keeps its side of the contract by calling `put_page` only with
//! the page locked and still in its file (so no write to that page, and no
//! new page at that index, can run beside it), and by invalidating before
//! new bytes become visible.

pub mod compressed;
pub mod disk;
pub mod stack;

/// The device number of [`FileKey`]s that name anonymous memory
/// (`PageCache::anonymous`): the compressed tier keeps their pages for
/// frontswap and never drops them on its own.
pub const ANON_DEV: u64 = u64::MAX;

/// Who a page belongs to: the file's identity (device, inode and birth
/// time for a file; the backing's own identity otherwise) and the page size
/// of the mapping, so the same index at another page size is another key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// Device (or a backing's namespace).
    pub dev: u64,
    /// Inode number (or a backing's object identity).
    pub ino: u64,
    /// Birth time in nanoseconds, or a generation: tells a new file under a
    /// reused inode number from the old one.
    pub generation: u64,
    /// log2 of the page size in bytes (12 to 16).
    pub page_shift: u8,
}

impl FileKey {
    /// The page size of the pages under this key, in bytes.
    #[inline]
    pub fn page_size(&self) -> usize {
        1 << self.page_shift
    }
}

/// What a file's contents were when the cache last vouched for them: its
/// size and times as the file system gave them (`statx`). A tier that
/// outlives the process (the disk tier) keeps it with the file's pages and
/// serves them after a restart only to an open that finds the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileVersion {
    /// Size in bytes.
    pub size: u64,
    /// Last modification, in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Last status change, in nanoseconds since the epoch.
    pub ctime_ns: i128,
}

/// What a tier holds now, for [`Stats`](crate::Stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierUsage {
    /// Pages held.
    pub pages: u64,
    /// Bytes of memory (or of disk, for a disk tier) the tier uses now,
    /// its index and allocator overhead included.
    pub bytes: u64,
    /// Bytes of page data the held pages stand for (pages x page size),
    /// for the compression ratio.
    pub logical_bytes: u64,
    /// Bytes of stored (compressed) data, without overhead.
    pub stored_bytes: u64,
    /// Pages refused or dropped by the tier itself (did not compress, no
    /// room), since it was made.
    pub rejects: u64,
    /// Pages the tier evicted to make room, since it was made.
    pub evictions: u64,
}

/// A second tier for clean pages (cleancache). Implement it for a tier of
/// your own and hand it to [`Builder::second_tier`](crate::Builder::second_tier).
///
/// Every method may be called from many threads at once. None may block
/// for long: `put_page` runs in reclaim, `get_page` on a reader's miss. A
/// panic in a method is caught by the cache, which then treats the call as
/// a miss (or a refused put) and counts it.
pub trait SecondTier: Send + Sync {
    /// Offers a clean, uptodate page (`data.len() == file.page_size()`).
    /// Returns whether the tier kept it. A put replaces whatever the key
    /// held: after it, a get never returns the older bytes.
    fn put_page(&self, file: &FileKey, index: u64, data: &[u8]) -> bool;

    /// Copies the page of `(file, index)` into `out` (`out.len() ==
    /// file.page_size()`) and returns true, or returns false on a miss
    /// (`out` may then hold anything). After a hit the tier may keep its
    /// copy or drop it (an exclusive get).
    fn get_page(&self, file: &FileKey, index: u64, out: &mut [u8]) -> bool;

    /// Forgets the page of `(file, index)`.
    fn invalidate_page(&self, file: &FileKey, index: u64);

    /// Forgets the pages of `file` with index in `[start, end)`.
    fn invalidate_range(&self, file: &FileKey, start: u64, end: u64);

    /// Forgets every page of `file`.
    fn invalidate_file(&self, file: &FileKey);

    /// Whether a get that hits removes the page from the tier (zswap's
    /// exclusive loads): the cache then holds the only copy and puts the
    /// page again when it evicts it. The default is false (the tier keeps
    /// its copy, and the cache does not put the unchanged page again).
    fn exclusive_gets(&self) -> bool {
        false
    }

    /// The cache opened `file` and found it at `version`: pages stored
    /// under any other version of the file are stale and must never be
    /// served (a tier that outlives the process drops them; one in memory,
    /// which the cache keeps coherent by its invalidations, may ignore
    /// this). The default does nothing.
    fn open_file(&self, file: &FileKey, version: &FileVersion) {
        let _ = (file, version);
    }

    /// The cache's own writes moved `file` to `version`, and every page it
    /// changed was invalidated first: what the tier holds of the file is
    /// current under the new version. The default does nothing.
    fn file_written(&self, file: &FileKey, version: &FileVersion) {
        let _ = (file, version);
    }

    /// Whether what the tier holds outlives the cache (a tier on disk):
    /// then the cache, when it is dropped, offers it every clean page it
    /// still holds, so the next cache on the same tier starts warm. The
    /// default is false.
    fn persists(&self) -> bool {
        false
    }

    /// Writes out what the puts so far left in buffers, waiting for writes
    /// in flight (a tier on disk); a put refused because the tier was busy
    /// may then succeed. The default does nothing.
    fn flush_puts(&self) {}

    /// What the tier holds now. The default reports nothing.
    fn usage(&self) -> TierUsage {
        TierUsage::default()
    }
}
