//! Scattered prefetch: `CachedFile::prefetch(offsets)` brings the pages
//! holding many scattered offsets into the cache with all their reads in
//! flight at once (io_uring, `io::uring`), what a B-tree engine asks before
//! it visits many leaves and an LSM engine for a multi-get. The kernel's
//! nearest calls are `readahead(2)` and `madvise(MADV_WILLNEED)`, which
//! take one range; the read of each page follows `filemap_read_folio`.

use std::io;

use crate::index::mapping::AddressSpace;
use crate::io::uring::{Op, RING_DEPTH};
use crate::mem::page::{LockedPage, PageFlags};
use crate::stats::Event;

/// Brings every page holding one of `offsets` (past the end of the file:
/// ignored) into the cache, uptodate. Pages already cached are left alone.
/// The reads of a batch are in flight together; a page whose read fails
/// leaves the cache (a later read tries the file again) and the first such
/// error is returned after every other page was read.
pub(crate) fn prefetch(m: &AddressSpace, offsets: &[u64]) -> io::Result<()> {
    let size = m.size();
    let mut wanted: Vec<u64> = offsets.iter().filter(|&&o| o < size).map(|&o| m.index_of(o)).collect();
    wanted.sort_unstable();
    wanted.dedup();
    // Batches small enough that their locked pages never pin the cache:
    // a ring's depth for a file, more for a backing that reads a batch
    // itself (an object store merges neighbours into GETs of up to 16 MiB:
    // batches of 128 pages made a prefetch of 64 MiB 128 GETs of 512 KiB,
    // one after another).
    let depth = if m.backing().raw_fd().is_some() { RING_DEPTH as usize } else { 4096 };
    let batch = depth.min(((m.zone.nr_frames() >> m.order()) / 4).max(1));
    let mut first_err = None;
    for chunk in wanted.chunks(batch) {
        let mut pages: Vec<LockedPage<'_>> = Vec::with_capacity(chunk.len());
        for &index in chunk {
            if m.find_get_page(index).is_some_and(|p| p.is_uptodate()) {
                continue;
            }
            match m.find_or_create_page(index) {
                Ok(p) if p.is_uptodate() => {}
                Ok(p) => pages.push(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                    break;
                }
            }
        }
        if let Err(e) = read_batch(m, &mut pages) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Reads locked, not-uptodate pages from the file: on io_uring all at once
/// where the backing is a plain file, otherwise one after another. Unlocks
/// them; the ones that failed leave the cache.
fn read_batch(m: &AddressSpace, pages: &mut Vec<LockedPage<'_>>) -> io::Result<()> {
    if pages.is_empty() {
        return Ok(());
    }
    m.zone.count(Event::PrefetchPages, pages.len() as u64);
    m.zone.count(Event::Miss, pages.len() as u64);
    m.zone.balance.note(m.anon.is_some(), pages.len() as u64);
    if m.has_tier() {
        // Pages the second tier holds come from it (dropped here:
        // unlocked, uptodate); the rest are read from the file together.
        pages.retain_mut(|p| !crate::io::readahead::fill_from_tier(m, p));
        if pages.is_empty() {
            return Ok(());
        }
    }
    let backing = m.backing();
    let ps = m.page_size();
    // A large page a partial write filled in part reads only its other
    // blocks (`read_one`): not on the ring.
    let partial = pages.iter().any(|p| m.zone.blocks_uptodate(p.page()) != 0);
    let results = match backing.raw_fd() {
        Some(fd) if m.zone.uring.enabled() && !partial => {
            let ops: Vec<Op> = pages
                .iter_mut()
                .map(|p| Op::Read { buf: p.data_mut().as_mut_ptr(), len: ps, offset: p.index() << m.shift })
                .collect();
            // SAFETY: each buffer is the frame of a page we hold locked (no
            // other writer) and not uptodate (no reader uses its bytes), for
            // as long as `pages` lives, which outlasts the call; the
            // descriptor is kept open by `backing`.
            let r = unsafe { m.zone.uring.run(fd, &ops) };
            if r.is_some() {
                m.zone.count(Event::UringOps, ops.len() as u64);
                m.zone.count(Event::ReadCalls, 1);
            }
            r
        }
        // No descriptor (an object store, a test's backing): the backing
        // reads the batch itself (`Backing::read_batch`; an object store
        // merges neighbours into few requests, run concurrently).
        None if !partial => {
            let mut reqs: Vec<(u64, &mut [u8])> =
                pages.iter_mut().map(|p| (p.index() << m.shift, p.data_mut())).collect();
            m.zone.count(Event::ReadCalls, 1);
            Some(backing.read_batch(&mut reqs))
        }
        _ => None,
    };
    let size = m.size();
    let mut first_err = None;
    let mut results = results.map(|r| r.into_iter());
    for mut page in pages.drain(..) {
        let index = page.index();
        let res = match results.as_mut().and_then(|r| r.next()) {
            // A whole page, or a short one that ends at the end of file.
            Some(Ok(n)) if n == ps || (index << m.shift) + n as u64 >= size => {
                page.data_mut()[n..].fill(0);
                crate::io::wal::verify(m, index, page.data())
            }
            // Short in the middle of the file, or the syscalls serve: alone.
            Some(Ok(_)) | None => crate::io::filemap::read_one(m, &mut page).map(|_| ()),
            Some(Err(e)) => Err(e),
        };
        match res {
            Ok(()) => {
                page.page().clear(PageFlags::ERROR);
                page.set_uptodate();
            }
            Err(e) => {
                m.zone.count(Event::ReadErrors, 1);
                crate::io::readahead::note_read_error(m, index, Some(&e));
                m.delete_from_page_cache(&page);
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
