//! Batched asynchronous I/O on io_uring (the `io-uring` crate), after the
//! kernel's `io_uring/rw.c` interface: many reads or writes of one file in
//! flight from one thread, submitted together and reaped as they complete.
//! Used for scattered prefetch and for writeback runs; the positioned
//! syscalls of `backing` stay the fallback when a ring cannot be set up
//! (an old kernel, seccomp, `ENOSYS`, `EPERM`) or the backing is not a
//! plain file. Buffers are the arena's frames (page-aligned, so O_DIRECT
//! needs no bounce buffer).
//!
//! Rings live in a small pool per cache: a thread takes one for a batch and
//! gives it back, so threads never share a ring while it has I/O in flight.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};
use parking_lot::Mutex;

use crate::sync::{AtomicBool, Ordering};

/// Submission queue entries per ring: the most I/Os one batch keeps in
/// flight.
pub(crate) const RING_DEPTH: u32 = 128;

/// One I/O of a batch: a read into one buffer, or a write of an iovec list.
pub(crate) enum Op {
    /// Read `len` bytes at `offset` into `buf`.
    Read { buf: *mut u8, len: usize, offset: u64 },
    /// Write the iovecs at `offset`.
    Writev { iov: Vec<libc::iovec>, offset: u64 },
}

/// The rings of one cache.
pub(crate) struct RingPool {
    rings: Mutex<Vec<IoUring>>,
    /// Rings work here (the first one was set up) and the user wants them.
    enabled: AtomicBool,
}

impl RingPool {
    /// A pool; with `want`, tries to set up one ring now, and stays
    /// disabled (the positioned syscalls serve) if that fails.
    pub(crate) fn new(want: bool) -> RingPool {
        let mut rings = Vec::new();
        if want {
            if let Ok(r) = IoUring::new(RING_DEPTH) {
                rings.push(r);
            }
        }
        let enabled = !rings.is_empty();
        RingPool { rings: Mutex::new(rings), enabled: AtomicBool::new(enabled) }
    }

    /// Whether batches go through io_uring.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        // Relaxed: a setting; the rings themselves are behind the mutex.
        self.enabled.load(Ordering::Relaxed)
    }

    fn take(&self) -> Option<IoUring> {
        if let Some(r) = self.rings.lock().pop() {
            return Some(r);
        }
        IoUring::new(RING_DEPTH).ok()
    }

    fn give_back(&self, ring: IoUring) {
        let mut rings = self.rings.lock();
        if rings.len() < 8 {
            rings.push(ring);
        }
    }

    /// Runs `ops` on file `fd`, at most `RING_DEPTH` in flight, and returns
    /// each one's result (bytes moved, or the error), in order. `None` when
    /// no ring is available: the caller does the I/O itself.
    ///
    /// # Safety
    ///
    /// Every buffer the ops name is valid (for writes into it, or reads
    /// from it) and not otherwise accessed until this returns, and `fd` is
    /// open until then. This function returns only after every submitted
    /// operation has completed.
    pub(crate) unsafe fn run(&self, fd: RawFd, ops: &[Op]) -> Option<Vec<io::Result<usize>>> {
        if !self.enabled() || ops.is_empty() {
            return None;
        }
        let mut ring = self.take()?;
        let mut results: Vec<Option<io::Result<usize>>> = (0..ops.len()).map(|_| None).collect();
        let mut next = 0usize;
        let mut in_flight = 0usize;
        let mut broken = None;
        while next < ops.len() || in_flight > 0 {
            {
                let mut sq = ring.submission();
                while next < ops.len() && in_flight < RING_DEPTH as usize {
                    let entry = match &ops[next] {
                        Op::Read { buf, len, offset } => {
                            opcode::Read::new(types::Fd(fd), *buf, *len as u32).offset(*offset).build()
                        }
                        Op::Writev { iov, offset } => {
                            opcode::Writev::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32).offset(*offset).build()
                        }
                    }
                    .user_data(next as u64);
                    // SAFETY: the entry names buffers (and an iovec array in
                    // `ops`) that the caller keeps valid until this function
                    // returns, which it does only after every entry the
                    // kernel took has completed (below).
                    if unsafe { sq.push(&entry) }.is_err() {
                        break; // full: submit these first
                    }
                    next += 1;
                    in_flight += 1;
                }
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {
                    std::thread::yield_now();
                }
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
            for cqe in ring.completion() {
                let i = cqe.user_data() as usize;
                let r = cqe.result();
                results[i] = Some(if r < 0 { Err(io::Error::from_raw_os_error(-r)) } else { Ok(r as usize) });
                in_flight -= 1;
            }
        }
        if let Some(e) = broken {
            // The ring refused to enter. Entries it never took stay in its
            // queue; the ring is dropped below, so they never run. Those it
            // took complete into our buffers: wait for them by watching the
            // completion queue, which needs no system call.
            let never_taken = ring.submission().len();
            let mut taken = in_flight - never_taken;
            while taken > 0 {
                let mut reaped = false;
                for cqe in ring.completion() {
                    let i = cqe.user_data() as usize;
                    let r = cqe.result();
                    results[i] = Some(if r < 0 { Err(io::Error::from_raw_os_error(-r)) } else { Ok(r as usize) });
                    taken -= 1;
                    reaped = true;
                }
                if !reaped {
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
            // Relaxed: a setting; from now on batches use the syscalls.
            self.enabled.store(false, Ordering::Relaxed);
            let kind = e.kind();
            return Some(
                results
                    .into_iter()
                    .map(|r| r.unwrap_or_else(|| Err(io::Error::new(kind, format!("io_uring: {e}")))))
                    .collect(),
            );
        }
        self.give_back(ring);
        Some(results.into_iter().map(|r| r.expect("every operation completed")).collect())
    }
}
