//! The second tier behind reclaim (cleancache): a model test of two files
//! in a cache of 64 frames with a tier (the compressed tier, and a tier of
//! the user's own that keeps every page), against `Vec<u8>` models (one of
//! the two files through two handles): reads,
//! writes (partial and whole pages, into cached and uncached pages),
//! `set_len` down and up, `invalidate_range`, `copy_from`, sync, a file
//! changed on disk between a close and a reopen, a file deleted and a new
//! one at its path; at 4, 16 and 64 KiB pages. Then a threaded stress of
//! versioned pages, a put racing writes of the same page, a tier that
//! panics and one that returns garbage under a read verifier.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod common;
use common::{run_model_cases, settle};
use page_cache::tier::{FileKey, SecondTier, TierUsage};
use page_cache::{CachedFile, PageCache, PAGE_SIZE};
use proptest::prelude::*;

/// A tier of the user's own: a map that keeps every page it is given (the
/// contract at its plainest), and can be told to panic or lie.
#[derive(Default)]
struct MapTier {
    pages: Mutex<HashMap<(FileKey, u64), Vec<u8>>>,
    gets: AtomicU64,
    hits: AtomicU64,
    panic: AtomicBool,
    garbage: AtomicBool,
    /// What happened, in order: (what, key, index or range, first bytes).
    log: Mutex<Vec<Event>>,
}

/// A call into the map tier: what, key, index or range, first bytes.
type Event = (&'static str, FileKey, u64, u64, [u8; 4]);

impl MapTier {
    fn note(&self, what: &'static str, file: &FileKey, a: u64, b: u64, d: &[u8]) {
        let mut l = self.log.lock().unwrap();
        if l.len() > 200_000 {
            l.drain(..100_000);
        }
        let mut first = [0u8; 4];
        if d.len() >= 4 {
            first.copy_from_slice(&d[..4]);
        }
        l.push((what, *file, a, b, first));
    }
}

impl SecondTier for MapTier {
    fn put_page(&self, file: &FileKey, index: u64, data: &[u8]) -> bool {
        assert_eq!(data.len(), file.page_size());
        if self.panic.load(Ordering::SeqCst) {
            panic!("a tier that panics");
        }
        self.note("put", file, index, index + 1, data);
        self.pages.lock().unwrap().insert((*file, index), data.to_vec());
        true
    }
    fn get_page(&self, file: &FileKey, index: u64, out: &mut [u8]) -> bool {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.panic.load(Ordering::SeqCst) {
            panic!("a tier that panics");
        }
        match self.pages.lock().unwrap().get(&(*file, index)) {
            Some(d) => {
                self.note("hit", file, index, index + 1, d);
                out.copy_from_slice(d);
                if self.garbage.load(Ordering::SeqCst) {
                    out[0] ^= 0xff;
                }
                self.hits.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
    fn invalidate_page(&self, file: &FileKey, index: u64) {
        self.note("inv", file, index, index + 1, &[]);
        self.pages.lock().unwrap().remove(&(*file, index));
    }
    fn invalidate_range(&self, file: &FileKey, start: u64, end: u64) {
        self.note("invr", file, start, end, &[]);
        self.pages.lock().unwrap().retain(|(f, i), _| !(f == file && (start..end).contains(i)));
    }
    fn invalidate_file(&self, file: &FileKey) {
        self.note("invf", file, 0, u64::MAX, &[]);
        self.pages.lock().unwrap().retain(|(f, _), _| f != file);
    }
    fn usage(&self) -> TierUsage {
        let pages = self.pages.lock().unwrap();
        let bytes: u64 = pages.values().map(|v| v.len() as u64).sum();
        TierUsage { pages: pages.len() as u64, bytes, logical_bytes: bytes, stored_bytes: bytes, ..Default::default() }
    }
}

fn rw() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    o
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    // Compressible runs and noise, so the compressed tier keeps some pages
    // and refuses others.
    (0..len as u64)
        .map(|i| {
            if (i / 1024 + seed) % 3 == 0 {
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed).rotate_left(13) as u8
            } else {
                ((i / 64) as u8).wrapping_add(seed as u8)
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Read {
        f: usize,
        off: u64,
        len: usize,
    },
    Write {
        f: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    SetLen {
        f: usize,
        len: u64,
    },
    Invalidate {
        f: usize,
        off: u64,
        len: u64,
    },
    Copy {
        from: usize,
        src: u64,
        dst: u64,
        len: usize,
    },
    Sync,
    /// Closes both files, changes file `f` on disk (rewrites a range
    /// behind the cache), reopens both.
    ChangeBehind {
        f: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    /// Closes both files, deletes file `f` and writes a new file at its
    /// path, reopens both.
    Replace {
        f: usize,
        len: usize,
        seed: u64,
    },
    /// Reads every byte of both files (brings pages back through the tier).
    Scan,
}

fn op(ps: usize) -> impl Strategy<Value = Op> {
    let max = 24 * ps as u64;
    let len = 3 * ps;
    prop_oneof![
        6 => (0..3usize, 0..max, 0..=len).prop_map(|(f, off, len)| Op::Read { f, off, len }),
        4 => (0..3usize, 0..max, 0..=len, any::<u64>()).prop_map(|(f, off, len, seed)| Op::Write { f, off, len, seed }),
        1 => (0..3usize, 0..max).prop_map(|(f, len)| Op::SetLen { f, len }),
        1 => (0..3usize, 0..max, 0..max).prop_map(|(f, off, len)| Op::Invalidate { f, off, len }),
        1 => (0..2usize, 0..max, 0..max, 0..=len).prop_map(|(from, src, dst, len)| Op::Copy { from, src, dst, len }),
        1 => Just(Op::Sync),
        1 => (0..2usize, 0..max, 1..=len, any::<u64>()).prop_map(|(f, off, len, seed)| Op::ChangeBehind { f, off, len, seed }),
        1 => (0..2usize, 0..max as usize, any::<u64>()).prop_map(|(f, len, seed)| Op::Replace { f, len, seed }),
        2 => Just(Op::Scan),
    ]
}

fn open(cache: &PageCache, path: &Path, ps: usize) -> CachedFile {
    cache.open_with_page_size(path, &rw(), ps).unwrap()
}

/// The map tier of the running model test, for failure messages.
static DEBUG_TIER: Mutex<Option<Arc<MapTier>>> = Mutex::new(None);

/// What the map tier holds for page `page`, compared with `got`.
fn tier_says(page: u64, got: &[u8], page_off: usize) -> String {
    let Some(t) = DEBUG_TIER.lock().unwrap().clone() else { return "no map tier".into() };
    let pages = t.pages.lock().unwrap();
    let v: Vec<String> = pages
        .iter()
        .filter(|((_, i), _)| *i == page)
        .map(|((k, _), d)| {
            format!(
                "{:?}: tier bytes {:?} same as got: {}",
                k,
                &d[page_off..page_off + 8],
                d[page_off..page_off + got.len().min(8)] == got[..got.len().min(8)]
            )
        })
        .collect();
    let log = t.log.lock().unwrap();
    let hist: Vec<String> = log
        .iter()
        .filter(|(_, _, a, b, _)| *a <= page && page < *b)
        .rev()
        .take(30)
        .map(|(w, k, a, b, d)| format!("{w} ino {} gen {} [{a},{b}) {d:?}", k.ino, k.generation))
        .collect();
    format!("{v:?} history (newest first): {hist:?}")
}

fn check_read(f: &CachedFile, model: &[u8], off: u64, len: usize, what: &str) -> Result<(), TestCaseError> {
    let mut buf = vec![0xA5; len];
    let n = f.read_at(&mut buf, off).unwrap();
    let want = if off >= model.len() as u64 { 0 } else { len.min(model.len() - off as usize) };
    prop_assert_eq!(n, want, "{}: read_at({}, {}) count", what, off, len);
    let o = (off as usize).min(model.len());
    if let Some(i) = (0..n).find(|&i| buf[i] != model[o + i]) {
        let at = o + i;
        let ps = f.mapping().page_size();
        prop_assert!(
            false,
            "{}: read_at({}, {}) bytes differ at {} (page {}, byte {} of it): got {:?} want {:?}, size {}; tier: {}; {}",
            what,
            off,
            len,
            at,
            at / ps,
            at % ps,
            &buf[i..(i + 8).min(n)],
            &model[at..(at + 8).min(model.len())],
            model.len(),
            tier_says((at / ps) as u64, &buf[i..(i + 8).min(n)], at % ps),
            f.mapping().find_get_page((at / ps) as u64).map_or("not cached".to_string(), |p| format!("cached, dirty {}", p.is_dirty()))
        );
    }
    Ok(())
}

fn run_model(cache: &PageCache, dir: &Path, ps: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let paths = [dir.join("a"), dir.join("b")];
    let mut models = [pattern(1, 10 * ps + 100), pattern(2, 7 * ps)];
    for (p, m) in paths.iter().zip(&models) {
        std::fs::write(p, m).unwrap();
    }
    // Handles: file a, file b, and a second handle of file a.
    let reopen = || [open(cache, &paths[0], ps), open(cache, &paths[1], ps), open(cache, &paths[0], ps)];
    let mut fs = reopen();
    for (step, op) in ops.iter().enumerate() {
        let what = format!("step {step} ({op:?})");
        match *op {
            Op::Read { f, off, len } => check_read(&fs[f], &models[f % 2], off, len, &what)?,
            Op::Write { f, off, len, seed } => {
                let data = pattern(seed, len);
                fs[f].write_all_at(&data, off).unwrap();
                let f = f % 2;
                let end = off as usize + len;
                if len > 0 {
                    if end > models[f].len() {
                        models[f].resize(end, 0);
                    }
                    models[f][off as usize..end].copy_from_slice(&data);
                }
            }
            Op::SetLen { f, len } => {
                fs[f].set_len(len).unwrap();
                let f = f % 2;
                models[f].resize(len as usize, 0);
            }
            Op::Invalidate { f, off, len } => {
                fs[f].invalidate_range(off, len).unwrap();
            }
            Op::Copy { from, src, dst, len } => {
                let to = 1 - from;
                let n = fs[to].copy_from(&fs[from], src, dst, len).unwrap();
                let avail = models[from].len().saturating_sub(src as usize);
                prop_assert_eq!(n, len.min(avail), "{}: copy count", what);
                if n > 0 {
                    let bytes = models[from][src as usize..src as usize + n].to_vec();
                    let end = dst as usize + n;
                    if end > models[to].len() {
                        models[to].resize(end, 0);
                    }
                    models[to][dst as usize..end].copy_from_slice(&bytes);
                }
            }
            Op::Sync => {
                fs[0].sync_data().unwrap();
                fs[1].sync_data().unwrap();
            }
            Op::ChangeBehind { f, off, len, seed } => {
                drop(fs);
                let data = pattern(seed ^ 0x5555, len);
                let file = std::fs::OpenOptions::new().write(true).open(&paths[f]).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&file, &data, off).unwrap();
                let end = off as usize + len;
                if end > models[f].len() {
                    models[f].resize(end, 0);
                }
                models[f][off as usize..end].copy_from_slice(&data);
                fs = reopen();
            }
            Op::Replace { f, len, seed } => {
                drop(fs);
                std::fs::remove_file(&paths[f]).unwrap();
                models[f] = pattern(seed, len);
                std::fs::write(&paths[f], &models[f]).unwrap();
                fs = reopen();
            }
            Op::Scan => {
                for f in 0..2 {
                    check_read(&fs[f], &models[f], 0, models[f].len(), &what)?;
                }
            }
        }
        for f in 0..2 {
            prop_assert_eq!(
                fs[f].len(),
                models[f].len() as u64,
                "{}: size of file {} (on disk {:?}, stale opens {})",
                what,
                f,
                std::fs::metadata(&paths[f]).map(|m| m.len()),
                cache.stats().stale_opens
            );
        }
        prop_assert_eq!(fs[2].len(), models[0].len() as u64, "{}: size through the second handle", what);
        let s = cache.stats();
        prop_assert!(s.cached_bytes <= s.total_pages * PAGE_SIZE as u64);
    }
    for f in 0..2 {
        check_read(&fs[f], &models[f], 0, models[f].len(), "at the end")?;
        fs[f].sync_all().unwrap();
        prop_assert!(std::fs::read(&paths[f]).unwrap() == models[f], "file {} on disk", f);
    }
    drop(fs);
    settle(cache);
    cache.check_invariants();
    Ok(())
}

fn model_test(ps: usize, tier: Option<Arc<MapTier>>, compressed: Option<usize>) {
    *DEBUG_TIER.lock().unwrap() = tier.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut b = PageCache::builder().capacity(64 * PAGE_SIZE).readahead_max(4 * ps);
    if let Some(t) = tier.filter(|_| std::env::var_os("TIER_OFF").is_none()) {
        b = b.second_tier(t as Arc<dyn SecondTier>);
    }
    if let Some(bytes) = compressed {
        b = b.compressed_tier(bytes);
    }
    let cache = b.build().unwrap();
    let case = std::cell::Cell::new(0);
    let strategy = prop::collection::vec(op(ps), 1..40);
    run_model_cases(&strategy, |ops| {
        case.set(case.get() + 1);
        let d = dir.path().join(format!("c{}", case.get()));
        std::fs::create_dir(&d).unwrap();
        run_model(&cache, &d, ps, &ops)
    });
    let s = cache.stats();
    assert!(
        std::env::var_os("TIER_OFF").is_some() || s.tier_puts > 0 && s.tier_hits > 0,
        "the tier was never used: {s:?}"
    );
}

#[test]
fn model_map_tier_4k() {
    model_test(PAGE_SIZE, Some(Arc::new(MapTier::default())), None);
}

#[test]
fn model_map_tier_16k() {
    model_test(16 << 10, Some(Arc::new(MapTier::default())), None);
}

#[test]
fn model_map_tier_64k() {
    model_test(64 << 10, Some(Arc::new(MapTier::default())), None);
}

#[test]
fn model_compressed_tier_4k() {
    model_test(PAGE_SIZE, None, Some(256 << 10));
}

#[test]
fn model_compressed_tier_16k() {
    model_test(16 << 10, None, Some(256 << 10));
}

#[test]
fn model_compressed_tier_64k() {
    model_test(64 << 10, None, Some(1 << 20));
}

/// Writers stamp pages with versions while readers read through a tiny
/// cache and the tier: a reader never sees a version older than one it
/// (or anyone) saw complete before its read began.
#[test]
fn versions_never_go_back_through_the_tier() {
    const PAGES: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    std::fs::write(&path, vec![0u8; PAGES as usize * PAGE_SIZE]).unwrap();
    let cache = PageCache::builder().capacity(64 * PAGE_SIZE).compressed_tier(512 << 10).build().unwrap();
    let f = cache.open_with(&path, &rw()).unwrap();
    // The newest version written of each page, published after the write.
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (f, done, stop) = (f.clone(), done.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut v = 0u64;
            while !stop.load(Ordering::SeqCst) {
                v += 1;
                // Each writer owns every other page: versions per page rise.
                let page = (v * 7 % (PAGES / 2)) * 2 + w;
                let mut buf = vec![0u8; PAGE_SIZE];
                buf[..8].copy_from_slice(&v.to_le_bytes());
                f.write_all_at(&buf, page * PAGE_SIZE as u64).unwrap();
                done[page as usize].store(v, Ordering::SeqCst);
            }
        }));
    }
    for r in 0..2u64 {
        let (f, done, stop) = (f.clone(), done.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = r;
            while !stop.load(Ordering::SeqCst) {
                i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 1;
                let page = i % PAGES;
                let floor = done[page as usize].load(Ordering::SeqCst);
                let mut buf = [0u8; 8];
                f.read_exact_at(&mut buf, page * PAGE_SIZE as u64).unwrap();
                let got = u64::from_le_bytes(buf);
                assert!(got >= floor, "page {page}: version {got} after {floor} was written");
            }
        }));
    }
    // Sync now and then, so pages go clean and into the tier.
    for _ in 0..40 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        f.sync_data().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats();
    assert!(s.tier_puts > 0 && s.tier_hits > 0, "{s:?}");
    cache.check_invariants();
}

/// A file of `pages` zero pages, open in a cache of `frames` frames over
/// a `MapTier` (the directory lives as long as the first value).
fn zeroed_file_on_map_tier(pages: u64, frames: usize) -> (tempfile::TempDir, PageCache, CachedFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, vec![0u8; pages as usize * PAGE_SIZE]).unwrap();
    let tier = Arc::new(MapTier::default());
    let cache = PageCache::builder().capacity(frames * PAGE_SIZE).second_tier(tier).build().unwrap();
    let f = cache.open_with(&path, &rw()).unwrap();
    (dir, cache, f)
}

/// A put racing writes of the same page: reclaim offers a page while
/// writers change it; afterwards every page reads as its last write.
#[test]
fn puts_racing_writes_never_resurrect_old_bytes() {
    const PAGES: u64 = 96;
    let (_dir, cache, f) = zeroed_file_on_map_tier(PAGES, 48);
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let (f, last) = (f.clone(), last.clone());
        threads.push(std::thread::spawn(move || {
            for v in 1..3000u64 {
                let page = (v * 13 + t * 48) % PAGES;
                if page % 2 != t {
                    // Read: pages cycle through reclaim and the tier.
                    let mut b = [0u8; 8];
                    f.read_exact_at(&mut b, ((v * 31) % PAGES) * PAGE_SIZE as u64).unwrap();
                    continue;
                }
                f.write_all_at(&v.to_le_bytes(), page * PAGE_SIZE as u64).unwrap();
                last[page as usize].store(v, Ordering::SeqCst);
                if v % 64 == 0 {
                    f.sync_data().unwrap();
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    f.sync_data().unwrap();
    cache.shrink(usize::MAX);
    for p in 0..PAGES {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, p * PAGE_SIZE as u64).unwrap();
        assert_eq!(u64::from_le_bytes(b), last[p as usize].load(Ordering::SeqCst), "page {p}");
    }
    assert!(cache.stats().tier_puts > 0);
}

/// A truncation racing reclaim and readers: the partial last page must
/// never come back with its old bytes past the new end. (Before the
/// change window, reclaim could put it between the truncation's two
/// invalidations and a reader take it back from the tier before the
/// second; a later growth then showed the old bytes.)
#[test]
fn truncation_never_brings_back_bytes_past_the_end() {
    const PAGES: u64 = 32;
    const CUT: usize = 1000;
    let ps = PAGE_SIZE as u64;
    let (_dir, cache, f) = zeroed_file_on_map_tier(PAGES, 16);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Past the end while it is cut: a short read, fine.
                    let _ = f.read_at(&mut b, (x % PAGES) * ps);
                }
            })
        })
        .collect();
    let mut page = vec![0u8; PAGE_SIZE];
    for i in 0..4000u64 {
        let k = 1 + i % (PAGES - 1);
        f.write_all_at(&vec![(i as u8) | 1; PAGE_SIZE], k * ps).unwrap();
        f.sync_data().unwrap(); // clean: reclaim may put it to the tier
        f.set_len(k * ps + CUT as u64).unwrap();
        f.set_len(PAGES * ps).unwrap();
        f.read_exact_at(&mut page, k * ps).unwrap();
        if let Some(at) = page[CUT..].iter().position(|&b| b != 0) {
            stop.store(true, Ordering::Relaxed);
            panic!("round {i}: page {k} holds {:#x} at {} past the cut at {CUT}", page[CUT + at], CUT + at);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let s = cache.stats();
    assert!(s.tier_puts > 0 && s.tier_hits > 0, "the tier was not exercised: {s:?}");
}

/// Reads the first pass through, then again after the cache dropped them:
/// the second pass comes from the tier.
fn two_passes(cache: &PageCache, path: &Path, pages: usize) -> CachedFile {
    let f = cache.open_with(path, &rw()).unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    for _ in 0..2 {
        for p in 0..pages {
            f.read_exact_at(&mut buf, (p * PAGE_SIZE) as u64).unwrap();
        }
    }
    f
}

#[test]
fn a_panicking_tier_is_caught_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let want = pattern(9, 256 * PAGE_SIZE);
    std::fs::write(&path, &want).unwrap();
    let tier = Arc::new(MapTier::default());
    let cache = PageCache::builder().capacity(64 * PAGE_SIZE).second_tier(tier.clone()).build().unwrap();
    let f = two_passes(&cache, &path, 256);
    tier.panic.store(true, Ordering::SeqCst);
    let mut got = vec![0u8; want.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == want);
    let s = cache.stats();
    assert!(s.tier_panics >= 1, "{s:?}");
    // Never called again after a panic.
    let gets = tier.gets.load(Ordering::SeqCst);
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(tier.gets.load(Ordering::SeqCst), gets);
    cache.check_invariants();
}

#[test]
fn garbage_from_a_tier_is_caught_by_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g");
    let want = pattern(4, 256 * PAGE_SIZE);
    std::fs::write(&path, &want).unwrap();
    let tier = Arc::new(MapTier::default());
    let cache = PageCache::builder().capacity(64 * PAGE_SIZE).second_tier(tier.clone()).build().unwrap();
    let f = cache.open_with(&path, &rw()).unwrap();
    let truth = want.clone();
    f.set_read_verifier(Arc::new(move |index, bytes: &[u8]| {
        let at = index as usize * PAGE_SIZE;
        if bytes == &truth[at..at + PAGE_SIZE] {
            Ok(())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "checksum"))
        }
    }));
    let mut buf = vec![0u8; PAGE_SIZE];
    for p in 0..256 {
        f.read_exact_at(&mut buf, (p * PAGE_SIZE) as u64).unwrap();
    }
    tier.garbage.store(true, Ordering::SeqCst);
    let mut got = vec![0u8; want.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == want, "a corrupt page from the tier was served");
    let s = cache.stats();
    assert!(s.tier_verify_failures > 0, "{s:?}");
}

/// The tier serves a second pass with no file read, and the stats say so.
#[test]
fn a_second_pass_comes_from_the_tier() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let want = pattern(3, 512 * PAGE_SIZE);
    std::fs::write(&path, &want).unwrap();
    let cache = PageCache::builder().capacity(64 * PAGE_SIZE).compressed_tier(4 << 20).build().unwrap();
    let f = two_passes(&cache, &path, 512);
    let s = cache.stats();
    assert!(s.tier_hits > 256, "{s:?}");
    assert!(s.tier_bytes <= 4 << 20 && s.tier_pages > 0);
    let mut got = vec![0u8; want.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == want);
    println!("{s}");
}

/// A regression the model found: a large page written in part past the
/// end of the file, the file changed on disk over it while closed, and
/// reopened: the page must come from the file, not from the tier.
#[test]
fn a_file_changed_while_closed_is_not_served_from_the_tier() {
    let ps = 16 << 10;
    for round in 0..50 {
        let tier = Arc::new(MapTier::default());
        let cache =
            PageCache::builder().capacity(64 * PAGE_SIZE).readahead_max(4 * ps).second_tier(tier).build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ops = [
            Op::Scan,
            Op::Write { f: 1, off: 356918, len: 32029, seed: 11633702282059397815 },
            Op::ChangeBehind { f: 1, off: 333041, len: 35523, seed: 6711203196191821615 },
            Op::ChangeBehind { f: 0, off: 236747, len: 18837, seed: 886542116965704645 },
        ];
        if let Err(e) = run_model(&cache, d, ps, &ops) {
            panic!("round {round}: {e}");
        }
    }
}

/// The disk tier behind the compressed one, in the model test.
#[test]
fn model_disk_tier_4k() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder()
        .capacity(64 * PAGE_SIZE)
        .readahead_max(4 * PAGE_SIZE)
        .compressed_tier(64 << 10)
        .disk_tier(dir.path().join("tier"), 4 << 20)
        .build()
        .unwrap();
    let case = std::cell::Cell::new(0);
    let strategy = prop::collection::vec(op(PAGE_SIZE), 1..40);
    run_model_cases(&strategy, |ops| {
        case.set(case.get() + 1);
        let d = dir.path().join(format!("c{}", case.get()));
        std::fs::create_dir(&d).unwrap();
        run_model(&cache, &d, PAGE_SIZE, &ops)
    });
    let s = cache.stats();
    assert!(s.tier_puts > 0 && s.tier_hits > 0, "the tier was never used: {s:?}");
}

/// Warm restart: a new cache on the same disk tier serves the pages of an
/// unchanged file without reading it, and never the pages of a file that
/// changed while no cache had it open.
#[test]
fn the_disk_tier_is_warm_after_a_restart() {
    const PAGES: usize = 2048;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (want_a, want_b) = (pattern(5, PAGES * PAGE_SIZE), pattern(6, PAGES * PAGE_SIZE));
    std::fs::write(&a, &want_a).unwrap();
    std::fs::write(&b, &want_b).unwrap();
    let tier = dir.path().join("tier");
    let build =
        || PageCache::builder().capacity(64 * PAGE_SIZE).readahead_max(0).disk_tier(&tier, 64 << 20).build().unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    {
        let cache = build();
        for p in [&a, &b] {
            let f = cache.open(p).unwrap();
            for i in 0..PAGES {
                f.read_exact_at(&mut buf, (i * PAGE_SIZE) as u64).unwrap();
            }
        }
        assert!(cache.stats().tier_puts > 0);
    }
    // b changes while no cache has it.
    let new_b = pattern(7, PAGES * PAGE_SIZE);
    std::fs::write(&b, &new_b).unwrap();
    let cache = build();
    let fa = cache.open(&a).unwrap();
    let mut got = vec![0u8; PAGES * PAGE_SIZE];
    let before = cache.stats();
    for i in 0..PAGES {
        fa.read_exact_at(&mut got[i * PAGE_SIZE..(i + 1) * PAGE_SIZE], (i * PAGE_SIZE) as u64).unwrap();
    }
    assert!(got == want_a);
    let s = cache.stats();
    let hits = s.tier_hits - before.tier_hits;
    assert!(hits > PAGES as u64 / 2, "the disk tier served {hits} of {PAGES} pages after a restart: {s:?}");
    let fb = cache.open(&b).unwrap();
    fb.read_exact_at(&mut got, 0).unwrap();
    assert!(got == new_b, "a page of the old b was served");
}

/// Pages still in memory when a cache is dropped reach the disk tier too:
/// a new cache reads the whole file from the tier, with no file read.
#[test]
fn pages_resident_at_drop_are_warm_after_a_restart() {
    const PAGES: usize = 512;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let want = pattern(8, PAGES * PAGE_SIZE);
    std::fs::write(&a, &want).unwrap();
    let tier = dir.path().join("tier");
    let build = || PageCache::builder().capacity(8 << 20).readahead_max(0).disk_tier(&tier, 64 << 20).build().unwrap();
    let mut got = vec![0u8; PAGES * PAGE_SIZE];
    {
        let cache = build();
        let f = cache.open(&a).unwrap();
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(cache.stats().evictions, 0, "the file fits: nothing was evicted");
    }
    let cache = build();
    let f = cache.open(&a).unwrap();
    for i in 0..PAGES {
        f.read_exact_at(&mut got[i * PAGE_SIZE..(i + 1) * PAGE_SIZE], (i * PAGE_SIZE) as u64).unwrap();
    }
    assert!(got == want);
    let s = cache.stats();
    assert_eq!(s.tier_hits, PAGES as u64, "every page from the disk tier: {s:?}");
}
