//! The operands: `if=`, `of=`, `bs=` and the rest, `conv=`, `iflag=`,
//! `oflag=` and `status=` symbol lists, `--help`/`--version`, and the
//! checks coreutils makes once all operands are read.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::messages::{fatal, quote_bytes, usage_error, Exit};
use crate::numbers::{parse_integer, NumErr};
use crate::INTMAX;

const DEFAULT_BLOCKSIZE: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Status {
    Default,
    Noxfer,
    None,
    Progress,
}

#[derive(Default, Debug)]
pub(crate) struct Conv {
    pub(crate) notrunc: bool,
    pub(crate) sync: bool,
    pub(crate) noerror: bool,
    pub(crate) fsync: bool,
    pub(crate) fdatasync: bool,
    pub(crate) excl: bool,
    pub(crate) nocreat: bool,
    pub(crate) lcase: bool,
    pub(crate) ucase: bool,
    pub(crate) swab: bool,
    pub(crate) sparse: bool,
}

#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Flags {
    pub(crate) append: bool,
    pub(crate) fullblock: bool,
    pub(crate) count_bytes: bool,
    pub(crate) skip_bytes: bool,
    pub(crate) seek_bytes: bool,
    pub(crate) direct: bool,
    pub(crate) nocache: bool,
}

#[derive(Debug)]
pub(crate) struct Opts {
    pub(crate) input: Option<OsString>,
    pub(crate) output: Option<OsString>,
    pub(crate) ibs: usize,
    pub(crate) obs: usize,
    /// `bs=` given: every input block is written as one output block.
    pub(crate) same_buffer: bool,
    pub(crate) skip_records: u64,
    pub(crate) skip_bytes: u64,
    pub(crate) max_records: u64,
    pub(crate) max_bytes: u64,
    pub(crate) seek_records: u64,
    pub(crate) seek_bytes: u64,
    pub(crate) conv: Conv,
    pub(crate) iflag: Flags,
    pub(crate) oflag: Flags,
    pub(crate) status: Status,
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

/// The options, looked at before any operand as GNU dd's getopt does: the
/// first option before `--` decides, wherever it stands among the
/// operands. `--help` and `--version` leave with status 0, any other option
/// is a usage error; with no option this returns and the operands are
/// parsed.
fn parse_options(args: &[OsString]) -> Result<(), Exit> {
    for arg in args {
        let operand = arg.as_bytes();
        if operand == b"--" {
            return Ok(());
        }
        if operand.len() < 2 || operand[0] != b'-' {
            continue;
        }
        match operand {
            b"--help" => {
                print_help();
                return Err(Exit(0));
            }
            b"--version" => {
                outln!("dd (page-cache) {}", env!("CARGO_PKG_VERSION"));
                return Err(Exit(0));
            }
            _ if operand.starts_with(b"--help=") || operand.starts_with(b"--version=") => {
                let name = operand.split(|&b| b == b'=').next().unwrap_or_default();
                return Err(usage_error(&format!("option {} doesn't allow an argument", quote_bytes(name))));
            }
            _ if operand.starts_with(b"--") => {
                return Err(usage_error(&format!("unrecognized option {}", quote_bytes(operand))));
            }
            _ => {
                return Err(usage_error(&format!("invalid option -- '{}'", char::from(operand[1]))));
            }
        }
    }
    Ok(())
}

pub(crate) fn parse_args(args: &[OsString]) -> Result<Opts, Exit> {
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

    parse_options(args)?;
    let mut options_done = false;
    for arg in args {
        let operand = arg.as_bytes();
        if !options_done && operand == b"--" {
            options_done = true;
            continue;
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
    pub(crate) fn two_buffers(&self) -> bool {
        !self.same_buffer || self.conv.lcase || self.conv.ucase || self.conv.swab
    }
}

fn print_help() {
    outln!(
        "Usage: dd [OPERAND]...\n\
         \x20 or:  dd OPTION\n\
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
         The page cache capacity is $PAGE_CACHE_BYTES (default 64 MiB);\n\
         $PAGE_CACHE_PAGE_SIZE (4096 to 65536) sets the page size of its files.\n\n\
         Options are:\n\n\
         \x20     --help        display this help and exit\n\
         \x20     --version     output version information and exit"
    );
}
