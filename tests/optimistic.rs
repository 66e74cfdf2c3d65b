//! Optimistic reads under fire: readers copy pages with no reference and no
//! read guard while writers overwrite the same pages with patterns that
//! name the page and the version, truncate and re-extend the file, and a
//! tiny cache makes reclaim recycle frames between files all the time.
//! Every byte a reader returns must belong to one version of the page it
//! asked for (or be zeros, what a truncated and re-extended page reads).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use page_cache::{PageCache, PAGE_SIZE};

const PS: u64 = PAGE_SIZE as u64;

/// A whole page of version `v` of page `index`: every 8-byte word holds
/// the page index in its high half and the version in its low half.
fn page_bytes(index: u64, v: u32) -> Vec<u8> {
    let word = (index << 32) | u64::from(v);
    (0..PAGE_SIZE / 8).flat_map(|_| word.to_le_bytes()).collect()
}

/// Checks that `bytes` (read at `offset`, 8-aligned) are one version of the
/// page at `index`, or zeros, or (a page the file was cut inside of, at a
/// word boundary) one version followed by zeros. Returns the version (0
/// for zeros).
fn one_version(bytes: &[u8], index: u64, offset: u64) -> Result<u32, String> {
    assert_eq!(offset % 8, 0);
    let words: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    let first = words[0];
    let cut = words.iter().position(|&w| w != first).unwrap_or(words.len());
    if words[cut..].iter().any(|&w| w != 0) {
        return Err(format!(
            "page {index}: torn read at {offset}: {:#x} and {:#x}",
            first,
            words.iter().find(|&&w| w != first).unwrap()
        ));
    }
    if first == 0 {
        return Ok(0);
    }
    if first >> 32 != index {
        return Err(format!("page {index}: read page {}'s bytes", first >> 32));
    }
    Ok(first as u32)
}

fn stress(readers: usize, writers: usize, secs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let pages: u64 = 256;
    // A cache of 48 pages over two files of 256: reclaim recycles frames
    // between the files all the time.
    let cache = PageCache::builder().capacity(48 * PAGE_SIZE).readahead_max(4 * PAGE_SIZE).build().unwrap();
    let a = cache.create(dir.path().join("a")).unwrap();
    let b = cache.create(dir.path().join("b")).unwrap();
    for i in 0..pages {
        a.write_all_at(&page_bytes(i, 1), i * PS).unwrap();
        b.write_all_at(&page_bytes(i + 1_000_000, 1), i * PS).unwrap();
    }
    a.sync_data().unwrap();
    b.sync_data().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for w in 0..writers {
            let (a, b, stop) = (a.clone(), b.clone(), stop.clone());
            s.spawn(move || {
                let mut x = 0xDEAD_BEEFu64 + w as u64;
                let mut v = 2u32 + w as u32 * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = x % pages;
                    v += 1;
                    match x % 64 {
                        // Truncate into the file and grow it back: the pages
                        // past the cut read zeros until written again.
                        0 => {
                            let cut = (x >> 8) % pages;
                            a.set_len(cut * PS + (x >> 20) % PS / 8 * 8).unwrap();
                            a.set_len(pages * PS).unwrap();
                        }
                        1..=8 => b.write_all_at(&page_bytes(i + 1_000_000, v), i * PS).unwrap(),
                        _ => a.write_all_at(&page_bytes(i, v), i * PS).unwrap(),
                    }
                }
            });
        }
        for r in 0..readers {
            let (a, b, stop, checked) = (a.clone(), b.clone(), stop.clone(), checked.clone());
            s.spawn(move || {
                let mut x = 0x1234_5678u64 + r as u64;
                let mut buf = vec![0u8; PAGE_SIZE];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let i = x % pages;
                    let (file, id) = if x % 8 == 0 { (&b, i + 1_000_000) } else { (&a, i) };
                    // A 64-byte line or the whole page.
                    let (off, len) = if x % 3 == 0 { (0, PAGE_SIZE) } else { ((x >> 16) % 64 * 64, 64) };
                    let got = file.read_at(&mut buf[..len], i * PS + off).unwrap();
                    // A truncation may cut the read short; what came back
                    // must still be one version.
                    if got >= 8 {
                        let got = got / 8 * 8;
                        if let Err(e) = one_version(&buf[..got], id, off) {
                            panic!("{e}");
                        }
                    }
                    n += 1;
                }
                checked.fetch_add(n, Ordering::Relaxed);
            });
        }
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let s = cache.stats();
    eprintln!(
        "{} reads checked; {} hits, {} optimistic, {} misses, {} evictions",
        checked.load(Ordering::Relaxed),
        s.hits,
        s.optimistic_hits,
        s.misses,
        s.evictions
    );
    assert!(s.optimistic_hits > 0, "the optimistic path ran");
    assert!(s.evictions > 0, "reclaim recycled frames");
    cache.check_invariants();
}

#[test]
fn optimistic_readers_see_one_version_of_the_page_they_asked_for() {
    let secs = if std::env::var_os("PAGE_CACHE_SANITIZER").is_some() { 1.0 } else { 3.0 };
    stress(3, 2, secs);
}

/// Hot pages stay on the optimistic path: once a page is active, reads
/// take no reference and the descriptor is not written.
#[test]
fn hot_reads_are_optimistic() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(1 << 20).unwrap();
    let f = cache.create(dir.path().join("f")).unwrap();
    f.write_all_at(&page_bytes(0, 5), 0).unwrap();
    let mut buf = [0u8; 64];
    // Touches that promote the page (referenced, then active).
    for _ in 0..4 {
        f.read_exact_at(&mut buf, 64).unwrap();
    }
    cache.check_invariants(); // drains the LRU batches: the page is active
                              // Activation clears REFERENCED (the kernel's rule); one more touch sets it.
    f.read_exact_at(&mut buf, 64).unwrap();
    let page = f.mapping().find_get_page(0).unwrap();
    let count = page.page().page_count();
    let before = cache.stats().optimistic_hits;
    for _ in 0..1000 {
        f.read_exact_at(&mut buf, 128).unwrap();
        assert_eq!(one_version(&buf, 0, 128), Ok(5));
    }
    assert_eq!(cache.stats().optimistic_hits - before, 1000);
    assert_eq!(page.page().page_count(), count, "optimistic reads took no reference");
}

/// A hit on a hot page (active and referenced: its access state
/// saturated) writes nothing to its descriptor, by `read_at` (optimistic)
/// or by the page-level lookup with `mark_accessed` (whose reference comes
/// and goes): every word of the descriptor is the same after 1000 hits.
#[test]
fn a_hit_on_a_saturated_page_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(1 << 20).unwrap();
    let f = cache.create(dir.path().join("f")).unwrap();
    f.write_all_at(&page_bytes(0, 5), 0).unwrap();
    f.sync_data().unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..4 {
        f.read_exact_at(&mut buf, 64).unwrap();
    }
    cache.check_invariants(); // drains the LRU batches: the page is active
    f.read_exact_at(&mut buf, 64).unwrap(); // and referenced again
    let page = f.mapping().find_get_page(0).unwrap();
    page.mark_accessed();
    assert!(page.is_active() && page.is_referenced());
    let before = page.page().snapshot();
    for _ in 0..1000 {
        f.read_exact_at(&mut buf, 128).unwrap();
        let p = f.mapping().find_get_page(0).unwrap();
        p.mark_accessed();
    }
    assert_eq!(page.page().snapshot(), before, "a hit on a saturated page wrote to its descriptor");
}
