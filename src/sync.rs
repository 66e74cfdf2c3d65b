//! The one place atomics and thread parking come from, so that `loom` can
//! replace them (`--cfg loom`) and model-check the protocols built on them.
//!
//! Follows the role of the kernel's `include/linux/atomic.h` and the hashed
//! wait queues of `kernel/sched/wait_bit.c`: every other module imports its
//! atomics from here, never from `std` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Hashed wait queues keyed by an address: `parking_lot_core` outside loom.
#[cfg(not(loom))]
pub(crate) mod park {
    use parking_lot_core::{DEFAULT_PARK_TOKEN, DEFAULT_UNPARK_TOKEN};

    /// Sleeps on `key` unless `validate` (run under the queue's lock) says no.
    #[cold]
    pub(crate) fn park(key: usize, validate: impl FnOnce() -> bool) {
        // SAFETY: `park` requires that the callbacks do not panic and do not
        // call back into parking_lot_core; `validate` is a plain atomic RMW
        // on a page's flags word, and the other callbacks do nothing.
        unsafe {
            parking_lot_core::park(key, validate, || {}, |_, _| {}, DEFAULT_PARK_TOKEN, None);
        }
    }

    /// Wakes every thread sleeping on `key`, running `then` while the
    /// queue is still locked (no thread can park on `key` meanwhile).
    #[cold]
    pub(crate) fn unpark_all(key: usize, then: impl FnOnce()) {
        // SAFETY: `unpark_filter` requires callbacks that neither panic nor
        // call into parking_lot_core: the filter returns a constant and
        // `then` is one atomic RMW on a page's flags word.
        unsafe {
            parking_lot_core::unpark_filter(
                key,
                |_| parking_lot_core::FilterOp::Unpark,
                |_| {
                    then();
                    DEFAULT_UNPARK_TOKEN
                },
            );
        }
    }
}

/// Under loom: one queue guarded by a loom mutex, with a generation counter
/// that every `unpark_all` bumps. Wakes may be spurious (callers re-check).
#[cfg(loom)]
pub(crate) mod park {
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref QUEUE: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
    }

    pub(crate) fn park(_key: usize, validate: impl FnOnce() -> bool) {
        let (lock, cvar) = &*QUEUE;
        let mut generation = lock.lock().unwrap();
        if !validate() {
            return;
        }
        let seen = *generation;
        while *generation == seen {
            generation = cvar.wait(generation).unwrap();
        }
    }

    pub(crate) fn unpark_all(_key: usize, then: impl FnOnce()) {
        let (lock, cvar) = &*QUEUE;
        let mut generation = lock.lock().unwrap();
        *generation += 1;
        then();
        drop(generation);
        cvar.notify_all();
    }
}

/// Gives up the CPU in a spin-wait (loom: lets the model switch threads).
#[cfg(not(loom))]
pub(crate) fn yield_now() {
    std::thread::yield_now();
}

/// Gives up the CPU in a spin-wait (loom: lets the model switch threads).
#[cfg(loom)]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}
