//! `dd [OPERAND]...`: coreutils `dd`, with regular files going through a
//! user-space [`PageCache`].
//!
//! Operands: `if=`, `of=`, `bs=`, `ibs=`, `obs=`, `cbs=` (accepted, unused),
//! `count=`, `skip=` (`iseek=`), `seek=` (`oseek=`), `conv=` (notrunc, sync,
//! noerror, fsync, fdatasync, excl, nocreat, lcase, ucase, swab, sparse),
//! `iflag=`/`oflag=` (append, fullblock, count_bytes, skip_bytes, seek_bytes;
//! direct, dsync, sync, noatime, noctty, nocache and nonblock are accepted
//! and have no effect) and `status=` (none, noxfer, progress). Numbers take
//! the coreutils suffixes (`c`, `w`, `b`, `kB`, `K`, `KiB`, `MB`, `M`, ...,
//! `x` products, and a trailing `B` on `count`/`skip`/`seek` meaning bytes).
//! The options `--help` and `--version` print the usage or the version and
//! exit 0 wherever they stand before `--`, as GNU dd's do.
//!
//! Regular files are read with `CachedFile::read_at` and written with
//! `CachedFile::write_all_at`; a record from one cached file to another with
//! `bs=` and no conversion goes with `CachedFile::copy_from` instead, whole
//! pages moving from the input's cache to the output's without a copy.
//! Standard input/output and other files (pipes, devices) use plain reads
//! and writes. Record counting, padding, truncation,
//! seeking and messages follow coreutils 9.1. The page cache capacity comes
//! from the `PAGE_CACHE_BYTES` environment variable (default 64 MiB). A
//! regular input is read, and a regular output written, with 64 KiB pages
//! (smaller in a cache of under 16 MiB, 4 KiB under 8 MiB) unless 4 KiB
//! pages serve them better (`files::page_sizes` says when);
//! `PAGE_CACHE_PAGE_SIZE` (4096 to 65536, a power of two) sets both.
//!
//! The code is split by what it does: `operands` parses the command line
//! (with `numbers` for the numeric operands), `files` opens and drives the
//! input and output, `copy` is the copy loop, `report` prints the records
//! and progress lines, and `messages` holds the diagnostics helpers.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Instant;

use page_cache::PageCache;

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

mod copy;
mod files;
mod messages;
mod numbers;
mod operands;
mod report;
#[path = "../shared/stream.rs"]
mod stream;

use copy::{Copier, SPLICE_MIN_CACHE};
use files::{
    alloc_buffer, cache_capacity, dup_stdio, open_input, open_output, page_size_override, page_sizes, Input, Output,
};
use messages::{fatal, quoteaf, quotef, reason, Exit};
use operands::{parse_args, Opts};
use report::Stats;

const INTMAX: u64 = i64::MAX as u64;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
const ESPIPE: i32 = 29;
const ENOSYS: i32 = 38;
const EOVERFLOW: i32 = 75;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(code) | Err(Exit(code)) => ExitCode::from(code),
    }
}

fn run(args: &[OsString]) -> Result<u8, Exit> {
    let opts = parse_args(args)?;
    // Declared first so that it is dropped last, after the files: dropping
    // the cache writes back dirty pages.
    let mut cache: Option<PageCache> = None;
    let capacity = cache_capacity()?;
    let (in_page_size, out_page_size) = match page_size_override()? {
        Some(ps) => (ps, ps),
        None => page_sizes(&opts, capacity),
    };

    let input_name =
        opts.input.as_ref().map_or_else(|| "standard input".to_string(), |p| p.to_string_lossy().into_owned());
    let output_name =
        opts.output.as_ref().map_or_else(|| "standard output".to_string(), |p| p.to_string_lossy().into_owned());

    // Input.
    let mut input = match &opts.input {
        None => match dup_stdio(io::stdin().as_fd()) {
            Ok(f) => Input::Plain(f),
            Err(e) => {
                return Err(fatal(&format!("{}: {}", quotef(&input_name), reason(&e))));
            }
        },
        Some(path) => open_input(path, &mut cache, in_page_size)
            .map_err(|e| fatal(&format!("failed to open {}: {}", quoteaf(&input_name), reason(&e))))?,
    };
    let (mut input_seekable, mut input_seek_errno) = (true, 0);
    let mut input_offset: Option<u64> = match input.tell() {
        Ok(o) => Some(o),
        Err(e) => {
            input_seekable = false;
            input_seek_errno = e.raw_os_error().unwrap_or(ESPIPE);
            Some(0)
        }
    };

    // Output.
    let mut exit_status = 0u8;
    let mut output = match &opts.output {
        None => match dup_stdio(io::stdout().as_fd()) {
            Ok(f) => Output::Plain { file: f, append: opts.oflag.append },
            Err(e) => {
                return Err(fatal(&format!("{}: {}", quotef(&output_name), reason(&e))));
            }
        },
        Some(path) => {
            let size = opts
                .seek_records
                .checked_mul(opts.obs as u64)
                .and_then(|s| s.checked_add(opts.seek_bytes))
                .filter(|&s| s <= INTMAX);
            if size.is_none() && !opts.conv.notrunc {
                return Err(fatal(&format!(
                    "offset too large: cannot truncate to a length of seek={} ({}-byte) blocks",
                    opts.seek_records, opts.obs
                )));
            }
            let out = open_output(path, &opts, &mut cache, out_page_size)
                .map_err(|e| fatal(&format!("failed to open {}: {}", quoteaf(&output_name), reason(&e))))?;
            if opts.seek_records != 0 && !opts.conv.notrunc {
                let size = size.unwrap_or(0);
                let res = match &out {
                    Output::Cached { file, .. } => file.set_len(size).map(|()| true),
                    Output::Plain { file, .. } => match file.set_len(size) {
                        Ok(()) => Ok(true),
                        Err(e) => match file.metadata() {
                            Ok(m) if m.file_type().is_file() || m.file_type().is_dir() => Err(e),
                            Ok(_) => Ok(false),
                            Err(e2) => Err(e2),
                        },
                    },
                };
                if let Err(e) = res {
                    errln!(
                        "dd: failed to truncate to {size} bytes in output file {}: {}",
                        quoteaf(&output_name),
                        reason(&e)
                    );
                    exit_status = 1;
                }
            }
            out
        }
    };

    let mut stats = Stats {
        r_full: 0,
        r_partial: 0,
        w_full: 0,
        w_partial: 0,
        w_bytes: 0,
        status: opts.status,
        start: Instant::now(),
        progress_len: 0,
        reported_w_bytes: None,
    };

    // An allocation failure ends dd without statistics, as in coreutils.
    let mut ibuf = alloc_buffer(opts.ibs, "input")?;
    let mut obuf = if opts.two_buffers() { alloc_buffer(opts.obs, "output")? } else { Vec::new() };

    let mut copier = Copier {
        opts: &opts,
        input_name: &input_name,
        output_name: &output_name,
        warn_partial_read: !opts.two_buffers()
            && !opts.iflag.fullblock
            && (opts.skip_records != 0
                || (0 < opts.max_records && opts.max_records < INTMAX)
                || opts.iflag.direct
                || opts.oflag.direct),
        prev_nread: 0,
        sparse: opts.conv.sparse,
        final_op_was_seek: false,
        // copy_from holds an input page while it writes an output page:
        // only with room for both and more (a cache of a frame or two
        // would fail the write for want of a frame).
        splice: cache.as_ref().is_some_and(|c| c.capacity() >= SPLICE_MIN_CACHE),
    };
    let status = copier.dd_copy(
        &mut ibuf,
        &mut obuf,
        &mut input,
        &mut output,
        &mut stats,
        &mut input_offset,
        &mut input_seekable,
        &mut input_seek_errno,
    );
    let status = match status {
        Ok(s) => s.max(exit_status),
        Err(Exit(code)) => {
            // quit(): stats, then leave (files and cache are dropped).
            stats.print();
            return Ok(code);
        }
    };
    let sync_status = synchronize_output(&opts, &mut output, &output_name);
    let status = if sync_status != 0 { sync_status } else { status };
    stats.print();
    // `output` and `input` are dropped before `cache` (reverse declaration
    // order), and dropping the cache writes back dirty pages.
    Ok(status)
}

fn synchronize_output(opts: &Opts, output: &mut Output, name: &str) -> u8 {
    let mut status = 0;
    let mut fsync = opts.conv.fsync;
    if opts.conv.fdatasync {
        if let Err(e) = output.sync_data() {
            if !matches!(e.raw_os_error(), Some(ENOSYS) | Some(EINVAL)) {
                errln!("dd: fdatasync failed for {}: {}", quoteaf(name), reason(&e));
                status = 1;
            }
            fsync = true;
        }
    }
    if fsync {
        if let Err(e) = output.sync_all() {
            errln!("dd: fsync failed for {}: {}", quoteaf(name), reason(&e));
            return 1;
        }
    }
    status
}
