//! The page lock and waiting on page bits, following the wait tables of
//! `mm/filemap.c` (`lock_page`, `unlock_page`, `wait_on_page_bit`,
//! `end_page_writeback`).
//!
//! `LOCKED` and `WAITERS` live in the flags word. A waiter sets `WAITERS`
//! (or `WB_WAITERS`) and re-tests the bit it waits for in one RMW inside the
//! park validation callback, which runs under the wait queue's lock; the
//! waker clears the bit and the waiters bit in one RMW and only calls unpark
//! when the waiters bit was set. Both RMWs hit the same word, so either the
//! waiter sees the bit clear and does not sleep, or the waker sees the
//! waiters bit and wakes it: no wakeup is lost, and no wake call is made when
//! nobody waits. Queues are keyed by the descriptor address plus the bit.

use crate::page::{Page, PageFlags};
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
        park::unpark_all(key(page, bit));
    }
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

/// Takes a read guard on the bytes: raises mapcount while the page is not
/// locked. Paired with `read_unlock`.
#[inline]
pub(crate) fn read_lock(page: &Page) {
    loop {
        // SeqCst (both): a Dekker pair with the writer, who sets LOCKED and
        // then reads mapcount. One of us must see the other's write.
        page.mapcount.fetch_add(1, Ordering::SeqCst);
        if page.flags.load(Ordering::SeqCst) & PageFlags::LOCKED.0 == 0 {
            return;
        }
        page.mapcount.fetch_sub(1, Ordering::SeqCst);
        wait_on_page_locked(page);
    }
}

/// Drops a read guard.
#[inline]
pub(crate) fn read_unlock(page: &Page) {
    // Release: our reads of the bytes happen before a writer's writes,
    // which Acquire-load mapcount == 0.
    page.mapcount.fetch_sub(1, Ordering::Release);
}

/// The lock holder waits until no read guard is held.
#[inline]
pub(crate) fn wait_for_readers(page: &Page) {
    // SeqCst: the other half of the Dekker pair in `read_lock`.
    let mut spins = 0u32;
    while page.mapcount.load(Ordering::SeqCst) != 0 {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            crate::sync::yield_now();
        }
    }
}
