//! Writeback, following `mm/page-writeback.c` (`write_cache_pages`,
//! `tag_pages_for_writeback`, `balance_dirty_pages`) and `fs/fs-writeback.c`
//! (the flusher thread): dirty pages are written in index order, contiguous
//! runs in one vectored call; a failed write keeps the pages dirty and
//! records the error in the mapping's errseq.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use crate::index::mapping::{AddressSpace, Tag};
use crate::index::xarray::Mark;
use crate::io::uring::Op;
use crate::mem::page::{Page, PageFlags};
use crate::mem::wait;
use crate::mem::zone::Zone;
use crate::stats::Event;
use crate::sync::Ordering;
use crate::PAGE_SIZE;

/// Pages looked up per batch.
const BATCH: usize = 64;

/// How a writeback pass runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SyncMode {
    /// Best effort: skip locked pages and pages already under writeback;
    /// stop after `n` pages.
    Background(usize),
    /// Data integrity: every page dirty when the pass began is written.
    Integrity,
}

/// Tags every DIRTY page TOWRITE, so an integrity pass writes only what was
/// dirty when it began (`tag_pages_for_writeback`).
fn tag_pages_for_writeback(m: &AddressSpace) {
    let mut start = 0u64;
    let mut out = Vec::with_capacity(256);
    loop {
        out.clear();
        let mut tree = m.tree.lock();
        tree.gang_lookup_marked(start, Mark::Dirty, 256, &mut out);
        for &(index, _) in &out {
            tree.set_mark(index, Mark::ToWrite);
        }
        drop(tree);
        match out.last() {
            Some(&(last, _)) if out.len() == 256 && last < u64::MAX => start = last + 1,
            _ => return,
        }
    }
}

/// Writes the dirty pages of `m` (`write_cache_pages`); returns pages
/// written, or the first error (also recorded in the errseq).
pub(crate) fn write_cache_pages(m: &AddressSpace, mode: SyncMode) -> io::Result<usize> {
    // Anonymous memory is never written back: reclaim swaps it out.
    if m.anon.is_some() {
        return Ok(0);
    }
    // Background writeback of a mapping is done by one thread at a time;
    // another background caller finds it busy and writes nothing. Sync
    // (integrity) writeback never waits for it: it writes its own pages.
    let _one_writer = match mode {
        SyncMode::Background(_) => match m.background_wb.try_lock() {
            Some(g) => Some(g),
            None => return Ok(0),
        },
        SyncMode::Integrity => None,
    };
    let tag = match mode {
        SyncMode::Integrity => {
            tag_pages_for_writeback(m);
            Tag::ToWrite
        }
        SyncMode::Background(_) => Tag::Dirty,
    };
    let mut index = 0u64;
    let mut written = 0usize;
    let mut result = Ok(());
    loop {
        let pages = m.find_get_pages_tag(&mut index, tag, BATCH);
        if pages.is_empty() {
            break;
        }
        let mut runs: Vec<Vec<(&Page, u32)>> = Vec::new();
        let mut run: Vec<(&Page, u32)> = Vec::with_capacity(pages.len());
        for page in &pages {
            let locked = match mode {
                SyncMode::Integrity => page.clone().lock(),
                SyncMode::Background(_) => match page.clone().try_lock() {
                    Ok(l) => l,
                    Err(_) => continue,
                },
            };
            if locked.page().mapping_id() != m.id {
                continue;
            }
            if locked.is_writeback() {
                if mode != SyncMode::Integrity {
                    continue;
                }
                locked.wait_on_page_writeback();
            }
            let Some(blocks) = m.start_writeback(page.page()) else {
                if tag == Tag::ToWrite {
                    m.tag(page.index(), Tag::ToWrite, false);
                }
                continue;
            };
            drop(locked);
            if run.last().is_some_and(|(p, _)| p.index() + 1 != page.index()) {
                written += run.len();
                runs.push(std::mem::take(&mut run));
            }
            run.push((page.page(), blocks));
        }
        written += run.len();
        runs.push(run);
        // The batch's runs go together (in flight at once on io_uring).
        result = result.and(write_runs(m, &mut runs, true));
        if let SyncMode::Background(n) = mode {
            if written >= n {
                break;
            }
        }
        if index == u64::MAX {
            break;
        }
    }
    result.map(|()| written)
}

/// Writes one locked, dirty page (reclaim's `pageout`); true on success.
/// The caller holds a reference and the page lock.
pub(crate) fn pageout(m: &AddressSpace, page: &Page) -> bool {
    if let Some(anon) = &m.anon {
        return crate::io::anon::pageout(m, anon, page);
    }
    // Reclaim never waits for the engine's log: a page ahead of it stays
    // dirty (and rotates), and the flusher, which may wait, is asked.
    if !crate::io::wal::log_allows(m, page) {
        m.zone.count(Event::LogSkips, 1);
        // Release: pairs with the flusher's swap.
        m.zone.reclaim_wants_writeback.store(true, Ordering::Release);
        m.zone.flusher.wake();
        return false;
    }
    let Some(blocks) = m.start_writeback(page) else {
        return !page.test(PageFlags::DIRTY);
    };
    // The page lock is held: the trim after a direct write must not wait
    // for the size lock.
    write_runs(m, &mut [vec![(page, blocks)]], false).is_ok()
}

/// Writes runs of contiguous pages under writeback and ends their
/// writeback, run by run; returns the first error (every failed run's pages
/// go back to dirty and its error to the errseq). Each page writes only the
/// blocks `start_writeback` gave it (all of a 4 KiB page); blocks that
/// touch across pages form one segment, one vectored write each. The log
/// comes first, once for all the runs (the WAL rule). On io_uring (a plain
/// file opened O_DIRECT, more than one segment) every segment is in flight
/// at once, one `writev` each, and whatever a write left short is finished
/// with the positioned syscalls; otherwise the segments are written one
/// after another.
fn write_runs(m: &AddressSpace, runs: &mut [Vec<(&Page, u32)>], may_wait: bool) -> io::Result<()> {
    if runs.iter().all(|r| r.is_empty()) {
        return Ok(());
    }
    let backing = m.backing();
    let size = m.size();
    let direct = backing.is_direct();
    // Per run: its segments (file offset, buffers).
    let segments: Vec<Vec<Segment<'_>>> = runs.iter().map(|run| segments_of(m, run, size, direct)).collect();
    // The WAL rule: the log first, up to the highest LSN of all the runs.
    let all: Vec<&Page> = runs.iter().flatten().map(|&(p, _)| p).collect();
    let logged = crate::io::wal::allow_run(m, &all);
    drop(all);
    // Before the first byte can land: the file's times move by our hand.
    m.written.store(true, Ordering::SeqCst);
    let mut done: Vec<Vec<usize>> = segments.iter().map(|s| vec![0; s.len()]).collect();
    let nr_segments: usize = segments.iter().map(Vec::len).sum();
    // Only O_DIRECT writes go on the ring: a buffered write is a copy into
    // the kernel's cache, which io_uring hands to its worker threads, and
    // 10,000 scattered pages took 196 ms that way against 146 ms with
    // `pwritev` one run after another (`benches/uring.rs`).
    if logged.is_ok() && nr_segments > 1 && direct {
        if let Some(fd) = backing.raw_fd() {
            let mut which = Vec::with_capacity(nr_segments);
            let mut ops = Vec::with_capacity(nr_segments);
            for (k, segs) in segments.iter().enumerate() {
                for (j, seg) in segs.iter().enumerate() {
                    let iov = seg
                        .bufs
                        .iter()
                        .map(|s| libc::iovec { iov_base: s.as_ptr().cast_mut().cast(), iov_len: s.len() })
                        .collect();
                    which.push((k, j));
                    ops.push(Op::Writev { iov, offset: seg.offset });
                }
            }
            // SAFETY: every iovec names the bytes of a page under writeback
            // (stable, see `segments_of`), borrowed by `segments`, which
            // outlives the call; `backing` keeps the descriptor open.
            if let Some(r) = unsafe { m.zone.uring.run(fd, &ops) } {
                m.zone.count(Event::UringOps, ops.len() as u64);
                m.zone.count(Event::WriteCalls, 1);
                // A failure on the ring is tried once more with the
                // syscalls below, which report it if it stands.
                for ((k, j), r) in which.into_iter().zip(r) {
                    if let Ok(n) = r {
                        done[k][j] = n;
                    }
                }
            }
        }
    }
    let mut first = Ok(());
    let mut past_end = false;
    for (k, run) in runs.iter_mut().enumerate() {
        if run.is_empty() {
            continue;
        }
        let mut result = logged.as_ref().map(|_| ()).map_err(copy_err);
        for (j, seg) in segments[k].iter().enumerate() {
            if result.is_err() {
                break;
            }
            result = write_segment(m, &*backing, seg, done[k][j]);
            if result.is_ok() && direct && seg.offset + seg.len as u64 > size {
                // O_DIRECT wrote a whole last block: the file must be cut
                // back to the cache's size, after the run's writeback ends.
                // Asked for now, before the writeback ends: a `sync_data`
                // that waits for it then finds the cut to make (asked for
                // after, the sync could return with the file a partial
                // page too long; found by the soak test).
                m.needs_trim.store(true, Ordering::SeqCst);
                past_end = true;
            }
        }
        let failed = result.is_err();
        if let Err(e) = &result {
            m.errseq.set(e);
            m.zone.count(Event::WriteErrors, 1);
        } else {
            m.zone.count(Event::WritebackPages, run.len() as u64);
        }
        m.end_writeback_run(run, failed);
        run.clear();
        if first.is_ok() {
            first = result;
        }
    }
    if past_end {
        first = first.and(trim_to_size(m, may_wait));
    }
    first
}

/// Contiguous bytes of a run to write with one vectored call.
struct Segment<'a> {
    offset: u64,
    len: usize,
    bufs: Vec<IoSlice<'a>>,
}

/// The segments of a run of pages under writeback: each page's `blocks`
/// (runs of set bits, 4 KiB each), clipped at the file's size unless the
/// file is O_DIRECT (which writes whole blocks; the file is cut back
/// after), merged where they touch.
fn segments_of<'a>(m: &'a AddressSpace, run: &[(&'a Page, u32)], size: u64, direct: bool) -> Vec<Segment<'a>> {
    const BLOCK: usize = PAGE_SIZE;
    let nr_blocks = 1u32 << m.order();
    let mut segs: Vec<Segment<'a>> = Vec::new();
    for &(p, blocks) in run {
        let base = p.index() << m.shift;
        // SAFETY: the page is under writeback, which only this pass can
        // end, and every writer of the bytes waits for writeback to end
        // after taking the page lock (`LockedPage::data_mut`), so the bytes
        // are stable while this borrow lives; the frame lives as long as
        // the zone.
        let bytes = unsafe { &*m.zone.frame(p) };
        for (b, e) in crate::mem::zone::block_runs(blocks, nr_blocks) {
            let from = b as usize * BLOCK;
            let start = base + from as u64;
            if start >= size {
                break;
            }
            let whole = (e - b) as usize * BLOCK;
            let len = if direct { whole } else { (size - start).min(whole as u64) as usize };
            let slice = IoSlice::new(&bytes[from..from + len]);
            match segs.last_mut() {
                Some(last) if last.offset + last.len as u64 == start => {
                    last.len += len;
                    last.bufs.push(slice);
                }
                _ => segs.push(Segment { offset: start, len, bufs: vec![slice] }),
            }
        }
    }
    segs
}

/// Writes what is left of a segment after `done` bytes with the
/// positioned syscalls, retrying short writes.
fn write_segment(
    m: &AddressSpace,
    backing: &dyn crate::io::backing::Backing,
    seg: &Segment<'_>,
    mut done: usize,
) -> io::Result<()> {
    let mut bufs = seg.bufs.clone();
    let mut slices = &mut bufs[..];
    IoSlice::advance_slices(&mut slices, done);
    while done < seg.len {
        m.zone.count(Event::WriteCalls, 1);
        match backing.write_vectored_at(slices, seg.offset + done as u64) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "file took no bytes")),
            Ok(n) => {
                done += n;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Cuts the file back to the cache's size after an O_DIRECT write of a
/// whole last page. Under `size_lock`, so no size change (a `set_len` that
/// grows the file) runs between reading the size and cutting to it: cut
/// to a size read before a growth, the file would lose the growth, and no
/// dirty page would bring it back. Runs after the pages' writeback ended,
/// as a size changer may hold the lock while it waits for writeback. A
/// caller that holds a page lock (kswapd's `pageout`) must not wait for
/// the lock (the order is size lock, then page lock): if it is taken, the
/// cut is left to whoever holds it or syncs next (`needs_trim`).
pub(crate) fn trim_to_size(m: &AddressSpace, may_wait: bool) -> io::Result<()> {
    m.needs_trim.store(true, Ordering::SeqCst);
    let guard = if may_wait { Some(m.size_lock.lock()) } else { m.size_lock.try_lock() };
    match guard {
        Some(_size) => trim_if_needed_locked(m),
        None => Ok(()),
    }
}

/// The cut `trim_to_size` asks for, made by a holder of `size_lock`
/// (also one that found it left by a writer that could not take the lock):
/// the file is cut to the cache's size if it is longer. A failed cut goes
/// to the errseq and stays asked for.
pub(crate) fn trim_if_needed_locked(m: &AddressSpace) -> io::Result<()> {
    if !(m.needs_trim.load(Ordering::SeqCst) && m.needs_trim.swap(false, Ordering::SeqCst)) {
        return Ok(());
    }
    let backing = m.backing();
    let now = m.size();
    let r = match backing.len() {
        Ok(l) if l <= now => Ok(()),
        _ => backing.set_len(now),
    };
    if let Err(e) = &r {
        m.errseq.set(e);
        m.needs_trim.store(true, Ordering::SeqCst);
    }
    r
}

/// The same error again (`io::Error` is not `Clone`).
fn copy_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Waits for every page of `m` under writeback (`filemap_fdatawait`).
pub(crate) fn wait_writeback(m: &AddressSpace) {
    let mut index = 0;
    loop {
        let pages = m.find_get_pages_tag(&mut index, Tag::Writeback, BATCH);
        if pages.is_empty() {
            return;
        }
        for p in &pages {
            wait::wait_on_page_writeback(p.page());
        }
        if index == u64::MAX {
            return;
        }
    }
}

/// Writes and waits for every page dirty now, then `fdatasync`s (or
/// `fsync`s): the durable part of `sync_data`/`sync_all`. Errors land in the
/// errseq, where each handle collects them.
pub(crate) fn sync_mapping(m: &AddressSpace, all: bool) -> io::Result<()> {
    let written = write_cache_pages(m, SyncMode::Integrity);
    wait_writeback(m);
    if m.needs_trim.load(Ordering::SeqCst) {
        let _size = m.size_lock.lock();
        let _ = trim_if_needed_locked(m); // a failure is in the errseq
    }
    let backing = m.backing();
    let r = if all { backing.sync_all() } else { backing.sync_data() };
    if let Err(e) = &r {
        m.errseq.set(e);
    }
    written.map(|_| ()).and(r)
}

/// Called after a write dirtied pages: wakes the flusher above the
/// background threshold, and makes the writer write back its own pages
/// above the dirty limit (`balance_dirty_pages`), so memory stays bounded
/// without a cross-thread handoff.
#[inline]
pub(crate) fn balance_dirty_pages(m: &AddressSpace) {
    // Relaxed: a threshold check on a counter.
    let dirty = m.zone.nr_dirty.load(Ordering::Relaxed);
    if dirty > m.zone.dirty.background {
        m.zone.flusher.wake();
        if dirty > m.zone.dirty.limit {
            throttle(m);
        }
    }
}

#[cold]
fn throttle(m: &AddressSpace) {
    m.zone.count(Event::Throttles, 1);
    // Write (or wait for) this file's pages until the dirty count is back
    // under the limit: a writer that only wrote one batch and went on could
    // dirty faster than a slow disk cleans (found under AddressSanitizer,
    // at 3.4x the limit). Bounded: a failed write (its error is in the
    // errseq), a file with nothing left to write or wait for (the dirty
    // pages are other files'), or 200 ms end it, as the kernel's
    // `balance_dirty_pages` pauses at most that long. (A bound of 64
    // rounds let a writer go on over the limit while the flusher held its
    // file: 64 yields on a loaded machine take less than the flusher's
    // batch, and `the_dirty_limit_holds_in_bytes_whatever_the_page_size`
    // failed one run in five while other tests ran.)
    let deadline = std::time::Instant::now() + Duration::from_millis(200);
    loop {
        match write_cache_pages(m, SyncMode::Background(BATCH * 4)) {
            Err(_) => return,
            Ok(0) => {
                // Someone else is writing this mapping back (or all of it
                // is under writeback already): wait for one of its pages
                // instead of writing alongside.
                let mut index = 0;
                match m.find_get_pages_tag(&mut index, Tag::Writeback, 1).pop() {
                    Some(page) => page.wait_on_page_writeback(),
                    None if m.nr_dirty() == 0 => return,
                    // Dirty, not under writeback, and not taken by this
                    // pass (locked, or the other writer holds the file):
                    // give it a moment.
                    None => std::thread::yield_now(),
                }
            }
            Ok(_) => {}
        }
        // Relaxed: a threshold check on a counter.
        if m.zone.nr_dirty.load(Ordering::Relaxed) <= m.zone.dirty.limit || std::time::Instant::now() >= deadline {
            return;
        }
    }
}

/// The flusher thread: every so often, or when woken, writes back mappings
/// while dirty pages exceed the background threshold, and every mapping
/// whose dirty data is older than the expiry.
pub(crate) fn flusher(zone: Arc<Zone>) {
    loop {
        zone.flusher.sleep(Duration::from_millis(500));
        // Acquire: pairs with the Release store at shutdown.
        if zone.shutting_down.load(Ordering::Acquire) {
            return;
        }
        flush_once(&zone);
    }
}

/// One flusher pass.
pub(crate) fn flush_once(zone: &Zone) {
    let mappings: Vec<Arc<AddressSpace>> = zone.mappings.read().iter().filter_map(|w| w.upgrade()).collect();
    // Acquire: pairs with reclaim's Release store.
    let asked = zone.reclaim_wants_writeback.swap(false, Ordering::Acquire);
    for m in mappings {
        let expired = m.dirtied_when.lock().is_some_and(|t| t.elapsed() >= zone.dirty.expire);
        // Relaxed: a threshold check.
        let over = zone.nr_dirty.load(Ordering::Relaxed) > zone.dirty.background;
        // Reclaim could not write these itself (their log was behind):
        // the flusher may wait for the log, so it writes them now.
        let for_reclaim = asked && m.nr_dirty() > 0 && m.wal.read().is_some();
        if expired || for_reclaim {
            let _ = write_cache_pages(&m, SyncMode::Background(usize::MAX));
        } else if over && m.nr_dirty() > 0 {
            let _ = write_cache_pages(&m, SyncMode::Background(1024));
        }
    }
}
