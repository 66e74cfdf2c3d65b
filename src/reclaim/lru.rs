//! The active and inactive LRU lists, following `mm/swap.c`: two-touch
//! promotion (`mark_page_accessed`), and batched additions and activations so
//! the LRU lock is taken once per batch rather than once per page.
//!
//! Lists are doubly linked through the descriptors' `lru_prev`/`lru_next`
//! under the LRU lock; the head is the most recent end, the tail the oldest.
//! A page on a list carries `LRU` (and `ACTIVE` on the active list). The
//! lists hold no reference; a page waiting in an add or activate batch does.

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};

use crate::mem::page::{Page, PageFlags, NO_PFN};
use crate::mem::page::{FILL_INACTIVE, RA_FRESH};
use crate::mem::zone::{thread_slot, Zone};
use crate::reclaim::climber::{Climber, SHARE_ONE, SHARE_START};
use crate::reclaim::sketch::Sketch;
use crate::reclaim::workingset;
use crate::stats::{Counters, Event};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Pages a batch holds before it is drained (the kernel's `PAGEVEC_SIZE`).
pub const PAGEVEC_SIZE: usize = 14;

#[derive(Clone, Copy, Default)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    pub(crate) len: usize,
}

impl List {
    const EMPTY: List = List { head: NO_PFN, tail: NO_PFN, len: 0 };

    fn push_head(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        // Relaxed (all link stores in this impl): guarded by the LRU lock.
        p.lru_prev.store(NO_PFN, Ordering::Relaxed);
        p.lru_next.store(self.head, Ordering::Relaxed);
        if self.head == NO_PFN {
            self.tail = pfn;
        } else {
            pages[self.head as usize].lru_prev.store(pfn, Ordering::Relaxed);
        }
        self.head = pfn;
        self.len += 1;
    }

    fn unlink(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        let prev = p.lru_prev.load(Ordering::Relaxed);
        let next = p.lru_next.load(Ordering::Relaxed);
        if prev == NO_PFN {
            self.head = next;
        } else {
            pages[prev as usize].lru_next.store(next, Ordering::Relaxed);
        }
        if next == NO_PFN {
            self.tail = prev;
        } else {
            pages[next as usize].lru_prev.store(prev, Ordering::Relaxed);
        }
        p.lru_prev.store(NO_PFN, Ordering::Relaxed);
        p.lru_next.store(NO_PFN, Ordering::Relaxed);
        self.len -= 1;
    }

    fn iter<'p>(&self, pages: &'p [Page]) -> impl Iterator<Item = u32> + 'p {
        let mut pfn = self.head;
        std::iter::from_fn(move || {
            (pfn != NO_PFN).then(|| {
                let cur = pfn;
                pfn = pages[cur as usize].lru_next.load(Ordering::Relaxed);
                cur
            })
        })
    }
}

/// While the cache fills, pages asked for start active up to all but
/// 1/`INACTIVE_RATIO` of the frames, and a readahead window is at most half
/// of that share. Once reclaim runs, the inactive list's share is the
/// climber's (`climber`), from 1/32 to 1/8 of the pages on the lists, but
/// never below two readahead windows (up to 1/8). A small inactive list
/// lets the active list hold a loop nearly as large as the cache; refault
/// activation (`workingset`) gives new pages a second chance the inactive
/// list alone would not.
pub(crate) const INACTIVE_RATIO: usize = 8;

/// The two lists, under one lock, with the LRU stamps of CLOCK-Pro's test
/// period (see `workingset`).
pub(crate) struct LruLists {
    pub(crate) inactive: List,
    pub(crate) active: List,
    /// Per frame: when the page was added to the LRU, activated or last
    /// found referenced on the active list; 0 for a page demoted from the
    /// active list (it has no test period). The active list is ordered by
    /// stamp, oldest at the tail.
    stamps: Box<[u64]>,
    /// The next stamp; advances once per page added to the LRU.
    clock: u64,
    /// The stamp of the last active page the aging hand passed.
    hand: u64,
    /// The inactive list's share of the pages on the lists, in
    /// 1/`SHARE_ONE`s (set by the climber).
    share: u32,
    /// Pages the inactive list keeps whatever the share (two readahead
    /// windows, so a window is read before it is evicted), up to
    /// 1/`INACTIVE_RATIO` of the pages on the lists.
    min_inactive: usize,
}

impl LruLists {
    /// Whether the inactive list has fallen below its share.
    pub(crate) fn inactive_is_low(&self) -> bool {
        let total = self.inactive.len + self.active.len;
        self.inactive.len * (SHARE_ONE as usize) < total * self.share as usize
            || self.inactive.len < self.min_inactive.min(total / INACTIVE_RATIO)
    }

    /// Active pages to age to bring the inactive list back to its share.
    pub(crate) fn inactive_deficit(&self) -> usize {
        self.inactive_target().saturating_sub(self.inactive.len)
    }

    /// The pages the inactive list is kept at: its share of the pages on
    /// the lists, or the readahead floor.
    pub(crate) fn inactive_target(&self) -> usize {
        let total = self.inactive.len + self.active.len;
        (total * self.share as usize / SHARE_ONE as usize).max(self.min_inactive.min(total / INACTIVE_RATIO))
    }

    /// The page's LRU stamp.
    pub(crate) fn stamp(&self, pfn: u32) -> u64 {
        self.stamps[pfn as usize]
    }

    /// Puts a page on the list its ACTIVE flag names and sets LRU.
    pub(crate) fn add(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        assert!(!p.test(PageFlags::LRU), "page {pfn} already on an LRU list");
        if p.test(PageFlags::ACTIVE) {
            // The active list stays ordered by stamp.
            self.stamps[pfn as usize] = self.stamps[pfn as usize].max(self.clock - 1);
            self.active.push_head(pages, pfn);
        } else {
            self.inactive.push_head(pages, pfn);
        }
        p.set(PageFlags::LRU);
    }

    /// Takes a page off its list and clears LRU (ACTIVE is kept, as the kernel does).
    pub(crate) fn del(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        if p.test(PageFlags::ACTIVE) {
            self.active.unlink(pages, pfn);
        } else {
            self.inactive.unlink(pages, pfn);
        }
        p.clear(PageFlags::LRU);
    }

    /// The estimated frequency of the active list's oldest page (0 if the
    /// list is empty): what a page must beat to displace it.
    pub(crate) fn victim_frequency(&self, pages: &[Page], sketch: &Sketch) -> u32 {
        match self.active.tail {
            NO_PFN => 0,
            pfn => {
                let p = &pages[pfn as usize];
                sketch.frequency(workingset::hash(p.mapping_id(), p.index()))
            }
        }
    }

    /// Moves an inactive page to the active list.
    pub(crate) fn activate(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        if p.test(PageFlags::LRU) && !p.test(PageFlags::ACTIVE) {
            self.inactive.unlink(pages, pfn);
            p.set(PageFlags::ACTIVE);
            p.clear(PageFlags::REFERENCED);
            self.stamps[pfn as usize] = self.clock - 1;
            self.active.push_head(pages, pfn);
        }
    }

    /// The oldest inactive page.
    pub(crate) fn inactive_tail(&self) -> u32 {
        self.inactive.tail
    }

    /// The page before `pfn` on its list (towards the head).
    pub(crate) fn prev(pages: &[Page], pfn: u32) -> u32 {
        // Relaxed: guarded by the LRU lock the caller holds.
        pages[pfn as usize].lru_prev.load(Ordering::Relaxed)
    }

    /// Ages up to `nr` pages from the active tail: referenced ones get one
    /// more round on the active list (with a new stamp, and one more count
    /// in the frequency sketch), the rest move to
    /// the inactive head without a test period. The hand moves past each
    /// page it looks at, ending the test period of older shadows.
    pub(crate) fn shrink_active(&mut self, pages: &[Page], nr: usize, sketch: &Sketch) -> usize {
        let mut moved = 0;
        for _ in 0..nr {
            let pfn = self.active.tail;
            if pfn == NO_PFN {
                break;
            }
            let p = &pages[pfn as usize];
            self.active.unlink(pages, pfn);
            self.hand = self.hand.max(self.stamps[pfn as usize]);
            if p.test_and_clear(PageFlags::REFERENCED) {
                // Found referenced: one more use the sketch counts.
                sketch.increment(workingset::hash(p.mapping_id(), p.index()));
                self.stamps[pfn as usize] = self.clock - 1;
                self.active.push_head(pages, pfn);
            } else {
                p.clear(PageFlags::ACTIVE);
                self.stamps[pfn as usize] = 0;
                self.inactive.push_head(pages, pfn);
                moved += 1;
            }
        }
        moved
    }
}

/// A batch of frame numbers each holding one reference.
type Batch = Mutex<Vec<u32>>;

/// LRU lists plus the per-thread batches feeding them.
pub(crate) struct Lru {
    lists: Mutex<LruLists>,
    /// A copy of `LruLists::hand`, read without the lock by refaults.
    hand: AtomicU64,
    /// What a refault must beat to displace the active tail: the tail's
    /// estimated frequency when the hand last moved, worn down by one for
    /// each refault it turned away since (see `lru_cache_add`). Read and
    /// written without the lock.
    victim_freq: AtomicU32,
    /// How often pages came into the cache lately (TinyLFU).
    pub(crate) sketch: Sketch,
    /// Sets the inactive list's share from hit ratios.
    climber: Climber,
    add: Box<[CachePadded<Batch>]>,
    activate: Box<[CachePadded<Batch>]>,
}

impl Lru {
    /// Lists for `frames` frames whose inactive list keeps at least
    /// `min_inactive` pages (two readahead windows; see `min_inactive`).
    pub(crate) fn new(shards: usize, frames: usize, min_inactive: usize) -> Lru {
        let batches = || (0..shards).map(|_| CachePadded::new(Mutex::new(Vec::with_capacity(PAGEVEC_SIZE)))).collect();
        Lru {
            lists: Mutex::new(LruLists {
                inactive: List::EMPTY,
                active: List::EMPTY,
                stamps: vec![0; frames].into_boxed_slice(),
                clock: 1,
                hand: 0,
                share: SHARE_START,
                min_inactive,
            }),
            hand: AtomicU64::new(0),
            victim_freq: AtomicU32::new(0),
            sketch: Sketch::new(frames),
            climber: Climber::new(frames),
            add: batches(),
            activate: batches(),
        }
    }

    /// The LRU lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, LruLists> {
        crate::sync::lock_spinning(&self.lists)
    }

    /// Ages up to `nr` active pages under the held LRU lock (see
    /// `LruLists::shrink_active`) and publishes the hand for refaults.
    pub(crate) fn age_active(&self, lists: &mut LruLists, pages: &[Page], nr: usize) -> usize {
        let moved = lists.shrink_active(pages, nr, &self.sketch);
        // Relaxed: a hint for refault activation; no memory is published with it.
        self.hand.store(lists.hand, Ordering::Relaxed);
        // Relaxed: a hint too.
        self.victim_freq.store(lists.victim_frequency(pages, &self.sketch), Ordering::Relaxed);
        moved
    }

    /// Ends a reclaim round that freed `freed` frames: the climber may
    /// move the inactive list's share (at the end of a sample period).
    pub(crate) fn on_reclaim(&self, counters: &Counters, freed: usize) {
        if let Some(share) = self.climber.on_reclaim(counters, freed) {
            self.lists.lock().share = share;
        }
    }

    /// What a refault must beat to displace the active tail (see `victim_freq`).
    #[inline]
    pub(crate) fn victim_freq(&self) -> u32 {
        // Relaxed: a hint (see `age_active`).
        self.victim_freq.load(Ordering::Relaxed)
    }

    /// A refault lost to the active tail: wears the tail's credit down by
    /// one, so a tail that stopped being used (a phase change) gives way
    /// after as many refaults as its count, without waiting for a halving.
    pub(crate) fn victim_won(&self) {
        // Relaxed: a hint; a lost race costs one refault's worth of credit.
        let _ = self.victim_freq.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// The aging hand's stamp (see `workingset`).
    #[inline]
    pub(crate) fn hand(&self) -> u64 {
        // Relaxed: a hint (see `age_active`).
        self.hand.load(Ordering::Relaxed)
    }

    /// Queues a page (the caller holds a reference; the batch takes its own)
    /// for the inactive list (`lru_cache_add`).
    pub(crate) fn cache_add(&self, zone: &Zone, page: &Page, slot: usize) {
        page.get_page();
        let pfn = zone.page_to_pfn(page);
        let full = {
            let mut b = self.add[slot % self.add.len()].lock();
            b.push(pfn);
            (b.len() >= PAGEVEC_SIZE).then(|| std::mem::replace(&mut *b, Vec::with_capacity(PAGEVEC_SIZE)))
        };
        if let Some(batch) = full {
            self.add_batch(zone, batch);
        }
    }

    fn add_batch(&self, zone: &Zone, batch: Vec<u32>) {
        {
            let mut lists = self.lists.lock();
            // While the cache fills (free frames above the high watermark),
            // pages asked for start on the active list up to its share, as
            // CLOCK-Pro's first pages start hot; readahead's do not.
            let max_active = zone.nr_frames() - zone.nr_frames() / INACTIVE_RATIO;
            let filling = zone.buddy.nr_free() > zone.watermarks.high;
            for &pfn in &batch {
                let p = &zone.pages[pfn as usize];
                // Test before clearing: most pages never had the bit.
                let written = p.test(FILL_INACTIVE) && p.test_and_clear(FILL_INACTIVE);
                let asked = !p.test(RA_FRESH) && !written;
                if filling && lists.active.len < max_active && asked {
                    p.set(PageFlags::ACTIVE);
                }
                let now = lists.clock;
                lists.stamps[pfn as usize] = now;
                lists.clock = now + 1;
                lists.add(&zone.pages, pfn);
            }
        }
        // References are dropped outside the lock: a last put takes it again.
        for pfn in batch {
            zone.put_page(&zone.pages[pfn as usize]);
        }
    }

    /// Second touch of an inactive page: queue it for the active list.
    #[cold]
    pub(crate) fn activate_page(&self, zone: &Zone, page: &Page, slot: usize) {
        if !page.get_page_unless_zero() {
            return;
        }
        let pfn = zone.page_to_pfn(page);
        let full = {
            let mut b = self.activate[slot % self.activate.len()].lock();
            b.push(pfn);
            (b.len() >= PAGEVEC_SIZE).then(|| std::mem::replace(&mut *b, Vec::with_capacity(PAGEVEC_SIZE)))
        };
        if let Some(batch) = full {
            self.activate_batch(zone, batch);
        }
    }

    fn activate_batch(&self, zone: &Zone, batch: Vec<u32>) {
        {
            let mut lists = self.lists.lock();
            for &pfn in &batch {
                let p = &zone.pages[pfn as usize];
                // A second touch: one more use for the sketch (a page
                // activated while still in an add batch was counted there).
                if !p.test(PageFlags::ACTIVE) {
                    self.sketch.increment(workingset::hash(p.mapping_id(), p.index()));
                }
                if p.test(PageFlags::LRU) {
                    lists.activate(&zone.pages, pfn);
                } else {
                    // Still in an add batch: it will go straight to the active list.
                    p.set(PageFlags::ACTIVE);
                }
            }
        }
        for pfn in batch {
            zone.put_page(&zone.pages[pfn as usize]);
        }
    }

    /// Drains every batch onto the lists (before reclaim scans, and in tests).
    pub(crate) fn drain(&self, zone: &Zone) {
        for i in 0..self.add.len() {
            let batch = std::mem::take(&mut *self.add[i].lock());
            if !batch.is_empty() {
                self.add_batch(zone, batch);
            }
            let batch = std::mem::take(&mut *self.activate[i].lock());
            if !batch.is_empty() {
                self.activate_batch(zone, batch);
            }
        }
    }

    /// (active, inactive) list lengths and the pages the inactive list is
    /// kept at now (the climber's share, or the readahead floor).
    pub(crate) fn sizes_and_target(&self) -> (usize, usize, usize) {
        let l = self.lists.lock();
        (l.active.len, l.inactive.len, l.inactive_target())
    }

    /// Panics unless list membership matches the LRU and ACTIVE flags and
    /// the counts agree. Drain the batches first for an exact check.
    pub(crate) fn check_invariants(&self, pages: &[Page]) {
        self.sketch.check_invariants(pages.len());
        let lists = self.lists.lock();
        let mut on_list = vec![false; pages.len()];
        for (list, active) in [(&lists.inactive, false), (&lists.active, true)] {
            let mut n = 0;
            let mut prev = NO_PFN;
            for pfn in list.iter(pages) {
                let p = &pages[pfn as usize];
                assert!(!on_list[pfn as usize], "page {pfn} on the LRU twice");
                on_list[pfn as usize] = true;
                assert!(p.test(PageFlags::LRU), "page {pfn} on a list without LRU");
                assert_eq!(p.test(PageFlags::ACTIVE), active, "page {pfn}: ACTIVE disagrees with its list");
                assert!(!p.test(PageFlags::BUDDY), "free page {pfn} on the LRU");
                // Relaxed: under the LRU lock.
                assert_eq!(p.lru_prev.load(Ordering::Relaxed), prev, "LRU links broken at {pfn}");
                prev = pfn;
                n += 1;
            }
            assert_eq!(list.tail, prev, "LRU tail wrong");
            assert_eq!(n, list.len, "LRU count disagrees");
        }
        // Stamps: the active list is ordered (newest at the head), nothing is
        // stamped in the future, and the hand only passed real stamps.
        let mut newer = u64::MAX;
        for pfn in lists.active.iter(pages) {
            let stamp = lists.stamps[pfn as usize];
            assert!(stamp <= newer, "active list out of stamp order at {pfn}");
            newer = stamp;
        }
        assert!(lists.stamps.iter().all(|&s| s < lists.clock), "a stamp from the future");
        assert!(lists.hand < lists.clock, "the hand is ahead of the clock");
        for (pfn, p) in pages.iter().enumerate() {
            if p.test(PageFlags::LRU) {
                assert!(on_list[pfn], "page {pfn} has LRU but is on no list");
            }
        }
    }
}

/// The LRU's entry points on the zone: what a lookup hit and an insertion
/// into the page cache call.
impl Zone {
    /// Two-touch promotion (`mark_page_accessed`); takes no lock unless the
    /// page moves to the active list.
    #[inline]
    pub(crate) fn mark_page_accessed(&self, page: &Page) {
        let f = page.flags();
        if f.0 & PageFlags::REFERENCED.0 == 0 {
            page.set(PageFlags::REFERENCED);
        } else if f.0 & PageFlags::ACTIVE.0 == 0 {
            self.lru.activate_page(self, page, thread_slot());
        }
    }

    /// Queues a new page for the LRU (`lru_cache_add`) and counts it in the
    /// frequency sketch (readahead's pages are not counted until read). A
    /// page that comes back inside its test period (`workingset_refault`)
    /// goes to the active list if it has also come in more often than the
    /// active list's oldest page (TinyLFU's admission test); a refault that
    /// loses wears that page's credit down (`Lru::victim_won`).
    #[inline]
    pub(crate) fn lru_cache_add(&self, page: &Page) {
        let h = workingset::hash(page.mapping_id(), page.index());
        let freq = if page.test(RA_FRESH) { self.lru.sketch.frequency(h) } else { self.lru.sketch.increment(h) };
        if let Some(stamp) = self.shadows.take(page.mapping_id(), page.index()) {
            self.count(Event::Refaults, 1);
            if workingset::in_test_period(stamp, self.lru.hand()) {
                if freq > self.lru.victim_freq() {
                    self.count(Event::RefaultActivations, 1);
                    page.set(PageFlags::ACTIVE);
                } else {
                    self.lru.victim_won();
                }
            }
        }
        self.lru.cache_add(self, page, thread_slot());
    }
}
