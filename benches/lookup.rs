//! Lookups in a mapping's radix tree (`find_get_page`) against ordinary
//! concurrent maps holding the same index -> frame entries, at 4096 and at
//! 1M resident pages; scaling of lookups over threads; and the tagged gang
//! lookup (`find_get_pages_tag`) against a scan that filters `is_dirty()`.
//!
//! Groups:
//! - `lookup_4k`: 4096 resident pages; everything fits in L2, so this is the
//!   lookup's instruction cost (the CPU-bound figure).
//! - `lookup_1m`: 1M resident pages, keys a random permutation of all 1M
//!   indices walked in order (each iteration a new key, every page once per
//!   pass, then around again): tree nodes (about 9 MiB), descriptors
//!   (32 MiB) and each map's entries are all touched, about 40 MiB for the
//!   mapping, more than most L3s, so a lookup's cost is its cache misses.
//!   Rows: `find_get_page`, `radix_trie_rwlock`, `hashmap_rwlock`,
//!   `hashmap_rwlock_get_put` (the map plus the descriptor reference
//!   find_get_page takes), `btreemap_rwlock`, `quick_cache`,
//!   `descriptor_get_put_only` (no index, the reference alone) and
//!   `two_level_load_floor`: a load of `slot[key]` (1M u32 frame numbers,
//!   random) then of `desc[slot].field` (1M 32-byte descriptors), no
//!   synchronization: the least any index -> descriptor lookup pays in
//!   memory traffic.
//! - `lookup_1m_threads`: the same keys over 1 and 2 threads (each thread
//!   starting at its own place in the permutation), throughput per thread
//!   count, with the same floor.
//! - `tagged_1m`: a full scan for the 1% dirty pages, by tag and by filter.
//!
//! Memory-bound means a working set larger than the L3: every bench binary
//! prints the CPU model and L3 size first, and the setup prints the
//! working set next to it (on a VM the reported L3 may not be the host's).
//!
//! A counting global allocator measures the heap each structure takes per
//! entry (the tree's nodes for the mapping); it is printed at setup.
//!
//! Run: `cargo bench --bench lookup`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::{permutation, print_working_set, xorshift};
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use page_cache::{CachedFile, PageCache, Tag};
use parking_lot::RwLock;

/// The system allocator, counting live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counter has no effect
// on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (hence `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds
        // `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A stand-in for a page descriptor in the floor row: 32 bytes, aligned so
/// that each lies in one cache line, as the cache's own descriptors do.
#[repr(C, align(32))]
struct Desc([u64; 4]);

/// A mapping with `n` resident pages and the same index -> pfn entries in
/// the comparison structures.
struct Setup {
    cache: PageCache,
    file: CachedFile,
    n: u64,
    trie: RwLock<radix_trie::Trie<u64, u32>>,
    hash: RwLock<HashMap<u64, u32>>,
    btree: RwLock<BTreeMap<u64, u32>>,
    quick: quick_cache::sync::Cache<u64, u32>,
    /// The floor's two levels: `slots[index]` is a frame number (a random
    /// permutation of `0..n`), `descs[frame]` its descriptor.
    slots: Vec<u32>,
    descs: Vec<Desc>,
    /// Every index in `0..n` once, in random order (`n` is a power of two:
    /// walked cyclically with a mask).
    keys: Vec<u64>,
    nr_dirty: usize,
}

fn build(n: u64, capacity_pages: u64, dirty_percent: u64) -> Setup {
    let t0 = Instant::now();
    // No writeback during the run: the dirty pages stay tagged.
    let cache = PageCache::builder()
        .capacity((capacity_pages * 4096) as usize)
        .dirty_expire(Duration::from_secs(1 << 30))
        .build()
        .expect("cache");
    let file = {
        // The file is unlinked right away; the open handle keeps it.
        let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
        cache.create(dir.path().join("lookup")).expect("create")
    };
    let m = file.mapping();
    let mut pfns = Vec::with_capacity(n as usize);
    let before = live();
    for i in 0..n {
        let p = m.find_or_create_page(i).expect("page");
        p.set_uptodate();
        pfns.push(p.unlock().pfn());
    }
    let tree_bytes = live() - before;
    assert_eq!(m.nr_pages() as u64, n);

    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ n;
    let mut nr_dirty = 0;
    if dirty_percent > 0 {
        for i in 0..n {
            if xorshift(&mut seed) % 100 < dirty_percent {
                m.find_lock_page(i).expect("cached").set_dirty();
                nr_dirty += 1;
            }
        }
    }

    let measure = |f: &mut dyn FnMut()| {
        let b = live();
        f();
        live() - b
    };
    let mut trie = radix_trie::Trie::new();
    let trie_bytes = measure(&mut || {
        for (i, &p) in pfns.iter().enumerate() {
            trie.insert(i as u64, p);
        }
    });
    let mut hash = HashMap::new();
    let hash_bytes = measure(&mut || hash.extend(pfns.iter().enumerate().map(|(i, &p)| (i as u64, p))));
    let mut btree = BTreeMap::new();
    let btree_bytes = measure(&mut || btree.extend(pfns.iter().enumerate().map(|(i, &p)| (i as u64, p))));
    let mut quick = None;
    let quick_bytes = measure(&mut || {
        // Room for every entry: lookups all hit, as in the mapping.
        let q = quick_cache::sync::Cache::new(2 * n as usize);
        pfns.iter().enumerate().for_each(|(i, &p)| q.insert(i as u64, p));
        quick = Some(q);
    });
    let quick = quick.expect("built");
    let quick_len = quick.len() as u64;

    let slots: Vec<u32> = permutation(n, seed ^ 0x5107).into_iter().map(|f| f as u32).collect();
    let descs: Vec<Desc> = (0..n).map(|f| Desc([1 << 2, 1, f, 0])).collect();
    assert!(n.is_power_of_two(), "keys are walked with a mask");
    let keys = permutation(n, seed);
    let per = |bytes: isize| bytes as f64 / n as f64;
    eprintln!(
        "lookup setup: {n} pages in {:.1?}; heap bytes per entry: radix tree {:.2}, radix_trie {:.2}, \
         HashMap {:.2}, BTreeMap {:.2}, quick_cache {:.2} (holds {quick_len}/{n}); {nr_dirty} pages dirty",
        t0.elapsed(),
        per(tree_bytes),
        per(trie_bytes),
        per(hash_bytes),
        per(btree_bytes),
        per(quick_bytes),
    );
    // What one pass over the keys touches in the mapping: tree nodes and
    // 32-byte descriptors (the keys themselves stream sequentially).
    print_working_set(&format!("lookup {n} pages, radix tree + descriptors"), tree_bytes as u64 + 32 * n);
    print_working_set(&format!("lookup {n} pages, floor's slots + descriptors"), 36 * n);
    Setup {
        cache,
        file,
        n,
        trie: RwLock::new(trie),
        hash: RwLock::new(hash),
        btree: RwLock::new(btree),
        quick,
        slots,
        descs,
        keys,
        nr_dirty,
    }
}

/// 1M resident pages in a 4.5 GiB cache (frames are touched lazily; none
/// here is), 1% of them dirty; built once for every group that uses it.
fn big() -> &'static Setup {
    static BIG: OnceLock<Setup> = OnceLock::new();
    BIG.get_or_init(|| build(1 << 20, 9 << 17, 1))
}

fn config(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
}

fn lookup_group(c: &mut Criterion, name: &str, s: &Setup) {
    let m = s.file.mapping();
    let keys = &s.keys[..];
    let mask = keys.len() - 1;
    for &k in keys.iter().take(64) {
        assert!(m.find_get_page(k).is_some() && s.quick.get(&k).is_some(), "index {k} not resident");
    }
    let mut g = c.benchmark_group(name);
    config(&mut g);
    let mut i = 0usize;
    let mut next = move || {
        i = i.wrapping_add(1);
        keys[i & mask]
    };
    g.bench_function("find_get_page", |b| b.iter(|| drop(black_box(m.find_get_page(next())))));
    g.bench_function("radix_trie_rwlock", |b| b.iter(|| black_box(s.trie.read().get(&next()).copied())));
    g.bench_function("hashmap_rwlock", |b| b.iter(|| black_box(s.hash.read().get(&next()).copied())));
    // The map's lookup plus what find_get_page does after its tree walk:
    // take and drop a reference on the page descriptor (an atomic RMW each on a
    // 32-byte descriptor), so the difference to find_get_page is the index alone.
    let cache = &s.cache;
    g.bench_function("hashmap_rwlock_get_put", |b| {
        b.iter(|| {
            let pfn = s.hash.read().get(&next()).copied();
            drop(black_box(cache.try_get_page(pfn.expect("resident")).expect("in use")));
        })
    });
    g.bench_function("btreemap_rwlock", |b| b.iter(|| black_box(s.btree.read().get(&next()).copied())));
    g.bench_function("quick_cache", |b| b.iter(|| black_box(s.quick.get(&next()))));
    // The floor of any lookup that returns a counted page: no index at all
    // (the frame numbers are precomputed in key order and read
    // sequentially), only the reference taken and dropped on the page's
    // descriptor. The locked RMW on a line that misses the CPU cache is what
    // keeps successive lookups from overlapping their misses.
    let pfns: Vec<u32> = keys.iter().map(|k| *s.hash.read().get(k).expect("resident")).collect();
    let mut j = 0usize;
    g.bench_function("descriptor_get_put_only", |b| {
        b.iter(|| {
            j = j.wrapping_add(1);
            drop(black_box(cache.try_get_page(pfns[j & mask]).expect("in use")));
        })
    });
    // The memory floor of an index -> descriptor lookup: two dependent
    // loads per key (slot array, then descriptor), independent from key to
    // key, no atomics, no locks: as many misses in flight as the core allows.
    g.bench_function("two_level_load_floor", |b| b.iter(|| black_box(two_level_load(s, next()))));
    g.finish();
}

fn lookup_4k(c: &mut Criterion) {
    let s = build(4096, 16384, 0);
    lookup_group(c, "lookup_4k", &s);
}

fn lookup_1m(c: &mut Criterion) {
    lookup_group(c, "lookup_1m", big());
}

/// The floor row's lookup: the frame number in the slot array, then a
/// field of that frame's descriptor.
#[inline(always)]
fn two_level_load(s: &Setup, key: u64) -> u64 {
    let frame = s.slots[key as usize];
    s.descs[frame as usize].0[1]
}

/// Lookups per thread in one timed batch.
const BATCH: u64 = 4096;

/// Runs `threads` threads that each do `iters * BATCH` lookups with `f`,
/// started together, thread `t` walking the keys from `t / threads` of the
/// way in; returns the wall time from start to the last finish.
fn run_threads(threads: usize, iters: u64, keys: &[u64], f: &(dyn Fn(u64) -> bool + Sync)) -> Duration {
    let mask = keys.len() - 1;
    common::wall_time_on_threads(threads, &|t| {
        let mut i = t * keys.len() / threads;
        let mut found = 0u64;
        for _ in 0..iters * BATCH {
            i = i.wrapping_add(1);
            found += f(keys[i & mask]) as u64;
        }
        black_box(found);
    })
}

fn lookup_1m_threads(c: &mut Criterion) {
    let s = big();
    let m = s.file.mapping();
    let mut g = c.benchmark_group("lookup_1m_threads");
    config(&mut g);
    type Lookup<'a> = Box<dyn Fn(u64) -> bool + Sync + 'a>;
    let variants: [(&str, Lookup<'_>); 4] = [
        ("find_get_page", Box::new(|k| m.find_get_page(k).is_some())),
        ("hashmap_rwlock", Box::new(|k| s.hash.read().get(&k).is_some())),
        ("quick_cache", Box::new(|k| s.quick.get(&k).is_some())),
        ("two_level_load_floor", Box::new(|k| two_level_load(s, k) != 0)),
    ];
    for (name, f) in &variants {
        for threads in [1usize, 2] {
            // Elements per iteration: lookups by all threads; time per
            // iteration: one batch per thread, so equal times mean linear scaling.
            g.throughput(Throughput::Elements(BATCH * threads as u64));
            g.bench_with_input(BenchmarkId::new(*name, threads), &threads, |b, &t| {
                b.iter_custom(|iters| run_threads(t, iters, &s.keys, &**f))
            });
        }
    }
    g.finish();
}

fn tagged_1m(c: &mut Criterion) {
    let s = big();
    let m = s.file.mapping();
    let tagged = || {
        let mut idx = 0u64;
        let mut n = 0usize;
        loop {
            let pages = m.find_get_pages_tag(&mut idx, Tag::Dirty, 64);
            if pages.is_empty() {
                return n;
            }
            n += pages.len();
        }
    };
    let untagged = || {
        let mut idx = 0u64;
        let mut n = 0usize;
        loop {
            let pages = m.find_get_pages(idx, 64);
            let Some(last) = pages.last() else { return n };
            idx = last.index() + 1;
            n += pages.iter().filter(|p| p.is_dirty()).count();
        }
    };
    assert_eq!(tagged(), s.nr_dirty);
    assert_eq!(untagged(), s.nr_dirty);
    let mut g = c.benchmark_group("tagged_1m");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(s.n));
    g.bench_function("find_get_pages_tag", |b| b.iter(|| black_box(tagged())));
    g.bench_function("find_get_pages_filter", |b| b.iter(|| black_box(untagged())));
    g.finish();
}

criterion_group!(benches, lookup_4k, lookup_1m, lookup_1m_threads, tagged_1m);

// criterion_main!, with the machine printed first.
fn main() {
    common::print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
