//! The read and write paths, following `mm/filemap.c`
//! (`filemap_read`, `generic_perform_write`, `filemap_write_and_wait`):
//! [`CachedFile`], the std-like handle users hold, and its cursor.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::index::mapping::{AddressSpace, MovePage};
use crate::io::readahead::{self, RaContext};
use crate::io::truncate::{self, Invalidated};
use crate::io::wal::{ReadVerifier, WriteAheadLog};
use crate::io::writeback;
use crate::mem::page::{LockedPage, PageFlags, PageRef, RA_FRESH};
use crate::stats::Event;
use crate::sync::AtomicU64;
use crate::PAGE_SIZE;

/// The table of open files, as an open file sees it when it closes
/// (`iput`). The cache on top implements it and hands it down with each
/// open, so this layer never names the cache.
pub(crate) trait FileTable: Send + Sync {
    /// The open of `mapping` is gone: on the last one, the file's dirty
    /// pages are written back.
    fn close(&self, mapping: &Arc<AddressSpace>);
}

/// One open of a file (the kernel's `struct file`): the mapping it shares
/// with every other open of the same file, its own readahead window and its
/// own cursor into the mapping's write errors.
pub(crate) struct OpenFile {
    pub(crate) table: Arc<dyn FileTable>,
    pub(crate) mapping: Arc<AddressSpace>,
    pub(crate) ra: RaContext,
    pub(crate) errseq_since: AtomicU64,
    pub(crate) writable: bool,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.table.close(&self.mapping);
    }
}

/// An open file read and written through the cache. `Send + Sync`; clones
/// share the open (like a duplicated file descriptor), and every open of
/// the same file shares the same pages.
#[derive(Clone)]
pub struct CachedFile {
    pub(crate) file: Arc<OpenFile>,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

impl CachedFile {
    /// The file's pages (the page-level interface).
    #[inline]
    pub fn mapping(&self) -> &AddressSpace {
        &self.file.mapping
    }

    /// The size of the file as the cache sees it.
    #[inline]
    pub fn len(&self) -> u64 {
        self.file.mapping.size()
    }

    /// Whether the file is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at or past end of file.
    #[inline]
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let m = &*self.file.mapping;
        // The common hit: inside one page and inside the file, served
        // optimistically. Kept to a few instructions that inline into the
        // caller (everything else is out of line), so that consecutive
        // reads overlap their cache misses.
        let off = (offset & (m.ps() - 1)) as usize;
        let len = buf.len();
        let size = m.size();
        // `len - 1 < ps - off`: not empty and not past the page (one test).
        if len.wrapping_sub(1) < m.ps() as usize - off
            && offset < size
            && len as u64 <= size - offset
            && m.read_optimistic(m.index_of(offset), off, buf)
        {
            self.file.ra.note_hit_one(m.index_of(offset));
            return Ok(len);
        }
        self.read_at_slow(buf, offset)
    }

    /// `read_at` past the optimistic hit: bounds, then page by page.
    #[inline(never)]
    fn read_at_slow(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let size = self.file.mapping.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let end = size.min(offset.saturating_add(buf.len() as u64));
        self.read_at_pages(buf, offset, end)
    }

    /// `read_at` of `[offset, end)` (inside the file) page by page.
    #[inline(never)]
    fn read_at_pages(&self, buf: &mut [u8], offset: u64, end: u64) -> io::Result<usize> {
        let m = &*self.file.mapping;
        let ps = m.ps();
        let last_index = m.index_of(end - 1);
        let mut pos = offset;
        let mut slow = false;
        while pos < end {
            let index = m.index_of(pos);
            let off = (pos % ps) as usize;
            let n = ((ps - off as u64).min(end - pos)) as usize;
            let done = (pos - offset) as usize;
            if m.read_optimistic(index, off, &mut buf[done..done + n]) {
                pos += n as u64;
                continue;
            }
            slow = true;
            let page = match read_cache_page(m, &self.file.ra, index, last_index - index + 1) {
                Ok(p) => p,
                // Bytes already copied are a short read; the error comes back next call.
                Err(_) if pos > offset => break,
                Err(e) => return Err(e),
            };
            buf[done..done + n].copy_from_slice(&page.read()[off..off + n]);
            pos += n as u64;
        }
        if slow {
            self.file.ra.note_read(last_index);
        } else {
            self.file.ra.note_hit(m.index_of(offset), last_index);
        }
        Ok((pos - offset) as usize)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.file.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file not opened for writing"))
        }
    }

    /// Writes `buf` at `offset` into the cache; the pages become dirty and
    /// reach the file on writeback or sync. Grows the file when writing past
    /// its end. Returns the bytes written (short only if the cache runs out
    /// of frames part way).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.check_writable()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= crate::index::mapping::MAX_FILE_SIZE)
            .ok_or_else(|| invalid("write past the largest file size"))?;
        let m = &*self.file.mapping;
        let written = {
            let _size = m.size_lock.lock();
            let ps = m.ps();
            let mut pos = offset;
            while pos < end {
                let index = m.index_of(pos);
                let off = (pos % ps) as usize;
                let n = ((ps - off as u64).min(end - pos)) as usize;
                let done = (pos - offset) as usize;
                match self.write_page(index, off, &buf[done..done + n]) {
                    Ok(()) => pos += n as u64,
                    // Bytes already written are a short write; the error comes back next call.
                    Err(_) if pos > offset => break,
                    Err(e) => return Err(e),
                }
            }
            if pos > m.size() {
                m.set_size(pos);
            }
            let _ = writeback::trim_if_needed_locked(m); // a failure is in the errseq
            (pos - offset) as usize
        };
        writeback::balance_dirty_pages(m);
        Ok(written)
    }

    /// Copies `src` into page `index` at `off` (`write_begin` + copy + `write_end`).
    fn write_page(&self, index: u64, off: usize, src: &[u8]) -> io::Result<()> {
        let m = &*self.file.mapping;
        // Written pages start inactive even while the cache fills, as the
        // kernel starts them: a second write or a read activates them.
        let mut page = m.find_or_create_page_with(index, crate::mem::page::FILL_INACTIVE)?;
        if m.anon.is_some() && !page.is_dirty() {
            // Anonymous memory's share of the frames, before anything changes.
            crate::io::anon::charge_dirty(m)?;
        }
        let whole = src.len() == m.page_size();
        if !page.is_uptodate() && whole {
            // A new frame, overwritten whole: its old bytes are cold and
            // worthless, so do not read them in (non-temporal stores).
            crate::mem::arena::copy_page_nontemporal(page.data_mut(), src);
            page.set_uptodate();
        } else {
            if !page.is_uptodate() {
                // A partial write: the rest of the page must be the file's.
                fill_around(m, &mut page, off, src.len())?;
            }
            page.data_mut()[off..off + src.len()].copy_from_slice(src);
            if !page.is_uptodate() {
                // A large page filled around the write only: its blocks
                // under the write hold good bytes now.
                let zone = &m.zone;
                zone.set_blocks_uptodate(page.page(), blocks_of(off, src.len()));
                if zone.blocks_uptodate(page.page()) == zone.all_blocks(page.page()) {
                    page.set_uptodate();
                }
            }
        }
        // i_size covers the bytes before the page can be written back.
        let end = (index << m.shift) + (off + src.len()) as u64;
        if end > m.size() {
            m.set_size(end);
        }
        m.set_blocks_dirty(page.page(), blocks_of(off, src.len()));
        page.mark_accessed();
        Ok(())
    }

    /// Copies `len` bytes of `src` from `src_offset` into this file at
    /// `offset` through the cache, as `copy_file_range(2)` does between
    /// files; short at `src`'s end of file; returns the bytes copied.
    ///
    /// Whole pages at page-aligned offsets in both files move from `src`'s
    /// cache into this one's instead of being copied, when nobody else holds
    /// them and this file has no page there yet: `src` loses nothing (the
    /// bytes are clean, on its file) and reads them again if asked. The rest
    /// is copied straight from `src`'s page memory. When `src` is this same
    /// file, the bytes go through a one-page buffer, and ranges that overlap
    /// are refused with `InvalidInput`, as `copy_file_range(2)` refuses them.
    ///
    /// ```
    /// use page_cache::PageCache;
    /// # fn main() -> std::io::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # std::fs::write(dir.path().join("a"), vec![7u8; 1 << 20])?;
    /// let cache = PageCache::new(8 << 20)?;
    /// let src = cache.open(dir.path().join("a"))?;
    /// let dst = cache.create(dir.path().join("b"))?;
    /// assert_eq!(dst.copy_from(&src, 0, 0, usize::MAX)?, 1 << 20);
    /// assert_eq!(cache.stats().pages_moved, 256); // whole pages moved, none copied
    /// dst.sync_data()?;
    /// assert_eq!(std::fs::read(dir.path().join("b"))?, vec![7u8; 1 << 20]);
    /// # Ok(()) }
    /// ```
    pub fn copy_from(&self, src: &CachedFile, src_offset: u64, offset: u64, len: usize) -> io::Result<usize> {
        self.check_writable()?;
        let (s, m) = (&*src.file.mapping, &*self.file.mapping);
        let src_size = s.size();
        if src_offset >= src_size || len == 0 {
            return Ok(0);
        }
        let len = (len as u64).min(src_size - src_offset);
        offset
            .checked_add(len)
            .filter(|&e| e <= crate::index::mapping::MAX_FILE_SIZE)
            .ok_or_else(|| invalid("write past the largest file size"))?;
        if std::ptr::eq(s, m) {
            if src_offset < offset + len && offset < src_offset + len {
                return Err(invalid("copy between overlapping ranges of one file"));
            }
            return self.copy_within_file(src_offset, offset, len);
        }
        let last_src = s.index_of(src_offset + len - 1);
        let (sps, dps) = (s.ps(), m.ps());
        let mut done = 0u64;
        while done < len {
            // A chunk at a time under the size lock, then the dirty throttle.
            let chunk_end = len.min(done + COPY_CHUNK);
            let res = {
                let _size = m.size_lock.lock();
                let mut res = Ok(());
                while done < chunk_end {
                    let (spos, dpos) = (src_offset + done, offset + done);
                    let (soff, doff) = ((spos % sps) as usize, (dpos % dps) as usize);
                    let n = (sps - soff as u64).min(dps - doff as u64).min(len - done) as usize;
                    let sidx = s.index_of(spos);
                    match self.copy_page_from(s, &src.file.ra, sidx, last_src - sidx + 1, soff, dpos, n) {
                        Ok(()) => done += n as u64,
                        Err(e) => {
                            res = Err(e);
                            break;
                        }
                    }
                }
                // Only bytes copied grow the file (a copy that failed at
                // once past the end leaves the size alone).
                if done > 0 && offset + done > m.size() {
                    m.set_size(offset + done);
                }
                let _ = writeback::trim_if_needed_locked(m); // a failure is in the errseq
                res
            };
            if done > 0 {
                src.file.ra.note_read(s.index_of(src_offset + done - 1));
            }
            writeback::balance_dirty_pages(m);
            match res {
                Ok(()) => {}
                // Bytes already copied are a short copy; the error comes back next call.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done as usize)
    }

    /// One page's worth of `copy_from`: `n` bytes from page `sidx` of `s`
    /// at `soff` to this file at `dpos`, moving the page when it can.
    #[allow(clippy::too_many_arguments)]
    fn copy_page_from(
        &self,
        s: &AddressSpace,
        ra: &RaContext,
        sidx: u64,
        req: u64,
        soff: usize,
        dpos: u64,
        n: usize,
    ) -> io::Result<()> {
        let m = &*self.file.mapping;
        let didx = m.index_of(dpos);
        let mut page = read_cache_page(s, ra, sidx, req)?;
        let ps = s.ps();
        let whole = s.order() == m.order() && n as u64 == ps && (sidx + 1) * ps <= s.size();
        if whole && m.find_get_page(didx).is_none() {
            match page.try_lock() {
                Ok(locked) => {
                    match s.move_page_to(locked, m, didx) {
                        MovePage::Done(moved) => {
                            // i_size covers the page before it can be written back.
                            if dpos + ps > m.size() {
                                m.set_size(dpos + ps);
                            }
                            m.set_page_dirty(moved.page());
                            return Ok(());
                        }
                        MovePage::Kept(locked) => page = locked.unlock(),
                        MovePage::Orphaned => page = read_cache_page(s, ra, sidx, req)?,
                    }
                }
                Err(p) => page = p,
            }
        }
        let data = page.read();
        self.write_page(didx, (dpos % m.ps()) as usize, &data[soff..soff + n])
    }

    /// `copy_from` within one file, through a one-page buffer (a page of the
    /// file cannot be read from while a write into the same file waits for
    /// its readers).
    fn copy_within_file(&self, src_offset: u64, offset: u64, len: u64) -> io::Result<usize> {
        let ps = self.file.mapping.ps();
        let mut buf = vec![0u8; ps as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ps) as usize;
            let r = match self.read_at(&mut buf[..n], src_offset + done) {
                Ok(0) => break,
                Ok(r) => r,
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            };
            match self.write_all_at(&buf[..r], offset + done) {
                Ok(()) => done += r as u64,
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done as usize)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset)? {
                0 => return Err(io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer")),
                n => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }

    /// Truncates or extends the file (extension reads as zeros).
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.check_writable()?;
        if size > crate::index::mapping::MAX_FILE_SIZE {
            return Err(invalid("file size too large"));
        }
        crate::io::truncate::set_len(&self.file.mapping, size)
    }

    /// Attaches the engine's write-ahead log to the file (every handle of
    /// it): from now on no dirty page of the file reaches the file before
    /// the log is durable up to the LSN the page carries
    /// ([`WriteAheadLog::page_lsn`]), whoever writes it (the flusher,
    /// reclaim, a throttled writer, `sync_data`, `flush`, the last close,
    /// dropping the cache). A writer whose pages are ahead of the log calls
    /// [`WriteAheadLog::flush_to`] once for the highest LSN of the run it
    /// is about to write; reclaim never waits for the log, it leaves such
    /// pages and wakes the flusher. If the log cannot be flushed (an error,
    /// a panic in the engine's code, or `durable_lsn` still behind), the
    /// pages stay dirty and the error reaches `sync_data` callers like a
    /// write error.
    ///
    /// The log stays attached while the file has an open handle; when the
    /// last one closes (and no page of the file is dirty or being written)
    /// it is dropped, so a log that holds the handle of its own log file
    /// does not keep the cache alive. Attach it again after reopening.
    pub fn set_write_ahead_log(&self, log: Arc<dyn WriteAheadLog>) {
        *self.file.mapping.wal.write() = Some(log);
    }

    /// Checks every page of the file as it is read in, before it is marked
    /// uptodate: `verify(index, bytes)`. An error (engines return
    /// `ErrorKind::InvalidData` for a torn or corrupt page) fails the read
    /// for every reader waiting for that page, with that error's kind; the
    /// page is not cached as uptodate, and the next read tries the file
    /// again, as after a failed read. Pages already cached are not checked.
    /// Like the log, the verifier is dropped when the file's last handle
    /// closes.
    pub fn set_read_verifier(&self, verify: ReadVerifier) {
        *self.file.mapping.verifier.write() = Some(verify);
    }

    /// Brings the pages holding each of `offsets` into the cache, with all
    /// their reads in flight at once (on io_uring where the file is a plain
    /// file; see [`Builder::io_uring`](crate::Builder::io_uring)), as a
    /// B-tree engine does before it visits many leaves, or an LSM engine
    /// for a multi-get. Offsets past the end of the file are ignored, as
    /// are duplicates and pages already cached. When it returns, every
    /// such page is cached and uptodate, or its read failed: the first
    /// error is returned, the pages that were read stay cached, and a later
    /// read of a failed page tries the file again.
    pub fn prefetch(&self, offsets: &[u64]) -> io::Result<()> {
        crate::io::prefetch::prefetch(&self.file.mapping, offsets)
    }

    /// Drops every clean page of the file that nobody is using, so the next
    /// read of it goes to the file (`invalidate_mapping_pages`,
    /// `POSIX_FADV_DONTNEED` over the whole file): for an engine that knows
    /// the file was written behind the cache's back while it was open.
    /// Dirty pages are never dropped; pages in use (locked, under writeback
    /// or referenced) are left. When no page of the file is dirty or being
    /// written (and no write of the cache's lands while it looks), the
    /// cache also takes the file's size as it is now. See
    /// [`invalidate_range`](Self::invalidate_range) for the counts.
    pub fn invalidate(&self) -> io::Result<()> {
        self.invalidate_range(0, u64::MAX).map(|_| ())
    }

    /// Like [`invalidate`](Self::invalidate) for the pages that hold any
    /// byte of `[offset, offset + len)` (clipped at the largest file size;
    /// a page partly inside is dropped too, so every byte of the range is
    /// read again). Returns what was dropped and what was left.
    pub fn invalidate_range(&self, offset: u64, len: u64) -> io::Result<Invalidated> {
        let m = &*self.file.mapping;
        let end = offset.saturating_add(len).min(crate::index::mapping::MAX_FILE_SIZE);
        if offset > crate::index::mapping::MAX_FILE_SIZE {
            return Err(invalid("offset past the largest file size"));
        }
        if len == 0 || offset >= end {
            return Ok(Invalidated::default());
        }
        let _size = m.size_lock.lock();
        // The tier first: pages dropped below must not come back from it.
        let tier = m.cleancache_begin_change(Some((m.index_of(offset), m.pages_for(end))));
        let out = truncate::invalidate_pages(m, m.index_of(offset), m.pages_for(end), false);
        drop(tier);
        // Only a look at the file that no write of ours raced may replace
        // the cache's size (a write in flight has cleared its page's
        // DIRTY, and the file's size lags it until it lands).
        if let Some(stat) = truncate::quiet_stat(m)? {
            truncate::adopt_size(m, &stat);
            // What the file is now, as far as this cache can tell: the next
            // open compares against it.
            *m.record.lock() = Some(stat);
            m.cleancache_file_written(&stat);
            // The times of our own writes are folded into the record.
            m.written.store(false, crate::sync::Ordering::SeqCst);
        }
        Ok(out)
    }

    /// Writes every page dirty now and waits, then `fdatasync`s. Reports a
    /// write error that happened since this handle last synced (each error
    /// once per handle).
    pub fn sync_data(&self) -> io::Result<()> {
        let _ = writeback::sync_mapping(&self.file.mapping, false);
        self.file.mapping.errseq.check_and_advance(&self.file.errseq_since)
    }

    /// Writes every page dirty now back to the file and waits for it, with
    /// no `fdatasync` (`filemap_write_and_wait`): the bytes reach the file,
    /// as a `write(2)` would have put them there, not yet the disk. Returns
    /// a write error this handle has not seen yet (it is then seen, and the
    /// next `sync_data` does not report it again); the pages stay dirty.
    pub fn flush(&self) -> io::Result<()> {
        let _ = writeback::write_cache_pages(&self.file.mapping, writeback::SyncMode::Integrity);
        writeback::wait_writeback(&self.file.mapping);
        self.file.mapping.errseq.check_and_advance(&self.file.errseq_since)
    }

    /// As `sync_data`, then `fsync` (metadata too).
    pub fn sync_all(&self) -> io::Result<()> {
        let _ = writeback::sync_mapping(&self.file.mapping, true);
        self.file.mapping.errseq.check_and_advance(&self.file.errseq_since)
    }

    /// Brings the bytes `[offset, offset + len)` into the cache in the
    /// calling thread, as `readahead(2)` or `POSIX_FADV_WILLNEED` do
    /// (`force_page_cache_readahead`): pages already cached are left as they
    /// are, the rest are read from the file, one vectored read per
    /// contiguous run of at most the readahead maximum. Stops at end of
    /// file. A range larger than the cache evicts its own start.
    ///
    /// A failed read is not reported here: those pages stay out of the
    /// cache, and the reader who needs one gets the error. Threads that
    /// read disjoint ranges of one file run in parallel, so a reader can
    /// have a helper thread fill the range it will want next.
    pub fn readahead(&self, offset: u64, len: u64) -> io::Result<()> {
        let m = &*self.file.mapping;
        let end = offset.checked_add(len).ok_or_else(|| invalid("offset + len overflows"))?;
        let end = end.min(m.size());
        if offset >= end {
            return Ok(());
        }
        let chunk = m.ra_max_pages().max(1);
        let mut index = m.index_of(offset);
        let end_index = m.pages_for(end);
        while index < end_index {
            let nr = chunk.min(end_index - index);
            readahead::read_window(m, index, nr, None, u64::MAX)?;
            index += nr;
        }
        Ok(())
    }

    /// A cursor implementing `Read`, `Write` and `Seek`, starting at 0.
    pub fn cursor(&self) -> FileCursor {
        FileCursor { file: self.clone(), pos: 0 }
    }
}

impl std::fmt::Debug for CachedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFile").field("mapping", &*self.file.mapping).finish()
    }
}

/// A position in a [`CachedFile`], implementing `Read`, `Write` and `Seek`.
#[derive(Clone, Debug)]
pub struct FileCursor {
    file: CachedFile,
    pos: u64,
}

impl FileCursor {
    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file underneath.
    pub fn file(&self) -> &CachedFile {
        &self.file
    }
}

impl Read for FileCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FileCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    /// `CachedFile::flush`: the dirty pages go to the file (not to disk).
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for FileCursor {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.file.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(invalid("invalid seek to a negative or overflowing position")),
        }
    }
}

/// The 4 KiB blocks that bytes `[off, off + len)` of a page touch, as a
/// mask (bit 0 for a 4 KiB page's only block).
#[inline]
fn blocks_of(off: usize, len: usize) -> u32 {
    let (first, last) = (off / PAGE_SIZE, (off + len - 1) / PAGE_SIZE);
    (((1u64 << (last + 1)) - 1) & !((1u64 << first) - 1)) as u32
}

/// Before a partial write into a locked page that is not uptodate: makes
/// the bytes the write leaves alone hold the file's. A page past the end
/// of the file is zeroed; a 4 KiB page is read whole; a large page reads
/// only the blocks the write covers in part (the rest of it it leaves to
/// whoever reads the page, `read_one`, which reads just the blocks that
/// are not uptodate), so a 4 KiB write into a 64 KiB page reads at most
/// 8 KiB (`iomap_write_begin`).
fn fill_around(m: &AddressSpace, page: &mut LockedPage<'_>, off: usize, len: usize) -> io::Result<()> {
    let start = page.index() << m.shift;
    let have = m.zone.blocks_uptodate(page.page());
    if start >= m.size() {
        // Past the end: zeros, but for blocks an earlier write filled.
        let data = page.data_mut();
        for (i, block) in data.chunks_mut(PAGE_SIZE).enumerate() {
            if have >> i & 1 == 0 {
                block.fill(0);
            }
        }
        page.set_uptodate();
        return Ok(());
    }
    // Anonymous memory reads a large page whole too: its stored copy goes
    // when the page is dirtied, so no block of it may be left unread.
    if m.order() == 0 || m.anon.is_some() {
        return read_one(m, page);
    }
    let mut edges = 0u32;
    if off % PAGE_SIZE != 0 {
        edges |= 1 << (off / PAGE_SIZE);
    }
    if (off + len) % PAGE_SIZE != 0 {
        edges |= 1 << ((off + len) / PAGE_SIZE);
    }
    let need = edges & !have;
    if need != 0 {
        readahead::read_blocks(m, page, need)?;
        m.zone.set_blocks_uptodate(page.page(), need);
    }
    Ok(())
}

/// Bytes `copy_from` copies between dirty throttles.
const COPY_CHUNK: u64 = 1 << 20;

/// An uptodate page for reading, through readahead on a miss.
#[inline]
pub(crate) fn read_cache_page<'a>(
    m: &'a AddressSpace,
    ra: &RaContext,
    index: u64,
    req: u64,
) -> io::Result<PageRef<'a>> {
    read_cache_page_found(m, ra, index, req, m.find_get_page(index))
}

/// `read_cache_page` for a caller that has looked the page up already
/// (`found`: the page at `index` with a reference, or `None`).
#[inline]
pub(crate) fn read_cache_page_found<'a>(
    m: &'a AddressSpace,
    ra: &RaContext,
    index: u64,
    req: u64,
    found: Option<PageRef<'a>>,
) -> io::Result<PageRef<'a>> {
    if let Some(page) = &found {
        let f = page.page().flags();
        if f.0 & (PageFlags::UPTODATE.0 | PageFlags::READAHEAD.0 | RA_FRESH.0) == PageFlags::UPTODATE.0 {
            m.zone.count(Event::Hit, 1);
            page.mark_accessed();
            return Ok(found.expect("just matched"));
        }
    }
    read_cache_page_slow(m, ra, index, req, found)
}

/// The rest of `read_cache_page`, starting from what its lookup found.
#[cold]
fn read_cache_page_slow<'a>(
    m: &'a AddressSpace,
    ra: &RaContext,
    index: u64,
    req: u64,
    found: Option<PageRef<'a>>,
) -> io::Result<PageRef<'a>> {
    let max = m.ra_max_pages();
    let mut found = Some(found);
    loop {
        let lookup = match found.take() {
            Some(first) => first,
            None => m.find_get_page(index),
        };
        let Some(page) = lookup else {
            m.zone.count(Event::Miss, 1);
            m.zone.balance.note(m.anon.is_some(), 1);
            let (start, nr, marker) = ra.on_miss(index, req, max);
            // The page comes back from the read itself; if someone else
            // cached it meanwhile (or reclaim took it already), look again.
            if let Some(page) = readahead::read_window(m, start, nr, Some(index), marker)? {
                page.mark_accessed();
                return Ok(page);
            }
            continue;
        };
        if page.page().test(RA_FRESH) && page.page().test_and_clear(RA_FRESH) {
            m.zone.count(Event::ReadaheadHits, 1);
        }
        if page.page().test(PageFlags::READAHEAD) && page.page().test_and_clear(PageFlags::READAHEAD) {
            let next = ra.window.lock().on_marker(index, max);
            if let Some((start, nr, marker)) = next {
                readahead::submit(m, start, nr, marker);
            }
        }
        if page.is_uptodate() {
            m.zone.count(Event::Hit, 1);
            page.mark_accessed();
            return Ok(page);
        }
        // Being read by someone else, or a read failed: take the lock.
        let was_locked = page.is_locked();
        if was_locked {
            readahead::run_queued_while_locked(&m.zone, page.page());
        }
        let mut locked = page.lock();
        if locked.page().mapping_id() != m.id {
            continue; // truncated or reclaimed meanwhile
        }
        if locked.is_uptodate() {
            m.zone.count(Event::Hit, 1);
            return Ok(locked.unlock());
        }
        if was_locked && locked.is_error() {
            return Err(readahead::read_error_for(m, index));
        }
        m.zone.count(Event::Miss, 1);
        m.zone.balance.note(m.anon.is_some(), 1);
        read_one(m, &mut locked)?;
        return Ok(locked.unlock());
    }
}

/// Fills one locked page from the file (`filemap_read_page`). Of a large
/// page that a partial write filled in part, only the blocks not yet
/// uptodate are read (the others may hold newer, dirty bytes).
pub(crate) fn read_one(m: &AddressSpace, page: &mut LockedPage<'_>) -> io::Result<()> {
    if m.has_tier() && readahead::fill_from_tier(m, page) {
        return Ok(());
    }
    let have = m.zone.blocks_uptodate(page.page());
    let res = if have == 0 {
        readahead::read_pages(m, std::slice::from_mut(page))
    } else {
        readahead::read_blocks(m, page, m.zone.all_blocks(page.page()) & !have)
    }
    .and_then(|()| crate::io::wal::verify(m, page.index(), page.data()));
    readahead::note_read_error(m, page.index(), res.as_ref().err());
    match res {
        Ok(()) => {
            page.page().clear(PageFlags::ERROR);
            page.set_uptodate();
            Ok(())
        }
        Err(e) => {
            page.page().set(PageFlags::ERROR);
            Err(e)
        }
    }
}

/// The page-level read calls of [`AddressSpace`] live with the read path
/// they run (`read_cache_page`, `filemap_get_pages`), so the index layer
/// does not call up into this one.
impl AddressSpace {
    /// The page at `index`, uptodate: found, or created and filled from the
    /// file, with readahead for sequential callers (`read_cache_page`).
    pub fn read_page(&self, index: u64) -> io::Result<PageRef<'_>> {
        self.check_index(index)?;
        let page = read_cache_page(self, &self.ra, index, 1)?;
        self.ra.note_read(index);
        Ok(page)
    }

    /// Pages `[start, start + nr)`, uptodate, clipped at end of file, pushed
    /// onto `out` in index order (`filemap_get_pages`): the cached ones come
    /// from one walk of the tree, the rest are read as `read_page` reads
    /// them, with readahead. On an error the pages before the failed one
    /// are in `out`.
    pub fn read_pages<'a>(&'a self, start: u64, nr: usize, out: &mut Vec<PageRef<'a>>) -> io::Result<()> {
        self.check_index(start)?;
        let end = start.saturating_add(nr as u64).min(self.pages_for(self.size()));
        if start >= end {
            return Ok(());
        }
        let mut index = start;
        for page in self.find_get_pages_contig(start, (end - start) as usize) {
            out.push(read_cache_page_found(self, &self.ra, index, 1, Some(page))?);
            index += 1;
        }
        if index > start {
            self.ra.note_read(index - 1);
        }
        while index < end {
            out.push(read_cache_page(self, &self.ra, index, 1)?);
            // Before the next miss: readahead sees a sequential reader.
            self.ra.note_read(index);
            index += 1;
        }
        Ok(())
    }
}
