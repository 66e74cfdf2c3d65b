//! loom models of the protocols the cache's soundness rests on: the page
//! lock and its wakeups, the speculative reference against the last put and
//! against the removal freeze, the end of writeback against truncation,
//! the optimistic read against a writer and against removal plus reuse of
//! the frame, and the read guard (counted in the flags word) against a
//! lock holder, and the eviction of a large page by reclaim aimed at one
//! block against a writer dirtying one of its blocks, and the leaf
//! table's reader against the unlink and reuse of a leaf, and the second
//! tier's put against an invalidation, and the admission test's vote
//! against the hits and the isolation that race to consume it.
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

/// The bytes of a two-byte "frame" for the optimistic-read models. loom
/// cannot model the raw frame memory the real copy reads (`copy_racy`), so
/// the frame is two loom atomics read and written with Relaxed accesses:
/// what the model checks is the version protocol around the copy.
struct Frame([loom::sync::atomic::AtomicU8; 2]);

impl Frame {
    fn new(v: u8) -> Frame {
        Frame([loom::sync::atomic::AtomicU8::new(v), loom::sync::atomic::AtomicU8::new(v)])
    }
    fn write(&self, v: u8) {
        for b in &self.0 {
            b.store(v, Ordering::Relaxed);
        }
    }
    fn copy(&self) -> [u8; 2] {
        [self.0[0].load(Ordering::Relaxed), self.0[1].load(Ordering::Relaxed)]
    }
}

/// An optimistic reader (no reference, no guard: version, copy, version)
/// racing a writer that locks the page, changes its bytes as `data_mut`
/// does and unlocks: a copy that passes the version check is one version
/// of the page, never a mix.
#[test]
fn optimistic_read_vs_writer() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        page.set(PageFlags::UPTODATE);
        let frame = Arc::new(Frame::new(1));
        let writer = {
            let (page, frame) = (page.clone(), frame.clone());
            thread::spawn(move || {
                wait::lock_page(&page);
                wait::wait_for_readers(&page);
                page.begin_write();
                frame.write(2);
                wait::unlock_page(&page);
            })
        };
        let seq = page.read_seq();
        if seq & 1 == 0 && !page.test(PageFlags::LOCKED) {
            let bytes = frame.copy();
            if page.seq_unchanged(seq) {
                assert!(bytes == [1, 1] || bytes == [2, 2], "torn copy {bytes:?} passed the check");
            }
        }
        writer.join().unwrap();
        assert_eq!(page.read_seq() & 1, 0, "the version is even after unlock");
    });
}

/// An optimistic reader of (mapping 7, index 3) racing the page's removal
/// and the frame's reuse for another file: a copy that passes the identity
/// and version checks holds the old page's bytes, never the new owner's.
#[test]
fn optimistic_read_vs_removal_and_reuse() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        page.set_mapping(7, 3);
        page.end_write(); // as the insertion's unlock would
        page.set(PageFlags::UPTODATE);
        let frame = Arc::new(Frame::new(7));
        let remover = {
            let (page, frame) = (page.clone(), frame.clone());
            thread::spawn(move || {
                // Removal: page locked, identity cleared, unlocked, freed.
                wait::lock_page(&page);
                page.set_mapping(0, 3);
                page.clear(PageFlags::UPTODATE);
                wait::unlock_page(&page);
                // Reuse by file 8 at the same index: locked, filled, uptodate.
                wait::lock_page(&page);
                page.set_mapping(8, 3);
                frame.write(8);
                page.set(PageFlags::UPTODATE);
                wait::unlock_page(&page);
            })
        };
        let seq = page.read_seq();
        if seq & 1 == 0 && page.test(PageFlags::UPTODATE) && page.mapping_id() == 7 && page.index() == 3 {
            let bytes = frame.copy();
            if page.seq_unchanged(seq) {
                assert_eq!(bytes, [7, 7], "a copy of another file's bytes passed the check");
            }
        }
        remover.join().unwrap();
    });
}

/// The read guard counted in the flags word against a writer: a guard
/// taken while the page is unlocked keeps the writer out until it drops,
/// and a writer inside keeps new guards out.
#[test]
fn read_guard_vs_lock_holder() {
    loom::model(|| {
        let page = Arc::new(Page::new());
        let writing = Arc::new(AtomicBool::new(false));
        let writer = {
            let (page, writing) = (page.clone(), writing.clone());
            thread::spawn(move || {
                wait::lock_page(&page);
                wait::wait_for_readers(&page);
                writing.store(true, Ordering::SeqCst);
                writing.store(false, Ordering::SeqCst);
                wait::unlock_page(&page);
            })
        };
        wait::read_lock(&page);
        assert!(!writing.load(Ordering::SeqCst), "a writer ran inside a read guard");
        wait::read_unlock(&page);
        writer.join().unwrap();
        assert_eq!(page.flags().0 & PageFlags::LOCKED.0, 0);
    });
}

/// Reclaim aimed at one block (`vmscan::reclaim_block`) evicting a large
/// page while a writer that found the page dirties one of its blocks: the
/// eviction takes a reference, the page lock by `trylock`, checks DIRTY and
/// freezes the count from exactly (cache + its own) to zero; the writer
/// takes a speculative reference and the lock, and writes only if the page
/// is still its file's. Never both: a page is not evicted with a block
/// dirtied into it, and the dirty-block mask (in the first tail, under the
/// page lock) is set only on a page that stays cached.
#[test]
fn block_eviction_vs_block_writer() {
    loom::model(|| {
        const MAPPING: u32 = 7;
        let head = Arc::new(Page::new());
        let tail = Arc::new(Page::new()); // the first tail: order and block masks
        head.set_mapping(MAPPING, 0);
        head.end_write();
        head.set_page_count(1); // the page cache's reference
        let wrote = Arc::new(AtomicBool::new(false));
        let writer = {
            let (head, tail, wrote) = (head.clone(), tail.clone(), wrote.clone());
            thread::spawn(move || {
                if !head.get_page_unless_zero() {
                    return; // evicted: the writer would allocate a new page
                }
                wait::lock_page(&head);
                if head.mapping_id() == MAPPING {
                    tail.index.fetch_or(1 << 33, Ordering::Relaxed); // block 1 dirty
                    head.set(PageFlags::DIRTY);
                    wrote.store(true, Ordering::SeqCst);
                }
                wait::unlock_page(&head);
                head.put_page_testzero();
            })
        };
        let mut evicted = false;
        if head.get_page_unless_zero() {
            if wait::trylock_page(&head) {
                if !head.test(PageFlags::DIRTY) && head.ref_freeze(2) {
                    head.set_mapping(0, 0);
                    tail.index.fetch_and(0xff, Ordering::Relaxed);
                    evicted = true;
                }
                wait::unlock_page(&head);
            }
            if !evicted {
                head.put_page_testzero();
            }
        }
        writer.join().unwrap();
        let wrote = wrote.load(Ordering::SeqCst);
        assert!(!(evicted && wrote), "a page was evicted with a block written into it");
        if wrote {
            assert!(head.test(PageFlags::DIRTY) && tail.index.load(Ordering::Relaxed) & (1 << 33) != 0);
        }
    });
}

/// A leaf for the leaf-table model: one slot, as a node's slots are loom
/// atomics read by unpinned readers.
struct Leaf {
    slot: loom::sync::atomic::AtomicUsize,
}

/// The leaf table (`XArray::load_from_table` against `table_unlink`, node
/// recycling and `table_link`), in miniature and with the same orderings:
/// an unpinned reader of index 0 (leaf number 0) races a writer that
/// erases index 0, unlinks the emptied leaf while the tree sequence is odd,
/// recycles the same node as the leaf for index 64 (leaf number 1), enters
/// it in the table and stores that index's value. A result the reader's
/// sequence check accepts is index 0's value or absent, never index 64's.
#[test]
fn leaf_table_read_vs_unlink_and_reuse() {
    use crate::sync::{fence, AtomicUsize};
    const V0: usize = (10 << 2) | 1;
    const V64: usize = (20 << 2) | 1;
    loom::model(|| {
        let seq = Arc::new(AtomicU32::new(0));
        let table = Arc::new([AtomicUsize::new(1), AtomicUsize::new(0)]);
        let leaf = Arc::new(Leaf { slot: AtomicUsize::new(V0) });
        let writer = {
            let (seq, table, leaf) = (seq.clone(), table.clone(), leaf.clone());
            thread::spawn(move || {
                // erase(0): the value goes, the leaf is empty.
                leaf.slot.store(0, Ordering::Release);
                // delete_empty: begin_unlink, table_unlink, end_unlink.
                let s = seq.load(Ordering::Relaxed);
                seq.store(s + 1, Ordering::Relaxed);
                fence(Ordering::Release);
                table[0].store(0, Ordering::Relaxed);
                seq.store(s + 2, Ordering::Release);
                // The node comes back from the pool (alloc_node's Release
                // fence, then reinit) as the leaf for 64, enters the table
                // before any value (table_link), then insert stores 64's.
                fence(Ordering::Release);
                leaf.slot.store(0, Ordering::Relaxed);
                table[1].store(1, Ordering::Release);
                leaf.slot.store(V64, Ordering::Release);
            })
        };
        // load_from_table(0).
        let s = seq.load(Ordering::Acquire);
        if s & 1 == 0 {
            let found = match table[0].load(Ordering::Acquire) {
                0 => 0,
                _ => leaf.slot.load(Ordering::Acquire),
            };
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s {
                assert!(found == V0 || found == 0, "index 0 read as {found:#x}");
            }
        }
        writer.join().unwrap();
        assert_eq!(table[0].load(Ordering::Relaxed), 0);
    });
}

/// The second tier's put against a range or file invalidation that runs
/// beside it (`index::cleancache::guarded_put` / `guarded_invalidate`):
/// a put that began before the invalidation did never outlives it,
/// whatever the interleaving (the tier is a mutex over one slot here).
#[test]
fn tier_put_vs_invalidation() {
    use crate::index::cleancache::{guarded_invalidate, guarded_put_from};
    use crate::sync::AtomicU64;
    loom::model(|| {
        let tier = Arc::new(loom::sync::Mutex::new(None::<u8>));
        let gen = Arc::new(AtomicU64::new(0));
        let putter = {
            let (tier, gen) = (tier.clone(), gen.clone());
            thread::spawn(move || {
                let before = gen.load(Ordering::SeqCst);
                let kept = guarded_put_from(
                    &gen,
                    before,
                    || {
                        *tier.lock().unwrap() = Some(1);
                        true
                    },
                    || {
                        *tier.lock().unwrap() = None;
                    },
                );
                (kept, before)
            })
        };
        guarded_invalidate(&gen, || {
            *tier.lock().unwrap() = None;
        });
        let (kept, before) = putter.join().unwrap();
        let held = *tier.lock().unwrap();
        if before == 0 {
            assert_eq!(held, None, "a put outlived the invalidation it overlapped");
        }
        // A put that finished before the invalidation began may say it
        // kept the page; the invalidation then took it.
        let _ = kept;
    });
}

/// The second tier across a truncation (`index::cleancache::open_window`,
/// `guarded_get`, `close_window`): reclaim puts the page resident at an
/// index and evicts it, a reader brings the index back (from the tier or
/// the file), and a truncation opens a window, changes the file, fixes
/// the page if it is resident (`cut_pages_past`) and closes the window.
/// Bytes are 1 (before the change) or 0 (after). Whatever the
/// interleaving, once all are done neither the resident page nor the
/// tier holds the old bytes: no page the change made stale is served.
#[test]
fn tier_get_vs_change() {
    use crate::index::cleancache::{close_window, guarded_get, guarded_put, open_window};
    use crate::sync::{AtomicU64, AtomicU8};
    loom::model(|| {
        let tier = Arc::new(loom::sync::Mutex::new(None::<u8>));
        // The page at the index: `Some(bytes)` when resident; its mutex is
        // the page lock (reclaim puts and evicts under it; a reader fills
        // a new page under it; the truncation fixes the page under it).
        let page = Arc::new(loom::sync::Mutex::new(Some(1u8)));
        let file = Arc::new(AtomicU8::new(1));
        let (gen, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let reclaim = {
            let (tier, page, gen, busy) = (tier.clone(), page.clone(), gen.clone(), busy.clone());
            thread::spawn(move || {
                let mut p = page.lock().unwrap();
                let Some(bytes) = *p else { return };
                // Refused while the window is open: the page stays.
                let kept = guarded_put(
                    &busy,
                    &gen,
                    || {
                        *tier.lock().unwrap() = Some(bytes);
                        true
                    },
                    || *tier.lock().unwrap() = None,
                );
                if kept {
                    *p = None; // evicted
                }
            })
        };
        let reader = {
            let (tier, page, file, gen, busy) = (tier.clone(), page.clone(), file.clone(), gen.clone(), busy.clone());
            thread::spawn(move || {
                let mut p = page.lock().unwrap();
                if p.is_some() {
                    return; // a hit
                }
                let mut got = None;
                if !guarded_get(&busy, &gen, || {
                    got = *tier.lock().unwrap();
                    got.is_some()
                }) {
                    got = Some(file.load(Ordering::SeqCst));
                }
                *p = got;
            })
        };
        // The truncation.
        open_window(&busy, &gen, || *tier.lock().unwrap() = None);
        file.store(0, Ordering::SeqCst);
        {
            let mut p = page.lock().unwrap();
            if p.is_some() {
                *p = Some(0);
            }
        }
        close_window(&busy, &gen, || *tier.lock().unwrap() = None);
        reclaim.join().unwrap();
        reader.join().unwrap();
        assert_ne!(*page.lock().unwrap(), Some(1), "a resident page kept bytes the change made stale");
        assert_ne!(*tier.lock().unwrap(), Some(1), "the tier kept bytes the change made stale");
    });
}

/// frontswap: a load of a page of anonymous memory from the compressed
/// tier against the tier's writeback of that page to the swap area
/// (`io::anon::commit_load` / `commit_writeback`), with a store of the
/// page anew after the load. Whatever the interleaving, exactly one copy
/// of the newest bytes is reachable from the entry (in the tier or in the
/// slot), nothing else is kept (no slot leaked, no tier copy the map
/// forgot), and a writeback of the older bytes never replaces the newer
/// store.
#[test]
fn frontswap_load_vs_writeback() {
    use crate::io::anon::{commit_load, commit_writeback, Entry};
    loom::model(|| {
        // The tier: one entry (seq, bytes); the map: one entry.
        let tier = Arc::new(loom::sync::Mutex::new(Some((1u64, 10u8))));
        let map = Arc::new(loom::sync::Mutex::new(Some(Entry::Tier(1))));
        // Bytes in slot 7 of the swap area once written.
        let swap = Arc::new(loom::sync::Mutex::new(None::<u8>));
        let writer = {
            let (tier, map, swap) = (tier.clone(), map.clone(), swap.clone());
            thread::spawn(move || {
                // Copy the coldest entry out, write it, then commit.
                let Some((seq, bytes)) = *tier.lock().unwrap() else { return false };
                *swap.lock().unwrap() = Some(bytes);
                let mut e = map.lock().unwrap();
                let slot = Entry::Slot { unit: 7, len: 1, packed: true };
                let done = commit_writeback(
                    &mut e,
                    seq,
                    || {
                        let mut t = tier.lock().unwrap();
                        match *t {
                            Some((s, _)) if s == seq => {
                                *t = None;
                                true
                            }
                            _ => false,
                        }
                    },
                    slot,
                );
                if !done {
                    *swap.lock().unwrap() = None; // freed
                }
                done
            })
        };
        // The loader: takes the page, dirties it, stores it anew (seq 2).
        let loaded = {
            let mut e = map.lock().unwrap();
            let mut got = None;
            let ok = commit_load(&mut e, |seq| {
                let mut t = tier.lock().unwrap();
                match *t {
                    Some((s, b)) if s == seq => {
                        got = Some(b);
                        *t = None;
                        true
                    }
                    _ => false,
                }
            });
            if ok {
                assert_eq!(got, Some(10));
                // Dirtied, then reclaim stores the new bytes.
                *tier.lock().unwrap() = Some((2, 20));
                *e = Some(Entry::Tier(2));
            }
            ok
        };
        let _wrote = writer.join().unwrap();
        let e = *map.lock().unwrap();
        let t = *tier.lock().unwrap();
        let slot = *swap.lock().unwrap();
        // The newest bytes: the store after the load, else the first.
        let newest = if loaded { 20 } else { 10 };
        match e {
            Some(Entry::Tier(seq)) => {
                assert_eq!(t, Some((seq, newest)), "the entry names a tier copy that is not there");
                assert_eq!(slot, None, "a slot leaked");
            }
            Some(Entry::Slot { .. }) => {
                assert_eq!(slot, Some(newest), "the slot holds older bytes");
                assert_eq!(t, None, "the tier kept a copy the map forgot");
            }
            other => panic!("the page was lost: {other:?}"),
        }
    });
}

/// A decision of the admission test waiting on a main page's next use
/// (`reclaim::lru`, `Fate::Spared`), judged by two hits that set
/// REFERENCED at once while reclaim isolates the page: the decision is
/// consumed once, so it votes at most once, and none is left behind.
#[test]
fn admission_vote_vs_hits_and_isolation() {
    use crate::reclaim::lru::Lru;
    loom::model(|| {
        let lru = Arc::new(Lru::new(1, 2, 1));
        lru.spare_for_model(0);
        let hits: Vec<_> = (0..2)
            .map(|_| {
                let lru = lru.clone();
                thread::spawn(move || lru.note_use(0))
            })
            .collect();
        let stamp = {
            let lists = lru.lock();
            lru.shadow_stamp(&lists, 0)
        };
        for t in hits {
            t.join().unwrap();
        }
        assert_eq!(crate::reclaim::workingset::Kind::of(stamp), crate::reclaim::workingset::Kind::Plain);
        let balance = lru.balance_for_model();
        assert!(balance == 0 || balance == -3, "voted more than once: {balance}");
        assert!(!lru.fate_pending_for_model(0), "a decision left behind");
    });
}
