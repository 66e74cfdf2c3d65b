//! On-demand readahead, following `mm/readahead.c`: a per-handle window
//! {start, size, async_size} that grows 4x then 2x up to a maximum on
//! sequential access; the page `async_size` pages before the window's end
//! carries the READAHEAD marker, and reading it starts the next window: its
//! pages go into the cache locked in the reader's thread and a worker
//! thread reads them. Random access reads only what was asked.

use std::io::{self, IoSliceMut};
use std::sync::Arc;

use parking_lot::Mutex;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::index::mapping::AddressSpace;
use crate::mem::page::{LockedPage, PageFlags, PageRef, RA_FRESH};
use crate::mem::zone::Zone;
use crate::stats::Event;
use crate::sync::{AtomicU64, Ordering};
use crate::PAGE_SIZE;

/// One handle's readahead window (`struct file_ra_state`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RaState {
    pub(crate) start: u64,
    pub(crate) size: u64,
    pub(crate) async_size: u64,
}

/// The first window for a request of `req` pages (`get_init_ra_size`).
fn init_size(req: u64, max: u64) -> u64 {
    let n = req.next_power_of_two();
    if n <= max / 32 {
        n * 4
    } else if n <= max / 4 {
        n * 2
    } else {
        max
    }
    .min(max)
}

/// The window after one of `cur` pages (`get_next_ra_size`).
fn next_size(cur: u64, max: u64) -> u64 {
    if cur < max / 16 { cur * 4 } else { cur * 2 }.min(max)
}

impl RaState {
    /// A miss at `index` for `req` pages (`page_cache_sync_readahead`):
    /// returns the range to read now, `(start, nr, marker offset)`.
    /// `prev` is the last page index the handle read, plus one.
    pub(crate) fn on_miss(&mut self, index: u64, req: u64, max: u64, prev: u64) -> (u64, u64, u64) {
        let req = req.max(1);
        let sequential = index == 0 || index == prev || index + 1 == prev;
        if max == 0 || !sequential {
            // Random access: just the pages asked for, and forget the window.
            *self = RaState::default();
            return (index, req.min(max.max(32)), u64::MAX);
        }
        let size = if self.size > 0 && index == self.start + self.size {
            next_size(self.size, max)
        } else {
            init_size(req, max)
        }
        .max(req.min(max));
        self.start = index;
        self.size = size;
        self.async_size = size.saturating_sub(req).min(size);
        (self.start, self.size, self.size - self.async_size)
    }

    /// The reader reached the marker page at `index` (`page_cache_async_readahead`):
    /// the next window, `(start, nr, marker offset)`.
    pub(crate) fn on_marker(&mut self, index: u64, max: u64) -> Option<(u64, u64, u64)> {
        if max == 0 {
            return None;
        }
        if index != self.start + self.size - self.async_size {
            // Someone else's marker (another handle): start a window here.
            self.start = index;
            self.size = 1;
        }
        self.start += self.size;
        self.size = next_size(self.size, max);
        self.async_size = self.size;
        Some((self.start, self.size, 0))
    }
}

/// An asynchronous readahead window for a worker thread: the pages the
/// reader's thread inserted locked (as the kernel's `page_cache_ra_unbounded`
/// adds its folios before `read_pages` submits the I/O), for the worker to
/// read and unlock. A reader that reaches one of them before the worker
/// waits on its lock instead of missing and reading it again.
pub(crate) struct RaJob {
    mapping: Arc<AddressSpace>,
    /// Frame numbers, in index order; each carries its page's lock and one
    /// reference, given to the job by `LockedPage::into_raw`.
    pfns: Vec<u32>,
}

impl RaJob {
    /// Takes the pages back out of the job (once: the job is left empty).
    fn take<'m>(m: &'m AddressSpace, pfns: &mut Vec<u32>) -> Vec<LockedPage<'m>> {
        std::mem::take(pfns)
            .into_iter()
            .map(|pfn| {
                // SAFETY: every pfn came from `LockedPage::into_raw` in
                // `submit`, which left the page locked with a reference that
                // belong to this job; `mem::take` empties the job, so each
                // lock and reference is taken back exactly once.
                unsafe { LockedPage::from_raw(m.zone.pfn_to_page(pfn), &m.zone) }
            })
            .collect()
    }

    /// Reads the pages, a contiguous run per vectored call, and unlocks
    /// them; a run that fails leaves the cache (errors are left for the
    /// reader who needs those pages).
    fn run(mut self) {
        let m = &*self.mapping;
        let mut run: Vec<LockedPage<'_>> = Vec::with_capacity(self.pfns.len());
        let mut got = None;
        for page in Self::take(m, &mut self.pfns) {
            if run.last().is_some_and(|p| p.index() + 1 != page.index()) {
                let _ = flush_run(m, &mut run, None, &mut got);
            }
            run.push(page);
        }
        let _ = flush_run(m, &mut run, None, &mut got);
    }
}

impl Drop for RaJob {
    /// A job never run (the cache shutting down, or a send that failed):
    /// its pages leave the cache unread and are unlocked, so nobody waits
    /// on them forever.
    fn drop(&mut self) {
        let m = &*self.mapping;
        for page in Self::take(m, &mut self.pfns) {
            m.delete_from_page_cache(&page);
        }
    }
}

/// The queue of asynchronous windows: readers send, workers receive, and a
/// reader about to wait for a window still being read takes a queued one
/// and reads it itself (`run_queued_while_locked`).
#[derive(Clone)]
pub(crate) struct RaQueue {
    tx: Sender<RaJob>,
    rx: Receiver<RaJob>,
}

/// How long an idle worker polls the queue before it sleeps. Streaming
/// 1 GiB through a 4 MiB cache (interleaved medians of 11): 1.54x pread's
/// time without polling, 1.28x with 200 us, no better with 500 or 2000 us.
const SPIN_FOR: Duration = Duration::from_micros(200);

/// Polls `rx` for up to `limit`, checking the clock every 64 polls.
fn poll_for(rx: &Receiver<RaJob>, limit: Duration) -> Option<RaJob> {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if let Ok(job) = rx.try_recv() {
                return Some(job);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= limit {
            return None;
        }
    }
}

/// Starts the readahead worker threads; they exit when every sender drops.
pub(crate) fn start_workers(n: usize, zone: Arc<Zone>) -> io::Result<(RaQueue, Vec<std::thread::JoinHandle<()>>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<RaJob>();
    let queue = RaQueue { tx, rx: rx.clone() };
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let rx: Receiver<RaJob> = rx.clone();
        let zone = zone.clone();
        handles.push(std::thread::Builder::new().name(format!("page-cache-ra{i}")).spawn(move || loop {
            // A streaming reader queues its next window a few tens of
            // microseconds after the last: poll for it a while before
            // sleeping, so the reader's send wakes nobody (a futex wake
            // and a cross-core wakeup per window otherwise).
            if let Some(job) = poll_for(&rx, SPIN_FOR) {
                job.run();
                continue;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => job.run(),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Acquire: pairs with the Release store at shutdown.
            if zone.shutting_down.load(Ordering::Acquire) {
                // Jobs still queued hold locked pages: dropping one unlocks
                // them (and a queued job's mapping would keep the channel
                // alive through its zone).
                while let Ok(job) = rx.try_recv() {
                    drop(job);
                }
                return;
            }
        })?);
    }
    Ok((queue, handles))
}

/// Brings pages `[start, start + nr)` (clipped at EOF) into the cache:
/// allocates the missing ones, inserts them locked, and reads each
/// contiguous run with one vectored call. `wanted` is the page the caller
/// needs (its failure is an error; others' failures just drop those pages).
/// The page at `start + marker` gets the READAHEAD marker.
/// Returns the wanted page, uptodate, if this call read it.
pub(crate) fn read_window<'a>(
    m: &'a AddressSpace,
    start: u64,
    nr: u64,
    wanted: Option<u64>,
    marker: u64,
) -> io::Result<Option<PageRef<'a>>> {
    let mut got = None;
    read_window_into(m, start, nr, wanted, marker, &mut got, None)?;
    Ok(got)
}

/// A run of inserted, locked pages is complete: read it now, or, for an
/// asynchronous window, keep it locked in `defer` for the worker. With a
/// second tier, the pages it holds are filled from it first and the rest
/// read from the file in runs.
fn end_run<'a>(
    m: &'a AddressSpace,
    run: &mut Vec<LockedPage<'a>>,
    wanted: Option<u64>,
    got: &mut Option<PageRef<'a>>,
    defer: &mut Option<&mut Vec<LockedPage<'a>>>,
) -> io::Result<()> {
    if !run.is_empty() && m.has_tier() {
        return end_run_tiered(m, run, wanted, got, defer);
    }
    end_run_file(m, run, wanted, got, defer)
}

/// `end_run` with a second tier: each page is asked of the tier, and a hit
/// splits the run, the pages before it going to the file as one read.
#[cold]
fn end_run_tiered<'a>(
    m: &'a AddressSpace,
    run: &mut Vec<LockedPage<'a>>,
    wanted: Option<u64>,
    got: &mut Option<PageRef<'a>>,
    defer: &mut Option<&mut Vec<LockedPage<'a>>>,
) -> io::Result<()> {
    let mut result = Ok(());
    let mut rest: Vec<LockedPage<'a>> = Vec::with_capacity(run.len());
    for mut page in run.drain(..) {
        if !fill_from_tier(m, &mut page) {
            rest.push(page);
            continue;
        }
        result = result.and(end_run_file(m, &mut rest, wanted, got, defer));
        if Some(page.index()) == wanted {
            *got = Some(page.unlock());
        }
        // Otherwise dropped here: unlocked, uptodate, in the cache.
    }
    result.and(end_run_file(m, &mut rest, wanted, got, defer))
}

/// Fills a new, locked, not-uptodate page from the second tier
/// (`cleancache_get_page` in `filemap_read_folio`'s place) and, if the
/// read verifier agrees with the bytes, marks it uptodate. A page the
/// verifier rejects is forgotten by the tier and read from the file.
pub(crate) fn fill_from_tier(m: &AddressSpace, page: &mut LockedPage<'_>) -> bool {
    if let Some(anon) = &m.anon {
        return crate::io::anon::fill_from_tier(m, anon, page);
    }
    if m.zone.blocks_uptodate(page.page()) != 0 || !m.cleancache_get(page) {
        return false;
    }
    if crate::io::wal::verify(m, page.index(), page.data()).is_err() {
        m.zone.count(Event::TierVerifyFailures, 1);
        m.cleancache_invalidate_page(page.index());
        page.page().clear(crate::mem::page::TIER_COPY);
        return false;
    }
    page.page().clear(PageFlags::ERROR);
    page.set_uptodate();
    true
}

/// `end_run` for pages that go to the file.
fn end_run_file<'a>(
    m: &'a AddressSpace,
    run: &mut Vec<LockedPage<'a>>,
    wanted: Option<u64>,
    got: &mut Option<PageRef<'a>>,
    defer: &mut Option<&mut Vec<LockedPage<'a>>>,
) -> io::Result<()> {
    match defer {
        Some(d) => {
            d.append(run);
            Ok(())
        }
        None => flush_run(m, run, wanted, got),
    }
}

fn read_window_into<'a>(
    m: &'a AddressSpace,
    start: u64,
    nr: u64,
    wanted: Option<u64>,
    marker: u64,
    got: &mut Option<PageRef<'a>>,
    mut defer: Option<&mut Vec<LockedPage<'a>>>,
) -> io::Result<()> {
    let size = m.size();
    let end_index = m.pages_for(size);
    let end = start.saturating_add(nr).min(end_index);
    // Sized once for the window: growing them page by page reallocated
    // five times per window.
    let len = end.saturating_sub(start) as usize;
    let mut run: Vec<LockedPage<'a>> = Vec::with_capacity(len);
    let mut fresh: Vec<LockedPage<'a>> = Vec::with_capacity(len);
    let mut inserted: Vec<bool> = Vec::with_capacity(len);
    let mut result = Ok(());
    // The pages already cached in the window, from one walk of the tree
    // (a page that appears later is caught by the insert below). A window
    // of one page is the page the caller just missed: no walk.
    let cached = if end.saturating_sub(start) > 1 { m.cached_indices(start, end) } else { Vec::new() };
    let mut cached = cached.iter().copied().peekable();
    let mut index = start;
    while index < end {
        while cached.next_if(|&c| c < index).is_some() {}
        if cached.next_if_eq(&index).is_some() {
            index += 1;
            continue;
        }
        // A gap of uncached pages, [index, gap_end): frames for all of it,
        // then one insertion under the tree lock.
        let gap_end = cached.peek().map_or(end, |&c| c.min(end));
        let mut out_of_frames = None;
        let mut contiguous = true;
        while index + (fresh.len() as u64) < gap_end {
            // Never wait for a frame while holding pages locked: in a cache
            // smaller than the window that waits on ourselves. A deferred
            // window holds its earlier runs locked, and is speculative: it
            // never waits.
            let wait = fresh.is_empty() && defer.is_none();
            let order = m.order() as usize;
            // Frames next to each other in the arena where the pool has a
            // free block for several pages: the window's buffers then touch,
            // and an O_DIRECT read of them goes to the device in large
            // segments (2 MiB windows of scattered 4 KiB frames read at
            // 0.6x the speed of contiguous ones here).
            let left = (gap_end - index - fresh.len() as u64) as usize;
            // Once the pool had no block, the window goes frame by frame
            // (a try per frame cost a lock round per order).
            let mut got = if contiguous { m.zone.alloc_contiguous(order, left) } else { Vec::new() };
            contiguous = !got.is_empty();
            if got.is_empty() {
                match if wait { m.zone.alloc_pages(order) } else { m.zone.try_alloc_pages(order) } {
                    Ok(p) => got.push(p),
                    Err(e) => {
                        out_of_frames = Some(e);
                        break;
                    }
                }
            }
            for page in got {
                let Ok(page) = page.try_lock() else { unreachable!("a fresh page is unlocked") };
                if Some(index + fresh.len() as u64) != wanted {
                    // Set before the page reaches the LRU: speculative pages
                    // do not start on the active list while the cache fills.
                    page.page().set(RA_FRESH);
                }
                fresh.push(page);
            }
        }
        inserted.clear();
        if let Err(e) = m.add_run_to_page_cache_lru(&fresh, index, &mut inserted) {
            // Past the largest index: nothing went in.
            fresh.clear();
            return result.and(Err(e));
        }
        // A truncation that already swept the cache would miss pages
        // inserted past the new end: drop those ourselves.
        let limit = m.pages_for(m.size());
        let mut truncated = false;
        for (page, &ok) in fresh.drain(..).zip(&inserted) {
            let at = index;
            index += 1;
            if !ok {
                // Someone else cached it meanwhile: the run ends here.
                page.page().clear(RA_FRESH);
                result = result.and(end_run(m, &mut run, wanted, got, &mut defer));
                continue;
            }
            if at >= limit {
                m.delete_from_page_cache(&page);
                truncated = true;
                continue;
            }
            if at - start == marker {
                page.page().set(PageFlags::READAHEAD);
            }
            run.push(page);
        }
        result = result.and(end_run(m, &mut run, wanted, got, &mut defer));
        if truncated {
            return result;
        }
        if let Some(e) = out_of_frames {
            // Out of frames: what we have is read; fail only the page asked for.
            if wanted.is_some_and(|w| w >= index) {
                return result.and(Err(e));
            }
            return result;
        }
    }
    result
}

/// Reads a run of locked, contiguous, new pages; unlocks them.
fn flush_run<'a>(
    m: &'a AddressSpace,
    run: &mut Vec<LockedPage<'a>>,
    wanted: Option<u64>,
    got: &mut Option<PageRef<'a>>,
) -> io::Result<()> {
    if run.is_empty() {
        return Ok(());
    }
    let ra = run.iter().filter(|p| Some(p.index()) != wanted).count();
    m.zone.count(Event::ReadaheadPages, ra as u64);
    let (done, res) = read_pages_partial(m, run);
    finish_run(m, run, done, res, wanted, got)
}

/// The read of a run of locked, new pages is over, with `done` bytes
/// delivered and `res` its outcome: pages it filled become uptodate (if
/// the verifier agrees) and are unlocked; the others leave the cache,
/// except the page the caller wants, whose failure is the caller's error.
fn finish_run<'a>(
    m: &'a AddressSpace,
    run: &mut Vec<LockedPage<'a>>,
    done: usize,
    mut res: io::Result<()>,
    wanted: Option<u64>,
    got: &mut Option<PageRef<'a>>,
) -> io::Result<()> {
    let mut wanted_failed = false;
    for (i, page) in run.drain(..).enumerate() {
        // A page the file filled completely before an error holds good
        // data, if the engine's verifier agrees.
        let filled = res.is_ok() || done >= (i + 1) * m.page_size();
        let verified = if filled { crate::io::wal::verify(m, page.index(), page.data()) } else { Ok(()) };
        if filled && verified.is_ok() {
            page.page().clear(PageFlags::ERROR);
            page.set_uptodate();
            if Some(page.index()) == wanted {
                // Handed to the caller: no second lookup.
                *got = Some(page.unlock());
            }
        } else if Some(page.index()) == wanted {
            if let Err(e) = verified {
                res = Err(e);
            }
            note_read_error(m, page.index(), res.as_ref().err());
            page.page().set(PageFlags::ERROR);
            wanted_failed = true;
        } else {
            m.delete_from_page_cache(&page);
        }
    }
    // Only the page the caller needs fails the caller; the others just
    // leave the cache, to be read (and fail) when someone needs them.
    if wanted_failed {
        res
    } else {
        Ok(())
    }
}

/// The last failed read-in of a page of a mapping (`AddressSpace::read_error`).
pub(crate) struct ReadError {
    index: u64,
    kind: io::ErrorKind,
    /// The OS error code, when it was one: callers match on it (EIO's
    /// kind is uncategorized).
    os: Option<i32>,
    message: String,
}

/// Remembers why the read of page `index` failed, so readers that waited
/// for it get the same error (`read_error_for`).
pub(crate) fn note_read_error(m: &AddressSpace, index: u64, e: Option<&io::Error>) {
    if let Some(e) = e {
        *m.read_error.lock() = Some(ReadError { index, kind: e.kind(), os: e.raw_os_error(), message: e.to_string() });
    }
}

/// The error a reader that waited for page `index` gets when the read it
/// waited for failed: the same OS error, or the same kind and message.
pub(crate) fn read_error_for(m: &AddressSpace, index: u64) -> io::Error {
    match &*m.read_error.lock() {
        Some(e) if e.index == index => match e.os {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind, format!("read of page {index} failed: {}", e.message)),
        },
        _ => io::Error::other(format!("read of page {index} failed")),
    }
}

/// Fills locked, contiguous pages from the file with one vectored read (more
/// only if the file returns short); zeroes what lies past end of file.
pub(crate) fn read_pages(m: &AddressSpace, run: &mut [LockedPage<'_>]) -> io::Result<()> {
    read_pages_partial(m, run).1
}

/// As `read_pages`, also returning how many bytes the file delivered before
/// an error (pages wholly inside them hold good data).
fn read_pages_partial(m: &AddressSpace, run: &mut [LockedPage<'_>]) -> (usize, io::Result<()>) {
    read_pages_from(m, run, 0)
}

/// `read_pages_partial` for a run whose first `done` bytes are read
/// already (an asynchronous read that came back short).
fn read_pages_from(m: &AddressSpace, run: &mut [LockedPage<'_>], mut done: usize) -> (usize, io::Result<()>) {
    let ps = m.page_size();
    let offset = run[0].index() << m.shift;
    let backing = m.backing();
    let mut bufs: Vec<IoSliceMut<'_>> = run.iter_mut().map(|p| IoSliceMut::new(p.data_mut())).collect();
    let total = bufs.len() * ps;
    let mut slices = &mut bufs[..];
    IoSliceMut::advance_slices(&mut slices, done);
    if done < total {
        m.zone.count(Event::ReadCalls, 1);
    }
    while done < total {
        let n = match backing.read_vectored_at(slices, offset + done as u64) {
            Ok(n) => n,
            Err(e) => {
                m.zone.count(Event::ReadErrors, 1);
                return (done, Err(e));
            }
        };
        done += n;
        if n == 0 || done == total {
            break;
        }
        IoSliceMut::advance_slices(&mut slices, n);
        m.zone.count(Event::ReadCalls, 1);
    }
    let done = done.min(total);
    drop(bufs);
    // Past end of file: zeros.
    for (i, p) in run.iter_mut().enumerate() {
        let page_start = i * ps;
        if done < page_start + ps {
            let from = done.saturating_sub(page_start);
            p.data_mut()[from..].fill(0);
        }
    }
    (done, Ok(()))
}

/// Fills the 4 KiB `blocks` (a mask) of one locked large page from the
/// file, one read per run of consecutive blocks, zeroing what lies past
/// the end of the file; the page's other bytes are left as they are (a
/// partial write's, `filemap::fill_around`). The caller marks them uptodate.
pub(crate) fn read_blocks(m: &AddressSpace, page: &mut LockedPage<'_>, blocks: u32) -> io::Result<()> {
    let base = page.index() << m.shift;
    let backing = m.backing();
    let nr = 1u32 << m.order();
    let data = page.data_mut();
    for (b, e) in crate::mem::zone::block_runs(blocks, nr) {
        let (from, to) = (b as usize * PAGE_SIZE, e as usize * PAGE_SIZE);
        let mut done = 0usize;
        while from + done < to {
            m.zone.count(Event::ReadCalls, 1);
            let buf = &mut data[from + done..to];
            match backing.read_vectored_at(&mut [IoSliceMut::new(buf)], base + (from + done) as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    m.zone.count(Event::ReadErrors, 1);
                    return Err(e);
                }
            }
        }
        data[from + done..to].fill(0);
    }
    Ok(())
}

/// A reader's readahead state (`struct file_ra_state`): the window, under
/// a lock taken only on misses and markers, and the last page read, a hint
/// kept outside the lock so hits take none.
#[derive(Default)]
pub(crate) struct RaContext {
    pub(crate) window: Mutex<RaState>,
    /// The last page index read, plus one.
    pub(crate) prev: AtomicU64,
}

impl RaContext {
    /// Records that the reader's last page was `last`.
    #[inline]
    pub(crate) fn note_read(&self, last: u64) {
        // Relaxed: a hint for the sequential test; stored only when it
        // changes, so threads sharing a reader do not bounce the line.
        if self.prev.load(Ordering::Relaxed) != last + 1 {
            self.prev.store(last + 1, Ordering::Relaxed);
        }
    }

    /// A read of page `index` alone served optimistically: `note_hit` of
    /// one page (which moves the hint only if it was `index`), in one load
    /// and a compare on the hit path.
    #[inline]
    pub(crate) fn note_hit_one(&self, index: u64) {
        // Relaxed: a hint (see `note_read`).
        if self.prev.load(Ordering::Relaxed) == index {
            self.prev.store(index + 1, Ordering::Relaxed);
        }
    }

    /// A read served from the cache without the slow path (optimistic
    /// hits), from page `first` to `last`: the hint moves only if the read
    /// continues the last one, so random hits by threads sharing a handle
    /// store nothing to it (and do not bounce its line between cores). A
    /// sequential run that starts among cached pages is seen from its
    /// first miss on.
    #[inline]
    pub(crate) fn note_hit(&self, first: u64, last: u64) {
        // Relaxed: a hint (see `note_read`).
        let prev = self.prev.load(Ordering::Relaxed);
        if (prev == first || prev == first + 1) && prev != last + 1 {
            self.prev.store(last + 1, Ordering::Relaxed);
        }
    }

    /// A miss: the window to read now (see `RaState::on_miss`).
    pub(crate) fn on_miss(&self, index: u64, req: u64, max: u64) -> (u64, u64, u64) {
        // Relaxed: a hint (see `note_read`).
        let prev = self.prev.load(Ordering::Relaxed);
        self.window.lock().on_miss(index, req, max, prev)
    }
}

/// Starts the window after the marker page (`page_cache_async_readahead`):
/// with worker threads, inserts its pages locked here and queues their
/// read; without, reads it in the calling thread. The page at
/// `start + marker` carries the next READAHEAD marker, so a sequential
/// reader keeps one window in flight.
pub(crate) fn submit(m: &AddressSpace, start: u64, nr: u64, marker: u64) {
    // Acquire: pairs with the Release store at shutdown.
    if m.zone.shutting_down.load(Ordering::Acquire) {
        return;
    }
    let queue = m.zone.ra_queue.lock().clone();
    let Some(queue) = queue else {
        // Errors are left for the reader who needs those pages.
        let _ = read_window(m, start, nr, None, marker);
        return;
    };
    let Some(mapping) = m.self_weak.upgrade() else {
        return;
    };
    let mut pages = Vec::new();
    // Errors (the largest index passed) leave nothing to read.
    let _ = read_window_into(m, start, nr, None, marker, &mut None, Some(&mut pages));
    if pages.is_empty() {
        return;
    }
    // An O_DIRECT file's window goes on the cache's asynchronous ring from
    // this thread, a run per read, and the reaper completes it: no worker
    // blocks in a read, and every window submitted is in flight at once.
    let pages = match submit_on_ring(m, &mapping, pages) {
        Some(rest) => rest,
        None => return,
    };
    let pfns = pages.into_iter().map(|p| m.zone.page_to_pfn(p.into_raw())).collect();
    // A send that fails hands the job back; dropping it unlocks the pages.
    if let Err(e) = queue.tx.send(RaJob { mapping, pfns }) {
        drop(e.into_inner());
    }
}

/// A window's contiguous run in flight on the asynchronous ring.
struct RingRead {
    job: RaJob,
    /// The file the read was submitted on: its descriptor stays open
    /// until the read completes, whatever replaces the mapping's backing.
    _backing: Arc<dyn crate::io::backing::Backing>,
}

impl crate::io::uring::Completion for RingRead {
    fn complete(mut self: Box<Self>, result: io::Result<usize>) {
        let mapping = self.job.mapping.clone();
        let m = &*mapping;
        m.zone.count(Event::ReadCalls, 1);
        let mut run = RaJob::take(m, &mut self.job.pfns);
        m.zone.count(Event::ReadaheadPages, run.len() as u64);
        let (done, res) = match result {
            // A short read finishes with the syscalls (zeroing past the end).
            Ok(n) => read_pages_from(m, &mut run, n),
            Err(e) => {
                m.zone.count(Event::ReadErrors, 1);
                (0, Err(e))
            }
        };
        let _ = finish_run(m, &mut run, done, res, None, &mut None);
    }
}

/// Submits the runs of an asynchronous window's locked pages on the
/// cache's asynchronous ring, when the file is a plain O_DIRECT file and
/// the ring exists; returns the pages it could not submit (all of them
/// without a ring), or `None` when every run is in flight.
fn submit_on_ring<'a>(
    m: &'a AddressSpace,
    mapping: &Arc<AddressSpace>,
    pages: Vec<LockedPage<'a>>,
) -> Option<Vec<LockedPage<'a>>> {
    let Some(ring) = m.zone.async_ring.as_ref() else { return Some(pages) };
    let backing = m.backing();
    let Some(fd) = backing.raw_fd().filter(|_| backing.is_direct()) else { return Some(pages) };
    let mut run: Vec<LockedPage<'a>> = Vec::new();
    let mut pages = pages.into_iter().peekable();
    while let Some(page) = pages.next() {
        let next_follows = pages.peek().is_some_and(|n| n.index() == page.index() + 1);
        run.push(page);
        if next_follows {
            continue;
        }
        let offset = run[0].index() << m.shift;
        let iov: Vec<libc::iovec> = run
            .iter_mut()
            .map(|p| {
                let d = p.data_mut();
                libc::iovec { iov_base: d.as_mut_ptr().cast(), iov_len: d.len() }
            })
            .collect();
        let pfns = run.drain(..).map(|p| m.zone.page_to_pfn(p.into_raw())).collect();
        let job = Box::new(RingRead { job: RaJob { mapping: mapping.clone(), pfns }, _backing: backing.clone() });
        // SAFETY: the iovecs name the frames of pages locked and owned by
        // `job` (their locks and references, from `into_raw`), which no one
        // else writes or reads (they are not uptodate) until the job
        // completes and unlocks them; the job holds the backing, so `fd`
        // stays open until then.
        if let Err(back) = unsafe { ring.submit_readv(fd, iov, offset, job) } {
            // Not taken (the ring is full or stopping): dropping the job
            // takes its pages out of the cache unread; the rest go to the
            // worker.
            drop(back);
            return Some(pages.collect());
        }
        m.zone.count(Event::UringOps, 1);
    }
    None
}

/// A reader is about to wait for `page`, locked under a window a worker is
/// reading: rather than sleep, it reads windows still queued itself, until
/// the page is unlocked or the queue is empty. A sequential reader whose
/// worker is one window behind then fills every other window, and both
/// cores copy from the file, where it used to sleep until the worker caught
/// up. The reader holds no page lock here, and a job takes none but its own.
#[cold]
pub(crate) fn run_queued_while_locked(zone: &Zone, page: &crate::mem::page::Page) {
    let queue = zone.ra_queue.lock().clone();
    let Some(queue) = queue else {
        return;
    };
    while page.test(PageFlags::LOCKED) {
        match queue.rx.try_recv() {
            Ok(job) => job.run(),
            Err(_) => return,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A queue with no worker: the reader's own thread must take the
    /// queued window it waits on (`run_queued_while_locked`), and a window
    /// that is never run leaves the cache unlocked when its job drops.
    #[test]
    fn queued_windows_are_run_by_a_waiting_reader_or_dropped_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..64 * PAGE_SIZE).map(|i| (i / PAGE_SIZE) as u8 ^ i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let cache = crate::PageCache::builder().capacity(8 << 20).readahead_threads(0).build().unwrap();
        let f = cache.open(&path).unwrap();
        let m = f.mapping();
        let zone = m.zone.clone();
        let (queue, workers) = start_workers(0, zone.clone()).unwrap();
        assert!(workers.is_empty());
        *zone.ra_queue.lock() = Some(queue);
        let mut page = vec![0u8; PAGE_SIZE];
        // Page 0 reads 0..4 (marker on 1); page 1 queues 4..20, locked.
        f.read_exact_at(&mut page, 0).unwrap();
        f.read_exact_at(&mut page, PAGE_SIZE as u64).unwrap();
        let p4 = m.find_get_page(4).expect("the async window is in the cache");
        assert!(p4.is_locked() && !p4.is_uptodate(), "queued, not read");
        drop(p4);
        // Reading page 4 would wait forever with no worker: the reader runs
        // the queued window itself (and page 4's marker queues 20..84).
        f.read_exact_at(&mut page, 4 * PAGE_SIZE as u64).unwrap();
        assert_eq!(page, &data[4 * PAGE_SIZE..5 * PAGE_SIZE]);
        let p20 = m.find_get_page(20).expect("the next async window is in the cache");
        assert!(p20.is_locked());
        drop(p20);
        cache.check_invariants();
        // The cache's queue goes away with a window still in it: its pages
        // leave the cache, unlocked.
        drop(zone.ra_queue.lock().take());
        assert!(m.find_get_page(20).is_none(), "a dropped window's pages leave the cache");
        assert!((0..64).filter_map(|i| m.find_get_page(i)).all(|p| !p.is_locked()));
        cache.check_invariants();
        let mut all = vec![0u8; data.len()];
        f.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn sequential_windows_grow_then_cap() {
        let max = 512;
        let mut ra = RaState::default();
        // First read of a file: index 0, 1 page asked.
        let (start, nr, marker) = ra.on_miss(0, 1, max, 0);
        assert_eq!((start, nr, marker), (0, 4, 1));
        // The reader hits the marker at index 1: the next window follows on.
        let mut sizes = vec![nr];
        let mut at = 1;
        for _ in 0..8 {
            let (s, n, m) = ra.on_marker(at, max).unwrap();
            assert_eq!(s, start + sizes.iter().sum::<u64>(), "windows are contiguous");
            assert_eq!(m, 0, "the async window's first page is the marker");
            at = s;
            sizes.push(n);
        }
        assert_eq!(sizes, vec![4, 16, 64, 128, 256, 512, 512, 512, 512]);
    }

    #[test]
    fn random_access_reads_only_what_was_asked() {
        let mut ra = RaState::default();
        assert_eq!(ra.on_miss(1000, 1, 512, 17), (1000, 1, u64::MAX));
        assert_eq!(ra.on_miss(5, 2, 512, 1001), (5, 2, u64::MAX));
        // Readahead off: still reads the request.
        assert_eq!(ra.on_miss(0, 3, 0, 0), (0, 3, u64::MAX));
    }

    #[test]
    fn a_miss_right_after_the_window_grows_it() {
        let mut ra = RaState::default();
        let (_, nr, _) = ra.on_miss(0, 1, 512, 0);
        let (start, nr2, _) = ra.on_miss(nr, 1, 512, nr);
        assert_eq!(start, nr);
        assert_eq!(nr2, 16);
    }
}
