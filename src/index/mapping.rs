//! The page cache proper: one [`AddressSpace`] per file, its radix tree of
//! pages, and the lookup family, following `mm/filemap.c`
//! (`find_get_page`, `find_lock_page`, `find_or_create_page`,
//! `find_get_pages*`, `add_to_page_cache_lru`, `delete_from_page_cache`,
//! `__remove_mapping` from `mm/vmscan.c`).
//!
//! # Lockless lookup
//!
//! A reader pins an epoch (tree nodes are freed through it; frames never
//! are), loads the slot, and takes a reference with `get_page_unless_zero`,
//! which refuses a page that is free or frozen for removal. It then checks
//! that the page still names this mapping and index: a page removed and
//! reused since the load has a different (or no) mapping. The check is
//! sound because the reference count CAS synchronizes with the Release that
//! made the frame live again, which came after the removal cleared
//! `mapping`, so a stale "this mapping" cannot be read. Mapping and index
//! are set before the page is published in the tree.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_epoch as epoch;
use parking_lot::{Mutex, RwLock};

use crate::index::xarray::{Mark, XArray, XaLock};
use crate::io::backing::{Backing, FileStat};
use crate::io::readahead::RaContext;
use crate::io::wal::{ReadVerifier, WriteAheadLog};
use crate::mem::page::{LockedPage, Page, PageFlags, PageRef};
use crate::mem::wait;
use crate::mem::zone::Zone;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Tags a page can carry in its mapping's tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// The page is dirty.
    Dirty,
    /// The page is being written back.
    Writeback,
    /// The page was dirty when a sync began: the sync writes it.
    ToWrite,
}

impl From<Tag> for Mark {
    fn from(t: Tag) -> Mark {
        match t {
            Tag::Dirty => Mark::Dirty,
            Tag::Writeback => Mark::Writeback,
            Tag::ToWrite => Mark::ToWrite,
        }
    }
}

/// Write errors of a mapping, so every handle sees each one once
/// (`lib/errseq.c`): a sequence number in the high 32 bits, a SEEN bit, and
/// the last errno in the low bits.
#[derive(Default)]
pub(crate) struct Errseq(AtomicU64);

const ERRSEQ_SEEN: u64 = 1 << 31;
const ERRSEQ_ERRNO: u64 = ERRSEQ_SEEN - 1;

impl Errseq {
    /// Records an error.
    pub(crate) fn set(&self, err: &io::Error) {
        let errno = err.raw_os_error().unwrap_or(libc::EIO) as u32 as u64 & ERRSEQ_ERRNO;
        // Relaxed load + AcqRel CAS: the value itself is the only shared state.
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = ((cur >> 32) + 1) << 32 | errno;
            match self.0.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// A cursor for a new open (`errseq_sample`): past every error some
    /// handle has already reported, but before one nobody has seen yet.
    pub(crate) fn sample(&self) -> u64 {
        // Acquire: pairs with the AcqRel in `set`.
        let cur = self.0.load(Ordering::Acquire);
        let seq = cur >> 32;
        if seq == 0 || cur & ERRSEQ_SEEN != 0 {
            seq
        } else {
            seq - 1
        }
    }

    /// The error recorded since `since` last saw, if any; advances `since`
    /// and marks the error seen (`errseq_check_and_advance`).
    pub(crate) fn check_and_advance(&self, since: &AtomicU64) -> io::Result<()> {
        // Acquire: pairs with the AcqRel in `set`.
        let cur = self.0.load(Ordering::Acquire);
        let seq = cur >> 32;
        // AcqRel swap: each handle's cursor moves once per error it reports.
        let seen = since.swap(seq, Ordering::AcqRel);
        if seen != seq {
            if cur & ERRSEQ_SEEN == 0 {
                // AcqRel: a failed CAS means a newer error, which keeps SEEN clear.
                let _ = self.0.compare_exchange(cur, cur | ERRSEQ_SEEN, Ordering::AcqRel, Ordering::Relaxed);
            }
            Err(io::Error::from_raw_os_error((cur & ERRSEQ_ERRNO) as i32))
        } else {
            Ok(())
        }
    }
}

/// The cached pages of one file, and the file underneath.
pub struct AddressSpace {
    pub(crate) zone: Arc<Zone>,
    pub(crate) id: u32,
    /// log2 of the page size in frames: each page is a compound block of
    /// this order (0 for 4 KiB pages). Fixed at open.
    pub(crate) order: u32,
    /// log2 of the page size in bytes (`order + 12`).
    pub(crate) shift: u32,
    pub(crate) tree: XArray,
    pub(crate) backing: RwLock<Arc<dyn Backing>>,
    /// The file size as the cache sees it (`i_size`).
    pub(crate) size: AtomicU64,
    pub(crate) errseq: Errseq,
    /// Dirty pages of this mapping.
    pub(crate) nr_dirty: AtomicUsize,
    /// When the mapping went from clean to dirty (for expiry).
    pub(crate) dirtied_when: Mutex<Option<Instant>>,
    /// Held by whoever does background writeback of this mapping (the
    /// flusher or a throttled writer), so the two do not write the same
    /// file at once and contend on its inode lock in the kernel.
    pub(crate) background_wb: Mutex<()>,
    /// Serializes size changes (`i_rwsem` for truncate and extending writes).
    pub(crate) size_lock: Mutex<()>,
    /// Readahead for page-level readers (`read_page`).
    pub(crate) ra: RaContext,
    /// What the cache last knew of the file (`statx`), taken at open and
    /// after the cache's own writes; `None` for a backing that is not a
    /// file. Compared with the file at every open (close-to-open
    /// revalidation). Under `size_lock`.
    pub(crate) record: Mutex<Option<FileStat>>,
    /// The cache wrote to the file or changed its size since `record` was
    /// taken, so the file's times moved by our own hand: the next
    /// revalidation takes a new record instead of comparing.
    pub(crate) written: AtomicBool,
    /// An O_DIRECT write of a whole last page left the file longer than
    /// the cache's size, and its writer could not take `size_lock` to cut
    /// it (`writeback::trim_to_size`): the next holder of the lock does.
    pub(crate) needs_trim: AtomicBool,
    /// Bumped when any page of the mapping starts or ends writeback, so a
    /// reader of the file's size on disk can tell that none of the cache's
    /// own writes landed while it looked (`truncate::quiet_stat`).
    pub(crate) wb_seq: AtomicU64,
    /// The file's key in the second tier (`index::cleancache`): set at
    /// open from the file's identity, `None` for a backing without one.
    pub(crate) tier_key: RwLock<Option<crate::tier::FileKey>>,
    /// The second tier kept a page of this file since it last forgot the
    /// whole file: the open-file table keeps the mapping (and its record)
    /// so the next open revalidates the file before the tier serves it.
    pub(crate) tiered: AtomicBool,
    /// Bumped by every range or file invalidation of the tier, before it
    /// calls the tier: a put that finds it moved while it ran takes its
    /// page back out (`cleancache_put`), so no put lands after an
    /// invalidation it raced.
    pub(crate) tier_gen: AtomicU64,
    /// Change windows open on the file's tier pages
    /// (`cleancache_begin_change`): no put or get while above zero.
    pub(crate) tier_busy: AtomicU64,
    /// The engine's write-ahead log: no dirty page reaches the file ahead
    /// of it (`io::wal`).
    pub(crate) wal: RwLock<Option<Arc<dyn WriteAheadLog>>>,
    /// Checks pages as they are read in (`io::wal::verify`).
    pub(crate) verifier: RwLock<Option<ReadVerifier>>,
    /// The last failed read-in of a page, so readers that waited on it get
    /// its error.
    pub(crate) read_error: Mutex<Option<crate::io::readahead::ReadError>>,
    /// This mapping, for jobs handed to worker threads.
    pub(crate) self_weak: Weak<AddressSpace>,
    /// Anonymous memory (`PageCache::anonymous`): its swap map. Its dirty
    /// pages are not counted against the dirty limits and never written
    /// back; reclaim swaps them out (`io::anon`).
    pub(crate) anon: Option<Arc<crate::io::anon::Anon>>,
}

/// The largest readahead window of anonymous memory, in bytes.
const ANON_RA_MAX: u64 = 64 << 10;

impl AddressSpace {
    pub(crate) fn new(zone: Arc<Zone>, backing: Arc<dyn Backing>, size: u64, order: u32) -> Arc<AddressSpace> {
        Self::new_with(zone, backing, size, order, None)
    }

    /// A mapping of anonymous memory: `backing` reads `anon`'s swap map.
    pub(crate) fn new_with(
        zone: Arc<Zone>,
        backing: Arc<dyn Backing>,
        size: u64,
        order: u32,
        anon: Option<Arc<crate::io::anon::Anon>>,
    ) -> Arc<AddressSpace> {
        assert!((order as usize) <= MAX_PAGE_ORDER, "page order {order} too large");
        Arc::new_cyclic(|weak| {
            let id = zone.register_mapping(weak.clone());
            AddressSpace {
                zone,
                id,
                order,
                shift: order + crate::PAGE_SIZE.trailing_zeros(),
                tree: XArray::new(),
                backing: RwLock::new(backing),
                size: AtomicU64::new(size),
                errseq: Errseq::default(),
                nr_dirty: AtomicUsize::new(0),
                dirtied_when: Mutex::new(None),
                background_wb: Mutex::new(()),
                size_lock: Mutex::new(()),
                ra: RaContext::default(),
                record: Mutex::new(None),
                written: AtomicBool::new(false),
                needs_trim: AtomicBool::new(false),
                wb_seq: AtomicU64::new(0),
                tier_key: RwLock::new(None),
                tiered: AtomicBool::new(false),
                tier_gen: AtomicU64::new(0),
                tier_busy: AtomicU64::new(0),
                wal: RwLock::new(None),
                verifier: RwLock::new(None),
                read_error: Mutex::new(None),
                self_weak: weak.clone(),
                anon,
            }
        })
    }

    /// Bytes in each page of this file (4096 unless the file was opened
    /// with [`open_with_page_size`](crate::PageCache::open_with_page_size)).
    #[inline]
    pub fn page_size(&self) -> usize {
        1 << self.shift
    }

    /// The buddy order of this file's pages (log2 of frames per page).
    #[inline]
    pub(crate) fn order(&self) -> u32 {
        self.order
    }

    /// Page size in bytes, as a `u64` for file offsets.
    #[inline]
    pub(crate) fn ps(&self) -> u64 {
        1 << self.shift
    }

    /// The page holding byte `offset`.
    #[inline]
    pub(crate) fn index_of(&self, offset: u64) -> u64 {
        offset >> self.shift
    }

    /// Pages needed to hold `bytes` bytes (the first index past them).
    #[inline]
    pub(crate) fn pages_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(self.ps())
    }

    /// The readahead maximum, in this file's pages (at least one).
    /// Anonymous memory reads ahead at most 64 KiB (the kernel's swap
    /// readahead reads 8 pages by default): its reads are swap-ins, and
    /// with a sort's many runs read in turn, windows of the files' size
    /// outgrew the cache and were evicted before use (`benches/anon.rs`:
    /// 2.1 pages read back per page swapped out at 2 MiB).
    #[inline]
    pub(crate) fn ra_max_pages(&self) -> u64 {
        let max = (self.zone.ra_max_pages >> self.order).max(1).min(self.zone.ra_max_pages);
        match self.anon {
            Some(_) => max.min((ANON_RA_MAX >> self.shift).max(1)),
            None => max,
        }
    }

    /// The file size as the cache sees it.
    #[inline]
    pub fn size(&self) -> u64 {
        // Acquire: pairs with the Release in `set_size`.
        self.size.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn set_size(&self, size: u64) {
        // Release: pages written below the new size are visible to readers
        // that see it.
        self.size.store(size, Ordering::Release);
    }

    /// The file underneath.
    #[inline]
    pub(crate) fn backing(&self) -> Arc<dyn Backing> {
        self.backing.read().clone()
    }

    #[inline]
    fn page_ref<'a>(&'a self, page: &'a Page) -> PageRef<'a> {
        PageRef::from_raw(page, &self.zone)
    }

    /// Takes a speculative reference on the page at `index` (the lockless
    /// lookup of the module docs), walking the tree without an epoch pin.
    #[inline]
    fn get_entry(&self, index: u64) -> Option<&Page> {
        loop {
            let pfn = self.tree.load_unpinned(index)?;
            let page = self.zone.pfn_to_page(pfn);
            if !page.get_page_unless_zero() {
                // Being freed or frozen for removal: the slot changes soon.
                std::hint::spin_loop();
                continue;
            }
            if page.mapping_id() == self.id && page.index() == index {
                return Some(page);
            }
            self.zone.put_page(page);
        }
    }

    /// The page at `index`, with a reference, if cached.
    #[inline]
    pub fn find_get_page(&self, index: u64) -> Option<PageRef<'_>> {
        self.get_entry(index).map(|p| self.page_ref(p))
    }

    /// Copies `dst.len()` bytes at `off` of the page at `index` without a
    /// reference, a read guard or any write to shared memory (vmcache's
    /// optimistic read): loads the page's version, checks that the page is
    /// this file's, uptodate, unlocked and already marked accessed, copies
    /// with per-byte atomic loads, and checks that the version did not
    /// move. False when the page is absent, busy, needs the slow path (a
    /// readahead marker, a first or second touch) or kept changing: the
    /// caller then takes a reference and a read guard as before.
    #[inline]
    pub(crate) fn read_optimistic(&self, index: u64, off: usize, dst: &mut [u8]) -> bool {
        match self.read_optimistic_once(index, off, dst) {
            Some(done) => done,
            None => self.read_optimistic_retry(index, off, dst),
        }
    }

    /// Two more tries after one that met a change (an odd or moved version,
    /// another page in the frame), out of line.
    #[cold]
    #[inline(never)]
    fn read_optimistic_retry(&self, index: u64, off: usize, dst: &mut [u8]) -> bool {
        for _ in 0..2 {
            std::hint::spin_loop();
            if let Some(done) = self.read_optimistic_once(index, off, dst) {
                return done;
            }
        }
        false
    }

    /// One optimistic try: `Some(true)` copied, `Some(false)` this page
    /// needs the pessimistic path (absent, not uptodate, locked, a
    /// readahead marker, not yet active and referenced), `None` the page
    /// changed under the copy (try again).
    #[inline(always)]
    fn read_optimistic_once(&self, index: u64, off: usize, dst: &mut [u8]) -> Option<bool> {
        debug_assert!(off + dst.len() <= self.page_size());
        const WANT: u32 = PageFlags::UPTODATE.0 | PageFlags::REFERENCED.0 | PageFlags::ACTIVE.0;
        const AVOID: u32 = PageFlags::LOCKED.0 | PageFlags::READAHEAD.0 | crate::mem::page::RA_FRESH.0;
        // A hint suffices: the identity and version checks below reject a
        // frame that is not this page, and a stale "absent" only sends the
        // read the pessimistic way, which looks again exactly.
        let Some(pfn) = self.tree.load_hint(index) else { return Some(false) };
        let (page, frame) = self.zone.page_and_address(pfn);
        let src = frame.wrapping_add(off);
        // The line's address depends on the frame number only: start its
        // miss now, beside the descriptor's.
        crate::mem::arena::prefetch(src);
        let seq = page.read_seq();
        // Relaxed: ordered after `read_seq`'s Acquire; validated by the
        // version check after the copy.
        let flags = page.flags.load(Ordering::Relaxed);
        if flags & (WANT | AVOID) != WANT {
            return Some(false);
        }
        // Relaxed: identity is covered by the version (`set_mapping` changes
        // it), checked below.
        if seq & 1 != 0 || page.mapping.load(Ordering::Relaxed) != self.id || page.index() != index {
            return None;
        }
        // SAFETY: the page is `page_size()` bytes of the arena from its frame
        // on (a page of this file is a block of this order), never unmapped
        // while the zone lives (borrowed through `self`), and
        // `off + dst.len() <= page_size()`; every writer of its bytes holds
        // the page lock and makes the version odd first (`data_mut`,
        // `set_mapping`), which the check below catches.
        unsafe { crate::mem::arena::copy_racy(src, dst) };
        if !page.seq_unchanged(seq) {
            return None;
        }
        // One counter, not two: `Stats::hits` adds the optimistic hits to
        // the others when it is read.
        self.zone.count(crate::stats::Event::OptimisticHits, 1);
        Some(true)
    }

    /// The page at `index`, locked, if cached. Re-checks after taking the
    /// lock that truncation did not take the page away meanwhile.
    pub fn find_lock_page(&self, index: u64) -> Option<LockedPage<'_>> {
        loop {
            let page = self.find_get_page(index)?.lock();
            if page.page().mapping_id() == self.id && page.index() == index {
                return Some(page);
            }
        }
    }

    /// The page at `index`, locked; a new page (locked, not uptodate, on
    /// the LRU) if none was cached. When threads race, one page wins and the
    /// losers' frames go back to the pool.
    pub fn find_or_create_page(&self, index: u64) -> io::Result<LockedPage<'_>> {
        self.find_or_create_page_with(index, PageFlags(0))
    }

    /// `find_or_create_page`, setting `new_flags` on a page it creates
    /// before the page is visible.
    pub(crate) fn find_or_create_page_with(&self, index: u64, new_flags: PageFlags) -> io::Result<LockedPage<'_>> {
        self.check_index(index)?;
        loop {
            if let Some(p) = self.find_lock_page(index) {
                return Ok(p);
            }
            let page = self.zone.alloc_pages(self.order as usize)?;
            let page = match page.try_lock() {
                Ok(locked) => locked,
                Err(_) => unreachable!("a freshly allocated page is unlocked"),
            };
            if new_flags.0 != 0 {
                page.page().set(new_flags);
            }
            match self.add_to_page_cache_lru(&page, index) {
                Ok(()) => return Ok(page),
                Err(_) => continue, // lost the race: `page` drops and is freed
            }
        }
    }

    /// Inserts a locked page at `index` and queues it for the LRU. The page
    /// cache takes its own reference. Fails with `AlreadyExists` if the slot
    /// is taken.
    pub fn add_to_page_cache_lru(&self, page: &LockedPage<'_>, index: u64) -> io::Result<()> {
        self.add_to_page_cache(page, index)?;
        self.zone.lru_cache_add(page.page());
        Ok(())
    }

    /// Inserts locked pages at `first`, `first + 1`, ... under one tree
    /// lock (readahead's run: one lock instead of one per page) and queues
    /// each one inserted for the LRU. Pushes per page whether it went in; a
    /// page whose slot was taken stays out, owned by the caller alone.
    pub(crate) fn add_run_to_page_cache_lru(
        &self,
        pages: &[LockedPage<'_>],
        first: u64,
        inserted: &mut Vec<bool>,
    ) -> io::Result<()> {
        self.check_index(first.saturating_add(pages.len() as u64).saturating_sub(1))?;
        {
            let mut tree = self.tree.lock();
            for (i, page) in pages.iter().enumerate() {
                inserted.push(self.insert_locked(&mut tree, page.page(), first + i as u64));
            }
        }
        for (page, _) in pages.iter().zip(&inserted[inserted.len() - pages.len()..]).filter(|(_, &ok)| ok) {
            self.zone.lru_cache_add(page.page());
        }
        Ok(())
    }

    /// Inserts a locked page at `index` without touching the LRU.
    pub(crate) fn add_to_page_cache(&self, page: &LockedPage<'_>, index: u64) -> io::Result<()> {
        self.check_index(index)?;
        if !self.insert_locked(&mut self.tree.lock(), page.page(), index) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "page already cached at this index"));
        }
        Ok(())
    }

    /// Under the tree lock: puts a locked page at `index` with the page
    /// cache's own reference; false (and the page as it was) if the slot is
    /// taken.
    fn insert_locked(&self, tree: &mut XaLock<'_>, p: &Page, index: u64) -> bool {
        assert_eq!(p.mapping_id(), 0, "page already belongs to a mapping");
        p.set_mapping(self.id, index);
        p.get_page();
        if tree.insert(index, self.zone.page_to_pfn(p)).is_err() {
            p.set_mapping(0, 0);
            // The caller's reference remains: this never frees.
            self.zone.put_page(p);
            return false;
        }
        true
    }

    /// Removes a locked page from the cache even if others hold references
    /// (truncate); drops the page cache's reference. A dirty page is cleaned.
    pub fn delete_from_page_cache(&self, page: &LockedPage<'_>) {
        let p = page.page();
        if p.mapping_id() != self.id {
            return;
        }
        {
            let mut tree = self.tree.lock();
            let removed = tree.erase(p.index());
            assert_eq!(removed, Some(self.zone.page_to_pfn(p)), "page not at its index");
            p.set_mapping(0, p.index());
        }
        self.zone.clear_blocks(p);
        if p.test(PageFlags::DIRTY) && p.test_and_clear(PageFlags::DIRTY) {
            self.account_cleaned();
        }
        self.zone.put_page(p);
    }

    /// Removes locked, isolated pages, each only if nobody but the cache
    /// and the caller holds it and it is clean (`__remove_mapping`, for a
    /// run of pages under one tree lock): freezes the count from exactly 2
    /// to 0. Pushes one result per page onto `removed`; a page removed is
    /// off the tree with a count of 0, and the caller frees it.
    pub(crate) fn remove_mapping_many<'p>(&self, pages: impl Iterator<Item = &'p Page>, removed: &mut Vec<bool>) {
        let mut tree = self.tree.lock();
        for page in pages {
            removed.push(self.remove_locked(&mut tree, page));
        }
    }

    fn remove_locked(&self, tree: &mut XaLock<'_>, page: &Page) -> bool {
        if page.mapping_id() != self.id || !page.ref_freeze(2) {
            return false;
        }
        if page.test(PageFlags::DIRTY) || page.test(PageFlags::WRITEBACK) {
            page.set_page_count(2);
            return false;
        }
        let removed = tree.erase(page.index());
        assert_eq!(removed, Some(self.zone.page_to_pfn(page)), "page not at its index");
        page.set_mapping(0, page.index());
        self.zone.clear_blocks(page);
        true
    }

    /// Moves a locked, uptodate, clean page of this file to `dst_index` of
    /// `dst` (another file): the page changes files instead of being copied
    /// (the old `splice` page stealing). Only if
    /// nobody but the cache and the caller holds it (the count freezes from
    /// 2, as reclaim's removal does), `dst` is in the same cache, and `dst`
    /// has no page at `dst_index`. The page keeps its place on the LRU. On
    /// `Done` it comes back locked, in `dst` but not dirty: the caller grows
    /// `dst`'s size over it first (writeback writes only up to the size),
    /// then dirties it. On `Orphaned` the caller's reference is gone; on
    /// `Kept` the page is still this file's, locked, and handed back.
    pub(crate) fn move_page_to<'a>(
        &'a self,
        page: LockedPage<'a>,
        dst: &'a AddressSpace,
        dst_index: u64,
    ) -> MovePage<'a> {
        let p = page.page();
        // Frames move only within one cache's arena, between files of one page size.
        if std::ptr::eq(self, dst)
            || !Arc::ptr_eq(&self.zone, &dst.zone)
            || self.order != dst.order
            || p.mapping_id() != self.id
            || !p.test(PageFlags::UPTODATE)
            || p.flags().0 & (PageFlags::DIRTY.0 | PageFlags::WRITEBACK.0 | PageFlags::ERROR.0) != 0
        {
            return MovePage::Kept(page);
        }
        if !self.remove_locked(&mut self.tree.lock(), p) {
            // A page read in moments ago may still sit in an LRU batch,
            // which holds a reference: drain the batches and try once more.
            if p.page_count() <= 2 {
                return MovePage::Kept(page);
            }
            self.zone.lru.drain(&self.zone);
            if !self.remove_locked(&mut self.tree.lock(), p) {
                return MovePage::Kept(page);
            }
        }
        // Off this file with a count of 0: give back the caller's reference.
        p.set_page_count(1);
        p.clear(crate::mem::page::RA_FRESH);
        p.clear(PageFlags::READAHEAD);
        if dst.add_to_page_cache(&page, dst_index).is_err() {
            // `dst` has a page there after all. Ours belongs to no file
            // now; dropping the caller's reference frees it.
            return MovePage::Orphaned;
        }
        self.zone.count(crate::stats::Event::PagesMoved, 1);
        MovePage::Done(page)
    }

    /// Up to `nr` cached pages from `start` on, in ascending index order.
    pub fn find_get_pages(&self, start: u64, nr: usize) -> Vec<PageRef<'_>> {
        self.gang(start, nr, |tree, s, n, out, g| tree.gang_lookup(s, n, out, g))
    }

    /// Up to `nr` cached pages from `start` on, stopping at the first hole.
    pub fn find_get_pages_contig(&self, start: u64, nr: usize) -> Vec<PageRef<'_>> {
        let mut pages = self.gang(start, nr, |tree, s, n, out, g| tree.contig(s, n, out, g));
        // A page that vanished between the tree walk and its reference is a hole too.
        let run = pages.iter().enumerate().take_while(|(i, p)| p.index() == start + *i as u64).count();
        pages.truncate(run);
        pages
    }

    /// Up to `nr` pages carrying `tag` from `*index` on; advances `*index`
    /// past the last page returned (or to the end when none are left).
    pub fn find_get_pages_tag(&self, index: &mut u64, tag: Tag, nr: usize) -> Vec<PageRef<'_>> {
        let mark = Mark::from(tag);
        let pages = self.gang(*index, nr, |tree, s, n, out, g| tree.gang_lookup_marked(s, mark, n, out, g));
        match pages.last() {
            Some(p) => *index = p.index().saturating_add(1),
            None => *index = u64::MAX,
        }
        pages
    }

    fn gang(
        &self,
        start: u64,
        nr: usize,
        lookup: impl Fn(&XArray, u64, usize, &mut Vec<(u64, u32)>, &epoch::Guard),
    ) -> Vec<PageRef<'_>> {
        let guard = epoch::pin();
        let mut entries = Vec::with_capacity(nr.min(64));
        lookup(&self.tree, start, nr, &mut entries, &guard);
        let mut pages = Vec::with_capacity(entries.len());
        for (index, _) in entries {
            // Re-take each through the full lockless protocol.
            if let Some(p) = self.get_entry(index) {
                pages.push(self.page_ref(p));
            }
        }
        pages
    }

    /// Indices of the pages cached in `[start, end)`, without taking
    /// references (a snapshot for readahead's planning).
    pub(crate) fn cached_indices(&self, start: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        self.tree.indices_in(start, end, &mut out, &epoch::pin());
        out
    }

    /// Whether the page at `index` carries `tag`.
    pub fn page_has_tag(&self, index: u64, tag: Tag) -> bool {
        self.tree.get_mark(index, tag.into(), &epoch::pin())
    }

    /// Sets or clears a tag of the page at `index`.
    pub(crate) fn tag(&self, index: u64, tag: Tag, on: bool) {
        let mut tree = self.tree.lock();
        if on {
            tree.set_mark(index, tag.into());
        } else {
            tree.clear_mark(index, tag.into());
        }
    }

    /// Number of cached pages.
    pub fn nr_pages(&self) -> usize {
        self.tree.len()
    }

    /// Dirty pages in this mapping.
    pub fn nr_dirty(&self) -> usize {
        // Relaxed: a statistic.
        self.nr_dirty.load(Ordering::Relaxed)
    }

    /// Marks a locked page dirty, every block of it, and tags it
    /// (`__set_page_dirty_nobuffers`).
    pub(crate) fn set_page_dirty(&self, page: &Page) {
        self.set_blocks_dirty(page, u32::MAX);
    }

    /// Marks blocks of a locked page dirty (a mask of its 4 KiB blocks; a
    /// 4 KiB page is its one block) and tags the page
    /// (`iomap_set_range_dirty` + `filemap_dirty_folio`): writeback writes
    /// only those blocks.
    pub(crate) fn set_blocks_dirty(&self, page: &Page, blocks: u32) {
        self.zone.add_blocks_dirty(page, blocks);
        if page.test_and_set(PageFlags::DIRTY) {
            return;
        }
        // Clean to dirty: the tier's copy (if any) is older than these
        // bytes. Under the page lock, so no put of this page runs beside
        // it, and no read consults the tier for this index while the page
        // is in the tree. Anonymous memory's copy (a slot or a tier entry)
        // goes the same way.
        if let Some(anon) = &self.anon {
            anon.dirtied(page.index());
            {
                let mut tree = self.tree.lock();
                if page.mapping_id() == self.id {
                    tree.set_mark(page.index(), Mark::Dirty);
                }
            }
            // Relaxed: counters. Not the zone's dirty pages: anonymous
            // memory is never written back, so it does not count against
            // the dirty limits (writers would wait for a flusher that
            // cannot help); it has a limit of its own (`anon::charge_dirty`).
            self.nr_dirty.fetch_add(1, Ordering::Relaxed);
            self.zone.nr_anon_dirty.fetch_add(1 << self.order, Ordering::Relaxed);
            return;
        }
        self.cleancache_invalidate_page(page.index());
        if page.test(crate::mem::page::TIER_COPY) {
            page.clear(crate::mem::page::TIER_COPY);
        }
        {
            let mut tree = self.tree.lock();
            if page.mapping_id() == self.id {
                tree.set_mark(page.index(), Mark::Dirty);
            }
        }
        // Relaxed: counters.
        // The zone counts frames (its limits are fractions of the
        // capacity); the mapping counts pages.
        self.zone.nr_dirty.fetch_add(1 << self.order, Ordering::Relaxed);
        if self.nr_dirty.fetch_add(1, Ordering::Relaxed) == 0 {
            self.dirtied_when.lock().get_or_insert_with(Instant::now);
        }
    }

    /// Accounts a page that stopped being dirty.
    pub(crate) fn account_cleaned(&self) {
        if self.anon.is_some() {
            // Relaxed: counters (see `set_blocks_dirty`).
            self.nr_dirty.fetch_sub(1, Ordering::Relaxed);
            self.zone.nr_anon_dirty.fetch_sub(1 << self.order, Ordering::Relaxed);
            return;
        }
        // Relaxed: counters.
        self.zone.nr_dirty.fetch_sub(1 << self.order, Ordering::Relaxed);
        if self.nr_dirty.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self.dirtied_when.lock() = None;
        }
    }

    /// Marks a locked page of anonymous memory clean once reclaim stored
    /// its bytes (in the tier or a slot of the swap area): no writeback
    /// state, the store was synchronous.
    pub(crate) fn clean_after_swap_out(&self, page: &Page) {
        if !page.test(PageFlags::DIRTY) {
            return;
        }
        self.zone.take_blocks_dirty(page);
        {
            let mut tree = self.tree.lock();
            page.clear(PageFlags::DIRTY);
            if page.mapping_id() == self.id {
                tree.clear_mark(page.index(), Mark::Dirty);
                tree.clear_mark(page.index(), Mark::ToWrite);
            }
        }
        self.account_cleaned();
    }

    /// Clears DIRTY of a locked page for writeback (`clear_page_dirty_for_io`)
    /// and moves its tags from DIRTY/TOWRITE to WRITEBACK with the flag set.
    /// Returns the dirty blocks to write (a mask of the page's 4 KiB
    /// blocks; the one block of a 4 KiB page), or `None` if the page was
    /// not dirty.
    pub(crate) fn start_writeback(&self, page: &Page) -> Option<u32> {
        if !page.test(PageFlags::DIRTY) {
            return None;
        }
        let blocks = self.zone.take_blocks_dirty(page);
        // Before the page stops counting as dirty: whoever finds no dirty
        // page afterwards finds the file's times moving by our hand
        // (`truncate::revalidate`, `refresh_record`).
        self.written.store(true, Ordering::SeqCst);
        {
            let mut tree = self.tree.lock();
            let index = page.index();
            page.clear(PageFlags::DIRTY);
            tree.clear_mark(index, Mark::Dirty);
            tree.clear_mark(index, Mark::ToWrite);
            tree.set_mark(index, Mark::Writeback);
        }
        // After the mark: whoever finds no mark before it looked at the
        // file finds the sequence moved after it (`truncate::quiet_stat`).
        self.wb_seq.fetch_add(1, Ordering::SeqCst);
        assert!(!wait::set_page_writeback(page), "writeback started twice");
        // Relaxed: counters.
        self.zone.nr_writeback.fetch_add(1 << self.order, Ordering::Relaxed);
        self.account_cleaned();
        Some(blocks)
    }

    /// Puts `backing` in place of the mapping's unless a page is dirty or
    /// under writeback. Checked under the tree lock, where a failed
    /// writeback puts its pages back to dirty, so no dirty page is ever
    /// left behind a backing that cannot write it. True if replaced.
    pub(crate) fn replace_backing_if_clean(&self, backing: Arc<dyn Backing>) -> bool {
        let tree = self.tree.lock();
        if tree.find_marked(0, Mark::Dirty).is_some() || tree.find_marked(0, Mark::Writeback).is_some() {
            return false;
        }
        *self.backing.write() = backing;
        true
    }

    /// Whether any page is dirty or under writeback: a write of the
    /// cache's own may still change the file (checked under the tree lock,
    /// where writeback moves a page from one mark to the other).
    pub(crate) fn io_pending(&self) -> bool {
        let tree = self.tree.lock();
        tree.find_marked(0, Mark::Dirty).is_some() || tree.find_marked(0, Mark::Writeback).is_some()
    }

    /// Takes the engine's hooks (write-ahead log, read verifier) off the
    /// mapping unless a page is dirty or under writeback (checked under the
    /// tree lock, as in `replace_backing_if_clean`): the log rule must keep
    /// guarding pages that may still be written. Returns them for the
    /// caller to drop outside its locks.
    #[allow(clippy::type_complexity)]
    pub(crate) fn take_hooks_if_clean(&self) -> Option<(Option<Arc<dyn WriteAheadLog>>, Option<ReadVerifier>)> {
        let tree = self.tree.lock();
        if tree.find_marked(0, Mark::Dirty).is_some() || tree.find_marked(0, Mark::Writeback).is_some() {
            return None;
        }
        let taken = (self.wal.write().take(), self.verifier.write().take());
        drop(tree);
        Some(taken)
    }

    /// Ends writeback of the pages of one write (`end_page_writeback`), their
    /// marks cleared under one tree lock and their waiters woken after it is
    /// dropped; a failed write puts them back to dirty (we never drop data
    /// the file did not take, and a failed page gets back the blocks it
    /// was writing). The caller holds a reference to each; `blocks` are
    /// what `start_writeback` returned.
    pub(crate) fn end_writeback_run(&self, pages: &[(&Page, u32)], failed: bool) {
        let mut redirtied = 0usize;
        // Before the marks go: the write has landed, and a size read from
        // the file before it is stale (`truncate::quiet_stat`).
        self.wb_seq.fetch_add(1, Ordering::SeqCst);
        {
            let mut tree = self.tree.lock();
            for &(page, blocks) in pages {
                if page.mapping_id() != self.id {
                    continue;
                }
                tree.clear_mark(page.index(), Mark::Writeback);
                if failed {
                    self.zone.add_blocks_dirty(page, blocks);
                    if !page.test_and_set(PageFlags::DIRTY) {
                        tree.set_mark(page.index(), Mark::Dirty);
                        redirtied += 1;
                    }
                }
            }
        }
        if redirtied > 0 {
            // Relaxed: counters.
            self.zone.nr_dirty.fetch_add(redirtied << self.order, Ordering::Relaxed);
            if self.nr_dirty.fetch_add(redirtied, Ordering::Relaxed) == 0 {
                self.dirtied_when.lock().get_or_insert_with(Instant::now);
            }
        }
        // Relaxed: a counter.
        self.zone.nr_writeback.fetch_sub(pages.len() << self.order, Ordering::Relaxed);
        for &(page, _) in pages {
            wait::end_page_writeback(page);
        }
    }

    /// Removes every page at index `start` or above from the cache
    /// (`truncate_inode_pages_range`'s removal loop, in two passes: take
    /// what is idle, then wait for the busy ones). Dirty pages go too: the
    /// caller has written them back or is cutting them off the file.
    pub(crate) fn truncate_pages_from(&self, start: u64) {
        /// Batch size of the walks.
        const BATCH: usize = 64;
        // Pass 1: take what is idle.
        let mut index = start;
        loop {
            let pages = self.find_get_pages(index, BATCH);
            let Some(last) = pages.last().map(|p| p.index()) else { break };
            for page in pages {
                if page.is_writeback() {
                    continue;
                }
                if let Ok(locked) = page.try_lock() {
                    if !locked.is_writeback() {
                        self.delete_from_page_cache(&locked);
                    }
                }
            }
            if last == u64::MAX {
                break;
            }
            index = last + 1;
        }
        // Pass 2: wait for the busy ones.
        loop {
            let pages = self.find_get_pages(start, BATCH);
            if pages.is_empty() {
                break;
            }
            for page in pages {
                let locked = page.lock();
                locked.wait_on_page_writeback();
                self.delete_from_page_cache(&locked);
            }
        }
    }

    /// Panics unless the tree's invariants hold and every entry's page
    /// names this mapping and its index.
    pub fn check_invariants(&self) {
        self.tree.check_invariants();
        // Under the tree lock: removal changes `mapping` only while holding it.
        let tree = self.tree.lock();
        let mut out = Vec::new();
        tree.gang_lookup(0, usize::MAX, &mut out);
        for (index, pfn) in out {
            let p = self.zone.pfn_to_page(pfn);
            assert_eq!(p.mapping_id(), self.id, "page {pfn} at {index} names another mapping");
            assert_eq!(p.index(), index, "page {pfn} at {index} has index {}", p.index());
            assert!(p.page_count() >= 1, "cached page {pfn} without the cache's reference");
            self.zone.check_compound(p, self.order);
        }
        drop(tree);
        if let Some(anon) = &self.anon {
            anon.check_invariants();
        }
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // Frames go back to the pool; the cache wrote dirty pages back
        // before it let go of the mapping.
        self.truncate_pages_from(0);
    }
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressSpace")
            .field("id", &self.id)
            .field("pages", &self.nr_pages())
            .field("size", &self.size())
            .finish()
    }
}

/// Dirtying a page goes through its mapping, found by the page's mapping
/// id (`folio_mark_dirty` calling the mapping's `dirty_folio`).
impl Zone {
    /// Marks a locked page dirty through its mapping (`set_page_dirty`).
    pub(crate) fn set_page_dirty(&self, page: &Page) {
        match self.mapping(page.mapping_id()) {
            Some(m) => m.set_page_dirty(page),
            None => {
                page.set(PageFlags::DIRTY);
            }
        }
    }
}

/// The largest file size: file offsets are `off_t`, a signed 64-bit number.
pub(crate) const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Page indices stop where byte offsets would overflow `off_t` (in 4 KiB
/// pages; a file with larger pages stops at `MAX_INDEX >> order`).
pub(crate) const MAX_INDEX: u64 = MAX_FILE_SIZE / crate::PAGE_SIZE as u64;

/// The largest order of a file's pages (`MAX_PAGE_SIZE`).
pub(crate) const MAX_PAGE_ORDER: usize = crate::MAX_PAGE_BLOCKS.trailing_zeros() as usize;

impl AddressSpace {
    /// `InvalidInput` for a page index whose bytes lie past the largest file.
    pub(crate) fn check_index(&self, index: u64) -> io::Result<()> {
        if index > MAX_INDEX >> self.order {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("page index {index} past the largest file"),
            ));
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn errseq_reports_each_error_once_per_cursor() {
        let e = Errseq::default();
        let a = AtomicU64::new(e.sample());
        assert!(e.check_and_advance(&a).is_ok());
        e.set(&io::Error::from_raw_os_error(libc::ENOSPC));
        // A cursor opened after the error, before anyone saw it, still sees it.
        let b = AtomicU64::new(e.sample());
        assert_eq!(e.check_and_advance(&a).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        assert!(e.check_and_advance(&a).is_ok(), "reported twice");
        assert_eq!(e.check_and_advance(&b).unwrap_err().raw_os_error(), Some(libc::ENOSPC));
        // Once seen, new cursors start past it.
        let c = AtomicU64::new(e.sample());
        assert!(e.check_and_advance(&c).is_ok());
        e.set(&io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.check_and_advance(&c).unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(e.check_and_advance(&b).unwrap_err().raw_os_error(), Some(libc::EIO));
    }
}

/// What `AddressSpace::move_page_to` did with the page.
pub(crate) enum MovePage<'a> {
    /// The page is the destination's now, still locked and not yet dirty:
    /// the caller makes the destination's size cover it, then dirties it.
    Done(LockedPage<'a>),
    /// The page could not move; still the source's, still locked.
    Kept(LockedPage<'a>),
    /// The page left the source but the destination slot was taken; it is
    /// freed, and its bytes must be read from the source file again.
    Orphaned,
}
