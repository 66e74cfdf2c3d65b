//! The second tier (cleancache, `Builder::compressed_tier`).
//!
//! criterion groups:
//! - `tier_hit_4k`: a random 4 KiB read that misses the cache and hits the
//!   compressed tier (lz4), against an O_DIRECT miss (the disk) and a
//!   `pread` of a page hot in the kernel's cache; and the tier's own get.
//! - `tier_useless_scan`: a one-pass scan of random bytes (nothing
//!   compresses, nothing comes back) with and without the tier.
//!
//! Printed before them (not timings): the compression ratio and memory per
//! stored page on page images (B-tree-like pages of keys and values, text,
//! zeros, random bytes), and a Zipf(0.9) read workload over a file 3x the
//! cache: file reads with the tier (its bytes taken from the page budget,
//! the same total memory) against without it.
//!
//! Data files live in /var/tmp/page-cache-bench/. Run: `cargo bench --bench tier`.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;
use common::{print_machine, xorshift, MIB};
use criterion::{criterion_group, Criterion, Throughput};
use page_cache::tier::compressed::CompressedTier;
use page_cache::tier::{FileKey, SecondTier};
use page_cache::{PageCache, PAGE_SIZE};

/// A page laid out like a B-tree leaf of a key-value engine: a header,
/// then records of a key (a prefix, a counter) and a value (words of a
/// small vocabulary and a few random bytes), slot offsets at the end.
fn btree_page(seed: u64, out: &mut [u8]) {
    const WORDS: [&str; 16] = [
        "user", "order", "item", "status", "shipped", "pending", "customer", "price", "quantity", "total", "region",
        "europe", "asia", "created", "updated", "note",
    ];
    let mut s = seed | 1;
    out.fill(0);
    out[..8].copy_from_slice(&seed.to_le_bytes());
    let mut at = 32;
    let mut n = 0u16;
    // Pages are 60-90% full, as B-tree leaves are after random inserts.
    let fill = out.len() * (60 + (seed % 30) as usize) / 100;
    while at + 96 < fill {
        let key = format!("key:{:012}", seed * 1000 + n as u64);
        out[at..at + key.len()].copy_from_slice(key.as_bytes());
        at += key.len();
        for _ in 0..4 {
            let w = WORDS[(xorshift(&mut s) % 16) as usize];
            out[at..at + w.len()].copy_from_slice(w.as_bytes());
            out[at + w.len()] = b' ';
            at += w.len() + 1;
        }
        let r = xorshift(&mut s).to_le_bytes();
        out[at..at + 6].copy_from_slice(&r[..6]);
        at += 6;
        let end = out.len() - 2 * (n as usize + 1);
        out[end..end + 2].copy_from_slice(&(at as u16).to_le_bytes());
        n += 1;
    }
}

fn text_page(seed: u64, out: &mut [u8]) {
    let text = include_str!("../README.md").as_bytes();
    let start = (seed as usize * 977) % (text.len() - out.len());
    out.copy_from_slice(&text[start..start + out.len()]);
}

fn random_page(seed: u64, out: &mut [u8]) {
    let mut s = seed | 1;
    for c in out.chunks_mut(8) {
        c.copy_from_slice(&xorshift(&mut s).to_le_bytes()[..c.len()]);
    }
}

/// A file of `pages` pages made by `make`, written once.
fn make_file(name: &str, pages: u64, make: fn(u64, &mut [u8])) -> PathBuf {
    let dir = Path::new("/var/tmp/page-cache-bench");
    std::fs::create_dir_all(dir).expect("bench dir");
    let path = dir.join(name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == pages * PAGE_SIZE as u64) {
        return path;
    }
    let f = File::create(&path).expect("create");
    let mut buf = vec![0u8; MIB];
    let per = (MIB / PAGE_SIZE) as u64;
    for chunk in 0..pages.div_ceil(per) {
        for (i, p) in buf.chunks_mut(PAGE_SIZE).enumerate() {
            make(chunk * per + i as u64, p);
        }
        let n = (per.min(pages - chunk * per)) as usize * PAGE_SIZE;
        f.write_all_at(&buf[..n], chunk * MIB as u64).expect("write");
    }
    path
}

fn print_ratios() {
    eprintln!("compression by page image (lz4, 4 KiB pages, 2000 pages each, tier of 64 MiB):");
    eprintln!("| pages | kept | ratio (data) | memory per kept page, overhead included |");
    eprintln!("|---|---|---|---|");
    type Make = fn(u64, &mut [u8]);
    let kinds: [(&str, Make); 4] = [
        ("B-tree leaves (keys, words, random ids)", btree_page),
        ("text (README)", text_page),
        ("zeros", |_, p| p.fill(0)),
        ("random bytes", random_page),
    ];
    for (name, make) in kinds {
        let tier = CompressedTier::new(64 << 20);
        let key = FileKey { dev: 1, ino: 1, generation: 0, page_shift: 12 };
        let mut page = vec![0u8; PAGE_SIZE];
        let mut kept = 0;
        for i in 0..2000 {
            make(i, &mut page);
            kept += usize::from(tier.put_page(&key, i, &page));
        }
        let u = tier.usage();
        let ratio = if u.stored_bytes > 0 { u.logical_bytes as f64 / u.stored_bytes as f64 } else { f64::INFINITY };
        let per = if u.pages > 0 { u.bytes as f64 / u.pages as f64 } else { 0.0 };
        eprintln!("| {name} | {kept}/2000 | {ratio:.2}x | {per:.0} B ({:.2}x) |", PAGE_SIZE as f64 / per.max(1.0));
    }
}

/// Zipf(theta) ranks over `n` items, by the inverse of the CDF (tabled).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, theta: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for i in 1..=n {
            sum += 1.0 / (i as f64).powf(theta);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }
    fn sample(&self, s: &mut u64) -> usize {
        let u = (xorshift(s) >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// File reads (misses the tier did not serve) of a Zipf(0.9) workload
/// over a file 3x the total memory, with and without the tier.
fn print_zipf() {
    const TOTAL: usize = 32 << 20;
    let pages = (3 * TOTAL / PAGE_SIZE) as u64;
    let path = make_file("btree-96m", pages, btree_page);
    let zipf = Zipf::new(pages as usize, 0.9);
    // Ranks scattered over the file.
    let perm = common::permutation(pages, 7);
    eprintln!(
        "Zipf(0.9), {pages} B-tree-like pages (3x the memory), 400k reads, readahead off, same total memory {} MiB:",
        TOTAL >> 20
    );
    eprintln!("| setup | file reads | tier hits | tier pages | tier MiB | time per read (file hot in the kernel) |");
    eprintln!("|---|---|---|---|---|---|");
    let mut base = 0;
    let rows = [
        ("no tier", TOTAL, 0, false),
        ("tier 1/4 of memory", TOTAL * 3 / 4, TOTAL / 4, false),
        ("tier 1/2 of memory", TOTAL / 2, TOTAL / 2, false),
        ("tier 3/4 of memory", TOTAL / 4, TOTAL * 3 / 4, false),
        ("tier 1/4, exclusive gets", TOTAL * 3 / 4, TOTAL / 4, true),
        ("tier 1/2, exclusive gets", TOTAL / 2, TOTAL / 2, true),
        ("tier 3/4, exclusive gets", TOTAL / 4, TOTAL * 3 / 4, true),
    ];
    for (name, cap, tier, exclusive) in rows {
        let mut b = PageCache::builder().capacity(cap).readahead_max(0);
        if tier > 0 {
            b = b.second_tier(std::sync::Arc::new(CompressedTier::new(tier).with_exclusive_gets(exclusive)));
        }
        let cache = b.build().expect("cache");
        let f = cache.open(&path).expect("open");
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = [0u8; 64];
        let run = |n: usize, s: &mut u64, buf: &mut [u8]| {
            for _ in 0..n {
                let p = perm[zipf.sample(s)];
                f.read_at(buf, p * PAGE_SIZE as u64).expect("read");
            }
        };
        run(100_000, &mut s, &mut buf); // warm up
        let before = cache.stats();
        let t0 = std::time::Instant::now();
        run(400_000, &mut s, &mut buf);
        let per_read = t0.elapsed() / 400_000;
        let st = cache.stats();
        let reads = (st.misses - before.misses) - (st.tier_hits - before.tier_hits);
        if tier == 0 {
            base = reads;
        }
        eprintln!(
            "| {name} | {reads} ({:.0}% of no tier) | {} | {} | {:.1} | {per_read:?} |",
            100.0 * reads as f64 / base.max(1) as f64,
            st.tier_hits - before.tier_hits,
            st.tier_pages,
            st.tier_bytes as f64 / MIB as f64
        );
    }
}

fn tier_hit(c: &mut Criterion) {
    print_machine();
    if std::env::var_os("PAGE_CACHE_BENCH_NO_HIT_RATIO").is_none() {
        print_ratios();
        print_zipf();
    }
    // 64 MiB of B-tree pages; a cache of 4 MiB in front of a 64 MiB tier:
    // every random read misses the cache and (after the first pass) hits
    // the tier.
    const PAGES: u64 = 16384;
    let path = make_file("btree-64m", PAGES, btree_page);
    // `Builder::compressed_tier`'s (exclusive gets: each page evicted again
    // is compressed again) and one that keeps its copies (a page evicted
    // unchanged costs nothing).
    let cache =
        PageCache::builder().capacity(4 << 20).readahead_max(0).compressed_tier(64 << 20).build().expect("cache");
    let keeping = PageCache::builder()
        .capacity(4 << 20)
        .readahead_max(0)
        .second_tier(std::sync::Arc::new(CompressedTier::new(64 << 20)))
        .build()
        .expect("cache");
    let f = cache.open(&path).expect("open");
    let fk = keeping.open(&path).expect("open");
    let mut buf = vec![0u8; PAGE_SIZE];
    for file in [&f, &fk] {
        for _ in 0..2 {
            for p in 0..PAGES {
                file.read_at(&mut buf, p * PAGE_SIZE as u64).expect("read");
            }
        }
    }
    let direct = PageCache::builder().capacity(4 << 20).readahead_max(0).direct_io(true).build().expect("cache");
    let d = direct.open(&path).expect("open");
    let std = File::open(&path).expect("open");
    // Hot in the kernel: the first 4 MiB, read just before.
    for p in 0..1024u64 {
        std.read_at(&mut buf, p * PAGE_SIZE as u64).expect("pread");
    }
    let tier = CompressedTier::new(64 << 20);
    let key = FileKey { dev: 1, ino: 1, generation: 0, page_shift: 12 };
    let mut page = vec![0u8; PAGE_SIZE];
    for i in 0..PAGES {
        btree_page(i, &mut page);
        tier.put_page(&key, i, &page);
    }

    let mut seed = 0x2545_F491_4F6C_DD1D;
    let mut g = c.benchmark_group("tier_hit_4k");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(PAGE_SIZE as u64));
    let before = cache.stats();
    g.bench_function("page_cache_tier_hit", |b| {
        b.iter(|| {
            let p = xorshift(&mut seed) % PAGES;
            black_box(f.read_at(&mut buf, p * PAGE_SIZE as u64).expect("read"));
        })
    });
    g.bench_function("page_cache_tier_hit_keeping_copies", |b| {
        b.iter(|| {
            let p = xorshift(&mut seed) % PAGES;
            black_box(fk.read_at(&mut buf, p * PAGE_SIZE as u64).expect("read"));
        })
    });
    let after = cache.stats();
    eprintln!(
        "tier_hit_4k: {} reads of the cache missed, {} came from the tier, {} from the file",
        after.misses - before.misses,
        after.tier_hits - before.tier_hits,
        (after.misses - before.misses) - (after.tier_hits - before.tier_hits)
    );
    g.bench_function("compressed_tier_get", |b| {
        b.iter(|| {
            let p = xorshift(&mut seed) % PAGES;
            black_box(tier.get_page(&key, p, &mut page));
        })
    });
    g.bench_function("o_direct_miss", |b| {
        b.iter(|| {
            let p = xorshift(&mut seed) % PAGES;
            black_box(d.read_at(&mut buf, p * PAGE_SIZE as u64).expect("read"));
        })
    });
    g.bench_function("pread_kernel_hot", |b| {
        b.iter(|| {
            let p = xorshift(&mut seed) % 1024;
            black_box(std.read_at(&mut buf, p * PAGE_SIZE as u64).expect("pread"));
        })
    });
    g.finish();
}

/// A one-pass scan of random bytes, 4x the cache, through a cache with and
/// without a tier: every page is offered to the tier, none compresses.
fn useless_scan(c: &mut Criterion) {
    const PAGES: u64 = 8192;
    let path = make_file("random-32m", PAGES, random_page);
    let std = File::open(&path).expect("open");
    // One scan through a new cache, timed without the set-up: the file hot
    // in the kernel first, so the comparison is of the cache's own work.
    let scan = |tier: usize| -> Duration {
        let mut buf = vec![0u8; MIB];
        for off in (0..PAGES * PAGE_SIZE as u64).step_by(MIB) {
            std.read_at(&mut buf, off).expect("pread");
        }
        let mut bld = PageCache::builder().capacity(8 << 20);
        if tier > 0 {
            bld = bld.compressed_tier(tier);
        }
        let cache = bld.build().expect("cache");
        let f = cache.open(&path).expect("open");
        let mut page = vec![0u8; 64 << 10];
        let t0 = std::time::Instant::now();
        for off in (0..PAGES * PAGE_SIZE as u64).step_by(64 << 10) {
            f.read_at(&mut page, off).expect("read");
        }
        let took = t0.elapsed();
        black_box(cache.stats().tier_rejects);
        took
    };
    let rows = [("no_tier", 0usize), ("compressed_tier", 8 << 20)];
    let mut g = c.benchmark_group("tier_useless_scan");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Bytes(PAGES * PAGE_SIZE as u64));
    for (name, tier) in rows {
        g.bench_function(name, |b| b.iter_custom(|n| (0..n).map(|_| scan(tier)).sum()));
    }
    g.finish();
    if common::group_wanted("tier_useless_scan") {
        let [none, tiered] = common::interleaved_medians::<2>(21, |k| scan(rows[k].1));
        eprintln!(
            "tier_useless_scan interleaved (21 rounds): no tier {none:?}, compressed tier {tiered:?} ({:.3}x)",
            tiered.as_secs_f64() / none.as_secs_f64()
        );
    }
}

criterion_group!(benches, tier_hit, useless_scan);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
