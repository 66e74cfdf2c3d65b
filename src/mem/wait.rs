//! The page lock and waiting on page bits, following the wait tables of
//! `mm/filemap.c` (`lock_page`, `unlock_page`, `wait_on_page_bit`,
//! `end_page_writeback`).
//!
//! `LOCKED` and `WAITERS` live in the flags word. A waiter sets `WAITERS`
//! (or `WB_WAITERS`) and re-tests the bit it waits for in one RMW inside the
//! park validation callback, which runs under the wait queue's lock. The
//! waker clears the bit with one RMW (`lock xadd`: subtracting a bit known
//! to be set) that also tells it whether the waiters bit was set, and only
//! then wakes. Both RMWs hit the same word, so either the waiter sees the
//! bit clear and does not sleep, or the waker sees the waiters bit and wakes
//! it: no wakeup is lost, and no wake call is made when nobody waits. The
//! waker clears the waiters bit while it still holds the queue lock, after
//! removing every sleeper, so a thread that parks later sets it again
//! (the kernel's `wake_up_page_bit`). Queues are keyed by the descriptor
//! address plus the bit.

use crate::mem::page::{Page, PageFlags, GUARD_MASK, GUARD_MAX, GUARD_ONE};
use crate::sync::{park, Ordering};

#[inline]
fn key(page: &Page, bit: PageFlags) -> usize {
    page as *const Page as usize + bit.0.trailing_zeros() as usize
}

/// Sleeps until `bit` is clear, setting `waiters` so the clearer wakes us.
#[cold]
fn wait_on_bit(page: &Page, bit: PageFlags, waiters: PageFlags) {
    // Acquire (SeqCst RMW below also): the clearer's writes before its clear
    // are visible once we see the bit clear.
    while page.flags.load(Ordering::Acquire) & bit.0 != 0 {
        park::park(key(page, bit), || {
            // One RMW both announces us and re-tests the bit: see the module docs.
            page.flags.fetch_or(waiters.0, Ordering::SeqCst) & bit.0 != 0
        });
    }
}

/// Wakes the waiters of `bit` if the clearing RMW saw `waiters` set.
#[inline]
fn wake_if(page: &Page, old: u32, bit: PageFlags, waiters: PageFlags) {
    if old & waiters.0 != 0 {
        wake_bit(page, bit, waiters);
    }
}

#[cold]
fn wake_bit(page: &Page, bit: PageFlags, waiters: PageFlags) {
    park::unpark_all(key(page, bit), || {
        // Relaxed: under the queue lock; every sleeper was just removed,
        // and a later one re-sets the bit with its SeqCst RMW.
        page.flags.fetch_and(!waiters.0, Ordering::Relaxed);
    });
}

/// Takes the page lock if it is free.
#[inline]
pub fn trylock_page(page: &Page) -> bool {
    // Acquire: the previous owner's writes under the lock are visible to us.
    page.flags.fetch_or(PageFlags::LOCKED.0, Ordering::Acquire) & PageFlags::LOCKED.0 == 0
}

/// Takes the page lock, sleeping while another thread holds it.
#[inline]
pub fn lock_page(page: &Page) {
    if !trylock_page(page) {
        lock_page_slow(page);
    }
}

#[cold]
fn lock_page_slow(page: &Page) {
    loop {
        wait_on_bit(page, PageFlags::LOCKED, PageFlags::WAITERS);
        if trylock_page(page) {
            return;
        }
    }
}

/// Releases the page lock and wakes the waiters, if any.
#[inline]
pub fn unlock_page(page: &Page) {
    // A change made under the lock (`data_mut`, `set_mapping`) ends here.
    page.end_write();
    // SeqCst: releases our writes under the lock, and is ordered with the
    // waiters' SeqCst RMW (same word) so WAITERS set before us is seen.
    let old = page.flags.fetch_and(!(PageFlags::LOCKED.0 | PageFlags::WAITERS.0), Ordering::SeqCst);
    assert!(old & PageFlags::LOCKED.0 != 0, "unlock_page of an unlocked page");
    wake_if(page, old, PageFlags::LOCKED, PageFlags::WAITERS);
}

/// Sleeps until the page is unlocked (does not take the lock).
#[inline]
pub fn wait_on_page_locked(page: &Page) {
    if page.test(PageFlags::LOCKED) {
        wait_on_bit(page, PageFlags::LOCKED, PageFlags::WAITERS);
    }
}

/// Marks the start of writeback; true if it was already under writeback.
/// The caller holds the page lock.
#[inline]
pub fn set_page_writeback(page: &Page) -> bool {
    page.test_and_set(PageFlags::WRITEBACK)
}

/// Ends writeback and wakes the waiters. The caller holds a reference (the
/// page cannot be freed and reused under the waiters' feet).
#[inline]
pub fn end_page_writeback(page: &Page) {
    // SeqCst: as in `unlock_page`.
    let old = page.flags.fetch_and(!(PageFlags::WRITEBACK.0 | PageFlags::WB_WAITERS.0), Ordering::SeqCst);
    assert!(old & PageFlags::WRITEBACK.0 != 0, "end_page_writeback without writeback");
    wake_if(page, old, PageFlags::WRITEBACK, PageFlags::WB_WAITERS);
}

/// Sleeps until the page is not under writeback.
#[inline]
pub fn wait_on_page_writeback(page: &Page) {
    if page.test(PageFlags::WRITEBACK) {
        wait_on_bit(page, PageFlags::WRITEBACK, PageFlags::WB_WAITERS);
    }
}

/// Takes a read guard on the bytes: raises the guard count (the top bits
/// of the flags word) while the page is not locked. Paired with
/// `read_unlock`.
#[inline]
pub(crate) fn read_lock(page: &Page) {
    loop {
        // Acquire: the guard sees the bytes the last lock holder wrote (its
        // unlock is a release RMW on this word). One RMW both raises the
        // count and reads LOCKED, so a writer, which sets LOCKED by RMW on
        // the same word and then waits for the count to drain, and this
        // reader are ordered by the word's modification order.
        let old = page.flags.fetch_add(GUARD_ONE, Ordering::Acquire);
        if old & PageFlags::LOCKED.0 == 0 && (old & GUARD_MASK) / GUARD_ONE < GUARD_MAX {
            return;
        }
        // Release: gives back a guard we never used.
        page.flags.fetch_sub(GUARD_ONE, Ordering::Release);
        if old & PageFlags::LOCKED.0 != 0 {
            wait_on_page_locked(page);
        } else {
            crate::sync::yield_now(); // a few thousand guards at once: wait for some to drop
        }
    }
}

/// Drops a read guard.
#[inline]
pub(crate) fn read_unlock(page: &Page) {
    // Release: our reads of the bytes happen before a writer's writes,
    // which Acquire-load a count of zero.
    page.flags.fetch_sub(GUARD_ONE, Ordering::Release);
}

/// The lock holder waits until no read guard is held.
#[inline]
pub(crate) fn wait_for_readers(page: &Page) {
    // Acquire: pairs with `read_unlock`'s Release.
    let mut spins = 0u32;
    while page.flags.load(Ordering::Acquire) & GUARD_MASK != 0 {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            crate::sync::yield_now();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::Arc;

    #[test]
    fn lock_excludes_and_loses_nothing() {
        // More threads than cores, a few pages, counted critical sections.
        let pages: Arc<Vec<Page>> = Arc::new((0..3).map(|_| Page::new()).collect());
        let inside: Arc<Vec<StdAtomicUsize>> = Arc::new((0..3).map(|_| StdAtomicUsize::new(0)).collect());
        let counts: Arc<Vec<StdAtomicUsize>> = Arc::new((0..3).map(|_| StdAtomicUsize::new(0)).collect());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (pages, inside, counts) = (pages.clone(), inside.clone(), counts.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000usize {
                        let k = (i + t) % 3;
                        lock_page(&pages[k]);
                        assert_eq!(inside[k].fetch_add(1, Ordering::SeqCst), 0, "two holders of one page lock");
                        counts[k].fetch_add(1, Ordering::Relaxed);
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                        inside[k].fetch_sub(1, Ordering::SeqCst);
                        unlock_page(&pages[k]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: usize = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 8 * 20_000);
        for p in pages.iter() {
            assert!(!p.test(PageFlags::LOCKED));
        }
    }

    #[test]
    fn trylock_fails_while_held() {
        let p = Page::new();
        assert!(trylock_page(&p));
        assert!(!trylock_page(&p));
        unlock_page(&p);
        assert!(trylock_page(&p));
        unlock_page(&p);
        // No waiter ever slept: the WAITERS bit was never set.
        assert!(!p.test(PageFlags::WAITERS));
    }

    #[test]
    fn all_writeback_waiters_wake() {
        let page = Arc::new(Page::new());
        page.set_page_count(1);
        assert!(trylock_page(&page));
        assert!(!set_page_writeback(&page));
        unlock_page(&page);
        let woke = Arc::new(StdAtomicUsize::new(0));
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let (page, woke) = (page.clone(), woke.clone());
                std::thread::spawn(move || {
                    wait_on_page_writeback(&page);
                    assert!(!page.test(PageFlags::WRITEBACK));
                    woke.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Let them sleep, then end writeback once.
        while !page.test(PageFlags::WB_WAITERS) {
            std::thread::yield_now();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(woke.load(Ordering::SeqCst), 0, "a waiter passed before writeback ended");
        end_page_writeback(&page);
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(woke.load(Ordering::SeqCst), 16);
        assert!(!page.test(PageFlags::WB_WAITERS));
    }

    #[test]
    fn readers_block_writer_and_writer_blocks_readers() {
        let page = Arc::new(Page::new());
        read_lock(&page);
        lock_page(&page);
        let p2 = page.clone();
        let writer = std::thread::spawn(move || {
            wait_for_readers(&p2);
            unlock_page(&p2);
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!writer.is_finished(), "writer went ahead of a reader");
        read_unlock(&page);
        writer.join().unwrap();
        read_lock(&page);
        read_unlock(&page);
        assert_eq!(page.flags.load(Ordering::SeqCst) & GUARD_MASK, 0);
    }
}
