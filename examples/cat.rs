//! `cat [--cache-size=BYTES] [FILE]...`: concatenate files to standard output
//! through one [`PageCache`].
//!
//! Regular files are walked a batch of pages at a time with
//! `mapping().read_pages(..)` and each page's bytes are written straight
//! from the cached page to an unbuffered standard output: no intermediate
//! copy buffer. On two or more cores a helper thread fills the file ahead
//! of the writer with `CachedFile::readahead` (see `copy_cached`). Standard input
//! (`-` or no operand) and files that are not regular (pipes, character
//! devices, directories) are streamed with plain reads and writes.
//!
//! The cache capacity comes from `--cache-size=BYTES`, else from the
//! `PAGE_CACHE_BYTES` environment variable, else 8 MiB. `BYTES` may carry a
//! binary suffix: `K`, `M`, `G` (also `KiB`, `MiB`, `GiB`). Files are read
//! with large pages in a cache of 8 MiB or more (32 KiB by default; see
//! `stream_page_size`), else with 4 KiB pages; `PAGE_CACHE_PAGE_SIZE`
//! (4096 to 65536, a power of two) sets the page size.
//!
//! Errors are reported like coreutils `cat`: `cat: NAME: reason` on standard
//! error, the remaining operands are still copied, and the exit status is 1.
//! A broken pipe on standard output ends the program quietly with status 1.
//!
//! `--help` and `--version` print the usage or the version and exit 0, as
//! options anywhere before `--` (coreutils' getopt handling); after `--`
//! they are file names.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use page_cache::{CachedFile, PageCache};

#[path = "shared/stream.rs"]
mod stream;

/// `eprintln!` that never panics (a closed or broken standard error is
/// ignored).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Small enough that the frames cat streams through stay in the CPU's
/// caches between the read that fills them and the write that empties them
/// (`cat FILE > file` with 4 KiB pages: 0.52 s of system time per GiB at
/// 4 MiB, 0.77 s at 16 MiB, in one hyperfine run of ten), and large enough
/// for 256 pages of 32 KiB (`stream_page_size`). With 4 KiB pages 8 MiB
/// times as 4 MiB did (medians of 11 and 15 interleaved runs, 1 GiB hot:
/// 267 against 272 ms into a file, 138 against 140 ms to /dev/null).
const DEFAULT_CACHE_BYTES: usize = 8 << 20;
const STREAM_BUF: usize = 128 * 1024;

/// Why a copy stopped.
enum CopyError {
    /// Reading the input failed: report it, go on with the next operand.
    Read(io::Error),
    /// Writing standard output failed: stop everything.
    Write(io::Error),
}

fn main() -> ExitCode {
    ExitCode::from(run())
}

fn run() -> u8 {
    let mut operands: Vec<OsString> = Vec::new();
    let mut cache_bytes: Option<usize> = None;

    let mut options_done = false;
    for arg in std::env::args_os().skip(1) {
        let bytes = arg.as_encoded_bytes();
        if options_done || bytes.len() < 2 || bytes[0] != b'-' {
            operands.push(arg);
            continue;
        }
        if bytes == b"--" {
            options_done = true;
        } else if let Some(value) = bytes.strip_prefix(b"--cache-size=") {
            let value = OsStr::from_bytes(value);
            match parse_size(value) {
                Some(n) => cache_bytes = Some(n),
                None => {
                    errln!("cat: invalid cache size: {}", quote(value));
                    return 1;
                }
            }
        } else if bytes == b"--help" {
            outln!(
                "Usage: cat [--cache-size=BYTES] [-u] [FILE]...\n\
                 Concatenate FILE(s) to standard output through a user-space page cache.\n\n\
                 With no FILE, or when FILE is -, read standard input.\n\n\
                 \x20 --cache-size=BYTES  page cache capacity (default: $PAGE_CACHE_BYTES, else 8M)\n\
                 \x20 -u                  (ignored)\n\
                 \x20 --help              display this help and exit\n\
                 \x20 --version           output version information and exit"
            );
            return 0;
        } else if bytes == b"--version" {
            outln!("cat (page-cache) {}", env!("CARGO_PKG_VERSION"));
            return 0;
        } else if bytes.starts_with(b"--help=") || bytes.starts_with(b"--version=") {
            let name = bytes.split(|&b| b == b'=').next().unwrap_or_default();
            errln!("cat: option {} doesn't allow an argument", quote(OsStr::from_bytes(name)));
            errln!("Try 'cat --help' for more information.");
            return 1;
        } else if bytes.starts_with(b"--") {
            errln!("cat: unrecognized option {}", quote(&arg));
            errln!("Try 'cat --help' for more information.");
            return 1;
        } else {
            // Short options: only -u (unbuffered, which this cat always is).
            if let Some(&c) = bytes[1..].iter().find(|&&c| c != b'u') {
                errln!("cat: invalid option -- '{}'", char::from(c));
                errln!("Try 'cat --help' for more information.");
                return 1;
            }
        }
    }
    // After the options, so that `--help` and `--version` answer whatever
    // the environment holds; `--cache-size` overrides it.
    if let Some(v) = std::env::var_os("PAGE_CACHE_BYTES") {
        match parse_size(&v) {
            Some(n) => cache_bytes = cache_bytes.or(Some(n)),
            None => {
                errln!("cat: invalid PAGE_CACHE_BYTES: {}", quote(&v));
                return 1;
            }
        }
    }
    let page_size = match stream::page_size_from_env() {
        Ok(p) => p,
        Err(v) => {
            errln!("cat: invalid PAGE_CACHE_PAGE_SIZE: {}", quote(&v));
            return 1;
        }
    };
    if operands.is_empty() {
        operands.push(OsString::from("-"));
    }

    // Standard output, unbuffered: a File on a duplicate of descriptor 1.
    let mut out = match io::stdout().as_fd().try_clone_to_owned().map(File::from) {
        Ok(f) => f,
        Err(e) => {
            errln!("cat: write error: {}", reason(&e));
            return 1;
        }
    };
    let out_meta = out.metadata().ok();
    let out_id = out_meta.as_ref().filter(|m| m.file_type().is_file()).map(|m| (m.dev(), m.ino()));
    if out_meta.is_some_and(|m| m.file_type().is_fifo()) {
        grow_pipe(&out);
    }

    let capacity = cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
    let mut cache: Option<PageCache> = None;
    let mut status = 0u8;

    for name in &operands {
        let shown = name.to_string_lossy();
        let result = if name == "-" {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            if let (Some(out_id), Ok(Some((in_id, in_len)))) = (out_id, stdin_regular_id(&stdin)) {
                if out_id == in_id && in_len > 0 {
                    errln!("cat: -: input file is output file");
                    status = 1;
                    continue;
                }
            }
            stream(&mut input, &mut out)
        } else {
            let file = match File::open(name) {
                Ok(f) => f,
                Err(e) => {
                    errln!("cat: {}: {}", shown, reason(&e));
                    status = 1;
                    continue;
                }
            };
            let meta = match file.metadata() {
                Ok(m) => m,
                Err(e) => {
                    errln!("cat: {}: {}", shown, reason(&e));
                    status = 1;
                    continue;
                }
            };
            if meta.file_type().is_file() {
                if out_id == Some((meta.dev(), meta.ino())) && meta.len() > 0 {
                    errln!("cat: {}: input file is output file", shown);
                    status = 1;
                    continue;
                }
                drop(file);
                if cache.is_none() {
                    match PageCache::builder().capacity(capacity).readahead_threads(0).build() {
                        Ok(c) => cache = Some(c),
                        Err(e) => {
                            errln!("cat: cannot create a page cache of {capacity} bytes: {e}");
                            return 1;
                        }
                    }
                }
                let Some(c) = cache.as_ref() else {
                    return 1;
                };
                let page_size = page_size.unwrap_or_else(|| stream::stream_page_size(c.capacity()));
                match c.open_with_page_size(name, &read_only(), page_size) {
                    Ok(cached) => copy_cached(&cached, &mut out, c.capacity() / page_size),
                    Err(e) => Err(CopyError::Read(e)),
                }
            } else {
                let mut file = file;
                stream(&mut file, &mut out)
            }
        };
        match result {
            Ok(()) => {}
            Err(CopyError::Read(e)) => {
                errln!("cat: {}: {}", shown, reason(&e));
                status = 1;
            }
            Err(CopyError::Write(e)) => {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    errln!("cat: write error: {}", reason(&e));
                }
                return 1;
            }
        }
    }
    status
}

/// (dev, ino) and size of standard input when it is a regular file.
fn stdin_regular_id(stdin: &io::Stdin) -> io::Result<Option<((u64, u64), u64)>> {
    let fd = stdin.as_fd().try_clone_to_owned()?;
    let meta = File::from(fd).metadata()?;
    Ok(meta.file_type().is_file().then(|| ((meta.dev(), meta.ino()), meta.len())))
}

/// Asks for a 1 MiB pipe buffer on standard output (`F_SETPIPE_SZ`): with
/// the default 64 KiB the reader and cat take turns every 16 pages, and on
/// two cores each turn is a cross-core wakeup. Refused (an unprivileged
/// process above `/proc/sys/fs/pipe-max-size`), the pipe stays as it was.
fn grow_pipe(out: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own, with an integer argument; it
    // touches no memory of ours.
    let _ = unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Pages written per `writev` call.
const BATCH: usize = 64;

fn read_only() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    o
}

/// Write a regular file's pages straight from the page cache, each page
/// borrowed in place, up to `BATCH` pages per `writev`.
///
/// On two or more cores a helper thread fills the file ahead of the writer
/// with [`CachedFile::readahead`], a window at a time, and this thread
/// fills a window too whenever the next one is still unclaimed: to
/// `/dev/null` both cores copy from the kernel, into a file or a pipe the
/// helper reads while this thread writes. Windows are claimed from one
/// counter, so each is read once; the helper stays at most half the cache
/// ahead of the writer (and waits when it gets there), so what it reads is
/// still cached when the writer comes to it.
fn copy_cached(file: &CachedFile, out: &mut File, cache_pages: usize) -> Result<(), CopyError> {
    let window = (cache_pages / 16).max(1) as u64;
    let depth = (cache_pages as u64 / 2 / window).max(2);
    let windows = file.len().div_ceil(file.mapping().page_size() as u64).div_ceil(window);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if windows < 4 || cores < 2 || cache_pages < 64 {
        return write_pages(file, out, cache_pages, 0, u64::MAX);
    }
    let ahead = Ahead {
        window,
        depth,
        windows,
        next: AtomicU64::new(0),
        written: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    std::thread::scope(|s| {
        let helper = s.spawn(|| ahead.help(file));
        let result = ahead.lead(file, out, cache_pages, helper.thread());
        // Release: the helper's Acquire load sees it and exits.
        ahead.stop.store(true, Ordering::Release);
        helper.thread().unpark();
        result
    })
}

/// The windows shared by the writer and its helper.
struct Ahead {
    /// Pages per window.
    window: u64,
    /// How many windows past the one being written may be claimed.
    depth: u64,
    /// Windows in the file.
    windows: u64,
    /// The first window nobody has claimed.
    next: AtomicU64,
    /// Windows written so far.
    written: AtomicU64,
    /// The writer is done (or failed).
    stop: AtomicBool,
}

impl Ahead {
    /// Claims window `w` if it is still the next unclaimed one.
    fn claim(&self, w: u64) -> bool {
        // Relaxed: the counter only hands out window numbers; the pages a
        // window brings in are published by the page cache itself.
        self.next.compare_exchange(w, w + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    fn fill(&self, file: &CachedFile, w: u64) {
        let bytes = self.window * file.mapping().page_size() as u64;
        // A failed read leaves those pages out; the writer's own read of
        // them reports the error.
        let _ = file.readahead(w * bytes, bytes);
    }

    /// The helper thread: claims and fills windows up to `depth` past the
    /// writer, sleeping when it is that far ahead.
    fn help(&self, file: &CachedFile) {
        // Acquire: pairs with the Release store of `stop`.
        while !self.stop.load(Ordering::Acquire) {
            let w = self.next.load(Ordering::Relaxed);
            if w >= self.windows {
                return;
            }
            if self.too_far_ahead(w) {
                self.wait_for_room(w);
                continue;
            }
            if self.claim(w) {
                self.fill(file, w);
            }
        }
    }

    /// Whether window `w` is more than `depth` past the writer.
    fn too_far_ahead(&self, w: u64) -> bool {
        // Relaxed: a flow-control hint; a stale value only waits early,
        // and every store is followed by an unpark.
        w >= self.written.load(Ordering::Relaxed) + self.depth
    }

    /// Waits until window `w` is within `depth` of the writer: spins for
    /// up to 200 us (the writer usually finishes a window within that),
    /// then parks. Parking at once cost a futex wake per window, and
    /// `cat > file` varied widely: in one interleaved run of 15 its median
    /// was 1.15 s (min 0.82 s) against 0.87 s (min 0.84 s) with the spin.
    fn wait_for_room(&self, w: u64) {
        let start = std::time::Instant::now();
        while self.too_far_ahead(w) {
            if start.elapsed() >= std::time::Duration::from_micros(200) {
                std::thread::park();
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// The writer: before writing window `c`, fills window `c + 1` itself
    /// if the helper has not claimed it yet.
    fn lead(
        &self,
        file: &CachedFile,
        out: &mut File,
        cache_pages: usize,
        helper: &std::thread::Thread,
    ) -> Result<(), CopyError> {
        for c in 0..self.windows {
            loop {
                let n = self.next.load(Ordering::Relaxed);
                if n > c + 1 || n >= self.windows {
                    break;
                }
                if self.claim(n) {
                    self.fill(file, n);
                }
            }
            write_pages(file, out, cache_pages, c * self.window, (c + 1) * self.window)?;
            // Relaxed: see `too_far_ahead`; the unpark wakes a helper that parked.
            self.written.store(c + 1, Ordering::Relaxed);
            helper.unpark();
        }
        Ok(())
    }
}

/// Writes pages `[first, end)` (clipped at end of file) to `out`: up to
/// `BATCH` pages at a time (at most a quarter of a small cache, so
/// readahead and reclaim keep room), each borrowed in place, in one `writev`.
fn write_pages(file: &CachedFile, out: &mut File, cache_pages: usize, first: u64, end: u64) -> Result<(), CopyError> {
    let batch = (cache_pages / 4).clamp(1, BATCH);
    let page_size = file.mapping().page_size() as u64;
    let mut index = first;
    let mut pages = Vec::with_capacity(BATCH);
    loop {
        let len = file.len();
        let first = index;
        let want = (batch as u64).min(end.saturating_sub(index)) as usize;
        file.mapping().read_pages(index, want, &mut pages).map_err(CopyError::Read)?;
        index += pages.len() as u64;
        if pages.is_empty() {
            return Ok(());
        }
        let guards: Vec<_> = pages.iter().map(|p| p.read()).collect();
        let mut slices: Vec<IoSlice<'_>> = guards
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let start = (first + i as u64) * page_size;
                IoSlice::new(&data[..(len - start).min(page_size) as usize])
            })
            .collect();
        write_all_vectored(out, &mut slices)?;
        drop(guards);
        pages.clear();
    }
}

fn write_all_vectored(out: &mut File, mut slices: &mut [IoSlice<'_>]) -> Result<(), CopyError> {
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(CopyError::Write(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CopyError::Write(e)),
        }
    }
    Ok(())
}

/// Stream a non-regular input (or standard input) with plain reads.
fn stream(input: &mut dyn Read, out: &mut File) -> Result<(), CopyError> {
    let mut buf = vec![0u8; STREAM_BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        write_all(out, &buf[..n])?;
    }
}

fn write_all(out: &mut File, data: &[u8]) -> Result<(), CopyError> {
    out.write_all(data).map_err(CopyError::Write)
}

/// Parse a cache size: digits with an optional K/M/G (KiB/MiB/GiB) suffix.
fn parse_size(s: &OsStr) -> Option<usize> {
    let s = s.to_str()?;
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: usize = s[..digits].parse().ok()?;
    let shift = match &s[digits..] {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1usize.checked_shl(shift)?)
}

/// The error's text as coreutils prints it: strerror without Rust's
/// " (os error N)" suffix.
fn reason(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => return e.to_string(),
    };
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}
