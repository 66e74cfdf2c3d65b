//! The swap area, following `mm/swapfile.c` (one swap file, its slots
//! handed out by a small allocator and counted) and `mm/page_io.c` (pages
//! written and read at their slots): one file created unlinked
//! (`O_TMPFILE`), so a crash leaves nothing behind, under a byte limit.
//!
//! Space is handed out in units of [`UNIT`] (64) bytes, so a page the
//! compressed tier wrote back in compressed form takes only what it
//! compressed to, and a batch of pages takes one extent (one write). Free
//! space is a map of extents, merged with their neighbours when freed. A
//! reader pins the extent it reads ([`SwapArea::pin`]): an extent freed
//! while pinned (its memory truncated under the reader) is released when
//! the last pin goes, so it is never reused under a read.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::io::backing::{Backing, FileBacking};
use crate::sync::AtomicU64;

/// The allocation unit of the swap area, in bytes: small, so a compressed
/// page written back wastes 32 bytes on average (at 512 it was 18% of what
/// compression saved, `benches/anon.rs`).
pub(crate) const UNIT: u64 = 64;

/// Extents of the swap area, in units.
#[derive(Debug, Default)]
struct Extents {
    /// Free extents below `end`: start -> length.
    free: BTreeMap<u64, u64>,
    /// Units ever handed out: the file's high-water mark.
    end: u64,
    /// Units in use (allocated and not freed).
    used: u64,
    /// Pinned extents (by start): pins, and the length to free when the
    /// last pin goes if the extent was freed meanwhile.
    pins: HashMap<u64, (u32, Option<u64>)>,
}

impl Extents {
    /// First fit among the free extents, else growth at the end, within
    /// `limit` units.
    fn alloc(&mut self, n: u64, limit: u64) -> Option<u64> {
        let found = self.free.iter().find(|&(_, &len)| len >= n).map(|(&s, &l)| (s, l));
        let start = match found {
            Some((s, len)) => {
                self.free.remove(&s);
                if len > n {
                    self.free.insert(s + n, len - n);
                }
                s
            }
            None => {
                // The free extent that ends at `end` grows into the new space.
                let tail = self.free.range(..self.end).next_back().filter(|&(&s, &l)| s + l == self.end);
                let (s, have) = tail.map_or((self.end, 0), |(&s, &l)| (s, l));
                if s + n > limit {
                    return None;
                }
                if have > 0 {
                    self.free.remove(&s);
                }
                self.end = s + n;
                s
            }
        };
        self.used += n;
        Some(start)
    }

    /// Frees `[start, start + n)`, merging with free neighbours.
    fn free(&mut self, start: u64, n: u64) {
        debug_assert!(n > 0 && start + n <= self.end, "swap: freeing outside the area");
        self.used -= n;
        let (mut s, mut len) = (start, n);
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            assert!(ps + pl <= start, "swap: double free at unit {start}");
            if ps + pl == start {
                self.free.remove(&ps);
                s = ps;
                len += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + n)) {
            self.free.remove(&(start + n));
            len += nl;
        }
        assert!(self.free.range(start..start + n).next().is_none(), "swap: double free at unit {start}");
        self.free.insert(s, len);
    }

    fn check(&self) {
        let mut free = 0;
        let mut last_end = None;
        for (&s, &l) in &self.free {
            assert!(l > 0, "swap: empty free extent");
            if let Some(e) = last_end {
                assert!(s > e, "swap: free extents overlap or were not merged at {s}");
            }
            assert!(s + l <= self.end, "swap: free extent past the end");
            last_end = Some(s + l);
            free += l;
        }
        let pinned_dead: u64 = self.pins.values().filter_map(|&(_, dead)| dead).sum();
        assert_eq!(free + self.used + pinned_dead, self.end, "swap: units lost");
        for &(n, _) in self.pins.values() {
            assert!(n > 0, "swap: a pin entry with no pin");
        }
    }
}

/// The swap area: a file (or a backing of the user's) and its allocator.
pub(crate) struct SwapArea {
    backing: Arc<dyn Backing>,
    /// Limit in units.
    limit: u64,
    extents: Mutex<Extents>,
    /// Entries of anonymous memory that name a slot here (`Stats::swap_pages`).
    pub(crate) slots: AtomicU64,
}

impl std::fmt::Debug for SwapArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.extents.lock();
        f.debug_struct("SwapArea").field("limit", &(self.limit * UNIT)).field("used", &(e.used * UNIT)).finish()
    }
}

/// Opens a file in `dir` that has no name (`O_TMPFILE`); where the file
/// system cannot, a named file removed at once.
fn unlinked_file(dir: &Path) -> io::Result<File> {
    match OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(f) => Ok(f),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => {
            // A name nobody else picks: the process and a counter.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            // Relaxed: only the value matters.
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!(".page-cache-swap-{}-{n}", std::process::id()));
            let f = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        Err(e) => {
            Err(io::Error::new(e.kind(), format!("page cache: cannot create the swap file in {}: {e}", dir.display())))
        }
    }
}

impl SwapArea {
    /// A swap area of at most `limit` bytes in a new unlinked file in `dir`.
    pub(crate) fn create(dir: &Path, limit: u64) -> io::Result<SwapArea> {
        let file = unlinked_file(dir)?;
        Ok(SwapArea::on(Arc::new(FileBacking::new(file, false)), limit))
    }

    /// A swap area of at most `limit` bytes on `backing`.
    pub(crate) fn on(backing: Arc<dyn Backing>, limit: u64) -> SwapArea {
        SwapArea { backing, limit: limit / UNIT, extents: Mutex::new(Extents::default()), slots: AtomicU64::new(0) }
    }

    /// Units for `bytes` bytes.
    #[inline]
    pub(crate) fn units(bytes: usize) -> u64 {
        (bytes as u64).div_ceil(UNIT)
    }

    /// Allocates `n` contiguous units; `StorageFull` at the limit.
    pub(crate) fn alloc(&self, n: u64) -> io::Result<u64> {
        let limit = self.limit;
        self.extents.lock().alloc(n, limit).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::StorageFull,
                format!("page cache: the swap area is full ({} bytes)", limit * UNIT),
            )
        })
    }

    /// Frees `n` units at `start` (later, if a reader has them pinned).
    pub(crate) fn free(&self, start: u64, n: u64) {
        let mut e = self.extents.lock();
        if let Some(pin) = e.pins.get_mut(&start) {
            assert!(pin.1.is_none(), "swap: freeing a freed extent");
            pin.1 = Some(n);
            e.used -= n;
            return;
        }
        e.free(start, n);
    }

    /// Pins the extent at `start` for a read (taken under the lock of the
    /// entry that names it).
    pub(crate) fn pin(&self, start: u64) {
        self.extents.lock().pins.entry(start).or_insert((0, None)).0 += 1;
    }

    /// Drops a pin; the last one frees an extent freed meanwhile.
    pub(crate) fn unpin(&self, start: u64) {
        let mut e = self.extents.lock();
        let pin = e.pins.get_mut(&start).expect("swap: unpinning an extent not pinned");
        pin.0 -= 1;
        if pin.0 == 0 {
            let (_, dead) = e.pins.remove(&start).expect("swap: pin vanished");
            if let Some(n) = dead {
                e.used += n;
                e.free(start, n);
            }
        }
    }

    /// Bytes in use.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.extents.lock().used * UNIT
    }

    /// Writes `bufs` whole at unit `start`.
    pub(crate) fn write(&self, start: u64, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut done = 0usize;
        while done < total {
            // The slices still to write, the first one cut at `done`.
            let mut skip = done;
            let mut rest: Vec<IoSlice<'_>> = Vec::with_capacity(bufs.len());
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                rest.push(IoSlice::new(&b[skip..]));
                skip = 0;
            }
            match self.backing.write_vectored_at(&rest, start * UNIT + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "page cache: the swap file took no bytes"))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The swap file's descriptor, for reads on io_uring.
    pub(crate) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.backing.raw_fd()
    }

    /// Reads `buf` whole from unit `start`; a short read is an error.
    pub(crate) fn read(&self, start: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_bytes(start * UNIT, buf)
    }

    /// Reads `buf` whole from byte `pos`; a short read is an error.
    pub(crate) fn read_bytes(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.backing.read_vectored_at(&mut [IoSliceMut::new(&mut buf[done..])], pos + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "page cache: the swap file ended inside a slot",
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Panics unless the allocator's books balance.
    pub(crate) fn check_invariants(&self) {
        self.extents.lock().check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The allocator against a model of which units are taken.
        #[test]
        fn extents_match_a_model(ops in proptest::collection::vec((0u8..3, 1u64..20, any::<u16>()), 1..200)) {
            let mut e = Extents::default();
            let limit = 400;
            let mut live: Vec<(u64, u64)> = Vec::new();
            let mut taken = vec![false; limit as usize];
            for (op, n, pick) in ops {
                match op {
                    0 | 1 => {
                        if let Some(s) = e.alloc(n, limit) {
                            for u in s..s + n {
                                prop_assert!(!taken[u as usize], "unit {} handed out twice", u);
                                taken[u as usize] = true;
                            }
                            live.push((s, n));
                        } else {
                            let free = taken.iter().filter(|t| !**t).count() as u64;
                            // Refused only when no run of n free units exists.
                            let mut run = 0;
                            let mut best = 0;
                            for t in &taken { if *t { run = 0 } else { run += 1; best = best.max(run) } }
                            prop_assert!(best < n, "refused {} units with a run of {} free ({} free)", n, best, free);
                        }
                    }
                    _ if !live.is_empty() => {
                        let (s, n) = live.swap_remove(pick as usize % live.len());
                        for u in s..s + n { taken[u as usize] = false; }
                        e.free(s, n);
                    }
                    _ => {}
                }
                e.check();
                prop_assert_eq!(e.used, live.iter().map(|l| l.1).sum::<u64>());
            }
        }
    }

    #[test]
    fn a_pinned_extent_is_freed_when_unpinned() {
        let dir = tempfile::tempdir().unwrap();
        let s = SwapArea::create(dir.path(), 1 << 20).unwrap();
        let n = SwapArea::units(4096);
        let a = s.alloc(n).unwrap();
        s.write(a, &[IoSlice::new(&[7u8; 4096])]).unwrap();
        s.pin(a);
        s.free(a, n);
        // Not reused while pinned.
        let b = s.alloc(n).unwrap();
        assert_ne!(a, b);
        let mut buf = vec![0u8; 4096];
        s.read(a, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 7));
        s.unpin(a);
        s.check_invariants();
        assert_eq!(s.alloc(n).unwrap(), a);
        s.check_invariants();
        // No file in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_limit_gives_storage_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = SwapArea::create(dir.path(), 8 * UNIT).unwrap();
        s.alloc(8).unwrap();
        assert_eq!(s.alloc(1).unwrap_err().kind(), io::ErrorKind::StorageFull);
    }
}
