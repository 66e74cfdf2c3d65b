//! The one place atomics and thread parking come from, so that `loom` can
//! replace them (`--cfg loom`) and model-check the protocols built on them.
//!
//! Follows the role of the kernel's `include/linux/atomic.h` and the hashed
//! wait queues of `kernel/sched/wait_bit.c`: every other module imports its
//! atomics from here, never from `std` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

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

/// Takes a parking mutex, spinning longer than parking_lot does before it
/// sleeps. The tree and LRU locks are held for a batch of pages (a few
/// microseconds), longer than parking_lot's spin, and on two cores a
/// holder is almost always running on the other one: parking there cost a
/// futex sleep and a cross-core wakeup per contended batch (6% of `cat`'s
/// CPU time with a helper thread filling the same file).
#[inline]
pub(crate) fn lock_spinning<T>(m: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    match m.try_lock() {
        Some(g) => g,
        None => lock_spinning_slow(m),
    }
}

#[cold]
fn lock_spinning_slow<T>(m: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    // About 20 us of `pause`; then sleep as usual.
    for _ in 0..400 {
        std::hint::spin_loop();
        // Read before trying: spinning on the RMW would bounce the line.
        if !m.is_locked() {
            if let Some(g) = m.try_lock() {
                return g;
            }
        }
    }
    m.lock()
}

/// A test-and-set spin lock for tiny critical sections that are almost never
/// contended (the per-thread frame lists): one RMW to take it and a plain
/// Release store to drop it, where a parking mutex needs an RMW for both.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time, so
// sharing the lock across threads is sound whenever moving `T` is.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above: owning the lock owns the value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> SpinLock<T> {
        SpinLock { locked: AtomicBool::new(false), value: std::cell::UnsafeCell::new(value) }
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        // Acquire: the previous holder's writes to `value` are visible.
        if self.locked.swap(true, Ordering::Acquire) {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            // Relaxed: only a hint before the Acquire swap retries.
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 100 {
                    std::hint::spin_loop();
                } else {
                    yield_now();
                }
            }
            // Acquire: as in `lock`.
            if !self.locked.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        // Acquire: as in `lock`. (`then`, not `then_some`: a guard built
        // for nothing would release a lock held by someone else on drop.)
        #[allow(clippy::unnecessary_lazy_evaluations)]
        (!self.locked.swap(true, Ordering::Acquire)).then(|| SpinGuard { lock: self })
    }
}

/// Access to a [`SpinLock`]'s value; releases the lock on drop.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock,
        // so no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Release: our writes to the value happen before the next holder's
        // Acquire; a plain store, no RMW.
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn failed_try_lock_leaves_the_holder_alone() {
        let l = SpinLock::new(5);
        let g = l.lock();
        assert!(l.try_lock().is_none());
        assert!(l.try_lock().is_none(), "a failed try_lock released the lock");
        drop(g);
        *l.try_lock().expect("free now") += 1;
        assert_eq!(*l.lock(), 6);
    }

    #[test]
    fn spin_lock_excludes() {
        let l = SpinLock::new(0u64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50_000 {
                        *l.lock() += 1;
                    }
                });
            }
        });
        assert_eq!(*l.lock(), 200_000);
    }
}
