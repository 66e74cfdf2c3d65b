//! The memory zone, following `include/linux/mmzone.h` and the free side
//! of `mm/page_alloc.c` (`put_page`, `__free_pages`): one cache's arena,
//! `mem_map`, buddy allocator, watermarks and counters, and the per-cache
//! state of the layers above it that every thread reaches through the
//! zone (the LRU lists and shadows, the mapping registry, the readahead
//! queue), as `pglist_data` holds the kernel's lruvec. The allocation entry
//! points that reclaim (`alloc_page`, `try_alloc_page`, `alloc_pages`)
//! are in `reclaim::vmscan`; this module's `alloc_block` never reclaims.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::index::mapping::AddressSpace;
use crate::io::readahead::RaQueue;
use crate::io::uring::{AsyncRing, RingPool};
use crate::mem::arena::{Arena, MemMap};
use crate::mem::buddy::Buddy;
use crate::mem::page::{Page, PageFlags, PageRef};
use crate::reclaim::lru::Lru;
use crate::reclaim::workingset::Shadows;
use crate::stats::{Counters, Event};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::PAGE_SIZE;

/// Thread numbers for `thread_slot`: the next never used, and those that
/// exiting threads gave back. Plain std types, not the `sync` shim's: they
/// only number threads, and nothing is published through them.
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static FREE_SLOTS: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// A thread's number, given back when the thread exits.
struct Slot(std::cell::Cell<usize>);

impl Drop for Slot {
    fn drop(&mut self) {
        // From here on the thread counts through the slow path, which finds
        // `SLOT` destroyed: its number goes back to the pool, and another
        // thread may get it.
        FAST_SLOT.with(|f| f.set(usize::MAX));
        let slot = self.0.get();
        if slot != usize::MAX {
            FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
        }
    }
}

thread_local! {
    static SLOT: Slot = const { Slot(std::cell::Cell::new(usize::MAX)) };
    /// The thread's number again, in a thread-local without a destructor,
    /// so that reading it is one load (`SLOT`, which gives the number back
    /// at exit, must first test whether it is registered or destroyed);
    /// `usize::MAX` before the first `thread_slot` and after `SLOT`'s
    /// destructor.
    static FAST_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// A number that differs between live threads, for picking per-thread
/// shards: threads are numbered in the order they first ask, and a number
/// is handed out again only after its thread exited, so live threads
/// land in different shards of any table with as many shards as threads
/// (a hash of a thread-local's address could put two threads in one
/// shard), and the numbers stay small however many threads come and go.
/// Costs no atomic after a thread's first call. The counters rely on it:
/// a thread whose number is below their shard count is the only writer
/// of its shard.
#[inline]
pub(crate) fn thread_slot() -> usize {
    let fast = FAST_SLOT.with(|f| f.get());
    if fast != usize::MAX {
        return fast;
    }
    thread_slot_slow()
}

/// `thread_slot` before the thread's first number, and after its slot's
/// destructor.
#[cold]
#[inline(never)]
fn thread_slot_slow() -> usize {
    // A thread past its slot's destructor (another thread-local's destructor
    // calling in) gets a number no live thread owns a shard by.
    SLOT.try_with(|s| {
        let slot = s.0.get();
        if slot != usize::MAX {
            return slot;
        }
        let slot = FREE_SLOTS.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_else(|| {
            // Relaxed: a counter handing out distinct numbers; nothing else
            // is ordered by it.
            NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        s.0.set(slot);
        FAST_SLOT.with(|f| f.set(slot));
        slot
    })
    .unwrap_or(usize::MAX / 2)
}

/// The first tail of a compound page keeps, in its `index`: the order
/// (bits 0..8), the uptodate blocks (bits 16..32) and the dirty blocks
/// (bits 32..48), one bit per 4 KiB block (`Page`'s field table).
const COMPOUND_ORDER: u64 = 0xff;
const BLOCKS_UPTODATE_SHIFT: u32 = 16;
const BLOCKS_DIRTY_SHIFT: u32 = 32;
/// Block bits: one per frame of the largest file page.
const BLOCK_MASK: u32 = ((1u64 << crate::MAX_PAGE_BLOCKS) - 1) as u32;

/// Every block of a page of `order`, as a mask.
#[inline]
pub(crate) fn all_blocks(order: u32) -> u32 {
    if order as usize >= crate::MAX_PAGE_BLOCKS.trailing_zeros() as usize {
        BLOCK_MASK
    } else {
        (1u32 << (1u32 << order)) - 1
    }
}

/// The runs of consecutive set bits of a block mask among its first `nr`
/// bits, as `(first, end)` block numbers (end exclusive), in order.
pub(crate) fn block_runs(mask: u32, nr: u32) -> impl Iterator<Item = (u32, u32)> {
    let mut b = 0u32;
    std::iter::from_fn(move || {
        while b < nr && mask >> b & 1 == 0 {
            b += 1;
        }
        if b >= nr {
            return None;
        }
        let first = b;
        while b < nr && mask >> b & 1 != 0 {
            b += 1;
        }
        Some((first, b))
    })
}

/// Free-frame watermarks, in frames.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watermarks {
    /// kswapd reclaims until this many frames are free; an allocating
    /// thread that finds none free reclaims this many itself (`batch`).
    pub(crate) high: usize,
}

impl Watermarks {
    /// No frame is kept free: an allocation that finds none reclaims a
    /// batch right there (one frame below 1,024 frames; from there on
    /// 1/4096 of the frames, 16 at least (a 64 KiB page) and 32 at most),
    /// so free frames swing between 0 and a batch. What sits free holds
    /// nothing, and nothing here needs a reserve: reclaim allocates no
    /// frame, and an allocation that loses its batch to another thread
    /// reclaims again (`alloc_page_slow`). The kernel's reserve (min 1/1024
    /// of the frames, low 5/4 of it, and the batch above low) kept 2 of a
    /// 100-frame cache's frames free and 31 of 19,853, and the policy
    /// table's rows missed more for it (the loop at 1% 0.9908 against
    /// 0.9906, Zipf(0.8) at 1% 0.6730 against 0.6718, the phases at 40%
    /// 0.1478 against 0.1474; the 19 rows summed 7.7815 against 7.7766).
    /// min at 1/256 (and 4 at least) before that kept 8% of a 100-frame
    /// cache empty. `docs/design.md`, "The policy".
    pub(crate) fn for_frames(n: usize) -> Watermarks {
        let batch = if n >= 1024 { (n / 4096).clamp(crate::MAX_PAGE_BLOCKS, 32) } else { 1 };
        Watermarks { high: batch }
    }

    /// Pages an allocating thread reclaims in one round when no frame is
    /// free: up to the high watermark (`SWAP_CLUSTER_MAX` at most). A
    /// fixed 32 left a cache of 100 frames a third empty after each round,
    /// and missed 7% more than LRU at that size (docs/design.md, "Reclaim").
    #[inline]
    pub(crate) fn batch(&self, cluster_max: usize) -> usize {
        self.high.clamp(1, cluster_max)
    }
}

/// Wakes a background thread (kswapd, the flusher).
pub(crate) struct Wakeup {
    /// A wake is pending; checked before the lock so repeated wakes of a
    /// thread that is already awake cost one load.
    pending: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Wakeup {
    fn new() -> Wakeup {
        Wakeup { pending: AtomicBool::new(false), lock: Mutex::new(()), cv: Condvar::new() }
    }

    /// Wakes the thread (one load when a wake is already pending).
    #[inline]
    pub(crate) fn wake(&self) {
        // Relaxed load: a hint; the swap below decides.
        if self.pending.load(Ordering::Relaxed) {
            return;
        }
        // AcqRel: one waker wins; what it did before is visible to the thread.
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _g = self.lock.lock();
            self.cv.notify_one();
        }
    }

    /// Sleeps until woken or `timeout`, unless a wake is pending; consumes
    /// it. Returns whether it was woken (`false`: the timeout passed).
    pub(crate) fn sleep(&self, timeout: Duration) -> bool {
        let mut g = self.lock.lock();
        // Acquire: pairs with the AcqRel swap in `wake`. Checked under the
        // lock, and `wake` notifies under it, so a wake is never lost.
        if !self.pending.load(Ordering::Acquire) {
            self.cv.wait_for(&mut g, timeout);
        }
        drop(g);
        // AcqRel: takes the wake (Acquire, as above) and shows later wakes
        // the thread as ready for more (Release).
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// Dirty page thresholds, in pages, and the age at which dirty data is
/// written regardless.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DirtyLimits {
    pub(crate) background: usize,
    pub(crate) limit: usize,
    pub(crate) expire: Duration,
}

/// One cache's memory: frames, descriptors, allocator, LRU, counters.
pub(crate) struct Zone {
    pub(crate) arena: Arena,
    pub(crate) pages: MemMap,
    pub(crate) buddy: Buddy,
    pub(crate) lru: Lru,
    /// Shadows of evicted pages, for refault activation.
    pub(crate) shadows: Shadows,
    pub(crate) counters: Counters,
    pub(crate) watermarks: Watermarks,
    /// Mapping ids to mappings (id 0 is "none"). Weak: the cache's file
    /// table owns the mappings.
    pub(crate) mappings: RwLock<Vec<Weak<AddressSpace>>>,
    /// Dirty frames, and frames under writeback, over all mappings (a
    /// large page counts all its frames: the dirty limits are fractions of
    /// the capacity).
    pub(crate) nr_dirty: AtomicUsize,
    pub(crate) nr_writeback: AtomicUsize,
    pub(crate) kswapd: Wakeup,
    pub(crate) flusher: Wakeup,
    pub(crate) dirty: DirtyLimits,
    pub(crate) shutting_down: AtomicBool,
    /// Where asynchronous readahead goes (None without workers, and once
    /// the cache shuts down).
    pub(crate) ra_queue: Mutex<Option<RaQueue>>,
    /// Largest readahead window, in pages.
    pub(crate) ra_max_pages: u64,
    /// io_uring rings for batched I/O (`io::uring`).
    pub(crate) uring: RingPool,
    /// The ring asynchronous readahead of O_DIRECT files goes on, with its
    /// reaper thread (`io::readahead::submit`); `None` without io_uring,
    /// O_DIRECT or readahead threads.
    pub(crate) async_ring: Option<AsyncRing>,
    /// Reclaim left dirty pages because their write-ahead log was behind:
    /// the flusher writes them at its next pass whatever the dirty
    /// thresholds (the kernel's `wakeup_flusher_threads(WB_REASON_VMSCAN)`).
    pub(crate) reclaim_wants_writeback: AtomicBool,
    /// Where the next reclaim aimed at one block starts looking
    /// (`reclaim::vmscan::reclaim_block`).
    pub(crate) block_cursor: AtomicUsize,
    /// The second tier behind reclaim (cleancache), if the cache has one.
    /// Held here so every thread reaches it through the zone; only the
    /// cleancache front end (`index/cleancache.rs`) calls it.
    pub(crate) tier: Option<Arc<dyn crate::tier::SecondTier>>,
    /// A call into the tier panicked: it is never called again.
    pub(crate) tier_broken: AtomicBool,
    /// Swap settings (`io::anon`); the swap area itself is made when the
    /// first anonymous mapping is.
    pub(crate) swap_cfg: crate::io::anon::SwapConfig,
    pub(crate) swap_area: Mutex<Option<Arc<crate::io::swap::SwapArea>>>,
    /// Anonymous mappings by their tier key number, for the compressed
    /// tier's writeback (which finds entries of any of them).
    pub(crate) anon_objects: Mutex<std::collections::HashMap<u64, std::sync::Weak<crate::io::anon::Anon>>>,
    /// The last failed swap-out's error, for allocations that find nothing
    /// to reclaim (cleared by the next swap-out that works).
    pub(crate) swap_error: Mutex<Option<(io::ErrorKind, String, std::time::Instant)>>,
    /// Failed swap-outs so far.
    pub(crate) swap_failures: AtomicU64,
    /// Frames of dirty anonymous pages: held under `anon_dirty_limit`, so
    /// that when the swap area is full the rest of the frames still serve
    /// reads and files (`io::anon::charge_dirty`).
    pub(crate) nr_anon_dirty: AtomicUsize,
    pub(crate) anon_dirty_limit: usize,
    /// The next anonymous mapping's tier key number.
    pub(crate) next_anon: AtomicU64,
    /// Reclaim's balance of file and anonymous pages (`reclaim::vmscan`).
    pub(crate) balance: crate::reclaim::vmscan::Balance,
}

impl Zone {
    #[allow(clippy::too_many_arguments)] // one per part of the zone the builder sets
    pub(crate) fn new(
        nr_frames: usize,
        huge_pages: bool,
        dirty: DirtyLimits,
        ra_max_pages: u64,
        io_uring: bool,
        async_ring: bool,
        tier: Option<Arc<dyn crate::tier::SecondTier>>,
        swap_cfg: crate::io::anon::SwapConfig,
    ) -> io::Result<Zone> {
        let arena = Arena::new(nr_frames, huge_pages)?;
        let pages = MemMap::new(nr_frames, huge_pages)?;
        let buddy = Buddy::new(&pages);
        let shards = (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).next_power_of_two();
        Ok(Zone {
            arena,
            buddy,
            lru: Lru::new(shards, nr_frames, 2 * ra_max_pages as usize),
            shadows: Shadows::new(nr_frames),
            counters: Counters::new(),
            watermarks: Watermarks::for_frames(nr_frames),
            mappings: RwLock::new(vec![Weak::new()]),
            nr_dirty: AtomicUsize::new(0),
            nr_writeback: AtomicUsize::new(0),
            kswapd: Wakeup::new(),
            flusher: Wakeup::new(),
            dirty,
            shutting_down: AtomicBool::new(false),
            ra_queue: Mutex::new(None),
            ra_max_pages,
            uring: RingPool::new(io_uring),
            async_ring: if io_uring && async_ring { AsyncRing::new() } else { None },
            reclaim_wants_writeback: AtomicBool::new(false),
            block_cursor: AtomicUsize::new(0),
            tier,
            tier_broken: AtomicBool::new(false),
            balance: crate::reclaim::vmscan::Balance::new(swap_cfg.swappiness),
            swap_cfg,
            swap_area: Mutex::new(None),
            anon_objects: Mutex::new(std::collections::HashMap::new()),
            next_anon: AtomicU64::new(1),
            swap_error: Mutex::new(None),
            swap_failures: AtomicU64::new(0),
            nr_anon_dirty: AtomicUsize::new(0),
            anon_dirty_limit: nr_frames - (nr_frames / 8).max(4).min(nr_frames / 2),
            pages,
        })
    }

    /// Number of frames.
    #[inline]
    pub(crate) fn nr_frames(&self) -> usize {
        self.pages.len()
    }

    /// Frame number of a descriptor in this zone's `mem_map`.
    #[inline]
    pub(crate) fn page_to_pfn(&self, page: &Page) -> u32 {
        let off = (page as *const Page as usize).wrapping_sub(self.pages.as_ptr() as usize);
        let pfn = off / std::mem::size_of::<Page>();
        assert!(pfn < self.pages.len(), "descriptor outside this zone's mem_map");
        pfn as u32
    }

    /// Descriptor of a frame (`pfn_to_page`).
    #[inline]
    pub(crate) fn pfn_to_page(&self, pfn: u32) -> &Page {
        &self.pages[pfn as usize]
    }

    /// Descriptor and address of frame `pfn`, with one bounds check for
    /// both (the hit path's, where every instruction counts).
    #[inline]
    pub(crate) fn page_and_address(&self, pfn: u32) -> (&Page, *mut u8) {
        let page = &self.pages[pfn as usize];
        // SAFETY: the index above checked pfn < mem_map's length, which is the
        // arena's number of frames (`Zone::new` makes both of `nr_frames`).
        (page, unsafe { self.arena.page_address_unchecked(pfn) })
    }

    /// Descriptor of an address inside the arena (`virt_to_page`).
    pub(crate) fn virt_to_page(&self, addr: *const u8) -> Option<&Page> {
        self.arena.virt_to_pfn(addr).map(|pfn| self.pfn_to_page(pfn))
    }

    /// The bytes of a page's frame, as a raw slice (the page protocols say
    /// who may turn it into a reference).
    #[inline]
    pub(crate) fn frame(&self, page: &Page) -> *const [u8] {
        let pfn = self.page_to_pfn(page);
        std::ptr::slice_from_raw_parts(self.arena.page_address(pfn), PAGE_SIZE << self.compound_order(page))
    }

    /// The order of the block `page` heads: 0 for a single frame (or a
    /// tail), else what its first tail keeps (`folio_order`).
    #[inline]
    pub(crate) fn compound_order(&self, page: &Page) -> u32 {
        match self.first_tail(page) {
            Some(t) => (t.index.load(Ordering::Relaxed) & COMPOUND_ORDER) as u32,
            None => 0,
        }
    }

    /// The first tail of a compound head, which keeps the block's order
    /// and its blocks' states (`Page::compound`'s layout).
    #[inline]
    fn first_tail(&self, page: &Page) -> Option<&Page> {
        // Relaxed: HEAD is set before the block is published and cleared
        // only when it is freed, with no reference left.
        if page.flags.load(Ordering::Relaxed) & PageFlags::HEAD.0 == 0 {
            return None;
        }
        Some(self.pfn_to_page(self.page_to_pfn(page) + 1))
    }

    /// Of a page's 4 KiB blocks, the ones that hold the file's bytes
    /// though the page as a whole is not uptodate (a partial write into a
    /// page that was not read). 0 for a single frame. The page lock guards it.
    #[inline]
    pub(crate) fn blocks_uptodate(&self, page: &Page) -> u32 {
        match self.first_tail(page) {
            // Relaxed: changed only by the page lock's holder, who reads it.
            Some(t) => (t.index.load(Ordering::Relaxed) >> BLOCKS_UPTODATE_SHIFT) as u32 & BLOCK_MASK,
            None => 0,
        }
    }

    /// Marks blocks of a locked compound page uptodate (no-op for a single frame).
    #[inline]
    pub(crate) fn set_blocks_uptodate(&self, page: &Page, blocks: u32) {
        if let Some(t) = self.first_tail(page) {
            // Relaxed: under the page lock.
            t.index.fetch_or(((blocks & BLOCK_MASK) as u64) << BLOCKS_UPTODATE_SHIFT, Ordering::Relaxed);
        }
    }

    /// Every block of a page, as a mask (one bit for a single frame).
    #[inline]
    pub(crate) fn all_blocks(&self, page: &Page) -> u32 {
        all_blocks(self.compound_order(page))
    }

    /// Adds dirty blocks to a locked page (for a single frame, the page is
    /// its one block). The DIRTY flag says the page has some.
    #[inline]
    pub(crate) fn add_blocks_dirty(&self, page: &Page, blocks: u32) {
        if let Some(t) = self.first_tail(page) {
            // Relaxed: under the page lock, or by a failed writeback, which
            // puts back blocks nobody else can have taken (the page stayed
            // under writeback until then).
            t.index.fetch_or(((blocks & BLOCK_MASK) as u64) << BLOCKS_DIRTY_SHIFT, Ordering::Relaxed);
        }
    }

    /// Takes a locked page's dirty blocks for writeback, leaving none; all
    /// of them when none was recorded (a page dirtied whole).
    #[inline]
    pub(crate) fn take_blocks_dirty(&self, page: &Page) -> u32 {
        let all = self.all_blocks(page);
        let Some(t) = self.first_tail(page) else { return all };
        // Relaxed: under the page lock.
        let old = t.index.fetch_and(!((BLOCK_MASK as u64) << BLOCKS_DIRTY_SHIFT), Ordering::Relaxed);
        match (old >> BLOCKS_DIRTY_SHIFT) as u32 & BLOCK_MASK & all {
            0 => all,
            some => some,
        }
    }

    /// Panics unless a cached page is a block of `order` (HEAD and its
    /// tails pointing at it, the order in the first tail) whose dirty
    /// blocks imply DIRTY. For `check_invariants`, on a quiet cache.
    pub(crate) fn check_compound(&self, page: &Page, order: u32) {
        let pfn = self.page_to_pfn(page);
        assert_eq!(self.compound_order(page), order, "page {pfn} is not of its file's order {order}");
        assert!(!page.test(PageFlags::TAIL), "cached page {pfn} is a tail");
        for t in pfn + 1..pfn + (1 << order) {
            let tail = self.pfn_to_page(t);
            assert!(tail.test(PageFlags::TAIL), "frame {t} of page {pfn} is not a tail");
            // Relaxed: a quiet cache.
            assert_eq!(tail.lru_next.load(Ordering::Relaxed), pfn, "tail {t} does not point at its head {pfn}");
            assert_eq!(tail.page_count(), 0, "tail {t} of page {pfn} has references");
        }
        if let Some(t) = self.first_tail(page) {
            // Relaxed: a quiet cache.
            let dirty = (t.index.load(Ordering::Relaxed) >> BLOCKS_DIRTY_SHIFT) as u32 & BLOCK_MASK;
            assert!(dirty == 0 || page.test(PageFlags::DIRTY), "page {pfn} has dirty blocks but is clean");
            assert_eq!(dirty & !all_blocks(order), 0, "page {pfn} has dirty blocks past its end");
        }
    }

    /// A compound page leaves its file: its block states start over.
    #[inline]
    pub(crate) fn clear_blocks(&self, page: &Page) {
        if let Some(t) = self.first_tail(page) {
            // Relaxed: under the page lock.
            t.index.fetch_and(COMPOUND_ORDER, Ordering::Relaxed);
        }
    }

    /// A block of 2^order frames straight from the buddy allocator, with
    /// no reclaim: `None` when no block that large is free. The head
    /// carries one reference (and, above order 0, its order). The
    /// allocation entry points that reclaim (`alloc_page` and friends) are
    /// the reclaim layer's (`reclaim::vmscan`).
    #[inline]
    pub(crate) fn alloc_block(&self, order: usize) -> io::Result<PageRef<'_>> {
        let pfn = self.buddy.alloc(&self.pages, order)?;
        Ok(self.make_live(pfn))
    }

    /// Up to `nr` pages of order `order` on consecutive frames, carved
    /// from one free block (readahead's buffers, which then touch): the
    /// largest block up to `nr` pages (and at most 2 MiB) that the pool has
    /// free, split into pages (`split_page`). Empty
    /// when no block of at least four frames is free; never reclaims.
    pub(crate) fn alloc_contiguous(&self, order: usize, nr: usize) -> Vec<PageRef<'_>> {
        const MAX_SPLIT: usize = 9;
        let frames = nr << order;
        if nr < 2 || frames < 4 {
            return Vec::new();
        }
        let mut block = (usize::BITS - 1 - frames.leading_zeros()) as usize;
        block = block.min(MAX_SPLIT);
        while block > order && block >= 2 {
            if self.buddy.nr_free() < 1 << block {
                block -= 1;
                continue;
            }
            if let Some(pfn) = self.buddy.try_alloc_free(&self.pages, block) {
                return self.split_block(pfn, block, order);
            }
            block -= 1;
        }
        Vec::new()
    }

    /// Cuts a block of `block` order, just allocated (ours alone), into
    /// live pages of `order`, in frame order.
    fn split_block(&self, pfn: u32, block: usize, order: usize) -> Vec<PageRef<'_>> {
        let step = 1u32 << order;
        let mut out = Vec::with_capacity(1 << (block - order));
        for head in (pfn..pfn + (1u32 << block)).step_by(step as usize) {
            let p = self.pfn_to_page(head);
            // Relaxed (all stores here): the block is ours alone until each
            // page is published by `make_live`'s Release.
            p.flags.store(if order > 0 { PageFlags::HEAD.0 } else { 0 }, Ordering::Relaxed);
            for t in head + 1..head + step {
                let tail = self.pfn_to_page(t);
                tail.flags.store(PageFlags::TAIL.0, Ordering::Relaxed);
                tail.lru_next.store(head, Ordering::Relaxed);
            }
            if order > 0 {
                self.pfn_to_page(head + 1).index.store(order as u64, Ordering::Relaxed);
            }
            out.push(self.make_live(head));
        }
        out
    }

    #[inline]
    pub(crate) fn make_live(&self, pfn: u32) -> PageRef<'_> {
        let page = self.pfn_to_page(pfn);
        page.set_page_count(1);
        PageRef::from_raw(page, self)
    }

    /// Drops a reference; the last one frees the frame (`put_page`).
    #[inline]
    pub(crate) fn put_page(&self, page: &Page) {
        if page.put_page_testzero() {
            self.free_page(page, false);
        }
    }

    /// A page whose count reached zero: off the LRU, back to the buddy pool
    /// (`__page_cache_release` + `free_unref_page`).
    #[cold]
    pub(crate) fn free_page(&self, page: &Page, cold: bool) {
        if page.test(PageFlags::LRU) {
            let mut lists = self.lru.lock();
            if page.test(PageFlags::LRU) {
                lists.del(&self.pages, self.page_to_pfn(page));
            }
        }
        let order = self.compound_order(page) as usize;
        self.buddy.free(&self.pages, self.page_to_pfn(page), order, cold);
    }

    /// Registers a mapping and returns its id.
    pub(crate) fn register_mapping(&self, mapping: Weak<AddressSpace>) -> u32 {
        let mut table = self.mappings.write();
        if let Some(id) = table.iter().skip(1).position(|w| w.strong_count() == 0) {
            table[id + 1] = mapping;
            return id as u32 + 1;
        }
        table.push(mapping);
        (table.len() - 1) as u32
    }

    /// The mapping with this id, if it is alive.
    pub(crate) fn mapping(&self, id: u32) -> Option<Arc<AddressSpace>> {
        self.mappings.read().get(id as usize).and_then(Weak::upgrade)
    }

    /// Counts an event in this thread's shard.
    #[inline]
    pub(crate) fn count(&self, e: Event, n: u64) {
        self.counters.add(thread_slot(), e, n);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn block_runs_are_the_runs_of_set_bits() {
        let runs = |m, n| block_runs(m, n).collect::<Vec<_>>();
        assert_eq!(runs(0, 16), vec![]);
        assert_eq!(runs(1, 1), vec![(0, 1)]);
        assert_eq!(runs(0xffff, 16), vec![(0, 16)]);
        assert_eq!(runs(0b1011_0110, 8), vec![(1, 3), (4, 6), (7, 8)]);
        assert_eq!(runs(0xffff_ffff, 4), vec![(0, 4)], "bits past nr are ignored");
        assert_eq!(all_blocks(0), 1);
        assert_eq!(all_blocks(2), 0xf);
        assert_eq!(all_blocks(4), 0xffff);
        assert_eq!(all_blocks(10), 0xffff, "orders past the largest page keep 16 blocks");
    }
}
