//! Page reclaim, following `mm/vmscan.c`: isolate pages from the inactive
//! tail, free the clean unreferenced ones through the refcount freeze, write
//! dirty ones out first (kswapd only), age the active list to keep the
//! inactive list large enough, and run it from a background kswapd thread
//! (free frames below the low watermark, up to the high one) or directly in
//! an allocating thread (below min).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::index::mapping::AddressSpace;
use crate::mem::page::{Page, PageFlags, PageRef};
use crate::mem::wait;
use crate::mem::zone::Zone;
use crate::reclaim::workingset;
use crate::stats::Event;
use crate::sync::Ordering;

/// Pages isolated from the LRU per batch.
pub(crate) const SWAP_CLUSTER_MAX: usize = 32;

/// Who reclaims: the background thread may write dirty pages; an
/// allocating thread does not (it wakes the flusher instead).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Reclaimer {
    Kswapd,
    Direct,
    /// `PageCache::shrink`: clean pages only.
    Shrink,
}

enum Verdict {
    Ready,
    Keep,
}

impl Zone {
    /// Wakes kswapd (cheap when it is already awake).
    #[inline]
    pub(crate) fn wake_kswapd(&self) {
        self.kswapd.wake();
    }

    /// Direct reclaim in the allocating thread.
    #[cold]
    pub(crate) fn direct_reclaim(&self, nr: usize) -> usize {
        self.shrink_lists(nr, Reclaimer::Direct)
    }

    /// Frees up to `nr` pages, scanning up to the whole LRU once; returns
    /// how many were freed.
    pub(crate) fn shrink_lists(&self, nr: usize, who: Reclaimer) -> usize {
        self.shrink_lists_scan(nr, who, usize::MAX)
    }

    /// Frees up to `nr` pages, looking at no more than `max_scan` pages
    /// (and at most the whole LRU once); returns how many were freed.
    pub(crate) fn shrink_lists_scan(&self, nr: usize, who: Reclaimer, max_scan: usize) -> usize {
        self.lru.drain(self);
        let total = {
            let l = self.lru.lock();
            l.active.len + l.inactive.len
        }
        .min(max_scan);
        let mut freed = 0;
        let mut scanned = 0;
        while freed < nr && scanned <= total {
            {
                let mut lists = self.lru.lock();
                // Keep the inactive list at its share (`INACTIVE_RATIO`).
                if lists.inactive_is_low() {
                    let deficit = lists.inactive_deficit();
                    self.lru.age_active(&mut lists, &self.pages, deficit.clamp(1, SWAP_CLUSTER_MAX));
                }
            }
            let batch = self.isolate_inactive(SWAP_CLUSTER_MAX);
            if batch.is_empty() {
                let moved = self.lru.age_active(&mut self.lru.lock(), &self.pages, SWAP_CLUSTER_MAX);
                if moved == 0 {
                    break;
                }
                scanned += moved;
                continue;
            }
            scanned += batch.len();
            let scanned_batch = batch.len();
            let mut keep = Vec::with_capacity(batch.len());
            freed += self.shrink_page_list(batch, who, &mut keep);
            let stuck = keep.len() == scanned_batch;
            self.putback(keep);
            if stuck {
                // Nothing on the inactive tail can go now (dirty, locked,
                // under writeback): age the active list so its clean pages
                // get their turn.
                self.lru.age_active(&mut self.lru.lock(), &self.pages, SWAP_CLUSTER_MAX);
            }
        }
        if freed > 0 {
            let e = match who {
                Reclaimer::Kswapd => Event::KswapdReclaims,
                _ => Event::DirectReclaims,
            };
            self.count(e, freed as u64);
            self.count(Event::Evictions, freed as u64);
        }
        freed
    }

    /// Takes up to `nr` pages off the inactive tail, each with a reference
    /// and with its LRU stamp.
    fn isolate_inactive(&self, nr: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::with_capacity(nr);
        let mut lists = self.lru.lock();
        let mut pfn = lists.inactive_tail();
        let mut scanned = 0;
        while pfn != crate::mem::page::NO_PFN && out.len() < nr && scanned < 4 * nr {
            scanned += 1;
            let prev = crate::reclaim::lru::LruLists::prev(&self.pages, pfn);
            let page = self.pfn_to_page(pfn);
            if page.get_page_unless_zero() {
                lists.del(&self.pages, pfn);
                out.push((pfn, lists.stamp(pfn)));
            }
            pfn = prev;
        }
        out
    }

    /// Puts isolated pages back on their lists and drops our references.
    fn putback(&self, pfns: Vec<u32>) {
        if pfns.is_empty() {
            return;
        }
        {
            let mut lists = self.lru.lock();
            for &pfn in &pfns {
                lists.add(&self.pages, pfn);
            }
        }
        for pfn in pfns {
            self.put_page(self.pfn_to_page(pfn));
        }
    }

    /// Frees what it can of a batch of isolated pages (`shrink_page_list`);
    /// the rest go to `keep`, unlocked. Pages are prepared one by one (page
    /// lock, writeback state, pageout), then removed from their mapping's
    /// tree a run at a time under one tree lock. Returns pages freed.
    fn shrink_page_list(&self, batch: Vec<(u32, u64)>, who: Reclaimer, keep: &mut Vec<u32>) -> usize {
        let mut freed = 0;
        // The mapping of the previous page: a batch is mostly one file's.
        let mut last: Option<Arc<AddressSpace>> = None;
        let mut run: Vec<(u32, u64)> = Vec::with_capacity(batch.len());
        for (pfn, stamp) in batch {
            let page = self.pfn_to_page(pfn);
            if page.test(PageFlags::ACTIVE) || !wait::trylock_page(page) {
                keep.push(pfn);
                continue;
            }
            let id = page.mapping_id();
            if last.as_ref().is_none_or(|m| m.id != id) {
                if let Some(m) = last.take() {
                    freed += self.remove_run(&m, &mut run, who, keep);
                }
                last = self.mapping(id);
            }
            let ready = match &last {
                Some(m) => self.prepare_locked_page(m, page, who),
                None => Verdict::Keep,
            };
            match ready {
                Verdict::Ready => run.push((pfn, stamp)),
                Verdict::Keep => {
                    wait::unlock_page(page);
                    keep.push(pfn);
                }
            }
        }
        if let Some(m) = last {
            freed += self.remove_run(&m, &mut run, who, keep);
        }
        freed
    }

    /// Whether a locked, isolated page can be removed now: not under
    /// writeback, and clean (kswapd writes a dirty one out first; other
    /// reclaimers wake the flusher and keep it).
    fn prepare_locked_page(&self, mapping: &AddressSpace, page: &Page, who: Reclaimer) -> Verdict {
        if page.test(PageFlags::WRITEBACK) {
            return Verdict::Keep;
        }
        if page.test(PageFlags::DIRTY) {
            if who != Reclaimer::Kswapd {
                self.flusher.wake();
                return Verdict::Keep;
            }
            // Page out: written with the page locked, then freed below.
            page.set(PageFlags::RECLAIM);
            let ok = crate::io::writeback::pageout(mapping, page);
            page.clear(PageFlags::RECLAIM);
            if !ok {
                return Verdict::Keep;
            }
        }
        Verdict::Ready
    }

    /// Removes a run of locked, prepared pages of `mapping` under one tree
    /// lock and frees those that went; the others are unlocked into `keep`.
    fn remove_run(
        &self,
        mapping: &AddressSpace,
        run: &mut Vec<(u32, u64)>,
        who: Reclaimer,
        keep: &mut Vec<u32>,
    ) -> usize {
        if run.is_empty() {
            return 0;
        }
        let mut removed = Vec::with_capacity(run.len());
        // Two references each: the page cache's and our isolation's.
        mapping.remove_mapping_many(run.iter().map(|&(pfn, _)| self.pfn_to_page(pfn)), &mut removed);
        let hand = self.lru.hand();
        let mut freed = 0;
        for (&(pfn, stamp), ok) in run.iter().zip(removed) {
            let page = self.pfn_to_page(pfn);
            if !ok {
                wait::unlock_page(page);
                keep.push(pfn);
                continue;
            }
            // Evicted inside its test period: leave a shadow (not for pages
            // dropped on request by `shrink`).
            if who != Reclaimer::Shrink && workingset::in_test_period(stamp, hand) {
                self.shadows.remember(mapping.id, page.index(), stamp);
            }
            // Count is 0 and the page is off the LRU: straight back to the pool.
            self.buddy.free(&self.pages, pfn, 0, false);
            freed += 1;
        }
        run.clear();
        freed
    }
}

/// The kswapd thread: sleeps until woken below the low watermark, then
/// reclaims until the high watermark is met or nothing more can be freed.
pub(crate) fn kswapd(zone: Arc<Zone>) {
    loop {
        zone.kswapd.sleep(Duration::from_millis(200));
        // Acquire: pairs with the Release store at shutdown.
        if zone.shutting_down.load(Ordering::Acquire) {
            return;
        }
        while zone.buddy.nr_free() < zone.watermarks.high {
            if zone.shrink_lists(SWAP_CLUSTER_MAX, Reclaimer::Kswapd) == 0 {
                break;
            }
        }
    }
}

/// The allocation entry points (`alloc_pages` and its slow path in
/// `mm/page_alloc.c`): they live with reclaim because below the
/// watermarks they run it. The buddy allocator itself (`Zone::alloc_block`)
/// is the memory layer's and never reclaims.
impl Zone {
    /// Allocates one frame with one reference, reclaiming if memory is low.
    /// Fails with `OutOfMemory` after a bounded effort when every page is pinned.
    #[inline]
    pub(crate) fn alloc_page(&self) -> io::Result<PageRef<'_>> {
        let free = self.buddy.nr_free();
        if free <= self.watermarks.low {
            self.reclaim_on_alloc();
        }
        if free > self.watermarks.min {
            if let Ok(pfn) = self.buddy.alloc(&self.pages, 0) {
                return Ok(self.make_live(pfn));
            }
        }
        self.alloc_page_slow()
    }

    /// Below the low watermark: reclaim a batch of clean pages right here,
    /// on this core, and wake kswapd only for what needs I/O. Handing every
    /// batch to kswapd on the other core cost a wakeup and a round of cache
    /// line transfers per batch (measured: 2.3x pread on the miss path).
    /// The scan is bounded (4 batches): when the inactive tail is dirty,
    /// scanning the whole LRU on every allocation cost more than the
    /// allocation itself; kswapd and the flusher deal with dirty pages.
    #[cold]
    fn reclaim_on_alloc(&self) {
        let freed = self.shrink_lists_scan(SWAP_CLUSTER_MAX, Reclaimer::Direct, 4 * SWAP_CLUSTER_MAX);
        if freed < SWAP_CLUSTER_MAX / 2 {
            self.wake_kswapd();
        }
    }

    #[cold]
    fn alloc_page_slow(&self) -> io::Result<PageRef<'_>> {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        loop {
            self.direct_reclaim(SWAP_CLUSTER_MAX);
            if let Ok(pfn) = self.buddy.alloc(&self.pages, 0) {
                return Ok(self.make_live(pfn));
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "page cache full: every page is pinned, dirty or locked",
                ));
            }
            // Writeback may be about to free pages; give it a moment.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One frame without waiting (readahead's `__GFP_NORETRY`): the free
    /// lists, then one round of direct reclaim.
    pub(crate) fn try_alloc_page(&self) -> io::Result<PageRef<'_>> {
        if self.buddy.nr_free() <= self.watermarks.low {
            self.reclaim_on_alloc();
        }
        if let Ok(pfn) = self.buddy.alloc(&self.pages, 0) {
            return Ok(self.make_live(pfn));
        }
        self.direct_reclaim(SWAP_CLUSTER_MAX);
        self.buddy.alloc(&self.pages, 0).map(|pfn| self.make_live(pfn))
    }

    /// Allocates a compound block of 2^order frames (`alloc_pages`): the
    /// head carries one reference and its order; it is freed whole when the
    /// last reference drops.
    pub(crate) fn alloc_pages(&self, order: usize) -> io::Result<PageRef<'_>> {
        if order == 0 {
            return self.alloc_page();
        }
        self.alloc_block(order)
    }
}
