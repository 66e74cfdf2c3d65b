//! The input and output: cached regular files or plain descriptors, their
//! reads, writes and seeks, opening them, the page cache and the buffers.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use page_cache::{CachedFile, PageCache, PAGE_SIZE};

use crate::copy::SPLICE_MIN_CACHE;
use crate::messages::{fatal, os_err, quote_bytes, Exit};
use crate::operands::Opts;
use crate::report::human;
use crate::{EINVAL, ENOSPC, INTMAX};

const DEFAULT_CACHE_BYTES: usize = 64 << 20;

pub(crate) enum Input {
    Cached { file: CachedFile, pos: u64 },
    Plain(File),
}

pub(crate) enum Output {
    Cached { file: CachedFile, pos: u64, append: bool },
    Plain { file: File, append: bool },
}

fn read_retry(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

impl Input {
    /// One `read(2)`: for a cached regular file, as much as the file holds.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Cached { file, pos } => {
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], *pos + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if done > 0 => {
                            // Like a short read(2); the error comes back next time.
                            let _ = e;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                *pos += done as u64;
                Ok(done)
            }
            Input::Plain(file) => read_retry(file, buf),
        }
    }

    /// `lseek(fd, off, SEEK_CUR)`.
    pub(crate) fn seek_cur(&mut self, off: u64) -> io::Result<u64> {
        match self {
            Input::Cached { pos, .. } => {
                let new = pos.checked_add(off).filter(|&p| p <= INTMAX).ok_or_else(|| os_err(EINVAL))?;
                *pos = new;
                Ok(new)
            }
            Input::Plain(file) => {
                let off = i64::try_from(off).map_err(|_| os_err(EINVAL))?;
                file.seek(SeekFrom::Current(off))
            }
        }
    }

    pub(crate) fn seek_end(&mut self) -> io::Result<u64> {
        match self {
            Input::Cached { file, pos } => {
                *pos = file.len();
                Ok(*pos)
            }
            Input::Plain(file) => file.seek(SeekFrom::End(0)),
        }
    }

    pub(crate) fn tell(&mut self) -> io::Result<u64> {
        match self {
            Input::Cached { pos, .. } => Ok(*pos),
            Input::Plain(file) => file.stream_position(),
        }
    }

    /// The size when it is meaningful (a regular file).
    pub(crate) fn regular_size(&self) -> io::Result<Option<u64>> {
        match self {
            Input::Cached { file, .. } => Ok(Some(file.len())),
            Input::Plain(file) => {
                let meta = file.metadata()?;
                Ok(meta.file_type().is_file().then_some(meta.len()))
            }
        }
    }
}

impl Output {
    /// `iwrite`: write all of `buf`, returning how much was written and the
    /// error that stopped it, if any.
    pub(crate) fn write(&mut self, buf: &[u8], sparse: &mut bool, final_seek: &mut bool) -> (usize, Option<io::Error>) {
        *final_seek = false;
        if *sparse && !buf.is_empty() && buf.iter().all(|&b| b == 0) {
            match self {
                Output::Cached { pos, .. } => {
                    *pos += buf.len() as u64;
                    *final_seek = true;
                    return (buf.len(), None);
                }
                Output::Plain { file, .. } => match i64::try_from(buf.len()).map(|n| file.seek(SeekFrom::Current(n))) {
                    Ok(Ok(_)) => {
                        *final_seek = true;
                        return (buf.len(), None);
                    }
                    _ => *sparse = false,
                },
            }
        }
        match self {
            Output::Cached { file, pos, append } => {
                let at = if *append { file.len() } else { *pos };
                match file.write_all_at(buf, at) {
                    Ok(()) => {
                        *pos = at + buf.len() as u64;
                        (buf.len(), None)
                    }
                    Err(e) => (0, Some(e)),
                }
            }
            Output::Plain { file, append } => {
                if *append {
                    // Emulate O_APPEND where the descriptor can seek.
                    let _ = file.seek(SeekFrom::End(0));
                }
                let mut done = 0;
                while done < buf.len() {
                    match file.write(&buf[done..]) {
                        Ok(0) => return (done, Some(os_err(ENOSPC))),
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return (done, Some(e)),
                    }
                }
                (done, None)
            }
        }
    }

    pub(crate) fn seek_cur(&mut self, off: u64) -> io::Result<u64> {
        match self {
            Output::Cached { pos, .. } => {
                let new = pos.checked_add(off).filter(|&p| p <= INTMAX).ok_or_else(|| os_err(EINVAL))?;
                *pos = new;
                Ok(new)
            }
            Output::Plain { file, .. } => {
                let off = i64::try_from(off).map_err(|_| os_err(EINVAL))?;
                file.seek(SeekFrom::Current(off))
            }
        }
    }

    pub(crate) fn seek_end(&mut self) -> io::Result<u64> {
        match self {
            Output::Cached { file, pos, .. } => {
                *pos = file.len();
                Ok(*pos)
            }
            Output::Plain { file, .. } => file.seek(SeekFrom::End(0)),
        }
    }

    /// A read on the output descriptor, as coreutils does to "seek" on
    /// outputs that cannot seek.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Output::Cached { file, pos, .. } => {
                let n = file.read_at(buf, *pos)?;
                *pos += n as u64;
                Ok(n)
            }
            Output::Plain { file, .. } => read_retry(file, buf),
        }
    }

    /// After a final sparse seek, extend a regular file up to the offset.
    pub(crate) fn extend_to_offset(&mut self) -> io::Result<Option<u64>> {
        match self {
            Output::Cached { file, pos, .. } => {
                if file.len() < *pos {
                    file.set_len(*pos).map(|()| None).or(Ok(Some(*pos)))
                } else {
                    Ok(None)
                }
            }
            Output::Plain { file, .. } => {
                let meta = file.metadata()?;
                let offset = file.stream_position()?;
                if meta.file_type().is_file() && meta.len() < offset {
                    file.set_len(offset)?;
                }
                Ok(None)
            }
        }
    }

    pub(crate) fn sync_data(&mut self) -> io::Result<()> {
        match self {
            Output::Cached { file, .. } => file.sync_data(),
            Output::Plain { file, .. } => file.sync_data(),
        }
    }

    pub(crate) fn sync_all(&mut self) -> io::Result<()> {
        match self {
            Output::Cached { file, .. } => file.sync_all(),
            Output::Plain { file, .. } => file.sync_all(),
        }
    }
}

pub(crate) fn dup_stdio(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}

pub(crate) fn cache_capacity() -> Result<usize, Exit> {
    let Some(v) = std::env::var_os("PAGE_CACHE_BYTES") else {
        return Ok(DEFAULT_CACHE_BYTES);
    };
    let s = v.as_bytes();
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = std::str::from_utf8(&s[..digits]).ok().and_then(|d| d.parse::<usize>().ok());
    let shift = match &s[digits..] {
        b"" => Some(0),
        b"K" | b"k" | b"KiB" => Some(10),
        b"M" | b"MiB" => Some(20),
        b"G" | b"GiB" => Some(30),
        _ => None,
    };
    match (n, shift) {
        (Some(n), Some(shift)) if n.checked_shl(shift).is_some_and(|v| v >> shift == n) => Ok(n << shift),
        _ => Err(fatal(&format!("invalid PAGE_CACHE_BYTES: {}", quote_bytes(s)))),
    }
}

/// `PAGE_CACHE_PAGE_SIZE`, if set: the page size of every file dd opens
/// through the cache (a power of two from 4096 to 65536), instead of the
/// choice of [`page_sizes`]; for timing one against the other.
pub(crate) fn page_size_override() -> Result<Option<usize>, Exit> {
    crate::stream::page_size_from_env()
        .map_err(|v| fatal(&format!("invalid PAGE_CACHE_PAGE_SIZE: {}", quote_bytes(v.as_bytes()))))
}

/// The page sizes of the input and of the output, for a cache of
/// `capacity` bytes: [`crate::stream::stream_page_size`] pages on both sides (one lookup,
/// one reference and one LRU entry per 64 KiB; 1 GiB hot in the kernel's
/// cache, medians of interleaved runs: `of=/dev/null bs=1M` 280 ms against
/// 367 ms with 4 KiB pages; into a new file, against 4 KiB output pages:
/// `bs=1M` 329 against 359 ms, `ibs=1M obs=1M` 498 against 574 ms,
/// 512-byte records 0.94 against 2.1 s), except with 4 KiB pages:
/// - when records go page to page into a cached output (`copy_from`, see
///   `splice_record`) at offsets that agree modulo 4 KiB but not modulo
///   the large page: only pages of one size, at offsets aligned to it,
///   move between files;
/// - with `oflag=append`, whose output offset is the output's length.
///
/// When the input is the output, both are one file: one page size.
pub(crate) fn page_sizes(opts: &Opts, capacity: usize) -> (usize, usize) {
    let stream = crate::stream::stream_page_size(capacity);
    let (Some(_), Some(_)) = (&opts.input, &opts.output) else {
        return (stream, stream);
    };
    if opts.oflag.append {
        return (PAGE_SIZE, PAGE_SIZE);
    }
    let splices = capacity >= SPLICE_MIN_CACHE && !opts.two_buffers() && !opts.conv.sync && !opts.conv.sparse;
    if !splices || opts.ibs < PAGE_SIZE {
        return (stream, stream);
    }
    let skip = opts.skip_records.checked_mul(opts.ibs as u64).and_then(|s| s.checked_add(opts.skip_bytes));
    let seek = opts.seek_records.checked_mul(opts.obs as u64).and_then(|s| s.checked_add(opts.seek_bytes));
    match (skip, seek) {
        (Some(skip), Some(seek))
            if skip % stream as u64 != seek % stream as u64 && skip % PAGE_SIZE as u64 == seek % PAGE_SIZE as u64 =>
        {
            (PAGE_SIZE, PAGE_SIZE)
        }
        _ => (stream, stream),
    }
}

fn get_cache(cache: &mut Option<PageCache>) -> io::Result<&PageCache> {
    if cache.is_none() {
        let capacity = cache_capacity().map_err(|_| os_err(EINVAL))?;
        *cache = Some(PageCache::builder().capacity(capacity).readahead_threads(0).build()?);
    }
    cache.as_ref().ok_or_else(|| os_err(EINVAL))
}

pub(crate) fn alloc_buffer(size: usize, what: &str) -> Result<Vec<u8>, Exit> {
    // Check that the allocation can succeed, then allocate zeroed memory
    // (untouched pages for large buffers, like coreutils' malloc).
    let mut probe: Vec<u8> = Vec::new();
    if probe.try_reserve_exact(size).is_err() {
        return Err(fatal(&format!(
            "memory exhausted by {what} buffer of size {size} bytes ({})",
            human(size as u64, 1024)
        )));
    }
    drop(probe);
    Ok(vec![0u8; size])
}

pub(crate) fn open_input(path: &OsStr, cache: &mut Option<PageCache>, page_size: usize) -> io::Result<Input> {
    let file = File::open(path)?;
    if file.metadata()?.file_type().is_file() {
        drop(file);
        let mut read = OpenOptions::new();
        read.read(true);
        let cached = get_cache(cache)?.open_with_page_size(Path::new(path), &read, page_size)?;
        Ok(Input::Cached { file: cached, pos: 0 })
    } else {
        Ok(Input::Plain(file))
    }
}

pub(crate) fn open_output(
    path: &OsStr,
    opts: &Opts,
    cache: &mut Option<PageCache>,
    page_size: usize,
) -> io::Result<Output> {
    let regular_or_new = match std::fs::metadata(path) {
        Ok(m) => m.file_type().is_file(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(_) => false,
    };
    let mut oo = OpenOptions::new();
    oo.write(true);
    if opts.conv.excl {
        oo.create_new(true);
    } else if !opts.conv.nocreat {
        oo.create(true);
    }
    if regular_or_new {
        // Truncation is done with set_len below; O_APPEND is emulated (a
        // positioned write on an O_APPEND descriptor would append anyway).
        let file = get_cache(cache)?.open_with_page_size(Path::new(path), &oo, page_size)?;
        // Only a file with something in it: coreutils truncates with
        // O_TRUNC, which leaves a new file alone, and an ftruncate to 0 makes
        // ext4 start writing the file back when it is closed (auto_da_alloc):
        // 2.9% of dd's time, and disk I/O started at exit.
        if opts.seek_records == 0 && !opts.conv.notrunc && !file.is_empty() {
            file.set_len(0)?;
        }
        let pos = if opts.oflag.append { file.len() } else { 0 };
        Ok(Output::Cached { file, pos, append: opts.oflag.append })
    } else {
        if opts.seek_records == 0 && !opts.conv.notrunc && !opts.oflag.append {
            oo.truncate(true);
        }
        oo.append(opts.oflag.append);
        let file = if opts.seek_records != 0 {
            let mut rw = oo.clone();
            rw.read(true);
            rw.open(path).or_else(|_| oo.open(path))?
        } else {
            oo.open(path)?
        };
        Ok(Output::Plain { file, append: false })
    }
}
