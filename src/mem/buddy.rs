//! The buddy allocator, following `mm/page_alloc.c`: free lists per order
//! (0..=`MAX_ORDER`), split on allocation, coalesce on free, and small
//! per-thread-ish lists of order-0 frames (the kernel's per-cpu pagesets)
//! so the common case takes no shared lock.
//!
//! A free block is headed by a frame carrying `BUDDY` with its order in the
//! descriptor's `index`; its buddy at order `o` is `pfn ^ (1 << o)`. Free
//! lists are doubly linked through `lru_prev`/`lru_next`, under the buddy
//! lock. Frames sitting in a per-thread list are free but not `BUDDY` (like
//! the kernel's pcp pages) and are not merged until drained.

use std::collections::VecDeque;
use std::io;
use std::ops::{Deref, DerefMut};

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};

use crate::mem::page::{Page, PageFlags, NO_PFN};
use crate::sync::{AtomicUsize, Ordering, SpinGuard, SpinLock};

/// Largest block order: blocks of up to 2^10 frames (4 MiB).
pub const MAX_ORDER: usize = 10;

/// How many order-0 frames a per-thread list takes from or gives back to the
/// buddy lists in one go.
const PCP_BATCH: usize = 31;
/// Above this many frames a per-thread list gives a batch back.
const PCP_HIGH: usize = 4 * PCP_BATCH;

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

/// Free lists, one per order (the kernel's `free_area`).
struct FreeArea {
    lists: [List; MAX_ORDER + 1],
    nr_free: [usize; MAX_ORDER + 1],
    /// Frames in all the lists.
    frames: usize,
}

/// Something behind a lock whose frame count is published for lockless readers.
trait Frames {
    fn frames(&self) -> usize;
}

impl Frames for FreeArea {
    fn frames(&self) -> usize {
        self.frames
    }
}

impl Frames for VecDeque<u32> {
    fn frames(&self) -> usize {
        self.len()
    }
}

/// A lock guard that publishes the frame count when it is released, so
/// `nr_free` needs no lock and each count lives on its own lock's line.
struct Counted<'a, T: Frames, G: DerefMut<Target = T>> {
    guard: G,
    count: &'a AtomicUsize,
}

impl<T: Frames, G: DerefMut<Target = T>> Deref for Counted<'_, T, G> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: Frames, G: DerefMut<Target = T>> DerefMut for Counted<'_, T, G> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T: Frames, G: DerefMut<Target = T>> Drop for Counted<'_, T, G> {
    #[inline]
    fn drop(&mut self) {
        // Relaxed: a statistic; stored before the lock is released, so a
        // reader holding every lock (`check_invariants`) sees it exact.
        self.count.store(self.guard.frames(), Ordering::Relaxed);
    }
}

/// One per-thread list of order-0 frames (the kernel's `per_cpu_pages`).
struct Pcp {
    list: SpinLock<VecDeque<u32>>,
    count: AtomicUsize,
}

/// The buddy allocator over a cache's frames.
pub(crate) struct Buddy {
    area: Mutex<FreeArea>,
    area_count: CachePadded<AtomicUsize>,
    pcp: Box<[CachePadded<Pcp>]>,
    nr_frames: u32,
}

#[inline]
fn pcp_slot(n: usize) -> usize {
    crate::mem::zone::thread_slot() % n
}

impl Buddy {
    /// Every frame of `pages` starts free, in the largest aligned blocks.
    pub(crate) fn new(pages: &[Page]) -> Buddy {
        let nr_frames = pages.len() as u32;
        let shards = (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).next_power_of_two();
        let buddy = Buddy {
            area: Mutex::new(FreeArea {
                lists: [List { head: NO_PFN, tail: NO_PFN }; MAX_ORDER + 1],
                nr_free: [0; MAX_ORDER + 1],
                frames: 0,
            }),
            area_count: CachePadded::new(AtomicUsize::new(0)),
            pcp: (0..shards)
                .map(|_| CachePadded::new(Pcp { list: SpinLock::new(VecDeque::new()), count: AtomicUsize::new(0) }))
                .collect(),
            nr_frames,
        };
        {
            let mut area = buddy.lock_area();
            let mut pfn = 0u32;
            while pfn < nr_frames {
                let mut order = MAX_ORDER;
                while pfn & ((1 << order) - 1) != 0 || pfn as u64 + (1u64 << order) > nr_frames as u64 {
                    order -= 1;
                }
                area.push(pages, pfn, order, true);
                pfn += 1 << order;
            }
        }
        buddy
    }

    #[inline]
    fn lock_area(&self) -> Counted<'_, FreeArea, MutexGuard<'_, FreeArea>> {
        Counted { guard: self.area.lock(), count: &self.area_count }
    }

    #[inline]
    fn lock_pcp(&self, i: usize) -> Counted<'_, VecDeque<u32>, SpinGuard<'_, VecDeque<u32>>> {
        let pcp = &self.pcp[i];
        Counted { guard: pcp.list.lock(), count: &pcp.count }
    }

    #[inline]
    fn try_lock_pcp(&self, i: usize) -> Option<Counted<'_, VecDeque<u32>, SpinGuard<'_, VecDeque<u32>>>> {
        let pcp = &self.pcp[i];
        pcp.list.try_lock().map(|guard| Counted { guard, count: &pcp.count })
    }

    /// Free frames now, wherever they sit (a snapshot; used for watermarks).
    #[inline]
    pub(crate) fn nr_free(&self) -> usize {
        // Relaxed: a statistic; decisions built on it tolerate staleness.
        self.area_count.load(Ordering::Relaxed)
            + self.pcp.iter().map(|p| p.count.load(Ordering::Relaxed)).sum::<usize>()
    }

    /// Allocates a block of 2^order frames; its head is returned with a
    /// reference count of 0 and clean flags (HEAD/TAIL set for order > 0).
    pub(crate) fn alloc(&self, pages: &[Page], order: usize) -> io::Result<u32> {
        self.alloc_inner(pages, order, true)
    }

    /// `alloc` of a block above order 0 from the free lists as they are,
    /// without draining the per-thread lists when none is free: for an
    /// opportunistic caller (readahead's contiguous buffers), which falls
    /// back to single frames; a drain per failed try emptied every
    /// per-thread list on every window of a stream through a small cache
    /// (2.4x the time of `cat` to /dev/null).
    pub(crate) fn try_alloc_free(&self, pages: &[Page], order: usize) -> Option<u32> {
        self.alloc_inner(pages, order, false).ok()
    }

    fn alloc_inner(&self, pages: &[Page], order: usize, drain: bool) -> io::Result<u32> {
        if order > MAX_ORDER {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("order {order} > {MAX_ORDER}")));
        }
        let pfn = if order == 0 {
            self.alloc_pcp(pages)
        } else {
            let pfn = self.alloc_area(pages, order);
            // Frames parked in per-thread lists may complete a block.
            pfn.or_else(|| {
                if !drain {
                    return None;
                }
                self.drain_pcp(pages);
                self.alloc_area(pages, order)
            })
        };
        let Some(pfn) = pfn else {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "page cache arena exhausted"));
        };
        if order > 0 {
            pages[pfn as usize].set(PageFlags::HEAD);
            for t in pfn + 1..pfn + (1 << order) {
                pages[t as usize].set(PageFlags::TAIL);
                // Relaxed: the tail belongs to the allocating thread alone.
                pages[t as usize].lru_next.store(pfn, Ordering::Relaxed);
            }
            // The first tail keeps the order, and block states of zero
            // (`Page::compound` for the layout). Relaxed: the block is the
            // allocating thread's alone until it publishes the head.
            pages[pfn as usize + 1].index.store(order as u64, Ordering::Relaxed);
        }
        Ok(pfn)
    }

    fn alloc_area(&self, pages: &[Page], order: usize) -> Option<u32> {
        self.lock_area().alloc(pages, order)
    }

    #[inline]
    fn alloc_pcp(&self, pages: &[Page]) -> Option<u32> {
        let mut pcp = self.lock_pcp(pcp_slot(self.pcp.len()));
        match pcp.pop_back() {
            Some(pfn) => Some(pfn),
            None => self.refill_pcp(pages, &mut pcp),
        }
    }

    #[cold]
    fn refill_pcp(&self, pages: &[Page], pcp: &mut VecDeque<u32>) -> Option<u32> {
        {
            let mut area = self.lock_area();
            for _ in 0..PCP_BATCH {
                match area.alloc(pages, 0) {
                    Some(pfn) => pcp.push_front(pfn),
                    None => break,
                }
            }
        }
        if let Some(pfn) = pcp.pop_back() {
            return Some(pfn);
        }
        // The free lists are empty: move what other threads' lists hold.
        for i in 0..self.pcp.len() {
            if let Some(mut o) = self.try_lock_pcp(i) {
                pcp.extend(o.drain(..));
            }
        }
        pcp.pop_back()
    }

    /// Frees a block allocated at `order`. `cold` frames go to the far end of
    /// the lists, so frames still warm in the CPU cache are handed out first.
    pub(crate) fn free(&self, pages: &[Page], pfn: u32, order: usize, cold: bool) {
        assert!(order <= MAX_ORDER && pfn < self.nr_frames, "free_pages({pfn}, {order}) out of range");
        let head = &pages[pfn as usize];
        assert!(!head.test(PageFlags::BUDDY), "frame {pfn} freed twice");
        assert_eq!(head.page_count(), 0, "frame {pfn} freed with references");
        // The frame is ours alone: reset what a page left behind.
        // (`seq` is never reset: an optimistic reader holding an old value
        // must never see it again.)
        head.flags.store(0, Ordering::Relaxed);
        head.mapping.store(0, Ordering::Relaxed);
        for t in pfn + 1..pfn + (1u32 << order) {
            let tail = &pages[t as usize];
            assert!(tail.test(PageFlags::TAIL), "frame {t} is not a tail of {pfn}");
            tail.flags.store(0, Ordering::Relaxed);
        }
        if order == 0 {
            let mut pcp = self.lock_pcp(pcp_slot(self.pcp.len()));
            if cold {
                pcp.push_front(pfn);
            } else {
                pcp.push_back(pfn);
            }
            if pcp.len() > PCP_HIGH {
                let mut area = self.lock_area();
                for _ in 0..PCP_BATCH {
                    let Some(p) = pcp.pop_front() else { break };
                    area.free(pages, p, 0, true);
                }
            }
        } else {
            self.lock_area().free(pages, pfn, order, cold);
        }
    }

    /// Frees a block straight to the free lists, past the per-thread
    /// lists, so it merges with its free buddies at once (reclaim aimed at
    /// one block, which needs the merge).
    pub(crate) fn free_merging(&self, pages: &[Page], pfn: u32, order: usize) {
        if order == 0 {
            assert!(pfn < self.nr_frames, "free_pages({pfn}, 0) out of range");
            let head = &pages[pfn as usize];
            assert!(!head.test(PageFlags::BUDDY), "frame {pfn} freed twice");
            assert_eq!(head.page_count(), 0, "frame {pfn} freed with references");
            head.flags.store(0, Ordering::Relaxed);
            head.mapping.store(0, Ordering::Relaxed);
            self.lock_area().free(pages, pfn, 0, true);
        } else {
            self.free(pages, pfn, order, true);
        }
    }

    /// Whether frame `pfn` heads a free block in the free lists, and its
    /// order (a racy snapshot for a scan: the buddy lock decides).
    #[inline]
    pub(crate) fn free_block_at(pages: &[Page], pfn: u32) -> Option<usize> {
        let p = &pages[pfn as usize];
        // Relaxed: a hint; whoever acts on it re-checks under a lock.
        (p.flags.load(Ordering::Relaxed) & PageFlags::BUDDY.0 != 0).then(|| p.index.load(Ordering::Relaxed) as usize)
    }

    /// Gives every per-thread list back to the free lists (so blocks merge).
    pub(crate) fn drain_pcp(&self, pages: &[Page]) {
        for i in 0..self.pcp.len() {
            let mut pcp = self.lock_pcp(i);
            let mut area = self.lock_area();
            while let Some(p) = pcp.pop_front() {
                area.free(pages, p, 0, true);
            }
        }
    }

    /// Free blocks per order, like /proc/buddyinfo (per-thread lists count as order 0).
    pub(crate) fn free_blocks(&self) -> [usize; MAX_ORDER + 1] {
        let mut counts = self.area.lock().nr_free;
        counts[0] += self.pcp.iter().map(|p| p.list.lock().len()).sum::<usize>();
        counts
    }

    /// Panics unless: every free block is aligned, in range, headed by a
    /// BUDDY frame of its order; no frame is free twice; no two free buddies
    /// are left unmerged; the counts agree.
    pub(crate) fn check_invariants(&self, pages: &[Page]) {
        let pcps: Vec<_> = self.pcp.iter().map(|p| p.list.lock()).collect();
        let area = self.area.lock();
        let mut free = vec![false; self.nr_frames as usize];
        let mut total = 0usize;
        let mut heads = std::collections::HashSet::new();
        for order in 0..=MAX_ORDER {
            let mut n = 0;
            let mut prev = NO_PFN;
            let mut pfn = area.lists[order].head;
            while pfn != NO_PFN {
                let p = &pages[pfn as usize];
                assert!(p.test(PageFlags::BUDDY), "free block {pfn} lacks BUDDY");
                assert_eq!(p.index() as usize, order, "free block {pfn} has the wrong order");
                assert_eq!(pfn & ((1 << order) - 1), 0, "free block {pfn} misaligned for order {order}");
                assert!(pfn as u64 + (1u64 << order) <= self.nr_frames as u64, "free block {pfn} out of range");
                assert_eq!(p.lru_prev.load(Ordering::Relaxed), prev, "free list links broken at {pfn}");
                for f in pfn..pfn + (1 << order) {
                    assert!(!free[f as usize], "frame {f} free twice");
                    free[f as usize] = true;
                }
                heads.insert((pfn, order));
                n += 1;
                prev = pfn;
                pfn = p.lru_next.load(Ordering::Relaxed);
            }
            assert_eq!(area.lists[order].tail, prev, "free list tail wrong at order {order}");
            assert_eq!(n, area.nr_free[order], "nr_free[{order}] disagrees with the list");
            total += n << order;
        }
        for &(pfn, order) in &heads {
            if order < MAX_ORDER {
                let buddy = pfn ^ (1 << order);
                assert!(!heads.contains(&(buddy, order)), "free buddies {pfn} and {buddy} not merged (order {order})");
            }
        }
        for pcp in &pcps {
            for &pfn in pcp.iter() {
                assert!(!free[pfn as usize], "frame {pfn} free twice (per-thread list)");
                assert!(!pages[pfn as usize].test(PageFlags::BUDDY), "per-thread frame {pfn} marked BUDDY");
                free[pfn as usize] = true;
                total += 1;
            }
        }
        assert_eq!(total, self.nr_free(), "free frame count disagrees");
        for (pfn, p) in pages.iter().enumerate() {
            if free[pfn] {
                assert_eq!(p.page_count(), 0, "free frame {pfn} has references");
            }
        }
    }
}

impl FreeArea {
    fn push(&mut self, pages: &[Page], pfn: u32, order: usize, cold: bool) {
        let p = &pages[pfn as usize];
        // Relaxed (all link and field stores here): guarded by the buddy lock.
        p.index.store(order as u64, Ordering::Relaxed);
        p.flags.store(PageFlags::BUDDY.0, Ordering::Relaxed);
        let list = &mut self.lists[order];
        if list.head == NO_PFN {
            p.lru_prev.store(NO_PFN, Ordering::Relaxed);
            p.lru_next.store(NO_PFN, Ordering::Relaxed);
            list.head = pfn;
            list.tail = pfn;
        } else if cold {
            p.lru_prev.store(list.tail, Ordering::Relaxed);
            p.lru_next.store(NO_PFN, Ordering::Relaxed);
            pages[list.tail as usize].lru_next.store(pfn, Ordering::Relaxed);
            list.tail = pfn;
        } else {
            p.lru_prev.store(NO_PFN, Ordering::Relaxed);
            p.lru_next.store(list.head, Ordering::Relaxed);
            pages[list.head as usize].lru_prev.store(pfn, Ordering::Relaxed);
            list.head = pfn;
        }
        self.nr_free[order] += 1;
        self.frames += 1 << order;
    }

    fn unlink(&mut self, pages: &[Page], pfn: u32, order: usize) {
        let p = &pages[pfn as usize];
        // Relaxed (all here): guarded by the buddy lock.
        let prev = p.lru_prev.load(Ordering::Relaxed);
        let next = p.lru_next.load(Ordering::Relaxed);
        let list = &mut self.lists[order];
        if prev == NO_PFN {
            list.head = next;
        } else {
            pages[prev as usize].lru_next.store(next, Ordering::Relaxed);
        }
        if next == NO_PFN {
            list.tail = prev;
        } else {
            pages[next as usize].lru_prev.store(prev, Ordering::Relaxed);
        }
        p.lru_prev.store(NO_PFN, Ordering::Relaxed);
        p.lru_next.store(NO_PFN, Ordering::Relaxed);
        p.flags.store(0, Ordering::Relaxed);
        p.index.store(0, Ordering::Relaxed);
        self.nr_free[order] -= 1;
        self.frames -= 1 << order;
    }

    /// Takes a block of `order`, splitting a larger one if needed (`__rmqueue_smallest`).
    fn alloc(&mut self, pages: &[Page], order: usize) -> Option<u32> {
        let found = (order..=MAX_ORDER).find(|&o| self.lists[o].head != NO_PFN)?;
        let pfn = self.lists[found].head;
        self.unlink(pages, pfn, found);
        // Split: give back the upper halves (`expand`).
        let mut o = found;
        while o > order {
            o -= 1;
            self.push(pages, pfn + (1 << o), o, false);
        }
        Some(pfn)
    }

    /// Returns a block, merging with free buddies (`__free_one_page`).
    fn free(&mut self, pages: &[Page], mut pfn: u32, mut order: usize, cold: bool) {
        let nr_frames = pages.len() as u64;
        while order < MAX_ORDER {
            let buddy = pfn ^ (1 << order);
            if buddy as u64 + (1u64 << order) > nr_frames {
                break;
            }
            let b = &pages[buddy as usize];
            if !(b.test(PageFlags::BUDDY) && b.index() as usize == order) {
                break;
            }
            self.unlink(pages, buddy, order);
            pfn = pfn.min(buddy);
            order += 1;
        }
        self.push(pages, pfn, order, cold);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mem_map(n: usize) -> Box<[Page]> {
        (0..n).map(|_| Page::new()).collect()
    }

    /// Allocated blocks must not overlap each other or any free frame.
    fn check_model(pages: &[Page], buddy: &Buddy, held: &[(u32, usize)]) {
        buddy.check_invariants(pages);
        let mut used = vec![false; pages.len()];
        for &(pfn, order) in held {
            for f in pfn..pfn + (1 << order) {
                assert!(!used[f as usize], "frame {f} handed out twice");
                used[f as usize] = true;
                assert!(!pages[f as usize].test(PageFlags::BUDDY), "allocated frame {f} marked free");
            }
        }
        let held_frames: usize = held.iter().map(|&(_, o)| 1usize << o).sum();
        assert_eq!(held_frames + buddy.nr_free(), pages.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn alloc_free_matches_model(
            frames in 1usize..3000,
            ops in prop::collection::vec((any::<bool>(), 0usize..=MAX_ORDER, any::<prop::sample::Index>(), any::<bool>()), 1..200),
        ) {
            let pages = mem_map(frames);
            let buddy = Buddy::new(&pages);
            let mut held: Vec<(u32, usize)> = Vec::new();
            for (alloc, order, which, cold) in ops {
                if alloc || held.is_empty() {
                    match buddy.alloc(&pages, order) {
                        Ok(pfn) => {
                            prop_assert_eq!(pfn as usize % (1 << order), 0, "block misaligned");
                            held.push((pfn, order));
                        }
                        Err(e) => {
                            prop_assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
                            // Only fails when no free block of that order exists.
                            buddy.drain_pcp(&pages);
                            let blocks = buddy.free_blocks();
                            prop_assert!(blocks[order..].iter().all(|&n| n == 0), "alloc failed with a block free");
                        }
                    }
                } else {
                    let (pfn, order) = held.swap_remove(which.index(held.len()));
                    buddy.free(&pages, pfn, order, cold);
                }
                check_model(&pages, &buddy, &held);
            }
            for (pfn, order) in held.drain(..) {
                buddy.free(&pages, pfn, order, false);
            }
            buddy.drain_pcp(&pages);
            buddy.check_invariants(&pages);
            // Whole again: exactly the initial carving into maximal blocks.
            let fresh_pages = mem_map(frames);
            let fresh = Buddy::new(&fresh_pages);
            prop_assert_eq!(buddy.free_blocks(), fresh.free_blocks());
        }
    }

    #[test]
    fn bad_order_is_invalid_input() {
        let pages = mem_map(16);
        let buddy = Buddy::new(&pages);
        assert_eq!(buddy.alloc(&pages, MAX_ORDER + 1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn many_threads_alloc_and_free() {
        let pages = mem_map(4096);
        let buddy = Buddy::new(&pages);
        std::thread::scope(|s| {
            for t in 0..6 {
                let (pages, buddy) = (&pages, &buddy);
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000usize {
                        let order = if (i + t) % 7 == 0 { (i % 4) + 1 } else { 0 };
                        if i % 3 != 2 {
                            if let Ok(pfn) = buddy.alloc(pages, order) {
                                // Write a tag into the descriptor we own to detect double hand-out.
                                pages[pfn as usize].mapping.store(t as u32 + 1, Ordering::Relaxed);
                                held.push((pfn, order));
                            }
                        } else if let Some((pfn, order)) = held.pop() {
                            assert_eq!(pages[pfn as usize].mapping.load(Ordering::Relaxed), t as u32 + 1);
                            buddy.free(pages, pfn, order, i % 2 == 0);
                        }
                    }
                    for (pfn, order) in held {
                        assert_eq!(pages[pfn as usize].mapping.load(Ordering::Relaxed), t as u32 + 1);
                        buddy.free(pages, pfn, order, false);
                    }
                });
            }
        });
        buddy.drain_pcp(&pages);
        buddy.check_invariants(&pages);
        assert_eq!(buddy.free_blocks()[MAX_ORDER], 4);
    }
}
