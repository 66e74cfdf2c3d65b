//! Per-page operations on a cached page, uncontended: lock + unlock,
//! get + put (reference count), and the shared read guard on the bytes.
//!
//! Run: `cargo bench --bench page`.

use std::hint::black_box;
use std::time::Duration;

mod common;
use criterion::{criterion_group, Criterion};
use page_cache::PageCache;

fn page_ops(c: &mut Criterion) {
    let cache = PageCache::new(64 << 20).expect("cache");
    let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let file = cache.create(dir.path().join("page")).expect("create");
    let m = file.mapping();
    let locked = m.find_or_create_page(0).expect("page");
    locked.set_uptodate();
    drop(locked.unlock());
    let page = m.find_get_page(0).expect("cached");

    let mut g = c.benchmark_group("page_ops");
    g.sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    // clone (get_page) + lock_page + unlock_page + drop (put_page).
    // Lock + unlock alone: the reference moves through the lock and back.
    let mut held = Some(page.clone());
    g.bench_function("lock_unlock", |b| {
        b.iter(|| {
            let p = held.take().expect("held");
            held = Some(black_box(p.lock()).unlock());
        })
    });
    drop(held);
    // The floors on this machine: the same two atomic RMWs in std and parking_lot.
    let mutex = parking_lot::Mutex::new(0u32);
    g.bench_function("parking_lot_mutex_lock_unlock", |b| b.iter(|| drop(black_box(mutex.lock()))));
    // The raw floor: two locked read-modify-writes on one word and nothing
    // else (what any lock+unlock or get+put on a shared word must do).
    let word = std::sync::atomic::AtomicU32::new(0);
    g.bench_function("two_atomic_rmws", |b| {
        b.iter(|| {
            let w = black_box(&word);
            w.fetch_add(1, std::sync::atomic::Ordering::Acquire);
            w.fetch_sub(1, std::sync::atomic::Ordering::Release);
        })
    });
    let arc = std::sync::Arc::new(0u32);
    g.bench_function("arc_clone_drop", |b| b.iter(|| drop(black_box(arc.clone()))));
    g.bench_function("get_lock_unlock_put", |b| b.iter(|| drop(black_box(page.clone().lock().unlock()))));
    // clone (get_page) + drop (put_page).
    g.bench_function("get_put", |b| b.iter(|| drop(black_box(page.clone()))));
    // read guard: mapcount up (checking LOCKED) and down.
    g.bench_function("read_guard", |b| b.iter(|| drop(black_box(page.read()))));
    // For context: the whole lockless lookup (epoch pin + tree walk + get + put).
    g.bench_function("find_get_page_put", |b| b.iter(|| drop(black_box(m.find_get_page(black_box(0))))));
    g.finish();
    drop(page);
}

criterion_group!(benches, page_ops);

// criterion_main!, with the machine printed first.
fn main() {
    common::print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
