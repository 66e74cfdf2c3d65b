//! Large pages (`open_with_page_size`) against 4 KiB pages, on real files on
//! disk (ext4, in a temporary directory under /work, or under
//! `$LARGE_BENCH_DIR` if set; removed at the end):
//!
//! - `large/hit16k`: 16 KiB `read_at` hits at random 16 KiB-aligned offsets
//!   of a 1 GiB file resident in our cache, opened with 16 KiB pages (one
//!   page per read) and with 4 KiB pages (four per read), each in its own
//!   1.25 GiB cache; keys a random permutation of all 65,536 16 KiB units
//!   (every resident page once per pass; 1 GiB per pass, above the L3 this
//!   VM reports). Floor: the 16 KiB copy out of a 1 GiB huge-page buffer
//!   holding the file, at the same offsets, no lookup.
//! - `large/cold16k`: 64 `read_at` of whole 16 KiB pages at random offsets
//!   of the cold 1 GiB file per iteration, through caches with
//!   `direct_io(true)` (O_DIRECT: the kernel's cache serves nothing) and
//!   `readahead_max(0)` (a random miss reads what was asked, no window),
//!   the file's pages invalidated before each iteration (outside the
//!   timing); 16 KiB pages vs 4 KiB pages, and 64 O_DIRECT `pread`s of
//!   16 KiB as the floor.
//! - `large/cat1g`: the 1 GiB file streamed the way `examples/cat.rs`
//!   copies it (`mapping().read_pages` 256 KiB at a time, each page's bytes
//!   handed to one `writev` to /dev/null) with no readahead threads, 4 KiB
//!   pages vs 64 KiB pages, in a 4 MiB cache (64 large pages: readahead
//!   windows come apart when a block allocation finds none free; each row
//!   prints its read calls per GiB) and in a 16 MiB one (256 large
//!   pages), and `pread` of 256 KiB + `write` to /dev/null as the floor. The file is hot
//!   in the kernel's cache (buffered, not O_DIRECT): it is read through
//!   once before each row and again whenever 20 s have passed since (this
//!   VM pages idle file cache out after about a minute). Besides wall time
//!   (criterion), each row prints the process's user and system CPU time
//!   per GiB (`getrusage(RUSAGE_SELF)` around each pass; medians over the
//!   passes).
//! - `large/randwrite`: 256 random 4 KiB writes (4 KiB-aligned) into a
//!   256 MiB file and one `sync_data` per iteration, the file opened with
//!   64 KiB pages (writeback writes only the dirty 4 KiB blocks) vs 4 KiB
//!   pages (each its own file and 384 MiB cache), and `pwrite` +
//!   `fdatasync` on a third file. Writes swing widely on this VM, so the
//!   rows run twice in turn (A, B, C, A again, B again) and, after the
//!   group, an interleaved series of 61 rounds (one iteration of each per
//!   round, the order rotating) prints each one's median and MB/s
//!   (10^6 bytes of user data per second).
//!
//! The bench prints the CPU model first. Run: `cargo bench --bench large`.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{IoSlice, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::{fill_cache, permutation, print_working_set, warm_kernel, xorshift};
use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};

const GIB: u64 = 1 << 30;
const K16: usize = 16 << 10;
const K64: usize = 64 << 10;

/// The bench's files: a 1 GiB file of data (read by the read groups) and
/// three 256 MiB files for the writes, in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
    data: PathBuf,
    write_64k: PathBuf,
    write_4k: PathBuf,
    write_plain: PathBuf,
}

const WRITE_SIZE: u64 = 256 << 20;

/// Made by the first group that runs, removed at the end of `main`.
static FILES: OnceLock<Files> = OnceLock::new();

fn files() -> &'static Files {
    FILES.get_or_init(|| {
        let parent = std::env::var_os("LARGE_BENCH_DIR").map_or_else(
            || if Path::new("/work").is_dir() { PathBuf::from("/work") } else { PathBuf::from("/var/tmp") },
            PathBuf::from,
        );
        let dir = tempfile::Builder::new().prefix("page-cache-large-").tempdir_in(&parent).expect("temporary dir");
        let t0 = Instant::now();
        let data = make_file(dir.path(), "data-1g", GIB);
        let write_64k = make_file(dir.path(), "write-64k", WRITE_SIZE);
        let write_4k = make_file(dir.path(), "write-4k", WRITE_SIZE);
        let write_plain = make_file(dir.path(), "write-plain", WRITE_SIZE);
        eprintln!("files: made in {} ({:.1} s)", dir.path().display(), t0.elapsed().as_secs_f64());
        Files { dir, data, write_64k, write_4k, write_plain }
    })
}

/// A data file in `dir` with `common::data_file`'s contents, synced.
fn make_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    common::write_data(&path, size);
    path
}

fn read_only() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true);
    o
}

fn hit16k(c: &mut Criterion) {
    let f = files();
    warm_kernel(&f.data);
    let open = |page_size: usize| {
        let cache = PageCache::new((GIB + GIB / 4) as usize).expect("cache");
        let file = cache.open_with_page_size(&f.data, &read_only(), page_size).expect("open through cache");
        assert_eq!(file.mapping().page_size(), page_size);
        fill_cache(&file);
        let s = cache.stats();
        assert_eq!(s.cached_pages, GIB / page_size as u64, "the whole file should be cached ({page_size}-byte pages)");
        (cache, file)
    };
    let (cache16, file16) = open(K16);
    let (cache4, file4) = open(PAGE_SIZE);
    // The floor: the file's bytes in an anonymous buffer on transparent
    // huge pages, as our arena is.
    let mut floor = memmap2::MmapMut::map_anon(GIB as usize).expect("anonymous mapping");
    let _ = floor.advise(memmap2::Advice::HugePage);
    File::open(&f.data).expect("open").read_exact_at(&mut floor, 0).expect("fill the buffer");

    let units = GIB / K16 as u64;
    let offsets: Vec<u64> = permutation(units, 0x2545_F491_4F6C_DD1D).into_iter().map(|p| p * K16 as u64).collect();
    let mask = offsets.len() - 1;
    print_working_set("large/hit16k", GIB);
    eprintln!("large/hit16k: {} keys, every 16 KiB of the file once per pass", offsets.len());
    let before16 = cache16.stats();
    let before4 = cache4.stats();

    let mut g = c.benchmark_group("large/hit16k");
    g.sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(K16 as u64));
    let mut buf = vec![0u8; K16];
    let mut i = 0usize;
    let mut next = || {
        i = i.wrapping_add(1);
        offsets[i & mask]
    };
    g.bench_function("page_cache_16k_pages", |b| {
        b.iter(|| {
            let n = file16.read_at(&mut buf, next()).expect("read");
            black_box((n, &buf));
        })
    });
    g.bench_function("page_cache_4k_pages", |b| {
        b.iter(|| {
            let n = file4.read_at(&mut buf, next()).expect("read");
            black_box((n, &buf));
        })
    });
    g.bench_function("thp_buffer_copy_floor", |b| {
        b.iter(|| {
            let off = next() as usize;
            buf.copy_from_slice(&floor[off..off + K16]);
            black_box(&buf);
        })
    });
    g.finish();
    for (name, cache, before, reads_per) in [("16k", &cache16, &before16, 1), ("4k", &cache4, &before4, 4)] {
        let s = cache.stats();
        let (hits, misses) = (s.hits - before.hits, s.misses - before.misses);
        eprintln!(
            "large/hit16k {name} pages: page cache hits {hits} ({} optimistic) misses {misses} during the group \
             ({reads_per} page(s) per read)",
            s.optimistic_hits - before.optimistic_hits
        );
        assert_eq!(misses, 0, "the measured reads should all hit");
        assert!(hits > 0, "no hits counted");
    }
}

/// An O_DIRECT-ready buffer of `len` bytes (4 KiB-aligned) inside `raw`.
fn aligned(raw: &mut Vec<u8>, len: usize) -> &mut [u8] {
    raw.resize(len + PAGE_SIZE, 0);
    let a = raw.as_ptr().align_offset(PAGE_SIZE);
    &mut raw[a..a + len]
}

fn cold16k(c: &mut Criterion) {
    const READS: usize = 64;
    let f = files();
    let direct_cache =
        || PageCache::builder().capacity(64 << 20).direct_io(true).readahead_max(0).build().expect("cache");
    let cache16 = direct_cache();
    let cache4 = direct_cache();
    let file16 = cache16.open_with_page_size(&f.data, &read_only(), K16).expect("open");
    let file4 = cache4.open_with_page_size(&f.data, &read_only(), PAGE_SIZE).expect("open");
    let units = GIB / K16 as u64;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut offsets = move || -> Vec<u64> { (0..READS).map(|_| xorshift(&mut seed) % units * K16 as u64).collect() };
    let before16 = cache16.stats();
    let before4 = cache4.stats();
    let mut rounds = [0u64; 2];

    let mut g = c.benchmark_group("large/cold16k");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes((READS * K16) as u64));
    let mut buf = vec![0u8; K16];
    let mut round = |file: &CachedFile, offs: Vec<u64>| {
        file.invalidate().expect("invalidate");
        let t = Instant::now();
        for &o in &offs {
            file.read_exact_at(&mut buf, o).expect("read");
        }
        t.elapsed()
    };
    g.bench_function("page_cache_16k_pages", |b| {
        b.iter_custom(|n| {
            rounds[0] += n;
            (0..n).map(|_| round(&file16, offsets())).sum()
        })
    });
    g.bench_function("page_cache_4k_pages", |b| {
        b.iter_custom(|n| {
            rounds[1] += n;
            (0..n).map(|_| round(&file4, offsets())).sum()
        })
    });
    g.bench_function("pread_o_direct_floor", |b| {
        let std = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&f.data).expect("open O_DIRECT");
        let mut raw = Vec::new();
        let abuf = aligned(&mut raw, K16);
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let offs = offsets();
                let t = Instant::now();
                for &o in &offs {
                    std.read_exact_at(abuf, o).expect("pread");
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    for (name, cache, before, n) in [("16k", &cache16, &before16, rounds[0]), ("4k", &cache4, &before4, rounds[1])] {
        let s = cache.stats();
        let reads = (n * READS as u64).max(1) as f64;
        eprintln!(
            "large/cold16k {name} pages: per 16 KiB read_at {:.2} misses, {:.2} hits, {:.2} read calls to the file",
            (s.misses - before.misses) as f64 / reads,
            (s.hits - before.hits) as f64 / reads,
            (s.read_calls - before.read_calls) as f64 / reads,
        );
    }
}

/// User and system CPU time of the whole process so far.
fn cpu_times() -> (Duration, Duration) {
    // SAFETY: getrusage fills the zeroed struct we own; RUSAGE_SELF is valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Streams the whole file as `examples/cat.rs` does: `read_pages` of
/// `window` bytes, the pages' bytes (clipped at end of file) in one
/// `writev` to `out`.
fn cat_through(file: &CachedFile, out: &mut File, window: usize) -> u64 {
    let m = file.mapping();
    let ps = m.page_size() as u64;
    let len = file.len();
    let batch = (window as u64 / ps).max(1) as usize;
    let mut pages = Vec::with_capacity(batch);
    let mut index = 0u64;
    let mut written = 0u64;
    loop {
        m.read_pages(index, batch, &mut pages).expect("read_pages");
        if pages.is_empty() {
            return written;
        }
        let guards: Vec<_> = pages.iter().map(|p| p.read()).collect();
        let mut slices: Vec<IoSlice<'_>> = guards
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let start = (index + i as u64) * ps;
                IoSlice::new(&data[..(len - start).min(ps) as usize])
            })
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = out.write_vectored(slices).expect("writev");
            written += n as u64;
            IoSlice::advance_slices(&mut slices, n);
        }
        index += pages.len() as u64;
        drop(guards);
        pages.clear();
    }
}

fn cat1g(c: &mut Criterion) {
    const WINDOW: usize = 256 << 10;
    let f = files();
    let mut null = OpenOptions::new().write(true).open("/dev/null").expect("/dev/null");
    let last_warm = Cell::new(Instant::now());
    let warm = || {
        warm_kernel(&f.data);
        last_warm.set(Instant::now());
    };
    let keep_warm = || {
        if last_warm.get().elapsed() > Duration::from_secs(20) {
            warm();
        }
    };
    let mut g = c.benchmark_group("large/cat1g");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(GIB));
    // One pass: its wall time, its user and system ms per GiB recorded.
    let mut cpu: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    let passes = Cell::new(0u64);
    let mut timed = |name: &'static str, pass: &mut dyn FnMut() -> u64| {
        passes.set(passes.get() + 1);
        keep_warm();
        let (u0, s0) = cpu_times();
        let t = Instant::now();
        let bytes = pass();
        let wall = t.elapsed();
        let (u1, s1) = cpu_times();
        assert_eq!(bytes, GIB, "{name}: short copy");
        let per_gib = |d: Duration| d.as_secs_f64() * 1e3 * GIB as f64 / bytes as f64;
        match cpu.iter_mut().find(|(n, ..)| *n == name) {
            Some((_, u, s)) => {
                u.push(per_gib(u1 - u0));
                s.push(per_gib(s1 - s0));
            }
            None => cpu.push((name, vec![per_gib(u1 - u0)], vec![per_gib(s1 - s0)])),
        }
        wall
    };
    let rows = [
        ("page_cache_4k_pages_4m_cache", PAGE_SIZE, 4 << 20),
        ("page_cache_64k_pages_4m_cache", K64, 4 << 20),
        ("page_cache_4k_pages_16m_cache", PAGE_SIZE, 16 << 20),
        ("page_cache_64k_pages_16m_cache", K64, 16 << 20),
    ];
    for (name, page_size, capacity) in rows {
        let cache = PageCache::builder().capacity(capacity).readahead_threads(0).build().expect("cache");
        let file = cache.open_with_page_size(&f.data, &read_only(), page_size).expect("open through cache");
        warm();
        let before = cache.stats();
        passes.set(0);
        g.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| timed(name, &mut || cat_through(&file, &mut null, WINDOW))).sum())
        });
        let s = cache.stats();
        let per_pass = |n: u64| n as f64 / passes.get().max(1) as f64;
        eprintln!(
            "large/cat1g {name}: per GiB {:.0} misses, {:.0} hits, {:.0} read calls ({:.0} KiB each), \
             {:.0} pages read ahead",
            per_pass(s.misses - before.misses),
            per_pass(s.hits - before.hits),
            per_pass(s.read_calls - before.read_calls),
            GIB as f64 / 1024.0 / per_pass(s.read_calls - before.read_calls).max(1.0),
            per_pass(s.readahead_pages - before.readahead_pages)
        );
    }
    let std = File::open(&f.data).expect("open");
    let mut buf = vec![0u8; WINDOW];
    warm();
    g.bench_function("pread_write_floor", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    timed("pread_write_floor", &mut || {
                        let mut off = 0u64;
                        loop {
                            let k = std.read_at(&mut buf, off).expect("pread");
                            if k == 0 {
                                return off;
                            }
                            null.write_all(&buf[..k]).expect("write");
                            off += k as u64;
                        }
                    })
                })
                .sum()
        })
    });
    g.finish();
    for (name, user, sys) in &mut cpu {
        let passes = user.len();
        eprintln!(
            "large/cat1g {name}: user {:.1} ms/GiB, system {:.1} ms/GiB (medians of {passes} passes, \
             getrusage RUSAGE_SELF; the file hot in the kernel's cache)",
            median(user),
            median(sys)
        );
    }
}

/// The random 4 KiB offsets of the write group, over the 256 MiB files.
struct WriteOffsets {
    offsets: Vec<u64>,
    i: usize,
}

const WRITES: usize = 256;

impl WriteOffsets {
    fn new(seed: u64) -> WriteOffsets {
        let mut s = seed;
        let blocks = WRITE_SIZE / PAGE_SIZE as u64;
        WriteOffsets { offsets: (0..1 << 16).map(|_| xorshift(&mut s) % blocks * PAGE_SIZE as u64).collect(), i: 0 }
    }

    fn batch(&mut self) -> &[u64] {
        if self.i + WRITES > self.offsets.len() {
            self.i = 0;
        }
        self.i += WRITES;
        &self.offsets[self.i - WRITES..self.i]
    }
}

fn randwrite(c: &mut Criterion) {
    let f = files();
    let mut rw = OpenOptions::new();
    rw.read(true).write(true);
    let cache64 = PageCache::new(384 << 20).expect("cache");
    let cache4 = PageCache::new(384 << 20).expect("cache");
    let file64 = cache64.open_with_page_size(&f.write_64k, &rw, K64).expect("open through cache");
    let file4 = cache4.open_with_page_size(&f.write_4k, &rw, PAGE_SIZE).expect("open through cache");
    let plain = rw.open(&f.write_plain).expect("open");
    let mut data = vec![0u8; PAGE_SIZE];
    let mut stamp = 0u8;
    // One iteration: 256 writes and one sync.
    let mut offs = WriteOffsets::new(0x9E6C_63D0_676A_9A99);
    let mut one = |which: usize| -> Duration {
        stamp = stamp.wrapping_add(1);
        data.fill(stamp | 1);
        let batch = offs.batch().to_vec();
        let t = Instant::now();
        match which {
            0 | 1 => {
                let file = if which == 0 { &file64 } else { &file4 };
                for &o in &batch {
                    file.write_all_at(&data, o).expect("write");
                }
                file.sync_data().expect("sync_data");
            }
            _ => {
                for &o in &batch {
                    plain.write_all_at(&data, o).expect("pwrite");
                }
                plain.sync_data().expect("fdatasync");
            }
        }
        t.elapsed()
    };
    let names = ["page_cache_64k_pages", "page_cache_4k_pages", "pwrite_fdatasync"];
    let before = [cache64.stats(), cache4.stats()];
    let mut g = c.benchmark_group("large/randwrite");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes((WRITES * PAGE_SIZE) as u64));
    for (which, name) in names.iter().enumerate() {
        g.bench_function(*name, |b| b.iter_custom(|n| (0..n).map(|_| one(which)).sum()));
    }
    for (which, name) in names.iter().enumerate().take(2) {
        g.bench_function(format!("{name}_again"), |b| b.iter_custom(|n| (0..n).map(|_| one(which)).sum()));
    }
    g.finish();
    for (k, cache) in [&cache64, &cache4].into_iter().enumerate() {
        let s = cache.stats();
        eprintln!(
            "large/randwrite {}: wrote back {} pages in {} write calls, {} read calls; {} dirty left",
            names[k],
            s.writeback_pages - before[k].writeback_pages,
            s.write_calls - before[k].write_calls,
            s.read_calls - before[k].read_calls,
            s.dirty_pages
        );
    }
    // Interleaved: one iteration of each per round, the order rotating.
    const ROUNDS: usize = 61;
    let mut times: [Vec<f64>; 3] = Default::default();
    for r in 0..ROUNDS {
        for k in 0..3 {
            let which = (r + k) % 3;
            times[which].push(one(which).as_secs_f64());
        }
    }
    let base = median(&mut times[1].clone());
    for (which, name) in names.iter().enumerate() {
        let med = median(&mut times[which]);
        let mb_s = (WRITES * PAGE_SIZE) as f64 / med / 1e6;
        eprintln!(
            "large/randwrite interleaved {name}: median {:.3} ms per 256 writes + sync, {mb_s:.2} MB/s \
             ({ROUNDS} rounds; time / 4k pages' {:.3})",
            med * 1e3,
            med / base
        );
    }
}

criterion_group!(benches, hit16k, cold16k, cat1g, randwrite);

// criterion_main!, with the machine printed first and the files removed last.
fn main() {
    common::print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let Some(f) = FILES.get() {
        let _ = std::fs::remove_dir_all(f.dir.path());
    }
}
