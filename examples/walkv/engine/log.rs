//! The redo log: an append-only file of checksummed records, written
//! through the page cache, made durable by `sync_data` with group commit,
//! and the [`WriteAheadLog`] the cache asks before it writes a data page.
//!
//! ```text
//! offset  size  field
//!      0     4  CRC-32 of bytes 4 .. 28 + value length
//!      4     8  LSN (u64 LE): exactly one more than the record before
//!     12     8  key (u64 LE)
//!     20     4  data page index (u32 LE): the key's bucket
//!     24     1  op: 1 = put, 2 = delete
//!     25     1  zero
//!     26     2  value length (u16 LE; 0 for a delete)
//!     28        value
//! ```
//!
//! LSNs start at 1. A scan stops at the first record that is short, fails
//! its checksum or does not follow its predecessor's LSN: that is the torn
//! tail of a crash, and recovery cuts the file there before appending, so
//! a stale record past the tail can never line up behind a new one.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};

use page_cache::{CachedFile, WriteAheadLog};

use super::trace::{Trace, LOG_BASE};
use super::{crc, page};

/// Bytes of a record before its value.
pub const RECORD_HEADER: usize = 28;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One redo record: set `key` (in data page `page`) to `value`, or remove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number.
    pub lsn: u64,
    /// The key.
    pub key: u64,
    /// The data page the key lives in.
    pub page: u32,
    /// The new value; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// The record's bytes in the log.
    pub fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or(&[]);
        let mut out = vec![0u8; RECORD_HEADER + value.len()];
        out[4..12].copy_from_slice(&self.lsn.to_le_bytes());
        out[12..20].copy_from_slice(&self.key.to_le_bytes());
        out[20..24].copy_from_slice(&self.page.to_le_bytes());
        out[24] = if self.value.is_some() { OP_PUT } else { OP_DELETE };
        out[26..28].copy_from_slice(&(value.len() as u16).to_le_bytes());
        out[RECORD_HEADER..].copy_from_slice(value);
        let sum = crc::crc32(&out[4..]);
        out[..4].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// The record at the start of `bytes` and its length, if a whole,
    /// intact one is there.
    pub fn decode(bytes: &[u8]) -> Option<(Record, usize)> {
        let header = bytes.get(..RECORD_HEADER)?;
        let len = u16::from_le_bytes([header[26], header[27]]) as usize;
        let op = header[24];
        if len > page::MAX_VALUE || header[25] != 0 || !(op == OP_PUT || (op == OP_DELETE && len == 0)) {
            return None;
        }
        let whole = bytes.get(..RECORD_HEADER + len)?;
        if u32::from_le_bytes(whole[..4].try_into().ok()?) != crc::crc32(&whole[4..]) {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(whole[at..at + 8].try_into().expect("eight bytes"));
        let record = Record {
            lsn: u64_at(4),
            key: u64_at(12),
            page: u32::from_le_bytes(whole[20..24].try_into().expect("four bytes")),
            value: (op == OP_PUT).then(|| whole[RECORD_HEADER..].to_vec()),
        };
        Some((record, whole.len()))
    }
}

/// What a scan of the log found.
pub struct Scan {
    /// The intact records, in LSN order (1, 2, 3, ...).
    pub records: Vec<Record>,
    /// Where the intact records end: the next append goes here.
    pub end: u64,
}

/// Reads the log's intact prefix from `bytes` (the whole file).
pub fn scan_bytes(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((r, len)) = Record::decode(&bytes[at..]) {
        if r.lsn != records.last().map_or(1, |l: &Record| l.lsn + 1) {
            break;
        }
        records.push(r);
        at += len;
    }
    Scan { records, end: at as u64 }
}

/// Reads all of `file` (through the cache).
pub fn read_all(file: &CachedFile) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; file.len() as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// The end of the log, where appends go.
struct Tail {
    end: u64,
    next_lsn: u64,
    /// Where appends are recorded, if anywhere (under the tail's lock, so
    /// in file order).
    trace: Option<Trace>,
}

/// The open log. Appends are serialized (LSN order is file order); any
/// number of threads wait for durability at once, and one `sync_data`
/// makes every record appended before it durable (group commit): while one
/// thread syncs, the others wait on a condition variable, and when the
/// sync ends they all look again, so those it covered return at once
/// (waiting on the sync mutex itself would queue them behind the next
/// sync, which the returning syncer often starts first).
pub struct Log {
    file: CachedFile,
    tail: Mutex<Tail>,
    /// The highest LSN whose record is wholly in the cache.
    appended: AtomicU64,
    /// The highest LSN known durable: shared with the cache's hook.
    durable: Arc<AtomicU64>,
    /// Whether a thread is syncing the log; waiters sleep on `synced`.
    syncing: Mutex<bool>,
    synced: Condvar,
    syncs: AtomicU64,
}

impl Log {
    /// The log in `file`, whose records up to `last_lsn` end at `end` and
    /// are durable.
    pub fn new(file: CachedFile, end: u64, last_lsn: u64) -> Log {
        Log {
            file,
            tail: Mutex::new(Tail { end, next_lsn: last_lsn + 1, trace: None }),
            appended: AtomicU64::new(last_lsn),
            durable: Arc::new(AtomicU64::new(last_lsn)),
            syncing: Mutex::new(false),
            synced: Condvar::new(),
            syncs: AtomicU64::new(0),
        }
    }

    /// Appends a record for `key` in `page` with the next LSN (into the
    /// cache, not yet durable); returns the LSN.
    pub fn append(&self, key: u64, page: u32, value: Option<&[u8]>) -> io::Result<u64> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let record = Record { lsn: tail.next_lsn, key, page, value: value.map(<[u8]>::to_vec) };
        let bytes = record.encode();
        if let Some(trace) = &tail.trace {
            trace.note(LOG_BASE, tail.end, bytes.len());
        }
        self.file.write_all_at(&bytes, tail.end)?;
        tail.end += bytes.len() as u64;
        tail.next_lsn += 1;
        // Release: a syncer that reads this LSN finds the record's bytes in the cache.
        self.appended.store(record.lsn, Ordering::Release);
        Ok(record.lsn)
    }

    /// Makes the log durable up to `lsn` at least: returns at once if it
    /// is; else one thread syncs for everyone waiting (group commit).
    pub fn flush_to(&self, lsn: u64) -> io::Result<()> {
        let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.durable_lsn() >= lsn {
                return Ok(());
            }
            if !*syncing {
                break;
            }
            // Someone is syncing: look again when they are done.
            syncing = self.synced.wait(syncing).unwrap_or_else(|e| e.into_inner());
        }
        *syncing = true;
        drop(syncing);
        // Whatever happens below (an error, a panic), the next waiter may sync.
        let _done = SyncDone(self);
        // Acquire: every record up to `upto` is in the cache, so the sync covers it.
        let upto = self.appended.load(Ordering::Acquire);
        if upto < lsn {
            return Err(io::Error::other(format!("walkv: flush_to({lsn}) past the last record ({upto})")));
        }
        self.file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(upto, Ordering::Release);
        Ok(())
    }

    /// The highest durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Records the pages of every append from now on into `trace`, as
    /// [`LOG_BASE`] plus the log page index.
    pub fn set_trace(&self, trace: Trace) {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).trace = Some(trace);
    }

    /// `sync_data` calls made so far (fewer than commits under group commit).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The hook to attach to the data file. It holds the log weakly: the
    /// data file's mapping lives in the cache's open-file table, and a
    /// strong reference from it to the log's `CachedFile` (which holds the
    /// cache) would keep the cache alive forever.
    pub fn hook(self: &Arc<Log>) -> Arc<dyn WriteAheadLog> {
        Arc::new(Hook { log: Arc::downgrade(self), durable: self.durable.clone() })
    }
}

/// Ends a sync: wakes every thread waiting in `flush_to`.
struct SyncDone<'a>(&'a Log);

impl Drop for SyncDone<'_> {
    fn drop(&mut self) {
        *self.0.syncing.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.synced.notify_all();
    }
}

/// The cache's view of the log (see [`Log::hook`]).
struct Hook {
    log: Weak<Log>,
    durable: Arc<AtomicU64>,
}

impl WriteAheadLog for Hook {
    fn page_lsn(&self, _index: u64, bytes: &[u8]) -> u64 {
        page::lsn(bytes)
    }

    fn durable_lsn(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    fn flush_to(&self, lsn: u64) -> io::Result<()> {
        match self.log.upgrade() {
            Some(log) => log.flush_to(lsn),
            None => Err(io::Error::other("walkv: the log is closed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_tails_stop_the_scan() {
        let a = Record { lsn: 1, key: 9, page: 3, value: Some(b"nine".to_vec()) };
        let b = Record { lsn: 2, key: 9, page: 3, value: None };
        let c = Record { lsn: 4, key: 1, page: 0, value: Some(vec![]) };
        let mut bytes = [a.encode(), b.encode()].concat();
        let s = scan_bytes(&bytes);
        assert_eq!((s.records, s.end), (vec![a.clone(), b.clone()], bytes.len() as u64));
        // A record out of sequence ends the log.
        bytes.extend(c.encode());
        assert_eq!(scan_bytes(&bytes).records.len(), 2);
        // So does a torn one.
        let whole = a.encode().len();
        for cut in 0..whole {
            assert!(scan_bytes(&bytes[..cut]).records.is_empty());
        }
        bytes[whole + 5] ^= 0x10;
        assert_eq!(scan_bytes(&bytes).records, vec![a]);
    }
}
