//! The memory layer, following `mm/page_alloc.c`, `include/linux/mmzone.h`
//! and the descriptor headers (`mm_types.h`, `page-flags.h`, `page_ref.h`):
//! the frame arena, the 32-byte page descriptors with their flags and
//! reference counts, the page lock and waiting on page bits, the buddy
//! allocator, and the zone that ties one cache's memory together.
//!
//! May call: `sync` and `stats` only. The calls it makes back up the stack
//! are listed in docs/design.md ("Upward calls"): the last `put_page` of a
//! page still on an LRU list takes it off that list, `PageRef::mark_accessed`
//! feeds the LRU's two-touch promotion, `LockedPage::set_dirty` tags the
//! page's tree, and an allocation below the watermarks runs reclaim through
//! the hook the cache passes down at construction (`Zone::new`).

pub(crate) mod arena;
pub(crate) mod buddy;
pub(crate) mod page;
pub(crate) mod wait;
pub(crate) mod zone;
