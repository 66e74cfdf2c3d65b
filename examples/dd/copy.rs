//! The copy loop: coreutils `dd_copy` with its skip and seek, the
//! partial-read warning, the output block gathering, recovery after read
//! errors, and records going page to page between cached files.

use std::io;
use std::time::{Duration, Instant};

use crate::files::{Input, Output};
use crate::messages::{fatal, os_err, quoteaf, quotef, reason, Exit};
use crate::operands::{Opts, Status};
use crate::report::Stats;
use crate::{EINVAL, ENOSPC, EOVERFLOW, ESPIPE, INTMAX};

pub(crate) struct Copier<'a> {
    pub(crate) opts: &'a Opts,
    pub(crate) input_name: &'a str,
    pub(crate) output_name: &'a str,
    pub(crate) warn_partial_read: bool,
    pub(crate) prev_nread: usize,
    pub(crate) sparse: bool,
    pub(crate) final_op_was_seek: bool,
    /// Whether records may go page to page between cached files (`splice_record`).
    pub(crate) splice: bool,
}

/// The smallest cache with which records go page to page (`splice_record`).
pub(crate) const SPLICE_MIN_CACHE: usize = 1 << 20;

impl Copier<'_> {
    /// `iread`, with the partial-read warning.
    fn iread(&mut self, input: &mut Input, buf: &mut [u8]) -> io::Result<usize> {
        let nread = input.read(buf)?;
        self.note_read(nread, buf.len());
        Ok(nread)
    }

    /// After a read of `nread` bytes of `wanted`: the partial-read warning.
    fn note_read(&mut self, nread: usize, wanted: usize) {
        if nread > 0 && self.warn_partial_read && 0 < self.prev_nread && self.prev_nread < wanted {
            if self.opts.status != Status::None {
                let prev = self.prev_nread;
                let unit = if prev == 1 { "byte" } else { "bytes" };
                errln!("dd: warning: partial read ({prev} {unit}); suggest iflag=fullblock");
            }
            self.warn_partial_read = false;
        }
        self.prev_nread = nread;
    }

    fn iread_fnc(&mut self, input: &mut Input, buf: &mut [u8]) -> io::Result<usize> {
        if !self.opts.iflag.fullblock {
            return self.iread(input, buf);
        }
        let mut done = 0;
        while done < buf.len() {
            let n = self.iread(input, &mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn iwrite(&mut self, output: &mut Output, buf: &[u8]) -> (usize, Option<io::Error>) {
        output.write(buf, &mut self.sparse, &mut self.final_op_was_seek)
    }

    /// coreutils `skip` for the input; returns the records not skipped.
    fn skip_input(
        &mut self,
        input: &mut Input,
        records: u64,
        blocksize: usize,
        bytes: u64,
        buf: &mut [u8],
        input_offset: &mut Option<u64>,
    ) -> Result<u64, Exit> {
        let offset = records.checked_mul(blocksize as u64).and_then(|o| o.checked_add(bytes)).filter(|&o| o <= INTMAX);
        let mut lseek_err: Option<io::Error> = None;
        if let Some(mut offset) = offset {
            match input.seek_cur(offset) {
                Ok(_) => {
                    let size = input
                        .regular_size()
                        .map_err(|e| fatal(&format!("cannot fstat {}: {}", quoteaf(self.input_name), reason(&e))))?;
                    let mut left = 0;
                    if let (Some(size), Some(io)) = (size, *input_offset) {
                        if size.checked_sub(io).is_none_or(|avail| avail < offset) {
                            left = (offset.saturating_sub(size)) / blocksize as u64;
                            offset = size.saturating_sub(io);
                        }
                    }
                    *input_offset = input_offset.and_then(|o| o.checked_add(offset));
                    return Ok(left);
                }
                Err(e) => lseek_err = Some(e),
            }
        }
        if input.seek_end().is_ok() {
            let e = lseek_err.unwrap_or_else(|| os_err(EOVERFLOW));
            errln!("dd: {}: cannot skip: {}", quotef(self.input_name), reason(&e));
            return Err(Exit(1));
        }
        let mut records = records;
        let mut bytes = bytes;
        loop {
            let want = if records != 0 { blocksize } else { bytes as usize };
            match self.iread_fnc(input, &mut buf[..want]) {
                Err(e) => {
                    errln!("dd: error reading {}: {}", quoteaf(self.input_name), reason(&e));
                    return Err(Exit(1));
                }
                Ok(0) => break,
                Ok(n) => *input_offset = input_offset.and_then(|o| o.checked_add(n as u64)),
            }
            if records != 0 {
                records -= 1;
            } else {
                bytes = 0;
            }
            if records == 0 && bytes == 0 {
                break;
            }
        }
        Ok(records)
    }

    /// coreutils `skip` for the output; returns (records, bytes) left.
    fn seek_output(
        &mut self,
        output: &mut Output,
        records: u64,
        blocksize: usize,
        bytes: u64,
        buf: &mut [u8],
    ) -> Result<(u64, u64), Exit> {
        let offset = records.checked_mul(blocksize as u64).and_then(|o| o.checked_add(bytes)).filter(|&o| o <= INTMAX);
        let mut lseek_err: Option<io::Error> = None;
        if let Some(offset) = offset {
            match output.seek_cur(offset) {
                Ok(_) => return Ok((0, 0)),
                Err(e) => lseek_err = Some(e),
            }
        }
        let lseek_err = lseek_err.unwrap_or_else(|| os_err(EOVERFLOW));
        if output.seek_end().is_ok() {
            errln!("dd: {}: cannot seek: {}", quotef(self.output_name), reason(&lseek_err));
            return Err(Exit(1));
        }
        let mut records = records;
        let mut bytes = bytes;
        loop {
            let want = if records != 0 { blocksize } else { bytes as usize };
            match output.read(&mut buf[..want]) {
                Err(_) => {
                    errln!("dd: {}: cannot seek: {}", quotef(self.output_name), reason(&lseek_err));
                    return Err(Exit(1));
                }
                Ok(0) => break,
                Ok(_) => {}
            }
            if records != 0 {
                records -= 1;
            } else {
                bytes = 0;
            }
            if records == 0 && bytes == 0 {
                break;
            }
        }
        Ok((records, bytes))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dd_copy(
        &mut self,
        ibuf: &mut [u8],
        obuf: &mut [u8],
        input: &mut Input,
        output: &mut Output,
        stats: &mut Stats,
        input_offset: &mut Option<u64>,
        input_seekable: &mut bool,
        input_seek_errno: &mut i32,
    ) -> Result<u8, Exit> {
        let opts = self.opts;
        let ibs = opts.ibs;
        let obs = opts.obs;
        let mut exit_status = 0u8;

        if opts.skip_records != 0 || opts.skip_bytes != 0 {
            let us_bytes = opts.skip_records.checked_mul(ibs as u64).and_then(|b| b.checked_add(opts.skip_bytes));
            let offset0 = *input_offset;
            let us_blocks = self.skip_input(input, opts.skip_records, ibs, opts.skip_bytes, ibuf, input_offset)?;
            let short = match (*input_offset, offset0) {
                (Some(now), Some(then)) => us_bytes != Some(now - then),
                _ => false,
            };
            if (us_blocks != 0 || short) && opts.status != Status::None {
                errln!("dd: {}: cannot skip to specified offset", quotef(self.input_name));
            }
        }

        if opts.seek_records != 0 || opts.seek_bytes != 0 {
            // Without two buffers (bs=), obs == ibs and ibuf serves.
            let seek_buf: &mut [u8] = if opts.two_buffers() { obuf } else { ibuf };
            let (mut write_records, mut bytes) =
                self.seek_output(output, opts.seek_records, obs, opts.seek_bytes, seek_buf)?;
            if write_records != 0 || bytes != 0 {
                seek_buf.fill(0);
                let zeros: &[u8] = seek_buf;
                loop {
                    let size = if write_records != 0 { obs } else { bytes as usize };
                    let (n, err) = self.iwrite(output, &zeros[..size]);
                    if n != size {
                        let e = err.unwrap_or_else(|| os_err(ENOSPC));
                        errln!("dd: writing to {}: {}", quoteaf(self.output_name), reason(&e));
                        return Err(Exit(1));
                    }
                    if write_records != 0 {
                        write_records -= 1;
                    } else {
                        bytes = 0;
                    }
                    if write_records == 0 && bytes == 0 {
                        break;
                    }
                }
            }
        }

        if opts.max_records == 0 && opts.max_bytes == 0 {
            return Ok(exit_status);
        }

        let mut partread = 0usize;
        let mut oc = 0usize;
        let mut saved_byte: Option<u8> = None;
        let mut next_progress = stats.start + Duration::from_secs(1);
        let record_limit = u128::from(opts.max_records) + u128::from(opts.max_bytes != 0);

        loop {
            if opts.status == Status::Progress {
                let now = Instant::now();
                if next_progress <= now {
                    stats.print_xfer(true);
                    next_progress += Duration::from_secs(1);
                }
            }
            let records = stats.r_full + stats.r_partial;
            if u128::from(records) >= record_limit {
                break;
            }
            if opts.conv.sync && opts.conv.noerror {
                ibuf.fill(0);
            }
            let want = if records >= opts.max_records { opts.max_bytes as usize } else { ibs };
            // Between cached files, a record may go by `copy_from` instead
            // of through the buffer; its counting is the buffer path's.
            let spliced = if self.splice && !opts.two_buffers() && !opts.conv.sync && !self.sparse {
                splice_record(input, output, want)
            } else {
                None
            };
            if let Some(n) = spliced {
                self.note_read(n, want);
                if self.opts.iflag.fullblock && n < want {
                    // iread_fnc would have read again and met end of file.
                    self.prev_nread = 0;
                }
            }
            let read = match spliced {
                Some(n) => Ok(n),
                None => self.iread_fnc(input, &mut ibuf[..want]),
            };
            let mut n = match read {
                Ok(0) => break,
                Ok(n) => {
                    *input_offset = input_offset.and_then(|o| o.checked_add(n as u64));
                    n
                }
                Err(e) => {
                    if !opts.conv.noerror || opts.status != Status::None {
                        errln!("dd: error reading {}: {}", quoteaf(self.input_name), reason(&e));
                    }
                    if !opts.conv.noerror {
                        exit_status = 1;
                        break;
                    }
                    stats.print();
                    let bad_portion = (ibs - partread) as u64;
                    if !advance_after_read_error(
                        input,
                        bad_portion,
                        input_offset,
                        *input_seekable,
                        *input_seek_errno,
                        self.input_name,
                    ) {
                        exit_status = 1;
                        *input_seekable = false;
                        *input_seek_errno = ESPIPE;
                    }
                    if opts.conv.sync && partread == 0 {
                        0
                    } else {
                        continue;
                    }
                }
            };

            if n < ibs {
                stats.r_partial += 1;
                partread = n;
                if opts.conv.sync {
                    if !opts.conv.noerror {
                        ibuf[n..].fill(0);
                    }
                    n = ibs;
                }
            } else {
                stats.r_full += 1;
                partread = 0;
            }

            if !opts.two_buffers() {
                let (nw, err) = if spliced.is_some() {
                    // Already written.
                    self.final_op_was_seek = false;
                    (n, None)
                } else {
                    self.iwrite(output, &ibuf[..n])
                };
                stats.w_bytes += nw as u64;
                if nw != n {
                    let e = err.unwrap_or_else(|| os_err(ENOSPC));
                    errln!("dd: error writing {}: {}", quoteaf(self.output_name), reason(&e));
                    return Ok(1);
                }
                if n == ibs {
                    stats.w_full += 1;
                } else {
                    stats.w_partial += 1;
                }
                continue;
            }
            if opts.conv.ucase {
                ibuf[..n].make_ascii_uppercase();
            } else if opts.conv.lcase {
                ibuf[..n].make_ascii_lowercase();
            }
            let mut data: Vec<u8>;
            let chunk: &[u8] = if opts.conv.swab {
                data = Vec::with_capacity(n + 1);
                data.extend(saved_byte.take());
                data.extend_from_slice(&ibuf[..n]);
                if data.len() % 2 == 1 {
                    saved_byte = data.pop();
                }
                for pair in data.chunks_exact_mut(2) {
                    pair.swap(0, 1);
                }
                &data
            } else {
                &ibuf[..n]
            };
            self.copy_simple(chunk, output, obuf, &mut oc, stats)?;
        }

        if let Some(b) = saved_byte {
            self.copy_simple(&[b], output, obuf, &mut oc, stats)?;
        }

        if oc != 0 {
            let (nw, err) = self.iwrite(output, &obuf[..oc]);
            stats.w_bytes += nw as u64;
            if nw != 0 {
                stats.w_partial += 1;
            }
            if nw != oc {
                let e = err.unwrap_or_else(|| os_err(ENOSPC));
                errln!("dd: error writing {}: {}", quoteaf(self.output_name), reason(&e));
                return Ok(1);
            }
        }

        if self.final_op_was_seek {
            match output.extend_to_offset() {
                Ok(None) => {}
                Ok(Some(size)) => {
                    errln!("dd: failed to truncate to {size} bytes in output file {}", quoteaf(self.output_name));
                    return Ok(1);
                }
                Err(e) => {
                    errln!("dd: cannot fstat {}: {}", quoteaf(self.output_name), reason(&e));
                    return Ok(1);
                }
            }
        }

        // fsync can take long: a last progress line if there was progress.
        if (opts.conv.fsync || opts.conv.fdatasync)
            && opts.status == Status::Progress
            && stats.reported_w_bytes.is_some_and(|r| r < stats.w_bytes)
        {
            stats.print_xfer(true);
        }
        Ok(exit_status)
    }

    fn copy_simple(
        &mut self,
        mut buf: &[u8],
        output: &mut Output,
        obuf: &mut [u8],
        oc: &mut usize,
        stats: &mut Stats,
    ) -> Result<(), Exit> {
        let obs = obuf.len();
        loop {
            let nfree = buf.len().min(obs - *oc);
            obuf[*oc..*oc + nfree].copy_from_slice(&buf[..nfree]);
            buf = &buf[nfree..];
            *oc += nfree;
            if *oc >= obs {
                let (nw, err) = self.iwrite(output, obuf);
                stats.w_bytes += nw as u64;
                if nw != obs {
                    let e = err.unwrap_or_else(|| os_err(ENOSPC));
                    errln!("dd: writing to {}: {}", quoteaf(self.output_name), reason(&e));
                    if nw != 0 {
                        stats.w_partial += 1;
                    }
                    return Err(Exit(1));
                }
                stats.w_full += 1;
                *oc = 0;
            }
            if buf.is_empty() {
                return Ok(());
            }
        }
    }
}

/// One record of up to `want` bytes from a cached input file into a cached
/// output file with `CachedFile::copy_from`: whole pages move from the
/// input's cache to the output's, the rest is copied from page memory, and
/// nothing goes through dd's buffer. Returns the bytes read and written
/// (short only at end of file or before an error, which the next record
/// meets), or `None` when the buffer path must do it: either side not
/// cached, both the same file, or the copy failing before its first byte
/// (the buffer path then reads and writes again and reports the error as dd
/// does).
fn splice_record(input: &mut Input, output: &mut Output, want: usize) -> Option<usize> {
    let (Input::Cached { file: ifile, pos: ipos }, Output::Cached { file: ofile, pos: opos, append }) = (input, output)
    else {
        return None;
    };
    if std::ptr::eq(ifile.mapping(), ofile.mapping()) {
        return None;
    }
    let at = if *append { ofile.len() } else { *opos };
    let n = ofile.copy_from(ifile, *ipos, at, want).ok()?;
    *ipos += n as u64;
    *opos = at + n as u64;
    Some(n)
}

/// coreutils `advance_input_after_read_error`.
fn advance_after_read_error(
    input: &mut Input,
    nbytes: u64,
    input_offset: &mut Option<u64>,
    seekable: bool,
    seek_errno: i32,
    name: &str,
) -> bool {
    let err = if !seekable {
        if seek_errno == ESPIPE {
            return true;
        }
        os_err(seek_errno)
    } else {
        *input_offset = input_offset.and_then(|o| o.checked_add(nbytes));
        let Some(want) = *input_offset else {
            errln!("dd: offset overflow while reading file {}", quoteaf(name));
            return false;
        };
        match input.tell() {
            Ok(cur) if cur == want => return true,
            Ok(cur) => match want.checked_sub(cur).map(|d| input.seek_cur(d)) {
                Some(Ok(_)) => return true,
                Some(Err(e)) => e,
                None => os_err(EINVAL),
            },
            Err(e) => e,
        }
    };
    errln!("dd: {}: cannot seek: {}", quotef(name), reason(&err));
    false
}
