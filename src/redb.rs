//! redb's `StorageBackend` over a [`CachedFile`] (follows redb's
//! `src/tree_store/page_store/file_backend`).
//!
//! [`CachedBackend`] is a [redb](https://docs.rs/redb) storage backend whose
//! reads and writes go through a [`PageCache`], with the file locking of
//! redb's own `FileBackend`, so that a database open through it is refused
//! to every other handle (this backend's or redb's) exactly as a database
//! redb opened itself would be. Built with the `redb` cargo feature.
//!
//! It tracks redb 4.6 (written against 4.6.0, the version in `Cargo.lock`;
//! the dependency asks for 4.6 or a later 4.x) and its default API: the
//! `StorageBackend` I/O methods return `std::io::Error`. redb's `experimental-api-5` feature changes that
//! signature and is not supported.
//!
//! ```
//! use page_cache::redb::CachedBackend;
//! use page_cache::PageCache;
//! use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};
//!
//! const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("db.redb");
//! let cache = PageCache::new(16 << 20)?;
//! let db = Database::builder().create_with_backend(CachedBackend::create(&cache, &path)?)?;
//! let txn = db.begin_write()?;
//! txn.open_table(TABLE)?.insert(1, 2)?;
//! txn.commit()?;
//! assert_eq!(db.begin_read()?.open_table(TABLE)?.get(1)?.unwrap().value(), 2);
//!
//! // The file is locked: a second open is refused, as redb refuses it.
//! let again = Database::builder().create_with_backend(CachedBackend::open(&cache, &path, true)?);
//! assert!(matches!(again, Err(DatabaseError::DatabaseAlreadyOpen)));
//! assert!(matches!(Database::open(&path), Err(DatabaseError::DatabaseAlreadyOpen)));
//! # Ok(()) }
//! ```
//!
//! # Locks
//!
//! redb asks its backend for locks through `StorageBackend::try_lock_range`
//! and friends. Its `FileBackend` grants byte-range locks on Linux, the
//! Apple platforms and Windows, and elsewhere (its `fallback.rs`) only the
//! whole-storage range, with a whole-file lock (`flock(2)` on Unix):
//! exclusive for a writer, shared for a read-only handle. This backend is
//! that fallback: it answers the whole-storage range (`..` or `0..`) with
//! [`File::try_lock`] / [`File::try_lock_shared`] and every other range, and
//! the blocking and query methods, with `BackendError::Unsupported`. A lock
//! held elsewhere makes the `try_` call return `Ok(false)`, which redb turns
//! into `DatabaseError::DatabaseAlreadyOpen`.
//!
//! [`CachedFile`] does not expose a file descriptor, so the lock is taken on
//! a second [`File`] the backend opens on the same path and keeps until it is
//! closed. `flock` locks belong to an open file description, so a second
//! backend on the same path conflicts with the first even in the same
//! process and through the same [`PageCache`], as two of redb's
//! `FileBackend`s do. redb's own `FileBackend` on Linux takes the same
//! `flock` beside its byte-range locks (its compatibility with redb before
//! 4.3): exclusive for an `ExclusiveWriter` writer, shared for read-only and
//! shared-mode handles. So this backend and redb's exclude each other in
//! both directions, and read-only handles of both share the file.
//!
//! What that supports, as redb documents for whole-storage-only backends:
//!
//! - `ConcurrencyMode::ExclusiveWriter`, redb's default: one writer, or any
//!   number of read-only handles (`Builder::open_read_only_with_backend`).
//! - Not `SingleWriter` or `MultiWriter`: redb fails those opens, since they
//!   need byte-range locks. That is also the only sound answer for a
//!   user-space cache: each process would serve its own cached pages, never
//!   seeing the other processes' commits.
//!
//! One gap, shared with redb's own read-only handles of 4.0 to 4.2: the
//! lock does not refuse a read-only `CachedBackend` beside a redb
//! `FileBackend` writer open in `SingleWriter` or `MultiWriter` mode, since
//! such a writer holds the `flock` shared. (redb 4.6 then refuses the open
//! with `DatabaseError::RepairAborted`, because a live writer leaves the
//! header's recovery flag set, but that is no lock.) Do not open one beside
//! such a writer.
//!
//! `StorageBackend::close`, which redb calls once when it is done with the
//! storage, first writes back to the file every page this backend dirtied
//! ([`CachedFile::flush`]: no `fdatasync`, which redb's commits do through
//! `sync_data`), then releases the lock. The next holder of the lock, in any
//! process, thus reads every byte redb wrote, as it would after redb's own
//! backend, whose writes go straight to the kernel.
//!
//! # Reopening
//!
//! The cache keeps a file's clean pages after its last handle is dropped,
//! and revalidates them at the next open (close-to-open, see
//! [`PageCache`]'s coherence notes): a database changed while it was closed
//! (by another process, a restore, a repair tool) is read from the file as
//! it is now, and redb's own corruption and repair checks see the change.
//! A file changed while this backend has it open is not revalidated; the
//! lock keeps redb's own writers out, and other writers must not write it.

// redb 4.6 needs Rust 1.90 (its `rust-version`), so a build with this
// module already needs more than the 1.89 that stabilised `File::lock`.
#![allow(clippy::incompatible_msrv)]

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ::redb::{BackendError, StorageBackend};

use crate::{CachedFile, PageCache};

/// redb's storage in a [`CachedFile`], locked like redb's own `FileBackend`
/// (see the [module docs](self)).
///
/// Hand it to `redb::Builder::create_with_backend` (a writer) or
/// `redb::Builder::open_read_only_with_backend` (a reader).
#[derive(Debug)]
pub struct CachedBackend {
    // Dropped before `lock`: a backend dropped without `close` writes its
    // pages back (the last close of a `CachedFile` does) before the file
    // lock goes.
    file: CachedFile,
    // The open file description that holds the `flock`.
    lock: File,
    whole_file_locked: AtomicBool,
    // Whether `write` or `set_len` ran, so that `close` has pages to write back.
    written: AtomicBool,
}

impl CachedBackend {
    /// A backend over `file`, which must have been opened on `path`: the lock
    /// is taken on a second open of `path`, read-write where the file allows
    /// it and read-only otherwise. (Over NFS, Linux emulates `flock` with a
    /// byte-range lock, whose exclusive form needs write access, as redb's
    /// writers have on their own read-write descriptor.)
    ///
    /// Nothing is locked yet: redb takes the lock when it opens the database.
    pub fn new(file: CachedFile, path: impl AsRef<Path>) -> io::Result<CachedBackend> {
        let path = path.as_ref();
        let lock = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(lock) => lock,
            Err(_) => File::open(path)?,
        };
        Ok(CachedBackend::with_lock(file, lock))
    }

    /// Opens the existing file `path` through `cache`: read-write for a
    /// database, as `redb::Builder::open` opens it, or read-only (`writable`
    /// false) for a read-only database, as `Builder::open_read_only` does.
    pub fn open(cache: &PageCache, path: impl AsRef<Path>, writable: bool) -> io::Result<CachedBackend> {
        let mut options = OpenOptions::new();
        options.read(true).write(writable);
        CachedBackend::open_with(cache, path.as_ref(), &options)
    }

    /// Opens `path` read-write through `cache`, creating it if it does not
    /// exist and never truncating it, as `redb::Builder::create` does: redb
    /// then initialises an empty file and opens an existing database. (Not
    /// [`PageCache::create`], which truncates: that would destroy a database
    /// before its lock could refuse the open.)
    pub fn create(cache: &PageCache, path: impl AsRef<Path>) -> io::Result<CachedBackend> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        CachedBackend::open_with(cache, path.as_ref(), &options)
    }

    fn open_with(cache: &PageCache, path: &Path, options: &OpenOptions) -> io::Result<CachedBackend> {
        let file = cache.open_with(path, options)?;
        // With the data's access, as redb locks the descriptor it reads and
        // writes (and after the open above, which may have created the file).
        let mut lock_options = options.clone();
        lock_options.create(false).truncate(false);
        Ok(CachedBackend::with_lock(file, lock_options.open(path)?))
    }

    fn with_lock(file: CachedFile, lock: File) -> CachedBackend {
        CachedBackend { file, lock, whole_file_locked: AtomicBool::new(false), written: AtomicBool::new(false) }
    }

    /// The cached file the database lives in.
    pub fn file(&self) -> &CachedFile {
        &self.file
    }

    fn lock_whole_file(&self, shared: bool) -> io::Result<bool> {
        let result = if shared { self.lock.try_lock_shared() } else { self.lock.try_lock() };
        match result {
            Ok(()) => {
                self.whole_file_locked.store(true, Ordering::Release);
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }

    fn unlock_whole_file(&self) -> io::Result<()> {
        if self.whole_file_locked.swap(false, Ordering::AcqRel) {
            self.lock.unlock()?;
        }
        Ok(())
    }
}

/// The whole storage, the one range a whole-file lock covers.
fn is_whole_storage(start: Bound<u64>, end: Bound<u64>) -> bool {
    matches!(start, Bound::Unbounded | Bound::Included(0)) && end == Bound::Unbounded
}

/// The I/O goes through the cache; the locks follow redb's `fallback.rs`:
/// only the whole storage can be locked.
impl StorageBackend for CachedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.file.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.written.store(true, Ordering::Relaxed);
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.written.store(true, Ordering::Relaxed);
        self.file.write_all_at(data, offset)
    }

    fn close(&self) -> Result<(), io::Error> {
        // The pages reach the file before another handle may lock it; the
        // lock is released even if that fails, as close(2) releases it.
        let flushed = if self.written.load(Ordering::Relaxed) { self.file.flush() } else { Ok(()) };
        let unlocked = self.unlock_whole_file();
        flushed.and(unlocked)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if is_whole_storage(start, end) {
            self.lock_whole_file(false).map_err(BackendError::from)
        } else {
            Err(BackendError::Unsupported)
        }
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        if is_whole_storage(start, end) {
            self.lock_whole_file(true).map_err(BackendError::from)
        } else {
            Err(BackendError::Unsupported)
        }
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        if !is_whole_storage(start, end) {
            return Err(BackendError::Unsupported);
        }
        self.unlock_whole_file().map_err(BackendError::from)
    }

    fn lock_range(&self, _start: Bound<u64>, _end: Bound<u64>) -> Result<(), BackendError> {
        Err(BackendError::Unsupported)
    }

    fn lock_shared_range(&self, _start: Bound<u64>, _end: Bound<u64>) -> Result<(), BackendError> {
        Err(BackendError::Unsupported)
    }

    fn query_lock_range(&self, _start: Bound<u64>, _end: Bound<u64>) -> Result<bool, BackendError> {
        Err(BackendError::Unsupported)
    }
}
