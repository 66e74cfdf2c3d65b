//! Truncation, following `mm/truncate.c` (`truncate_inode_pages_range`,
//! `truncate_pagecache`, `invalidate_mapping_pages`): pages past the new end
//! leave the cache in two passes (skip busy pages, then wait for them), and
//! the partial last page is zeroed past the end; and invalidation
//! (`invalidate_mapping_pages`, `POSIX_FADV_DONTNEED`): clean pages leave
//! the cache so the next read goes to the file, for opens that find the
//! file changed behind the cache and for engines that know it was.

use std::io;

use crate::index::mapping::AddressSpace;
use crate::io::backing::FileStat;
use crate::stats::Event;
use crate::sync::Ordering;

/// Changes the size of the file to `new`: `set_len`.
pub(crate) fn set_len(m: &AddressSpace, new: u64) -> io::Result<()> {
    let _size = m.size_lock.lock();
    let old = m.size();
    let backing = m.backing();
    m.written.store(true, Ordering::SeqCst);
    // Pages from the old end on (the partial last page included) change:
    // the tier forgets them before the new size can be read, and serves
    // none of them until the change is done (`_tier` drops last).
    let _tier = m.cleancache_begin_change(Some((new.min(old) >> m.shift, crate::index::mapping::MAX_INDEX + 1)));
    if new >= old {
        // The size first: an O_DIRECT writeback that wrote a whole last
        // page trims the file back to the cache's size (`write_runs`); had
        // it read the old size after the file grew, it would have cut the
        // growth off, and no dirty page would ever bring it back (found by
        // the soak test with a direct file).
        m.set_size(new);
        if let Err(e) = backing.set_len(new) {
            m.set_size(old);
            return Err(e);
        }
        return Ok(());
    }
    // The file first: if it refuses the size, nothing has changed yet.
    backing.set_len(new)?;
    // Readers and writeback see the new size next, so nothing past it is
    // read from or written to the file from here on.
    m.set_size(new);
    cut_pages_past(m, new);
    // A writeback that raced the first call may have written past `new`.
    m.needs_trim.store(false, Ordering::SeqCst);
    backing.set_len(new)
}

/// Drops the pages past a new, smaller size `new` and zeroes the partial
/// last page past it (`truncate_pagecache`). The caller holds `size_lock`
/// and has set the size.
fn cut_pages_past(m: &AddressSpace, new: u64) {
    let ps = m.ps();
    m.truncate_pages_from(new.div_ceil(ps));
    if new % ps != 0 {
        if let Some(mut page) = m.find_lock_page(new / ps) {
            let from = (new % ps) as usize;
            page.data_mut()[from..].fill(0);
        }
    }
}

/// What an invalidation did: pages dropped, and pages left because they
/// were dirty or in use (locked, under writeback, or referenced).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invalidated {
    /// Clean pages dropped from the cache.
    pub dropped: u64,
    /// Dirty pages left (never dropped: they hold data the file lacks).
    pub dirty: u64,
    /// Pages left because someone was using them.
    pub busy: u64,
}

/// Drops the clean pages of `[start, end)` (`invalidate_mapping_pages`).
/// Not `strict`: a page that is locked, under writeback or referenced by
/// anyone but the cache is left and counted busy. `strict` (an open of a
/// file with no other handle, which found it changed): waits for each
/// page's lock and writeback and drops every clean page, held or not, as
/// truncation does; holders see a page that left its file.
pub(crate) fn invalidate_pages(m: &AddressSpace, start: u64, end: u64, strict: bool) -> Invalidated {
    const BATCH: usize = 64;
    let mut out = Invalidated::default();
    if !strict {
        // Pages fresh from a read sit in LRU add batches, one reference
        // each: empty the batches so the reference test below is fair.
        m.zone.lru.drain(&m.zone);
    }
    let mut index = start;
    while index < end {
        let pages = m.find_get_pages(index, BATCH);
        let Some(last) = pages.last().map(|p| p.index()) else { break };
        for page in pages {
            if page.index() >= end {
                break;
            }
            let locked = if strict {
                page.lock()
            } else {
                match page.try_lock() {
                    Ok(l) => l,
                    Err(page) => {
                        // Left with bytes the file may no longer hold:
                        // never put to the second tier.
                        page.page().set(crate::mem::page::TIER_COPY);
                        out.busy += 1;
                        continue;
                    }
                }
            };
            if locked.page().mapping_id() != m.id {
                continue; // truncated while we waited
            }
            if strict {
                locked.wait_on_page_writeback();
            } else if locked.is_writeback() {
                locked.page().set(crate::mem::page::TIER_COPY);
                out.busy += 1;
                continue;
            }
            if locked.page().test(crate::PageFlags::DIRTY) {
                out.dirty += 1;
                continue;
            }
            // The cache's reference and ours.
            if !strict && locked.page().page_count() > 2 {
                locked.page().set(crate::mem::page::TIER_COPY);
                out.busy += 1;
                continue;
            }
            m.delete_from_page_cache(&locked);
            out.dropped += 1;
        }
        if last == u64::MAX {
            break;
        }
        index = last + 1;
    }
    m.zone.count(Event::InvalidatedPages, out.dropped);
    out
}

/// What the file system says of the file now, taken so that the size in
/// it may replace the cache's own: `None` when a page is dirty or under
/// writeback before or after the look, or when any writeback started or
/// ended while it looked (a write of the cache's own could land after the
/// `statx` and make its size stale: writeback clears DIRTY before its
/// write reaches the file), or when an O_DIRECT write left the file longer
/// than the cache's size. The caller holds `size_lock`, so no write of
/// `write_at` or `set_len` runs beside it.
pub(crate) fn quiet_stat(m: &AddressSpace) -> io::Result<Option<FileStat>> {
    let seq = m.wb_seq.load(Ordering::SeqCst);
    if m.io_pending() || m.needs_trim.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let stat = m.backing().stat()?;
    if m.io_pending() || m.wb_seq.load(Ordering::SeqCst) != seq {
        return Ok(None);
    }
    Ok(stat)
}

/// Brings the cache's view of the file's size to `stat`'s, a stat taken
/// by [`quiet_stat`] under the same hold of `size_lock` (so no write of
/// the cache's own is pending or landed since). Pages past a smaller size
/// leave the cache.
pub(crate) fn adopt_size(m: &AddressSpace, stat: &FileStat) {
    let (old, new) = (m.size(), stat.size);
    if new == old {
        return;
    }
    // The page that held the old end (and all after it) changed in the
    // file: the tier forgets them.
    let _tier = m.cleancache_begin_change(Some((new.min(old) >> m.shift, crate::index::mapping::MAX_INDEX + 1)));
    m.set_size(new);
    if new < old {
        cut_pages_past(m, new);
    }
}

/// Compares the file as it is now (`now`) with what the cache last knew
/// of it, under `size_lock`, and drops what no longer describes it
/// (close-to-open revalidation): `strict` when the opener is the only
/// handle. Returns whether the file had changed. The record becomes `now`.
pub(crate) fn revalidate(m: &AddressSpace, now: &FileStat, strict: bool) -> bool {
    let _size = m.size_lock.lock();
    let mut record = m.record.lock();
    // The cache's own writes moved the times since the record: nothing to
    // compare against; the new record starts the next interval.
    let ours = m.written.swap(false, Ordering::SeqCst);
    let changed = match &*record {
        Some(r) => !ours && !r.unchanged(now),
        None => false,
    };
    if changed {
        let end = crate::index::mapping::MAX_INDEX + 1;
        // Whatever the tier holds of the file no longer describes it, and
        // it serves none of it until the cache's view is redone.
        let tier = m.cleancache_begin_change(None);
        if !record.as_ref().is_none_or(|r| r.same_file(now)) {
            // Another file under the same inode number: its own key.
            m.set_tier_key(Some(crate::index::cleancache::file_key(now, m.shift)));
        }
        if !record.as_ref().is_none_or(|r| r.same_file(now)) && m.nr_dirty() == 0 {
            // Another file under the same inode number: nothing cached is its.
            m.truncate_pages_from(0);
        } else {
            invalidate_pages(m, 0, end, strict);
        }
        // `now` was taken before this open held `size_lock`: a write of
        // ours may have landed since, so the size comes from a new look.
        if let Ok(Some(fresh)) = quiet_stat(m) {
            adopt_size(m, &fresh);
        }
        // Puts of pages the invalidation above had not reached yet go.
        drop(tier);
        m.zone.count(Event::StaleOpens, 1);
    }
    *record = Some(*now);
    changed
}

/// Takes a new record of the file after the cache's own writes (the last
/// close), so the next open compares against the file as the cache left it.
pub(crate) fn refresh_record(m: &AddressSpace) {
    let _size = m.size_lock.lock();
    if m.written.swap(false, Ordering::SeqCst) {
        let stat = m.backing().stat().ok().flatten();
        if let Some(s) = &stat {
            m.cleancache_file_written(s);
        }
        *m.record.lock() = stat;
    }
}
