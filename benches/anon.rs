//! Anonymous memory (`PageCache::anonymous`, issue 26): an external merge
//! sort of 4x the memory budget, its sorted runs spilled to anonymous
//! memory that the cache swaps out, against the same sort spilling to
//! temporary files and against a sort with unlimited memory; and, first,
//! the reclaim balance between file pages and anonymous memory at four
//! swappiness values (printed, `balance` in the filter; see `balance()`).
//!
//! criterion group `external_sort` (one iteration = one whole sort of
//! `DATA` = 4 x `BUDGET` bytes of 64-byte records with random u64 keys, in
//! runs of `BUDGET / 4` sorted in a `Vec`, merged 16 ways with 64 KiB
//! buffered reads per run; the output folded into a checksum and its order
//! checked, never kept):
//! - `anon`: runs written to anonymous `CachedFile`s of a cache of
//!   `BUDGET` bytes, no tier: what does not fit is swapped out raw.
//! - `anon_64k`: the same with the runs' memory in 64 KiB pages
//!   (`anonymous_with_page_size`): a sixteenth of the page operations.
//! - `anon_tier`: the same total memory split in half: capacity
//!   `BUDGET / 2` and `compressed_tier(BUDGET / 2)`; evicted anonymous
//!   pages go to the tier first (frontswap), its cold entries to the swap
//!   area in compressed form. Loads from the tier are exclusive.
//! - `anon_tier_keep`: `anon_tier` with
//!   `frontswap_exclusive_loads(false)`: a page read back from the tier
//!   stays there, so the merge's pages are not compressed again.
//! - `tempfiles`: runs written with `std::fs` to unlinked temporary files
//!   in /var/tmp/page-cache-bench/ (ext4, not tmpfs) and read back with
//!   `pread`: the kernel's page cache holds them (with no limit but the
//!   machine's memory; nothing is swapped).
//! - `in_memory`: all the records sorted in one `Vec` (the floor).
//!
//! The run buffer (`BUDGET / 4`) and the merge buffers (1 MiB) are the
//! program's own memory, outside the cache's budget, the same for every
//! external variant. Generating the records (xorshift keys, payloads that
//! are a function of the key) is timed in every variant.
//!
//! Printed before the group (not timings): the CPU, the lz4 compression
//! ratio of 4 KiB pages of a sorted run (the payload is tuned for about
//! 2x), and one sort of each variant: its wall time (and the merge's part
//! of it), the bytes written to the swap area (`Stats::swap_bytes_written`)
//! or to the temporary files (by the program), `write_bytes` and
//! `cancelled_write_bytes` of /proc/self/io (what the kernel accounted to
//! storage, and what it then dropped unwritten because the file went away
//! first), and the cache's swap and frontswap counters (with 2 MiB
//! readahead windows, 16 runs read in turn outgrew the 32 MiB and 2.1
//! pages were read back per page swapped out, which is why anonymous
//! memory reads ahead at most 64 KiB). After the group: the variants
//! again, interleaved (9 rounds, each running every variant once in a
//! rotating order), their medians; then each variant's median over the
//! //! group's iterations and the ratios the goal is about (the
//! anonymous sort at least as fast as temporary files; at most half their
//! bytes written with the compressed tier when the data compresses 2x).
//! Every sort checks its output (order, count, a checksum of the keys,
//! every payload), so a broken sort panics instead of being timed.
//!
//! The swap file lives in /var/tmp/page-cache-bench/swap/.
//! Run: `cargo bench --bench anon`.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{print_machine, xorshift, DIR, MIB};
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use page_cache::{CachedFile, PageCache, Stats, PAGE_SIZE};

/// The memory budget: the cache's capacity (plus tier) in the anonymous
/// variants.
const BUDGET: usize = 32 * MIB;
/// The data sorted: 4x the budget.
const DATA: usize = 4 * BUDGET;
/// One record: a big-endian u64 key, then a payload that is a function of
/// the key (`RANDOM` bytes of its hash, then a field string it picks).
const REC: usize = 64;
type Rec = [u8; REC];
/// Bytes of the payload that do not compress. With 15, 4 KiB pages of a
/// sorted run compress about 2x with lz4 (printed at the start).
const RANDOM: usize = 15;
/// A run: what is sorted in memory at once.
const RUN: usize = BUDGET / 4;
const RUN_RECS: usize = RUN / REC;
const RUNS: usize = DATA / RUN;
const RECS: usize = DATA / REC;
/// Bytes read from one run at a time in the merge.
const READ: usize = 64 << 10;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The tail of a record's payload: one of a few strings (a record's fields
/// as text), picked by the key's hash.
const FIELDS: [&[u8; 48]; 8] = [
    b"status=shipped;region=europe;priority=low;note=-",
    b"status=pending;region=asia;priority=high;note=--",
    b"status=shipped;region=asia;priority=normal;n=---",
    b"status=returned;region=americas;priority=low;n=-",
    b"status=pending;region=europe;priority=normal;n=-",
    b"status=cancelled;region=asia;priority=low;note=-",
    b"status=shipped;region=americas;priority=high;n=-",
    b"status=pending;region=africa;priority=low;note=-",
];

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(r: &Rec) -> u64 {
    u64::from_be_bytes(r[..8].try_into().expect("8 bytes"))
}

/// The record of `key`.
fn make(key: u64, r: &mut Rec) {
    r[..8].copy_from_slice(&key.to_be_bytes());
    let mut h = mix(key);
    for c in r[8..8 + RANDOM].chunks_mut(8) {
        c.copy_from_slice(&h.to_le_bytes()[..c.len()]);
        h = mix(h);
    }
    let field = FIELDS[(mix(key ^ SEED) % FIELDS.len() as u64) as usize];
    r[8 + RANDOM..].copy_from_slice(&field[..REC - 8 - RANDOM]);
}

/// The unsorted records of run `run` into `out` (cleared first).
fn generate(run: usize, out: &mut Vec<Rec>) {
    out.clear();
    let mut s = mix(SEED ^ run as u64) | 1;
    let mut r = [0u8; REC];
    for _ in 0..RUN_RECS {
        make(xorshift(&mut s), &mut r);
        out.push(r);
    }
}

/// What a sort's output must fold into: its record count and the wrapping
/// sum of `mix(key)` over its records.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Check {
    count: u64,
    sum: u64,
}

/// Folds the sorted output: checks its order and every payload.
struct Sink {
    check: Check,
    last: u64,
    expect: Rec,
}

impl Sink {
    fn new() -> Sink {
        Sink { check: Check::default(), last: 0, expect: [0; REC] }
    }
    fn push(&mut self, r: &Rec) {
        let k = key(r);
        assert!(k >= self.last, "output out of order at record {}: {k:#x} after {:#x}", self.check.count, self.last);
        make(k, &mut self.expect);
        assert!(self.expect == *r, "record {} (key {k:#x}) has a wrong payload", self.check.count);
        self.last = k;
        self.check.count += 1;
        self.check.sum = self.check.sum.wrapping_add(mix(k));
    }
}

/// What the input folds into (computed once, untimed).
fn expected() -> Check {
    let mut c = Check::default();
    let mut run = Vec::with_capacity(RUN_RECS);
    for i in 0..RUNS {
        generate(i, &mut run);
        for r in &run {
            c.count += 1;
            c.sum = c.sum.wrapping_add(mix(key(r)));
        }
    }
    c
}

/// Where the sorted runs go.
enum Spill<'a> {
    /// The cache, the page size of the runs' memory, the runs.
    Anon(&'a PageCache, usize, Vec<CachedFile>),
    Files(Vec<File>),
}

impl Spill<'_> {
    fn push(&mut self, bytes: &[u8]) {
        match self {
            Spill::Anon(cache, page_size, runs) => {
                let f = cache.anonymous_with_page_size(bytes.len() as u64, *page_size).expect("anonymous");
                f.write_all_at(bytes, 0).expect("write to anonymous memory");
                runs.push(f);
            }
            Spill::Files(runs) => {
                let mut f = tempfile::tempfile_in(DIR).expect("tempfile");
                f.write_all(bytes).expect("write to temporary file");
                runs.push(f);
            }
        }
    }
    fn read(&self, run: usize, buf: &mut [u8], off: u64) {
        match self {
            Spill::Anon(_, _, runs) => runs[run].read_exact_at(buf, off).expect("read anonymous memory"),
            Spill::Files(runs) => runs[run].read_exact_at(buf, off).expect("read temporary file"),
        }
    }
}

/// The external sort: runs sorted in a `Vec` and spilled, then merged;
/// returns the output's check and when the merge started.
fn external_sort(mut spill: Spill) -> (Check, Instant) {
    let mut run = Vec::with_capacity(RUN_RECS);
    for i in 0..RUNS {
        generate(i, &mut run);
        run.sort_unstable_by_key(key);
        spill.push(run.as_flattened());
    }
    drop(run);
    let merge = Instant::now();
    struct Cursor {
        buf: Vec<Rec>,
        at: usize,
        next_off: u64,
    }
    let per = READ / REC;
    let mut cursors: Vec<Cursor> = Vec::with_capacity(RUNS);
    let mut heap = BinaryHeap::with_capacity(RUNS);
    for i in 0..RUNS {
        let mut buf = vec![[0u8; REC]; per];
        spill.read(i, buf.as_flattened_mut(), 0);
        heap.push(Reverse((key(&buf[0]), i)));
        cursors.push(Cursor { buf, at: 0, next_off: READ as u64 });
    }
    let mut sink = Sink::new();
    while let Some(Reverse((_, i))) = heap.pop() {
        let c = &mut cursors[i];
        sink.push(&c.buf[c.at]);
        c.at += 1;
        if c.at == per {
            if c.next_off == RUN as u64 {
                continue;
            }
            spill.read(i, c.buf.as_flattened_mut(), c.next_off);
            c.next_off += READ as u64;
            c.at = 0;
        }
        heap.push(Reverse((key(&c.buf[c.at]), i)));
    }
    drop(spill);
    (sink.check, merge)
}

fn in_memory_sort() -> Check {
    let mut all: Vec<Rec> = Vec::with_capacity(RECS);
    let mut run = Vec::with_capacity(RUN_RECS);
    for i in 0..RUNS {
        generate(i, &mut run);
        all.extend_from_slice(&run);
    }
    all.sort_unstable_by_key(key);
    let mut sink = Sink::new();
    for r in &all {
        sink.push(r);
    }
    sink.check
}

const VARIANTS: [&str; 6] = ["anon", "anon_64k", "anon_tier", "anon_tier_keep", "tempfiles", "in_memory"];

/// /proc/self/io's `write_bytes` and `cancelled_write_bytes`.
fn proc_io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field =
        |name: &str| s.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok()).unwrap_or(0);
    (field("write_bytes"), field("cancelled_write_bytes"))
}

struct Outcome {
    time: Duration,
    /// The merge's share of `time` (external sorts).
    merge: Option<Duration>,
    check: Check,
    stats: Option<Stats>,
    /// /proc/self/io deltas over the sort, the cache's build and drop included.
    write_bytes: u64,
    cancelled: u64,
}

fn swap_dir() -> std::path::PathBuf {
    let d = Path::new(DIR).join("swap");
    std::fs::create_dir_all(&d).expect("swap dir");
    d
}

/// One sort of variant `which` (the anonymous ones with the default
/// readahead, or `readahead_max(bytes)`); the cache's build and drop are
/// not timed.
fn sort(which: usize, expect: Check, readahead: Option<usize>) -> Outcome {
    let io0 = proc_io();
    let (time, merge, check, stats) = match VARIANTS[which] {
        "anon" | "anon_64k" | "anon_tier" | "anon_tier_keep" => {
            let tier = if VARIANTS[which].starts_with("anon_tier") { BUDGET / 2 } else { 0 };
            let page_size = if VARIANTS[which] == "anon_64k" { 64 << 10 } else { 4096 };
            let mut b = PageCache::builder().frontswap_exclusive_loads(VARIANTS[which] != "anon_tier_keep");
            if let Some(bytes) = readahead {
                b = b.readahead_max(bytes);
            }
            let cache = b
                .capacity(BUDGET - tier)
                .compressed_tier(tier)
                .swap_dir(swap_dir())
                .swap_limit(2 * DATA as u64)
                .build()
                .expect("cache");
            let t0 = Instant::now();
            let (check, merge) = external_sort(Spill::Anon(&cache, page_size, Vec::with_capacity(RUNS)));
            let end = Instant::now();
            (end - t0, Some(end - merge), check, Some(cache.stats()))
        }
        "tempfiles" => {
            std::fs::create_dir_all(DIR).expect("bench dir");
            let t0 = Instant::now();
            let (check, merge) = external_sort(Spill::Files(Vec::with_capacity(RUNS)));
            let end = Instant::now();
            (end - t0, Some(end - merge), check, None)
        }
        _ => {
            let t0 = Instant::now();
            let check = in_memory_sort();
            (t0.elapsed(), None, check, None)
        }
    };
    assert_eq!(check, expect, "{}: the sorted output is not the input's records", VARIANTS[which]);
    let io1 = proc_io();
    Outcome { time, merge, check, stats, write_bytes: io1.0 - io0.0, cancelled: io1.1 - io0.1 }
}

/// lz4 on 4 KiB pages of a sorted run, as the compressed tier sees them.
fn print_compression() {
    let mut run = Vec::with_capacity(RUN_RECS);
    generate(0, &mut run);
    let raw = lz4_ratio(run.as_flattened());
    run.sort_unstable_by_key(key);
    let sorted = lz4_ratio(run.as_flattened());
    eprintln!(
        "records: {REC} B ({RANDOM} B of the payload incompressible); lz4 on 4 KiB pages of a sorted run: {sorted:.2}x \
         (unsorted input: {raw:.2}x)"
    );
    // The compressed tier's floor: compressing (and decompressing) pages
    // of sorted runs, per 4 KiB page, with liblz4 as the tier calls it.
    let bytes = run.as_flattened();
    let t = Instant::now();
    let packed: Vec<Vec<u8>> =
        bytes.chunks(PAGE_SIZE).map(|p| lz4::block::compress(p, None, false).expect("lz4")).collect();
    let c = t.elapsed();
    let mut out = vec![0u8; PAGE_SIZE];
    let t = Instant::now();
    for p in &packed {
        lz4::block::decompress_to_buffer(p, Some(PAGE_SIZE as i32), &mut out).expect("lz4");
    }
    let d = t.elapsed();
    let n = packed.len() as f64;
    eprintln!(
        "lz4 per 4 KiB page of a sorted run: compress {:.2} us, decompress {:.2} us (the tier's floor: the pages it \
         stores times the first, the pages it loads or reads back times the second)",
        c.as_secs_f64() * 1e6 / n,
        d.as_secs_f64() * 1e6 / n
    );
}

fn lz4_ratio(bytes: &[u8]) -> f64 {
    let packed: usize =
        bytes.chunks(PAGE_SIZE).map(|p| lz4::block::compress(p, None, false).expect("lz4").len().min(PAGE_SIZE)).sum();
    bytes.len() as f64 / packed as f64
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn print_outcome(name: &str, o: &Outcome) {
    let written = match &o.stats {
        Some(s) => format!("swap area {} ({} B)", mib(s.swap_bytes_written), s.swap_bytes_written),
        None if name == "tempfiles" => format!("temporary files {} (by the program)", mib(DATA as u64)),
        None => "nothing".into(),
    };
    eprintln!(
        "{name}: {:?}{}, wrote {written}; /proc/self/io write_bytes {} cancelled_write_bytes {}; {} records",
        o.time,
        o.merge.map_or_else(String::new, |m| format!(" (runs {:?}, merge {m:?})", o.time - m)),
        mib(o.write_bytes),
        mib(o.cancelled),
        o.check.count
    );
    if let Some(s) = &o.stats {
        eprintln!(
            "  swap_outs {} swap_ins {} swap_pages {} swap_bytes_written {} swap_bytes_read {} frontswap_stores {} \
             frontswap_loads {} frontswap_writebacks {} anon_pages {}; {:.0} B written per page swapped out \
             (64 B units: a compressed page takes whole units)",
            s.swap_outs,
            s.swap_ins,
            s.swap_pages,
            s.swap_bytes_written,
            s.swap_bytes_read,
            s.frontswap_stores,
            s.frontswap_loads,
            s.frontswap_writebacks,
            s.anon_pages,
            s.swap_bytes_written as f64 / s.swap_outs.max(1) as f64
        );
    }
}

fn external(c: &mut Criterion) {
    if !common::group_wanted("external_sort") {
        return;
    }
    eprintln!(
        "external sort: {} of records, memory budget {} (runs of {}, {RUNS} runs, {} KiB reads in the merge)",
        mib(DATA as u64),
        mib(BUDGET as u64),
        mib(RUN as u64),
        READ >> 10
    );
    print_compression();
    let expect = expected();
    let once: Vec<Outcome> = (0..VARIANTS.len()).map(|k| sort(k, expect, None)).collect();
    for (name, o) in VARIANTS.iter().zip(&once) {
        print_outcome(name, o);
    }
    let swap = |o: &Outcome| o.stats.as_ref().map_or(0, |s| s.swap_bytes_written) as f64;
    eprintln!(
        "bytes written / temporary files' {}: anon {:.3}, anon_tier {:.3}, anon_tier_keep {:.3} (goal: at most 0.5)",
        mib(DATA as u64),
        swap(&once[0]) / DATA as f64,
        swap(&once[2]) / DATA as f64,
        swap(&once[3]) / DATA as f64
    );

    let times: RefCell<[Vec<Duration>; 6]> = RefCell::new(Default::default());
    let mut g = c.benchmark_group("external_sort");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        // One sort per sample (a sort takes longer than 0.4 s here).
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(DATA as u64));
    for (which, name) in VARIANTS.iter().enumerate() {
        g.bench_function(*name, |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let t = sort(which, expect, None).time;
                        times.borrow_mut()[which].push(t);
                        t
                    })
                    .sum()
            })
        });
    }
    g.finish();
    // The same variants interleaved (each round runs every one, in an
    // order that rotates): ratios that do not depend on what ran before.
    let inter: [Duration; 6] = common::interleaved_medians(9, |which| sort(which, expect, None).time);
    eprintln!(
        "external_sort interleaved medians (9 rounds): {}; anon / tempfiles {:.2}, anon_64k / tempfiles {:.2}, \
         anon_tier / tempfiles {:.2}, anon_tier_keep / tempfiles {:.2}",
        VARIANTS.iter().zip(&inter).map(|(n, t)| format!("{n} {t:.1?}")).collect::<Vec<_>>().join(", "),
        inter[0].as_secs_f64() / inter[4].as_secs_f64(),
        inter[1].as_secs_f64() / inter[4].as_secs_f64(),
        inter[2].as_secs_f64() / inter[4].as_secs_f64(),
        inter[3].as_secs_f64() / inter[4].as_secs_f64()
    );
    let medians = times.into_inner().map(|mut v| {
        v.sort();
        v.get(v.len() / 2).copied()
    });
    if let [Some(anon), Some(big), Some(tier), Some(keep), Some(files), Some(mem)] = medians {
        eprintln!(
            "external_sort medians (warm-up included): anon {anon:?}, anon_64k {big:?}, anon_tier {tier:?}, \
             anon_tier_keep {keep:?}, tempfiles {files:?}, in_memory {mem:?}; anon / tempfiles {:.2}, \
             anon_64k / tempfiles {:.2}, anon_tier / tempfiles {:.2}, anon_tier_keep / tempfiles {:.2} \
             (goal: at most 1), anon / in_memory {:.2}",
            anon.as_secs_f64() / files.as_secs_f64(),
            big.as_secs_f64() / files.as_secs_f64(),
            tier.as_secs_f64() / files.as_secs_f64(),
            keep.as_secs_f64() / files.as_secs_f64(),
            anon.as_secs_f64() / mem.as_secs_f64()
        );
    }
}

/// A file backing that counts the bytes read from it.
struct Counting {
    inner: page_cache::FileBacking,
    read: std::sync::atomic::AtomicU64,
}

impl page_cache::Backing for Counting {
    fn read_vectored_at(&self, bufs: &mut [std::io::IoSliceMut<'_>], offset: u64) -> std::io::Result<usize> {
        let n = self.inner.read_vectored_at(bufs, offset)?;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn write_vectored_at(&self, bufs: &[std::io::IoSlice<'_>], offset: u64) -> std::io::Result<usize> {
        self.inner.write_vectored_at(bufs, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

/// The reclaim balance (`Builder::swappiness`), printed, not timed: one
/// cache of 16 MiB shared by a file of 12 MiB read at random (a hot set
/// three quarters of the cache) and 16 MiB of anonymous memory written
/// once and then read and rewritten at random, one file read per
/// anonymous access; 200,000 rounds after the setup. Printed per
/// swappiness: the file bytes read from disk, the pages swapped out and
/// in, the pages of each kind reclaim took, the anonymous pages it passed
/// over, and the costs the balance weighed at the end.
fn balance() {
    print_machine();
    if !common::group_wanted("balance") {
        return;
    }
    const CACHE: usize = 16 * MIB;
    let path = common::data_file("balance-12m", 12 * MIB as u64);
    eprintln!("balance: a {} cache, a 12 MiB file read at random and 16 MiB of anonymous memory", mib(CACHE as u64));
    for swappiness in [0u8, 60, 100, 200] {
        let cache = PageCache::builder()
            .capacity(CACHE)
            .readahead_max(0)
            .swap_dir(swap_dir())
            .swappiness(swappiness)
            .build()
            .expect("cache");
        let backing = std::sync::Arc::new(Counting {
            inner: page_cache::FileBacking::new(File::open(&path).expect("data file"), false),
            read: 0.into(),
        });
        let file = cache.open_backing(backing.clone(), false).expect("open");
        let anon = cache.anonymous(16 * MIB as u64).expect("anonymous");
        let mut page = vec![0u8; 4096];
        for i in 0..(16 * MIB / 4096) as u64 {
            page.fill(i as u8);
            anon.write_all_at(&page, i * 4096).expect("write");
        }
        let (pages_file, pages_anon) = ((12 * MIB / 4096) as u64, (16 * MIB / 4096) as u64);
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(swappiness);
        let before = (cache.stats(), backing.read.load(std::sync::atomic::Ordering::Relaxed));
        let t = Instant::now();
        for round in 0..200_000u64 {
            let f = xorshift(&mut s) % pages_file;
            file.read_exact_at(&mut page, f * 4096).expect("file read");
            let a = xorshift(&mut s) % pages_anon;
            if round % 4 == 0 {
                anon.write_all_at(&page, a * 4096).expect("anon write");
            } else {
                anon.read_exact_at(&mut page, a * 4096).expect("anon read");
            }
        }
        let took = t.elapsed();
        let (st, read) = (cache.stats(), backing.read.load(std::sync::atomic::Ordering::Relaxed));
        let (s0, r0) = before;
        eprintln!(
            "  swappiness {swappiness:>3}: {took:>8.1?}, file read {:>6.1} MiB, swap_outs {:>6}, swap_ins {:>6}, \
             reclaimed file {:>6} anon {:>6}, anon passed over {:>6}, costs anon {} file {}",
            (read - r0) as f64 / MIB as f64,
            st.swap_outs - s0.swap_outs,
            st.swap_ins - s0.swap_ins,
            st.file_reclaims - s0.file_reclaims,
            st.anon_reclaims - s0.anon_reclaims,
            st.anon_rotations - s0.anon_rotations,
            st.reclaim_anon_cost,
            st.reclaim_file_cost
        );
    }
}

fn all(c: &mut Criterion) {
    balance();
    external(c);
}

criterion_group!(benches, all);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
