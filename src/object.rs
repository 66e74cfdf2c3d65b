//! Pages of objects in S3-compatible storage, read with range GETs the way
//! `object_store`'s `get_ranges`, SlateDB and RisingWave read them: an
//! [`ObjectBacking`] is a read-only [`Backing`] over one version of one
//! object (its ETag and size, taken by a HEAD at open, are its identity).
//!
//! ```no_run
//! use std::sync::Arc;
//! use page_cache::object::{object_store, ObjectBacking};
//! use page_cache::PageCache;
//! use object_store::aws::AmazonS3Builder;
//! # fn main() -> std::io::Result<()> {
//! // Endpoint, region and credentials from the usual AWS_* variables.
//! let store = AmazonS3Builder::from_env().with_bucket_name("bucket").build()?;
//! let backing = ObjectBacking::new(Arc::new(store), "path/to/object".into())?;
//! let cache = PageCache::new(64 << 20)?;
//! let file = cache.open_backing_with_page_size(Arc::new(backing), false, 65536)?;
//! let mut buf = vec![0u8; 4096];
//! file.read_exact_at(&mut buf, 1 << 20)?;
//! # Ok(()) }
//! ```
//!
//! # Reads
//!
//! Every [`read_vectored_at`](Backing::read_vectored_at) is one ranged GET
//! (a readahead window is one vectored call, hence one request), clipped
//! at the object's end: a read past the end comes back short, as a file's
//! does. [`read_batch`](Backing::read_batch) (what
//! [`CachedFile::prefetch`](crate::CachedFile::prefetch) calls) merges
//! ranges less than [`COALESCE_GAP`] apart into requests of up to
//! [`COALESCE_MAX`] bytes and runs up to [`CONCURRENCY`] of them at once,
//! as `object_store`'s `get_ranges` does (whose gap is 1 MiB: ours is 64
//! KiB, so scattered pages are not read with megabytes between them). Each GET carries `If-Match` with
//! the ETag of the open, so the pages of one open all come from one version
//! of the object: an object overwritten while open fails its next read with
//! `ErrorKind::StaleNetworkFileHandle` (NFS's `ESTALE`) rather than mixing
//! old and new bytes. Open it again (a new `ObjectBacking`, a new HEAD) to
//! read the new version.
//!
//! Errors are `std::io::Error`: 404 is `NotFound`, 403 and 401
//! `PermissionDenied`, no answer within the timeout `TimedOut`, a refused
//! connection `ConnectionRefused`, an answer shorter than asked
//! `UnexpectedEof`; the message names the object and the byte range.
//! Retries of transient failures (5xx, resets) are the store's: configure
//! them with `object_store`'s `RetryConfig` and `ClientOptions` when
//! building it. Whatever the store does, no call waits past the backing's
//! timeout ([`ObjectBacking::with_timeout`], 30 s by default).
//!
//! # Writes
//!
//! Objects are immutable: writes, `set_len` and syncs fail with
//! `ErrorKind::ReadOnlyFilesystem`, and so does a writable open of it
//! ([`Backing::is_read_only`]): open it with `writable = false`.
//!
//! # Threads and the runtime
//!
//! `object_store` is async; this backing is called by synchronous readers.
//! It blocks the calling thread on a tokio runtime: one shared by every
//! `ObjectBacking` of the process (two worker threads, made at the first
//! open, so pooled connections outlive any one backing), or one the caller
//! hands over with [`ObjectBacking::with_runtime`]. A call from a thread
//! inside a tokio runtime (an async task, or `spawn_blocking`) would block
//! that runtime and tokio forbids it: such calls fail with
//! `ErrorKind::Unsupported` instead of panicking. Call from plain threads.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::stream::{self, StreamExt};
pub use object_store;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use crate::io::backing::{Backing, FileStat};

/// Ranges of a batch less than this far apart are read with one request
/// (the bytes between them are read and dropped). 64 KiB, Lance's choice:
/// a gap that small costs less than a request of its own, while
/// `object_store`'s `OBJECT_STORE_COALESCE_DEFAULT` of 1 MiB (made for
/// large sequential ranges) turned 64 random 4 KiB pages of a 64 MiB
/// object into about 24 GETs moving about 17 MiB.
pub const COALESCE_GAP: u64 = 64 << 10;

/// The largest request a batch merges ranges into (Lance's limit).
pub const COALESCE_MAX: u64 = 16 << 20;

/// Requests of one batch in flight at once (`get_ranges`'s).
pub const CONCURRENCY: usize = 10;

/// The default bound on one call, [`ObjectBacking::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `FileStat::dev` of every object: a namespace no block device has.
const OBJECT_DEV: u64 = 0x6f62_6a65_6374_0000; // "object"

/// The runtime every `ObjectBacking` without one of its own blocks on.
fn shared_runtime() -> io::Result<tokio::runtime::Handle> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("page-cache-object")
        .enable_all()
        .build()?;
    // A racing first open may have set one meanwhile: keep that one (ours drops).
    Ok(RUNTIME.get_or_init(|| rt).handle().clone())
}

/// FNV-1a: a hash that stays the same across runs and Rust versions.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A read-only [`Backing`] over one version of one object in an
/// [`ObjectStore`]: see the [module docs](self).
pub struct ObjectBacking {
    store: Arc<dyn ObjectStore>,
    path: Path,
    meta: ObjectMeta,
    stat: FileStat,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    requests: AtomicU64,
}

impl fmt::Debug for ObjectBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBacking")
            .field("store", &self.store.to_string())
            .field("path", &self.path.as_ref())
            .field("size", &self.meta.size)
            .field("e_tag", &self.meta.e_tag)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ObjectBacking {
    /// Opens `path` in `store`: one HEAD, whose size and ETag are the
    /// object's identity for as long as this backing lives. Blocks on the
    /// process's shared runtime, bounded by [`DEFAULT_TIMEOUT`]. Fails with
    /// `NotFound` for a missing object, `Unsupported` when called from
    /// inside a tokio runtime.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path) -> io::Result<ObjectBacking> {
        Self::open(store, path, None, DEFAULT_TIMEOUT)
    }

    /// As [`new`](Self::new), blocking on `runtime` rather than the shared
    /// one. It must run its own I/O and timers (a multi-thread runtime, or
    /// one another thread drives with `block_on`).
    pub fn with_runtime(
        store: Arc<dyn ObjectStore>,
        path: Path,
        runtime: tokio::runtime::Handle,
    ) -> io::Result<ObjectBacking> {
        Self::open(store, path, Some(runtime), DEFAULT_TIMEOUT)
    }

    /// As [`new`](Self::new), with every call (the HEAD too) bounded by
    /// `timeout` rather than [`DEFAULT_TIMEOUT`]: a call with no answer by
    /// then fails with `TimedOut`.
    pub fn with_timeout(store: Arc<dyn ObjectStore>, path: Path, timeout: Duration) -> io::Result<ObjectBacking> {
        Self::open(store, path, None, timeout)
    }

    /// Bounds every later call by `timeout` (`TimedOut` past it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        runtime: Option<tokio::runtime::Handle>,
        timeout: Duration,
    ) -> io::Result<ObjectBacking> {
        outside_runtime()?;
        let runtime = match runtime {
            Some(h) => h,
            None => shared_runtime()?,
        };
        let head = {
            let (store, path) = (store.clone(), path.clone());
            async move { store.get_opts(&path, GetOptions::new().with_head(true)).await.map(|r| r.meta) }
        };
        let meta = block_on(&runtime, timeout, head).map_err(|e| e.context(&store, &path, "HEAD", None))?;
        let description = store.to_string();
        let mtime_ns = meta.last_modified.timestamp_nanos_opt().map_or(0, i128::from);
        // Who the object is: the store and path (dev, ino); which version
        // (btime): the ETag where the store gives one, else the size and
        // the last modification.
        let version = match &meta.e_tag {
            Some(tag) => fnv1a(&[tag.as_bytes()]),
            None => fnv1a(&[&meta.size.to_le_bytes(), &mtime_ns.to_le_bytes()]),
        };
        let stat = FileStat {
            dev: OBJECT_DEV,
            ino: fnv1a(&[description.as_bytes(), path.as_ref().as_bytes()]),
            btime_ns: Some(version as i128),
            size: meta.size,
            mtime_ns,
            ctime_ns: mtime_ns,
            mode: libc::S_IFREG | 0o444,
        };
        Ok(ObjectBacking { store, path, meta, stat, runtime, timeout, requests: AtomicU64::new(0) })
    }

    /// The object's metadata as the HEAD at open saw it.
    pub fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    /// The store the object is in.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object's path in its store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bound on each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GET requests issued so far (the HEAD at open not counted).
    pub fn requests(&self) -> u64 {
        // Relaxed: a statistic.
        self.requests.load(Ordering::Relaxed)
    }

    /// `[offset, offset + len)` clipped at the object's end.
    fn clip(&self, offset: u64, len: usize) -> Range<u64> {
        let start = offset.min(self.meta.size);
        start..offset.saturating_add(len as u64).min(self.meta.size)
    }

    /// One ranged GET of a non-empty range inside the object, with
    /// `If-Match`; checks the length of the answer.
    async fn get(
        store: Arc<dyn ObjectStore>,
        path: Path,
        e_tag: Option<String>,
        range: Range<u64>,
    ) -> Result<bytes::Bytes, GetError> {
        let opts = GetOptions {
            if_match: e_tag.clone(),
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let result = store.get_opts(&path, opts).await.map_err(GetError::Store)?;
        // A store that ignores If-Match still names the version it sent.
        if let (Some(want), Some(got)) = (&e_tag, &result.meta.e_tag) {
            if want != got {
                return Err(GetError::Changed);
            }
        }
        let bytes = result.bytes().await.map_err(GetError::Store)?;
        let want = (range.end - range.start) as usize;
        if bytes.len() < want {
            return Err(GetError::Short(bytes.len(), want));
        }
        Ok(bytes)
    }

    fn error(&self, e: GetError, range: &Range<u64>) -> io::Error {
        e.context(&self.store, &self.path, "GET", Some(range))
    }
}

/// Why a GET failed, before it is told as an `io::Error`.
enum GetError {
    Store(object_store::Error),
    Changed,
    Short(usize, usize),
    Timeout(Duration),
    InRuntime,
}

impl GetError {
    fn context(self, store: &Arc<dyn ObjectStore>, path: &Path, op: &str, range: Option<&Range<u64>>) -> io::Error {
        let what = match range {
            Some(r) => format!("{op} {store}/{path} bytes {}..{}", r.start, r.end),
            None => format!("{op} {store}/{path}"),
        };
        match self {
            GetError::Store(e) => io::Error::new(store_error_kind(&e), format!("{what}: {e}")),
            GetError::Changed => io::Error::new(
                io::ErrorKind::StaleNetworkFileHandle,
                format!("{what}: the object changed since it was opened (ETag); open it again"),
            ),
            GetError::Short(got, want) => {
                io::Error::new(io::ErrorKind::UnexpectedEof, format!("{what}: the store sent {got} of {want} bytes"))
            }
            GetError::Timeout(t) => io::Error::new(io::ErrorKind::TimedOut, format!("{what}: no answer within {t:?}")),
            GetError::InRuntime => in_runtime_error(),
        }
    }
}

fn in_runtime_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "page_cache::object: called from inside a tokio runtime, which a blocking read would stall; \
         read from a plain thread (std::thread), not an async task or spawn_blocking",
    )
}

fn outside_runtime() -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(in_runtime_error()),
        Err(_) => Ok(()),
    }
}

/// The `io::ErrorKind` of a store's error: its variant, else the HTTP
/// failure or the `io::Error` underneath.
fn store_error_kind(e: &object_store::Error) -> io::ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => return io::ErrorKind::NotFound,
        E::Precondition { .. } => return io::ErrorKind::StaleNetworkFileHandle,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => return io::ErrorKind::PermissionDenied,
        E::NotSupported { .. } | E::NotImplemented { .. } => return io::ErrorKind::Unsupported,
        E::InvalidPath { .. } => return io::ErrorKind::InvalidInput,
        _ => {}
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            match h.kind() {
                K::Connect => return io::ErrorKind::ConnectionRefused,
                K::Timeout => return io::ErrorKind::TimedOut,
                K::Interrupted => return io::ErrorKind::ConnectionReset,
                K::Decode => return io::ErrorKind::InvalidData,
                _ => {}
            }
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            // Interrupted means "try again" to the callers of a backing.
            if io.kind() != io::ErrorKind::Interrupted {
                return io.kind();
            }
        }
        source = s.source();
    }
    io::ErrorKind::Other
}

/// Runs `fut` on `runtime`, blocking this thread, for at most `timeout`.
fn block_on<T>(
    runtime: &tokio::runtime::Handle,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, object_store::Error>>,
) -> Result<T, GetError> {
    block_on_get(runtime, timeout, async move { fut.await.map_err(GetError::Store) })
}

fn block_on_get<T>(
    runtime: &tokio::runtime::Handle,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, GetError>>,
) -> Result<T, GetError> {
    // tokio panics on a block_on inside a runtime: refuse first.
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(GetError::InRuntime);
    }
    runtime.block_on(async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(GetError::Timeout(timeout)),
        }
    })
}

/// Copies `src` into the buffers, in order; returns the bytes copied.
fn scatter(bufs: &mut [IoSliceMut<'_>], mut src: &[u8]) -> usize {
    let mut n = 0;
    for buf in bufs.iter_mut() {
        if src.is_empty() {
            break;
        }
        let k = buf.len().min(src.len());
        buf[..k].copy_from_slice(&src[..k]);
        src = &src[k..];
        n += k;
    }
    n
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        "page_cache::object: objects are immutable; an ObjectBacking is read-only (open it with writable = false)",
    )
}

impl Backing for ObjectBacking {
    /// One ranged GET for the whole call, clipped at the object's end (a
    /// read at or past it returns 0 with no request).
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let range = self.clip(offset, len);
        if range.is_empty() {
            return Ok(0);
        }
        // Relaxed: a statistic.
        self.requests.fetch_add(1, Ordering::Relaxed);
        let get = Self::get(self.store.clone(), self.path.clone(), self.meta.e_tag.clone(), range.clone());
        let bytes = block_on_get(&self.runtime, self.timeout, get).map_err(|e| self.error(e, &range))?;
        Ok(scatter(bufs, &bytes[..(range.end - range.start) as usize]))
    }

    /// Merges requests less than [`COALESCE_GAP`] apart into GETs of up to
    /// [`COALESCE_MAX`] bytes and runs [`CONCURRENCY`] at once; a request
    /// shares the result of the GET that holds it.
    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<io::Result<usize>> {
        let ranges: Vec<Range<u64>> = reqs.iter().map(|(off, buf)| self.clip(*off, buf.len())).collect();
        let groups = coalesce(&ranges);
        // Relaxed: a statistic.
        self.requests.fetch_add(groups.len() as u64, Ordering::Relaxed);
        let fetches: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(g, (range, _))| {
                let get = Self::get(self.store.clone(), self.path.clone(), self.meta.e_tag.clone(), range.clone());
                async move { (g, get.await) }
            })
            .collect();
        let nr_groups = groups.len();
        let all = async move {
            let mut out: Vec<Option<Result<bytes::Bytes, GetError>>> = Vec::new();
            out.resize_with(nr_groups, || None);
            let mut done = stream::iter(fetches).buffer_unordered(CONCURRENCY);
            while let Some((g, r)) = done.next().await {
                out[g] = Some(r);
            }
            Ok::<_, GetError>(out)
        };
        let mut results: Vec<io::Result<usize>> = ranges.iter().map(|_| Ok(0)).collect();
        let fetched = match block_on_get(&self.runtime, self.timeout, all) {
            Ok(r) => r,
            Err(e) => {
                // One error for all: the batch timed out, or was refused.
                let first = ranges.iter().find(|r| !r.is_empty()).cloned().unwrap_or(0..0);
                let e = self.error(e, &first);
                for (r, res) in ranges.iter().zip(results.iter_mut()) {
                    if !r.is_empty() {
                        *res = Err(io::Error::new(e.kind(), e.to_string()));
                    }
                }
                return results;
            }
        };
        for ((range, members), got) in groups.iter().zip(fetched) {
            match got {
                Some(Ok(bytes)) => {
                    for &i in members {
                        let r = &ranges[i];
                        let from = (r.start - range.start) as usize;
                        let n = (r.end - r.start) as usize;
                        reqs[i].1[..n].copy_from_slice(&bytes[from..from + n]);
                        results[i] = Ok(n);
                    }
                }
                Some(Err(e)) => {
                    let e = self.error(e, range);
                    for &i in members {
                        results[i] = Err(io::Error::new(e.kind(), e.to_string()));
                    }
                }
                None => {
                    for &i in members {
                        results[i] = Err(io::Error::other("page_cache::object: a GET of the batch never ran"));
                    }
                }
            }
        }
        results
    }

    fn write_vectored_at(&self, _: &[IoSlice<'_>], _: u64) -> io::Result<usize> {
        Err(read_only())
    }

    fn sync_data(&self) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_all(&self) -> io::Result<()> {
        Err(read_only())
    }

    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(read_only())
    }

    /// Always: objects are immutable.
    fn is_read_only(&self) -> bool {
        true
    }

    /// The size the HEAD at open saw.
    fn len(&self) -> io::Result<u64> {
        Ok(self.meta.size)
    }

    /// The identity taken at open (no request): device a fixed namespace,
    /// inode a hash of the store and path, birth time a hash of the ETag,
    /// mtime and ctime the last modification. A backing opened after the
    /// object was overwritten differs in birth time (and mostly in size
    /// and mtime).
    fn stat(&self) -> io::Result<Option<FileStat>> {
        Ok(Some(self.stat))
    }
}

/// Groups the non-empty `ranges` (any order) into requests: each group's
/// range covers its members' and is at most [`COALESCE_MAX`] long unless a
/// single member is longer; members less than [`COALESCE_GAP`] apart share
/// a group. Returns (group range, member indices).
fn coalesce(ranges: &[Range<u64>]) -> Vec<(Range<u64>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| !ranges[i].is_empty()).collect();
    order.sort_unstable_by_key(|&i| ranges[i].start);
    let mut groups: Vec<(Range<u64>, Vec<usize>)> = Vec::new();
    for i in order {
        let r = &ranges[i];
        if let Some((g, members)) = groups.last_mut() {
            let end = g.end.max(r.end);
            if r.start < g.end.saturating_add(COALESCE_GAP) && end - g.start <= COALESCE_MAX {
                g.end = end;
                members.push(i);
                continue;
            }
        }
        groups.push((r.clone(), vec![i]));
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_neighbours_up_to_the_limit() {
        let k = 4096;
        let ranges = vec![10 * k..11 * k, 0..k, 2 * k..3 * k, 0..0, (3 << 20)..(3 << 20) + k];
        let groups = coalesce(&ranges);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0], (0..11 * k, vec![1, 2, 0]));
        assert_eq!(groups[1], ((3 << 20)..(3 << 20) + k, vec![4]));
        // A gap just under COALESCE_GAP merges; one of exactly COALESCE_GAP
        // does not (pages 1 MiB apart are separate GETs).
        let near = vec![0..k, k + COALESCE_GAP - 1..2 * k + COALESCE_GAP - 1];
        assert_eq!(coalesce(&near).len(), 1);
        let apart = vec![0..k, k + COALESCE_GAP..2 * k + COALESCE_GAP];
        assert_eq!(coalesce(&apart).len(), 2);
        let mib: Vec<Range<u64>> = (0..40u64).map(|i| i << 20..(i << 20) + k).collect();
        assert_eq!(coalesce(&mib).len(), 40);
        // 16 MiB apiece at most: pages 32 KiB apart over 40 MiB.
        let many: Vec<Range<u64>> = (0..1280u64).map(|i| i * (32 << 10)..i * (32 << 10) + k).collect();
        let groups = coalesce(&many);
        assert!(groups.iter().all(|(g, _)| g.end - g.start <= COALESCE_MAX));
        assert_eq!(groups.len(), 3);
    }

    #[test]
    fn hashes_are_stable() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }
}
