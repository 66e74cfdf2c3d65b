//! The cache as users see it: [`PageCache`], its [`Builder`], and the table
//! of open files (the kernel's inode cache, `fs/inode.c`): two opens of the
//! same file (same device and inode) share one [`AddressSpace`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::index::cleancache::file_key;
use crate::index::mapping::AddressSpace;
use crate::io::backing::{statx, Backing, Detached, FileBacking, O_DIRECT};
use crate::io::filemap::{CachedFile, FileTable, OpenFile};
use crate::io::readahead::{self, RaContext};
use crate::io::truncate;
use crate::io::writeback::{self, SyncMode};
use crate::mem::page::{Page, PageRef};
use crate::mem::zone::{DirtyLimits, Zone};
use crate::reclaim::vmscan::Reclaimer;
use crate::stats::Stats;
use crate::sync::{AtomicU64, Ordering};
use crate::tier::SecondTier;
use crate::PAGE_SIZE;

/// Configures and builds a [`PageCache`].
#[derive(Clone)]
pub struct Builder {
    capacity: usize,
    readahead_max: usize,
    dirty_background: u8,
    dirty_limit: u8,
    dirty_expire: Duration,
    direct_io: bool,
    huge_pages: bool,
    readahead_threads: usize,
    revalidate: bool,
    io_uring: bool,
    /// The second tier behind reclaim, if any.
    tier: Option<Arc<dyn SecondTier>>,
    /// The compressed tier's budget (0: none).
    compressed_bytes: usize,
    /// The disk tier's file and size.
    disk: Option<(std::path::PathBuf, u64)>,
    /// Where the swap file goes (`None`: the system temp directory).
    swap_dir: Option<std::path::PathBuf>,
    /// The swap area's limit in bytes (`None`: the default).
    swap_limit: Option<u64>,
    /// A backing of the user's for the swap area.
    swap_backing: Option<Arc<dyn Backing>>,
    swappiness: u8,
    frontswap_exclusive: bool,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("readahead_max", &self.readahead_max)
            .field("dirty_background", &self.dirty_background)
            .field("dirty_limit", &self.dirty_limit)
            .field("dirty_expire", &self.dirty_expire)
            .field("direct_io", &self.direct_io)
            .field("huge_pages", &self.huge_pages)
            .field("readahead_threads", &self.readahead_threads)
            .field("revalidate", &self.revalidate)
            .field("io_uring", &self.io_uring)
            .field("second_tier", &self.tier.is_some())
            .field("compressed_tier", &self.compressed_bytes)
            .field("disk_tier", &self.disk)
            .field("swap_dir", &self.swap_dir)
            .field("swap_limit", &self.swap_limit)
            .field("swap_backing", &self.swap_backing.is_some())
            .field("swappiness", &self.swappiness)
            .field("frontswap_exclusive_loads", &self.frontswap_exclusive)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            capacity: 64 << 20,
            readahead_max: 2 << 20,
            dirty_background: 10,
            dirty_limit: 20,
            dirty_expire: Duration::from_secs(30),
            direct_io: false,
            huge_pages: true,
            readahead_threads: 1,
            revalidate: true,
            io_uring: true,
            tier: None,
            compressed_bytes: 0,
            disk: None,
            swap_dir: None,
            swap_limit: None,
            swap_backing: None,
            swappiness: 60,
            frontswap_exclusive: true,
        }
    }
}

/// The swap area's default limit: 8 times the capacity, and at least
/// 64 MiB (the kernel leaves the size to the administrator; this bounds
/// what a runaway engine can write to the temp directory).
fn default_swap_limit(capacity: usize) -> u64 {
    (8 * capacity as u64).max(64 << 20)
}

impl Builder {
    /// Bytes of memory for pages (rounded down to whole pages). Default 64 MiB.
    pub fn capacity(mut self, bytes: usize) -> Builder {
        self.capacity = bytes;
        self
    }

    /// Largest readahead window in bytes; 0 turns readahead off. Default 2 MiB.
    /// A window is never more than 1/16 of the capacity: two windows in
    /// flight then fit in the inactive list's smallest share (1/8), so a
    /// small cache does not evict pages it read ahead before they are used.
    pub fn readahead_max(mut self, bytes: usize) -> Builder {
        self.readahead_max = bytes;
        self
    }

    /// Percent of the capacity dirty before background writeback starts, and
    /// before writers are throttled. Defaults 10 and 20.
    pub fn dirty_ratios(mut self, background: u8, limit: u8) -> Builder {
        self.dirty_background = background;
        self.dirty_limit = limit;
        self
    }

    /// Dirty data older than this is written back. Default 30 s.
    pub fn dirty_expire(mut self, age: Duration) -> Builder {
        self.dirty_expire = age;
        self
    }

    /// Open files with O_DIRECT, so the kernel does not cache them as well.
    pub fn direct_io(mut self, on: bool) -> Builder {
        self.direct_io = on;
        self
    }

    /// Ask for transparent huge pages for the arena. Default on.
    pub fn huge_pages(mut self, on: bool) -> Builder {
        self.huge_pages = on;
        self
    }

    /// Threads that run asynchronous readahead. Default 1. With 0, the
    /// reader that reaches a window's marker reads the next window itself:
    /// faster when files are hot in the kernel's cache (no cross-thread
    /// handoff), slower when the storage has latency to hide.
    pub fn readahead_threads(mut self, n: usize) -> Builder {
        self.readahead_threads = n;
        self
    }

    /// Compare each open file with what the cache last knew of it, and
    /// drop cached pages of a file changed behind the cache's back
    /// (close-to-open revalidation, as NFS does it). Default on; it costs
    /// no system call of its own (the open's `statx` serves it). Turn it
    /// off only when nothing but this cache ever writes the files.
    pub fn revalidate_on_open(mut self, on: bool) -> Builder {
        self.revalidate = on;
        self
    }

    /// Submit batches of I/O on io_uring: `CachedFile::prefetch`'s reads
    /// and writeback's runs, many in flight from one thread. Default on;
    /// where a ring cannot be set up (an old kernel, seccomp, `ENOSYS`,
    /// `EPERM`) the positioned syscalls serve, as with `false`, and
    /// [`Stats::io_uring`](crate::Stats::io_uring) says which is in use.
    /// Backings that are not plain files always use their own methods.
    pub fn io_uring(mut self, on: bool) -> Builder {
        self.io_uring = on;
        self
    }

    /// A second tier of clean pages compressed in memory (zswap's pool):
    /// pages reclaim evicts are kept lz4-compressed, packed by size class,
    /// in at most `bytes` of memory (its index and allocator included), in
    /// addition to the capacity; a miss is served from it before the file.
    /// 0 turns it off. See [`CompressedTier`](crate::tier::compressed::CompressedTier)
    /// and `Stats::tier_*`.
    pub fn compressed_tier(mut self, bytes: usize) -> Builder {
        self.compressed_bytes = bytes;
        self
    }

    /// A second tier of clean pages on local disk (SSD), after CacheLib's
    /// BlockCache: a file at `path` of at most `bytes`, written in large
    /// regions and evicted a region at a time, that a later cache built
    /// with the same `path` finds again (warm restart): its pages of a file
    /// are served after an open finds the file as it was when they were
    /// stored. Behind the compressed tier when both are set. Fails at
    /// [`build`](Self::build) if the file cannot be opened or `bytes` is
    /// too small (`InvalidInput`). See
    /// [`DiskTier`](crate::tier::disk::DiskTier).
    pub fn disk_tier(mut self, path: impl AsRef<Path>, bytes: u64) -> Builder {
        self.disk = Some((path.as_ref().to_path_buf(), bytes));
        self
    }

    /// A second tier of the user's own behind reclaim (cleancache): clean
    /// pages reclaim evicts are offered to it, and a miss asks it before
    /// the file. See [`SecondTier`] for the contract it must keep. Asked
    /// after the compressed and disk tiers when those are set too.
    pub fn second_tier(mut self, tier: Arc<dyn SecondTier>) -> Builder {
        self.tier = Some(tier);
        self
    }

    /// The directory of the swap area that anonymous memory
    /// ([`PageCache::anonymous`]) is swapped to: one file created there
    /// unlinked (`O_TMPFILE`) when the first anonymous memory is made, so
    /// nothing is left behind, even by a crash. Default: the system temp
    /// directory (`std::env::temp_dir`).
    pub fn swap_dir(mut self, path: impl AsRef<Path>) -> Builder {
        self.swap_dir = Some(path.as_ref().to_path_buf());
        self
    }

    /// The most bytes the swap area holds (pages written whole take their
    /// size, pages the compressed tier wrote back what they compressed
    /// to). Default: 8 times the capacity, at least 64 MiB. When it is
    /// full, the allocation that needs a frame fails with `StorageFull`.
    pub fn swap_limit(mut self, bytes: u64) -> Builder {
        self.swap_limit = Some(bytes);
        self
    }

    /// The swap area on a backing of your own (a raw device, a file of
    /// your choosing, or, in tests, a `fault::FaultyBacking` of the
    /// `fault-injection` feature) in place of the unlinked file in
    /// [`swap_dir`](Self::swap_dir).
    pub fn swap_backing(mut self, backing: Arc<dyn Backing>) -> Builder {
        self.swap_backing = Some(backing);
        self
    }

    /// How readily reclaim moves anonymous memory out rather than drop
    /// clean file pages, 0 to 200 as the kernel's `vm.swappiness`
    /// (default 60; values above 200 count as 200). At 100 both kinds
    /// weigh the same; the weights then follow what each kind costs in
    /// refaults (see docs/design.md, "Anonymous memory").
    pub fn swappiness(mut self, value: u8) -> Builder {
        self.swappiness = value;
        self
    }

    /// Whether a page of anonymous memory read back from the compressed
    /// tier leaves it (zswap's exclusive loads: the tier holds each page
    /// once, and the page comes back dirty, to be compressed again when
    /// reclaim takes it) or stays there too (the page comes back clean,
    /// and reclaim drops it again for nothing, as a page read back from
    /// its swap slot). Default: exclusive.
    pub fn frontswap_exclusive_loads(mut self, on: bool) -> Builder {
        self.frontswap_exclusive = on;
        self
    }

    /// Builds the cache: maps the arena and starts kswapd, the flusher and
    /// the readahead workers.
    pub fn build(self) -> io::Result<PageCache> {
        let frames = self.capacity / PAGE_SIZE;
        if frames == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cache capacity below one page"));
        }
        if !(self.dirty_background <= self.dirty_limit && self.dirty_limit <= 100) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "dirty ratios need background <= limit <= 100"));
        }
        let dirty = DirtyLimits {
            background: (frames * self.dirty_background as usize / 100).max(1),
            limit: (frames * self.dirty_limit as usize / 100).max(2),
            expire: self.dirty_expire,
        };
        let ra_max_pages =
            (self.readahead_max / PAGE_SIZE).min((frames / (2 * crate::reclaim::lru::INACTIVE_RATIO)).max(1));
        // Asynchronous readahead of O_DIRECT files goes on a ring, reaped
        // by a thread of its own (`io::readahead::submit`).
        let async_ring = self.direct_io && self.readahead_threads > 0;
        let mut tiers: Vec<Arc<dyn SecondTier>> = Vec::new();
        let mut frontswap = None;
        if self.compressed_bytes > 0 {
            // A tier that keeps its copies (not zswap's exclusive loads): a
            // hit then costs 1.8 us, since the page evicted again unchanged
            // is not compressed again, against 5.7 us with exclusive gets
            // (`benches/tier.rs`, tier_hit_4k). Exclusive gets hold more
            // distinct pages (on a Zipf(0.9) read of B-tree pages 3x the
            // memory, 3/4 of it a tier, the file was read 46% as often as
            // without a tier, against 57%): `second_tier` with
            // `CompressedTier::with_exclusive_gets(true)` for engines whose
            // misses go to a slow device.
            let pool = Arc::new(crate::tier::compressed::CompressedTier::new(self.compressed_bytes));
            // Anonymous memory is stored in the same pool (frontswap).
            frontswap = Some(pool.clone());
            tiers.push(pool);
        }
        if let Some((path, bytes)) = &self.disk {
            tiers.push(Arc::new(crate::tier::disk::DiskTier::open(path, *bytes)?));
        }
        tiers.extend(self.tier.clone());
        let tier = match tiers.len() {
            0 => None,
            1 => tiers.pop(),
            _ => Some(Arc::new(crate::tier::stack::TierStack::new(tiers)) as Arc<dyn SecondTier>),
        };
        let swap = crate::io::anon::SwapConfig {
            dir: self.swap_dir.clone().unwrap_or_else(std::env::temp_dir),
            limit: self.swap_limit.unwrap_or_else(|| default_swap_limit(frames * PAGE_SIZE)),
            backing: self.swap_backing.clone(),
            swappiness: u32::from(self.swappiness),
            tier: frontswap,
            exclusive_loads: self.frontswap_exclusive,
        };
        let zone = Arc::new(Zone::new(
            frames,
            self.huge_pages,
            dirty,
            ra_max_pages as u64,
            self.io_uring,
            async_ring,
            tier,
            swap,
        )?);
        zone.balance.set_size(frames);
        let mut threads = Vec::new();
        if self.readahead_threads > 0 {
            let (queue, workers) = readahead::start_workers(self.readahead_threads, zone.clone())?;
            *zone.ra_queue.lock() = Some(queue);
            threads = workers;
        }
        if zone.async_ring.is_some() {
            let z = zone.clone();
            threads.push(std::thread::Builder::new().name("page-cache-reap".into()).spawn(move || {
                if let Some(ring) = &z.async_ring {
                    ring.reap();
                }
            })?);
        }
        let spawn = |name: &str, f: fn(Arc<Zone>), z: Arc<Zone>| {
            std::thread::Builder::new().name(name.into()).spawn(move || f(z))
        };
        threads.push(spawn("page-cache-kswapd", crate::reclaim::vmscan::kswapd, zone.clone())?);
        threads.push(spawn("page-cache-flush", writeback::flusher, zone.clone())?);
        Ok(PageCache {
            inner: Arc::new(CacheInner {
                zone,
                files: Mutex::new(HashMap::new()),
                direct_io: self.direct_io,
                revalidate: self.revalidate,
                threads: Mutex::new(threads),
            }),
        })
    }
}

struct FileEntry {
    mapping: Arc<AddressSpace>,
    opens: usize,
    writable: bool,
    /// A file opened by path: its last close lets go of the descriptor
    /// (the next open brings its own). Backings handed to `open_backing`
    /// stay attached.
    detach: bool,
    /// The last close let go of the descriptor (the backing is `Detached`).
    detached: bool,
}

pub(crate) struct CacheInner {
    pub(crate) zone: Arc<Zone>,
    files: Mutex<HashMap<(u64, u64), FileEntry>>,
    direct_io: bool,
    revalidate: bool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A page cache: one arena of frames, one reclaimer, many files. Cloning is
/// cheap and shares the cache.
///
/// When the last clone (and the last open file) is dropped, every dirty
/// page is written back to its file and waited for, as closing a
/// `std::fs::File` leaves its writes in the file; like `File`, dropping
/// does not `fdatasync`: call `sync_data` or `sync_all` for durability.
///
/// # Coherence with the file
///
/// - **Coherent:** every handle opened through one `PageCache` (two opens
///   of one file share one [`AddressSpace`]), and the file once the cache
///   has written it back.
/// - **Revalidated at every open** (close-to-open, as NFS does it): the
///   cache keeps what it last knew of the file (device, inode, birth time,
///   size, mtime, ctime from `statx`), taken at open and after its own
///   writes. An open that finds the file changed (rewritten, truncated,
///   extended, replaced by rename, or a new file on a reused inode number)
///   drops the clean pages before it returns: all of them when no other
///   handle is open, the ones nobody holds otherwise, and counts it in
///   [`Stats::stale_opens`](crate::Stats::stale_opens). It costs no system
///   call of its own: the open's `statx` serves it.
/// - **Not revalidated:** writes that bypass the cache while the file is
///   open through it. Handles keep reading the pages they cached (a read
///   that misses reads the file as it is then); the cache's writeback may
///   overwrite the outside bytes with its own dirty pages. An engine that
///   writes behind the cache calls [`CachedFile::invalidate`] or
///   [`CachedFile::invalidate_range`] afterwards, or opens with
///   [`Builder::direct_io`] and writes only through the cache.
/// - **Descriptors:** a file with no open handle holds no descriptor. The
///   last close writes its dirty pages back (no `fdatasync`) and closes the
///   descriptor, so a file deleted afterwards frees its space at once; its
///   clean pages stay, are reclaimed like any clean page, and the next open
///   adopts them after revalidation. If that writeback fails, the
///   descriptor stays until the pages are written, so nothing is lost.
///   [`PageCache::sync`] syncs the files that have a descriptor: sync a file
///   before its last close when it must be durable.
#[derive(Clone)]
pub struct PageCache {
    inner: Arc<CacheInner>,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").field("frames", &self.inner.zone.nr_frames()).finish()
    }
}

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: not a regular file; the page cache holds regular files only", path.display()),
    )
}

fn size_clash(path: &Path, open_with: usize, asked: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: already open with {open_with}-byte pages, not {asked}", path.display()),
    )
}

/// The buddy order of a file page of `page_size` bytes.
fn page_order(page_size: usize) -> io::Result<u32> {
    if !page_size.is_power_of_two() || !(PAGE_SIZE..=crate::MAX_PAGE_SIZE).contains(&page_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("page size {page_size}: a power of two from {PAGE_SIZE} to {} bytes", crate::MAX_PAGE_SIZE),
        ));
    }
    Ok((page_size / PAGE_SIZE).trailing_zeros())
}

fn access_mode(file: &File) -> io::Result<(bool, bool)> {
    crate::io::backing::access_mode(file)
}

impl PageCache {
    /// A cache of `capacity_bytes` (whole pages) with default settings.
    pub fn new(capacity_bytes: usize) -> io::Result<PageCache> {
        Builder::default().capacity(capacity_bytes).build()
    }

    /// A builder with default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Opens a file read-only, like `File::open`.
    pub fn open(&self, path: impl AsRef<Path>) -> io::Result<CachedFile> {
        self.open_with(path, OpenOptions::new().read(true))
    }

    /// Opens a file read-write, creating it or truncating it, like `File::create`.
    pub fn create(&self, path: impl AsRef<Path>) -> io::Result<CachedFile> {
        self.open_with(path, OpenOptions::new().write(true).create(true).truncate(true))
    }

    /// Opens a file with the given options (read access is added).
    pub fn open_with(&self, path: impl AsRef<Path>, options: &OpenOptions) -> io::Result<CachedFile> {
        self.open_with_page_size(path, options, PAGE_SIZE)
    }

    /// Opens a file with the given options (read access is added) whose
    /// pages are `page_size` bytes: a power of two from 4096 to 65536, else
    /// `InvalidInput`. Each page is one compound block of the buddy
    /// allocator (one descriptor, one lock, one LRU entry), so an engine
    /// with 16 KiB pages finds, locks and reads its page in one call;
    /// writeback writes only the 4 KiB blocks of a page that were written.
    /// A file can have one page size at a time: opening a file that is
    /// open with another page size fails with `InvalidInput` (once it is
    /// closed, the next open may choose another; its clean pages are then
    /// dropped).
    ///
    /// ```
    /// use page_cache::PageCache;
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let path = dir.path().join("db");
    /// let cache = PageCache::new(8 << 20)?;
    /// let mut opts = std::fs::OpenOptions::new();
    /// opts.write(true).create(true);
    /// let db = cache.open_with_page_size(&path, &opts, 16384)?;
    /// assert_eq!(db.mapping().page_size(), 16384);
    /// db.write_at(&[1u8; 100], 20000)?; // inside page 1
    /// assert_eq!(db.mapping().find_get_page(1).unwrap().read().len(), 16384);
    /// assert!(cache.open_with_page_size(&path, &opts, 8192).is_err());
    /// # Ok(()) }
    /// ```
    pub fn open_with_page_size(
        &self,
        path: impl AsRef<Path>,
        options: &OpenOptions,
        page_size: usize,
    ) -> io::Result<CachedFile> {
        let order = page_order(page_size)?;
        let path = path.as_ref();
        let before = std::fs::metadata(path).ok();
        if let Some(m) = &before {
            // Refuse FIFOs and devices before open(2), which could block on them.
            if !m.is_file() && !m.is_dir() {
                return Err(not_regular(path));
            }
        }
        let prior = before.filter(|m| m.is_file()).map(|m| (m.dev(), m.ino(), m.len()));
        // A file open with another page size is refused before open(2),
        // which would truncate it for an `O_TRUNC` open (checked again
        // below, against a race with another open).
        if let Some((dev, ino, _)) = prior {
            if let Some(e) = self.inner.files.lock().get(&(dev, ino)).filter(|e| e.opens > 0) {
                if e.mapping.order() != order {
                    return Err(size_clash(path, e.mapping.page_size(), page_size));
                }
            }
        }
        let mut opts = options.clone();
        opts.read(true);
        let (file, direct) = if self.inner.direct_io {
            let mut d = opts.clone();
            d.custom_flags(O_DIRECT);
            match d.open(path) {
                Ok(f) => (f, true),
                // File systems without O_DIRECT (tmpfs) fall back to buffered.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (opts.open(path)?, false),
                Err(e) => return Err(e),
            }
        } else {
            (opts.open(path)?, false)
        };
        // One statx: the type check, the key, and the record that
        // revalidates the file's cached pages.
        let stat = statx(&file)?;
        if stat.is_dir() {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{}: is a directory", path.display())));
        }
        if !stat.is_file() {
            return Err(not_regular(path));
        }
        let (_, writable) = access_mode(&file)?;
        let key = (stat.dev, stat.ino);
        // This open truncated a file the cache already holds: follow it.
        let truncated = stat.size == 0 && prior.is_some_and(|(d, i, len)| (d, i) == key && len > 0);
        let backing: Arc<dyn Backing> = Arc::new(FileBacking::new(file, direct));
        let (mapping, alone) = {
            let mut files = self.inner.files.lock();
            // A file whose pages the second tier may hold stays too, so
            // its next open revalidates it before the tier serves them.
            files.retain(|_, e| {
                e.opens > 0 || e.mapping.nr_pages() > 0 || e.mapping.nr_dirty() > 0 || e.mapping.may_be_tiered()
            });
            // A closed file's pages of another size go: one mapping per file.
            if files.get(&key).is_some_and(|e| e.mapping.order() != order && e.opens == 0 && e.mapping.nr_dirty() == 0)
            {
                if let Some(old) = files.remove(&key) {
                    old.mapping.truncate_pages_from(0);
                    old.mapping.cleancache_invalidate_file();
                }
            }
            match files.get_mut(&key) {
                Some(e) if e.mapping.order() != order => {
                    return Err(size_clash(path, e.mapping.page_size(), page_size));
                }
                Some(e) => {
                    let alone = e.opens == 0;
                    // A mapping detached at its last close holds no
                    // descriptor: this open's becomes its backing (and a
                    // writable open's replaces a read-only one). One that
                    // kept its descriptor for dirty pages keeps a writable
                    // one.
                    if e.detached || (writable && !e.writable) {
                        *e.mapping.backing.write() = backing;
                        e.writable = writable || (e.writable && !e.detached);
                        e.detached = false;
                    }
                    e.opens += 1;
                    (e.mapping.clone(), alone)
                }
                None => {
                    let m = AddressSpace::new(self.inner.zone.clone(), backing, stat.size, order);
                    *m.record.lock() = Some(stat);
                    m.set_tier_key(Some(file_key(&stat, order + PAGE_SIZE.trailing_zeros())));
                    files.insert(
                        key,
                        FileEntry { mapping: m.clone(), opens: 1, writable, detach: true, detached: false },
                    );
                    (m, false)
                }
            }
        };
        // From here the handle's drop closes the open, whatever happens.
        let file = self.handle(mapping, writable);
        let m = &file.file.mapping;
        if self.inner.revalidate {
            truncate::revalidate(m, &stat, alone);
        } else {
            *m.record.lock() = Some(stat);
        }
        if truncated && m.size() > 0 {
            let _size = m.size_lock.lock();
            let _tier = m.cleancache_begin_change(None);
            m.set_size(0);
            m.truncate_pages_from(0);
        }
        m.cleancache_open_file(&stat);
        Ok(file)
    }

    /// Opens a file whose pages are read and written through `backing`
    /// (any [`Backing`]: a file with injected faults in tests, a device, a
    /// remote blob). Each call makes a new mapping; `writable` says whether
    /// the handle may write (`ReadOnlyFilesystem` for a backing whose
    /// [`is_read_only`](Backing::is_read_only) says it refuses writes).
    pub fn open_backing(&self, backing: Arc<dyn Backing>, writable: bool) -> io::Result<CachedFile> {
        self.open_backing_with_page_size(backing, writable, PAGE_SIZE)
    }

    /// [`open_backing`](Self::open_backing) with pages of `page_size` bytes
    /// (a power of two from 4096 to 65536, else `InvalidInput`), as
    /// [`open_with_page_size`](Self::open_with_page_size).
    pub fn open_backing_with_page_size(
        &self,
        backing: Arc<dyn Backing>,
        writable: bool,
        page_size: usize,
    ) -> io::Result<CachedFile> {
        let order = page_order(page_size)?;
        if writable && backing.is_read_only() {
            return Err(io::Error::new(
                io::ErrorKind::ReadOnlyFilesystem,
                "page cache: a writable open of a read-only backing (open it with writable = false)",
            ));
        }
        let size = backing.len()?;
        // The backing's own identity, where it has one, is its key in the
        // second tier; without one its pages never go there.
        let stat = backing.stat()?;
        let mapping = AddressSpace::new(self.inner.zone.clone(), backing, size, order);
        mapping.set_tier_key(stat.map(|s| file_key(&s, order + PAGE_SIZE.trailing_zeros())));
        if let Some(s) = &stat {
            mapping.cleancache_open_file(s);
        }
        // A key no real file has: device u64::MAX, inode = mapping id.
        let key = (u64::MAX, mapping.id as u64);
        self.inner
            .files
            .lock()
            .insert(key, FileEntry { mapping: mapping.clone(), opens: 1, writable, detach: false, detached: false });
        Ok(self.handle(mapping, writable))
    }

    /// Anonymous memory of `len` bytes, zero-filled, in the cache's frames
    /// (mm's anonymous pages, or `shmem`): the file API over memory that
    /// is no file (`read_at`, `write_at`, `set_len`, the page-level
    /// `find_*`, `prefetch`). Clones share it; it is gone, with its swap
    /// space, when the last handle drops. Writes beyond `len` extend it, as
    /// with a file.
    ///
    /// Its pages share the frames and the reclaim of file pages: under
    /// pressure, dirty ones go to the compressed tier first, if the cache
    /// has one ([`Builder::compressed_tier`], frontswap), and to the swap
    /// area ([`Builder::swap_dir`], [`Builder::swap_limit`]) otherwise;
    /// the flusher and `sync` never write them. `sync_data` and `sync_all`
    /// have nothing to make durable and return `Ok` at once. When the swap
    /// area is full (its limit, or the file system), the call that needs a
    /// frame fails with `StorageFull` and loses nothing already written.
    /// `len` beyond the swap limit plus the capacity is `InvalidInput`.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let dir = tempfile::tempdir()?;
    /// let cache = page_cache::PageCache::builder().capacity(1 << 20).swap_dir(dir.path()).build()?;
    /// let sort_run = cache.anonymous(4 << 20)?; // 4x the cache
    /// for i in 0..1024u64 {
    ///     sort_run.write_all_at(&[i as u8; 4096], i * 4096)?;
    /// }
    /// let mut page = [0u8; 4096];
    /// sort_run.read_exact_at(&mut page, 7 * 4096)?;
    /// assert_eq!(page, [7u8; 4096]);
    /// assert!(cache.stats().swap_outs > 0);
    /// drop(sort_run);
    /// assert_eq!(cache.stats().swap_pages, 0);
    /// # Ok(()) }
    /// ```
    pub fn anonymous(&self, len: u64) -> io::Result<CachedFile> {
        self.anonymous_with_page_size(len, PAGE_SIZE)
    }

    /// [`anonymous`](Self::anonymous) with pages of `page_size` bytes (a
    /// power of two from 4096 to 65536, else `InvalidInput`).
    pub fn anonymous_with_page_size(&self, len: u64, page_size: usize) -> io::Result<CachedFile> {
        let order = page_order(page_size)?;
        let zone = &self.inner.zone;
        let room = zone.swap_cfg.limit.saturating_add(self.capacity() as u64);
        if len > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("page cache: {len} bytes of anonymous memory exceed the swap limit plus the capacity ({room} bytes)"),
            ));
        }
        if len > crate::index::mapping::MAX_FILE_SIZE {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "page cache: anonymous memory too large"));
        }
        let anon = crate::io::anon::Anon::new(zone, page_size)?;
        let backing = Arc::new(crate::io::anon::AnonBacking::new(anon.clone(), len));
        let mapping = AddressSpace::new_with(zone.clone(), backing, len, order, Some(anon));
        let key = (u64::MAX, mapping.id as u64);
        self.inner.files.lock().insert(
            key,
            FileEntry { mapping: mapping.clone(), opens: 1, writable: true, detach: false, detached: false },
        );
        Ok(self.handle(mapping, true))
    }

    fn handle(&self, mapping: Arc<AddressSpace>, writable: bool) -> CachedFile {
        CachedFile {
            file: Arc::new(OpenFile {
                table: self.inner.clone(),
                errseq_since: AtomicU64::new(mapping.errseq.sample()),
                mapping,
                ra: RaContext::default(),
                writable,
            }),
        }
    }

    fn mappings(&self) -> Vec<Arc<AddressSpace>> {
        self.inner.files.lock().values().map(|e| e.mapping.clone()).collect()
    }

    /// Writes back every dirty page of every file and syncs the files;
    /// returns the first error.
    pub fn sync(&self) -> io::Result<()> {
        let mut result = Ok(());
        for m in self.mappings() {
            result = result.and(writeback::sync_mapping(&m, false));
        }
        result
    }

    /// Drops up to `bytes` of clean, unused pages; returns the bytes freed.
    pub fn shrink(&self, bytes: usize) -> usize {
        let zone = &self.inner.zone;
        let want = bytes.div_ceil(PAGE_SIZE);
        let mut freed = 0;
        while freed < want {
            let n = zone.shrink_lists(want - freed, Reclaimer::Shrink);
            if n == 0 {
                break;
            }
            freed += n;
        }
        freed * PAGE_SIZE
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let zone = &self.inner.zone;
        let mut s = Stats::default();
        s.fill_events(&zone.counters);
        let (active, inactive, target) = zone.lru.sizes_and_target();
        s.active_pages = active as u64;
        s.inactive_pages = inactive as u64;
        s.inactive_target = target as u64;
        s.policy_bytes = (zone.shadows.bytes() + zone.lru.policy_bytes()) as u64;
        // Relaxed: statistics.
        s.dirty_pages = zone.nr_dirty.load(Ordering::Relaxed) as u64;
        s.writeback_now = zone.nr_writeback.load(Ordering::Relaxed) as u64;
        s.free_pages = zone.buddy.nr_free() as u64;
        let mappings = self.mappings();
        s.cached_pages = mappings.iter().map(|m| m.nr_pages() as u64).sum();
        s.cached_bytes = mappings.iter().map(|m| m.nr_pages() as u64 * m.page_size() as u64).sum();
        s.total_pages = zone.nr_frames() as u64;
        s.free_blocks = zone.buddy.free_blocks();
        s.io_uring = zone.uring.enabled();
        s.anon_pages = mappings.iter().filter(|m| m.anon.is_some()).map(|m| m.nr_pages() as u64).sum();
        if let Some(area) = &*zone.swap_area.lock() {
            // Relaxed: a statistic.
            s.swap_pages = area.slots.load(Ordering::Relaxed);
            s.swap_bytes_used = area.used_bytes();
        }
        (s.reclaim_anon_cost, s.reclaim_file_cost) = zone.balance.costs();
        if let Some(tier) = &zone.tier {
            // A tier that panics reports nothing.
            let usage = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tier.usage())).unwrap_or_default();
            s.tier_pages = usage.pages;
            s.tier_bytes = usage.bytes;
            s.tier_logical_bytes = usage.logical_bytes;
            s.tier_stored_bytes = usage.stored_bytes;
            s.tier_evictions = usage.evictions;
        }
        s
    }

    /// Allocates 2^`order` contiguous frames outside any file (`alloc_pages`),
    /// with one reference; the block returns to the pool when the last
    /// reference drops (`free_pages`). Fails with `OutOfMemory` when no block
    /// that large is free, `InvalidInput` above [`MAX_ORDER`](crate::MAX_ORDER).
    #[doc(alias = "free_pages")]
    #[doc(alias = "__free_pages")]
    pub fn alloc_pages(&self, order: usize) -> io::Result<PageRef<'_>> {
        self.inner.zone.alloc_pages(order)
    }

    /// The address of frame `pfn` (`page_address`); `None` outside the arena.
    pub fn page_address(&self, pfn: u32) -> Option<*mut u8> {
        let zone = &self.inner.zone;
        ((pfn as usize) < zone.nr_frames()).then(|| zone.arena.page_address(pfn))
    }

    /// The descriptor of frame `pfn` (`pfn_to_page`).
    pub fn pfn_to_page(&self, pfn: u32) -> Option<&Page> {
        self.inner.zone.pages.get(pfn as usize)
    }

    /// A counted reference to frame `pfn` unless it is free or frozen
    /// (`get_page_unless_zero` on `pfn_to_page`): the speculative reference
    /// of a lockless lookup. Dropping it is `put_page`.
    pub fn try_get_page(&self, pfn: u32) -> Option<PageRef<'_>> {
        let zone = &*self.inner.zone;
        let page = zone.pages.get(pfn as usize)?;
        page.get_page_unless_zero().then(|| PageRef::from_raw(page, zone))
    }

    /// The descriptor of the frame holding `addr` (`virt_to_page`).
    pub fn virt_to_page(&self, addr: *const u8) -> Option<&Page> {
        self.inner.zone.virt_to_page(addr)
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.inner.zone.nr_frames() * PAGE_SIZE
    }

    /// Checks every structure's invariants (buddy, LRU, every mapping's
    /// tree); panics on a broken one. For tests: run it when the cache is
    /// quiet.
    pub fn check_invariants(&self) {
        let zone = &self.inner.zone;
        zone.lru.drain(zone);
        zone.buddy.check_invariants(&zone.pages);
        zone.lru.check_invariants(&zone.pages);
        if let Some(area) = &*zone.swap_area.lock() {
            area.check_invariants();
        }
        for m in self.mappings() {
            m.check_invariants();
        }
    }
}

impl FileTable for CacheInner {
    /// An open of `mapping` went away; the last one writes its dirty pages back.
    fn close(&self, mapping: &Arc<AddressSpace>) {
        let (key, last) = {
            let mut files = self.files.lock();
            let key = files.iter().find(|(_, e)| Arc::ptr_eq(&e.mapping, mapping)).map(|(k, _)| *k);
            match key.and_then(|k| files.get_mut(&k)) {
                Some(e) => {
                    e.opens -= 1;
                    (key, e.opens == 0)
                }
                None => (key, false),
            }
        };
        let Some(key) = key.filter(|_| last) else { return };
        if mapping.anon.is_some() {
            // Anonymous memory is gone with its last handle: its pages
            // now, its swap map when the mapping drops.
            let entry = {
                let mut files = self.files.lock();
                match files.get(&key) {
                    Some(e) if Arc::ptr_eq(&e.mapping, mapping) && e.opens == 0 => files.remove(&key),
                    _ => None,
                }
            };
            if entry.is_some() {
                mapping.truncate_pages_from(0);
                if let Some(anon) = &mapping.anon {
                    // Its swap space too, even if a readahead job or a
                    // reclaim batch holds the mapping a moment longer.
                    anon.release_all();
                }
            }
            return;
        }
        if mapping.nr_dirty() > 0 {
            // Failures stay dirty in the cache; the flusher retries them.
            let _ = writeback::write_cache_pages(mapping, SyncMode::Integrity);
        }
        // Also the writes the flusher or kswapd had in flight with no page
        // left dirty: the record below must come after they landed, or the
        // next open takes a change made behind the cache for one of ours
        // (the tier's model test found it: a file changed while closed was
        // served stale).
        writeback::wait_writeback(mapping);
        // A cut kswapd could not make (it held a page lock) is made now.
        if mapping.needs_trim.load(Ordering::SeqCst) {
            let _size = mapping.size_lock.lock();
            let _ = writeback::trim_if_needed_locked(mapping); // a failure is in the errseq
        }
        // The file as the cache left it, for the next open to compare.
        truncate::refresh_record(mapping);
        // No handle, no descriptor: a file deleted from now on frees its
        // space at once. Clean pages stay for the next open to adopt. Dirty
        // pages (a write-back that failed) keep the descriptor, so the
        // flusher can retry them; so does an open that came meanwhile.
        let mut files = self.files.lock();
        let mut hooks = None;
        // The same entry unless a delete and reopen replaced it meanwhile.
        if let Some(e) = files.get_mut(&key).filter(|e| Arc::ptr_eq(&e.mapping, mapping)) {
            if e.opens == 0 && e.detach && !e.detached && mapping.replace_backing_if_clean(Arc::new(Detached)) {
                e.writable = false;
                e.detached = true;
            }
            // The engine's hooks last while the file is open: with no
            // handle, and no dirty page or write in flight left for the log
            // rule to guard, they go, so a hook that holds another file's
            // handle (its log's) does not keep the cache alive through the
            // open-file table. Taken under the table's lock (an open that
            // sets new hooks comes after), dropped after it (dropping a
            // hook may close a file, which takes the lock).
            if e.opens == 0 {
                hooks = mapping.take_hooks_if_clean();
            }
        }
        drop(files);
        drop(hooks);
    }
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        let mappings: Vec<_> = self.files.lock().values().map(|e| e.mapping.clone()).collect();
        // Every dirty page goes to its file, as closing a `std::fs::File`
        // leaves its writes in the file: written and waited for, with no
        // fdatasync (that is `sync_data`'s job). Syncing here made every
        // program that drops a cache with written files wait for the disk:
        // `dd` of 1 GiB took 0.93 s against coreutils' 0.50 s.
        for m in &mappings {
            let written = writeback::write_cache_pages(m, SyncMode::Integrity);
            writeback::wait_writeback(m);
            if m.needs_trim.load(Ordering::SeqCst) {
                let _size = m.size_lock.lock();
                let _ = writeback::trim_if_needed_locked(m); // a failure is in the errseq
            }
            if let Err(e) = written {
                // Nowhere left to report it: say so rather than lose it silently.
                eprintln!("page-cache: writing back {:?} at shutdown failed: {e}", m);
            }
        }
        // A tier that outlives the cache (on disk) gets the clean pages
        // still in memory, so the next cache on it starts warm.
        for m in &mappings {
            m.cleancache_put_resident();
        }
        // A tier of the user's own may outlive the cache: what it holds of
        // these files is this cache's to vouch for, and it is gone. (The
        // disk tier forgets them in memory only; it serves them again to a
        // later cache whose open finds the file at the version they were
        // put under.)
        for m in &mappings {
            m.cleancache_invalidate_file();
        }
        drop(mappings);
        // Release: orders the writeback above before the threads see the flag.
        self.zone.shutting_down.store(true, Ordering::Release);
        self.zone.kswapd.wake();
        self.zone.flusher.wake();
        // Readahead workers exit when their channel disconnects; the reaper
        // when the reads in flight on its ring have completed.
        drop(self.zone.ra_queue.lock().take());
        if let Some(ring) = &self.zone.async_ring {
            ring.stop();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        self.files.lock().clear();
    }
}
