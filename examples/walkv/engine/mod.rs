//! The walkv store: a hash-bucketed key-value store in a data file of
//! [`PAGES`] slotted 4 KiB pages (`page`) and a redo log (`log`), both read
//! and written through one [`PageCache`].
//!
//! A commit, under the latch of the key's page: read the page, build the
//! changed image, append the redo record (which gives the LSN), write the
//! image sealed with that LSN into the cache; then, latch released, wait
//! until the log is durable up to the LSN (group commit) and acknowledge.
//! The changed page sits dirty in the cache before its record is durable:
//! the cache's write-ahead-log hook keeps it from reaching the data file
//! until the log is durable past the page's LSN, whoever writes it (the
//! flusher, reclaim, a throttled writer, a sync). The latch makes a page's
//! changes apply in LSN order. The read verifier rejects a torn or corrupt
//! data page as it is read in.
//!
//! Recovery ([`Store::open`]): scan the log's intact prefix and cut the
//! torn tail; sync the log; then for every page, apply the records for it
//! whose LSN is above the page's (a page that fails its checksum starts
//! over from empty: the log is never truncated, so it holds every page's
//! whole history); then sync the data file. A data page whose LSN is past
//! the end of the log means the log lost records the page depends on (the
//! WAL rule was broken): the open fails with `InvalidData`.
//!
//! [`Store::set_trace`] records the pages the store reads and writes from
//! then on (`trace`).

pub mod crc;
pub mod log;
pub mod page;
pub mod trace;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use page_cache::{CachedFile, PageCache, PAGE_SIZE};

use self::log::{Log, Record};
use self::page::Page;
use self::trace::Trace;

/// Data pages (buckets) in the data file.
pub const PAGES: u64 = 256;
const PS: u64 = PAGE_SIZE as u64;

/// The data page that holds `key` (a 64-bit mix of the key, modulo [`PAGES`]).
pub fn bucket(key: u64) -> u32 {
    let mut x = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % PAGES) as u32
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Intact records in the log.
    pub records: usize,
    /// Records applied to pages that did not have them.
    pub replayed: usize,
    /// Bytes of torn tail cut from the log.
    pub torn_tail: u64,
    /// Pages that failed their checksum and were rebuilt from the log.
    pub rebuilt_pages: usize,
    /// The last LSN in the log.
    pub last_lsn: u64,
}

/// An open store. `Send + Sync`: commits from many threads run in
/// parallel on different pages and share log syncs.
pub struct Store {
    // Dropped first: the data file's last close writes its dirty pages,
    // which may need the log.
    data: CachedFile,
    log: Arc<Log>,
    /// One latch per data page: a page's changes apply in LSN order.
    latches: Vec<Mutex<()>>,
    /// Set when a commit failed half way: the cache may hold a change the
    /// log lacks, so the store takes no more commits.
    failed: AtomicBool,
    recovery: Recovery,
    /// Where the data file's page accesses are recorded, if anywhere.
    trace: Option<Trace>,
}

impl Store {
    /// Opens (or creates) the store in `dir` (files `data` and `log`) through `cache`.
    pub fn open_dir(cache: &PageCache, dir: &Path) -> io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let (data_path, log_path) = (dir.join("data"), dir.join("log"));
        let created = !data_path.exists() || !log_path.exists();
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true);
        let data = cache.open_with(&data_path, &options)?;
        let log = cache.open_with(&log_path, &options)?;
        if created {
            // The new names must survive a power loss too.
            File::open(dir)?.sync_all()?;
        }
        Store::open(data, log)
    }

    /// Opens the store over a data file and a log file opened through one
    /// cache (by path, or with `PageCache::open_backing`), recovering it.
    pub fn open(data: CachedFile, log: CachedFile) -> io::Result<Store> {
        // Before the first page comes in.
        data.set_read_verifier(Arc::new(page::verify));
        if data.len() < PAGES * PS {
            data.set_len(PAGES * PS)?;
        }
        // The log's intact prefix; the torn tail goes before anything is
        // appended after the prefix.
        let scan = log::scan_bytes(&log::read_all(&log)?);
        let torn_tail = log.len() - scan.end;
        if torn_tail > 0 {
            log.set_len(scan.end)?;
        }
        // The records may have reached only the kernel's cache (a process
        // killed before its sync): durable before a page depending on them
        // can be written.
        log.sync_data()?;
        let last_lsn = scan.records.last().map_or(0, |r| r.lsn);
        let log = Arc::new(Log::new(log, scan.end, last_lsn));
        data.set_write_ahead_log(log.hook());

        let mut recovery = Recovery { records: scan.records.len(), torn_tail, last_lsn, ..Recovery::default() };
        let mut per_page: Vec<Vec<&Record>> = vec![Vec::new(); PAGES as usize];
        for r in &scan.records {
            if r.page != bucket(r.key) {
                return Err(invalid_data(format!("walkv: log record {} puts key {} in page {}", r.lsn, r.key, r.page)));
            }
            per_page[r.page as usize].push(r);
        }
        for (index, records) in per_page.iter().enumerate() {
            let index = index as u64;
            let (mut image, mut changed) = match read_page(&data, index) {
                Ok(image) => (image, false),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    recovery.rebuilt_pages += 1;
                    (Box::new([0u8; PAGE_SIZE]), true)
                }
                Err(e) => return Err(e),
            };
            let lsn = page::lsn(&image[..]);
            if lsn > last_lsn {
                return Err(invalid_data(format!(
                    "walkv: data page {index} has LSN {lsn}, past the end of the log ({last_lsn})"
                )));
            }
            for r in records.iter().filter(|r| r.lsn > lsn) {
                let mut next = Page::parse(index, &image[..])?.with(r.key, r.value.as_deref())?;
                page::seal(&mut next, r.lsn);
                image = next;
                recovery.replayed += 1;
                changed = true;
            }
            if changed {
                data.write_all_at(&image[..], index * PS)?;
            }
        }
        // A checkpoint: the recovered pages (and the file's size) are durable.
        data.sync_data()?;
        let latches = (0..PAGES).map(|_| Mutex::new(())).collect();
        Ok(Store { data, log, latches, failed: AtomicBool::new(false), recovery, trace: None })
    }

    /// Records every page the store reads or writes from now on, in the
    /// data file and in the log, into `trace` (see `trace`). Recovery,
    /// done when the store opened, is not in it.
    pub fn set_trace(&mut self, trace: Trace) {
        self.log.set_trace(trace.clone());
        self.trace = Some(trace);
    }

    /// What recovery did when the store opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The value of `key`. It may come from a commit that has not returned
    /// yet (its page is changed before its log record is durable).
    pub fn get(&self, key: u64) -> io::Result<Option<Vec<u8>>> {
        let index = bucket(key) as u64;
        let image = self.read_page(index)?;
        Ok(Page::parse(index, &image[..])?.get(key).map(<[u8]>::to_vec))
    }

    /// Sets `key` to `value` durably; returns the commit's LSN.
    pub fn put(&self, key: u64, value: &[u8]) -> io::Result<u64> {
        self.commit(key, Some(value))
    }

    /// Removes `key` durably; returns the LSN the removal is durable at.
    pub fn delete(&self, key: u64) -> io::Result<u64> {
        self.commit(key, None)
    }

    /// Sets (`Some`) or removes (`None`) `key`; returns once the change is
    /// durable in the log, with its LSN.
    pub fn commit(&self, key: u64, value: Option<&[u8]>) -> io::Result<u64> {
        if value.is_some_and(|v| v.len() > page::MAX_VALUE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("walkv: values hold at most {} bytes", page::MAX_VALUE),
            ));
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("walkv: an earlier commit failed; reopen the store to recover"));
        }
        let index = bucket(key);
        let offset = index as u64 * PS;
        let lsn = {
            let _latch = self.latches[index as usize].lock().unwrap_or_else(|e| e.into_inner());
            let image = self.read_page(index as u64)?;
            let page = Page::parse(index as u64, &image[..])?;
            if value.is_none() && page.get(key).is_none() {
                // Nothing to remove: durable once what the page shows is.
                page.lsn()
            } else {
                let mut next = page.with(key, value)?;
                let lsn = self.log.append(key, index, value).inspect_err(|_| self.fail())?;
                page::seal(&mut next, lsn);
                // One write of the whole page: the cache never sees (or
                // writes back) a page whose LSN and bytes disagree.
                self.note(index as u64);
                self.data.write_all_at(&next[..], offset).inspect_err(|_| self.fail())?;
                lsn
            }
        };
        self.log.flush_to(lsn).inspect_err(|_| self.fail())?;
        Ok(lsn)
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Records an access of data page `index` in the trace, if one is set.
    fn note(&self, index: u64) {
        if let Some(trace) = &self.trace {
            trace.note(0, index * PS, PAGE_SIZE);
        }
    }

    /// [`read_page`], recorded in the trace.
    fn read_page(&self, index: u64) -> io::Result<Box<[u8; PAGE_SIZE]>> {
        self.note(index);
        read_page(&self.data, index)
    }

    /// Every key and value, reading every page (through the cache) and
    /// checking that each record sits in its key's page.
    pub fn entries(&self) -> io::Result<BTreeMap<u64, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for index in 0..PAGES {
            let image = self.read_page(index)?;
            for (key, value) in Page::parse(index, &image[..])?.entries() {
                if bucket(key) as u64 != index {
                    return Err(invalid_data(format!("walkv: key {key} found in page {index}")));
                }
                out.insert(key, value.to_vec());
            }
        }
        Ok(out)
    }

    /// Writes every changed page to the data file and syncs it.
    pub fn checkpoint(&self) -> io::Result<()> {
        self.data.sync_data()
    }

    /// The highest durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.log.durable_lsn()
    }

    /// Log syncs since the store opened.
    pub fn log_syncs(&self) -> u64 {
        self.log.syncs()
    }
}

/// Page `index` of the data file, through the cache (and its verifier).
fn read_page(data: &CachedFile, index: u64) -> io::Result<Box<[u8; PAGE_SIZE]>> {
    let mut image = Box::new([0u8; PAGE_SIZE]);
    data.read_exact_at(&mut image[..], index * PS)?;
    Ok(image)
}

/// Checks a data file's bytes as they are on disk: every page carries its
/// checksum (or is all zeros), parses, holds only its own keys, and has an
/// LSN no higher than `max_lsn`. Returns the records found.
pub fn check_image(bytes: &[u8], max_lsn: u64) -> Result<usize, String> {
    if bytes.len() as u64 != PAGES * PS {
        return Err(format!("data file is {} bytes, not {}", bytes.len(), PAGES * PS));
    }
    let mut records = 0;
    for (index, chunk) in bytes.chunks(PAGE_SIZE).enumerate() {
        let index = index as u64;
        page::verify(index, chunk).map_err(|e| e.to_string())?;
        let page = Page::parse(index, chunk).map_err(|e| e.to_string())?;
        if page.lsn() > max_lsn {
            return Err(format!("data page {index} has LSN {} past {max_lsn}", page.lsn()));
        }
        for (key, _) in page.entries() {
            if bucket(key) as u64 != index {
                return Err(format!("key {key} found in data page {index}"));
            }
            records += 1;
        }
    }
    Ok(records)
}
