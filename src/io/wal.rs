//! The write-ahead-log rule and checksums on read-in, following
//! PostgreSQL's `FlushBuffer` (`src/backend/storage/buffer/bufmgr.c`: the
//! log is flushed up to the page's LSN, `XLogFlush`, before the page is
//! written) and InnoDB's page checksums checked as a page is read.
//!
//! An engine attaches a [`WriteAheadLog`] to a file; every writer of that
//! file's dirty pages (the flusher, a throttled writer, `sync_data`,
//! `flush`, the last close, dropping the cache, kswapd) goes through
//! `write_run`, which calls [`allow_run`] first: the highest LSN of the run
//! must be durable, or the writer asks the log to flush up to it, once for
//! the run, holding no tree, LRU or buddy lock (only the run's pages are
//! under writeback, their bytes stable). A log that fails, panics or stays
//! behind fails the run: its pages stay dirty and the error goes to the
//! mapping's errseq like any write error. Reclaim never waits for the log:
//! it skips a page whose log is behind ([`log_allows`]) and wakes the
//! flusher.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::index::mapping::AddressSpace;
use crate::mem::page::Page;
use crate::stats::Event;

/// The engine's write-ahead log, as the cache sees it: where a page's LSN
/// lives and how to make the log durable.
///
/// The cache calls these from its own threads (the flusher, kswapd) as
/// well as from the engine's. A panic in any of them is caught and counts
/// as a failed log flush: the pages stay dirty and the error is reported.
pub trait WriteAheadLog: Send + Sync {
    /// The LSN that a page's bytes carry (engines keep it in the page
    /// header, as PostgreSQL's `pd_lsn` and InnoDB's `FIL_PAGE_LSN`).
    fn page_lsn(&self, index: u64, page: &[u8]) -> u64;
    /// How far the log is durable now.
    fn durable_lsn(&self) -> u64;
    /// Makes the log durable at least up to `lsn` (the engine fsyncs its log).
    fn flush_to(&self, lsn: u64) -> io::Result<()>;
}

/// Checks a page's bytes as they come in from the file, before the page is
/// marked uptodate: the page index and its bytes; an error (engines return
/// `ErrorKind::InvalidData` for a torn or corrupt page) fails the read.
pub type ReadVerifier = Arc<dyn Fn(u64, &[u8]) -> io::Result<()> + Send + Sync>;

fn panicked(what: &str) -> io::Error {
    io::Error::other(format!("page cache: the write-ahead log's {what} panicked"))
}

/// Runs an engine callback, turning a panic into an error.
fn call<T>(what: &str, f: impl FnOnce() -> T) -> io::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| panicked(what))
}

/// The highest LSN among `pages` (under writeback or locked: their bytes
/// are stable).
fn max_lsn(log: &dyn WriteAheadLog, m: &AddressSpace, pages: &[&Page]) -> io::Result<u64> {
    let mut max = 0;
    for p in pages {
        // SAFETY: the caller holds each page under writeback or locked, and
        // every writer of the bytes waits for both (`LockedPage::data_mut`),
        // so they do not change while this borrow lives; the frame lives as
        // long as the zone.
        let bytes = unsafe { &*m.zone.frame(p) };
        max = max.max(call("page_lsn", || log.page_lsn(p.index(), bytes))?);
    }
    Ok(max)
}

/// The WAL rule before a run of pages is written: Ok when the log is
/// durable past every page of the run, after one `flush_to` if needed.
/// The caller holds the pages under writeback and no tree, LRU or buddy
/// lock.
pub(crate) fn allow_run(m: &AddressSpace, pages: &[&Page]) -> io::Result<()> {
    let Some(log) = m.wal.read().clone() else { return Ok(()) };
    let need = max_lsn(&*log, m, pages)?;
    if call("durable_lsn", || log.durable_lsn())? >= need {
        return Ok(());
    }
    m.zone.count(Event::LogFlushes, 1);
    call("flush_to", || log.flush_to(need))??;
    let durable = call("durable_lsn", || log.durable_lsn())?;
    if durable < need {
        return Err(io::Error::other(format!(
            "page cache: the write-ahead log is durable to {durable} after flush_to({need}); the pages stay dirty"
        )));
    }
    Ok(())
}

/// Whether a locked page may be written now without waiting for the log
/// (reclaim's test: it never calls `flush_to`).
pub(crate) fn log_allows(m: &AddressSpace, page: &Page) -> bool {
    let Some(log) = m.wal.read().clone() else { return true };
    match (max_lsn(&*log, m, &[page]), call("durable_lsn", || log.durable_lsn())) {
        (Ok(need), Ok(durable)) => durable >= need,
        _ => false,
    }
}

/// Runs the file's read verifier over a page just read, if it has one.
pub(crate) fn verify(m: &AddressSpace, index: u64, bytes: &[u8]) -> io::Result<()> {
    let Some(verify) = m.verifier.read().clone() else { return Ok(()) };
    let r = catch_unwind(AssertUnwindSafe(|| verify(index, bytes)))
        .map_err(|_| io::Error::other("page cache: the read verifier panicked"))?;
    if r.is_err() {
        m.zone.count(Event::VerifyFailures, 1);
    }
    r
}
