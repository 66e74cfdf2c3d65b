//! CacheLib's BlockCache and foyer's block engine: a disk tier that appends
//! clean pages to a log of fixed-size regions in one file, evicts whole
//! regions oldest first, and recovers its index after a restart from the
//! regions' summaries alone.
//!
//! # On-disk format (format version 1, little-endian)
//!
//! ```text
//! [superblock copy 0][superblock copy 1][region 0][region 1] ... [region n-1]
//! ```
//!
//! - **Superblock** (two copies, each `sb_size` = 64 + 8n + 8 bytes rounded
//!   up to 4 KiB): magic `PCDISKSB`, format, region size, region count,
//!   epoch, write count, instance id, then the sequence number of each
//!   region (0: empty), then a crc32c of all of that. Writes alternate
//!   between the copies (write count mod 2); an open takes the valid copy
//!   with the highest write count, so a torn superblock write loses at most
//!   the newest update.
//! - **Region** (`region_size` bytes, 4 KiB multiple): a 64-byte header
//!   (magic `PCDISKRG`, sequence number, entry count, end of data, crc32c of
//!   the summary, crc32c of the header), then the **summary**: one 64-byte
//!   record per entry (dev, ino, generation, page shift, index, the file's
//!   version tag, offset, length, crc32c of the data), in put order; the
//!   summary area is reserved for the most entries a region can hold and
//!   rounded up to 4 KiB. Then the page data, each page at a 4 KiB aligned
//!   offset, back to back. Entry headers live in the summary rather than in
//!   front of each page, so recovery reads one contiguous block per region
//!   and never the data, and pages stay 4 KiB aligned.
//! - **File table** (`<path>.files`, rewritten through `<path>.files.tmp`
//!   and a rename): magic `PCDISKFT`, the instance id, a count, then per
//!   file its key, version (size, mtime, ctime) and version tag; crc32c at
//!   the end.
//!
//! # Writes
//!
//! Puts copy the page into the current region's buffer in memory (and its
//! record into the buffer's summary area) under the tier's one mutex. When
//! the buffer is full it is sealed (header written) and handed to the
//! writer: by default a background thread that writes the region with one
//! `pwrite`, then the superblock, then the file table if it changed; with
//! [`DiskTierOptions::inline_writes`] the put that fills the buffer does
//! that itself. One region write is in flight at a time: a put that needs a
//! new buffer while the writer is busy is refused (counted in `rejects`),
//! so `put_page` never waits for the disk. Gets of pages in the buffer
//! being filled or being written are served from memory.
//!
//! When the next region slot still holds a sealed region, that region is
//! evicted whole (FIFO): its entries leave the index (`evictions`).
//!
//! A failed region write (ENOSPC, EIO) drops the region's entries (counted
//! in `rejects`), leaves the slot empty, and refuses every put for one
//! second; gets of what is on disk keep working. Nothing is `fsync`ed: a
//! crash may lose the newest regions or superblock update, and the
//! checksums (headers, summaries, data) turn whatever was torn into misses.
//!
//! # Reads
//!
//! Gets of sealed regions are buffered `pread`s straight into `out`, outside
//! the lock, then checked against the crc32c kept in the index and
//! re-validated under the lock (the entry still there, its region not
//! reused meanwhile). Not `O_DIRECT`: pages are 4 KiB aligned on disk, so
//! it could be added, but the region writes go through the page cache too
//! and tmpfs refuses `O_DIRECT`. A checksum mismatch or a short read (the
//! file was truncated) is a miss that drops the entry and is counted
//! ([`DiskTier::checksum_failures`], and in `rejects`).
//!
//! # Index and its memory
//!
//! Per file a `BTreeMap<u64, Loc>` from page index to (region, offset in
//! region, crc32c), 12 bytes of value: 22 to 48 bytes per entry with the
//! B-tree's nodes 5 to 11 full. Each region keeps the list of (file id,
//! index) put into it, 16 bytes per entry put (garbage included), so that
//! an eviction finds its entries. So about 40 to 64 bytes of memory per
//! entry, plus about 200 bytes per file, plus two region buffers.
//! [`DiskTier::index_bytes`] reports the estimate; `usage().bytes` is the
//! disk in use (the superblocks and the sealed regions).
//!
//! # Versions and warm restart
//!
//! Each file has a version (the [`FileVersion`] the cache last vouched for)
//! and a version **tag**, a number unique across runs (epoch << 32 |
//! counter, the epoch bumped in the superblock at each open). Every put is
//! recorded with the file's current tag. `open_file` with another version
//! drops the file's entries and gives it a new tag; `file_written` keeps
//! the entries (the cache invalidated what it changed) but gives the file
//! a new tag as well: invalidations are not persisted, so an entry written
//! before the change could be one the cache invalidated, and must not come
//! back after a restart. The file table records each file's version and
//! tag at every seal and at drop.
//!
//! An open reads the superblock, the file table and each live region's
//! header and summary (never page data), in sequence order, so a later put
//! overrides an earlier one; it keeps the records whose tag is the file's
//! tag in the table. Recovered entries are served only once `open_file` is
//! called with the recorded version; another version drops them. A put or
//! `file_written` on a file not yet confirmed drops its recovered entries.
//! An invalidation is not remembered across a restart: a page invalidated
//! without the file's version changing can come back, which is safe since
//! its bytes are those of the file at that version (as safe as the
//! version's timestamps are fine-grained).
//!
//! An open with another region size or region count than the file's (or of
//! a file that is not a tier's) truncates the file and starts over empty. Dropping the tier seals and writes the buffer being filled
//! (errors ignored), then the superblock and the file table.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::{FileKey, FileVersion, SecondTier, TierUsage};

/// Alignment of pages, summary areas, superblocks and regions.
const BLOCK: u64 = 4096;
/// The smallest page shift stored (4 KiB).
const MIN_SHIFT: u8 = 12;
/// The largest page shift stored (64 KiB).
const MAX_SHIFT: u8 = 16;
/// Region size when the budget allows at least [`AUTO_REGIONS`] of them.
const DEFAULT_REGION: u64 = 16 << 20;
/// The fewest regions [`DiskTier::open`] chooses a region size for.
const AUTO_REGIONS: u64 = 4;
/// The smallest region: a header block and one 4 KiB page.
const MIN_REGION: u64 = 2 * BLOCK;
/// The largest region (offsets in a region are `u32`).
const MAX_REGION: u64 = 1 << 30;
/// The fewest regions a tier works with (one filling, one being written).
const MIN_REGIONS: u64 = 2;
/// The most regions (keeps the superblock under 8 MiB).
const MAX_REGIONS: u64 = 1 << 20;
const SB_MAGIC: u64 = u64::from_le_bytes(*b"PCDISKSB");
const REGION_MAGIC: u64 = u64::from_le_bytes(*b"PCDISKRG");
const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"PCDISKFT");
const FORMAT: u64 = 1;
/// Fixed part of the superblock, before the sequence numbers.
const SB_HEADER: usize = 64;
/// The region header.
const REGION_HEADER: usize = 64;
/// One summary record.
const RECORD: usize = 64;
/// The file table's header.
const TABLE_HEADER: usize = 32;
/// One file in the file table.
const TABLE_ENTRY: usize = 80;
/// How long puts are refused after a failed region write.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- crc32c

/// Slicing-by-8 tables of CRC-32C (Castagnoli, reflected 0x82F63B78).
const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

/// CRC-32C of `data`, in software (slicing-by-8).
fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][(hi & 0xff) as usize]
            ^ t[2][((hi >> 8) & 0xff) as usize]
            ^ t[1][((hi >> 16) & 0xff) as usize]
            ^ t[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
    }
    !crc
}

// ---------------------------------------------------------------- encoding

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn get_i128(b: &[u8], at: usize) -> i128 {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[at..at + 16]);
    i128::from_le_bytes(w)
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_i128(b: &mut [u8], at: usize, v: i128) {
    b[at..at + 16].copy_from_slice(&v.to_le_bytes());
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// The shape of the file: region size and count, superblock and summary
/// area sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    region_size: u64,
    regions: u32,
    /// Bytes of one superblock copy.
    sb_size: u64,
    /// Bytes at the start of a region for its header and summary.
    area: u64,
    /// The most entries (records) a region holds.
    max_entries: u32,
}

fn sb_size_for(regions: u64) -> u64 {
    (SB_HEADER as u64 + 8 * regions + 8).next_multiple_of(BLOCK)
}

impl Geometry {
    fn new(bytes: u64, region_size: u64) -> io::Result<Geometry> {
        if region_size % BLOCK != 0 || !(MIN_REGION..=MAX_REGION).contains(&region_size) {
            return Err(invalid("disk tier: region size must be a multiple of 4 KiB from 8 KiB to 1 GiB"));
        }
        let sb_size = sb_size_for((bytes / region_size).min(MAX_REGIONS));
        let regions = (bytes.saturating_sub(2 * sb_size) / region_size).min(MAX_REGIONS);
        if regions < MIN_REGIONS {
            return Err(invalid("disk tier: the budget holds fewer than two regions"));
        }
        let max_entries = ((region_size - REGION_HEADER as u64) / (BLOCK + RECORD as u64)).max(1);
        let area = (REGION_HEADER as u64 + max_entries * RECORD as u64).next_multiple_of(BLOCK);
        Ok(Geometry { region_size, regions: regions as u32, sb_size, area, max_entries: max_entries as u32 })
    }

    fn region_offset(&self, slot: u32) -> u64 {
        2 * self.sb_size + u64::from(slot) * self.region_size
    }
}

/// The region size [`DiskTier::open`] picks: 16 MiB, halved until the
/// budget holds at least four regions (down to 8 KiB).
fn auto_region_size(bytes: u64) -> u64 {
    let mut rs = DEFAULT_REGION;
    while rs > MIN_REGION && bytes / rs < AUTO_REGIONS {
        rs /= 2;
    }
    rs
}

/// One summary record: an entry's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    key: FileKey,
    index: u64,
    tag: u64,
    offset: u32,
    len: u32,
    crc: u32,
}

impl Record {
    fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.key.dev);
        put_u64(b, 8, self.key.ino);
        put_u64(b, 16, self.key.generation);
        put_u64(b, 24, self.index);
        put_u64(b, 32, self.tag);
        put_u32(b, 40, self.offset);
        put_u32(b, 44, self.len);
        put_u32(b, 48, self.crc);
        b[52] = self.key.page_shift;
        b[53..RECORD].fill(0);
    }

    fn decode(b: &[u8]) -> Record {
        Record {
            key: FileKey { dev: get_u64(b, 0), ino: get_u64(b, 8), generation: get_u64(b, 16), page_shift: b[52] },
            index: get_u64(b, 24),
            tag: get_u64(b, 32),
            offset: get_u32(b, 40),
            len: get_u32(b, 44),
            crc: get_u32(b, 48),
        }
    }

    /// Whether the record describes a page that fits the region's data.
    fn sane(&self, geo: &Geometry, data_end: u32) -> bool {
        (MIN_SHIFT..=MAX_SHIFT).contains(&self.key.page_shift)
            && self.len as usize == self.key.page_size()
            && u64::from(self.offset) >= geo.area
            && u64::from(self.offset) % BLOCK == 0
            && u64::from(self.offset) + u64::from(self.len) <= u64::from(data_end)
    }
}

/// A region's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RegionHeader {
    seq: u64,
    count: u32,
    data_end: u32,
    summary_crc: u32,
}

impl RegionHeader {
    fn encode(&self, b: &mut [u8]) {
        b[..REGION_HEADER].fill(0);
        put_u64(b, 0, REGION_MAGIC);
        put_u64(b, 8, self.seq);
        put_u32(b, 16, self.count);
        put_u32(b, 20, self.data_end);
        put_u32(b, 24, self.summary_crc);
        let crc = crc32c(&b[..60]);
        put_u32(b, 60, crc);
    }

    fn decode(b: &[u8]) -> Option<RegionHeader> {
        if b.len() < REGION_HEADER || get_u64(b, 0) != REGION_MAGIC || get_u32(b, 60) != crc32c(&b[..60]) {
            return None;
        }
        Some(RegionHeader {
            seq: get_u64(b, 8),
            count: get_u32(b, 16),
            data_end: get_u32(b, 20),
            summary_crc: get_u32(b, 24),
        })
    }
}

/// The superblock's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Superblock {
    region_size: u64,
    epoch: u64,
    writes: u64,
    instance: u64,
    seqs: Vec<u64>,
}

impl Superblock {
    fn encode(&self, sb_size: u64) -> Vec<u8> {
        let mut b = vec![0u8; sb_size as usize];
        put_u64(&mut b, 0, SB_MAGIC);
        put_u64(&mut b, 8, FORMAT);
        put_u64(&mut b, 16, self.region_size);
        put_u64(&mut b, 24, self.seqs.len() as u64);
        put_u64(&mut b, 32, self.epoch);
        put_u64(&mut b, 40, self.writes);
        put_u64(&mut b, 48, self.instance);
        for (i, &s) in self.seqs.iter().enumerate() {
            put_u64(&mut b, SB_HEADER + 8 * i, s);
        }
        let end = SB_HEADER + 8 * self.seqs.len();
        let crc = crc32c(&b[..end]);
        put_u32(&mut b, end, crc);
        b
    }

    /// Decodes a copy written for `regions` regions.
    fn decode(b: &[u8], regions: u32) -> Option<Superblock> {
        let end = SB_HEADER + 8 * regions as usize;
        if b.len() < end + 4
            || get_u64(b, 0) != SB_MAGIC
            || get_u64(b, 8) != FORMAT
            || get_u64(b, 24) != u64::from(regions)
            || get_u32(b, end) != crc32c(&b[..end])
        {
            return None;
        }
        Some(Superblock {
            region_size: get_u64(b, 16),
            epoch: get_u64(b, 32),
            writes: get_u64(b, 40),
            instance: get_u64(b, 48),
            seqs: (0..regions as usize).map(|i| get_u64(b, SB_HEADER + 8 * i)).collect(),
        })
    }
}

/// One file of the file table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TableEntry {
    key: FileKey,
    version: FileVersion,
    tag: u64,
}

fn encode_table(instance: u64, entries: &[TableEntry]) -> Vec<u8> {
    let mut b = vec![0u8; TABLE_HEADER + entries.len() * TABLE_ENTRY + 4];
    put_u64(&mut b, 0, TABLE_MAGIC);
    put_u64(&mut b, 8, instance);
    put_u64(&mut b, 16, entries.len() as u64);
    for (i, e) in entries.iter().enumerate() {
        let at = TABLE_HEADER + i * TABLE_ENTRY;
        put_u64(&mut b, at, e.key.dev);
        put_u64(&mut b, at + 8, e.key.ino);
        put_u64(&mut b, at + 16, e.key.generation);
        put_u64(&mut b, at + 24, e.tag);
        put_u64(&mut b, at + 32, e.version.size);
        put_i128(&mut b, at + 40, e.version.mtime_ns);
        put_i128(&mut b, at + 56, e.version.ctime_ns);
        b[at + 72] = e.key.page_shift;
    }
    let end = b.len() - 4;
    let crc = crc32c(&b[..end]);
    put_u32(&mut b, end, crc);
    b
}

/// The entries of a file table written by `instance`, or nothing if it is
/// another tier's, torn or corrupt.
fn decode_table(b: &[u8], instance: u64) -> Option<Vec<TableEntry>> {
    if b.len() < TABLE_HEADER + 4 || get_u64(b, 0) != TABLE_MAGIC || get_u64(b, 8) != instance {
        return None;
    }
    let count = usize::try_from(get_u64(b, 16)).ok()?;
    let end = TABLE_HEADER.checked_add(count.checked_mul(TABLE_ENTRY)?)?;
    if b.len() != end + 4 || get_u32(b, end) != crc32c(&b[..end]) {
        return None;
    }
    Some(
        (0..count)
            .map(|i| {
                let at = TABLE_HEADER + i * TABLE_ENTRY;
                TableEntry {
                    key: FileKey {
                        dev: get_u64(b, at),
                        ino: get_u64(b, at + 8),
                        generation: get_u64(b, at + 16),
                        page_shift: b[at + 72],
                    },
                    tag: get_u64(b, at + 24),
                    version: FileVersion {
                        size: get_u64(b, at + 32),
                        mtime_ns: get_i128(b, at + 40),
                        ctime_ns: get_i128(b, at + 56),
                    },
                }
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- state

/// Where an entry's bytes are: region slot, byte offset in the region, and
/// the crc32c of the bytes. Its length is the file's page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    region: u32,
    offset: u32,
    crc: u32,
}

struct FileState {
    key: FileKey,
    /// The version the cache last vouched for; `None` if it never said.
    version: Option<FileVersion>,
    /// The tag recorded with the file's puts.
    tag: u64,
    /// False for a file recovered at open and not yet confirmed by
    /// `open_file`: its entries are not served.
    serving: bool,
    pages: BTreeMap<u64, Loc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegionState {
    /// Holds nothing.
    Empty,
    /// Its buffer is being filled ([`State::active`]).
    Active,
    /// Its buffer is being written ([`State::flushing`]).
    Flushing,
    /// Written: its entries are read from the file.
    Sealed,
}

struct Region {
    state: RegionState,
    /// Sequence number of the region's contents (0: none).
    seq: u64,
    /// (file id, index) of every entry put into the region, live or not.
    keys: Vec<(u32, u64)>,
}

/// The region buffer being filled: header and summary area first, then
/// page data from `data_end` on.
struct Active {
    slot: u32,
    buf: Vec<u8>,
    count: u32,
    data_end: u32,
}

/// A sealed region buffer on its way to the disk.
struct Job {
    slot: u32,
    buf: Arc<Vec<u8>>,
    /// Bytes of `buf` to write (the header to the end of the data).
    len: usize,
}

struct State {
    geo: Geometry,
    files: Vec<Option<FileState>>,
    free_ids: Vec<u32>,
    ids: HashMap<FileKey, u32>,
    regions: Vec<Region>,
    active: Option<Active>,
    flushing: Option<(u32, Arc<Vec<u8>>)>,
    /// A written region buffer, kept for the next region.
    spare: Option<Vec<u8>>,
    /// A region write (data, superblock, file table) is in progress.
    write_busy: bool,
    /// When the last region write failed.
    write_failed_at: Option<Instant>,
    next_slot: u32,
    next_seq: u64,
    next_tag: u64,
    instance: u64,
    epoch: u64,
    sb_writes: u64,
    files_dirty: bool,
    pages: u64,
    stored: u64,
    rejects: u64,
    evictions: u64,
    checksum_failures: u64,
    write_errors: u64,
}

impl State {
    fn new(geo: Geometry, instance: u64, epoch: u64, sb_writes: u64) -> State {
        State {
            geo,
            files: Vec::new(),
            free_ids: Vec::new(),
            ids: HashMap::new(),
            regions: (0..geo.regions).map(|_| Region { state: RegionState::Empty, seq: 0, keys: Vec::new() }).collect(),
            active: None,
            flushing: None,
            spare: None,
            write_busy: false,
            write_failed_at: None,
            next_slot: 0,
            next_seq: (epoch << 32) | 1,
            next_tag: (epoch << 32) | 1,
            instance,
            epoch,
            sb_writes,
            files_dirty: false,
            pages: 0,
            stored: 0,
            rejects: 0,
            evictions: 0,
            checksum_failures: 0,
            write_errors: 0,
        }
    }

    /// A tag no earlier run used: this run's epoch in the high half. (After
    /// 2^32 version changes in one run the counter would run into the next
    /// epoch's tags.)
    fn new_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    fn file_mut(&mut self, id: u32) -> Option<&mut FileState> {
        self.files.get_mut(id as usize)?.as_mut()
    }

    fn add_file(&mut self, key: FileKey, version: Option<FileVersion>, tag: u64, serving: bool) -> u32 {
        let state = FileState { key, version, tag, serving, pages: BTreeMap::new() };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.files[id as usize] = Some(state);
                id
            }
            None => {
                self.files.push(Some(state));
                (self.files.len() - 1) as u32
            }
        };
        self.ids.insert(key, id);
        id
    }

    /// Forgets a file that has neither pages nor a version to remember.
    fn release_if_idle(&mut self, id: u32) {
        let idle = matches!(self.files.get(id as usize), Some(Some(f)) if f.pages.is_empty() && f.version.is_none());
        if idle {
            if let Some(f) = self.files[id as usize].take() {
                self.ids.remove(&f.key);
            }
            self.free_ids.push(id);
        }
    }

    fn remove_loc(&mut self, id: u32, index: u64) -> Option<Loc> {
        let f = self.file_mut(id)?;
        let loc = f.pages.remove(&index)?;
        let ps = f.key.page_size() as u64;
        self.pages -= 1;
        self.stored -= ps;
        Some(loc)
    }

    fn insert_loc(&mut self, id: u32, index: u64, loc: Loc) {
        let Some(f) = self.file_mut(id) else { return };
        let ps = f.key.page_size() as u64;
        if f.pages.insert(index, loc).is_none() {
            self.pages += 1;
            self.stored += ps;
        }
    }

    fn remove_range(&mut self, id: u32, start: u64, end: u64) {
        let Some(f) = self.file_mut(id) else { return };
        let mut mid = f.pages.split_off(&start);
        let mut tail = mid.split_off(&end);
        f.pages.append(&mut tail);
        let (n, ps) = (mid.len() as u64, f.key.page_size() as u64);
        self.pages -= n;
        self.stored -= n * ps;
    }

    fn drop_file_pages(&mut self, id: u32) {
        self.remove_range(id, 0, u64::MAX);
        self.remove_loc(id, u64::MAX);
    }

    /// Drops every entry whose bytes are in `slot` and empties the slot.
    /// Returns how many entries left the index.
    fn drop_region(&mut self, slot: u32) -> u64 {
        let keys = std::mem::take(&mut self.regions[slot as usize].keys);
        let mut n = 0;
        for &(id, index) in &keys {
            let here = matches!(self.files.get(id as usize), Some(Some(f)) if f.pages.get(&index).is_some_and(|l| l.region == slot));
            if here {
                self.remove_loc(id, index);
                n += 1;
            }
        }
        let mut keys = keys;
        keys.clear();
        let r = &mut self.regions[slot as usize];
        r.keys = keys;
        r.state = RegionState::Empty;
        r.seq = 0;
        n
    }

    /// Starts filling the next slot, evicting the region it holds.
    fn activate(&mut self) -> bool {
        let slot = self.next_slot;
        match self.regions[slot as usize].state {
            RegionState::Empty => {}
            RegionState::Sealed => {
                let n = self.drop_region(slot);
                self.evictions += n;
            }
            RegionState::Active | RegionState::Flushing => return false,
        }
        self.next_slot = (slot + 1) % self.geo.regions;
        let size = self.geo.region_size as usize;
        let buf = match self.spare.take() {
            Some(b) if b.len() == size => b,
            _ => vec![0u8; size],
        };
        self.regions[slot as usize].state = RegionState::Active;
        self.active = Some(Active { slot, buf, count: 0, data_end: self.geo.area as u32 });
        true
    }

    /// Seals the buffer being filled and marks it in flight.
    fn seal(&mut self) -> Option<Job> {
        if self.active.as_ref().is_none_or(|a| a.count == 0) {
            return None;
        }
        let mut a = self.active.take()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let summary_end = REGION_HEADER + a.count as usize * RECORD;
        a.buf[summary_end..self.geo.area as usize].fill(0);
        let summary_crc = crc32c(&a.buf[REGION_HEADER..summary_end]);
        RegionHeader { seq, count: a.count, data_end: a.data_end, summary_crc }.encode(&mut a.buf);
        let region = &mut self.regions[a.slot as usize];
        region.state = RegionState::Flushing;
        region.seq = seq;
        let buf = Arc::new(a.buf);
        self.flushing = Some((a.slot, Arc::clone(&buf)));
        self.write_busy = true;
        Some(Job { slot: a.slot, buf, len: a.data_end as usize })
    }

    /// The next superblock copy to write: its offset and bytes.
    fn superblock(&mut self) -> (u64, Vec<u8>) {
        let copy = self.sb_writes % 2;
        self.sb_writes += 1;
        let sb = Superblock {
            region_size: self.geo.region_size,
            epoch: self.epoch,
            writes: self.sb_writes,
            instance: self.instance,
            seqs: self.regions.iter().map(|r| if r.state == RegionState::Sealed { r.seq } else { 0 }).collect(),
        };
        (copy * self.geo.sb_size, sb.encode(self.geo.sb_size))
    }

    /// The file table's bytes, if it changed since it was last taken.
    fn take_table(&mut self) -> Option<Vec<u8>> {
        if !self.files_dirty {
            return None;
        }
        self.files_dirty = false;
        let entries: Vec<TableEntry> = self
            .files
            .iter()
            .flatten()
            .filter_map(|f| f.version.map(|version| TableEntry { key: f.key, version, tag: f.tag }))
            .collect();
        Some(encode_table(self.instance, &entries))
    }

    fn usage(&self) -> TierUsage {
        let sealed = self.regions.iter().filter(|r| r.state == RegionState::Sealed).count() as u64;
        TierUsage {
            pages: self.pages,
            bytes: 2 * self.geo.sb_size + sealed * self.geo.region_size,
            logical_bytes: self.stored,
            stored_bytes: self.stored,
            rejects: self.rejects,
            evictions: self.evictions,
        }
    }

    fn check(&self) {
        let geo = &self.geo;
        let mut pages = 0u64;
        let mut stored = 0u64;
        let mut seen = std::collections::HashSet::new();
        for (id, f) in self.files.iter().enumerate() {
            let Some(f) = f else {
                assert!(self.free_ids.contains(&(id as u32)), "disk: file slot {id} empty but not free");
                continue;
            };
            assert_eq!(self.ids.get(&f.key), Some(&(id as u32)), "disk: file {:?} not in the id map", f.key);
            assert!(f.serving || f.version.is_some(), "disk: unconfirmed file {:?} without a version", f.key);
            let ps = f.key.page_size() as u64;
            assert!((MIN_SHIFT..=MAX_SHIFT).contains(&f.key.page_shift));
            for (&index, loc) in &f.pages {
                pages += 1;
                stored += ps;
                assert!(loc.region < geo.regions, "disk: region {} out of range", loc.region);
                let region = &self.regions[loc.region as usize];
                assert_ne!(region.state, RegionState::Empty, "disk: entry {:?} {index} in an empty region", f.key);
                let off = u64::from(loc.offset);
                assert!(off >= geo.area && off % BLOCK == 0 && off + ps <= geo.region_size, "disk: bad offset {off}");
                if region.state == RegionState::Active {
                    let a = self.active.as_ref().expect("active region without a buffer");
                    assert_eq!(a.slot, loc.region);
                    assert!(off + ps <= u64::from(a.data_end), "disk: entry past the buffer's data");
                }
                assert!(
                    region.keys.contains(&(id as u32, index)),
                    "disk: entry {:?} {index} not in its region's list",
                    f.key
                );
                assert!(seen.insert((loc.region, loc.offset)), "disk: two entries at one place");
            }
        }
        assert_eq!(pages, self.pages, "disk: page count");
        assert_eq!(stored, self.stored, "disk: stored bytes");
        assert_eq!(self.ids.len(), self.files.iter().flatten().count(), "disk: id map size");
        let active = self.regions.iter().filter(|r| r.state == RegionState::Active).count();
        let flushing = self.regions.iter().filter(|r| r.state == RegionState::Flushing).count();
        assert_eq!(active, usize::from(self.active.is_some()), "disk: active regions");
        assert_eq!(flushing, usize::from(self.flushing.is_some()), "disk: flushing regions");
        if let Some((slot, _)) = &self.flushing {
            assert_eq!(self.regions[*slot as usize].state, RegionState::Flushing);
            assert!(self.write_busy, "disk: a region in flight without the writer busy");
        }
        let mut seqs: Vec<u64> = self.regions.iter().filter(|r| r.state != RegionState::Empty).map(|r| r.seq).collect();
        for r in &self.regions {
            match r.state {
                RegionState::Sealed | RegionState::Flushing => assert!(r.seq > 0 && r.seq < self.next_seq),
                RegionState::Empty | RegionState::Active => assert_eq!(r.seq, 0),
            }
        }
        seqs.retain(|&s| s != 0);
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(n, seqs.len(), "disk: two regions with one sequence number");
        assert!(self.usage().bytes <= 2 * geo.sb_size + u64::from(geo.regions) * geo.region_size);
    }
}

// ---------------------------------------------------------------- the tier

struct Shared {
    state: Mutex<State>,
    /// Signalled when a region write finishes.
    idle: Condvar,
    file: File,
    geo: Geometry,
    table_path: PathBuf,
    tmp_path: PathBuf,
}

impl Shared {
    /// Writes a sealed region, then the superblock and the file table.
    fn write_job(&self, job: Job) -> io::Result<()> {
        let res = self.file.write_all_at(&job.buf[..job.len], self.geo.region_offset(job.slot));
        let (sb, table) = {
            let mut st = self.state.lock();
            st.flushing = None;
            match &res {
                Ok(()) => st.regions[job.slot as usize].state = RegionState::Sealed,
                Err(_) => {
                    let n = st.drop_region(job.slot);
                    st.rejects += n;
                    st.write_errors += 1;
                    st.write_failed_at = Some(Instant::now());
                }
            }
            if let Ok(buf) = Arc::try_unwrap(job.buf) {
                st.spare = Some(buf);
            }
            (st.superblock(), st.take_table())
        };
        let sb_ok = self.file.write_all_at(&sb.1, sb.0).is_ok();
        let table_ok = table.is_none_or(|t| self.write_table(&t).is_ok());
        let mut st = self.state.lock();
        if !table_ok {
            st.files_dirty = true;
        }
        if !sb_ok || !table_ok {
            st.write_errors += 1;
        }
        st.write_busy = false;
        self.idle.notify_all();
        res
    }

    fn write_table(&self, bytes: &[u8]) -> io::Result<()> {
        std::fs::write(&self.tmp_path, bytes)?;
        std::fs::rename(&self.tmp_path, &self.table_path)
    }
}

/// How to open a [`DiskTier`].
#[derive(Clone, Debug, Default)]
pub struct DiskTierOptions {
    region_size: Option<u64>,
    inline_writes: bool,
}

impl DiskTierOptions {
    /// Regions of `bytes` bytes (a multiple of 4 KiB, 8 KiB to 1 GiB)
    /// instead of the default (16 MiB, smaller to have at least 4 regions).
    pub fn with_region_size(mut self, bytes: u64) -> DiskTierOptions {
        self.region_size = Some(bytes);
        self
    }

    /// With `inline`, no writer thread: the put (or `flush`, or drop) that
    /// seals a region writes it before it returns. For tests and small
    /// regions: a put may then wait for a whole region's write.
    pub fn inline_writes(mut self, inline: bool) -> DiskTierOptions {
        self.inline_writes = inline;
        self
    }

    /// Opens (or creates) the tier's file at `path`, using at most `bytes`
    /// of disk (plus the small file table beside it), and recovers the
    /// index of the tier that last used it. Errors: `InvalidInput` if
    /// `bytes` does not hold two regions or the region size is out of
    /// range; any error opening, reading the superblock area or writing it.
    pub fn open(self, path: impl AsRef<Path>, bytes: u64) -> io::Result<DiskTier> {
        DiskTier::open_with(path.as_ref(), bytes, self)
    }
}

/// A disk tier: a log of regions in one file (see the [module docs](self)).
///
/// ```
/// use page_cache::tier::{disk::DiskTier, FileKey, FileVersion, SecondTier};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("tier");
/// let file = FileKey { dev: 1, ino: 2, generation: 3, page_shift: 12 };
/// let version = FileVersion { size: 4096, mtime_ns: 1, ctime_ns: 1 };
/// let page = vec![7u8; 4096];
/// {
///     let tier = DiskTier::open(&path, 1 << 20).unwrap();
///     tier.open_file(&file, &version);
///     assert!(tier.put_page(&file, 0, &page));
///     let mut out = vec![0u8; 4096];
///     assert!(tier.get_page(&file, 0, &mut out));
///     assert_eq!(out, page);
/// } // dropped: the buffer is written
/// let tier = DiskTier::open(&path, 1 << 20).unwrap();
/// tier.open_file(&file, &version);
/// let mut out = vec![0u8; 4096];
/// assert!(tier.get_page(&file, 0, &mut out));
/// assert_eq!(out, page);
/// ```
pub struct DiskTier {
    shared: Arc<Shared>,
    tx: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    recovered: u64,
    recovery_time: Duration,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("geometry", &self.shared.geo)
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads `len` bytes at `offset`, or nothing on an error or a short file.
fn read_at(file: &File, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, offset).ok()?;
    Some(b)
}

impl DiskTier {
    /// Opens (or creates) a tier at `path` using at most `bytes` of disk,
    /// with the default options (see [`DiskTierOptions::open`]).
    pub fn open(path: impl AsRef<Path>, bytes: u64) -> io::Result<DiskTier> {
        DiskTierOptions::default().open(path, bytes)
    }

    /// Options for [`DiskTierOptions::open`].
    pub fn options() -> DiskTierOptions {
        DiskTierOptions::default()
    }

    fn open_with(path: &Path, bytes: u64, opts: DiskTierOptions) -> io::Result<DiskTier> {
        let start = Instant::now();
        let geo = Geometry::new(bytes, opts.region_size.unwrap_or_else(|| auto_region_size(bytes)))?;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let table_path = sibling(path, ".files");
        let tmp_path = sibling(path, ".files.tmp");

        let sb = [0, geo.sb_size]
            .into_iter()
            .filter_map(|off| read_at(&file, off, geo.sb_size as usize))
            .filter_map(|b| Superblock::decode(&b, geo.regions))
            .filter(|sb| sb.region_size == geo.region_size)
            .max_by_key(|sb| sb.writes);
        let mut st = match &sb {
            Some(sb) => State::new(geo, sb.instance, sb.epoch + 1, sb.writes),
            None => {
                // Another geometry, another format or garbage: start over.
                file.set_len(0)?;
                let instance = RandomState::new().build_hasher().finish() | 1;
                State::new(geo, instance, 1, 0)
            }
        };
        if let Some(sb) = sb {
            Self::recover(&file, &table_path, &sb, &mut st);
        }
        let (off, b) = st.superblock();
        file.write_all_at(&b, off)?;
        let recovered = st.pages;

        let shared = Arc::new(Shared { state: Mutex::new(st), idle: Condvar::new(), file, geo, table_path, tmp_path });
        let (tx, writer) = if opts.inline_writes {
            (None, None)
        } else {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new().name("disk-tier-writer".into()).spawn(move || {
                for job in rx {
                    // Errors are accounted in the state.
                    let _ = s.write_job(job);
                }
            })?;
            (Some(tx), Some(handle))
        };
        Ok(DiskTier { shared, tx, writer, recovered, recovery_time: start.elapsed() })
    }

    /// Rebuilds the index from the file table and the region summaries.
    fn recover(file: &File, table_path: &Path, sb: &Superblock, st: &mut State) {
        let geo = st.geo;
        let table = std::fs::read(table_path).ok().and_then(|b| decode_table(&b, sb.instance)).unwrap_or_default();
        for e in table {
            if (MIN_SHIFT..=MAX_SHIFT).contains(&e.key.page_shift) && !st.ids.contains_key(&e.key) {
                st.add_file(e.key, Some(e.version), e.tag, false);
            }
        }
        let mut order: Vec<u32> = (0..geo.regions).filter(|&s| sb.seqs[s as usize] != 0).collect();
        order.sort_unstable_by_key(|&s| sb.seqs[s as usize]);
        st.next_seq = st.next_seq.max(sb.seqs.iter().max().map_or(1, |m| m + 1));
        for slot in order {
            let seq = sb.seqs[slot as usize];
            let base = geo.region_offset(slot);
            let Some(h) = read_at(file, base, REGION_HEADER).and_then(|b| RegionHeader::decode(&b)) else {
                continue;
            };
            if h.seq != seq || h.count > geo.max_entries || u64::from(h.data_end) > geo.region_size {
                continue;
            }
            let Some(summary) = read_at(file, base + REGION_HEADER as u64, h.count as usize * RECORD) else {
                continue;
            };
            if crc32c(&summary) != h.summary_crc {
                continue;
            }
            let mut keys = Vec::with_capacity(h.count as usize);
            for rec in summary.chunks_exact(RECORD).map(Record::decode) {
                if !rec.sane(&geo, h.data_end) {
                    continue;
                }
                let Some(&id) = st.ids.get(&rec.key) else { continue };
                if st.files[id as usize].as_ref().is_none_or(|f| f.tag != rec.tag) {
                    continue;
                }
                st.insert_loc(id, rec.index, Loc { region: slot, offset: rec.offset, crc: rec.crc });
                keys.push((id, rec.index));
            }
            let r = &mut st.regions[slot as usize];
            r.state = RegionState::Sealed;
            r.seq = seq;
            r.keys = keys;
            st.next_slot = (slot + 1) % geo.regions;
        }
        // Files with nothing recovered need no version kept.
        let before = st.ids.len();
        for id in 0..st.files.len() as u32 {
            if st.files[id as usize].as_ref().is_some_and(|f| f.pages.is_empty()) {
                if let Some(f) = st.files[id as usize].take() {
                    st.ids.remove(&f.key);
                    st.free_ids.push(id);
                }
            }
        }
        st.files_dirty = st.ids.len() != before;
    }

    /// Entries recovered by the open that made this tier.
    pub fn recovered_entries(&self) -> u64 {
        self.recovered
    }

    /// How long the open took, recovery included.
    pub fn recovery_time(&self) -> Duration {
        self.recovery_time
    }

    /// Entries dropped because their bytes on disk failed their checksum
    /// or could not be read, since the tier was opened.
    pub fn checksum_failures(&self) -> u64 {
        self.shared.state.lock().checksum_failures
    }

    /// Failed writes (regions, superblock, file table) since the tier was
    /// opened.
    pub fn write_errors(&self) -> u64 {
        self.shared.state.lock().write_errors
    }

    /// The region size in bytes.
    pub fn region_size(&self) -> u64 {
        self.shared.geo.region_size
    }

    /// The number of regions.
    pub fn regions(&self) -> u32 {
        self.shared.geo.regions
    }

    /// An estimate of the memory the index uses, in bytes: 36 bytes per
    /// entry (its B-tree slot, nodes taken as two-thirds full), 16 per
    /// entry in the regions' lists (garbage included), 200 per file. The
    /// two region buffers (`2 x region_size`) are not included.
    pub fn index_bytes(&self) -> u64 {
        let st = self.shared.state.lock();
        let listed: u64 = st.regions.iter().map(|r| r.keys.capacity() as u64 * 16).sum();
        st.pages * 36 + listed + st.ids.len() as u64 * 200
    }

    /// Seals the region being filled (if it holds anything) and writes it,
    /// waiting for a write in flight first; then writes the file table if
    /// it changed. Returns the region write's error.
    pub fn flush(&self) -> io::Result<()> {
        let job = {
            let mut st = self.shared.state.lock();
            while st.write_busy {
                self.shared.idle.wait(&mut st);
            }
            let job = st.seal();
            if job.is_none() {
                if let Some(t) = st.take_table() {
                    drop(st);
                    if self.shared.write_table(&t).is_err() {
                        let mut st = self.shared.state.lock();
                        st.files_dirty = true;
                        st.write_errors += 1;
                    }
                }
                return Ok(());
            }
            job
        };
        match job {
            Some(job) => self.shared.write_job(job),
            None => Ok(()),
        }
    }

    fn submit(&self, job: Job) {
        match &self.tx {
            Some(tx) => {
                if let Err(e) = tx.send(job) {
                    // The writer is gone: write it here.
                    let _ = self.shared.write_job(e.into_inner());
                }
            }
            None => {
                // Errors are accounted in the state.
                let _ = self.shared.write_job(job);
            }
        }
    }

    /// Checks the index against the regions, the counts and the buffers.
    /// Panics on a violation.
    pub fn check_invariants(&self) {
        self.shared.state.lock().check();
    }
}

fn page_ok(file: &FileKey, len: usize) -> bool {
    (MIN_SHIFT..=MAX_SHIFT).contains(&file.page_shift) && len == file.page_size()
}

impl SecondTier for DiskTier {
    fn persists(&self) -> bool {
        true
    }

    fn flush_puts(&self) {
        // A failed write is counted in the tier's state (`write_errors`).
        let _ = DiskTier::flush(self);
    }

    fn put_page(&self, file: &FileKey, index: u64, data: &[u8]) -> bool {
        let geo = self.shared.geo;
        let fits_region = (data.len() as u64) <= geo.region_size - geo.area;
        let crc = if page_ok(file, data.len()) && fits_region { Some(crc32c(data)) } else { None };
        let mut st = self.shared.state.lock();
        let id = match st.ids.get(file).copied() {
            Some(id) => {
                st.remove_loc(id, index);
                Some(id)
            }
            None => None,
        };
        let refuse = |st: &mut State| {
            st.rejects += 1;
            if let Some(id) = id {
                st.release_if_idle(id);
            }
            false
        };
        let Some(crc) = crc else { return refuse(&mut st) };
        if st.write_failed_at.is_some_and(|t| t.elapsed() < ERROR_BACKOFF) {
            return refuse(&mut st);
        }
        let len = data.len() as u32;
        let fits = |a: &Active| a.count < geo.max_entries && u64::from(a.data_end) + u64::from(len) <= geo.region_size;
        let mut job = None;
        if !st.active.as_ref().is_some_and(fits) {
            if st.active.is_some() {
                if st.write_busy {
                    return refuse(&mut st);
                }
                job = st.seal();
            }
            if !st.activate() {
                drop(st);
                if let Some(job) = job {
                    self.submit(job);
                }
                let mut st = self.shared.state.lock();
                return refuse(&mut st);
            }
        }
        let id = match id {
            Some(id) => {
                let f = st.file_mut(id).expect("id maps to a file");
                if !f.serving {
                    // Recovered and never confirmed: nothing vouches for
                    // the recovered entries or the version.
                    st.drop_file_pages(id);
                    let tag = st.new_tag();
                    let f = st.file_mut(id).expect("id maps to a file");
                    f.version = None;
                    f.tag = tag;
                    f.serving = true;
                    st.files_dirty = true;
                }
                id
            }
            None => {
                let tag = st.new_tag();
                st.add_file(*file, None, tag, true)
            }
        };
        let tag = st.files[id as usize].as_ref().map_or(0, |f| f.tag);
        let a = st.active.as_mut().expect("activated above");
        let (slot, offset) = (a.slot, a.data_end);
        a.buf[offset as usize..(offset + len) as usize].copy_from_slice(data);
        let at = REGION_HEADER + a.count as usize * RECORD;
        Record { key: *file, index, tag, offset, len, crc }.encode(&mut a.buf[at..at + RECORD]);
        a.count += 1;
        a.data_end += len;
        st.insert_loc(id, index, Loc { region: slot, offset, crc });
        st.regions[slot as usize].keys.push((id, index));
        drop(st);
        if let Some(job) = job {
            self.submit(job);
        }
        true
    }

    fn get_page(&self, file: &FileKey, index: u64, out: &mut [u8]) -> bool {
        if !page_ok(file, out.len()) {
            return false;
        }
        let geo = self.shared.geo;
        let (id, loc, seq) = {
            let st = self.shared.state.lock();
            let Some(&id) = st.ids.get(file) else { return false };
            let Some(f) = st.files[id as usize].as_ref() else { return false };
            if !f.serving {
                return false;
            }
            let Some(&loc) = f.pages.get(&index) else { return false };
            let (off, len) = (loc.offset as usize, out.len());
            match st.regions[loc.region as usize].state {
                RegionState::Active => {
                    let Some(a) = st.active.as_ref() else { return false };
                    out.copy_from_slice(&a.buf[off..off + len]);
                    return true;
                }
                RegionState::Flushing => {
                    let Some((_, buf)) = st.flushing.as_ref() else { return false };
                    out.copy_from_slice(&buf[off..off + len]);
                    return true;
                }
                RegionState::Empty => return false,
                RegionState::Sealed => (id, loc, st.regions[loc.region as usize].seq),
            }
        };
        let pos = geo.region_offset(loc.region) + u64::from(loc.offset);
        let good = self.shared.file.read_exact_at(out, pos).is_ok() && crc32c(out) == loc.crc;
        let mut st = self.shared.state.lock();
        let same = st.ids.get(file) == Some(&id)
            && st.files[id as usize].as_ref().is_some_and(|f| f.serving && f.pages.get(&index) == Some(&loc))
            && st.regions[loc.region as usize].seq == seq;
        if !same {
            return false;
        }
        if !good {
            st.remove_loc(id, index);
            st.checksum_failures += 1;
            st.rejects += 1;
            st.release_if_idle(id);
        }
        good
    }

    fn invalidate_page(&self, file: &FileKey, index: u64) {
        let mut st = self.shared.state.lock();
        if let Some(&id) = st.ids.get(file) {
            st.remove_loc(id, index);
            st.release_if_idle(id);
        }
    }

    fn invalidate_range(&self, file: &FileKey, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut st = self.shared.state.lock();
        if let Some(&id) = st.ids.get(file) {
            st.remove_range(id, start, end);
            st.release_if_idle(id);
        }
    }

    fn invalidate_file(&self, file: &FileKey) {
        let mut st = self.shared.state.lock();
        if let Some(&id) = st.ids.get(file) {
            st.drop_file_pages(id);
            st.release_if_idle(id);
        }
    }

    fn open_file(&self, file: &FileKey, version: &FileVersion) {
        if !(MIN_SHIFT..=MAX_SHIFT).contains(&file.page_shift) {
            return;
        }
        let mut st = self.shared.state.lock();
        let Some(&id) = st.ids.get(file) else {
            let tag = st.new_tag();
            st.add_file(*file, Some(*version), tag, true);
            st.files_dirty = true;
            return;
        };
        let f = st.file_mut(id).expect("id maps to a file");
        match f.version {
            Some(v) if v == *version => f.serving = true,
            None if f.serving => {
                // Puts came before any version: keep them for this run,
                // but not across a restart (new tag).
                f.version = Some(*version);
                let tag = st.new_tag();
                st.file_mut(id).expect("id maps to a file").tag = tag;
                st.files_dirty = true;
            }
            _ => {
                st.drop_file_pages(id);
                let tag = st.new_tag();
                let f = st.file_mut(id).expect("id maps to a file");
                f.version = Some(*version);
                f.tag = tag;
                f.serving = true;
                st.files_dirty = true;
            }
        }
    }

    fn file_written(&self, file: &FileKey, version: &FileVersion) {
        if !(MIN_SHIFT..=MAX_SHIFT).contains(&file.page_shift) {
            return;
        }
        let mut st = self.shared.state.lock();
        let tag = st.new_tag();
        st.files_dirty = true;
        let Some(&id) = st.ids.get(file) else {
            st.add_file(*file, Some(*version), tag, true);
            return;
        };
        if st.files[id as usize].as_ref().is_some_and(|f| !f.serving) {
            st.drop_file_pages(id);
        }
        let f = st.file_mut(id).expect("id maps to a file");
        f.version = Some(*version);
        f.tag = tag;
        f.serving = true;
    }

    fn usage(&self) -> TierUsage {
        self.shared.state.lock().usage()
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        // The writer finishes what it was sent, then stops.
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // Best effort: errors are only counted. (A writer that died
        // mid-write left the tier busy for good: nothing more to write.)
        let busy = self.shared.state.lock().write_busy;
        if !busy {
            let _ = self.flush();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(ino: u64, page_shift: u8) -> FileKey {
        FileKey { dev: 9, ino, generation: 1, page_shift }
    }

    fn ver(n: u64) -> FileVersion {
        FileVersion { size: n, mtime_ns: i128::from(n) * 1000, ctime_ns: i128::from(n) * 1000 + 1 }
    }

    /// A page of `len` bytes, different for every seed.
    fn page(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    fn get(tier: &DiskTier, f: &FileKey, index: u64) -> Option<Vec<u8>> {
        let mut out = vec![0xa5u8; f.page_size()];
        tier.get_page(f, index, &mut out).then_some(out)
    }

    /// Budget for `n` regions of `rs` bytes.
    fn budget(n: u64, rs: u64) -> u64 {
        2 * sb_size_for(n) + n * rs
    }

    fn small(path: &Path, n: u64, rs: u64) -> DiskTier {
        DiskTier::options().with_region_size(rs).inline_writes(true).open(path, budget(n, rs)).unwrap()
    }

    #[test]
    fn crc32c_known_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        let data = page(1, 4099);
        // Slicing-by-8 against the bytewise loop.
        let mut crc = !0u32;
        for &b in &data {
            crc = (crc >> 8) ^ CRC_TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize];
        }
        assert_eq!(crc32c(&data), !crc);
    }

    #[test]
    fn geometry_and_auto_region_size() {
        assert_eq!(auto_region_size(1 << 30), 16 << 20);
        assert_eq!(auto_region_size(16 << 20), 4 << 20);
        let g = Geometry::new(1 << 30, 16 << 20).unwrap();
        assert_eq!(g.regions, 63);
        assert_eq!(g.area, 256 << 10);
        assert!(u64::from(g.max_entries) * BLOCK >= g.region_size - g.area);
        let g = Geometry::new(budget(4, 8192), 8192).unwrap();
        assert_eq!((g.regions, g.area, g.max_entries), (4, 4096, 1));
        assert_eq!(Geometry::new(8192 * 2, 8192).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(Geometry::new(1 << 20, 5000).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put { file: usize, index: u64, seed: u64 },
        Get { file: usize, index: u64 },
        InvalidatePage { file: usize, index: u64 },
        InvalidateRange { file: usize, start: u64, end: u64 },
        InvalidateFile { file: usize },
        FileWritten { file: usize },
        NewVersion { file: usize },
        Flush,
        Reopen,
    }

    const FILES: [FileKey; 3] = [
        FileKey { dev: 1, ino: 10, generation: 0, page_shift: 12 },
        FileKey { dev: 1, ino: 11, generation: 0, page_shift: 12 },
        FileKey { dev: 1, ino: 10, generation: 0, page_shift: 13 },
    ];
    const INDICES: u64 = 10;

    fn op() -> impl Strategy<Value = Op> {
        let file = 0..FILES.len();
        prop_oneof![
            8 => (file.clone(), 0..INDICES, any::<u64>()).prop_map(|(file, index, seed)| Op::Put { file, index, seed }),
            6 => (file.clone(), 0..INDICES).prop_map(|(file, index)| Op::Get { file, index }),
            1 => (file.clone(), 0..INDICES).prop_map(|(file, index)| Op::InvalidatePage { file, index }),
            1 => (file.clone(), 0..INDICES, 0..6u64)
                .prop_map(|(file, start, len)| Op::InvalidateRange { file, start, end: start + len }),
            1 => file.clone().prop_map(|file| Op::InvalidateFile { file }),
            1 => file.clone().prop_map(|file| Op::FileWritten { file }),
            1 => file.prop_map(|file| Op::NewVersion { file }),
            1 => Just(Op::Flush),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn matches_model(ops in prop::collection::vec(op(), 1..200), background in any::<bool>(), regions in 3u64..6) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tier");
            let rs = 32 << 10;
            let open = || {
                DiskTier::options()
                    .with_region_size(rs)
                    .inline_writes(!background)
                    .open(&path, budget(regions, rs))
                    .unwrap()
            };
            let mut tier = open();
            let mut versions = [1u64, 1, 1];
            for (f, v) in FILES.iter().zip(versions) {
                tier.open_file(f, &ver(v));
            }
            // What a get may return now, and the last accepted put of each
            // key (what a restart may bring back).
            let mut live: BTreeMap<(usize, u64), Vec<u8>> = BTreeMap::new();
            let mut last: BTreeMap<(usize, u64), Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put { file, index, seed } => {
                        let data = page(seed, FILES[file].page_size());
                        if tier.put_page(&FILES[file], index, &data) {
                            live.insert((file, index), data.clone());
                            last.insert((file, index), data);
                        } else {
                            live.remove(&(file, index));
                        }
                    }
                    Op::Get { file, index } => match get(&tier, &FILES[file], index) {
                        Some(out) => {
                            let want = live.get(&(file, index));
                            prop_assert!(want.is_some(), "hit on {} {} after an invalidate or a miss", file, index);
                            prop_assert!(want == Some(&out), "stale or corrupt page {} {}", file, index);
                        }
                        None => {
                            live.remove(&(file, index));
                        }
                    },
                    Op::InvalidatePage { file, index } => {
                        tier.invalidate_page(&FILES[file], index);
                        live.remove(&(file, index));
                    }
                    Op::InvalidateRange { file, start, end } => {
                        tier.invalidate_range(&FILES[file], start, end);
                        live.retain(|&(f, i), _| f != file || !(start..end).contains(&i));
                    }
                    Op::InvalidateFile { file } => {
                        tier.invalidate_file(&FILES[file]);
                        live.retain(|&(f, _), _| f != file);
                    }
                    Op::FileWritten { file } => {
                        versions[file] += 1;
                        tier.file_written(&FILES[file], &ver(versions[file]));
                    }
                    Op::NewVersion { file } => {
                        versions[file] += 1;
                        tier.open_file(&FILES[file], &ver(versions[file]));
                        live.retain(|&(f, _), _| f != file);
                        last.retain(|&(f, _), _| f != file);
                    }
                    Op::Flush => tier.flush().unwrap(),
                    Op::Reopen => {
                        drop(tier);
                        tier = open();
                        tier.check_invariants();
                        for (f, v) in FILES.iter().zip(versions) {
                            tier.open_file(f, &ver(v));
                        }
                        live.clear();
                        for (file, f) in FILES.iter().enumerate() {
                            for index in 0..INDICES {
                                if let Some(out) = get(&tier, f, index) {
                                    prop_assert!(last.get(&(file, index)) == Some(&out),
                                        "restart brought back {} {} that was never the last put", file, index);
                                    live.insert((file, index), out);
                                }
                            }
                        }
                    }
                }
                tier.check_invariants();
                let u = tier.usage();
                prop_assert!(u.bytes <= budget(regions, rs));
                prop_assert!(u.pages <= (FILES.len() as u64) * INDICES);
            }
        }
    }

    #[test]
    fn puts_evict_whole_regions_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let tier = small(&dir.path().join("t"), 4, 32 << 10);
        let f = key(1, 12);
        // 7 pages per region, 4 regions.
        for i in 0..100u64 {
            assert!(tier.put_page(&f, i, &page(i, 4096)));
            tier.check_invariants();
        }
        let u = tier.usage();
        assert!(u.evictions >= 70, "{u:?}");
        assert_eq!(u.pages + u.evictions, 100);
        assert!(u.bytes <= budget(4, 32 << 10));
        assert_eq!(get(&tier, &f, 0), None);
        assert_eq!(get(&tier, &f, 99), Some(page(99, 4096)));
        // The newest sealed region is read from the file.
        assert_eq!(get(&tier, &f, 97 - 7), Some(page(97 - 7, 4096)));
        assert_eq!(tier.checksum_failures(), 0);
    }

    #[test]
    fn refused_puts_drop_the_older_copy() {
        let dir = tempfile::tempdir().unwrap();
        let tier = small(&dir.path().join("t"), 4, 32 << 10);
        let f = key(1, 12);
        assert!(tier.put_page(&f, 0, &page(1, 4096)));
        assert!(!tier.put_page(&f, 0, &page(1, 100)));
        assert_eq!(get(&tier, &f, 0), None);
        // 64 KiB pages do not fit 32 KiB regions.
        let big = key(2, 16);
        assert!(tier.put_page(&f, 1, &page(1, 4096)));
        assert!(!tier.put_page(&big, 1, &page(2, 1 << 16)));
        assert_eq!(get(&tier, &big, 1), None);
        let odd = key(3, 40);
        assert!(!tier.put_page(&odd, 0, &[0u8; 8]));
        let mut out = [0u8; 8];
        assert!(!tier.get_page(&odd, 0, &mut out));
        tier.invalidate_range(&odd, 0, 10);
        tier.invalidate_file(&odd);
        tier.open_file(&odd, &ver(1));
        assert_eq!(tier.usage().rejects, 3);
        tier.check_invariants();
    }

    #[test]
    fn warm_restart_serves_only_matching_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let (a, b, c) = (key(1, 12), key(2, 13), key(3, 12));
        {
            let tier = small(&path, 16, 64 << 10);
            for f in [&a, &b, &c] {
                tier.open_file(f, &ver(5));
            }
            for i in 0..40u64 {
                for f in [&a, &b, &c] {
                    assert!(tier.put_page(f, i, &page(i + f.ino * 1000, f.page_size())));
                }
            }
            // A later put overrides an earlier one, across regions.
            assert!(tier.put_page(&a, 3, &page(77, 4096)));
            tier.check_invariants();
        } // drop writes the last, partial region
        let tier = small(&path, 16, 64 << 10);
        tier.check_invariants();
        assert_eq!(tier.recovered_entries(), 120);
        println!("recovered {} entries in {:?}", tier.recovered_entries(), tier.recovery_time());
        // Not opened yet: not served.
        assert_eq!(get(&tier, &a, 0), None);
        tier.open_file(&a, &ver(5));
        tier.open_file(&b, &ver(6));
        for i in 0..40u64 {
            let want = if i == 3 { page(77, 4096) } else { page(i + 1000, 4096) };
            assert_eq!(get(&tier, &a, i).as_deref(), Some(&want[..]), "a {i}");
            assert_eq!(get(&tier, &b, i), None, "b {i}: another version");
            assert_eq!(get(&tier, &c, i), None, "c {i}: never opened");
        }
        // c is still served once opened at its version.
        tier.open_file(&c, &ver(5));
        assert_eq!(get(&tier, &c, 39), Some(page(39 + 3000, 4096)));
        assert_eq!(tier.checksum_failures(), 0);
        tier.check_invariants();
        drop(tier);
        // b's entries were dropped for good; a's and c's survive again.
        let tier = small(&path, 16, 64 << 10);
        tier.open_file(&a, &ver(5));
        tier.open_file(&b, &ver(5));
        assert_eq!(get(&tier, &a, 5), Some(page(1005, 4096)));
        assert_eq!(get(&tier, &b, 5), None);
    }

    #[test]
    fn file_written_keeps_entries_for_the_run_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let f = key(1, 12);
        {
            let tier = small(&path, 8, 32 << 10);
            tier.open_file(&f, &ver(1));
            for i in 0..10u64 {
                assert!(tier.put_page(&f, i, &page(i, 4096)));
            }
            tier.invalidate_page(&f, 4);
            tier.file_written(&f, &ver(2));
            // Still served in this run.
            assert_eq!(get(&tier, &f, 0), Some(page(0, 4096)));
            assert_eq!(get(&tier, &f, 4), None);
            for i in 10..20u64 {
                assert!(tier.put_page(&f, i, &page(i, 4096)));
            }
        }
        let tier = small(&path, 8, 32 << 10);
        tier.open_file(&f, &ver(2));
        for i in 0..10u64 {
            assert_eq!(get(&tier, &f, i), None, "{i} was put before the write");
        }
        for i in 10..20u64 {
            assert_eq!(get(&tier, &f, i), Some(page(i, 4096)), "{i}");
        }
        // Puts without a version are kept for the run, not across a restart.
        let g = key(2, 12);
        assert!(tier.put_page(&g, 0, &page(5, 4096)));
        tier.open_file(&g, &ver(1));
        assert_eq!(get(&tier, &g, 0), Some(page(5, 4096)));
        drop(tier);
        let tier = small(&path, 8, 32 << 10);
        tier.open_file(&g, &ver(1));
        assert_eq!(get(&tier, &g, 0), None);
    }

    #[test]
    fn corrupt_or_truncated_entries_miss_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let (n, rs) = (8, 32 << 10);
        let f = key(1, 12);
        {
            let tier = small(&path, n, rs);
            tier.open_file(&f, &ver(1));
            // 7 pages per region: regions 0 to 4 hold pages 0-6, ..., 28-29.
            for i in 0..30u64 {
                assert!(tier.put_page(&f, i, &page(i, 4096)));
            }
        }
        let geo = Geometry::new(budget(n, rs), rs).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        // Flip a byte of page 1 (region 0, second page).
        let at = geo.region_offset(0) + geo.area + BLOCK + 100;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[!byte[0]], at).unwrap();
        // Cut page 29 (region 4, second page) off.
        file.set_len(geo.region_offset(4) + geo.area + BLOCK + 1000).unwrap();
        drop(file);

        let tier = small(&path, n, rs);
        assert_eq!(tier.recovered_entries(), 30);
        tier.open_file(&f, &ver(1));
        assert_eq!(get(&tier, &f, 1), None);
        assert_eq!(tier.checksum_failures(), 1);
        assert_eq!(get(&tier, &f, 29), None);
        assert_eq!(tier.checksum_failures(), 2);
        // Dropped: no second count.
        assert_eq!(get(&tier, &f, 1), None);
        assert_eq!(tier.checksum_failures(), 2);
        for i in (0..29u64).filter(|&i| i != 1) {
            assert_eq!(get(&tier, &f, i), Some(page(i, 4096)), "{i}");
        }
        assert_eq!(tier.usage().pages, 28);
        assert_eq!(tier.usage().rejects, 2);
        tier.check_invariants();

        // A corrupt summary or superblock loses regions, never panics.
        drop(tier);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 16], geo.region_offset(2) + REGION_HEADER as u64 + 8).unwrap();
        drop(file);
        let tier = small(&path, n, rs);
        tier.open_file(&f, &ver(1));
        assert_eq!(get(&tier, &f, 14), None);
        assert_eq!(get(&tier, &f, 7), Some(page(7, 4096)));
        drop(tier);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xff; 64], 0).unwrap();
        file.write_all_at(&[0xff; 64], geo.sb_size).unwrap();
        drop(file);
        let tier = small(&path, n, rs);
        assert_eq!(tier.recovered_entries(), 0);
        tier.open_file(&f, &ver(1));
        assert_eq!(get(&tier, &f, 7), None);
        tier.check_invariants();
    }

    #[test]
    fn another_geometry_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let f = key(1, 12);
        {
            let tier = small(&path, 8, 32 << 10);
            tier.open_file(&f, &ver(1));
            assert!(tier.put_page(&f, 0, &page(0, 4096)));
        }
        let tier = small(&path, 8, 64 << 10);
        assert_eq!(tier.recovered_entries(), 0);
        tier.open_file(&f, &ver(1));
        assert_eq!(get(&tier, &f, 0), None);
    }

    #[test]
    fn background_writer_under_threads() {
        let dir = tempfile::tempdir().unwrap();
        let tier =
            DiskTier::options().with_region_size(64 << 10).open(dir.path().join("t"), budget(8, 64 << 10)).unwrap();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let tier = &tier;
                s.spawn(move || {
                    let f = key(t, 12);
                    let mut newest = [None::<u64>; 16];
                    for round in 0..2000u64 {
                        let index = round % 16;
                        let seed = t * 1_000_000 + round;
                        let data = page(seed, 4096);
                        newest[index as usize] = tier.put_page(&f, index, &data).then_some(seed);
                        let probe = (round * 7) % 16;
                        if let Some(out) = get(tier, &f, probe) {
                            let want = newest[probe as usize].expect("hit after a refused put");
                            assert_eq!(out, page(want, 4096), "thread {t} index {probe}");
                        } else {
                            newest[probe as usize] = None;
                        }
                    }
                });
            }
        });
        tier.flush().unwrap();
        tier.check_invariants();
        let u = tier.usage();
        println!("background writer: {u:?}, write errors {}", tier.write_errors());
        assert!(u.bytes >= 2 * sb_size_for(8) + 4 * (64 << 10), "regions were written: {u:?}");
        assert!(u.rejects < 4000);
    }

    /// Unmounts a tmpfs when dropped.
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn full_file_system_refuses_puts_and_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("skipped: cannot mount a tmpfs (not root?)");
            return;
        }
        let _mount = Mount(mnt.clone());
        let rs = 64 << 10;
        let tier = small(&mnt.join("t"), 32, rs);
        let f = key(1, 12);
        tier.open_file(&f, &ver(1));
        let mut accepted = Vec::new();
        let mut i = 0u64;
        while tier.write_errors() == 0 && i < 1000 {
            if tier.put_page(&f, i, &page(i, 4096)) {
                accepted.push(i);
            }
            i += 1;
        }
        assert!(tier.write_errors() > 0, "2 MiB of regions fit a 1 MiB tmpfs?");
        let rejects = tier.usage().rejects;
        assert!(rejects > 0, "the failed region's pages are counted");
        // Refused while the error is fresh.
        assert!(!tier.put_page(&f, 5000, &page(5000, 4096)));
        assert_eq!(tier.usage().rejects, rejects + 1);
        tier.check_invariants();
        // What reached the disk is still served.
        let mut hits = 0;
        for &i in &accepted {
            if let Some(out) = get(&tier, &f, i) {
                assert_eq!(out, page(i, 4096));
                hits += 1;
            }
        }
        println!("ENOSPC after {i} puts: {hits} of {} accepted pages served, {rejects} rejects", accepted.len());
        assert!(hits >= 100, "{hits}");
        assert_eq!(tier.checksum_failures(), 0);
        drop(tier);
    }

    /// Writes the image of a tier holding `entries` pages of 10 files
    /// (headers, summaries, superblock, file table; the data left as
    /// holes, which read as zeros).
    fn synthetic_image(path: &Path, geo: &Geometry, entries: u64) {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
        let instance = 42;
        let tag = |f: u64| (1u64 << 32) | (f + 1);
        let per_region = ((geo.region_size - geo.area) / BLOCK).min(u64::from(geo.max_entries));
        let zero_crc = crc32c(&[0u8; 4096]);
        let mut seqs = vec![0u64; geo.regions as usize];
        let mut done = 0;
        let mut slot = 0;
        while done < entries {
            let count = per_region.min(entries - done);
            let mut area = vec![0u8; REGION_HEADER + count as usize * RECORD];
            for i in 0..count {
                let n = done + i;
                let rec = Record {
                    key: key(n % 10, 12),
                    index: n / 10,
                    tag: tag(n % 10),
                    offset: (geo.area + i * BLOCK) as u32,
                    len: 4096,
                    crc: zero_crc,
                };
                rec.encode(&mut area[REGION_HEADER + i as usize * RECORD..][..RECORD]);
            }
            let summary_crc = crc32c(&area[REGION_HEADER..]);
            let data_end = (geo.area + count * BLOCK) as u32;
            RegionHeader { seq: slot + 1, count: count as u32, data_end, summary_crc }.encode(&mut area);
            file.write_all_at(&area, geo.region_offset(slot as u32)).unwrap();
            seqs[slot as usize] = slot + 1;
            done += count;
            slot += 1;
        }
        file.set_len(geo.region_offset(slot as u32)).unwrap();
        let sb = Superblock { region_size: geo.region_size, epoch: 1, writes: 1, instance, seqs };
        file.write_all_at(&sb.encode(geo.sb_size), 0).unwrap();
        let table: Vec<TableEntry> =
            (0..10).map(|f| TableEntry { key: key(f, 12), version: ver(1), tag: tag(f) }).collect();
        std::fs::write(sibling(path, ".files"), encode_table(instance, &table)).unwrap();
    }

    #[test]
    fn recovery_of_100k_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let rs = 16 << 20;
        let bytes = budget(26, rs);
        let geo = Geometry::new(bytes, rs).unwrap();
        assert_eq!(geo.regions, 26);
        synthetic_image(&path, &geo, 100_000);
        let tier = DiskTier::options().with_region_size(rs).inline_writes(true).open(&path, bytes).unwrap();
        assert_eq!(tier.recovered_entries(), 100_000);
        println!(
            "recovered {} entries ({} regions of 16 MiB) in {:?}; index ~{} bytes",
            tier.recovered_entries(),
            tier.usage().bytes / rs,
            tier.recovery_time(),
            tier.index_bytes()
        );
        tier.check_invariants();
        let f = key(3, 12);
        tier.open_file(&f, &ver(1));
        assert_eq!(get(&tier, &f, 9999), Some(vec![0u8; 4096]));
        assert_eq!(get(&tier, &key(4, 12), 9999), None, "not opened");
    }
}
