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
//!
//! Regular files are read with `CachedFile::read_at` and written with
//! `CachedFile::write_all_at`; a record from one cached file to another with
//! `bs=` and no conversion goes with `CachedFile::copy_from` instead, whole
//! pages moving from the input's cache to the output's without a copy.
//! Standard input/output and other files (pipes, devices) use plain reads
//! and writes. Record counting, padding, truncation,
//! seeking and messages follow coreutils 9.1. The page cache capacity comes
//! from the `PAGE_CACHE_BYTES` environment variable (default 64 MiB).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use page_cache::{CachedFile, PageCache};

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

const DEFAULT_BLOCKSIZE: usize = 512;
const DEFAULT_CACHE_BYTES: usize = 64 << 20;
const INTMAX: u64 = i64::MAX as u64;
const EINVAL: i32 = 22;
const ENOSPC: i32 = 28;
const ESPIPE: i32 = 29;
const ENOSYS: i32 = 38;
const EOVERFLOW: i32 = 75;

// ---------------------------------------------------------------- operands

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Default,
    Noxfer,
    None,
    Progress,
}

#[derive(Default, Debug)]
struct Conv {
    notrunc: bool,
    sync: bool,
    noerror: bool,
    fsync: bool,
    fdatasync: bool,
    excl: bool,
    nocreat: bool,
    lcase: bool,
    ucase: bool,
    swab: bool,
    sparse: bool,
}

#[derive(Default, Debug, Clone, Copy)]
struct Flags {
    append: bool,
    fullblock: bool,
    count_bytes: bool,
    skip_bytes: bool,
    seek_bytes: bool,
    direct: bool,
    nocache: bool,
}

#[derive(Debug)]
struct Opts {
    input: Option<OsString>,
    output: Option<OsString>,
    ibs: usize,
    obs: usize,
    /// `bs=` given: every input block is written as one output block.
    same_buffer: bool,
    skip_records: u64,
    skip_bytes: u64,
    max_records: u64,
    max_bytes: u64,
    seek_records: u64,
    seek_bytes: u64,
    conv: Conv,
    iflag: Flags,
    oflag: Flags,
    status: Status,
}

/// Leave `dd` with this exit status (messages already printed).
struct Exit(u8);

fn usage_error(msg: &str) -> Exit {
    errln!("dd: {msg}");
    errln!("Try 'dd --help' for more information.");
    Exit(1)
}

fn fatal(msg: &str) -> Exit {
    errln!("dd: {msg}");
    Exit(1)
}

fn operand_is<'a>(operand: &'a [u8], name: &str) -> Option<&'a [u8]> {
    operand.strip_prefix(name.as_bytes()).and_then(|rest| rest.strip_prefix(b"="))
}

/// `parse_symbols` of coreutils: a comma list; `exclusive` keeps the last.
fn parse_symbols<T: Copy>(val: &[u8], table: &[(&str, T)], what: &str, mut apply: impl FnMut(T)) -> Result<(), Exit> {
    for word in val.split(|&b| b == b',') {
        match table.iter().find(|(name, _)| name.as_bytes() == word) {
            Some(&(_, v)) => apply(v),
            None => return Err(usage_error(&format!("{what}: {}", quote_bytes(word)))),
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum ConvSym {
    Notrunc,
    Sync,
    Noerror,
    Fsync,
    Fdatasync,
    Excl,
    Nocreat,
    Lcase,
    Ucase,
    Swab,
    Sparse,
    Unsupported(&'static str),
}

const CONVERSIONS: &[(&str, ConvSym)] = &[
    ("ascii", ConvSym::Unsupported("ascii")),
    ("ebcdic", ConvSym::Unsupported("ebcdic")),
    ("ibm", ConvSym::Unsupported("ibm")),
    ("block", ConvSym::Unsupported("block")),
    ("unblock", ConvSym::Unsupported("unblock")),
    ("lcase", ConvSym::Lcase),
    ("ucase", ConvSym::Ucase),
    ("sparse", ConvSym::Sparse),
    ("swab", ConvSym::Swab),
    ("sync", ConvSym::Sync),
    ("noerror", ConvSym::Noerror),
    ("notrunc", ConvSym::Notrunc),
    ("excl", ConvSym::Excl),
    ("nocreat", ConvSym::Nocreat),
    ("fdatasync", ConvSym::Fdatasync),
    ("fsync", ConvSym::Fsync),
];

#[derive(Clone, Copy)]
enum FlagSym {
    Append,
    Fullblock,
    CountBytes,
    SkipBytes,
    SeekBytes,
    Direct,
    Nocache,
    NoEffect,
    Unsupported(&'static str),
}

const FLAGS: &[(&str, FlagSym)] = &[
    ("append", FlagSym::Append),
    ("direct", FlagSym::Direct),
    ("directory", FlagSym::Unsupported("directory")),
    ("dsync", FlagSym::NoEffect),
    ("sync", FlagSym::NoEffect),
    ("fullblock", FlagSym::Fullblock),
    ("noatime", FlagSym::NoEffect),
    ("nocache", FlagSym::Nocache),
    ("noctty", FlagSym::NoEffect),
    ("nofollow", FlagSym::Unsupported("nofollow")),
    ("nolinks", FlagSym::Unsupported("nolinks")),
    ("nonblock", FlagSym::NoEffect),
    ("count_bytes", FlagSym::CountBytes),
    ("skip_bytes", FlagSym::SkipBytes),
    ("seek_bytes", FlagSym::SeekBytes),
];

const STATUSES: &[(&str, Status)] =
    &[("none", Status::None), ("noxfer", Status::Noxfer), ("progress", Status::Progress)];

fn apply_flag(flags: &mut Flags, sym: FlagSym, unsupported: &mut Option<&'static str>) {
    match sym {
        FlagSym::Append => flags.append = true,
        FlagSym::Fullblock => flags.fullblock = true,
        FlagSym::CountBytes => flags.count_bytes = true,
        FlagSym::SkipBytes => flags.skip_bytes = true,
        FlagSym::SeekBytes => flags.seek_bytes = true,
        FlagSym::Direct => flags.direct = true,
        FlagSym::Nocache => flags.nocache = true,
        FlagSym::NoEffect => {}
        FlagSym::Unsupported(name) => *unsupported = unsupported.or(Some(name)),
    }
}

fn parse_args(args: &[OsString]) -> Result<Opts, Exit> {
    let mut input = None;
    let mut output = None;
    let mut ibs = 0usize;
    let mut obs = 0usize;
    let mut bs = 0usize;
    let (mut skip, mut seek, mut count) = (0u64, 0u64, INTMAX);
    let (mut skip_b, mut seek_b, mut count_b) = (false, false, false);
    let mut conv = Conv::default();
    let mut iflag = Flags::default();
    let mut oflag = Flags::default();
    let mut status = Status::Default;
    let mut unsupported: Option<&'static str> = None;

    let mut options_done = false;
    for arg in args {
        let operand = arg.as_bytes();
        if !options_done && operand.len() > 1 && operand[0] == b'-' {
            match operand {
                b"--" => {
                    options_done = true;
                    continue;
                }
                b"--help" => {
                    print_help();
                    return Err(Exit(0));
                }
                b"--version" => {
                    outln!("dd (page-cache example) {}", env!("CARGO_PKG_VERSION"));
                    return Err(Exit(0));
                }
                _ if operand.starts_with(b"--") => {
                    return Err(usage_error(&format!("unrecognized option {}", quote_bytes(operand))));
                }
                _ => {
                    return Err(usage_error(&format!("invalid option -- '{}'", char::from(operand[1]))));
                }
            }
        }
        if !operand.contains(&b'=') {
            return Err(usage_error(&format!("unrecognized operand {}", quote_bytes(operand))));
        }
        if let Some(v) = operand_is(operand, "if") {
            input = Some(OsStr::from_bytes(v).to_os_string());
        } else if let Some(v) = operand_is(operand, "of") {
            output = Some(OsStr::from_bytes(v).to_os_string());
        } else if let Some(v) = operand_is(operand, "conv") {
            parse_symbols(v, CONVERSIONS, "invalid conversion", |sym| match sym {
                ConvSym::Notrunc => conv.notrunc = true,
                ConvSym::Sync => conv.sync = true,
                ConvSym::Noerror => conv.noerror = true,
                ConvSym::Fsync => conv.fsync = true,
                ConvSym::Fdatasync => conv.fdatasync = true,
                ConvSym::Excl => conv.excl = true,
                ConvSym::Nocreat => conv.nocreat = true,
                ConvSym::Lcase => conv.lcase = true,
                ConvSym::Ucase => conv.ucase = true,
                ConvSym::Swab => conv.swab = true,
                ConvSym::Sparse => conv.sparse = true,
                ConvSym::Unsupported(name) => unsupported = unsupported.or(Some(name)),
            })?;
        } else if let Some(v) = operand_is(operand, "iflag") {
            parse_symbols(v, FLAGS, "invalid input flag", |sym| apply_flag(&mut iflag, sym, &mut unsupported))?;
        } else if let Some(v) = operand_is(operand, "oflag") {
            parse_symbols(v, FLAGS, "invalid output flag", |sym| apply_flag(&mut oflag, sym, &mut unsupported))?;
        } else if let Some(v) = operand_is(operand, "status") {
            parse_symbols(v, STATUSES, "invalid status level", |s| status = s)?;
        } else {
            let val = operand.splitn(2, |&b| b == b'=').nth(1).unwrap_or_default();
            let (n, err) = parse_integer(val);
            let has_b = val.contains(&b'B');
            let max_blocksize = INTMAX - 1;
            let (n_min, n_max) = if operand_is(operand, "ibs").is_some() {
                ibs = n as usize;
                (1, max_blocksize)
            } else if operand_is(operand, "obs").is_some() {
                obs = n as usize;
                (1, max_blocksize)
            } else if operand_is(operand, "bs").is_some() {
                bs = n as usize;
                (1, max_blocksize)
            } else if operand_is(operand, "cbs").is_some() {
                (1, max_blocksize)
            } else if operand_is(operand, "skip").is_some() || operand_is(operand, "iseek").is_some() {
                skip = n;
                skip_b = has_b;
                (0, INTMAX)
            } else if operand_is(operand, "seek").is_some() || operand_is(operand, "oseek").is_some() {
                seek = n;
                seek_b = has_b;
                (0, INTMAX)
            } else if operand_is(operand, "count").is_some() {
                count = n;
                count_b = has_b;
                (0, INTMAX)
            } else {
                return Err(usage_error(&format!("unrecognized operand {}", quote_bytes(operand))));
            };
            let err = if err != NumErr::Ok {
                err
            } else if n < n_min {
                NumErr::Invalid
            } else if n > n_max {
                NumErr::Overflow
            } else {
                NumErr::Ok
            };
            match err {
                NumErr::Ok => {}
                NumErr::Overflow => {
                    return Err(fatal(&format!(
                        "invalid number: {}: Value too large for defined data type",
                        quote_bytes(val)
                    )))
                }
                NumErr::Invalid => return Err(fatal(&format!("invalid number: {}", quote_bytes(val)))),
            }
        }
    }

    let same_buffer = bs != 0;
    if same_buffer {
        ibs = bs;
        obs = bs;
    }
    if ibs == 0 {
        ibs = DEFAULT_BLOCKSIZE;
    }
    if obs == 0 {
        obs = DEFAULT_BLOCKSIZE;
    }
    if oflag.fullblock {
        return Err(usage_error("invalid output flag: 'fullblock'"));
    }
    iflag.skip_bytes |= skip_b;
    let (skip_records, skip_bytes) =
        if iflag.skip_bytes && skip != 0 { (skip / ibs as u64, skip % ibs as u64) } else { (skip, 0) };
    iflag.count_bytes |= count_b;
    let (max_records, max_bytes) =
        if iflag.count_bytes && count != INTMAX { (count / ibs as u64, count % ibs as u64) } else { (count, 0) };
    oflag.seek_bytes |= seek_b;
    let (seek_records, seek_bytes) =
        if oflag.seek_bytes && seek != 0 { (seek / obs as u64, seek % obs as u64) } else { (seek, 0) };
    if conv.lcase && conv.ucase {
        return Err(fatal("cannot combine lcase and ucase"));
    }
    if conv.excl && conv.nocreat {
        return Err(fatal("cannot combine excl and nocreat"));
    }
    if (iflag.direct && iflag.nocache) || (oflag.direct && oflag.nocache) {
        return Err(fatal("cannot combine direct and nocache"));
    }
    if oflag.append && !conv.notrunc {
        errln!("dd: you probably want conv=notrunc with oflag=append");
    }
    if let Some(name) = unsupported {
        return Err(fatal(&format!("{} is not supported by this dd", quote_bytes(name.as_bytes()))));
    }
    Ok(Opts {
        input,
        output,
        ibs,
        obs,
        same_buffer,
        skip_records,
        skip_bytes,
        max_records,
        max_bytes,
        seek_records,
        seek_bytes,
        conv,
        iflag,
        oflag,
        status,
    })
}

impl Opts {
    /// coreutils' C_TWOBUFS: input blocks are gathered into obs-sized
    /// output blocks (no bs=, or a conversion that needs it).
    fn two_buffers(&self) -> bool {
        !self.same_buffer || self.conv.lcase || self.conv.ucase || self.conv.swab
    }
}

fn print_help() {
    outln!(
        "Usage: dd [OPERAND]...\n\
         Copy a file, converting and formatting according to the operands,\n\
         with regular files going through a user-space page cache.\n\n\
         \x20 bs=BYTES        read and write up to BYTES bytes at a time (default: 512)\n\
         \x20 ibs=BYTES       read up to BYTES bytes at a time (default: 512)\n\
         \x20 obs=BYTES       write BYTES bytes at a time (default: 512)\n\
         \x20 count=N         copy only N input blocks\n\
         \x20 skip=N          skip N ibs-sized input blocks\n\
         \x20 seek=N          skip N obs-sized output blocks\n\
         \x20 if=FILE         read from FILE instead of standard input\n\
         \x20 of=FILE         write to FILE instead of standard output\n\
         \x20 conv=CONVS      notrunc, sync, noerror, fsync, fdatasync, excl, nocreat,\n\
         \x20                 lcase, ucase, swab, sparse\n\
         \x20 iflag=FLAGS     fullblock, count_bytes, skip_bytes, append, ...\n\
         \x20 oflag=FLAGS     seek_bytes, append, ...\n\
         \x20 status=LEVEL    none, noxfer or progress\n\n\
         N and BYTES may be followed by: c=1, w=2, b=512, kB=1000, K=1024,\n\
         MB=1000*1000, M=1024*1024, xM=M, GB, G, T, P, E, Z, Y, R, Q;\n\
         binary prefixes can be used too: KiB=K, MiB=M, and so on.\n\
         If N ends in 'B', it counts bytes not blocks.\n\n\
         The page cache capacity is $PAGE_CACHE_BYTES (default 64 MiB)."
    );
}

// ------------------------------------------------------------------ numbers

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NumErr {
    Ok,
    Invalid,
    Overflow,
}

/// What gnulib's `xstrtoumax` reports.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StrtolErr {
    overflow: bool,
    invalid: bool,
    invalid_suffix: bool,
}

/// gnulib `xstrtoumax(s, &end, 10, &n, "bcEGkKMPQRTwYZ0")`.
fn xstrtoumax(s: &[u8]) -> (u64, usize, StrtolErr) {
    let mut err = StrtolErr { overflow: false, invalid: false, invalid_suffix: false };
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    if s.get(i) == Some(&b'-') {
        err.invalid = true;
        return (0, 0, err);
    }
    let mut j = i;
    if s.get(j) == Some(&b'+') {
        j += 1;
    }
    let digits_start = j;
    let mut tmp: u64 = 0;
    while j < s.len() && s[j].is_ascii_digit() {
        match tmp.checked_mul(10).and_then(|t| t.checked_add(u64::from(s[j] - b'0'))) {
            Some(t) => tmp = t,
            None => {
                tmp = u64::MAX;
                err.overflow = true;
            }
        }
        j += 1;
    }
    const VALID: &[u8] = b"bcEGkKMPQRTwYZ0";
    let mut p = j;
    if j == digits_start {
        // No digits: strtoumax leaves the end at the string's start.
        p = 0;
        if !s.is_empty() && VALID.contains(&s[0]) {
            tmp = 1;
        } else {
            err.invalid = true;
            return (0, 0, err);
        }
    }
    if p < s.len() {
        let c = s[p];
        if !VALID.contains(&c) {
            err.invalid_suffix = true;
            return (tmp, p, err);
        }
        let mut base: u64 = 1024;
        let mut suffix_len = 1;
        match s.get(p + 1) {
            Some(b'i') if s.get(p + 2) == Some(&b'B') => suffix_len += 2,
            Some(b'B') | Some(b'D') => {
                base = 1000;
                suffix_len += 1;
            }
            _ => {}
        }
        let power = |e: u32| -> Option<u64> { base.checked_pow(e) };
        let mult = match c {
            b'b' => Some(512),
            b'c' => Some(1),
            b'w' => Some(2),
            b'k' | b'K' => power(1),
            b'M' => power(2),
            b'G' => power(3),
            b'T' => power(4),
            b'P' => power(5),
            b'E' => power(6),
            b'Z' => power(7),
            b'Y' => power(8),
            b'R' => power(9),
            b'Q' => power(10),
            _ => {
                err.invalid_suffix = true;
                return (tmp, p, err);
            }
        };
        match mult.and_then(|m| tmp.checked_mul(m)) {
            Some(v) => tmp = v,
            None => {
                tmp = u64::MAX;
                err.overflow = true;
            }
        }
        p += suffix_len;
        if p < s.len() {
            err.invalid_suffix = true;
        }
    }
    (tmp, p, err)
}

/// coreutils dd's `parse_integer` (as of 9.1): a number with suffixes, a
/// lone trailing `B`, and one `x` product whose right side is a plain
/// suffixed number.
fn parse_integer(s: &[u8]) -> (u64, NumErr) {
    let (n, mut end, mut e) = xstrtoumax(s);
    let only_suffix = |e: &StrtolErr| e.invalid_suffix && !e.invalid;
    if only_suffix(&e) && s.get(end) == Some(&b'B') && end > 0 && s[end - 1] != b'B' {
        end += 1;
        if end == s.len() {
            e.invalid_suffix = false;
        }
    }
    if only_suffix(&e) && s.get(end) == Some(&b'x') {
        let (o, _, f) = xstrtoumax(&s[end + 1..]);
        if f.invalid || f.invalid_suffix {
            return (0, NumErr::Invalid);
        }
        return match n.checked_mul(o) {
            Some(r) if r <= INTMAX && !(r != 0 && (e.overflow || f.overflow)) => {
                if r == 0 && s.starts_with(b"0x") {
                    errln!("dd: warning: '0x' is a zero multiplier; use '00x' if that is intended");
                }
                (r, NumErr::Ok)
            }
            _ => (INTMAX, NumErr::Overflow),
        };
    }
    if e.invalid || e.invalid_suffix {
        (n, NumErr::Invalid)
    } else if e.overflow || n > INTMAX {
        (INTMAX, NumErr::Overflow)
    } else {
        (n, NumErr::Ok)
    }
}

// ----------------------------------------------------------------- messages

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

fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// `quote`/`quoteaf` of coreutils in the C locale: always single-quoted.
fn quote_bytes(s: &[u8]) -> String {
    format!("'{}'", String::from_utf8_lossy(s).replace('\'', "'\\''"))
}

fn quoteaf(s: &str) -> String {
    quote_bytes(s.as_bytes())
}

/// `quotef`: quoted only when the shell would need it.
fn quotef(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with(['#', '~'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"%+,-./:=@_^{}]".contains(&b) || b >= 0x80);
    if plain {
        s.to_string()
    } else {
        quoteaf(s)
    }
}

// -------------------------------------------------------------------- files

enum Input {
    Cached { file: CachedFile, pos: u64 },
    Plain(File),
}

enum Output {
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
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
    fn seek_cur(&mut self, off: u64) -> io::Result<u64> {
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

    fn seek_end(&mut self) -> io::Result<u64> {
        match self {
            Input::Cached { file, pos } => {
                *pos = file.len();
                Ok(*pos)
            }
            Input::Plain(file) => file.seek(SeekFrom::End(0)),
        }
    }

    fn tell(&mut self) -> io::Result<u64> {
        match self {
            Input::Cached { pos, .. } => Ok(*pos),
            Input::Plain(file) => file.stream_position(),
        }
    }

    /// The size when it is meaningful (a regular file).
    fn regular_size(&self) -> io::Result<Option<u64>> {
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
    fn write(&mut self, buf: &[u8], sparse: &mut bool, final_seek: &mut bool) -> (usize, Option<io::Error>) {
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

    fn seek_cur(&mut self, off: u64) -> io::Result<u64> {
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

    fn seek_end(&mut self) -> io::Result<u64> {
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
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
    fn extend_to_offset(&mut self) -> io::Result<Option<u64>> {
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

    fn sync_data(&mut self) -> io::Result<()> {
        match self {
            Output::Cached { file, .. } => file.sync_data(),
            Output::Plain { file, .. } => file.sync_data(),
        }
    }

    fn sync_all(&mut self) -> io::Result<()> {
        match self {
            Output::Cached { file, .. } => file.sync_all(),
            Output::Plain { file, .. } => file.sync_all(),
        }
    }
}

fn dup_stdio(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}

fn cache_capacity() -> Result<usize, Exit> {
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

fn get_cache(cache: &mut Option<PageCache>) -> io::Result<&PageCache> {
    if cache.is_none() {
        let capacity = cache_capacity().map_err(|_| os_err(EINVAL))?;
        *cache = Some(PageCache::builder().capacity(capacity).readahead_threads(0).build()?);
    }
    cache.as_ref().ok_or_else(|| os_err(EINVAL))
}

fn alloc_buffer(size: usize, what: &str) -> Result<Vec<u8>, Exit> {
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

// -------------------------------------------------------------------- stats

struct Stats {
    r_full: u64,
    r_partial: u64,
    w_full: u64,
    w_partial: u64,
    w_bytes: u64,
    status: Status,
    start: Instant,
    progress_len: usize,
    /// `w_bytes` at the last report, if any.
    reported_w_bytes: Option<u64>,
}

impl Stats {
    fn print_xfer(&mut self, progress: bool) {
        let elapsed = self.start.elapsed();
        let secs = elapsed.as_secs_f64();
        let si = human(self.w_bytes, 1000);
        let iec = human(self.w_bytes, 1024);
        let rate = if elapsed > Duration::ZERO {
            format!("{}/s", human_rate(self.w_bytes as f64 / secs))
        } else {
            "Infinity B/s".to_string()
        };
        let time = if progress { format!("{secs:.0} s") } else { format!("{} s", format_g(secs)) };
        let lacks_prefix = |s: &str| s.as_bytes().get(s.len().wrapping_sub(2)) == Some(&b' ');
        let line = if lacks_prefix(&si) {
            let unit = if self.w_bytes == 1 { "byte" } else { "bytes" };
            format!("{} {unit} copied, {time}, {rate}", self.w_bytes)
        } else if lacks_prefix(&iec) {
            format!("{} bytes ({si}) copied, {time}, {rate}", self.w_bytes)
        } else {
            format!("{} bytes ({si}, {iec}) copied, {time}, {rate}", self.w_bytes)
        };
        let mut err = io::stderr().lock();
        if progress {
            let pad = self.progress_len.saturating_sub(line.len());
            let _ = write!(err, "\r{line}{:pad$}", "");
            self.progress_len = line.len();
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.reported_w_bytes = Some(self.w_bytes);
    }

    fn print(&mut self) {
        if self.status == Status::None {
            return;
        }
        let mut err = io::stderr().lock();
        if self.progress_len > 0 {
            let _ = writeln!(err);
            self.progress_len = 0;
        }
        let _ = write!(
            err,
            "{}+{} records in\n{}+{} records out\n",
            self.r_full, self.r_partial, self.w_full, self.w_partial
        );
        drop(err);
        if self.status == Status::Noxfer {
            return;
        }
        self.print_xfer(false);
    }
}

/// gnulib `human_readable` with autoscale, round-to-nearest, a space before
/// the unit, SI prefixes and a `B` (`iB` for base 1024).
fn human(n: u64, base: u64) -> String {
    const LETTERS: &[u8] = b"\0KMGTPEZYRQ";
    let (mut amt, mut tenths, mut rounding, mut exponent) = (n, 0u64, 0u64, 0usize);
    let mut frac: Option<u64> = None;
    if base <= amt {
        loop {
            let r10 = (amt % base) * 10 + tenths;
            let r2 = (r10 % base) * 2 + (rounding >> 1);
            amt /= base;
            tenths = r10 / base;
            rounding = if r2 < base { u64::from(r2 + rounding != 0) } else { 2 + u64::from(base < r2 + rounding) };
            exponent += 1;
            if !(base <= amt && exponent < LETTERS.len() - 1) {
                break;
            }
        }
        if amt < 10 {
            if 2 < rounding + (tenths & 1) {
                tenths += 1;
                rounding = 0;
                if tenths == 10 {
                    amt += 1;
                    tenths = 0;
                }
            }
            if amt < 10 {
                frac = Some(tenths);
                tenths = 0;
                rounding = 0;
            }
        }
    }
    if 5 < tenths + u64::from(0 < rounding + (amt & 1)) {
        amt += 1;
        if amt == base && exponent < LETTERS.len() - 1 {
            exponent += 1;
            frac = Some(0);
            amt = 1;
        }
    }
    let mut s = amt.to_string();
    if let Some(t) = frac {
        s.push('.');
        s.push(char::from(b'0' + t as u8));
    }
    s.push(' ');
    if exponent > 0 {
        if base == 1000 && exponent == 1 {
            s.push('k');
        } else {
            s.push(char::from(LETTERS[exponent]));
        }
        if base == 1024 {
            s.push('i');
        }
    }
    s.push('B');
    s
}

/// The rate, as `human_readable`'s floating-point path prints it.
fn human_rate(bytes_per_s: f64) -> String {
    const LETTERS: &[&str] = &["", "k", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q"];
    let mut e = 1000.0f64;
    let mut exponent = 1;
    while e * 1000.0 <= bytes_per_s && exponent < LETTERS.len() - 1 {
        e *= 1000.0;
        exponent += 1;
    }
    let v = bytes_per_s / e;
    let mut s = format!("{v:.1}");
    if s.len() > 4 {
        s = format!("{v:.0}");
    }
    format!("{s} {}B", LETTERS[exponent])
}

/// C's `%g`.
fn format_g(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    if !x.is_finite() {
        return x.to_string();
    }
    let sci = format!("{x:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa.to_string()), exp.abs())
    } else {
        let decimals = (5 - exp) as usize;
        trim(format!("{x:.decimals$}"))
    }
}

// --------------------------------------------------------------------- main

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
    cache_capacity()?;

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
        Some(path) => open_input(path, &mut cache)
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
            let out = open_output(path, &opts, &mut cache)
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

fn open_input(path: &OsStr, cache: &mut Option<PageCache>) -> io::Result<Input> {
    let file = File::open(path)?;
    if file.metadata()?.file_type().is_file() {
        drop(file);
        let cached = get_cache(cache)?.open(Path::new(path))?;
        Ok(Input::Cached { file: cached, pos: 0 })
    } else {
        Ok(Input::Plain(file))
    }
}

fn open_output(path: &OsStr, opts: &Opts, cache: &mut Option<PageCache>) -> io::Result<Output> {
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
        let file = get_cache(cache)?.open_with(Path::new(path), &oo)?;
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

struct Copier<'a> {
    opts: &'a Opts,
    input_name: &'a str,
    output_name: &'a str,
    warn_partial_read: bool,
    prev_nread: usize,
    sparse: bool,
    final_op_was_seek: bool,
    /// Whether records may go page to page between cached files (`splice_record`).
    splice: bool,
}

/// The smallest cache with which records go page to page (`splice_record`).
const SPLICE_MIN_CACHE: usize = 1 << 20;

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
    fn dd_copy(
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
