//! # page-cache
//!
//! A user-space page cache for storage engines, built the way the Linux
//! kernel builds its own: pages of each file indexed in a radix tree (one
//! [`AddressSpace`] per file), lockless lookups (`find_get_page` and
//! friends), a page lock with waiting, LRU lists with two-touch promotion,
//! a reclaimer that frees pages into a buddy allocator carving one large
//! mmap arena into frames, readahead, and writeback with error reporting.
//!
//! ```
//! use page_cache::PageCache;
//! # fn main() -> std::io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("data");
//! let cache = PageCache::new(16 << 20)?;              // 16 MiB of frames
//! let file = cache.create(&path)?;                    // like File::create
//! file.write_all_at(b"hello, page cache", 4090)?;     // spans two pages
//! file.sync_data()?;                                  // like fdatasync
//! let mut buf = [0u8; 17];
//! file.read_exact_at(&mut buf, 4090)?;
//! assert_eq!(&buf, b"hello, page cache");
//! // The page-level interface, with the kernel's names:
//! let page = file.mapping().find_get_page(0).expect("cached");
//! assert!(page.is_uptodate());
//! assert_eq!(&page.read()[4090..4096], b"hello,");
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! `src/` is four layers, bottom to top: `mem/` (arena, descriptors and
//! flags, page lock and waiting, buddy, zone), `index/` (the radix tree,
//! [`AddressSpace`] and the `find_*` family), `reclaim/` (LRU lists,
//! pagevecs, workingset shadows, kswapd and direct reclaim, allocation
//! with reclaim) and `io/` ([`CachedFile`]'s read and write paths,
//! readahead, writeback, truncation, the [`Backing`]); the cache
//! ([`PageCache`], the open-file table), `stats` and `sync` sit on top.
//! Where each protocol lives: lockless lookup and removal in
//! `index/mapping.rs`; references, flags and read guards in
//! `mem/page.rs`; the page lock and bit waiting in `mem/wait.rs`; the
//! buddy in `mem/buddy.rs`; two-touch promotion and batching in
//! `reclaim/lru.rs`; isolation, the refcount freeze and watermarks in
//! `reclaim/vmscan.rs`; writeback in `io/writeback.rs`, and errseq
//! in `index/mapping.rs`. The few calls that run up a layer are listed in
//! docs/design.md ("Upward calls").
//!
//! # Lock order
//!
//! page lock → mapping tree lock → LRU lock → buddy lock (per-thread lists
//! before the free lists). Reclaim holds the locks of several pages at once
//! (a batch removed under one tree lock), all taken with `trylock`, so it
//! never waits while holding one. A mapping's `size_lock` (the kernel's
//! `i_rwsem`) comes before any page lock. `CachedFile::copy_from` holds the
//! destination's `size_lock`, then a source page (a read guard, or its lock
//! by `trylock`), then one file's tree lock at a time, never both. No file
//! I/O and no system allocation happens under the tree, LRU or buddy locks;
//! file I/O happens under page locks and with pages under writeback.
//!
//! Anonymous memory ([`PageCache::anonymous`], `io::anon`): page lock →
//! a swap map shard → a compressed tier shard → the swap area's allocator.
//! Swap writes and reads run under page locks (and, for the one page a
//! cut rewrites, its swap map shard), never under the tier's or the
//! allocator's locks; the tier's writeback copies entries out under its
//! shard lock, writes them with no lock held, then takes each entry's
//! swap map shard and the tier shard again to commit.
//!
//! An engine's [`WriteAheadLog::flush_to`] runs with no lock of the cache
//! held, only with the pages of the run about to be written under
//! writeback (kswapd, which writes with a page locked, never calls it: it
//! leaves pages ahead of the log). The read verifier runs with the pages
//! it checks locked, as the read that filled them.
//!
//! The pages of a queued asynchronous readahead window are locked by the
//! job, not by a thread: whoever runs it (a worker, or a reader about to
//! wait on one of its pages) reads them and unlocks them, and a job that
//! never runs unlocks them when it drops. Running a job takes no page lock
//! (only the tree, LRU and buddy locks, briefly) and waits for nothing but
//! its own read, so a reader waiting on such a page waits only for I/O.
//!
//! # Page flags
//!
//! See [`PageFlags`] and the state table in the `page` module docs: LOCKED
//! (page lock held), WAITERS (someone sleeps on LOCKED), ERROR (last read
//! failed), REFERENCED (touched once), UPTODATE (bytes valid), DIRTY (bytes
//! newer than the file), LRU (on a list), ACTIVE (on the active list),
//! WRITEBACK (being written), RECLAIM (reclaim is writing it), READAHEAD
//! (marker that starts the next window), BUDDY (free block head), HEAD/TAIL
//! (compound allocation), PRIVATE (owner state), MAPPEDTODISK (blocks
//! allocated), WB_WAITERS (someone sleeps on WRITEBACK). The top 12 bits
//! of the same word count read guards ([`PageRef::read`]); they are masked
//! out of [`Page::flags`].
//!
//! # Optimistic reads
//!
//! Each descriptor carries a version: odd while the page's lock holder
//! changes its bytes (`LockedPage::data_mut`) or identity (insertion,
//! removal, a move between files), even again at unlock. `read_at` hits
//! copy without a reference or a guard, with per-byte atomic loads, and
//! use the bytes only if the version did not move; lookups walk the tree
//! without an epoch pin (its nodes are type-stable) and recheck a tree
//! sequence that writers make odd while they unlink nodes. A leaf table
//! beside each tree maps `index >> 6` to its leaf, so a lookup in a
//! dense file is two loads; writers keep it under the tree mutex, taking
//! a leaf out inside the odd sequence. The optimistic read uses it as a
//! hint without the sequence: the page's identity and version validate
//! whatever frame it names.
//!
//! # Large pages
//!
//! A file opened with [`PageCache::open_with_page_size`] (4 to 64 KiB) has
//! pages of that size: each is one compound block of the buddy allocator,
//! whose head descriptor is the page (flags, count, lock, version, LRU
//! place, tree slot, shadow); HEAD marks it, TAIL marks the other frames,
//! which point at it. The first tail keeps the block's order and two masks
//! of the page's 4 KiB blocks, both under the page lock: the dirty ones
//! (writeback writes only those) and, while the page as a whole is not
//! UPTODATE, the ones a partial write has filled (a later read fills the
//! rest). When free frames suffice but no block of the wanted order is
//! free, reclaim empties one block (docs/design.md, "Large pages").
//!
//! # References
//!
//! The page cache holds one reference per cached page; every [`PageRef`]
//! holds one; the LRU lists hold none. A frame returns to the buddy pool only
//! when its count drops to zero (`put_page`), after it is off the LRU, or
//! through reclaim's freeze of exactly (cache + reclaimer) to zero.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// The layers (bottom to top: mem, index, reclaim, io); each folder's
// module docs say what it owns and which layers it may call.
mod index;
mod io;
mod mem;
mod reclaim;
// The cache on top, and what every layer shares.
mod cache;
#[cfg(feature = "object-store")]
pub mod object;
#[cfg(feature = "redb")]
pub mod redb;
mod stats;
mod sync;
pub mod tier;

#[cfg(all(test, loom))]
mod loom_models;

/// Bytes in a frame, and in a page of a file opened without a page size.
pub const PAGE_SIZE: usize = 4096;

/// The largest page size a file can have
/// ([`PageCache::open_with_page_size`]): 16 frames.
pub const MAX_PAGE_SIZE: usize = 65536;

/// Frames per page at [`MAX_PAGE_SIZE`]: the 4 KiB blocks whose dirty and
/// uptodate state a large page keeps apart.
pub const MAX_PAGE_BLOCKS: usize = MAX_PAGE_SIZE / PAGE_SIZE;

pub use cache::{Builder, PageCache};
pub use index::mapping::{AddressSpace, Tag};
pub use io::backing::{Backing, FileBacking, FileStat};
#[cfg(feature = "fault-injection")]
#[doc(inline)]
pub use io::fault;
pub use io::filemap::{CachedFile, FileCursor};
pub use io::truncate::Invalidated;
pub use io::wal::{ReadVerifier, WriteAheadLog};
pub use mem::buddy::MAX_ORDER;
pub use mem::page::{LockedPage, Page, PageFlags, PageReadGuard, PageRef};
pub use reclaim::lru::PAGEVEC_SIZE;
pub use reclaim::pagevec::{put_pages_list, PageVec};
pub use stats::Stats;

/// The byte-wise atomic copy that optimistic reads make of page bytes a
/// writer may be changing (`rep movsb` on x86_64, relaxed atomic loads
/// elsewhere), for benchmarks that weigh it against a plain copy. Copies
/// `src` into `dst`, which must be as long.
pub fn copy_atomic_per_byte(src: &[u8], dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "copy_atomic_per_byte needs equal lengths");
    // SAFETY: `src` is a shared borrow of `dst.len()` readable bytes, which
    // nobody writes while it lives.
    unsafe { mem::arena::copy_racy(src.as_ptr(), dst) }
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
