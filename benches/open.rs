//! The price of close-to-open revalidation: opening and closing a file
//! whose 4 MiB are cached, through a cache that revalidates (the default:
//! the open's one `statx` is compared with the record of the file) and
//! through one built with `revalidate_on_open(false)`, against opening and
//! closing the file with `std::fs::File` (the floor: `openat` + `close`),
//! and a bare `statx` by path.
//!
//! Each open finds the file's pages cached and unchanged, so none is read;
//! the last close of each round lets go of the descriptor.
//!
//! The file lives in /var/tmp/page-cache-bench/. Run: `cargo bench --bench open`.

use std::hint::black_box;
use std::time::Duration;

mod common;
use criterion::{criterion_group, criterion_main, Criterion};
use page_cache::PageCache;

fn open_close(c: &mut Criterion) {
    common::print_machine();
    let path = common::data_file("open-4m", 4 << 20);
    let on = PageCache::new(16 << 20).expect("cache");
    let off = PageCache::builder().capacity(16 << 20).revalidate_on_open(false).build().expect("cache");
    for cache in [&on, &off] {
        let f = cache.open(&path).expect("open");
        let mut buf = vec![0u8; 4 << 20];
        f.read_exact_at(&mut buf, 0).expect("read");
    }
    let misses = (on.stats().misses, off.stats().misses);

    let mut g = c.benchmark_group("open_close_cached");
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.bench_function("page_cache_revalidate", |b| b.iter(|| drop(black_box(on.open(&path).expect("open")))));
    g.bench_function("page_cache_no_revalidate", |b| b.iter(|| drop(black_box(off.open(&path).expect("open")))));
    g.bench_function("std_file_open_floor", |b| b.iter(|| drop(black_box(std::fs::File::open(&path).expect("open")))));
    g.bench_function("std_metadata", |b| b.iter(|| black_box(std::fs::metadata(&path).expect("stat"))));
    g.finish();
    assert_eq!((on.stats().misses, off.stats().misses), misses, "an unchanged file reads nothing");
    assert_eq!(on.stats().stale_opens, 0);
}

criterion_group!(benches, open_close);
criterion_main!(benches);
