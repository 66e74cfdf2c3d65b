//! Counters and their snapshot, following `mm/vmstat.c`: per-thread-ish
//! counter shards summed on read, printable like /proc/meminfo and
//! /proc/vmstat.

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::mem::buddy::MAX_ORDER;
use crate::sync::{AtomicU64, Ordering};

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Event {
    Hit,
    Miss,
    ReadaheadPages,
    ReadaheadHits,
    ReadCalls,
    WriteCalls,
    WritebackPages,
    Evictions,
    KswapdReclaims,
    DirectReclaims,
    WriteErrors,
    ReadErrors,
    Throttles,
    Refaults,
    RefaultActivations,
    PagesMoved,
    StaleOpens,
    InvalidatedPages,
    OptimisticHits,
    LogFlushes,
    LogSkips,
    VerifyFailures,
    UringOps,
    PrefetchPages,
    BlockReclaims,
    BlockReclaimFailures,
    BlockReclaimScanned,
    BlockReclaimPages,
    TierHits,
    TierMisses,
    TierPuts,
    TierRejects,
    TierInvalidations,
    TierPanics,
    TierVerifyFailures,
    SwapOuts,
    SwapIns,
    SwapBytesWritten,
    SwapBytesRead,
    FrontswapStores,
    FrontswapLoads,
    FrontswapWritebacks,
    FrontswapRejects,
    SwapWriteErrors,
    AnonReclaims,
    FileReclaims,
    AnonRotations,
    Admissions,
    MainEvictions,
    PhaseChanges,
    FillAgings,
}

const NR_EVENTS: usize = Event::FillAgings as usize + 1;

/// Threads with a shard of their own in each cache's counters; threads
/// numbered past them share the last shard.
const OWNED_SHARDS: usize = 64;

/// Event counters, one shard per thread (by `thread_slot`), so a hot-path
/// increment neither shares a cache line nor takes a locked instruction: a
/// thread owns its shard and adds with a plain load and store, which on
/// x86 lets consecutive lookups overlap their cache misses (a locked RMW is
/// a full barrier). Threads past `OWNED_SHARDS` share one shard and add
/// with an atomic RMW.
pub(crate) struct Counters {
    /// A fixed-size array (not a slice): the hot path's index needs no
    /// length load and no bounds check past the `slot < OWNED_SHARDS` test.
    shards: Box<[CachePadded<[AtomicU64; NR_EVENTS]>; OWNED_SHARDS + 1]>,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            shards: Box::new(std::array::from_fn(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))),
        }
    }

    /// Adds `n` to counter `e` in shard `slot` (the caller's `thread_slot`).
    #[inline]
    pub(crate) fn add(&self, slot: usize, e: Event, n: u64) {
        if slot < OWNED_SHARDS {
            let c = &self.shards[slot][e as usize];
            // Relaxed load and store: this thread is the shard's only writer
            // (`thread_slot` numbers live threads apart, and a number is
            // reused only after its thread exited, which orders the old
            // owner's last store before the new owner's first); readers
            // only sum. Statistics, no ordering with other memory.
            c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        } else {
            // Relaxed: statistics, no ordering with other memory.
            self.shards[OWNED_SHARDS][e as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sum over shards.
    pub(crate) fn get(&self, e: Event) -> u64 {
        // Relaxed: statistics.
        self.shards.iter().map(|s| s[e as usize].load(Ordering::Relaxed)).sum()
    }
}

/// A snapshot of the cache's counters and list sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Page lookups by reads that found the page uptodate in the cache.
    pub hits: u64,
    /// Page lookups by reads that had to read the file.
    pub misses: u64,
    /// Pages read by readahead.
    pub readahead_pages: u64,
    /// First accesses to pages that readahead brought in.
    pub readahead_hits: u64,
    /// Read calls issued to files (one per contiguous run).
    pub read_calls: u64,
    /// Write calls issued to files (one per contiguous run).
    pub write_calls: u64,
    /// Pages written back to files.
    pub writeback_pages: u64,
    /// Pages reclaimed (evicted from the cache).
    pub evictions: u64,
    /// Pages freed by the background reclaimer (kswapd).
    pub kswapd_reclaims: u64,
    /// Pages freed by allocating threads (direct reclaim).
    pub direct_reclaims: u64,
    /// Failed writebacks.
    pub write_errors: u64,
    /// Failed reads.
    pub read_errors: u64,
    /// Times a writer was throttled above the dirty limit.
    pub throttles: u64,
    /// Evicted pages read again while their shadow was still remembered.
    pub refaults: u64,
    /// Window pages admitted to the main part by the recency test, while
    /// its votes or a phase change let it decide (they came back from a
    /// recent eviction and were used after the main page used longest ago
    /// among those looked at; `docs/design.md`, "The policy").
    pub refault_activations: u64,
    /// Window pages admitted to the main part because the frequency
    /// sketch had seen them more often than the main part's victim
    /// (W-TinyLFU's admission).
    pub admissions: u64,
    /// Main-part pages sent to the inactive tail to be evicted: victims
    /// that lost their place to a window page, or were taken while the
    /// window was at its share (a dirty or locked one may stay a while).
    pub main_evictions: u64,
    /// Phase changes the detector saw (the hit ratio fell well below its
    /// recent average while the misses were pages coming back), each
    /// opening the recency test for a while.
    pub phase_changes: u64,
    /// Turns of aging the main part began while the cache filled: one
    /// when it first reached 3/4 of its frames, and one again each time it
    /// refilled after falling under half (`docs/design.md`, "Seventh
    /// sitting").
    pub fill_agings: u64,
    /// Bytes of the policy's metadata: the shadow table and the frequency
    /// sketch, per-frame stamps, last uses and pending decisions (fixed at
    /// build time: about 88 bytes a frame).
    pub policy_bytes: u64,
    /// Pages `CachedFile::copy_from` moved from one file to another instead
    /// of copying them.
    pub pages_moved: u64,
    /// Opens that found the file changed behind the cache since it last
    /// knew it (close-to-open revalidation), and dropped its clean pages.
    pub stale_opens: u64,
    /// Clean pages dropped by revalidation or `CachedFile::invalidate`.
    pub invalidated_pages: u64,
    /// Hits (among `hits`) served by an optimistic read: no reference, no
    /// read guard, nothing written to the page's descriptor.
    pub optimistic_hits: u64,
    /// `WriteAheadLog::flush_to` calls the cache made before writing pages
    /// whose LSN was ahead of the durable log.
    pub log_flushes: u64,
    /// Dirty pages reclaim left in place because their log was behind.
    pub log_skips: u64,
    /// Pages the read verifier rejected.
    pub verify_failures: u64,
    /// Reads and writes submitted on io_uring.
    pub uring_ops: u64,
    /// Pages `CachedFile::prefetch` read in.
    pub prefetch_pages: u64,
    /// Blocks of a wanted order made free by reclaim aimed at the pages
    /// inside them, when free frames sufficed but no block that large was
    /// free (mixed page sizes fragment the pool; `docs/design.md`).
    pub block_reclaims: u64,
    /// Times no block could be freed that way (every candidate held a
    /// dirty, locked or referenced page).
    pub block_reclaim_failures: u64,
    /// Candidate blocks examined by those scans (bounded per attempt).
    pub block_reclaim_scanned: u64,
    /// Pages evicted to free those blocks (counted in `evictions` too).
    pub block_reclaim_pages: u64,
    /// Whether batched I/O goes through io_uring (false: it was turned off,
    /// or a ring could not be set up, and the positioned syscalls serve).
    pub io_uring: bool,
    /// Dirty memory now, in 4 KiB frames (a dirty 64 KiB page counts 16).
    pub dirty_pages: u64,
    /// Memory under writeback now, in 4 KiB frames.
    pub writeback_now: u64,
    /// Free frames now.
    pub free_pages: u64,
    /// Pages in the page cache now (of every file's page size).
    pub cached_pages: u64,
    /// Bytes those pages hold (never above the capacity).
    pub cached_bytes: u64,
    /// Pages on the active list (of any size).
    pub active_pages: u64,
    /// Pages on the inactive list (of any size).
    pub inactive_pages: u64,
    /// Pages reclaim keeps the inactive list (the window) at now: the
    /// share of the lists' pages the hill climber chose (0.2% to 3.1%,
    /// from hit ratios), or two readahead windows if that is more.
    pub inactive_target: u64,
    /// Total frames.
    pub total_pages: u64,
    /// Free blocks per order, like /proc/buddyinfo.
    pub free_blocks: [usize; MAX_ORDER + 1],
    /// Misses served by the second tier (cleancache gets that hit).
    pub tier_hits: u64,
    /// Misses the second tier did not have (read from the file).
    pub tier_misses: u64,
    /// Clean pages reclaim offered to the second tier and it kept.
    pub tier_puts: u64,
    /// Pages the second tier refused (did not compress, no room, busy),
    /// or dropped to make room.
    pub tier_rejects: u64,
    /// Invalidations sent to the second tier (a page, a range or a file).
    pub tier_invalidations: u64,
    /// Calls into a second tier that panicked (each treated as a miss or
    /// a refused put).
    pub tier_panics: u64,
    /// Pages the second tier returned that the read verifier rejected
    /// (never served; read from the file instead).
    pub tier_verify_failures: u64,
    /// Entries the second tier dropped to make room, since it was made.
    pub tier_evictions: u64,
    /// Pages the second tier holds now.
    pub tier_pages: u64,
    /// Memory the second tier uses now, its overhead included.
    pub tier_bytes: u64,
    /// Bytes of pages the tier holds, uncompressed (for the ratio).
    pub tier_logical_bytes: u64,
    /// Bytes of compressed data it holds, without overhead.
    pub tier_stored_bytes: u64,
    /// Pages of anonymous memory (`PageCache::anonymous`) in memory now.
    pub anon_pages: u64,
    /// Pages of anonymous memory written to the swap area (`pswpout`): by
    /// reclaim, and by the compressed tier's writeback of its cold entries.
    pub swap_outs: u64,
    /// Pages of anonymous memory read back from the swap area (`pswpin`).
    pub swap_ins: u64,
    /// Slots of the swap area in use now: pages whose copy is there.
    pub swap_pages: u64,
    /// Bytes written to the swap area (compressed pages count what they
    /// took, whole pages their size).
    pub swap_bytes_written: u64,
    /// Bytes read from the swap area.
    pub swap_bytes_read: u64,
    /// Swap writes that failed (the page stayed in memory, dirty).
    pub swap_write_errors: u64,
    /// Pages of anonymous memory reclaim stored in the compressed tier
    /// instead of the swap area (frontswap `store`, `zswpout`).
    pub frontswap_stores: u64,
    /// Pages of anonymous memory taken back out of the compressed tier
    /// (frontswap `load`, exclusive, `zswpin`).
    pub frontswap_loads: u64,
    /// Cold anonymous entries the compressed tier wrote to the swap area
    /// to make room (`zswpwb`).
    pub frontswap_writebacks: u64,
    /// Pages of anonymous memory the compressed tier refused (they did not
    /// compress): written to the swap area whole.
    pub frontswap_rejects: u64,
    /// Pages of anonymous memory reclaimed (swapped out, or dropped clean
    /// with a copy in the swap area or tier).
    pub anon_reclaims: u64,
    /// Pages of files reclaimed.
    pub file_reclaims: u64,
    /// Dirty anonymous pages reclaim passed over for file pages (the
    /// swappiness and refault-cost balance).
    pub anon_rotations: u64,
    /// Bytes of the swap area in use now.
    pub swap_bytes_used: u64,
    /// Reclaim's recent cost of anonymous memory (its refaults and
    /// stores), decayed: what the balance weighs (`Builder::swappiness`).
    pub reclaim_anon_cost: u64,
    /// Reclaim's recent cost of file pages (their refaults), decayed.
    pub reclaim_file_cost: u64,
}

impl Stats {
    pub(crate) fn fill_events(&mut self, c: &Counters) {
        // `Event::Hit` counts the hits that took a reference; the
        // optimistic ones count only under their own event (one counter on
        // the hot path instead of two).
        self.hits = c.get(Event::Hit) + c.get(Event::OptimisticHits);
        self.misses = c.get(Event::Miss);
        self.readahead_pages = c.get(Event::ReadaheadPages);
        self.readahead_hits = c.get(Event::ReadaheadHits);
        self.read_calls = c.get(Event::ReadCalls);
        self.write_calls = c.get(Event::WriteCalls);
        self.writeback_pages = c.get(Event::WritebackPages);
        self.evictions = c.get(Event::Evictions);
        self.kswapd_reclaims = c.get(Event::KswapdReclaims);
        self.direct_reclaims = c.get(Event::DirectReclaims);
        self.write_errors = c.get(Event::WriteErrors);
        self.read_errors = c.get(Event::ReadErrors);
        self.throttles = c.get(Event::Throttles);
        self.refaults = c.get(Event::Refaults);
        self.refault_activations = c.get(Event::RefaultActivations);
        self.admissions = c.get(Event::Admissions);
        self.main_evictions = c.get(Event::MainEvictions);
        self.phase_changes = c.get(Event::PhaseChanges);
        self.fill_agings = c.get(Event::FillAgings);
        self.pages_moved = c.get(Event::PagesMoved);
        self.stale_opens = c.get(Event::StaleOpens);
        self.invalidated_pages = c.get(Event::InvalidatedPages);
        self.optimistic_hits = c.get(Event::OptimisticHits);
        self.log_flushes = c.get(Event::LogFlushes);
        self.log_skips = c.get(Event::LogSkips);
        self.verify_failures = c.get(Event::VerifyFailures);
        self.uring_ops = c.get(Event::UringOps);
        self.prefetch_pages = c.get(Event::PrefetchPages);
        self.block_reclaims = c.get(Event::BlockReclaims);
        self.block_reclaim_failures = c.get(Event::BlockReclaimFailures);
        self.block_reclaim_scanned = c.get(Event::BlockReclaimScanned);
        self.block_reclaim_pages = c.get(Event::BlockReclaimPages);
        self.tier_hits = c.get(Event::TierHits);
        self.tier_misses = c.get(Event::TierMisses);
        self.tier_puts = c.get(Event::TierPuts);
        self.tier_rejects = c.get(Event::TierRejects);
        self.tier_invalidations = c.get(Event::TierInvalidations);
        self.tier_panics = c.get(Event::TierPanics);
        self.tier_verify_failures = c.get(Event::TierVerifyFailures);
        self.swap_outs = c.get(Event::SwapOuts);
        self.swap_ins = c.get(Event::SwapIns);
        self.swap_bytes_written = c.get(Event::SwapBytesWritten);
        self.swap_bytes_read = c.get(Event::SwapBytesRead);
        self.frontswap_stores = c.get(Event::FrontswapStores);
        self.frontswap_loads = c.get(Event::FrontswapLoads);
        self.frontswap_writebacks = c.get(Event::FrontswapWritebacks);
        self.frontswap_rejects = c.get(Event::FrontswapRejects);
        self.swap_write_errors = c.get(Event::SwapWriteErrors);
        self.anon_reclaims = c.get(Event::AnonReclaims);
        self.file_reclaims = c.get(Event::FileReclaims);
        self.anon_rotations = c.get(Event::AnonRotations);
    }

    /// The second tier's compression ratio now: bytes of pages it holds
    /// over the memory it uses for them (overhead included); 0 when empty.
    pub fn tier_ratio(&self) -> f64 {
        if self.tier_bytes == 0 {
            0.0
        } else {
            self.tier_logical_bytes as f64 / self.tier_bytes as f64
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kb = |pages: u64| pages * 4;
        writeln!(f, "MemTotal:       {:>10} kB", kb(self.total_pages))?;
        writeln!(f, "MemFree:        {:>10} kB", kb(self.free_pages))?;
        writeln!(f, "Cached:         {:>10} kB", self.cached_bytes / 1024)?;
        writeln!(f, "Active(file):   {:>10} pages", self.active_pages)?;
        writeln!(f, "Inactive(file): {:>10} pages", self.inactive_pages)?;
        writeln!(f, "InactiveTarget: {:>10} pages", self.inactive_target)?;
        writeln!(f, "PolicyMeta:     {:>10} kB", self.policy_bytes / 1024)?;
        writeln!(f, "Dirty:          {:>10} kB", kb(self.dirty_pages))?;
        writeln!(f, "Writeback:      {:>10} kB", kb(self.writeback_now))?;
        writeln!(f, "pgcache_hit {}", self.hits)?;
        writeln!(f, "pgcache_miss {}", self.misses)?;
        writeln!(f, "pgreadahead {}", self.readahead_pages)?;
        writeln!(f, "pgreadahead_hit {}", self.readahead_hits)?;
        writeln!(f, "read_calls {}", self.read_calls)?;
        writeln!(f, "write_calls {}", self.write_calls)?;
        writeln!(f, "pgwriteback {}", self.writeback_pages)?;
        writeln!(f, "pgsteal {}", self.evictions)?;
        writeln!(f, "pgsteal_kswapd {}", self.kswapd_reclaims)?;
        writeln!(f, "pgsteal_direct {}", self.direct_reclaims)?;
        writeln!(f, "write_errors {}", self.write_errors)?;
        writeln!(f, "read_errors {}", self.read_errors)?;
        writeln!(f, "throttles {}", self.throttles)?;
        writeln!(f, "workingset_refault {}", self.refaults)?;
        writeln!(f, "workingset_activate {}", self.refault_activations)?;
        writeln!(f, "lru_admissions {}", self.admissions)?;
        writeln!(f, "lru_main_evictions {}", self.main_evictions)?;
        writeln!(f, "lru_phase_changes {}", self.phase_changes)?;
        writeln!(f, "lru_fill_agings {}", self.fill_agings)?;
        writeln!(f, "pages_moved {}", self.pages_moved)?;
        writeln!(f, "stale_opens {}", self.stale_opens)?;
        writeln!(f, "pginvalidate {}", self.invalidated_pages)?;
        writeln!(f, "pgcache_hit_optimistic {}", self.optimistic_hits)?;
        writeln!(f, "wal_flushes {}", self.log_flushes)?;
        writeln!(f, "wal_reclaim_skips {}", self.log_skips)?;
        writeln!(f, "read_verify_failures {}", self.verify_failures)?;
        writeln!(f, "uring_ops {}", self.uring_ops)?;
        writeln!(f, "pgprefetch {}", self.prefetch_pages)?;
        writeln!(f, "compact_block_reclaims {}", self.block_reclaims)?;
        writeln!(f, "compact_fail {}", self.block_reclaim_failures)?;
        writeln!(f, "compact_blocks_scanned {}", self.block_reclaim_scanned)?;
        writeln!(f, "compact_pages_evicted {}", self.block_reclaim_pages)?;
        writeln!(f, "io_uring {}", u8::from(self.io_uring))?;
        writeln!(f, "cleancache_hits {}", self.tier_hits)?;
        writeln!(f, "cleancache_misses {}", self.tier_misses)?;
        writeln!(f, "cleancache_puts {}", self.tier_puts)?;
        writeln!(f, "cleancache_rejects {}", self.tier_rejects)?;
        writeln!(f, "cleancache_invalidations {}", self.tier_invalidations)?;
        writeln!(f, "cleancache_panics {}", self.tier_panics)?;
        writeln!(f, "cleancache_verify_failures {}", self.tier_verify_failures)?;
        writeln!(f, "tier_pages {}", self.tier_pages)?;
        writeln!(f, "tier_bytes {}", self.tier_bytes)?;
        writeln!(f, "tier_ratio {:.2}", self.tier_ratio())?;
        writeln!(f, "nr_anon_pages {}", self.anon_pages)?;
        writeln!(f, "pswpout {}", self.swap_outs)?;
        writeln!(f, "pswpin {}", self.swap_ins)?;
        writeln!(f, "swap_pages {}", self.swap_pages)?;
        writeln!(f, "swap_bytes_written {}", self.swap_bytes_written)?;
        writeln!(f, "swap_bytes_read {}", self.swap_bytes_read)?;
        writeln!(f, "swap_write_errors {}", self.swap_write_errors)?;
        writeln!(f, "zswpout {}", self.frontswap_stores)?;
        writeln!(f, "zswpin {}", self.frontswap_loads)?;
        writeln!(f, "zswpwb {}", self.frontswap_writebacks)?;
        writeln!(f, "zswp_reject {}", self.frontswap_rejects)?;
        writeln!(f, "pgsteal_anon {}", self.anon_reclaims)?;
        writeln!(f, "pgsteal_file {}", self.file_reclaims)?;
        writeln!(f, "pgrotated_anon {}", self.anon_rotations)?;
        writeln!(f, "swap_bytes_used {}", self.swap_bytes_used)?;
        writeln!(f, "reclaim_cost anon {} file {}", self.reclaim_anon_cost, self.reclaim_file_cost)?;
        write!(f, "buddyinfo")?;
        for n in self.free_blocks {
            write!(f, " {n}")?;
        }
        Ok(())
    }
}
