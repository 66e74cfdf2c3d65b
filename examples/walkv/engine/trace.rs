//! A record of the pages the store reads and writes through the cache, for
//! the hit-ratio table (`scripts/policy_table.py`, issue 24): `walkv bench`
//! with `WALKV_TRACE=FILE` writes it as little-endian u64 page indices, one
//! per access, in the order the accesses took the trace's one lock.
//!
//! A data-file page is its page index (offset / 4096); a log-file page is
//! [`LOG_BASE`] plus its page index. An access that spans pages records
//! each page it touches, in order. Only the store's own accesses count:
//! what the cache does by itself (write-back, reclaim, syncs) is not an
//! access.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use page_cache::PAGE_SIZE;

/// Where the log's pages start in the trace: far above every data page
/// (and low enough that `examples/replay.rs`'s sparse file of the trace's
/// footprint, 4 GiB plus the log, fits a file system: at `1 << 32` it
/// would be 16 TiB plus the log, past ext4's largest file).
pub const LOG_BASE: u64 = 1 << 20;
const PS: u64 = PAGE_SIZE as u64;

/// A shared, growing trace; clones record into the same one.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<u64>>>);

impl Trace {
    /// Records an access of `len` bytes at `offset` in the file whose pages
    /// start at `base` in the trace (0 for the data file, [`LOG_BASE`] for
    /// the log).
    pub fn note(&self, base: u64, offset: u64, len: usize) {
        if len == 0 {
            return;
        }
        let (first, last) = (offset / PS, (offset + len as u64 - 1) / PS);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend((first..=last).map(|p| base + p));
    }

    /// Takes the accesses recorded so far (later ones start a new record).
    pub fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Writes `accesses` to `path` as little-endian u64s; returns the number
/// of distinct pages among them.
pub fn write(path: &Path, accesses: &[u64]) -> io::Result<usize> {
    let bytes: Vec<u8> = accesses.iter().flat_map(|p| p.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut distinct = accesses.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    Ok(distinct.len())
}
