//! The I/O layer, following the read, write and writeback halves of
//! `mm/filemap.c`, `mm/readahead.c`, `mm/page-writeback.c`,
//! `fs/fs-writeback.c` and `mm/truncate.c`: [`CachedFile`](filemap::CachedFile)
//! and its read and write paths, readahead and scattered prefetch,
//! writeback and the flusher, truncation, invalidation and close-to-open
//! revalidation, the engine's hooks (the write-ahead-log rule, the read
//! verifier), batched I/O on io_uring, and the backing file underneath
//! (plus the fault-injecting one for tests).
//!
//! May call every layer below it: `reclaim`, `index`, `mem`, `sync`,
//! `stats`. It calls nothing above it (`cache` owns the open-file table and
//! starts this layer's threads).

pub(crate) mod anon;
pub(crate) mod backing;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub(crate) mod filemap;
pub(crate) mod prefetch;
pub(crate) mod readahead;
pub(crate) mod swap;
pub(crate) mod truncate;
pub(crate) mod uring;
pub(crate) mod wal;
pub(crate) mod writeback;
