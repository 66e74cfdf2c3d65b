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

/// What to do when an asynchronous operation completes: called once, in
/// the reaper's thread, with the bytes moved or the error.
pub(crate) trait Completion: Send {
    fn complete(self: Box<Self>, result: io::Result<usize>);
}

/// An operation in flight: its iovec array (the kernel reads it until the
/// operation completes) and what to run then.
struct Pending {
    iov: Vec<libc::iovec>,
    done: Box<dyn Completion>,
}

// SAFETY: the iovecs point into frames of the arena, which the submitter
// handed over with the operation (`AsyncRing::submit_readv`'s contract);
// nothing else touches them until the completion runs, in one thread.
unsafe impl Send for Pending {}

/// `user_data` of the no-op that wakes the reaper.
const WAKE: u64 = u64::MAX;

/// A ring shared by every thread of a cache for operations that nobody
/// waits on at submission: a reader's thread submits a readahead window
/// and goes on, and one reaper thread (`reap`) sleeps in the kernel until
/// completions arrive and runs each one's `Completion`. Submitters share
/// the submission queue under a mutex; only the reaper reads the
/// completion queue.
pub(crate) struct AsyncRing {
    ring: IoUring,
    /// Operations submitted and not yet completed, by `user_data`; also
    /// serializes access to the submission queue.
    pending: Mutex<AsyncState>,
}

struct AsyncState {
    ops: std::collections::HashMap<u64, Pending>,
    next: u64,
    /// The reaper was asked to stop (`stop`): no new submissions.
    stopping: bool,
}

impl AsyncRing {
    /// A ring, or `None` where io_uring cannot be set up.
    pub(crate) fn new() -> Option<AsyncRing> {
        let ring = IoUring::builder().setup_clamp().build(RING_DEPTH).ok()?;
        Some(AsyncRing {
            ring,
            pending: Mutex::new(AsyncState { ops: std::collections::HashMap::new(), next: 0, stopping: false }),
        })
    }

    /// Submits a vectored read of `iov` at `offset` of `fd`; `done` runs in
    /// the reaper's thread when it completes. Hands `done` back when the
    /// ring is full, stopping or refuses the entry: the caller does the I/O
    /// some other way.
    ///
    /// # Safety
    ///
    /// The buffers `iov` names stay valid and untouched by anyone else
    /// until `done` runs (`done` owns them, typically: locked pages), and
    /// `fd` stays open until then (`done` keeps its file).
    pub(crate) unsafe fn submit_readv(
        &self,
        fd: RawFd,
        iov: Vec<libc::iovec>,
        offset: u64,
        done: Box<dyn Completion>,
    ) -> Result<(), Box<dyn Completion>> {
        let mut st = self.pending.lock();
        if st.stopping || st.ops.len() >= RING_DEPTH as usize {
            return Err(done);
        }
        let id = st.next;
        st.next += 1;
        let entry =
            opcode::Readv::new(types::Fd(fd), iov.as_ptr(), iov.len() as u32).offset(offset).build().user_data(id);
        {
            // SAFETY: the submission queue is touched only under `pending`'s
            // lock, which we hold.
            let mut sq = unsafe { self.ring.submission_shared() };
            // SAFETY: the entry names `iov` (kept in `pending` until the
            // completion) and buffers the caller keeps valid until `done`
            // runs, after the kernel completed the read.
            if unsafe { sq.push(&entry) }.is_err() {
                return Err(done);
            }
        }
        st.ops.insert(id, Pending { iov, done });
        // If the kernel does not take it now, the entry stays queued and the
        // reaper's next `io_uring_enter` submits it.
        let _ = self.ring.submitter().submit();
        Ok(())
    }

    /// The reaper: waits for completions and runs them, until `stop` was
    /// called and nothing is left in flight. Run by one thread only.
    pub(crate) fn reap(&self) {
        loop {
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
            // SAFETY: only this thread (the one reaper) reads the
            // completion queue.
            let done: Vec<(u64, i32)> =
                unsafe { self.ring.completion_shared() }.map(|c| (c.user_data(), c.result())).collect();
            let mut jobs = Vec::with_capacity(done.len());
            let finished = {
                let mut st = self.pending.lock();
                for (id, r) in done {
                    if id == WAKE {
                        continue;
                    }
                    if let Some(p) = st.ops.remove(&id) {
                        jobs.push((p, r));
                    }
                }
                st.stopping && st.ops.is_empty()
            };
            for (p, r) in jobs {
                let res = if r < 0 { Err(io::Error::from_raw_os_error(-r)) } else { Ok(r as usize) };
                // The kernel is done with the iovec array.
                drop(p.iov);
                p.done.complete(res);
            }
            if finished {
                return;
            }
        }
    }

    /// Asks the reaper to finish what is in flight and return; refuses new
    /// submissions from now on.
    pub(crate) fn stop(&self) {
        let mut st = self.pending.lock();
        st.stopping = true;
        let entry = opcode::Nop::new().build().user_data(WAKE);
        // SAFETY: under `pending`'s lock, as every submission-queue access.
        let mut sq = unsafe { self.ring.submission_shared() };
        // SAFETY: a no-op names no memory.
        let _ = unsafe { sq.push(&entry) };
        drop(sq);
        let _ = self.ring.submitter().submit();
    }
}
