//! The cleancache front end, following `mm/cleancache.c`: the calls the
//! page cache makes into the second tier (`tier::SecondTier`), keyed by
//! the mapping's file identity, counted, and guarded against a tier that
//! panics.
//!
//! Callers and their rules (docs/design.md, "The second tier"):
//! - `put` from reclaim, with the page locked, clean, uptodate and still in
//!   its file, so no write to it and no other page at its index can run
//!   beside the put;
//! - `get` from the read path into a new, locked, not-uptodate page in the
//!   tree (the read path verifies what it gets);
//! - the invalidations from every writer of bytes or sizes, before the new
//!   bytes can be seen through the tier.
//!
//! A change to a range of the file or its size (truncation, invalidation,
//! a stale open) is a window (`cleancache_begin_change`): the tier forgets
//! the pages before the cached ones are cut, so none dropped from memory
//! comes back, and again after, for puts of pages the walk had not
//! reached yet. While the window is open no page of the file is put or
//! got, and a put or get that overlaps its edges sees `tier_gen` move:
//! the put takes its page back out, the get reads the file instead. Pages
//! left cached because they were busy get `TIER_COPY`, so reclaim never
//! puts their (maybe stale) bytes.
//!
//! A tier that panics once is never called again (`Zone::tier_broken`):
//! an invalidation lost to a panic would let it serve stale bytes later.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::index::mapping::AddressSpace;
use crate::mem::page::{LockedPage, Page, PageFlags, TIER_COPY};
use crate::stats::Event;
use crate::sync::{AtomicU64, Ordering};
use crate::tier::{FileKey, SecondTier};

/// A put that no invalidation it overlaps can outlive: none while a
/// change window is open (`busy`: the bytes may be what the change is
/// making stale); else `put` stores the page in the tier, and if `gen`
/// moved while it ran (a range or file invalidation started), `undo`
/// takes the page back out, since the invalidation's own call into the
/// tier may have run before the put landed. Returns whether the page
/// stays. (loom models `tier_put_vs_invalidation`, `tier_get_vs_change`.)
pub(crate) fn guarded_put(busy: &AtomicU64, gen: &AtomicU64, put: impl FnOnce() -> bool, undo: impl FnOnce()) -> bool {
    busy.load(Ordering::SeqCst) == 0 && guarded_put_from(gen, gen.load(Ordering::SeqCst), put, undo)
}

/// `guarded_put` from a generation `before` read before the put began.
pub(crate) fn guarded_put_from(gen: &AtomicU64, before: u64, put: impl FnOnce() -> bool, undo: impl FnOnce()) -> bool {
    if !put() {
        return false;
    }
    if gen.load(Ordering::SeqCst) != before {
        undo();
        return false;
    }
    true
}

/// A get the tier may serve: none while a change window is open (`busy`),
/// and none whose bytes an invalidation overlapped (`gen` moved while
/// `get` ran); false means the caller reads the file. (loom model
/// `tier_get_vs_change`.)
pub(crate) fn guarded_get(busy: &AtomicU64, gen: &AtomicU64, get: impl FnOnce() -> bool) -> bool {
    let before = gen.load(Ordering::SeqCst);
    busy.load(Ordering::SeqCst) == 0 && get() && gen.load(Ordering::SeqCst) == before
}

/// Opens a change window: no put or get from here on (`busy`), and
/// `invalidate` runs as a `guarded_invalidate`.
pub(crate) fn open_window(busy: &AtomicU64, gen: &AtomicU64, invalidate: impl FnOnce()) {
    busy.fetch_add(1, Ordering::SeqCst);
    guarded_invalidate(gen, invalidate);
}

/// Closes a change window after `invalidate` ran once more (as a
/// `guarded_invalidate`).
pub(crate) fn close_window(busy: &AtomicU64, gen: &AtomicU64, invalidate: impl FnOnce()) {
    guarded_invalidate(gen, invalidate);
    busy.fetch_sub(1, Ordering::SeqCst);
}

/// An invalidation that every overlapping `guarded_put` sees: the
/// generation moves before the tier is called.
pub(crate) fn guarded_invalidate(gen: &AtomicU64, invalidate: impl FnOnce()) {
    gen.fetch_add(1, Ordering::SeqCst);
    invalidate();
}

impl AddressSpace {
    /// The tier and this file's key in it, when both exist and the tier
    /// has not failed.
    #[inline]
    fn tier(&self) -> Option<(&dyn SecondTier, FileKey)> {
        let tier = self.zone.tier.as_deref()?;
        // Acquire: pairs with the Release store of a failed call.
        if self.zone.tier_broken.load(Ordering::Acquire) {
            return None;
        }
        let key = (*self.tier_key.read())?;
        Some((tier, key))
    }

    /// Runs one call into the tier; a panic marks the tier broken (never
    /// called again) and yields `fallback`.
    fn tier_call<R>(&self, fallback: R, call: impl FnOnce() -> R) -> R {
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(r) => r,
            Err(_) => {
                self.zone.count(Event::TierPanics, 1);
                // Release: later callers see the tier gone.
                self.zone.tier_broken.store(true, Ordering::Release);
                fallback
            }
        }
    }

    /// Whether the second tier may hold pages of this file.
    pub(crate) fn may_be_tiered(&self) -> bool {
        // Relaxed: a hint (see `tiered`).
        self.tiered.load(Ordering::Relaxed)
    }

    /// Whether this file's pages go to the second tier.
    #[inline]
    pub(crate) fn has_tier(&self) -> bool {
        // Anonymous memory asks its frontswap tier the same way.
        self.anon.as_ref().map_or_else(|| self.tier().is_some(), |a| a.has_tier())
    }

    /// Offers a page reclaim is about to evict (`cleancache_put_page`).
    /// The caller holds the page lock and has checked it clean, uptodate,
    /// without a read error and still this file's. A page that came from
    /// the tier unchanged (`TIER_COPY`) is not put again: the tier holds
    /// its bytes, or dropped them as it may. Returns whether the tier kept it.
    pub(crate) fn cleancache_put(&self, page: &Page) -> bool {
        let Some((tier, key)) = self.tier() else { return false };
        if page.test(TIER_COPY) {
            return true;
        }
        let flags = page.flags();
        if flags.0 & (PageFlags::DIRTY.0 | PageFlags::WRITEBACK.0 | PageFlags::ERROR.0) != 0
            || flags.0 & PageFlags::UPTODATE.0 == 0
            || page.mapping_id() != self.id
        {
            return false;
        }
        // SAFETY: the caller holds the page lock, and every writer of a
        // page's bytes holds it (`LockedPage::data_mut`), so nothing
        // mutates the frame while this borrow lives; the frame is the
        // page's whole compound block, `page_size()` bytes.
        let data = unsafe { &*self.zone.frame(page) };
        debug_assert_eq!(data.len(), self.page_size());
        let index = page.index();
        let kept = guarded_put(
            &self.tier_busy,
            &self.tier_gen,
            || self.tier_call(false, || tier.put_page(&key, index, data)),
            || self.tier_call((), || tier.invalidate_page(&key, index)),
        );
        if kept {
            // Should the removal fail (someone took a reference), the page
            // stays with the tier holding its bytes: no second put.
            page.set(TIER_COPY);
            if !self.tiered.load(Ordering::Relaxed) {
                // Relaxed: read under the open-file table's lock only as a
                // hint to keep the mapping; a late store keeps it one more
                // round.
                self.tiered.store(true, Ordering::Relaxed);
            }
            self.zone.count(Event::TierPuts, 1);
        } else {
            self.zone.count(Event::TierRejects, 1);
        }
        kept
    }

    /// Fills a new, locked, not-uptodate page from the tier
    /// (`cleancache_get_page`); returns whether it hit. The caller verifies
    /// the bytes and marks the page uptodate. A hit leaves `TIER_COPY` set
    /// (cleared by any later change to the bytes).
    pub(crate) fn cleancache_get(&self, page: &mut LockedPage<'_>) -> bool {
        let Some((tier, key)) = self.tier() else { return false };
        let index = page.index();
        // Not while a change window is open, and not bytes an
        // invalidation overlapped: the file is read instead (a page in
        // the tier is clean, so the file holds it too).
        let hit = guarded_get(&self.tier_busy, &self.tier_gen, || {
            let out = page.data_mut();
            self.tier_call(false, || tier.get_page(&key, index, out))
        });
        if hit {
            self.zone.count(Event::TierHits, 1);
            if !self.tier_call(false, || tier.exclusive_gets()) {
                page.page().set(TIER_COPY);
            }
        } else {
            self.zone.count(Event::TierMisses, 1);
        }
        hit
    }

    /// Offers every clean, uptodate page of the file still in memory to a
    /// tier that outlives the cache (the cache is being dropped), so the
    /// next cache on the same tier finds them: reclaim only ever offered
    /// the pages it evicted. A put the tier refuses for being busy is
    /// tried once more after the tier has written what it buffered.
    pub(crate) fn cleancache_put_resident(&self) {
        let Some((tier, _)) = self.tier() else { return };
        if !self.tier_call(false, || tier.persists()) {
            return;
        }
        const BATCH: usize = 64;
        let mut index = 0;
        loop {
            let pages = self.find_get_pages(index, BATCH);
            let Some(last) = pages.last().map(|p| p.index()) else { break };
            for page in pages {
                let Ok(locked) = page.try_lock() else { continue };
                let p = locked.page();
                let clean = p.flags().0 & (PageFlags::DIRTY.0 | PageFlags::WRITEBACK.0 | PageFlags::ERROR.0) == 0
                    && p.test(PageFlags::UPTODATE);
                if clean && !self.cleancache_put(p) {
                    self.tier_call((), || tier.flush_puts());
                    self.cleancache_put(p);
                }
            }
            if last == u64::MAX {
                break;
            }
            index = last + 1;
        }
        self.tier_call((), || tier.flush_puts());
    }

    /// Forgets page `index` of this file in the tier
    /// (`cleancache_invalidate_page`).
    pub(crate) fn cleancache_invalidate_page(&self, index: u64) {
        let Some((tier, key)) = self.tier() else { return };
        self.zone.count(Event::TierInvalidations, 1);
        self.tier_call((), || tier.invalidate_page(&key, index));
    }

    /// Opens a change to pages `[start, end)` (`None`: the whole file)
    /// that the tier must not serve across (a truncation, an invalidation
    /// of pages the file changed under): the tier forgets them now and
    /// again when the returned guard drops, and while it lives no page of
    /// the file is put to or taken from the tier (`tier_busy`). Without
    /// the window, a put landing between the two invalidations (after the
    /// first, of bytes the change then made stale) could be read back by
    /// a reader before the second took it: a truncated page came back
    /// with its old bytes past the new end, which a later growth exposed
    /// (found by the soak test: a file differing from its model after a
    /// good sync, from the truncation point on).
    pub(crate) fn cleancache_begin_change(&self, range: Option<(u64, u64)>) -> TierChange<'_> {
        let change = TierChange { m: self, range };
        open_window(&self.tier_busy, &self.tier_gen, || change.invalidate_tier());
        change
    }

    /// Forgets every page of this file in the tier
    /// (`cleancache_invalidate_inode`).
    pub(crate) fn cleancache_invalidate_file(&self) {
        let Some((tier, key)) = self.tier() else { return };
        // Relaxed: a hint (see `tiered`); cleared before the call, so a put
        // that lands after the call sets it again.
        self.tiered.store(false, Ordering::Relaxed);
        self.zone.count(Event::TierInvalidations, 1);
        guarded_invalidate(&self.tier_gen, || self.tier_call((), || tier.invalidate_file(&key)));
    }

    /// Gives the mapping its key in the tier (at open, or when revalidation
    /// found another file under the same inode number). Pages this file
    /// left in the tier under another page size are stale to this mapping
    /// (its writes never reach them): they go.
    pub(crate) fn set_tier_key(&self, key: Option<FileKey>) {
        *self.tier_key.write() = key;
        let Some((tier, key)) = self.tier() else { return };
        for shift in 12..=16u8 {
            if shift != key.page_shift {
                let other = FileKey { page_shift: shift, ..key };
                self.tier_call((), || tier.invalidate_file(&other));
            }
        }
    }
}

impl AddressSpace {
    /// Tells the tier the file was opened and found as `stat` says
    /// (after revalidation): a tier that outlives the process serves what
    /// it kept of the file only if the versions agree.
    pub(crate) fn cleancache_open_file(&self, stat: &crate::io::backing::FileStat) {
        let Some((tier, key)) = self.tier() else { return };
        let v = file_version(stat);
        self.tier_call((), || tier.open_file(&key, &v));
    }

    /// Tells the tier the cache's own writes (each of which invalidated
    /// the pages it changed) moved the file to `stat`.
    pub(crate) fn cleancache_file_written(&self, stat: &crate::io::backing::FileStat) {
        let Some((tier, key)) = self.tier() else { return };
        let v = file_version(stat);
        self.tier_call((), || tier.file_written(&key, &v));
    }
}

/// An open change window of a file's tier pages
/// (`AddressSpace::cleancache_begin_change`): dropping it invalidates
/// them again and closes the window.
pub(crate) struct TierChange<'a> {
    m: &'a AddressSpace,
    range: Option<(u64, u64)>,
}

impl TierChange<'_> {
    /// The tier's side of the invalidation (the generation moves in
    /// `open_window` / `close_window`).
    fn invalidate_tier(&self) {
        let m = self.m;
        let Some((tier, key)) = m.tier() else { return };
        m.zone.count(Event::TierInvalidations, 1);
        match self.range {
            Some((start, end)) if start < end => m.tier_call((), || tier.invalidate_range(&key, start, end)),
            Some(_) => {}
            None => {
                // Relaxed: a hint (see `tiered`).
                m.tiered.store(false, Ordering::Relaxed);
                m.tier_call((), || tier.invalidate_file(&key));
            }
        }
    }
}

impl Drop for TierChange<'_> {
    fn drop(&mut self) {
        // Puts of pages the change had not reached yet (and bytes it made
        // stale) go before the window closes.
        close_window(&self.m.tier_busy, &self.m.tier_gen, || self.invalidate_tier());
    }
}

/// The version of a file the tier keeps beside its pages.
fn file_version(stat: &crate::io::backing::FileStat) -> crate::tier::FileVersion {
    crate::tier::FileVersion { size: stat.size, mtime_ns: stat.mtime_ns, ctime_ns: stat.ctime_ns }
}

/// The tier key of a file the file system describes.
pub(crate) fn file_key(stat: &crate::io::backing::FileStat, page_shift: u32) -> FileKey {
    FileKey {
        dev: stat.dev,
        ino: stat.ino,
        generation: stat.btime_ns.map_or(0, |t| t as u64),
        page_shift: page_shift as u8,
    }
}
