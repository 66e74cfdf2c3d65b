//! Random 4 KiB writes made durable: 64 `write_at` through the cache and one
//! `sync_data` (writeback of the dirty pages, then fdatasync), against 64
//! `pwrite` and one `File::sync_data`, each on its own 64 MiB file.
//!
//! The files live in /var/tmp/page-cache-bench/. Run: `cargo bench --bench write`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::xorshift;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

criterion_group!(benches, random_write_sync);
criterion_main!(benches);
