//! The find_* family under concurrency: lockless readers against writers
//! that insert, delete and reuse frames for other indices.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use page_cache::{PageCache, Tag};

#[test]
fn readers_see_only_their_index_while_writers_churn() {
    let dir = tempfile::tempdir().unwrap();
    // Few frames, so deleted frames are reused for other indices at once.
    let cache = PageCache::builder().capacity(64 * 4096).readahead_max(0).build().unwrap();
    let file = cache.create(dir.path().join("f")).unwrap();
    let m = file.mapping();
    const RANGE: u64 = 48;
    let stop = AtomicBool::new(false);
    let lookups = AtomicU64::new(0);
    // Everyone starts together, so the readers overlap the writers even on
    // a loaded machine.
    let start = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (stop, start) = (&stop, &start);
            s.spawn(move || {
                start.wait();
                let mut x = 0x9E37_79B9u64 + w;
                for _ in 0..30_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let index = x % RANGE;
                    match m.find_or_create_page(index) {
                        Ok(mut page) => {
                            if !page.is_uptodate() {
                                page.data_mut()[..8].copy_from_slice(&index.to_le_bytes());
                                page.set_uptodate();
                            }
                            if x % 3 == 0 {
                                m.delete_from_page_cache(&page);
                            }
                        }
                        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory),
                    }
                }
                stop.store(true, Ordering::Relaxed);
            });
        }
        for _ in 0..2 {
            let (stop, lookups, start) = (&stop, &lookups, &start);
            s.spawn(move || {
                start.wait();
                let mut i = 0u64;
                // At least a thousand rounds each, however fast the writers were.
                while !stop.load(Ordering::Relaxed) || i < 7_000 {
                    let index = i % RANGE;
                    if let Some(page) = m.find_get_page(index) {
                        assert_eq!(page.index(), index, "lookup returned another index's page");
                        if page.is_uptodate() {
                            let bytes = page.read();
                            assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()), index);
                        }
                    }
                    let pages = m.find_get_pages(index, 8);
                    assert!(pages.windows(2).all(|w| w[0].index() < w[1].index()), "not ascending");
                    assert!(pages.iter().all(|p| p.index() >= index));
                    let contig = m.find_get_pages_contig(index, 8);
                    for (k, p) in contig.iter().enumerate() {
                        assert_eq!(p.index(), index + k as u64);
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                    i = i.wrapping_add(7);
                }
            });
        }
    });
    assert!(lookups.load(Ordering::Relaxed) > 0);
    cache.check_invariants();
    let s = cache.stats();
    assert_eq!(s.free_pages + s.cached_pages, s.total_pages, "a frame was lost: {s}");
}

#[test]
fn tagged_lookup_advances_and_finds_only_tagged() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::new(4 << 20).unwrap();
    let file = cache.create(dir.path().join("f")).unwrap();
    let m = file.mapping();
    for i in 0..500u64 {
        let page = m.find_or_create_page(i).unwrap();
        page.set_uptodate();
        if i % 7 == 3 {
            page.set_dirty();
        }
    }
    let mut index = 0;
    let mut seen = Vec::new();
    loop {
        let pages = m.find_get_pages_tag(&mut index, Tag::Dirty, 10);
        if pages.is_empty() {
            break;
        }
        assert!(pages.len() <= 10);
        seen.extend(pages.iter().map(|p| {
            assert!(p.is_dirty());
            p.index()
        }));
    }
    let want: Vec<u64> = (0..500).filter(|i| i % 7 == 3).collect();
    assert_eq!(seen, want);
    assert_eq!(m.nr_pages(), 500);
    assert!(m.page_has_tag(3, Tag::Dirty) && !m.page_has_tag(4, Tag::Dirty));
    cache.check_invariants();
}
