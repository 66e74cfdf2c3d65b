//! The write-ahead-log rule and the read verifier, checked at the file:
//! a recording backing checks, at every write the cache issues, that every
//! page it carries has an LSN (its first 8 bytes) no newer than the log's
//! durable LSN at that instant, while threads dirty pages with rising LSNs
//! in a cache far smaller than the file, so the flusher, kswapd and
//! throttled writers all write; a log that fails, panics or stays behind;
//! a proptest of writes, log advances, syncs and shrinks against a model
//! of what may be on disk; and a verifier that rejects corrupt pages.

use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use page_cache::{Backing, PageCache, WriteAheadLog, PAGE_SIZE};
use proptest::prelude::*;

const PS: u64 = PAGE_SIZE as u64;

/// A log whose durable LSN the test controls; `flush_to` may be told to
/// fail, panic, or return without catching up.
#[derive(Default)]
struct TestLog {
    durable: AtomicU64,
    flushes: AtomicU64,
    fail: AtomicBool,
    panic: AtomicBool,
    lag: AtomicBool,
}

impl WriteAheadLog for TestLog {
    fn page_lsn(&self, _index: u64, page: &[u8]) -> u64 {
        u64::from_le_bytes(page[..8].try_into().unwrap())
    }
    fn durable_lsn(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
    fn flush_to(&self, lsn: u64) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.panic.load(Ordering::SeqCst) {
            panic!("the engine's log flush panicked (on purpose)");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("log device failed (on purpose)"));
        }
        if !self.lag.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_micros(50)); // an fsync, roughly
            self.durable.fetch_max(lsn, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A file in memory that checks the WAL rule at every write.
struct Recording {
    data: Mutex<Vec<u8>>,
    log: Arc<TestLog>,
    violations: AtomicU64,
    pages_written: AtomicU64,
}

impl Recording {
    fn new(len: usize, log: Arc<TestLog>) -> Arc<Recording> {
        Arc::new(Recording {
            data: Mutex::new(vec![0; len]),
            log,
            violations: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
        })
    }
}

impl Backing for Recording {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        let data = self.data.lock().unwrap();
        let mut pos = offset as usize;
        let mut n = 0;
        for b in bufs {
            if pos >= data.len() {
                break;
            }
            let k = b.len().min(data.len() - pos);
            b[..k].copy_from_slice(&data[pos..pos + k]);
            pos += k;
            n += k;
        }
        Ok(n)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let durable = self.log.durable_lsn();
        let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let mut at = 0usize;
        while at < bytes.len() {
            let pos = offset as usize + at;
            if pos % PAGE_SIZE == 0 && at + 8 <= bytes.len() {
                let lsn = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                if lsn > durable {
                    self.violations.fetch_add(1, Ordering::SeqCst);
                }
                self.pages_written.fetch_add(1, Ordering::SeqCst);
            }
            at += PAGE_SIZE - pos % PAGE_SIZE;
        }
        let mut data = self.data.lock().unwrap();
        let end = offset as usize + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(&bytes);
        Ok(bytes.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.data.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().unwrap().len() as u64)
    }
}

/// A page whose header is `lsn` and whose rest names the page and LSN.
fn page(index: u64, lsn: u64) -> Vec<u8> {
    let mut p = vec![(index as u8) ^ (lsn as u8); PAGE_SIZE];
    p[..8].copy_from_slice(&lsn.to_le_bytes());
    p
}

#[test]
fn no_page_reaches_the_file_ahead_of_the_log_whoever_writes_it() {
    let sanitizer = std::env::var_os("PAGE_CACHE_SANITIZER").is_some();
    let pages = 2048u64;
    let log = Arc::new(TestLog::default());
    let file = Recording::new(pages as usize * PAGE_SIZE, log.clone());
    // 64 frames over 2048 pages; background writeback from 25 dirty pages,
    // throttling from 48: enough dirty pages stay cached that reclaim meets
    // them at the inactive tail (a throttled writer writes until it is
    // back under the limit).
    let cache = PageCache::builder().capacity(64 * PAGE_SIZE).dirty_ratios(40, 75).build().unwrap();
    let f = cache.open_backing(file.clone(), true).unwrap();
    f.set_write_ahead_log(log.clone());
    let next_lsn = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = if sanitizer { 2_000 } else { 20_000 };
    std::thread::scope(|s| {
        // The log's own committer: durable trails the newest LSN.
        {
            let (log, next_lsn, stop) = (log.clone(), next_lsn.clone(), stop.clone());
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_micros(500));
                    let newest = next_lsn.load(Ordering::SeqCst);
                    log.durable.fetch_max(newest.saturating_sub(64), Ordering::SeqCst);
                }
            });
        }
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let (f, next_lsn) = (f.clone(), next_lsn.clone());
                s.spawn(move || {
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                    for _ in 0..ops / 4 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = x % pages;
                        let lsn = next_lsn.fetch_add(1, Ordering::SeqCst);
                        f.write_all_at(&page(i, lsn), i * PS).unwrap();
                        if x % 512 == 0 {
                            f.sync_data().unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
    });
    f.sync_all().unwrap();
    let s = cache.stats();
    println!(
        "WAL rule: {} pages written, {} flush_to calls ({} counted by the cache), {} reclaim skips, {} throttles, {} kswapd reclaims, {} violations",
        file.pages_written.load(Ordering::SeqCst),
        log.flushes.load(Ordering::SeqCst),
        s.log_flushes,
        s.log_skips,
        s.throttles,
        s.kswapd_reclaims,
        file.violations.load(Ordering::SeqCst)
    );
    assert_eq!(file.violations.load(Ordering::SeqCst), 0, "a page reached the file ahead of the log");
    assert!(s.throttles > 0, "throttled writers wrote");
    assert!(s.log_skips > 0, "kswapd met pages ahead of the log and left them");
    assert!(log.flushes.load(Ordering::SeqCst) > 0);
    // Nothing lost: the file holds what the cache holds.
    let mut want = vec![0u8; pages as usize * PAGE_SIZE];
    f.read_exact_at(&mut want, 0).unwrap();
    assert!(file.data.lock().unwrap()[..] == want[..], "the file equals the cache after sync_all");
    cache.check_invariants();
}

#[test]
fn a_log_that_fails_panics_or_lags_keeps_the_pages_dirty_and_reports_it() {
    for how in ["fail", "panic", "lag"] {
        let log = Arc::new(TestLog::default());
        let file = Recording::new(16 * PAGE_SIZE, log.clone());
        let cache = PageCache::new(1 << 20).unwrap();
        let f = cache.open_backing(file.clone(), true).unwrap();
        f.set_write_ahead_log(log.clone());
        match how {
            "fail" => log.fail.store(true, Ordering::SeqCst),
            "panic" => log.panic.store(true, Ordering::SeqCst),
            _ => log.lag.store(true, Ordering::SeqCst),
        }
        for i in 0..4 {
            f.write_all_at(&page(i, 10 + i), i * PS).unwrap();
        }
        let e = f.sync_data().unwrap_err();
        assert_ne!(e.kind(), ErrorKind::Interrupted, "{how}: {e}");
        assert!(cache.stats().dirty_pages >= 4, "{how}: the pages stay dirty");
        assert_eq!(file.pages_written.load(Ordering::SeqCst), 0, "{how}: nothing reached the file");
        assert_eq!(&file.data.lock().unwrap()[..8], &[0u8; 8], "{how}: the file is untouched");
        // The log recovers: the next sync writes everything.
        log.fail.store(false, Ordering::SeqCst);
        log.panic.store(false, Ordering::SeqCst);
        log.lag.store(false, Ordering::SeqCst);
        f.sync_data().unwrap();
        assert_eq!(cache.stats().dirty_pages, 0, "{how}");
        assert_eq!(&file.data.lock().unwrap()[..PAGE_SIZE], &page(0, 10)[..], "{how}");
        assert_eq!(file.violations.load(Ordering::SeqCst), 0, "{how}");
        drop(f);
        drop(cache);
    }
}

#[test]
fn dropping_the_cache_obeys_the_log_too() {
    let log = Arc::new(TestLog::default());
    let file = Recording::new(0, log.clone());
    {
        let cache = PageCache::new(1 << 20).unwrap();
        let f = cache.open_backing(file.clone(), true).unwrap();
        f.set_write_ahead_log(log.clone());
        for i in 0..8 {
            f.write_all_at(&page(i, 100 + i), i * PS).unwrap();
        }
    }
    assert_eq!(file.violations.load(Ordering::SeqCst), 0);
    assert!(log.flushes.load(Ordering::SeqCst) >= 1, "the writer flushed the log first");
    assert_eq!(file.data.lock().unwrap().len(), 8 * PAGE_SIZE);
}

/// Every page of a tiny cache dirty and ahead of the log, and no dirty
/// threshold to start the flusher: reclaim cannot write them (it never
/// waits for the log), so it asks the flusher, which writes them after
/// flushing the log, and the writer's allocations succeed.
#[test]
fn reclaim_gets_pages_ahead_of_the_log_written_by_the_flusher() {
    let log = Arc::new(TestLog::default());
    let file = Recording::new(0, log.clone());
    let cache = PageCache::builder().capacity(16 * PAGE_SIZE).dirty_ratios(100, 100).build().unwrap();
    let f = cache.open_backing(file.clone(), true).unwrap();
    f.set_write_ahead_log(log.clone());
    let t = std::time::Instant::now();
    for i in 0..40u64 {
        f.write_all_at(&page(i, i + 1), i * PS).unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    let took = t.elapsed();
    let s = cache.stats();
    println!(
        "40 writes into 16 frames ahead of the log: {took:?}, {} reclaim skips, {} log flushes",
        s.log_skips, s.log_flushes
    );
    assert!(took < Duration::from_secs(5), "writers waited on reclaim: {took:?}");
    assert_eq!(file.violations.load(Ordering::SeqCst), 0);
    f.sync_all().unwrap();
    let mut want = Vec::new();
    for i in 0..40u64 {
        want.extend_from_slice(&page(i, i + 1));
    }
    assert!(file.data.lock().unwrap()[..] == want[..]);
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64),
    Advance(u64),
    Sync,
    Shrink(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..24u64).prop_map(Op::Write),
        2 => (0..40u64).prop_map(Op::Advance),
        1 => Just(Op::Sync),
        1 => (0..24u64).prop_map(Op::Shrink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random page writes with rising LSNs, log advances, syncs and
    /// shrinks in a cache of 8 frames: at every moment, every page on disk
    /// is no newer than the log was when it was written; after the last
    /// sync the file equals the model.
    #[test]
    fn the_file_never_gets_ahead_of_the_log(ops in prop::collection::vec(op(), 1..80)) {
        let log = Arc::new(TestLog::default());
        let file = Recording::new(0, log.clone());
        let cache = PageCache::builder().capacity(8 * PAGE_SIZE).dirty_ratios(25, 50).build().unwrap();
        let f = cache.open_backing(file.clone(), true).unwrap();
        f.set_write_ahead_log(log.clone());
        let mut model: Vec<u8> = Vec::new();
        let mut lsn = 0u64;
        for op in &ops {
            match *op {
                Op::Write(i) => {
                    lsn += 1;
                    let p = page(i, lsn);
                    f.write_all_at(&p, i * PS).unwrap();
                    let end = ((i + 1) * PS) as usize;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[(i * PS) as usize..end].copy_from_slice(&p);
                }
                Op::Advance(k) => {
                    log.durable.fetch_max(lsn.saturating_sub(k), Ordering::SeqCst);
                }
                Op::Sync => f.sync_data().unwrap(),
                Op::Shrink(i) => {
                    let len = (i * PS).min(model.len() as u64);
                    f.set_len(len).unwrap();
                    model.truncate(len as usize);
                }
            }
            prop_assert_eq!(file.violations.load(Ordering::SeqCst), 0);
        }
        f.sync_all().unwrap();
        prop_assert_eq!(file.violations.load(Ordering::SeqCst), 0);
        prop_assert!(file.data.lock().unwrap()[..] == model[..], "the file equals the model after sync_all");
        cache.check_invariants();
    }
}

/// A checksum for the verifier tests: the page's last 8 bytes hold the
/// sum of the rest.
fn sealed(seed: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..PAGE_SIZE).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    let sum: u64 = p[..PAGE_SIZE - 8].iter().map(|&b| u64::from(b)).sum();
    p[PAGE_SIZE - 8..].copy_from_slice(&sum.to_le_bytes());
    p
}

fn check_seal(_index: u64, p: &[u8]) -> io::Result<()> {
    let sum: u64 = p[..PAGE_SIZE - 8].iter().map(|&b| u64::from(b)).sum();
    if sum.to_le_bytes() == p[PAGE_SIZE - 8..] {
        Ok(())
    } else {
        Err(io::Error::new(ErrorKind::InvalidData, "checksum mismatch"))
    }
}

#[test]
fn a_corrupt_page_is_invalid_data_to_every_reader_and_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut bytes: Vec<u8> = (0..8).flat_map(|i| sealed(i as u8)).collect();
    bytes[3 * PAGE_SIZE + 100] ^= 0x40; // a flipped bit in page 3
    std::fs::write(&path, &bytes).unwrap();
    let cache = PageCache::builder().capacity(1 << 20).readahead_max(0).build().unwrap();
    let f = cache.open(&path).unwrap();
    f.set_read_verifier(Arc::new(check_seal));
    let mut buf = vec![0u8; PAGE_SIZE];
    f.read_exact_at(&mut buf, 2 * PS).unwrap();
    assert_eq!(buf, sealed(2));
    // Two readers of the corrupt page at once: both get InvalidData.
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let f = f.clone();
                s.spawn(move || {
                    let mut b = vec![0u8; PAGE_SIZE];
                    f.read_exact_at(&mut b, 3 * PS).unwrap_err().kind()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), ErrorKind::InvalidData);
        }
    });
    assert!(f.mapping().find_get_page(3).is_none_or(|p| !p.is_uptodate()), "nothing bad is cached");
    assert!(cache.stats().verify_failures >= 1);
    // The file is repaired: the next read tries the file again.
    let fixed = sealed(3);
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::File::options().write(true).open(&path).unwrap(),
        &fixed,
        3 * PS,
    )
    .unwrap();
    f.read_exact_at(&mut buf, 3 * PS).unwrap();
    assert_eq!(buf, fixed);
}

#[test]
fn a_verifier_that_rejects_everything_fails_reads_and_leaves_other_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::write(dir.path().join(name), sealed(1).repeat(16)).unwrap();
    }
    let cache = PageCache::new(1 << 20).unwrap();
    let a = cache.open(dir.path().join("a")).unwrap();
    let b = cache.open(dir.path().join("b")).unwrap();
    a.set_read_verifier(Arc::new(|_, _| Err(io::Error::new(ErrorKind::InvalidData, "no"))));
    let mut buf = vec![0u8; 3 * PAGE_SIZE];
    assert_eq!(a.read_exact_at(&mut buf, 0).unwrap_err().kind(), ErrorKind::InvalidData);
    assert_eq!(a.read_at(&mut buf, 5 * PS).unwrap_err().kind(), ErrorKind::InvalidData);
    assert!(
        (0..16).all(|i| a.mapping().find_get_page(i).is_none_or(|p| !p.is_uptodate())),
        "no page of a was cached as uptodate"
    );
    b.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..PAGE_SIZE], &sealed(1)[..]);
    cache.check_invariants();
}
