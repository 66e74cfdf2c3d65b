//! Objects in S3-compatible storage (`page_cache::object::ObjectBacking`,
//! feature `object-store`) on a local moto server, against `object_store`
//! called directly.
//!
//! criterion groups (every alternative of a group in the same run):
//! - `object_cold_sequential`: a cold sequential read of a whole object
//!   through a new cache (readahead up to 16 MiB; `CachedFile::prefetch` of
//!   every page) against `get_range` in 1 MiB calls one after another.
//! - `object_cold_random_prefetch`: 64 cold random 4 KiB pages through
//!   `prefetch(&offsets)` against 64 `read_at` misses one after another.
//! - `object_warm_disk_tier`: a new cache on a disk tier that holds the
//!   object (a restart) against the same cache on an empty tier; the warm
//!   read's GETs are counted (`ObjectBacking::requests`) and printed.
//!
//! Printed (not criterion groups): moto's cost per GET by object size, the
//! GETs each row issued, and the recovery time of a disk tier holding 1M
//! 4 KiB pages (`DiskTier::open`, `recovered_entries`, `recovery_time`).
//!
//! The server: `PAGE_CACHE_S3_ENDPOINT` if set (`http://HOST:PORT`, a
//! bucket is created on it); else the bench starts `moto_server` on a free
//! port of 127.0.0.1 (from `target/ci-venv/bin`, else the `PATH`, else it
//! makes the venv as `.ci/run` does) and kills it at the end. Objects are
//! 64 MiB (see `OBJECT`). Data files live in /var/tmp/page-cache-bench/.
//! Run: `cargo bench --features object-store --bench object`.

use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{print_machine, xorshift, DIR, MIB};
use criterion::{Criterion, SamplingMode, Throughput};
use page_cache::object::object_store::aws::AmazonS3Builder;
use page_cache::object::object_store::path::Path;
use page_cache::object::object_store::{ObjectStore, ObjectStoreExt};
use page_cache::object::ObjectBacking;
use page_cache::tier::disk::DiskTier;
use page_cache::tier::{FileKey, FileVersion, SecondTier};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};

#[path = "../tests/common/s3.rs"]
mod s3;
use s3::create_bucket;

/// The object the groups read. 256 MiB was the goal; moto reads the whole
/// object for every ranged GET (`FakeKey.value`, under the key's lock), so
/// a 1 MiB GET of a 256 MiB object takes about 160 ms there and one pass
/// of 1 MiB GETs about 40 s: 64 MiB keeps an iteration near 5 s.
const OBJECT: u64 = 64 << 20;
const KEY: &str = "bench/object-64m";
/// A small object, for moto's cost per GET against the object's size.
const SMALL: u64 = 1 << 20;
const SMALL_KEY: &str = "bench/object-1m";
/// The baseline's call size.
const CALL: u64 = 1 << 20;

/// A `moto_server` this bench started; killed on drop.
struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The `moto_server` to start: the CI venv's, else the `PATH`'s, else a
/// venv made now as `.ci/run` makes it.
fn moto_binary() -> PathBuf {
    let venv = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv");
    let bin = venv.join("bin/moto_server");
    if bin.exists() {
        return bin;
    }
    let on_path = Command::new("moto_server").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if on_path.is_ok_and(|s| s.success()) {
        return PathBuf::from("moto_server");
    }
    eprintln!("installing moto[server] into {}", venv.display());
    let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "moto[server]"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "could not install moto[server] into {}", venv.display());
    bin
}

/// The endpoint, and the server this bench started for it (if it did).
fn server() -> (String, Option<Moto>) {
    if let Ok(e) = std::env::var("PAGE_CACHE_S3_ENDPOINT") {
        if !e.is_empty() {
            eprintln!("S3 endpoint {e} (PAGE_CACHE_S3_ENDPOINT)");
            return (e.trim_end_matches('/').to_string(), None);
        }
    }
    let bin = moto_binary();
    let port = free_port();
    let log = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("target/moto_server-bench.log");
    let out = std::fs::File::create(&log).expect("moto log");
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let moto = Moto(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "moto_server did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("started {} on 127.0.0.1:{port} (log {})", bin.display(), log.display());
    (format!("http://127.0.0.1:{port}"), Some(moto))
}

fn store(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("build the S3 store"),
    )
}

/// Bytes of `len` whose every 4 KiB page starts with its index.
fn object_bytes(len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    for (i, p) in v.chunks_mut(PAGE_SIZE).enumerate() {
        p.fill((i % 251) as u8 + 1);
        p[..8].copy_from_slice(&(i as u64).to_le_bytes());
    }
    v
}

/// Reads the whole file through the cache in 1 MiB calls.
fn read_all(file: &CachedFile) -> u64 {
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while off < file.len() {
        let n = file.read_at(&mut buf, off).expect("read through the cache");
        assert!(n > 0, "early end at {off}");
        off += n as u64;
    }
    off
}

fn open(cache: &PageCache, store: &Arc<dyn ObjectStore>, key: &str) -> (Arc<ObjectBacking>, CachedFile) {
    let backing = Arc::new(ObjectBacking::new(store.clone(), Path::from(key)).expect("HEAD"));
    let file = cache.open_backing(backing.clone(), false).expect("open_backing");
    (backing, file)
}

/// The cache of the sequential rows: capacity 256 MiB, so windows reach
/// 16 MiB (a window is at most 1/16 of the capacity) and the 64 MiB
/// object is never evicted while it is read.
fn seq_cache() -> page_cache::Builder {
    PageCache::builder().capacity(256 << 20).readahead_max(16 << 20)
}

/// Median time of `n` runs of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[n / 2]
}

/// moto's cost per GET: a 4 KiB ranged GET of a 1 MiB and of the 64 MiB
/// object, and 10 of the latter at once against one.
fn print_server_costs(rt: &tokio::runtime::Runtime, store: &Arc<dyn ObjectStore>) {
    let (small, big) = (Path::from(SMALL_KEY), Path::from(KEY));
    let one_small = median(5, || {
        rt.block_on(store.get_range(&small, 0..4096)).expect("get");
    });
    let one_big = median(5, || {
        rt.block_on(store.get_range(&big, 0..4096)).expect("get");
    });
    let ten_big = median(3, || {
        rt.block_on(async {
            let gets = (0..10u64).map(|i| store.get_range(&big, i * 4 * MIB as u64..i * 4 * MIB as u64 + 4096));
            for r in futures::future::join_all(gets).await {
                r.expect("get");
            }
        });
    });
    eprintln!(
        "server: a 4 KiB GET takes {one_small:?} on a 1 MiB object, {one_big:?} on a {} MiB one; \
         10 such GETs of the {} MiB object at once take {ten_big:?} ({:.1}x one)",
        OBJECT >> 20,
        OBJECT >> 20,
        ten_big.as_secs_f64() / one_big.as_secs_f64()
    );
}

/// GETs of each row's last iteration, printed after the group.
type Gets = std::cell::RefCell<Vec<(&'static str, u64)>>;

fn note(gets: &Gets, row: &'static str, n: u64) {
    let mut g = gets.borrow_mut();
    match g.iter_mut().find(|(r, _)| *r == row) {
        Some(e) => e.1 = n,
        None => g.push((row, n)),
    }
}

fn print_gets(group: &str, gets: &Gets) {
    let rows: Vec<String> = gets.borrow().iter().map(|(r, n)| format!("{r} {n}")).collect();
    eprintln!("{group}: GETs per iteration: {}", rows.join(", "));
}

fn flat(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, bytes: u64) {
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(bytes));
}

/// `store` is `rt`'s (the baseline's), `backings` the backings' (see `main`).
fn cold_sequential(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    backings: &Arc<dyn ObjectStore>,
) {
    let gets = Gets::default();
    let mut g = c.benchmark_group("object_cold_sequential");
    flat(&mut g, OBJECT);
    g.bench_function("get_range_1mib_sequential", |b| {
        let path = Path::from(KEY);
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let mut off = 0;
                    while off < OBJECT {
                        let end = (off + CALL).min(OBJECT);
                        black_box(store.get_range(&path, off..end).await.expect("get_range"));
                        off = end;
                    }
                });
            }
            note(&gets, "get_range_1mib_sequential", OBJECT.div_ceil(CALL));
            t0.elapsed()
        })
    });
    g.bench_function("cache_readahead_16mib", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let cache = seq_cache().build().expect("cache");
                let t0 = Instant::now();
                let (backing, file) = open(&cache, backings, KEY);
                assert_eq!(read_all(&file), OBJECT);
                total += t0.elapsed();
                note(&gets, "cache_readahead_16mib", backing.requests());
            }
            total
        })
    });
    g.bench_function("cache_prefetch_all_pages", |b| {
        let offsets: Vec<u64> = (0..OBJECT).step_by(PAGE_SIZE).collect();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let cache = seq_cache().build().expect("cache");
                let t0 = Instant::now();
                let (backing, file) = open(&cache, backings, KEY);
                file.prefetch(&offsets).expect("prefetch");
                assert_eq!(read_all(&file), OBJECT);
                total += t0.elapsed();
                note(&gets, "cache_prefetch_all_pages", backing.requests());
            }
            total
        })
    });
    g.finish();
    print_gets("object_cold_sequential", &gets);
}

/// `store` is the backings' (see `main`), never `rt`'s.
fn cold_random(c: &mut Criterion, store: &Arc<dyn ObjectStore>) {
    const N: usize = 64;
    let gets = Gets::default();
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let mut offsets = move || -> Vec<u64> {
        (0..N).map(|_| xorshift(&mut seed) % (OBJECT / PAGE_SIZE as u64) * PAGE_SIZE as u64).collect()
    };
    let cache = || PageCache::builder().capacity(64 << 20).readahead_max(0).build().expect("cache");
    let mut g = c.benchmark_group("object_cold_random_prefetch");
    flat(&mut g, (N * PAGE_SIZE) as u64);
    let mut buf = vec![0u8; PAGE_SIZE];
    // Both rows: a new cache, the object opened, the 64 pages read (after
    // `prefetch` when `prefetch`), each checked; the GETs noted.
    for (name, prefetch) in [("read_at_64_misses", false), ("prefetch_64", true)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let offs = offsets();
                    let cache = cache();
                    let t0 = Instant::now();
                    let (backing, file) = open(&cache, store, KEY);
                    if prefetch {
                        file.prefetch(&offs).expect("prefetch");
                    }
                    for &o in &offs {
                        file.read_exact_at(&mut buf, o).expect("read");
                        assert_eq!(&buf[..8], &(o / PAGE_SIZE as u64).to_le_bytes());
                    }
                    total += t0.elapsed();
                    if prefetch {
                        let st = cache.stats();
                        assert_eq!(st.misses, st.prefetch_pages, "a read after the prefetch missed");
                    }
                    note(&gets, name, backing.requests());
                }
                total
            })
        });
    }
    g.finish();
    print_gets("object_cold_random_prefetch", &gets);
}

/// The object's pages the disk tier at `path` would not serve to an open
/// of the object as `backing` saw it (the tier opened on its own, as a
/// restart opens it).
fn tier_missing(path: &FsPath, bytes: u64, backing: &ObjectBacking) -> Vec<u64> {
    let stat = page_cache::Backing::stat(backing).expect("stat").expect("an object has an identity");
    let tier = DiskTier::open(path, bytes).expect("tier");
    // The cache's key and version of a backing (`cleancache::file_key`).
    let key = FileKey { dev: stat.dev, ino: stat.ino, generation: stat.btime_ns.unwrap_or(0) as u64, page_shift: 12 };
    tier.open_file(&key, &FileVersion { size: stat.size, mtime_ns: stat.mtime_ns, ctime_ns: stat.ctime_ns });
    let mut out = vec![0u8; PAGE_SIZE];
    (0..OBJECT / PAGE_SIZE as u64).filter(|&i| !tier.get_page(&key, i, &mut out)).collect()
}

/// Runs of consecutive page indices, `(first, end)`.
fn runs(pages: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &i in pages {
        match runs.last_mut() {
            Some(r) if r.1 == i => r.1 = i + 1,
            _ => runs.push((i, i + 1)),
        }
    }
    runs
}

/// A cache of 16 MiB on the tier at `path`: reclaim offers the tier what
/// it evicts (and only that: pages still cached when the cache drops are
/// not put).
fn fill_cache(path: &FsPath, bytes: u64) -> PageCache {
    PageCache::builder().capacity(16 << 20).readahead_max(MIB).disk_tier(path, bytes).build().expect("cache")
}

/// Reads a local 48 MiB file through `cache`, so that what it read before
/// is evicted and offered to its tier. With `twice`, each 1 MiB twice in a
/// row, so the file's pages go to the active list and age out what was
/// there: the inactive list is kept at only 1/8 of the cache, so pages
/// already active outlive a one-pass scan (and are never offered).
fn push_out(cache: &PageCache, twice: bool) {
    let filler = common::data_file("objbench-filler-48m", 48 << 20);
    let f = cache.open(&filler).expect("open filler");
    let mut buf = vec![0u8; MIB];
    for off in (0..f.len()).step_by(MIB) {
        f.read_at(&mut buf, off).expect("read filler");
        if twice {
            f.read_at(&mut buf, off).expect("read filler");
        }
    }
}

/// What a first run leaves: the object read once, sequentially, through a
/// 16 MiB cache, then 48 MiB of a local file read once after it.
fn fill_tier_by_one_read(store: &Arc<dyn ObjectStore>, path: &FsPath, bytes: u64) {
    remove_tier(path);
    let cache = fill_cache(path, bytes);
    let (backing, file) = open(&cache, store, KEY);
    read_all(&file);
    push_out(&cache, false);
    let s = cache.stats();
    drop((file, cache));
    let missing = tier_missing(path, bytes, &backing);
    let r = runs(&missing);
    eprintln!(
        "object_warm_disk_tier: one sequential read ({} GETs) then 48 MiB of a local file through a 16 MiB cache: \
         {} puts, {} refused, {} pages still active when the cache dropped; after a restart the tier serves {} of \
         the object's {} pages, {} missing in {} runs (the first: {:?})",
        backing.requests(),
        s.tier_puts,
        s.tier_rejects,
        s.active_pages,
        OBJECT / PAGE_SIZE as u64 - missing.len() as u64,
        OBJECT / PAGE_SIZE as u64,
        missing.len(),
        r.len(),
        &r[..r.len().min(12)]
    );
}

/// Every page of the object in the tier: each pass prefetches the pages
/// the tier lacks and pushes them out with a local file read twice over;
/// up to 5 passes (puts refused while the tier's writer is busy are the
/// next pass's).
fn fill_tier_completely(store: &Arc<dyn ObjectStore>, path: &FsPath, bytes: u64) {
    remove_tier(path);
    let backing = Arc::new(ObjectBacking::new(store.clone(), Path::from(KEY)).expect("HEAD"));
    let mut missing: Vec<u64> = (0..OBJECT / PAGE_SIZE as u64).collect();
    for pass in 1..=5 {
        let cache = fill_cache(path, bytes);
        let file = cache.open_backing(backing.clone(), false).expect("open_backing");
        let offsets: Vec<u64> = missing.iter().map(|i| i * PAGE_SIZE as u64).collect();
        file.prefetch(&offsets).expect("prefetch");
        push_out(&cache, true);
        let s = cache.stats();
        drop((file, cache));
        missing = tier_missing(path, bytes, &backing);
        eprintln!(
            "object_warm_disk_tier: complete fill, pass {pass}: prefetched {} pages, {} puts, {} refused, \
             {} pages still missing",
            offsets.len(),
            s.tier_puts,
            s.tier_rejects,
            missing.len()
        );
        if missing.is_empty() {
            return;
        }
    }
    panic!("the tier still lacks {} pages of the object after 5 passes", missing.len());
}

fn remove_tier(path: &FsPath) {
    for suffix in ["", ".files", ".files.tmp"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// `store` is the backings' (see `main`), never `rt`'s.
fn warm_disk_tier(c: &mut Criterion, store: &Arc<dyn ObjectStore>) {
    const TIER: u64 = 512 << 20;
    std::fs::create_dir_all(DIR).expect("bench dir");
    let complete = FsPath::new(DIR).join("objbench-tier-complete");
    let partial = FsPath::new(DIR).join("objbench-tier-one-read");
    let cold = FsPath::new(DIR).join("objbench-tier-cold");
    fill_tier_completely(store, &complete, TIER);
    fill_tier_by_one_read(store, &partial, TIER);
    let gets = Gets::default();
    let mut warm_gets = Vec::new();
    let mut g = c.benchmark_group("object_warm_disk_tier");
    flat(&mut g, OBJECT);
    // The cache build (the tier's open and recovery) is outside the time.
    for (row, path, warm) in [
        ("cold_empty_tier", &cold, false),
        ("warm_tier_complete", &complete, true),
        ("warm_tier_after_one_read", &partial, true),
    ] {
        g.bench_function(row, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if !warm {
                        remove_tier(path);
                    }
                    let cache = seq_cache().disk_tier(path, TIER).build().expect("cache");
                    let t0 = Instant::now();
                    let (backing, file) = open(&cache, store, KEY);
                    assert_eq!(read_all(&file), OBJECT);
                    total += t0.elapsed();
                    note(&gets, row, backing.requests());
                    if warm {
                        warm_gets.push((row, backing.requests()));
                        let s = cache.stats();
                        assert!(s.tier_hits > 0, "the warm read took nothing from the tier: {s:?}");
                    }
                }
                total
            })
        });
    }
    g.finish();
    print_gets("object_warm_disk_tier", &gets);
    eprintln!(
        "object_warm_disk_tier: GETs of every warm read (ObjectBacking::requests, HEAD not counted): {warm_gets:?}"
    );
}

/// Opens a disk tier holding `pages` 4 KiB pages of one file (made once,
/// kept under /var/tmp) and prints what the open recovered and how long it
/// took, with the tier file in the kernel's cache and after dropping it
/// from there (`POSIX_FADV_DONTNEED`).
fn print_recovery(pages: u64) {
    // Regions of 16 MiB hold 4032 pages each: room for all with margin.
    let bytes = pages * PAGE_SIZE as u64 * 9 / 8 + (64 << 20);
    let path = FsPath::new(DIR).join(format!("objbench-tier-{}k", pages >> 10));
    let key = FileKey { dev: 7, ino: 7, generation: 7, page_shift: 12 };
    let version = FileVersion { size: pages * PAGE_SIZE as u64, mtime_ns: 1, ctime_ns: 1 };
    let have = DiskTier::open(&path, bytes).map(|t| t.recovered_entries()).unwrap_or(0);
    if have != pages {
        remove_tier(&path);
        let t0 = Instant::now();
        let tier = DiskTier::options().inline_writes(true).open(&path, bytes).expect("tier");
        tier.open_file(&key, &version);
        let mut page = vec![0u8; PAGE_SIZE];
        for i in 0..pages {
            page[..8].copy_from_slice(&i.to_le_bytes());
            assert!(tier.put_page(&key, i, &page), "put {i} refused");
        }
        tier.flush().expect("flush");
        drop(tier);
        eprintln!("disk tier: wrote {pages} pages in {:?}", t0.elapsed());
    }
    let drop_kernel_cache = || {
        let f = std::fs::File::open(&path).expect("open tier file");
        // SAFETY: a valid descriptor; fadvise reads no memory of ours.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    };
    for kernel in ["hot", "cold"] {
        let mut times = Vec::new();
        let mut entries = 0;
        for _ in 0..5 {
            if kernel == "cold" {
                drop_kernel_cache();
            }
            let tier = DiskTier::open(&path, bytes).expect("tier");
            entries = tier.recovered_entries();
            times.push(tier.recovery_time());
            let mut out = vec![0u8; PAGE_SIZE];
            tier.open_file(&key, &version);
            assert!(tier.get_page(&key, pages - 1, &mut out), "the last page was not recovered");
            assert_eq!(&out[..8], &(pages - 1).to_le_bytes());
        }
        times.sort();
        eprintln!(
            "disk tier recovery, {} GiB file, {} regions of 16 MiB, tier file {kernel} in the kernel's cache: \
             recovered_entries {entries}, recovery_time median {:?} (min {:?}, max {:?}, 5 opens)",
            std::fs::metadata(&path).map_or(0, |m| m.len()) >> 30,
            bytes / (16 << 20),
            times[2],
            times[0],
            times[4]
        );
    }
}

fn main() {
    print_machine();
    let (endpoint, moto) = server();
    let bucket = format!("pc-bench-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    // Two stores, never one for both runtimes: a store's pooled
    // connections are tied to the runtime that made them, and a server that
    // keeps connections alive (SeaweedFS does; moto closes them) would hand
    // the backings' runtime a connection only `rt` drives, and the first
    // HEAD would wait forever. `store` is `rt`'s (the upload, the cost
    // probe, the `get_range` baseline); `backings` is the backings'
    // (`ObjectBacking`'s shared runtime).
    let store = store(&endpoint, &bucket);
    let backings = self::store(&endpoint, &bucket);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let t0 = Instant::now();
    rt.block_on(store.put(&Path::from(KEY), object_bytes(OBJECT).into())).expect("put");
    rt.block_on(store.put(&Path::from(SMALL_KEY), object_bytes(SMALL).into())).expect("put");
    eprintln!("uploaded a {} MiB object in {:?}", OBJECT >> 20, t0.elapsed());
    print_server_costs(&rt, &store);

    let mut c = Criterion::default().configure_from_args();
    if common::group_wanted("object_cold_sequential") {
        cold_sequential(&mut c, &rt, &store, &backings);
    }
    if common::group_wanted("object_cold_random_prefetch") {
        cold_random(&mut c, &backings);
    }
    if common::group_wanted("object_warm_disk_tier") {
        warm_disk_tier(&mut c, &backings);
    }
    drop(moto);
    if common::group_wanted("object_disk_tier_recovery") {
        print_recovery(1 << 20);
    }
    c.final_summary();
}
