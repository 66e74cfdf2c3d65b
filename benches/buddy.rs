//! Frame allocation: the buddy allocator's order-0 path (per-thread lists)
//! and an order-3 block, against the system allocator for the same sizes.
//!
//! Run: `cargo bench --bench buddy`.

use std::hint::black_box;
use std::time::Duration;

mod common;
use criterion::{criterion_group, Criterion};
use page_cache::PageCache;

fn alloc_free(c: &mut Criterion) {
    let cache = PageCache::new(64 << 20).expect("cache");
    let mut g = c.benchmark_group("alloc_free");
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));

    // Order 0: one frame, freed when the PageRef drops (put_page -> per-thread list).
    g.bench_function("buddy_order0", |b| b.iter(|| drop(black_box(cache.alloc_pages(0).expect("frame")))));
    // malloc + free of 4 KiB, contents left uninitialized like a fresh frame.
    g.bench_function("box_4k_uninit", |b| b.iter(|| drop(black_box(Box::<[u8; 4096]>::new_uninit()))));
    // calloc + free of 4 KiB (zeroed).
    g.bench_function("box_4k_zeroed", |b| b.iter(|| drop(black_box(vec![0u8; 4096].into_boxed_slice()))));

    // Order 3: 8 contiguous frames (split from / merged into the shared free lists).
    g.bench_function("buddy_order3", |b| b.iter(|| drop(black_box(cache.alloc_pages(3).expect("block")))));
    g.bench_function("box_32k_uninit", |b| b.iter(|| drop(black_box(Box::<[u8; 32768]>::new_uninit()))));
    g.finish();

    let s = cache.stats();
    assert_eq!(s.free_pages, s.total_pages, "a frame leaked");
}

criterion_group!(benches, alloc_free);

// criterion_main!, with the machine printed first.
fn main() {
    common::print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
