//! Page descriptors, flags and reference counts, following the kernel's
//! `include/linux/mm_types.h`, `page-flags.h` and `page_ref.h`.
//!
//! One [`Page`] describes each frame of the arena. Descriptors live in a
//! boxed slice (`mem_map`) for as long as the cache and are never freed, only
//! reused: a stale frame number still names a real descriptor, which is what
//! makes lockless lookup sound.
//!
//! # Flags
//!
//! | flag | meaning | set / cleared by |
//! |---|---|---|
//! | `LOCKED` | the page lock is held | `lock_page` / `unlock_page` |
//! | `WAITERS` | someone sleeps waiting for `LOCKED` to clear | a waiter / `unlock_page` |
//! | `ERROR` | the last read of the page from its file failed | read path / next successful read |
//! | `REFERENCED` | accessed once since it was last scanned | `mark_page_accessed` / reclaim |
//! | `UPTODATE` | the bytes hold the file's data (Release on set, Acquire on test) | read path, full-page write / never cleared while cached |
//! | `DIRTY` | the bytes are newer than the file | write path / writeback (page locked) |
//! | `LRU` | the page is on an LRU list | LRU code, under the LRU lock |
//! | `ACTIVE` | the page is on the active list (with `LRU`) | LRU code, under the LRU lock |
//! | `WRITEBACK` | the bytes are being written to the file | writeback start / `end_page_writeback` |
//! | `RECLAIM` | reclaim started the writeback: free the page when it ends | reclaim / `end_page_writeback` |
//! | `READAHEAD` | marker: reading this page starts the next readahead window | readahead / first reader |
//! | `BUDDY` | the frame heads a free block; its order is in `index` | buddy allocator, under the buddy lock |
//! | `HEAD` | head of a compound (order > 0) allocation: a large page | buddy allocator |
//! | `TAIL` | tail of a compound allocation; `lru_next` holds the head | buddy allocator |
//! | `PRIVATE` | the owner attached private state | owner |
//! | `MAPPEDTODISK` | every block of the page has a place in the file | write path |
//! | `WB_WAITERS` | someone sleeps waiting for `WRITEBACK` to clear | a waiter / `end_page_writeback` |
//!
//! Two more bits are crate-internal: bit 17 (`RA_FRESH`, readahead brought
//! the page in and nobody has read it yet; set by readahead, cleared by the
//! first reader) and bit 18 (`FILL_INACTIVE`, a page created by a write:
//! it starts on the inactive list even while the cache fills; set by the
//! write path, cleared when the page reaches an LRU list), and bit 19
//! (`TIER_COPY`, the second tier holds the page's very bytes; set by the
//! cleancache front end with the page locked, cleared by any change to the
//! bytes).

use std::fmt;
use std::ops::Deref;

use crate::mem::wait;
use crate::mem::zone::Zone;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// A set of page flags (bits of [`Page`]'s flags word).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageFlags(pub u32);

impl PageFlags {
    /// The page lock is held.
    pub const LOCKED: PageFlags = PageFlags(1 << 0);
    /// A thread waits for `LOCKED` to clear.
    pub const WAITERS: PageFlags = PageFlags(1 << 1);
    /// The last read from the file failed.
    pub const ERROR: PageFlags = PageFlags(1 << 2);
    /// Accessed once since last scanned.
    pub const REFERENCED: PageFlags = PageFlags(1 << 3);
    /// The bytes hold the file's data.
    pub const UPTODATE: PageFlags = PageFlags(1 << 4);
    /// The bytes are newer than the file.
    pub const DIRTY: PageFlags = PageFlags(1 << 5);
    /// On an LRU list.
    pub const LRU: PageFlags = PageFlags(1 << 6);
    /// On the active list.
    pub const ACTIVE: PageFlags = PageFlags(1 << 7);
    /// Being written to the file.
    pub const WRITEBACK: PageFlags = PageFlags(1 << 8);
    /// Reclaim started the writeback; free the page when it ends.
    pub const RECLAIM: PageFlags = PageFlags(1 << 9);
    /// Readahead marker.
    pub const READAHEAD: PageFlags = PageFlags(1 << 10);
    /// Heads a free buddy block.
    pub const BUDDY: PageFlags = PageFlags(1 << 11);
    /// Head of a compound allocation.
    pub const HEAD: PageFlags = PageFlags(1 << 12);
    /// Tail of a compound allocation.
    pub const TAIL: PageFlags = PageFlags(1 << 13);
    /// The owner attached private state.
    pub const PRIVATE: PageFlags = PageFlags(1 << 14);
    /// Every block of the page is allocated in the file.
    pub const MAPPEDTODISK: PageFlags = PageFlags(1 << 15);
    /// A thread waits for `WRITEBACK` to clear.
    pub const WB_WAITERS: PageFlags = PageFlags(1 << 16);
}

impl std::ops::BitOr for PageFlags {
    type Output = PageFlags;
    fn bitor(self, rhs: PageFlags) -> PageFlags {
        PageFlags(self.0 | rhs.0)
    }
}

/// Marks a page that readahead brought in and nobody has read yet (for the
/// readahead hit counter). Shares the flags word; not part of the public table.
pub(crate) const RA_FRESH: PageFlags = PageFlags(1 << 17);

/// Set on a new page that starts on the inactive list even while the cache
/// fills (pages created by writes); cleared when the page reaches a list.
pub(crate) const FILL_INACTIVE: PageFlags = PageFlags(1 << 18);

/// The second tier holds these very bytes: the page was filled from it, or
/// put to it and kept while the page stayed. Set by the cleancache front
/// end with the page locked; cleared by `LockedPage::data_mut` (any change
/// to the bytes). Reclaim does not put such a page again.
pub(crate) const TIER_COPY: PageFlags = PageFlags(1 << 19);

/// One read guard, in the guard count at the top of the flags word.
pub(crate) const GUARD_ONE: u32 = 1 << 20;
/// The guard count's bits.
pub(crate) const GUARD_MASK: u32 = !(GUARD_ONE - 1);
/// Guards past this many wait for some to drop (the count has 12 bits).
pub(crate) const GUARD_MAX: u32 = 2048;

/// "No frame": the end of a list.
pub(crate) const NO_PFN: u32 = u32::MAX;

/// The descriptor of one frame. 32 bytes.
///
/// Safe code may read a descriptor (`test`, `flags`, `page_count`, `index`)
/// but changes it only through [`PageRef`] and [`LockedPage`]: the flag and
/// reference-count transitions (`set`, `clear`, `get_page`,
/// `put_page_testzero`, `get_page_unless_zero`, ...) are crate-private,
/// because the exclusivity of `LockedPage::data_mut` rests on them.
///
/// | field | guarded by |
/// |---|---|
/// | `flags` | atomic RMW; `LOCKED` by the lock owner; `LRU`/`ACTIVE` under the LRU lock; `BUDDY` under the buddy lock; bits 20..32 count read guards (`read_lock`, RMW only while `LOCKED` is clear) |
/// | `refcount` | atomic; 0 means free or frozen for removal |
/// | `seq` | the version of the bytes and identity: odd while the lock holder changes them (`data_mut` until unlock, `set_mapping`), bumped by 2 across each change; never reset, so an optimistic reader that saw the same even value before and after its copy read one version |
/// | `mapping` | id of the owning `AddressSpace` (0: none); changed only with the page locked and the tree lock held |
/// | `index` | page offset in the file, same rule; the block order while the frame is free |
/// | `lru_prev`, `lru_next` | the LRU lock while on an LRU list; the buddy lock while free; `lru_next` is the head's pfn in a compound tail |
///
/// A compound block (a large page of a file, or `alloc_pages` above order
/// 0) is described by its head. Its first tail's `index` keeps the order
/// (bits 0..8, set at allocation) and two masks of the page's 4 KiB blocks,
/// both guarded by the head's page lock: bits 16..32 the blocks a partial
/// write filled while the page is not UPTODATE, bits 32..48 the dirty
/// blocks (taken by `start_writeback`; a failed write puts them back). The
/// tails' other fields are unused; their `refcount` stays 0, so a
/// speculative reference to a tail always fails.
#[repr(C)]
pub struct Page {
    pub(crate) flags: AtomicU32,
    pub(crate) refcount: AtomicU32,
    pub(crate) seq: AtomicU32,
    pub(crate) mapping: AtomicU32,
    pub(crate) index: AtomicU64,
    pub(crate) lru_prev: AtomicU32,
    pub(crate) lru_next: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Page>() == 32);

impl Page {
    pub(crate) fn new() -> Page {
        Page {
            flags: AtomicU32::new(0),
            refcount: AtomicU32::new(0),
            seq: AtomicU32::new(0),
            mapping: AtomicU32::new(0),
            index: AtomicU64::new(0),
            lru_prev: AtomicU32::new(NO_PFN),
            lru_next: AtomicU32::new(NO_PFN),
        }
    }

    // ---- flags ---------------------------------------------------------

    /// Tests `f` (any of its bits).
    #[inline]
    pub fn test(&self, f: PageFlags) -> bool {
        // Acquire: a set flag publishes what its setter wrote before it (UPTODATE, ERROR).
        self.flags.load(Ordering::Acquire) & f.0 != 0
    }

    /// Sets `f`.
    #[inline]
    pub(crate) fn set(&self, f: PageFlags) {
        // Release: pairs with the Acquire in `test` (UPTODATE publishes the bytes).
        self.flags.fetch_or(f.0, Ordering::Release);
    }

    /// Clears `f`.
    #[inline]
    pub(crate) fn clear(&self, f: PageFlags) {
        // Release: orders the clearer's earlier writes before the clear.
        self.flags.fetch_and(!f.0, Ordering::Release);
    }

    /// Sets `f`; returns whether it was already set.
    #[inline]
    pub(crate) fn test_and_set(&self, f: PageFlags) -> bool {
        // AcqRel: both observes and publishes state (used for ownership bits).
        self.flags.fetch_or(f.0, Ordering::AcqRel) & f.0 != 0
    }

    /// Clears `f`; returns whether it was set.
    #[inline]
    pub(crate) fn test_and_clear(&self, f: PageFlags) -> bool {
        // AcqRel: as in `test_and_set`.
        self.flags.fetch_and(!f.0, Ordering::AcqRel) & f.0 != 0
    }

    /// The whole flags word (without the read-guard count that shares it).
    #[inline]
    pub fn flags(&self) -> PageFlags {
        // Acquire: as in `test`.
        PageFlags(self.flags.load(Ordering::Acquire) & !GUARD_MASK)
    }

    /// Every field of the descriptor, as it is now: flags (with the guard
    /// count), count, version, mapping, index, LRU links. For tests that
    /// prove an access wrote nothing to the descriptor (compare two
    /// snapshots); each field is read on its own, so a snapshot taken
    /// while others change the page is not one instant.
    pub fn snapshot(&self) -> [u64; 7] {
        // Relaxed: a diagnostic copy; nothing is published with it.
        [
            u64::from(self.flags.load(Ordering::Relaxed)),
            u64::from(self.refcount.load(Ordering::Relaxed)),
            u64::from(self.seq.load(Ordering::Relaxed)),
            u64::from(self.mapping.load(Ordering::Relaxed)),
            self.index.load(Ordering::Relaxed),
            u64::from(self.lru_prev.load(Ordering::Relaxed)),
            u64::from(self.lru_next.load(Ordering::Relaxed)),
        ]
    }

    // ---- the version (seqcount) ----------------------------------------------

    /// The version of the bytes and identity, for an optimistic reader.
    #[inline]
    pub(crate) fn read_seq(&self) -> u32 {
        // Acquire: the reader's later loads of identity and bytes are not
        // hoisted above it, and it sees what the last change published.
        self.seq.load(Ordering::Acquire)
    }

    /// Whether the version is still `s` after an optimistic copy.
    #[inline]
    pub(crate) fn seq_unchanged(&self, s: u32) -> bool {
        // Acquire fence: the copy's loads come before the reload below
        // (the reader half of the seqlock, as crossbeam's AtomicCell).
        crate::sync::fence(Ordering::Acquire);
        // Relaxed: ordered by the fence above.
        self.seq.load(Ordering::Relaxed) == s
    }

    /// The lock holder starts changing the bytes or identity: the version
    /// goes odd (once per lock hold; `end_write` ends it at unlock).
    #[inline]
    pub(crate) fn begin_write(&self) {
        // Relaxed load: only the lock holder stores to `seq`.
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 == 0 {
            // Relaxed store, then a Release fence: the writes that follow
            // cannot become visible before the odd version (the writer half
            // of the seqlock).
            self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
            crate::sync::fence(Ordering::Release);
        }
    }

    /// The change is done (at unlock): the version goes even, one past the
    /// odd value, so every optimistic reader that overlapped it retries.
    #[inline]
    pub(crate) fn end_write(&self) {
        // Relaxed load: only the lock holder stores to `seq`.
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 != 0 {
            // Release: the changed bytes are visible to a reader that sees
            // the new even version.
            self.seq.store(s.wrapping_add(1), Ordering::Release);
        }
    }

    // ---- reference counts (page_ref.h) ------------------------------------

    /// The reference count (`page_count`).
    #[inline]
    pub fn page_count(&self) -> u32 {
        // Relaxed: a snapshot for decisions that re-check under a lock or CAS.
        self.refcount.load(Ordering::Relaxed)
    }

    /// Takes one more reference; the caller already holds one (`get_page`).
    #[doc(alias = "page_cache_get")]
    #[inline]
    pub(crate) fn get_page(&self) {
        // Relaxed: the caller's own reference keeps the page alive, as Arc::clone.
        let old = self.refcount.fetch_add(1, Ordering::Relaxed);
        assert!(old != 0 && old < u32::MAX / 2, "get_page on a free page (count {old})");
    }

    /// Takes a reference unless the count is zero (free or frozen).
    #[inline]
    pub(crate) fn get_page_unless_zero(&self) -> bool {
        // Relaxed first load: only a guess for the CAS.
        let mut c = self.refcount.load(Ordering::Relaxed);
        loop {
            if c == 0 {
                return false;
            }
            // Acquire on success: synchronizes with the Release that made the
            // page live (`set_page_count`), so mapping/index/bytes are visible.
            match self.refcount.compare_exchange_weak(c, c + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
    }

    /// Drops a reference; true if it was the last (`put_page_testzero`).
    #[inline]
    pub(crate) fn put_page_testzero(&self) -> bool {
        // Release: our uses of the page happen before whoever frees it;
        // the last dropper's Acquire fence below completes the pair (as Arc).
        let old = self.refcount.fetch_sub(1, Ordering::Release);
        assert!(old != 0, "put_page on a free page");
        if old == 1 {
            crate::sync::fence(Ordering::Acquire);
            true
        } else {
            false
        }
    }

    /// Freezes the count from exactly `expected` to zero (removal protocol).
    #[inline]
    pub(crate) fn ref_freeze(&self, expected: u32) -> bool {
        // Acquire: every other holder's Release put happened before our freeze.
        self.refcount.compare_exchange(expected, 0, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Undoes a freeze, or makes a fresh page live with `count` references.
    #[inline]
    pub(crate) fn set_page_count(&self, count: u32) {
        // Release: publishes mapping/index/flags written before it to
        // `get_page_unless_zero`'s Acquire.
        self.refcount.store(count, Ordering::Release);
    }

    // ---- fields ------------------------------------------------------------

    /// The page offset in its file.
    #[inline]
    pub fn index(&self) -> u64 {
        // Relaxed: stable while a reference is held and the mapping matches;
        // lookups re-check it after taking their reference.
        self.index.load(Ordering::Relaxed)
    }

    /// The id of the owning mapping (0 for none).
    #[inline]
    pub(crate) fn mapping_id(&self) -> u32 {
        // Acquire: pairs with the Release store in `set_mapping`.
        self.mapping.load(Ordering::Acquire)
    }

    /// Sets mapping and index (page locked, tree lock held). A change of
    /// identity is a change of version: an optimistic reader of the old
    /// identity retries (`begin_write`; the unlock ends it).
    #[inline]
    pub(crate) fn set_mapping(&self, id: u32, index: u64) {
        self.begin_write();
        // Relaxed: published by the Release of the store to `mapping`.
        self.index.store(index, Ordering::Relaxed);
        // Release: index is visible to whoever reads this mapping id.
        self.mapping.store(id, Ordering::Release);
    }
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("flags", &format_args!("{:#x}", self.flags().0))
            .field("count", &self.page_count())
            .field("mapping", &self.mapping_id())
            .field("index", &self.index())
            .finish()
    }
}

// ---- PageRef ----------------------------------------------------------------

/// A counted reference to a page: clone takes a reference (`get_page`),
/// drop releases it (`put_page`). The last put of a page that is off every
/// list gives its frame back to the buddy pool.
#[doc(alias = "page_cache_release")]
#[doc(alias = "put_page")]
pub struct PageRef<'a> {
    pub(crate) page: &'a Page,
    pub(crate) zone: &'a Zone,
}

impl<'a> PageRef<'a> {
    /// Wraps a reference the caller already took.
    #[inline]
    pub(crate) fn from_raw(page: &'a Page, zone: &'a Zone) -> PageRef<'a> {
        PageRef { page, zone }
    }

    /// Gives up the wrapper without dropping the reference.
    #[inline]
    pub(crate) fn into_raw(self) -> &'a Page {
        let page = self.page;
        std::mem::forget(self);
        page
    }

    /// The descriptor.
    #[inline]
    pub fn page(&self) -> &'a Page {
        self.page
    }

    /// The frame number.
    #[inline]
    pub fn pfn(&self) -> u32 {
        self.zone.page_to_pfn(self.page)
    }

    /// The page offset in its file.
    #[inline]
    pub fn index(&self) -> u64 {
        self.page.index()
    }

    /// The reference count.
    #[inline]
    pub fn count(&self) -> u32 {
        self.page.page_count()
    }

    /// Holds the file's data.
    #[inline]
    pub fn is_uptodate(&self) -> bool {
        self.page.test(PageFlags::UPTODATE)
    }
    /// Newer than the file.
    #[inline]
    pub fn is_dirty(&self) -> bool {
        self.page.test(PageFlags::DIRTY)
    }
    /// Locked.
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.page.test(PageFlags::LOCKED)
    }
    /// Under writeback.
    #[inline]
    pub fn is_writeback(&self) -> bool {
        self.page.test(PageFlags::WRITEBACK)
    }
    /// The last read failed.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.page.test(PageFlags::ERROR)
    }
    /// On the active list.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.page.test(PageFlags::ACTIVE)
    }
    /// Referenced since last scanned.
    #[inline]
    pub fn is_referenced(&self) -> bool {
        self.page.test(PageFlags::REFERENCED)
    }

    /// Shared access to the bytes: waits while the page is locked, and holds
    /// off writers (who wait for readers to drain) until the guard drops.
    #[inline]
    pub fn read(&self) -> PageReadGuard<'a> {
        wait::read_lock(self.page);
        PageReadGuard { page: self.page, bytes: self.zone.frame(self.page) }
    }

    /// Sleeps until the page lock is ours (`lock_page`).
    #[doc(alias = "lock_page")]
    #[inline]
    pub fn lock(self) -> LockedPage<'a> {
        wait::lock_page(self.page);
        LockedPage { page: self }
    }

    /// Takes the page lock if it is free (`trylock_page`).
    #[doc(alias = "trylock_page")]
    #[inline]
    pub fn try_lock(self) -> Result<LockedPage<'a>, PageRef<'a>> {
        if wait::trylock_page(self.page) {
            Ok(LockedPage { page: self })
        } else {
            Err(self)
        }
    }

    /// Sleeps until the page is unlocked.
    pub fn wait_on_page_locked(&self) {
        wait::wait_on_page_locked(self.page);
    }

    /// Sleeps until writeback of the page ends.
    pub fn wait_on_page_writeback(&self) {
        wait::wait_on_page_writeback(self.page);
    }

    /// Records an access for the LRU (`mark_page_accessed`).
    #[inline]
    pub fn mark_accessed(&self) {
        self.zone.mark_page_accessed(self.page);
    }
}

impl Clone for PageRef<'_> {
    #[inline]
    fn clone(&self) -> Self {
        self.page.get_page();
        PageRef { page: self.page, zone: self.zone }
    }
}

impl Drop for PageRef<'_> {
    #[inline]
    fn drop(&mut self) {
        self.zone.put_page(self.page);
    }
}

impl fmt::Debug for PageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.page.fmt(f)
    }
}

/// Shared access to a page's bytes (see [`PageRef::read`]).
pub struct PageReadGuard<'a> {
    page: &'a Page,
    bytes: *const [u8],
}

impl Deref for PageReadGuard<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the read guard (the guard count raised while not LOCKED)
        // keeps every writer out: writers take the page lock and then wait
        // for the guard count to drain before they write, so the bytes are not mutated
        // while this guard lives; the frame lives as long as the arena ('a).
        unsafe { &*self.bytes }
    }
}

impl Drop for PageReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        wait::read_unlock(self.page);
    }
}

/// A locked page: the lock is released (`unlock_page`) on drop.
pub struct LockedPage<'a> {
    page: PageRef<'a>,
}

impl<'a> LockedPage<'a> {
    /// The counted reference underneath.
    #[inline]
    pub fn page_ref(&self) -> &PageRef<'a> {
        &self.page
    }

    /// The page offset in its file.
    #[inline]
    pub fn index(&self) -> u64 {
        self.page.index()
    }

    /// The bytes, for the lock holder to read.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: we hold the page lock, and every writer of the bytes holds
        // the page lock, so nobody mutates them while this borrow lives.
        unsafe { &*self.page.zone.frame(self.page.page) }
    }

    /// The bytes, for the lock holder to write: first waits for writeback to
    /// end (stable pages) and for readers to drain.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        wait::wait_on_page_writeback(self.page.page);
        wait::wait_for_readers(self.page.page);
        self.page.page.begin_write();
        if self.page.page.test(TIER_COPY) {
            // The bytes may change: the tier's copy is no longer theirs.
            self.page.page.clear(TIER_COPY);
        }
        // SAFETY: we hold the page lock (no other writer), writeback has
        // ended and cannot restart without the lock, and the guard count is
        // zero with LOCKED set so no reader guard exists or can be taken
        // (optimistic readers take none: they copy with per-byte atomic
        // loads and retry on the odd version `begin_write` set); `&mut self`
        // makes this borrow unique among lock-holder borrows.
        unsafe { &mut *self.page.zone.frame(self.page.page).cast_mut() }
    }

    /// Marks the bytes valid (Release: readers that see UPTODATE see them).
    #[inline]
    pub fn set_uptodate(&self) {
        self.page.page.set(PageFlags::UPTODATE);
    }

    /// Marks the page dirty and tags it DIRTY in its mapping's tree.
    pub fn set_dirty(&self) {
        self.page.zone.set_page_dirty(self.page.page);
    }

    /// Gives up the wrapper keeping both the lock and the reference, to
    /// hand them to another thread (readahead's worker); `from_raw` takes
    /// them back.
    #[inline]
    pub(crate) fn into_raw(self) -> &'a Page {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again, so the PageRef is
        // moved out exactly once.
        let page = unsafe { std::ptr::read(&me.page) };
        page.into_raw()
    }

    /// Wraps a page whose lock and one reference the caller holds.
    ///
    /// # Safety
    /// The caller owns the page's lock bit and one reference (as
    /// [`LockedPage::into_raw`] left them) and hands both to the result:
    /// nobody else may unlock the page or drop that reference.
    #[inline]
    pub(crate) unsafe fn from_raw(page: &'a Page, zone: &'a Zone) -> LockedPage<'a> {
        LockedPage { page: PageRef::from_raw(page, zone) }
    }

    /// Releases the lock, keeping the reference.
    #[doc(alias = "unlock_page")]
    #[inline]
    pub fn unlock(self) -> PageRef<'a> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again, so the PageRef is
        // moved out exactly once.
        let page = unsafe { std::ptr::read(&me.page) };
        wait::unlock_page(page.page);
        page
    }
}

impl<'a> Deref for LockedPage<'a> {
    type Target = PageRef<'a>;
    fn deref(&self) -> &PageRef<'a> {
        &self.page
    }
}

impl Drop for LockedPage<'_> {
    #[inline]
    fn drop(&mut self) {
        wait::unlock_page(self.page.page);
    }
}

impl fmt::Debug for LockedPage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockedPage").field(&self.page).finish()
    }
}
