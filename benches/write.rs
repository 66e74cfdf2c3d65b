//! Random 4 KiB writes made durable: 64 `write_at` through the cache and one
//! `sync_data` (writeback of the dirty pages, then fdatasync), against 64
//! `pwrite` and one `File::sync_data`, each on its own 64 MiB file.
//!
//! Copying a 64 MiB file (hot in the kernel's cache) into another through
//! the cache: `copy_from`, which moves whole pages instead of copying them,
//! against `read_at` + `write_all_at` through a 1 MiB buffer, and the
//! kernel's own `copy_file_range` (`std::io::copy` between files). Each
//! pass starts with nothing of either file in our cache and an empty
//! destination; nothing is written back inside the timing.
//!
//! The files live in /var/tmp/page-cache-bench/. Run: `cargo bench --bench write`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::xorshift;
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use page_cache::{PageCache, PAGE_SIZE};

const DIR: &str = "/var/tmp/page-cache-bench";
const SIZE: u64 = 64 << 20;
const WRITES: usize = 64;

/// A 64 MiB file of non-zero bytes, made once and reused.
fn data_file(name: &str) -> PathBuf {
    let path = Path::new(DIR).join(name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == SIZE) {
        return path;
    }
    std::fs::create_dir_all(DIR).expect("bench dir");
    let tmp = path.with_extension("tmp");
    let f = File::create(&tmp).expect("create data file");
    let chunk = vec![0x5Au8; 1 << 20];
    for off in (0..SIZE).step_by(chunk.len()) {
        f.write_all_at(&chunk, off).expect("write data file");
    }
    f.sync_all().expect("sync data file");
    std::fs::rename(&tmp, &path).expect("rename data file");
    path
}

fn random_write_sync(c: &mut Criterion) {
    let cache = PageCache::new(128 << 20).expect("cache");
    let ours = cache.open_with(data_file("write-64m-a"), OpenOptions::new().write(true)).expect("open through cache");
    let theirs = OpenOptions::new().read(true).write(true).open(data_file("write-64m-b")).expect("open");

    let pages = SIZE / PAGE_SIZE as u64;
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    let offsets: Vec<u64> = (0..1 << 14).map(|_| xorshift(&mut seed) % pages * PAGE_SIZE as u64).collect();
    let mut i = 0usize;
    let mut batch = move || {
        let b: [u64; WRITES] = std::array::from_fn(|k| offsets[(i + k) % offsets.len()]);
        i = (i + WRITES) % offsets.len();
        b
    };
    let mut data = [0u8; PAGE_SIZE];
    let mut stamp = 0u8;

    let mut g = c.benchmark_group("random_write_sync");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes((WRITES * PAGE_SIZE) as u64));
    g.bench_function("page_cache_write_at_sync_data", |b| {
        b.iter(|| {
            stamp = stamp.wrapping_add(1);
            data.fill(stamp | 1);
            for off in batch() {
                ours.write_all_at(&data, off).expect("write");
            }
            ours.sync_data().expect("sync");
        })
    });
    g.bench_function("pwrite_fdatasync", |b| {
        b.iter(|| {
            stamp = stamp.wrapping_add(1);
            data.fill(stamp | 1);
            for off in batch() {
                theirs.write_all_at(&data, off).expect("pwrite");
            }
            theirs.sync_data().expect("fdatasync");
        })
    });
    g.finish();
    let s = cache.stats();
    eprintln!(
        "random_write_sync: page cache wrote back {} pages in {} write calls; {} dirty left",
        s.writeback_pages, s.write_calls, s.dirty_pages
    );
    black_box(s);
}

fn copy_64m(c: &mut Criterion) {
    let src_path = data_file("write-64m-a");
    let dst_path = Path::new(DIR).join("copy-dst");
    let kdst_path = Path::new(DIR).join("copy-dst-kernel");
    let cache = PageCache::new(256 << 20).expect("cache");
    let src = cache.open(&src_path).expect("open source through cache");
    let dst = cache.create(&dst_path).expect("create destination through cache");
    let ksrc = File::open(&src_path).expect("open source");
    let kdst = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&kdst_path).expect("create");
    // Hot in the kernel's cache.
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..SIZE).step_by(buf.len()) {
        ksrc.read_exact_at(&mut buf, off).expect("warm");
    }
    // Nothing of ours cached, the destination empty (its dirty pages go
    // with the truncation, unwritten).
    let reset = || {
        dst.set_len(0).expect("truncate destination");
        cache.shrink(usize::MAX);
    };

    let mut g = c.benchmark_group("copy_64m");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(SIZE));
    g.bench_function("page_cache_copy_from", |b| {
        b.iter_batched(
            reset,
            |()| assert_eq!(dst.copy_from(&src, 0, 0, SIZE as usize).expect("copy_from"), SIZE as usize),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("page_cache_read_at_write_all_at", |b| {
        b.iter_batched(
            reset,
            |()| {
                for off in (0..SIZE).step_by(buf.len()) {
                    src.read_exact_at(&mut buf, off).expect("read");
                    dst.write_all_at(&buf, off).expect("write");
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("kernel_copy_file_range", |b| {
        b.iter_batched(
            || kdst.set_len(0).expect("truncate"),
            |()| {
                let (mut r, mut w) = (&ksrc, &kdst);
                use std::io::Seek;
                r.rewind().expect("rewind");
                w.rewind().expect("rewind");
                assert_eq!(std::io::copy(&mut r, &mut w).expect("copy"), SIZE);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let s = cache.stats();
    eprintln!("copy_64m: {} pages moved, {} evictions", s.pages_moved, s.evictions);
    reset();
    drop((src, dst));
    let _ = std::fs::remove_file(&dst_path);
    let _ = std::fs::remove_file(&kdst_path);
}

criterion_group!(benches, random_write_sync, copy_64m);

// criterion_main!, with the machine printed first.
fn main() {
    common::print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
