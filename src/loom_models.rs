//! loom models of the protocols the cache's soundness rests on: the page
//! lock and its wakeups, the speculative reference against the last put and
//! against the removal freeze, and the end of writeback against truncation.
//! Run with `RUSTFLAGS='--cfg loom' cargo test --release --lib loom_models`.

use loom::sync::Arc;
use loom::thread;

use crate::mem::page::{Page, PageFlags};
use crate::mem::wait;
use crate::sync::{AtomicBool, AtomicU32, Ordering};

/// Lock, unlock and wait: nobody sleeps forever (loom reports a deadlock if
/// a wakeup is lost) and nobody holds the lock together.
#[test]
fn lock_unlock_wait_no_lost_wakeup() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        let inside = Arc::new(AtomicU32::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (page, inside) = (page.clone(), inside.clone());
                thread::spawn(move || {
                    wait::lock_page(&page);
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    wait::unlock_page(&page);
                })
            })
            .collect();
        wait::wait_on_page_locked(&page);
        for t in ts {
            t.join().unwrap();
        }
        assert!(!page.test(PageFlags::LOCKED));
    });
}

/// A speculative `get_page_unless_zero` racing the last `put_page`: the
/// frame is freed exactly once, and never while the reader holds it.
#[test]
fn speculative_get_vs_last_put() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        page.set_page_count(1);
        let freed = Arc::new(AtomicU32::new(0));
        let reader = {
            let (page, freed) = (page.clone(), freed.clone());
            thread::spawn(move || {
                if page.get_page_unless_zero() {
                    assert_eq!(freed.load(Ordering::SeqCst), 0, "got a reference to a freed page");
                    if page.put_page_testzero() {
                        freed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        if page.put_page_testzero() {
            freed.fetch_add(1, Ordering::SeqCst);
        }
        reader.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
    });
}

/// Lockless lookup against removal (the freeze protocol): a reader that
/// keeps a page saw it in this mapping, and then removal must fail; a
/// removal that succeeds leaves readers with nothing or with the reused
/// page, which they reject by its mapping.
#[test]
fn lookup_vs_removal_freeze() {
    loom::model(|| {
        const MAPPING: u32 = 7;
        let page = Arc::new(Page::new());
        page.set_mapping(MAPPING, 3);
        page.set_page_count(1); // the page cache's reference
        let slot = Arc::new(AtomicBool::new(true)); // the tree slot holds the page
        let removed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (page, slot, removed) = (page.clone(), slot.clone(), removed.clone());
            thread::spawn(move || {
                if !slot.load(Ordering::Acquire) {
                    return;
                }
                if !page.get_page_unless_zero() {
                    return;
                }
                if page.mapping_id() == MAPPING && page.index() == 3 {
                    // We hold it in this mapping: removal cannot have freed it.
                    assert!(!removed.load(Ordering::SeqCst), "lookup returned a removed page");
                }
                page.put_page_testzero();
            })
        };
        // Removal: page locked, tree lock held; freeze cache's reference only.
        if page.ref_freeze(1) {
            slot.store(false, Ordering::Release);
            page.set_mapping(0, 3);
            removed.store(true, Ordering::SeqCst);
            // Reuse the frame for another file.
            page.set_mapping(MAPPING + 1, 3);
            page.set_page_count(1);
        }
        reader.join().unwrap();
    });
}

/// End of writeback racing truncation, which locks the page and waits for
/// writeback: the truncator never proceeds while WRITEBACK is set, and
/// always wakes.
#[test]
fn writeback_end_vs_truncate() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        page.set_page_count(2);
        assert!(!wait::set_page_writeback(&page));
        let truncator = {
            let page = page.clone();
            thread::spawn(move || {
                wait::lock_page(&page);
                wait::wait_on_page_writeback(&page);
                assert!(!page.test(PageFlags::WRITEBACK));
                wait::unlock_page(&page);
            })
        };
        wait::end_page_writeback(&page);
        truncator.join().unwrap();
    });
}

/// Reclaim's freeze racing a reader taking a reference: either the freeze
/// wins (the reader's speculative get fails) or the reader wins (the freeze
/// fails and the page stays); never both.
#[test]
fn freeze_vs_get() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        page.set_page_count(2); // cache + reclaim's isolation reference
        let reader = {
            let page = page.clone();
            thread::spawn(move || page.get_page_unless_zero())
        };
        let frozen = page.ref_freeze(2);
        let got = reader.join().unwrap();
        assert!(!(frozen && got), "a frozen page handed out a reference");
        if !frozen {
            assert!(got || page.page_count() == 2);
        }
    });
}
