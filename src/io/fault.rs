//! A backing file that fails on command, for tests (fault injection in the style of the kernel's `fail_make_request` / `should_fail`).
//!
//! [`FaultyBacking`] wraps any [`Backing`] (usually a [`FileBacking`]) and
//! consults a shared [`FaultPlan`] before every operation. The plan is an
//! `Arc` with interior atomics, so a test keeps one clone and flips faults on
//! and off while the cache runs:
//!
//! | knob | effect |
//! |------|--------|
//! | [`FaultPlan::fail_nth_read`] / [`fail_nth_write`](FaultPlan::fail_nth_write) | the Nth call from now fails once with EIO |
//! | [`FaultPlan::set_fail_reads`] | every read fails with EIO while set |
//! | [`FaultPlan::set_fail_reads_from`] | reads starting at or past an offset fail with EIO |
//! | [`FaultPlan::set_fail_writes`] | every write fails with ENOSPC while set |
//! | [`FaultPlan::set_short_reads`] / [`set_short_writes`](FaultPlan::set_short_writes) | calls move fewer bytes than asked (but at least one) |
//! | [`FaultPlan::set_delay`] | every read, write and sync sleeps first |
//! | [`FaultPlan::set_fail_sync`] | `sync_data` / `sync_all` fail with EIO |
//! | [`FaultPlan::set_fail_set_len`] | `set_len` fails with EIO |
//! | [`FaultPlan::set_random`] | reads, writes and syncs fail (EIO) or go short at random, from a seeded xorshift |
//!
//! [`FaultPlan::stats`] counts the operations run and the faults injected.
//!
//! ```
//! use std::sync::Arc;
//! use page_cache::fault::{FaultPlan, FaultyBacking};
//! use page_cache::PageCache;
//! # fn main() -> std::io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let file = std::fs::OpenOptions::new().read(true).write(true).create(true).open(dir.path().join("f"))?;
//! let plan = FaultPlan::new();
//! let backing = FaultyBacking::from_file(file, plan.clone());
//! let cache = PageCache::new(1 << 20)?;
//! let f = cache.open_backing(Arc::new(backing), true)?;
//! f.write_all_at(b"hello", 0)?;
//! plan.set_fail_writes(true);
//! assert!(f.sync_data().is_err());     // ENOSPC, and the page stays dirty
//! plan.set_fail_writes(false);
//! f.sync_data()?;                       // now it lands
//! assert_eq!(std::fs::read(dir.path().join("f"))?, b"hello");
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::io::backing::{Backing, FileBacking};

/// Offset value meaning "no offset rule".
const NO_OFFSET: u64 = u64::MAX;

/// Seeded random faults: a xorshift64* generator and two probabilities.
#[derive(Debug)]
struct Random {
    state: u64,
    fail_per_million: u32,
    short_per_million: u32,
}

impl Random {
    fn next(&mut self) -> u64 {
        // xorshift64* (Vigna): never reaches 0 from a non-zero state.
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `per_million` / 1_000_000.
    fn hit(&mut self, per_million: u32) -> bool {
        per_million > 0 && (self.next() % 1_000_000) < u64::from(per_million)
    }
}

/// A snapshot of a plan's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Read calls that reached the backing (including failed ones).
    pub reads: u64,
    /// Write calls that reached the backing (including failed ones).
    pub writes: u64,
    /// `sync_data` and `sync_all` calls.
    pub syncs: u64,
    /// `set_len` calls.
    pub set_lens: u64,
    /// Operations that returned an injected error.
    pub errors_injected: u64,
    /// Operations cut short on purpose.
    pub short_ops: u64,
}

impl FaultStats {
    /// Every fault injected: errors plus short operations.
    pub fn faults_injected(&self) -> u64 {
        self.errors_injected + self.short_ops
    }

    /// Every operation run.
    pub fn operations(&self) -> u64 {
        self.reads + self.writes + self.syncs + self.set_lens
    }
}

/// What a [`FaultyBacking`] should get wrong, shared (through an `Arc`)
/// between the test and every backing using it. All knobs start off; every
/// setter takes effect for the next operation, from any thread.
#[derive(Debug)]
pub struct FaultPlan {
    /// Countdown to a failing read: 0 = off, 1 = the next read fails.
    read_countdown: AtomicU64,
    /// Countdown to a failing write: 0 = off, 1 = the next write fails.
    write_countdown: AtomicU64,
    fail_reads: AtomicBool,
    fail_reads_from: AtomicU64,
    fail_writes: AtomicBool,
    short_reads: AtomicBool,
    short_writes: AtomicBool,
    fail_sync: AtomicBool,
    fail_set_len: AtomicBool,
    delay_us: AtomicU64,
    random: Mutex<Option<Random>>,
    /// Quick check so the common "no random faults" path skips the mutex.
    random_on: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    set_lens: AtomicU64,
    errors_injected: AtomicU64,
    short_ops: AtomicU64,
}

impl Default for FaultPlan {
    fn default() -> FaultPlan {
        FaultPlan {
            read_countdown: AtomicU64::new(0),
            write_countdown: AtomicU64::new(0),
            fail_reads: AtomicBool::new(false),
            fail_reads_from: AtomicU64::new(NO_OFFSET),
            fail_writes: AtomicBool::new(false),
            short_reads: AtomicBool::new(false),
            short_writes: AtomicBool::new(false),
            fail_sync: AtomicBool::new(false),
            fail_set_len: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            random: Mutex::new(None),
            random_on: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            set_lens: AtomicU64::new(0),
            errors_injected: AtomicU64::new(0),
            short_ops: AtomicU64::new(0),
        }
    }
}

/// What a random draw decided for one operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Draw {
    Pass,
    Fail,
    Short,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Takes one step of a one-shot countdown; true when it fires.
fn countdown(c: &AtomicU64) -> bool {
    // Relaxed: the countdown is its own only state.
    c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)) == Ok(1)
}

impl FaultPlan {
    /// A plan with every fault off, ready to share.
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    /// The `n`th read call from now (1 = the next one) fails once with EIO;
    /// 0 cancels.
    pub fn fail_nth_read(&self, n: u64) {
        self.read_countdown.store(n, Ordering::Relaxed);
    }

    /// The `n`th write call from now (1 = the next one) fails once with EIO;
    /// 0 cancels.
    pub fn fail_nth_write(&self, n: u64) {
        self.write_countdown.store(n, Ordering::Relaxed);
    }

    /// While set, every read fails with EIO.
    pub fn set_fail_reads(&self, on: bool) {
        self.fail_reads.store(on, Ordering::Relaxed);
    }

    /// Reads whose starting offset is `offset` or more fail with EIO (a bad
    /// region of the disk); `None` turns the rule off.
    pub fn set_fail_reads_from(&self, offset: Option<u64>) {
        self.fail_reads_from.store(offset.unwrap_or(NO_OFFSET), Ordering::Relaxed);
    }

    /// While set, every write fails with ENOSPC (a full disk).
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::Relaxed);
    }

    /// While set, reads of more than one byte return about half of what was
    /// asked (at least one byte).
    pub fn set_short_reads(&self, on: bool) {
        self.short_reads.store(on, Ordering::Relaxed);
    }

    /// While set, writes of more than one byte take about half of what was
    /// offered (at least one byte).
    pub fn set_short_writes(&self, on: bool) {
        self.short_writes.store(on, Ordering::Relaxed);
    }

    /// While set, `sync_data` and `sync_all` fail with EIO.
    pub fn set_fail_sync(&self, on: bool) {
        self.fail_sync.store(on, Ordering::Relaxed);
    }

    /// While set, `set_len` fails with EIO.
    pub fn set_fail_set_len(&self, on: bool) {
        self.fail_set_len.store(on, Ordering::Relaxed);
    }

    /// Every read, write and sync sleeps this long first (slow media);
    /// `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }

    /// Random faults from a generator seeded with `seed`: each read, write
    /// and sync fails with EIO with probability `fail_per_million` / 10^6,
    /// and each read or write of more than one byte otherwise goes short
    /// with probability `short_per_million` / 10^6. Both 0 turns it off.
    /// The sequence of decisions depends only on the seed and the order of
    /// operations.
    pub fn set_random(&self, seed: u64, fail_per_million: u32, short_per_million: u32) {
        let on = fail_per_million > 0 || short_per_million > 0;
        let mut r = self.random.lock().unwrap_or_else(|e| e.into_inner());
        *r = on.then(|| Random {
            // A zero state would stay zero; mix the seed (splitmix64 step).
            state: {
                let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) | 1
            },
            fail_per_million: fail_per_million.min(1_000_000),
            short_per_million: short_per_million.min(1_000_000),
        });
        self.random_on.store(on, Ordering::Relaxed);
    }

    /// Turns every fault off (counters keep counting).
    pub fn clear(&self) {
        self.fail_nth_read(0);
        self.fail_nth_write(0);
        self.set_fail_reads(false);
        self.set_fail_reads_from(None);
        self.set_fail_writes(false);
        self.set_short_reads(false);
        self.set_short_writes(false);
        self.set_fail_sync(false);
        self.set_fail_set_len(false);
        self.set_delay(Duration::ZERO);
        self.set_random(0, 0, 0);
    }

    /// The counters so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            set_lens: self.set_lens.load(Ordering::Relaxed),
            errors_injected: self.errors_injected.load(Ordering::Relaxed),
            short_ops: self.short_ops.load(Ordering::Relaxed),
        }
    }

    /// Operations that returned an injected error so far.
    pub fn errors_injected(&self) -> u64 {
        self.errors_injected.load(Ordering::Relaxed)
    }

    /// Every fault injected so far (errors and short operations).
    pub fn faults_injected(&self) -> u64 {
        self.stats().faults_injected()
    }

    fn draw(&self, can_short: bool) -> Draw {
        if !self.random_on.load(Ordering::Relaxed) {
            return Draw::Pass;
        }
        let mut guard = self.random.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = guard.as_mut() else { return Draw::Pass };
        if r.hit(r.fail_per_million) {
            Draw::Fail
        } else if can_short && r.hit(r.short_per_million) {
            Draw::Short
        } else {
            Draw::Pass
        }
    }

    fn sleep(&self) {
        let us = self.delay_us.load(Ordering::Relaxed);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }

    fn inject(&self, err: io::Error) -> io::Error {
        self.errors_injected.fetch_add(1, Ordering::Relaxed);
        err
    }

    /// Decides a read at `offset` of `len` bytes: an error, or how many
    /// bytes to allow.
    fn on_read(&self, offset: u64, len: usize) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.sleep();
        if countdown(&self.read_countdown)
            || self.fail_reads.load(Ordering::Relaxed)
            || offset >= self.fail_reads_from.load(Ordering::Relaxed)
        {
            return Err(self.inject(eio()));
        }
        let draw = self.draw(len > 1);
        if draw == Draw::Fail {
            return Err(self.inject(eio()));
        }
        if len > 1 && (draw == Draw::Short || self.short_reads.load(Ordering::Relaxed)) {
            self.short_ops.fetch_add(1, Ordering::Relaxed);
            return Ok(len / 2);
        }
        Ok(len)
    }

    /// Decides a write of `len` bytes: an error, or how many bytes to allow.
    fn on_write(&self, len: usize) -> io::Result<usize> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.sleep();
        if countdown(&self.write_countdown) {
            return Err(self.inject(eio()));
        }
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(self.inject(enospc()));
        }
        let draw = self.draw(len > 1);
        if draw == Draw::Fail {
            return Err(self.inject(eio()));
        }
        if len > 1 && (draw == Draw::Short || self.short_writes.load(Ordering::Relaxed)) {
            self.short_ops.fetch_add(1, Ordering::Relaxed);
            return Ok(len / 2);
        }
        Ok(len)
    }

    fn on_sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.sleep();
        if self.fail_sync.load(Ordering::Relaxed) || self.draw(false) == Draw::Fail {
            return Err(self.inject(eio()));
        }
        Ok(())
    }

    fn on_set_len(&self) -> io::Result<()> {
        self.set_lens.fetch_add(1, Ordering::Relaxed);
        if self.fail_set_len.load(Ordering::Relaxed) {
            return Err(self.inject(eio()));
        }
        Ok(())
    }
}

/// A [`Backing`] that passes every call to the backing it wraps unless its
/// [`FaultPlan`] says to fail it, cut it short or slow it down.
pub struct FaultyBacking {
    inner: Arc<dyn Backing>,
    plan: Arc<FaultPlan>,
}

impl std::fmt::Debug for FaultyBacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBacking").field("plan", &self.plan).finish_non_exhaustive()
    }
}

impl FaultyBacking {
    /// Wraps `inner`, following `plan`.
    pub fn new(inner: Arc<dyn Backing>, plan: Arc<FaultPlan>) -> FaultyBacking {
        FaultyBacking { inner, plan }
    }

    /// Wraps an open file (buffered, not O_DIRECT), following `plan`.
    pub fn from_file(file: File, plan: Arc<FaultPlan>) -> FaultyBacking {
        FaultyBacking::new(Arc::new(FileBacking::new(file, false)), plan)
    }

    /// The plan this backing follows.
    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }

    /// The backing underneath.
    pub fn inner(&self) -> &Arc<dyn Backing> {
        &self.inner
    }
}

/// The first `limit` bytes of `bufs`, as slices borrowed from them.
fn prefix_mut<'a>(bufs: &'a mut [IoSliceMut<'_>], mut limit: usize) -> Vec<IoSliceMut<'a>> {
    let mut out = Vec::new();
    for b in bufs.iter_mut() {
        if limit == 0 {
            break;
        }
        let take = b.len().min(limit);
        limit -= take;
        if take > 0 {
            out.push(IoSliceMut::new(&mut b[..take]));
        }
    }
    out
}

/// The first `limit` bytes of `bufs`, as slices borrowed from them.
fn prefix<'a>(bufs: &'a [IoSlice<'_>], mut limit: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::new();
    for b in bufs {
        if limit == 0 {
            break;
        }
        let take = b.len().min(limit);
        limit -= take;
        if take > 0 {
            out.push(IoSlice::new(&b[..take]));
        }
    }
    out
}

impl Backing for FaultyBacking {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let allow = self.plan.on_read(offset, len)?;
        if allow >= len {
            return self.inner.read_vectored_at(bufs, offset);
        }
        let mut short = prefix_mut(bufs, allow);
        self.inner.read_vectored_at(&mut short, offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        let allow = self.plan.on_write(len)?;
        if allow >= len {
            return self.inner.write_vectored_at(bufs, offset);
        }
        self.inner.write_vectored_at(&prefix(bufs, allow), offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.plan.on_sync()?;
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.plan.on_sync()?;
        self.inner.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.plan.on_set_len()?;
        self.inner.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn is_empty(&self) -> io::Result<bool> {
        self.inner.is_empty()
    }

    fn is_direct(&self) -> bool {
        self.inner.is_direct()
    }

    fn stat(&self) -> io::Result<Option<crate::io::backing::FileStat>> {
        self.inner.stat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_fires_once() {
        let c = AtomicU64::new(3);
        assert_eq!((0..6).map(|_| countdown(&c)).collect::<Vec<_>>(), [false, false, true, false, false, false]);
    }

    #[test]
    fn random_is_seeded() {
        let a = FaultPlan::new();
        let b = FaultPlan::new();
        a.set_random(7, 300_000, 0);
        b.set_random(7, 300_000, 0);
        let da: Vec<_> = (0..100).map(|_| a.draw(true)).collect();
        let db: Vec<_> = (0..100).map(|_| b.draw(true)).collect();
        assert_eq!(da, db);
        let fails = da.iter().filter(|d| **d == Draw::Fail).count();
        assert!((10..60).contains(&fails), "{fails} fails at 30%");
    }
}
