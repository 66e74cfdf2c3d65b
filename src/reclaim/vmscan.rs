//! Page reclaim, following `mm/vmscan.c`: isolate pages from the inactive
//! tail, free the clean unreferenced ones through the refcount freeze, write
//! dirty ones out first (kswapd only), age the active list to keep the
//! inactive list large enough, and run it in an allocating thread that
//! finds no frame free (a batch, up to the high watermark), in a
//! background kswapd thread it wakes when that batch needs I/O, or directly
//! when the batch was lost to another thread.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::index::mapping::AddressSpace;
use crate::mem::page::{Page, PageFlags, PageRef, RA_FRESH};
use crate::mem::wait;
use crate::mem::zone::Zone;
use crate::reclaim::workingset;
use crate::stats::Event;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// Pages isolated from the LRU per batch.
pub(crate) const SWAP_CLUSTER_MAX: usize = 32;

/// Window pages one isolation moves to the main part without a contest
/// (the window over its share: the cache filled, or the share shrank).
/// They are not pages scanned: counted as such, the first reclaim of a
/// 4,000-frame cache spent its scans on them, freed too little and woke
/// kswapd, whose round then raced the reader's. A move is a few list
/// stores under the LRU lock; past this many, the round frees pages from
/// the window as if it were at its share, and later rounds move the rest.
const MOVE_MAX: usize = 1024;

/// How reclaim weighs file pages against anonymous memory (`get_scan_count`
/// and `lru_note_cost` in `mm/vmscan.c`, with the one LRU this cache keeps
/// for both): dropping a clean file page costs nothing now but a read if it
/// refaults; moving a dirty anonymous page out costs a store (compression,
/// or a write to the swap area) now and a load if it refaults. Each kind
/// keeps a cost: its misses (pages read back in: a file page from the
/// file, an anonymous one from the tier or the swap area), plus for
/// anonymous memory its stores. A
/// dirty anonymous page at the inactive tail is moved out with weight
/// `swappiness * total / anon_cost` against `(200 - swappiness) * total /
/// file_cost` for the clean file pages beside it, and otherwise rotated to
/// the head of the list, so file pages go first until they refault more
/// than anonymous memory costs. Costs halve once their sum passes a
/// quarter of memory, so the balance follows the workload. When the last
/// round freed no file page (nothing clean to take instead), anonymous
/// pages are never passed over.
pub(crate) struct Balance {
    swappiness: u64,
    anon_cost: AtomicU64,
    file_cost: AtomicU64,
    /// Weighted credit of the anonymous side (a deterministic draw).
    credit: AtomicU64,
    /// The last reclaim round freed a file page.
    file_freed: AtomicBool,
    /// File pages freed by the rounds running now.
    round_file: AtomicU64,
    decay_at: AtomicU64,
}

impl Balance {
    pub(crate) fn new(swappiness: u32) -> Balance {
        Balance {
            swappiness: u64::from(swappiness.min(200)),
            anon_cost: AtomicU64::new(0),
            file_cost: AtomicU64::new(0),
            credit: AtomicU64::new(0),
            file_freed: AtomicBool::new(false),
            round_file: AtomicU64::new(0),
            decay_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Sets the sum of costs at which both halve (a quarter of memory).
    pub(crate) fn set_size(&self, frames: usize) {
        // Relaxed: a heuristic's parameter.
        self.decay_at.store((frames as u64 / 4).max(64), Ordering::Relaxed);
    }

    /// Adds to a kind's cost (`lru_note_cost`).
    pub(crate) fn note(&self, anon: bool, n: u64) {
        // Relaxed throughout: a heuristic; a lost update shifts the
        // balance by one event.
        let (c, other) = if anon { (&self.anon_cost, &self.file_cost) } else { (&self.file_cost, &self.anon_cost) };
        let now = c.fetch_add(n, Ordering::Relaxed) + n;
        if now + other.load(Ordering::Relaxed) > self.decay_at.load(Ordering::Relaxed) {
            c.store(now / 2, Ordering::Relaxed);
            other.store(other.load(Ordering::Relaxed) / 2, Ordering::Relaxed);
        }
    }

    /// Whether reclaim moves this dirty anonymous page out now (else it
    /// rotates and a file page goes in its place).
    pub(crate) fn take_anon(&self) -> bool {
        // Relaxed throughout: a heuristic (see `note`).
        if !self.file_freed.load(Ordering::Relaxed) || self.swappiness >= 200 {
            return true;
        }
        let a = self.anon_cost.load(Ordering::Relaxed) + 1;
        let f = self.file_cost.load(Ordering::Relaxed) + 1;
        let total = a + f;
        let ap = self.swappiness * total / a;
        let fp = (200 - self.swappiness) * total / f;
        if ap == 0 {
            return false;
        }
        let credit = self.credit.fetch_add(ap, Ordering::Relaxed) + ap;
        if credit >= ap + fp {
            self.credit.fetch_sub(ap + fp, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The costs now (anonymous, file), for tests and statistics.
    pub(crate) fn costs(&self) -> (u64, u64) {
        // Relaxed: statistics.
        (self.anon_cost.load(Ordering::Relaxed), self.file_cost.load(Ordering::Relaxed))
    }
}

/// Who reclaims: the background thread may write dirty pages; an
/// allocating thread does not (it wakes the flusher instead).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Reclaimer {
    Kswapd,
    Direct,
    /// `PageCache::shrink`: clean pages only.
    Shrink,
    /// An allocating thread that found no frame free
    /// (`reclaim_on_alloc`): as `Direct`, but dirty anonymous pages are
    /// left to kswapd, which compresses and writes them on another core.
    Light,
    /// A writer of anonymous memory over its share of the frames
    /// (`io::anon::charge_dirty`): as `Direct`, and dirty anonymous pages
    /// go whatever the balance says.
    AnonLimit,
}

enum Verdict {
    Ready,
    Keep,
    /// A dirty page of anonymous memory to swap out with the others of
    /// its batch (`io::anon::pageout_batch`: the tier first, the rest in
    /// one write).
    SwapOut,
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

    /// Frees up to `nr` frames, scanning up to the whole LRU once; returns
    /// how many were freed (a large page frees all its frames).
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
            // A batch of at most what is still wanted, in frames (one
            // large page at least): 32 pages of 64 KiB would free 16x the
            // frames asked for and evict read-ahead pages before their use.
            let batch = self.isolate_inactive(SWAP_CLUSTER_MAX, (nr - freed).clamp(1, SWAP_CLUSTER_MAX), who);
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
        // Relaxed: a heuristic (`Balance`): whether this round found clean
        // file pages to take is what the next one goes by.
        let file = self.balance.round_file.swap(0, Ordering::Relaxed);
        self.balance.file_freed.store(file > 0, Ordering::Relaxed);
        if who != Reclaimer::Shrink {
            self.lru.on_reclaim(&self.counters, freed);
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

    /// Takes up to `nr` pages holding up to `frames` frames (at least one
    /// page) off the inactive tail, each with a reference and with its LRU
    /// stamp. Each window page reached there first meets the main part's
    /// victim (`Lru::window_tail`, W-TinyLFU's admission), unless `shrink`
    /// drops pages on request: that takes the inactive list as it is.
    fn isolate_inactive(&self, nr: usize, frames: usize, who: Reclaimer) -> Vec<(u32, u64)> {
        let mut out = Vec::with_capacity(nr);
        let mut lists = self.lru.lock();
        let mut pfn = lists.inactive_tail();
        let mut scanned = 0;
        let mut taken = 0usize;
        let mut moved = 0usize;
        while out.len() < nr && taken < frames && scanned < 4 * nr {
            if pfn == crate::mem::page::NO_PFN {
                // The window is empty (its share can round to no page in a
                // small cache): the main part's CLOCK victim goes, one page
                // at a time, not a batch of aged pages.
                if who == Reclaimer::Shrink {
                    break;
                }
                pfn = self.lru.demote_main_victim(&mut lists, &self.pages, &self.counters);
                if pfn == crate::mem::page::NO_PFN {
                    break;
                }
            }
            if who != Reclaimer::Shrink {
                // Past `MOVE_MAX` moves, the rest of the window's excess
                // waits for the next rounds, and this one frees its pages.
                let remaining = if moved < MOVE_MAX { frames - taken } else { usize::MAX };
                let Some(take) = self.lru.window_tail(&mut lists, &self.pages, &self.counters, pfn, remaining) else {
                    // Moved to the main part: not a page scanned.
                    moved += 1;
                    pfn = lists.inactive_tail();
                    continue;
                };
                pfn = take;
            }
            scanned += 1;
            let prev = crate::reclaim::lru::LruLists::prev(&self.pages, pfn);
            let page = self.pfn_to_page(pfn);
            if page.get_page_unless_zero() {
                lists.del(&self.pages, pfn);
                out.push((pfn, self.lru.shadow_stamp(&lists, pfn)));
                taken += 1 << self.compound_order(page);
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
        let mut swap: Vec<(u32, u64)> = Vec::new();
        for (pfn, stamp) in batch {
            let page = self.pfn_to_page(pfn);
            if page.test(PageFlags::ACTIVE) || !wait::trylock_page(page) {
                keep.push(pfn);
                continue;
            }
            let id = page.mapping_id();
            if last.as_ref().is_none_or(|m| m.id != id) {
                if let Some(m) = last.take() {
                    self.swap_out_batch(&m, &mut swap, &mut run, keep);
                    freed += self.remove_run(&m, &mut run, who, keep);
                }
                last = self.mapping(id);
            }
            let ready = match &last {
                Some(m) => self.prepare_locked_page(m, page, who),
                None => Verdict::Keep,
            };
            match ready {
                Verdict::Ready => {
                    // Clean now: offer it to the second tier while it is
                    // locked and still in its file (cleancache's put in
                    // `__delete_from_page_cache`), not for `shrink`.
                    if who != Reclaimer::Shrink {
                        if let Some(m) = &last {
                            m.cleancache_put(page);
                        }
                    }
                    run.push((pfn, stamp))
                }
                Verdict::Keep => {
                    wait::unlock_page(page);
                    keep.push(pfn);
                }
                Verdict::SwapOut => swap.push((pfn, stamp)),
            }
        }
        if let Some(m) = last {
            self.swap_out_batch(&m, &mut swap, &mut run, keep);
            freed += self.remove_run(&m, &mut run, who, keep);
        }
        freed
    }

    /// Swaps out the locked, dirty pages of anonymous memory gathered from
    /// one batch: those stored go on to `run` (clean now), the others are
    /// unlocked into `keep`, still dirty.
    fn swap_out_batch(
        &self,
        m: &AddressSpace,
        swap: &mut Vec<(u32, u64)>,
        run: &mut Vec<(u32, u64)>,
        keep: &mut Vec<u32>,
    ) {
        if swap.is_empty() {
            return;
        }
        let Some(anon) = &m.anon else {
            unreachable!("a swap-out batch of a file's pages");
        };
        let pages: Vec<&Page> = swap.iter().map(|&(pfn, _)| self.pfn_to_page(pfn)).collect();
        let done = crate::io::anon::pageout_batch(m, anon, &pages);
        for (&(pfn, stamp), ok) in swap.iter().zip(done) {
            if ok {
                run.push((pfn, stamp));
            } else {
                wait::unlock_page(self.pfn_to_page(pfn));
                keep.push(pfn);
            }
        }
        swap.clear();
    }

    /// Whether a locked, isolated page can be removed now: not under
    /// writeback, and clean (kswapd writes a dirty one out first; other
    /// reclaimers wake the flusher and keep it).
    fn prepare_locked_page(&self, mapping: &AddressSpace, page: &Page, who: Reclaimer) -> Verdict {
        if page.test(PageFlags::WRITEBACK) {
            return Verdict::Keep;
        }
        if page.test(PageFlags::DIRTY) {
            if mapping.anon.is_some() {
                // Anonymous memory: only reclaim moves it out, and an
                // allocating thread does so too (a store into the tier
                // or one write to the swap area), unless the balance
                // gives this round to file pages.
                if who == Reclaimer::Shrink || (who != Reclaimer::AnonLimit && self.swap_backing_off()) {
                    return Verdict::Keep;
                }
                if who == Reclaimer::Light {
                    self.wake_kswapd();
                    return Verdict::Keep;
                }
                if who != Reclaimer::AnonLimit && !self.balance.take_anon() {
                    self.count(Event::AnonRotations, 1);
                    return Verdict::Keep;
                }
                return Verdict::SwapOut;
            }
            if who != Reclaimer::Kswapd {
                // Dirty pages at the tail: the flusher writes them in
                // order, and kswapd pages them out if they are still there
                // (an allocating thread never does I/O in reclaim).
                self.flusher.wake();
                if matches!(who, Reclaimer::Direct | Reclaimer::Light) {
                    self.wake_kswapd();
                }
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
            // dropped on request by `shrink`, nor for pages readahead
            // brought in that nobody read: their stamp dates an addition,
            // not a use, and the policy would take their return for reuse;
            // `tests/reclaim.rs`, `pages_evicted_unread_leave_no_shadow`).
            let (kind, stamp) = (workingset::Kind::of(stamp), workingset::Kind::strip(stamp));
            if who != Reclaimer::Shrink
                && !page.test(RA_FRESH)
                && (kind != workingset::Kind::Plain || workingset::in_test_period(stamp, hand))
            {
                self.shadows.remember(mapping.id, page.index(), stamp, kind);
            }
            // Count is 0 and the page is off the LRU: straight back to the pool.
            let order = self.compound_order(page) as usize;
            self.buddy.free(&self.pages, pfn, order, false);
            freed += 1 << order;
        }
        run.clear();
        if freed > 0 {
            if mapping.anon.is_some() {
                self.count(Event::AnonReclaims, freed as u64);
            } else {
                self.count(Event::FileReclaims, freed as u64);
                // Relaxed: a heuristic (`Balance`).
                self.balance.round_file.fetch_add(freed as u64, Ordering::Relaxed);
            }
        }
        freed
    }
}

/// The kswapd thread: sleeps until an allocation wakes it, then
/// reclaims until the high watermark is met or nothing more can be freed.
pub(crate) fn kswapd(zone: Arc<Zone>) {
    loop {
        let woken = zone.kswapd.sleep(Duration::from_millis(200));
        // Acquire: pairs with the Release store at shutdown.
        if zone.shutting_down.load(Ordering::Acquire) {
            return;
        }
        if !woken {
            // The timeout, not a wake: reclaim only when an allocation
            // asked (`reclaim_on_alloc`). Topping up to the high watermark
            // every 200 ms took pages on the clock and not on demand, so the
            // same trace replayed through one thread evicted different pages
            // from run to run.
            continue;
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
    /// Allocates one frame with one reference, reclaiming a batch first
    /// when none is free. Fails with `OutOfMemory` after a bounded effort
    /// when every page is pinned.
    #[inline]
    pub(crate) fn alloc_page(&self) -> io::Result<PageRef<'_>> {
        self.make_room(1);
        if let Ok(pfn) = self.buddy.alloc(&self.pages, 0) {
            return Ok(self.make_live(pfn));
        }
        self.alloc_page_slow()
    }

    /// Reclaims a batch when fewer than `frames` frames are free (none,
    /// for one page): the check every allocation makes first.
    #[inline]
    fn make_room(&self, frames: usize) {
        if self.buddy.nr_free() < frames {
            self.reclaim_on_alloc(frames);
        }
    }

    /// No frame free (fewer than `frames` for a large page): reclaim a
    /// batch of clean pages (`frames` at least) right here, on this core,
    /// and wake kswapd only for what needs I/O. Handing every batch to
    /// kswapd on the other core cost a wakeup and a round of cache line
    /// transfers per batch (measured: 2.3x pread on the miss path). The
    /// scan is bounded (4 batches): when the inactive tail is dirty,
    /// scanning the whole LRU on every allocation cost more than the
    /// allocation itself; kswapd and the flusher deal with dirty pages.
    #[cold]
    fn reclaim_on_alloc(&self, frames: usize) {
        let batch = self.watermarks.batch(SWAP_CLUSTER_MAX).max(frames);
        let freed = self.shrink_lists_scan(batch, Reclaimer::Light, 4 * SWAP_CLUSTER_MAX);
        if freed < batch.div_ceil(2) {
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
                return Err(self.full_error("every page is pinned, dirty or locked".into()));
            }
            // Writeback may be about to free pages; give it a moment.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether a swap-out failed moments ago (1 ms): reclaim then leaves
    /// dirty anonymous pages alone for that long instead of retrying the
    /// write for every page it meets (a failing device took 42,000
    /// attempts per failed write in the tests).
    #[inline]
    pub(crate) fn swap_backing_off(&self) -> bool {
        // Relaxed: a hint; with no failure ever, no lock per page.
        self.swap_failures.load(Ordering::Relaxed) != 0
            && self.swap_error.lock().as_ref().is_some_and(|(_, _, at)| at.elapsed() < Duration::from_millis(1))
    }

    /// Keeps a failed swap-out's error for the allocations and writers
    /// that wait on reclaim.
    #[cold]
    pub(crate) fn note_swap_error(&self, e: &io::Error) {
        *self.swap_error.lock() = Some((e.kind(), e.to_string(), std::time::Instant::now()));
        // Relaxed: see `io::anon::charge_dirty_slow`.
        self.swap_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The error of an allocation reclaim could not serve: `OutOfMemory`,
    /// or the swap area's error (`StorageFull`, an I/O error) when
    /// anonymous memory could not be swapped out.
    #[cold]
    fn full_error(&self, why: String) -> io::Error {
        match &*self.swap_error.lock() {
            Some((kind, msg, _)) => {
                io::Error::new(*kind, format!("page cache full: anonymous memory cannot be swapped out: {msg}"))
            }
            None => io::Error::new(io::ErrorKind::OutOfMemory, format!("page cache full: {why}")),
        }
    }

    /// One frame without waiting (readahead's `__GFP_NORETRY`): the free
    /// lists, then one round of direct reclaim.
    pub(crate) fn try_alloc_page(&self) -> io::Result<PageRef<'_>> {
        self.make_room(1);
        if let Ok(pfn) = self.buddy.alloc(&self.pages, 0) {
            return Ok(self.make_live(pfn));
        }
        self.direct_reclaim(SWAP_CLUSTER_MAX);
        self.buddy.alloc(&self.pages, 0).map(|pfn| self.make_live(pfn))
    }

    /// Allocates a compound block of 2^order frames (`alloc_pages`): the
    /// head carries one reference and its order; it is freed whole when the
    /// last reference drops. Reclaims as `alloc_page` does, and when free
    /// frames suffice but no block that large is free, frees one block by
    /// reclaiming the pages inside it (`reclaim_block`). Fails with
    /// `OutOfMemory` after the same bounded effort as `alloc_page`.
    pub(crate) fn alloc_pages(&self, order: usize) -> io::Result<PageRef<'_>> {
        if order == 0 {
            return self.alloc_page();
        }
        if order > crate::mem::buddy::MAX_ORDER {
            return self.alloc_block(order); // InvalidInput
        }
        self.make_room(1 << order);
        if self.buddy.nr_free() >= 1 << order {
            if let Ok(page) = self.alloc_block(order) {
                return Ok(page);
            }
        }
        self.alloc_pages_slow(order, true)
    }

    /// `alloc_pages` without waiting (readahead's `__GFP_NORETRY`): the
    /// free lists, then one round of reclaim.
    pub(crate) fn try_alloc_pages(&self, order: usize) -> io::Result<PageRef<'_>> {
        if order == 0 {
            return self.try_alloc_page();
        }
        self.make_room(1 << order);
        if let Ok(page) = self.alloc_block(order) {
            return Ok(page);
        }
        self.alloc_pages_slow(order, false)
    }

    #[cold]
    fn alloc_pages_slow(&self, order: usize, wait: bool) -> io::Result<PageRef<'_>> {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        loop {
            // Too few free frames: reclaim in LRU order first (a block's
            // worth at least). Enough frames but fragmented: aim at a block.
            let want = (1usize << order).max(SWAP_CLUSTER_MAX);
            if self.buddy.nr_free() < want {
                self.direct_reclaim(want);
                if let Ok(page) = self.alloc_block(order) {
                    return Ok(page);
                }
            }
            if self.reclaim_block(order) {
                if let Ok(page) = self.alloc_block(order) {
                    return Ok(page);
                }
            }
            if !wait || std::time::Instant::now() >= deadline {
                return Err(self.full_error(format!(
                    "no free block of {} KiB, and every candidate holds a pinned, dirty or locked page",
                    4 << order
                )));
            }
            // Writeback may be about to clean pages; give it a moment.
            self.flusher.wake();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Candidate blocks one `reclaim_block` looks at, at most.
const BLOCK_SCAN: usize = 64;

/// Reclaim aimed at one block (the kernel's compaction does this by moving
/// pages; lumpy reclaim, before it, by evicting them): when an order-k
/// allocation fails though free frames suffice, pick the aligned block of
/// 2^k frames that is cheapest to empty and evict the clean, idle pages
/// inside it, so that it merges whole in the buddy lists.
impl Zone {
    /// Tries to free one block of 2^order frames; true if a block was
    /// emptied (the caller allocates next, and may race another thread for
    /// it). Looks at up to `BLOCK_SCAN` candidates from a cursor that moves
    /// on every call, and evicts at most one block's worth of pages, so one
    /// call costs at most 64 block scans and 2^order evictions, and the
    /// cache never empties for it. A candidate qualifies when every frame
    /// in it is free or belongs to a page that is unlocked, not under
    /// writeback, on an LRU list and held by the cache alone; among those it
    /// takes the one with the fewest frames in use, counting active pages
    /// four times (a hot page is dearer to lose) and dirty ones sixteen
    /// (they are written out first, here, at most one block's worth).
    pub(crate) fn reclaim_block(&self, order: usize) -> bool {
        // Pages waiting in LRU add batches hold a reference and are on no
        // list yet: put them on their lists, where they can be evicted.
        self.lru.drain(self);
        // Frames parked in per-thread lists can complete a block.
        self.buddy.drain_pcp(&self.pages);
        let span = 1usize << order;
        let nr_blocks = self.nr_frames() / span;
        if nr_blocks == 0 {
            return false;
        }
        // Relaxed: a scan position; any value is a valid start.
        let start = self.block_cursor.fetch_add(BLOCK_SCAN, Ordering::Relaxed);
        let scan = BLOCK_SCAN.min(nr_blocks);
        let mut best: Option<(usize, u32)> = None;
        for i in 0..scan {
            let block = (start + i) % nr_blocks;
            let first = (block * span) as u32;
            match self.block_cost(first, span as u32) {
                Some(0) => {
                    // Free already (a race, or the per-thread drain): done.
                    self.count(Event::BlockReclaimScanned, i as u64 + 1);
                    return true;
                }
                Some(c) if best.is_none_or(|(_, b)| c < b) => best = Some((block, c)),
                _ => {}
            }
        }
        self.count(Event::BlockReclaimScanned, scan as u64);
        let Some((block, _)) = best else {
            self.count(Event::BlockReclaimFailures, 1);
            return false;
        };
        let first = (block * span) as u32;
        let mut pfn = first;
        let mut emptied = true;
        let mut evicted = 0u64;
        while pfn < first + span as u32 {
            if let Some(o) = crate::mem::buddy::Buddy::free_block_at(&self.pages, pfn) {
                pfn += 1 << o.min(order);
                continue;
            }
            let page = self.pfn_to_page(pfn);
            let step = 1u32 << self.compound_order(page).min(order as u32);
            if self.evict_one(page) {
                evicted += 1;
            } else {
                emptied = false;
            }
            pfn += step;
        }
        self.count(Event::BlockReclaimPages, evicted);
        self.count(Event::Evictions, evicted);
        self.count(if emptied { Event::BlockReclaims } else { Event::BlockReclaimFailures }, 1);
        emptied
    }

    /// What emptying the block of `span` frames at `first` would cost, or
    /// `None` if some frame in it cannot be freed now (a racy look: the
    /// eviction re-checks everything under the locks).
    fn block_cost(&self, first: u32, span: u32) -> Option<u32> {
        const BUSY: u32 = PageFlags::LOCKED.0 | PageFlags::WRITEBACK.0 | PageFlags::TAIL.0;
        let mut cost = 0;
        let mut pfn = first;
        while pfn < first + span {
            if let Some(o) = crate::mem::buddy::Buddy::free_block_at(&self.pages, pfn) {
                pfn += 1 << o.min(span.trailing_zeros() as usize);
                continue;
            }
            let page = self.pfn_to_page(pfn);
            // Relaxed: a hint (see above).
            let flags = page.flags.load(Ordering::Relaxed);
            if flags & BUSY != 0 || flags & PageFlags::LRU.0 == 0 || page.mapping_id() == 0 || page.page_count() != 1 {
                return None;
            }
            let frames = 1u32 << self.compound_order(page);
            if frames > span {
                return None;
            }
            // A dirty page must be written first: dearest. An active one
            // is likely wanted again soon.
            cost += if flags & PageFlags::DIRTY.0 != 0 {
                16 * frames
            } else if flags & PageFlags::ACTIVE.0 != 0 {
                4 * frames
            } else {
                frames
            };
            pfn += frames;
        }
        Some(cost)
    }

    /// Evicts one page for `reclaim_block` if it is still clean, idle and
    /// its file's: off the LRU, locked, removed from its tree with the
    /// count frozen, and freed straight to the free lists so the block
    /// merges. True if it went.
    fn evict_one(&self, page: &Page) -> bool {
        if !page.get_page_unless_zero() {
            return false;
        }
        let pfn = self.page_to_pfn(page);
        {
            let mut lists = self.lru.lock();
            if !page.test(PageFlags::LRU) {
                drop(lists);
                self.put_page(page);
                return false;
            }
            lists.del(&self.pages, pfn);
        }
        let mapping = match wait::trylock_page(page) {
            true => self.mapping(page.mapping_id()),
            false => {
                self.putback(vec![pfn]);
                return false;
            }
        };
        let mut removed = Vec::with_capacity(1);
        if let Some(m) = &mapping {
            // A dirty page in the block is written out here, as kswapd's
            // pageout does (the log rule holds: `pageout` leaves a page
            // whose log is behind): otherwise a few dirty pages, one in each
            // block, would keep every large allocation failing.
            if page.test(PageFlags::DIRTY) && !page.test(PageFlags::WRITEBACK) {
                page.set(PageFlags::RECLAIM);
                crate::io::writeback::pageout(m, page);
                page.clear(PageFlags::RECLAIM);
            }
            if !page.test(PageFlags::DIRTY) && !page.test(PageFlags::WRITEBACK) {
                m.remove_mapping_many(std::iter::once(page), &mut removed);
            }
        }
        if removed.first() != Some(&true) {
            wait::unlock_page(page);
            self.putback(vec![pfn]);
            return false;
        }
        // Off its tree with a count of 0: nobody can find or pin it.
        wait::unlock_page(page);
        let order = self.compound_order(page) as usize;
        self.buddy.free_merging(&self.pages, pfn, order);
        true
    }
}
