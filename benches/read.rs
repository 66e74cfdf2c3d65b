//! Reads through the cache against the kernel's page cache: random 4 KiB
//! hits and sequential 1 MiB reads on a 1 GiB file that is resident in both
//! caches (vs `pread`, a copy out of a prefaulted mmap, and a copy out of a
//! huge-page buffer with no lookup at all, the floor), and a cold
//! sequential pass with O_DIRECT underneath (vs `dd iflag=direct` and
//! in-process O_DIRECT `pread`), and a file streamed once through a 4 MiB
//! cache (vs `pread`).
//!
//! The data files live in /var/tmp/page-cache-bench/ and are reused across
//! runs. Run: `cargo bench --bench read`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::{data_file, xorshift, DIR, MIB};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};

const GIB: u64 = 1 << 30;

/// Reads the whole file with buffered reads, so the kernel caches it (this
/// VM drops idle file cache after about a minute).
fn warm_kernel(path: &Path) {
    let f = File::open(path).expect("open");
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while let Ok(n @ 1..) = f.read_at(&mut buf, off) {
        off += n as u64;
    }
}

/// Reads the whole file through the cache; every page ends up cached.
fn fill_cache(file: &CachedFile) {
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while off < file.len() {
        off += file.read_at(&mut buf, off).expect("read through cache") as u64;
    }
}

/// The 1 GiB file, hot in the kernel's cache and in a 1.25 GiB page cache,
/// plus a std handle and a prefaulted mapping of it.
struct Hot {
    path: PathBuf,
    cache: PageCache,
    file: CachedFile,
    std: File,
    map: memmap2::Mmap,
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        let path = data_file("data-1g", GIB);
        warm_kernel(&path);
        let cache = PageCache::new((GIB + GIB / 4) as usize).expect("cache");
        let file = cache.open(&path).expect("open through cache");
        fill_cache(&file);
        let s = cache.stats();
        assert_eq!(s.cached_pages, GIB / PAGE_SIZE as u64, "the whole file should be cached");
        let std = File::open(&path).expect("open");
        // SAFETY: nothing writes or truncates the data file while it is mapped
        // (it is made once by this benchmark and only read afterwards).
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&std) }.expect("mmap");
        let touched: u64 = map.iter().step_by(PAGE_SIZE).map(|&b| b as u64).sum();
        black_box(touched);
        Hot { path, cache, file, std, map }
    })
}

/// The floor under both hot groups: a 1 GiB anonymous buffer on
/// transparent huge pages, as our arena is, filled with the file's bytes.
/// Copying out of it is a copy with no index, no lookup and no reference:
/// what reading from any in-memory cache costs at least.
fn thp_buffer() -> &'static memmap2::MmapMut {
    static BUF: OnceLock<memmap2::MmapMut> = OnceLock::new();
    BUF.get_or_init(|| {
        let mut m = memmap2::MmapMut::map_anon(GIB as usize).expect("anonymous mapping");
        let _ = m.advise(memmap2::Advice::HugePage);
        let f = File::open(&hot().path).expect("open");
        f.read_exact_at(&mut m, 0).expect("fill the buffer");
        m
    })
}

/// Before a hot group: the kernel and our cache both hold the whole file.
fn rewarm(h: &Hot) {
    warm_kernel(&h.path);
    fill_cache(&h.file);
    let touched: u64 = h.map.iter().step_by(PAGE_SIZE).map(|&b| b as u64).sum();
    black_box(touched);
}

fn report_misses(h: &Hot, group: &str, before: &page_cache::Stats) {
    let s = h.cache.stats();
    eprintln!("{group}: page cache hits {} misses {} during the group", s.hits - before.hits, s.misses - before.misses);
}

fn random_4k_hits(c: &mut Criterion) {
    let h = hot();
    let floor = thp_buffer();
    rewarm(h);
    let pages = GIB / PAGE_SIZE as u64;
    let mut seed = 0x2545_F491_4F6C_DD1D;
    let offsets: Vec<u64> = (0..1 << 16).map(|_| xorshift(&mut seed) % pages * PAGE_SIZE as u64).collect();
    let mask = offsets.len() - 1;
    let before = h.cache.stats();
    let mut g = c.benchmark_group("random_4k_hits");
    g.sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(PAGE_SIZE as u64));
    let mut buf = [0u8; PAGE_SIZE];
    let mut i = 0usize;
    let mut next = || {
        i = i.wrapping_add(1);
        offsets[i & mask]
    };
    g.bench_function("page_cache_read_at", |b| {
        b.iter(|| {
            let n = h.file.read_at(&mut buf, next()).expect("read");
            black_box((n, &buf));
        })
    });
    g.bench_function("pread", |b| {
        b.iter(|| {
            let n = h.std.read_at(&mut buf, next()).expect("pread");
            black_box((n, &buf));
        })
    });
    g.bench_function("mmap_copy", |b| {
        b.iter(|| {
            let off = next() as usize;
            buf.copy_from_slice(&h.map[off..off + PAGE_SIZE]);
            black_box(&buf);
        })
    });
    g.bench_function("thp_buffer_copy_floor", |b| {
        b.iter(|| {
            let off = next() as usize;
            buf.copy_from_slice(&floor[off..off + PAGE_SIZE]);
            black_box(&buf);
        })
    });
    g.finish();
    report_misses(h, "random_4k_hits", &before);
}

fn seq_1m(c: &mut Criterion) {
    let h = hot();
    let floor = thp_buffer();
    rewarm(h);
    let before = h.cache.stats();
    let mut g = c.benchmark_group("seq_1m");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(MIB as u64));
    let mut buf = vec![0u8; MIB];
    // One 1 MiB read per iteration, walking the whole file and wrapping.
    let mut pos = 0u64;
    let mut next = || {
        let p = pos;
        pos = (pos + MIB as u64) % GIB;
        p
    };
    g.bench_function("page_cache_read_at", |b| {
        b.iter(|| {
            let n = h.file.read_at(&mut buf, next()).expect("read");
            black_box((n, &buf));
        })
    });
    g.bench_function("pread", |b| {
        b.iter(|| {
            let n = h.std.read_at(&mut buf, next()).expect("pread");
            black_box((n, &buf));
        })
    });
    g.bench_function("mmap_copy", |b| {
        b.iter(|| {
            let off = next() as usize;
            buf.copy_from_slice(&h.map[off..off + MIB]);
            black_box(&buf);
        })
    });
    g.bench_function("thp_buffer_copy_floor", |b| {
        b.iter(|| {
            let off = next() as usize;
            buf.copy_from_slice(&floor[off..off + MIB]);
            black_box(&buf);
        })
    });
    g.finish();
    report_misses(h, "seq_1m", &before);
}

/// Whether the file system under `path` takes O_DIRECT reads.
/// A file streamed once through a cache much smaller than it: 128 KiB
/// sequential reads of a 256 MiB file hot in the kernel's cache, through a
/// 4 MiB cache with its readahead worker (the worker copies the file into
/// frames while the reader copies them out), against `pread` of the same
/// size.
fn stream_small_cache(c: &mut Criterion) {
    const SIZE: u64 = 256 << 20;
    const BS: usize = 128 << 10;
    let path = data_file("data-256m", SIZE);
    warm_kernel(&path);
    let cache = PageCache::builder().capacity(4 << 20).build().expect("cache");
    let file = cache.open(&path).expect("open through cache");
    let std = File::open(&path).expect("open");
    let mut buf = vec![0u8; BS];
    let before = cache.stats();
    let mut g = c.benchmark_group("stream_small_cache");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(SIZE));
    g.bench_function("page_cache_read_at_4m_cache", |b| {
        b.iter(|| {
            let mut off = 0;
            while off < SIZE {
                off += file.read_at(&mut buf, off).expect("read") as u64;
            }
        })
    });
    g.bench_function("pread", |b| {
        b.iter(|| {
            let mut off = 0;
            while off < SIZE {
                off += std.read_at(&mut buf, off).expect("pread") as u64;
            }
        })
    });
    g.finish();
    let s = cache.stats();
    eprintln!(
        "stream_small_cache: {} misses, {} read calls, {} pages read ahead",
        s.misses - before.misses,
        s.read_calls - before.read_calls,
        s.readahead_pages - before.readahead_pages
    );
}

fn direct_io_works(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)?;
    let mut raw = vec![0u8; 2 * PAGE_SIZE];
    let a = raw.as_ptr().align_offset(PAGE_SIZE);
    f.read_exact_at(&mut raw[a..a + PAGE_SIZE], 0)
}

fn cold_direct(c: &mut Criterion) {
    const SIZE: u64 = 256 << 20;
    let path = data_file("data-256m", SIZE);
    if let Err(e) = direct_io_works(&path) {
        eprintln!("cold_direct: skipped, O_DIRECT unavailable under {DIR}: {e}");
        return;
    }
    let dd_ok = Command::new("dd").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());

    let cache = PageCache::builder().capacity(320 << 20).direct_io(true).build().expect("cache");
    let file = cache.open(&path).expect("open through cache");
    let mut buf = vec![0u8; MIB];
    // Everything out of the cache (readahead may still be finishing the
    // previous pass's last window: try again until the cache is empty).
    let empty_cache = || {
        for _ in 0..1000 {
            cache.shrink(usize::MAX);
            if cache.stats().cached_pages == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("pages stay cached after shrink: {}", cache.stats());
    };

    let before = cache.stats();
    let mut passes = 0u64;
    let mut g = c.benchmark_group("cold_direct");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(SIZE));
    g.bench_function("page_cache_direct_io", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                empty_cache();
                passes += 1;
                let t0 = Instant::now();
                let mut off = 0;
                while off < SIZE {
                    off += file.read_at(&mut buf, off).expect("read") as u64;
                }
                total += t0.elapsed();
            }
            total
        })
    });
    g.bench_function("pread_o_direct", |b| {
        let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path).expect("open O_DIRECT");
        let mut raw = vec![0u8; MIB + PAGE_SIZE];
        let a = raw.as_ptr().align_offset(PAGE_SIZE);
        let aligned = &mut raw[a..a + MIB];
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                let mut off = 0;
                while off < SIZE {
                    off += f.read_at(aligned, off).expect("pread") as u64;
                }
            }
            t0.elapsed()
        })
    });
    if dd_ok {
        g.bench_function("dd_iflag_direct", |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let status = Command::new("dd")
                        .arg(format!("if={}", path.display()))
                        .args(["of=/dev/null", "iflag=direct", "bs=1M"])
                        .stderr(Stdio::null())
                        .status()
                        .expect("run dd");
                    assert!(status.success(), "dd failed");
                }
                t0.elapsed()
            })
        });
    } else {
        eprintln!("cold_direct: dd not found, its variant skipped");
    }
    g.finish();
    let s = cache.stats();
    let calls = (s.read_calls - before.read_calls) as f64 / passes.max(1) as f64;
    eprintln!(
        "cold_direct: page cache per pass: {calls:.0} read calls ({:.0} KiB each), {:.0} readahead pages, \
         {:.0} misses",
        SIZE as f64 / 1024.0 / calls,
        (s.readahead_pages - before.readahead_pages) as f64 / passes.max(1) as f64,
        (s.misses - before.misses) as f64 / passes.max(1) as f64,
    );
}

criterion_group!(benches, random_4k_hits, seq_1m, stream_small_cache, cold_direct);
criterion_main!(benches);
