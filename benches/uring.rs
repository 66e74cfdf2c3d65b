//! I/O at depth on a real file on disk, cold (O_DIRECT, so the kernel's
//! cache holds nothing of it, and our cache emptied before each round):
//!
//! - `cold_random_64`: 64 random 4 KiB pages of a 1 GiB file, read with one
//!   `prefetch` (every read in flight at once on io_uring) and then
//!   `read_at`, against 64 `read_at` misses one after another, and against
//!   the same `prefetch` with io_uring turned off (the positioned
//!   syscalls, one at a time).
//! - `writeback_10k`: 10,000 scattered dirty pages of a 1 GiB file opened
//!   O_DIRECT written back by `sync_data`, with io_uring (the runs of each
//!   batch in flight together) and without, and the same through the
//!   kernel's cache (buffered: `pwritev` copies, then the kernel writes at
//!   depth itself in `fdatasync`); the writes into our cache are outside
//!   the timing.
//!
//! - `fdatasync_ring_vs_syscall`: after 16 random O_DIRECT page writes,
//!   `fdatasync(2)` against `IORING_OP_FSYNC` with `DATASYNC` on a ring:
//!   whether the sync at the end of `sync_data` gains from the ring.
//!
//! Run: `cargo bench --bench uring` (the files live in /var/tmp/page-cache-bench).

use std::fs::OpenOptions;
use std::time::{Duration, Instant};

mod common;
use common::{data_file, xorshift};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};

const GIB: u64 = 1 << 30;
const PS: u64 = PAGE_SIZE as u64;
const PAGES: u64 = GIB / PS;

fn direct_cache(io_uring: bool) -> PageCache {
    PageCache::builder().capacity(64 << 20).direct_io(true).readahead_max(0).io_uring(io_uring).build().expect("cache")
}

fn offsets(seed: &mut u64, n: usize) -> Vec<u64> {
    (0..n).map(|_| xorshift(seed) % PAGES * PS).collect()
}

fn cold_random_64(c: &mut Criterion) {
    common::print_machine();
    let path = data_file("uring-1g", GIB);
    let on = direct_cache(true);
    let off = direct_cache(false);
    eprintln!("io_uring in use: {} (and {} with it turned off)", on.stats().io_uring, off.stats().io_uring);
    let f_on = on.open(&path).expect("open");
    let f_off = off.open(&path).expect("open");
    let mut seed = 0x2545_F491_4F6C_DD1D;
    let mut g = c.benchmark_group("cold_random_64");
    g.sample_size(20).measurement_time(Duration::from_secs(6)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(64));
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut round = |f: &CachedFile, prefetch: bool, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            f.invalidate().expect("invalidate");
            let offs = offsets(&mut seed, 64);
            let t = Instant::now();
            if prefetch {
                f.prefetch(&offs).expect("prefetch");
            }
            for &o in &offs {
                f.read_exact_at(&mut buf, o).expect("read");
            }
            total += t.elapsed();
        }
        total
    };
    g.bench_function("prefetch_then_read_at_io_uring", |b| b.iter_custom(|n| round(&f_on, true, n)));
    g.bench_function("read_at_misses_one_by_one", |b| b.iter_custom(|n| round(&f_on, false, n)));
    g.bench_function("prefetch_then_read_at_syscalls", |b| b.iter_custom(|n| round(&f_off, true, n)));
    g.finish();
}

fn writeback_10k(c: &mut Criterion) {
    let a = data_file("uring-wb-a-1g", GIB);
    let b = data_file("uring-wb-b-1g", GIB);
    let on = PageCache::builder()
        .capacity(128 << 20)
        .dirty_ratios(90, 95)
        .direct_io(true)
        .io_uring(true)
        .build()
        .expect("cache");
    let off = PageCache::builder()
        .capacity(128 << 20)
        .dirty_ratios(90, 95)
        .direct_io(true)
        .io_uring(false)
        .build()
        .expect("cache");
    let buffered = PageCache::builder().capacity(128 << 20).dirty_ratios(90, 95).io_uring(true).build().expect("cache");
    let mut rw = OpenOptions::new();
    rw.read(true).write(true);
    let f_on = on.open_with(&a, &rw).expect("open");
    let f_off = off.open_with(&b, &rw).expect("open");
    let f_buf = buffered.open_with(&a, &rw).expect("open");
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    let page = vec![0x5Au8; PAGE_SIZE];
    let mut g = c.benchmark_group("writeback_10k");
    g.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(10_000));
    let mut round = |f: &CachedFile, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            for o in offsets(&mut seed, 10_000) {
                f.write_all_at(&page, o).expect("write");
            }
            let t = Instant::now();
            f.sync_data().expect("sync");
            total += t.elapsed();
        }
        total
    };
    // Alternate the two so the disk's swings hit both alike.
    g.bench_function("sync_data_io_uring", |b| b.iter_custom(|n| round(&f_on, n)));
    g.bench_function("sync_data_syscalls", |b| b.iter_custom(|n| round(&f_off, n)));
    g.bench_function("sync_data_io_uring_again", |b| b.iter_custom(|n| round(&f_on, n)));
    g.bench_function("sync_data_buffered", |b| b.iter_custom(|n| round(&f_buf, n)));
    g.finish();
}

fn fdatasync_ring_vs_syscall(c: &mut Criterion) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = data_file("uring-fsync-64m", 64 << 20);
    let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&path).expect("open");
    let mut raw = vec![0x5Au8; 2 * PAGE_SIZE];
    let a = raw.as_ptr().align_offset(PAGE_SIZE);
    let page = &mut raw[a..a + PAGE_SIZE];
    let mut ring = io_uring::IoUring::new(8).expect("io_uring");
    let seed = std::cell::Cell::new(0x2545_F491_4F6C_DD1D_u64);
    let dirty = |f: &std::fs::File| {
        let mut s = seed.get();
        for _ in 0..16 {
            f.write_at(page, xorshift(&mut s) % 16384 * PS).expect("write");
        }
        seed.set(s);
    };
    let syscall = |n: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            dirty(&f);
            let t = Instant::now();
            f.sync_data().expect("fdatasync");
            total += t.elapsed();
        }
        total
    };
    let mut on_ring = |n: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            dirty(&f);
            let t = Instant::now();
            let e = io_uring::opcode::Fsync::new(io_uring::types::Fd(f.as_raw_fd()))
                .flags(io_uring::types::FsyncFlags::DATASYNC)
                .build();
            // SAFETY: a sync names no memory; the file outlives the wait below.
            unsafe { ring.submission().push(&e) }.expect("push");
            ring.submit_and_wait(1).expect("enter");
            let r = ring.completion().next().expect("completion").result();
            assert!(r >= 0, "fsync on the ring failed: {r}");
            total += t.elapsed();
        }
        total
    };
    let mut g = c.benchmark_group("fdatasync_ring_vs_syscall");
    g.sample_size(30).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    // Alternated, twice, so the disk's swings hit both alike.
    g.bench_function("fdatasync_syscall", |b| b.iter_custom(syscall));
    g.bench_function("ioring_op_fsync_datasync", |b| b.iter_custom(&mut on_ring));
    g.bench_function("fdatasync_syscall_again", |b| b.iter_custom(syscall));
    g.bench_function("ioring_op_fsync_datasync_again", |b| b.iter_custom(&mut on_ring));
    g.finish();
}

criterion_group!(benches, cold_random_64, writeback_10k, fdatasync_ring_vs_syscall);
criterion_main!(benches);
