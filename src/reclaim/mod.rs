//! The reclaim layer, following `mm/swap.c`, `mm/vmscan.c` and
//! `mm/workingset.c`: the active and inactive LRU lists with their
//! per-thread batches, `PageVec` and batched release, the shadows that
//! detect refaults, and the reclaimer (kswapd and direct reclaim), which
//! is also the allocation slow path (`alloc_page` with reclaim).
//!
//! May call: `index` (to remove a page from its file's tree), `mem`,
//! `sync`, `stats`. Upward (docs/design.md, "Upward calls"): kswapd writes
//! a dirty page out through the writeback layer (`pageout`) and wakes the
//! flusher.

pub(crate) mod climber;
pub(crate) mod lru;
pub(crate) mod pagevec;
pub(crate) mod sketch;
pub(crate) mod vmscan;
pub(crate) mod workingset;
