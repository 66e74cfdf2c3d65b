//! Reads through the cache against the kernel's page cache: random hits and
//! sequential 1 MiB reads on a 1 GiB file that is resident in both caches
//! (vs `pread`, a copy out of a prefaulted mmap, and a copy out of a
//! huge-page buffer with no lookup at all, the floor), hot pages read by
//! one and two threads, a cold sequential pass with O_DIRECT underneath (vs
//! `dd iflag=direct` and in-process O_DIRECT `pread`), and a file streamed
//! once through a 4 MiB cache (vs `pread`).
//!
//! Groups:
//! - `random_4k_hits`: 4 KiB `read_at` of random pages, keys a random
//!   permutation of all 262,144 resident pages (each page once per pass).
//!   A pass copies the whole 1 GiB, far more than any L3: memory-bound.
//!   Rows: `page_cache_read_at`, `pread`, `mmap_copy`,
//!   `thp_buffer_copy_floor` (no index), and the index floors
//!   `slot_descriptor_page_floor` and `leaf_table_descriptor_page_floor`
//!   (as in `read_64b_random_1g`, with the page copied); then ours and two
//!   floors again in an interleaved series (rotating order, medians).
//! - `read_64b_random_1g`: 64-byte `read_at` at a random page and a random
//!   64-byte line in it; the same permutation of all pages, and the line in
//!   each page moves on every pass, so no line is read twice within 64
//!   passes and the data side stays a 1 GiB working set. What is left of
//!   a read is the lookup, its descriptor and one line of data, all
//!   missing the CPU cache: the cost of a small hit when memory-bound.
//!   Rows: `page_cache_read_at`; `hashmap_rwlock_copy` (a
//!   `HashMap<u64, u32>` page -> frame under a `parking_lot::RwLock`, read
//!   locked during the copy, over the 1 GiB huge-page buffer);
//!   `quick_cache_arc_copy` (`quick_cache::sync::Cache<u64, Arc<[u8]>>`
//!   holding the 262,144 pages); `pread` (the file hot in the kernel's
//!   cache); `mmap_copy`; `thp_buffer_copy_floor` (the copy out of the
//!   huge-page buffer at the same offsets, no lookup); and two floors with
//!   an index's memory traffic and no bookkeeping, the frame then its
//!   32-byte descriptor and the line: `slot_descriptor_line_floor` (a
//!   one-level slot array) and `leaf_table_descriptor_line_floor` (our
//!   index's shape: leaf table, 64-slot leaf, frame). After the group, the
//!   three caches again in an interleaved series (rotating order, medians),
//!   since the maps' rows swing from run to run.
//! - `hot_pages_threads`: 64-byte reads of 1 hot page and of 64 hot pages by
//!   1 and by 2 threads (throughput: reads by all threads per second, so
//!   2-thread over 1-thread is the scaling). Everything fits in L2; what
//!   this measures is the sharing of the hot pages' descriptors between
//!   cores. Rows: `page_cache_read_at`, `pread`, and
//!   `thp_buffer_copy_floor`, whose only shared lines are read-only: the
//!   machine's own scaling for the same copies.
//! - `seq_1m`, `stream_small_cache`, `cold_direct`: as described above.
//!
//! Every bench binary prints the CPU model and L3 size first; the hot
//! groups print their working set next to the L3 (on a VM the reported L3
//! may not be the host's).
//!
//! The data files live in /var/tmp/page-cache-bench/ and are reused across
//! runs. Run: `cargo bench --bench read`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod common;
use common::{
    data_file, fill_cache, group_wanted, interleaved_medians, permutation, print_working_set, wall_time_on_threads,
    warm_kernel, xorshift, DIR, MIB,
};
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};
use parking_lot::RwLock;

const GIB: u64 = 1 << 30;
/// Pages of the 1 GiB file, all resident in the hot groups.
const PAGES: u64 = GIB / PAGE_SIZE as u64;
const PS: u64 = PAGE_SIZE as u64;
/// The small reads' size: one cache line.
const LINE: usize = 64;

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
    eprintln!(
        "{group}: page cache hits {} ({} optimistic) misses {} during the group",
        s.hits - before.hits,
        s.optimistic_hits - before.optimistic_hits,
        s.misses - before.misses
    );
}

fn random_4k_hits(c: &mut Criterion) {
    let h = hot();
    let floor = thp_buffer();
    rewarm(h);
    // Every resident page once per pass, in random order.
    let offsets: Vec<u64> = permutation(PAGES, 0x2545_F491_4F6C_DD1D).into_iter().map(|p| p * PS).collect();
    let mask = offsets.len() - 1;
    print_working_set("random_4k_hits", GIB);
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
    // What an indexed cache pays at least: the page's frame through an
    // index (a slot array; our leaf table's shape), its descriptor, then
    // the copy (see `read_64b_random_1g`'s floors).
    let ix = index_floor();
    g.bench_function("slot_descriptor_page_floor", |b| {
        b.iter(|| {
            let p = next() / PS;
            let pfn = ix.slots[p as usize] as usize;
            let d = ix.descs[pfn][3];
            buf.copy_from_slice(&floor[pfn * PAGE_SIZE..(pfn + 1) * PAGE_SIZE]);
            black_box((d, &buf));
        })
    });
    g.bench_function("leaf_table_descriptor_page_floor", |b| {
        b.iter(|| {
            let pfn = ix.via_leaf_table(next() / PS);
            let d = ix.descs[pfn][3];
            buf.copy_from_slice(&floor[pfn * PAGE_SIZE..(pfn + 1) * PAGE_SIZE]);
            black_box((d, &buf));
        })
    });
    g.finish();
    // The same rows swing by 10% from run to run: ours and the two floors
    // again, interleaved in rotating order, a pass over all pages each per
    // round, medians.
    if !group_wanted("random_4k_hits") {
        report_misses(h, "random_4k_hits", &before);
        return;
    }
    const ROUNDS: usize = 15;
    let pass = offsets.len();
    let [ours, none, slot] = interleaved_medians::<3>(ROUNDS, |which| {
        let t0 = Instant::now();
        for _ in 0..pass {
            let off = next();
            match which {
                0 => {
                    let n = h.file.read_at(&mut buf, off).expect("read");
                    black_box((n, &buf));
                }
                1 => {
                    let o = off as usize;
                    buf.copy_from_slice(&floor[o..o + PAGE_SIZE]);
                    black_box(&buf);
                }
                _ => {
                    let pfn = ix.slots[(off / PS) as usize] as usize;
                    let d = ix.descs[pfn][3];
                    buf.copy_from_slice(&floor[pfn * PAGE_SIZE..(pfn + 1) * PAGE_SIZE]);
                    black_box((d, &buf));
                }
            }
        }
        t0.elapsed()
    })
    .map(|t| t.as_secs_f64() * 1e9 / pass as f64);
    eprintln!(
        "random_4k_hits interleaved ({ROUNDS} rounds of a pass, medians): page_cache_read_at {ours:.1} ns, \
         thp_buffer_copy_floor {none:.1} ns (ours {:.2}x), slot_descriptor_page_floor {slot:.1} ns ({:.2}x)",
        ours / none,
        slot / none
    );
    report_misses(h, "random_4k_hits", &before);
}

/// The 64-byte reads' offsets: `next()` gives page `perm[i]` of a random
/// permutation of all pages, at line `(line[i] + pass) % 64` of it, `pass`
/// counting the walks through the permutation: every page once per pass,
/// and another line of it each pass.
struct LineWalk {
    offsets: Vec<u64>,
    i: usize,
    /// log2 of `offsets.len()` (a power of two): the pass number is a shift,
    /// not a division (a 64-bit `div` per call cost every row about 25 ns
    /// and changed how far reads overlapped).
    shift: u32,
}

impl LineWalk {
    fn new(seed: u64) -> LineWalk {
        let mut s = seed;
        let offsets = permutation(PAGES, seed)
            .into_iter()
            .map(|p| p * PS + xorshift(&mut s) % (PS / LINE as u64) * LINE as u64)
            .collect();
        let offsets: Vec<u64> = offsets;
        assert!(offsets.len().is_power_of_two(), "the walk masks and shifts by the length");
        let shift = offsets.len().trailing_zeros();
        LineWalk { offsets, i: 0, shift }
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.i = self.i.wrapping_add(1);
        let n = self.offsets.len();
        let off = self.offsets[self.i & (n - 1)];
        let pass = (self.i >> self.shift) as u64;
        off & !(PS - 1) | (off + pass * LINE as u64) & (PS - 1)
    }
}

fn read_64b_random_1g(c: &mut Criterion) {
    let h = hot();
    let floor = thp_buffer();
    // A HashMap page cache over the huge-page buffer: page -> frame, the
    // frames in file order, as filling our cache in order leaves its own.
    let hash: RwLock<HashMap<u64, u32>> = RwLock::new((0..PAGES).map(|p| (p, p as u32)).collect());
    // quick_cache with room for every page (all lookups hit): a 4 KiB
    // allocation per page, an Arc's counts taken and dropped per get.
    let quick = quick_cache::sync::Cache::<u64, Arc<[u8]>>::new(2 * PAGES as usize);
    for (p, page) in floor.chunks(PAGE_SIZE).enumerate() {
        quick.insert(p as u64, Arc::from(page));
    }
    assert_eq!(quick.len() as u64, PAGES, "quick_cache should hold every page");

    let mut walk = LineWalk::new(0x9E6C_63D0_676A_9A99);
    let mut buf = [0u8; LINE];
    let mut want = [0u8; LINE];
    for _ in 0..64 {
        let off = walk.next();
        h.file.read_exact_at(&mut want, off).expect("read");
        let frame = hash.read()[&(off / PS)] as usize * PAGE_SIZE;
        let at = (off % PS) as usize;
        assert_eq!(&floor[frame + at..frame + at + LINE], &want, "buffer differs from the file at {off}");
        assert_eq!(&quick.get(&(off / PS)).expect("cached")[at..at + LINE], &want);
    }
    print_working_set("read_64b_random_1g", GIB);
    rewarm(h);
    let before = h.cache.stats();
    let mut g = c.benchmark_group("read_64b_random_1g");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    g.bench_function("page_cache_read_at", |b| {
        b.iter(|| {
            let n = h.file.read_at(&mut buf, walk.next()).expect("read");
            black_box((n, &buf));
        })
    });
    g.bench_function("hashmap_rwlock_copy", |b| {
        b.iter(|| {
            let off = walk.next();
            let map = hash.read();
            let at = *map.get(&(off / PS)).expect("resident") as usize * PAGE_SIZE + (off % PS) as usize;
            buf.copy_from_slice(&floor[at..at + LINE]);
            drop(map);
            black_box(&buf);
        })
    });
    g.bench_function("quick_cache_arc_copy", |b| {
        b.iter(|| {
            let off = walk.next();
            let page = quick.get(&(off / PS)).expect("resident");
            let at = (off % PS) as usize;
            buf.copy_from_slice(&page[at..at + LINE]);
            black_box(&buf);
        })
    });
    g.bench_function("pread", |b| {
        b.iter(|| {
            let n = h.std.read_at(&mut buf, walk.next()).expect("pread");
            black_box((n, &buf));
        })
    });
    g.bench_function("mmap_copy", |b| {
        b.iter(|| {
            let off = walk.next() as usize;
            buf.copy_from_slice(&h.map[off..off + LINE]);
            black_box(&buf);
        })
    });
    g.bench_function("thp_buffer_copy_floor", |b| {
        b.iter(|| {
            let off = walk.next() as usize;
            buf.copy_from_slice(&floor[off..off + LINE]);
            black_box(&buf);
        })
    });
    // Two floors with the memory traffic of an index -> descriptor -> line
    // read and no bookkeeping: a one-level index (a slot array of u32 frame
    // numbers), and our structure's shape (leaf table -> 64-slot leaf ->
    // frame number, as `load_unpinned` walks it), each then a 32-byte
    // descriptor and the line, both found from the frame number.
    let ix = index_floor();
    g.bench_function("slot_descriptor_line_floor", |b| {
        b.iter(|| {
            let off = walk.next();
            let pfn = ix.slots[(off / PS) as usize] as usize;
            let d = ix.descs[pfn][3];
            let at = pfn * PAGE_SIZE + (off % PS) as usize;
            buf.copy_from_slice(&floor[at..at + LINE]);
            black_box((d, &buf));
        })
    });
    g.bench_function("leaf_table_descriptor_line_floor", |b| {
        b.iter(|| {
            let off = walk.next();
            let pfn = ix.via_leaf_table(off / PS);
            let d = ix.descs[pfn][3];
            let at = pfn * PAGE_SIZE + (off % PS) as usize;
            buf.copy_from_slice(&floor[at..at + LINE]);
            black_box((d, &buf));
        })
    });
    g.finish();
    // The maps' rows swing from run to run (quick_cache from 155 to 258 ns
    // in one sitting): the three caches again, interleaved in rotating
    // order, 1M reads each per round, medians.
    if !group_wanted("read_64b_random_1g") {
        report_misses(h, "read_64b_random_1g", &before);
        return;
    }
    const ROUNDS: usize = 15;
    const READS: usize = 1 << 20;
    let [ours, quick_t, hash_t] = interleaved_medians::<3>(ROUNDS, |which| {
        let t0 = Instant::now();
        for _ in 0..READS {
            let off = walk.next();
            match which {
                0 => {
                    let n = h.file.read_at(&mut buf, off).expect("read");
                    black_box((n, &buf));
                }
                1 => {
                    let page = quick.get(&(off / PS)).expect("resident");
                    let at = (off % PS) as usize;
                    buf.copy_from_slice(&page[at..at + LINE]);
                    black_box(&buf);
                }
                _ => {
                    let map = hash.read();
                    let at = *map.get(&(off / PS)).expect("resident") as usize * PAGE_SIZE + (off % PS) as usize;
                    buf.copy_from_slice(&floor[at..at + LINE]);
                    drop(map);
                    black_box(&buf);
                }
            }
        }
        t0.elapsed()
    })
    .map(|t| t.as_secs_f64() * 1e9 / READS as f64);
    eprintln!(
        "read_64b_random_1g interleaved ({ROUNDS} rounds of {READS} reads, medians): page_cache_read_at \
         {ours:.1} ns, quick_cache_arc_copy {quick_t:.1} ns ({:.2}x), hashmap_rwlock_copy {hash_t:.1} ns ({:.2}x)",
        quick_t / ours,
        hash_t / ours
    );
    report_misses(h, "read_64b_random_1g", &before);
}

/// The floors' indices over the huge-page buffer's frames (page `p` in
/// frame `slots[p]`, a random permutation): a slot array, and the same map
/// as our leaf table holds it (a table of leaf references, each leaf 64
/// tagged `u64` slots in a node of our nodes' size), and a 32-byte
/// descriptor per frame.
struct IndexFloor {
    slots: Vec<u32>,
    table: Vec<&'static [u64; 72]>,
    descs: Vec<[u64; 4]>,
}

impl IndexFloor {
    /// The frame of page `p` through the leaf table: two dependent loads.
    #[inline(always)]
    fn via_leaf_table(&self, p: u64) -> usize {
        (self.table[(p >> 6) as usize][(p & 63) as usize] >> 2) as usize
    }
}

fn index_floor() -> &'static IndexFloor {
    static IX: OnceLock<IndexFloor> = OnceLock::new();
    IX.get_or_init(|| {
        let slots: Vec<u32> = permutation(PAGES, 0x51A7_5EED).into_iter().map(|p| p as u32).collect();
        // Leaked: built once per process, read by every floor row.
        let leaves: &'static [Box<[u64; 72]>] = Vec::leak(
            slots
                .chunks(64)
                .map(|c| {
                    let mut leaf = Box::new([0u64; 72]);
                    for (slot, &pfn) in leaf.iter_mut().zip(c) {
                        *slot = (u64::from(pfn) << 2) | 1;
                    }
                    leaf
                })
                .collect(),
        );
        let table = leaves.iter().map(|l| &**l).collect();
        let descs = (0..PAGES).map(|p| [p, 0, 0, 1]).collect();
        IndexFloor { slots, table, descs }
    })
}

/// Reads per thread in one timed batch of `hot_pages_threads`.
const BATCH: u64 = 4096;

fn hot_pages_threads(c: &mut Criterion) {
    let h = hot();
    let floor = thp_buffer();
    rewarm(h);
    let before = h.cache.stats();
    let mut seed = 0x6A09_E667_F3BC_C909;
    let mut g = c.benchmark_group("hot_pages_threads");
    g.sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    type Read<'a> = Box<dyn Fn(&mut [u8; LINE], u64) + Sync + 'a>;
    let variants: [(&str, Read<'_>); 3] = [
        ("page_cache_read_at", Box::new(|buf, off| assert_eq!(h.file.read_at(buf, off).expect("read"), LINE))),
        ("pread", Box::new(|buf, off| assert_eq!(h.std.read_at(buf, off).expect("pread"), LINE))),
        ("thp_buffer_copy_floor", Box::new(|buf, off| buf.copy_from_slice(&floor[off as usize..off as usize + LINE]))),
    ];
    for nr_hot in [1u64, 64] {
        // `nr_hot` distinct random pages; 4096 reads at a random one of
        // them and a random line in it, walked cyclically.
        let hot_pages = &permutation(PAGES, xorshift(&mut seed))[..nr_hot as usize];
        let offsets: Vec<u64> = (0..4096)
            .map(|_| {
                let page = hot_pages[(xorshift(&mut seed) % nr_hot) as usize];
                page * PS + xorshift(&mut seed) % (PS / LINE as u64) * LINE as u64
            })
            .collect();
        let mask = offsets.len() - 1;
        for (name, read) in &variants {
            for threads in [1usize, 2] {
                // Elements per iteration: reads by all threads; time per
                // iteration: one batch per thread, so equal times mean linear scaling.
                g.throughput(Throughput::Elements(BATCH * threads as u64));
                let id = BenchmarkId::new(format!("{name}/hot{nr_hot}"), format!("{threads}_threads"));
                g.bench_with_input(id, &threads, |b, &threads| {
                    b.iter_custom(|iters| {
                        wall_time_on_threads(threads, &|t| {
                            let mut buf = [0u8; LINE];
                            let mut i = t * offsets.len() / threads;
                            for _ in 0..iters * BATCH {
                                i = i.wrapping_add(1);
                                read(&mut buf, offsets[i & mask]);
                            }
                            black_box(&buf);
                        })
                    })
                });
            }
        }
    }
    g.finish();
    report_misses(h, "hot_pages_threads", &before);
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
    // The same with windows of 8 MiB: more of the file in flight while the
    // reader copies out of the last window.
    let cache8 =
        PageCache::builder().capacity(320 << 20).direct_io(true).readahead_max(8 << 20).build().expect("cache");
    let file8 = cache8.open(&path).expect("open through cache");
    g.bench_function("page_cache_direct_io_ra_8m", |b| {
        b.iter_custom(|iters| cold_passes(&cache8, &file8, &mut buf, SIZE, iters))
    });
    // The same with io_uring off: the asynchronous window goes to the
    // worker's blocking preadv instead of the shared ring.
    let cache_nr = PageCache::builder().capacity(320 << 20).direct_io(true).io_uring(false).build().expect("cache");
    let file_nr = cache_nr.open(&path).expect("open through cache");
    g.bench_function("page_cache_direct_io_no_uring", |b| {
        b.iter_custom(|iters| cold_passes(&cache_nr, &file_nr, &mut buf, SIZE, iters))
    });
    // The same with 64 KiB pages: a 2 MiB window is 32 iovecs, not 512.
    let cache64 = PageCache::builder().capacity(320 << 20).direct_io(true).build().expect("cache");
    let file64 = cache64.open_with_page_size(&path, OpenOptions::new().read(true), 65536).expect("open through cache");
    g.bench_function("page_cache_direct_io_64k_pages", |b| {
        b.iter_custom(|iters| cold_passes(&cache64, &file64, &mut buf, SIZE, iters))
    });
    let cache64_8 =
        PageCache::builder().capacity(320 << 20).direct_io(true).readahead_max(8 << 20).build().expect("cache");
    let file64_8 =
        cache64_8.open_with_page_size(&path, OpenOptions::new().read(true), 65536).expect("open through cache");
    g.bench_function("page_cache_direct_io_64k_pages_ra_8m", |b| {
        b.iter_custom(|iters| cold_passes(&cache64_8, &file64_8, &mut buf, SIZE, iters))
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
        g.bench_function("dd_iflag_direct", |b| b.iter_custom(|iters| (0..iters).map(|_| dd_direct(&path)).sum()));
    } else {
        eprintln!("cold_direct: dd not found, its variant skipped");
    }
    g.finish();
    // The disk swings between groups run one after another: the main rows
    // again, interleaved (one pass of each per round), medians.
    if dd_ok && group_wanted("cold_direct") {
        const ROUNDS: usize = 12;
        // The order rotates every round: a reader right after another one
        // of the same file can find it in the host's cache.
        let ms = interleaved_medians::<4>(ROUNDS, |which| match which {
            0 => cold_passes(&cache64, &file64, &mut buf, SIZE, 1),
            1 => cold_passes(&cache_nr, &file_nr, &mut buf, SIZE, 1),
            2 => dd_direct(&path),
            _ => {
                empty_cache();
                let t0 = Instant::now();
                let mut off = 0;
                while off < SIZE {
                    off += file.read_at(&mut buf, off).expect("read") as u64;
                }
                t0.elapsed()
            }
        })
        .map(|t| t.as_secs_f64() * 1e3);
        let [t64, tnr, dd_ms, t4] = ms;
        for (name, m) in [
            ("page_cache_direct_io", t4),
            ("page_cache_direct_io_64k_pages", t64),
            ("page_cache_direct_io_no_uring", tnr),
        ] {
            eprintln!(
                "cold_direct interleaved {name}: median {m:.1} ms, dd iflag=direct bs=1M {dd_ms:.1} ms \
                 ({:.2}x dd's speed; {ROUNDS} rounds)",
                dd_ms / m
            );
        }
    }
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

/// One `dd if=path of=/dev/null iflag=direct bs=1M`, timed.
fn dd_direct(path: &Path) -> Duration {
    let t0 = Instant::now();
    let status = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "iflag=direct", "bs=1M"])
        .stderr(Stdio::null())
        .status()
        .expect("run dd");
    assert!(status.success(), "dd failed");
    t0.elapsed()
}

/// `iters` reads of the first `size` bytes of `file` in `buf`-sized
/// reads, each from an emptied cache; the time of the reads alone.
fn cold_passes(cache: &PageCache, file: &CachedFile, buf: &mut [u8], size: u64, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        cache.shrink(usize::MAX);
        let t0 = Instant::now();
        let mut off = 0;
        while off < size {
            off += file.read_at(buf, off).expect("read") as u64;
        }
        total += t0.elapsed();
    }
    total
}

/// What the optimistic read's byte-wise atomic copy costs against a plain
/// copy (`copy_from_slice`): 64 bytes and 4 KiB, from one hot page (L1/L2)
/// and from random pages of the 1 GiB huge-page buffer (memory-bound).
fn copy_racy_vs_plain(c: &mut Criterion) {
    let buf = thp_buffer();
    let offsets: Vec<u64> = permutation(PAGES, 0x9E37_79B9_7F4A_7C15).into_iter().map(|p| p * PS).collect();
    let mask = offsets.len() - 1;
    let mut g = c.benchmark_group("copy_racy_vs_plain");
    g.sample_size(50).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1));
    for len in [LINE, PAGE_SIZE] {
        let mut dst = vec![0u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("plain_hot", len), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&buf[..len])));
        });
        g.bench_function(BenchmarkId::new("atomic_per_byte_hot", len), |b| {
            b.iter(|| page_cache::copy_atomic_per_byte(black_box(&buf[..len]), &mut dst));
        });
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("plain_random_1g", len), |b| {
            b.iter(|| {
                let o = offsets[i & mask] as usize;
                i += 1;
                dst.copy_from_slice(&buf[o..o + len]);
            });
        });
        g.bench_function(BenchmarkId::new("atomic_per_byte_random_1g", len), |b| {
            b.iter(|| {
                let o = offsets[i & mask] as usize;
                i += 1;
                page_cache::copy_atomic_per_byte(&buf[o..o + len], &mut dst);
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    copy_racy_vs_plain,
    random_4k_hits,
    read_64b_random_1g,
    hot_pages_threads,
    seq_1m,
    stream_small_cache,
    cold_direct
);

// criterion_main!, with the machine printed first.
fn main() {
    common::print_machine();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
