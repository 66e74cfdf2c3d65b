//! Bad arguments to every public entry point: each returns a clear
//! `io::Error` of the right kind, never panics or hangs, and never touches
//! other files.

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use page_cache::{CachedFile, PageCache, Tag, MAX_ORDER, PAGE_SIZE};
use proptest::prelude::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(13).wrapping_add(seed as u32 * 101 + (i >> 12) as u32) as u8).collect()
}

fn small_cache(pages: usize) -> PageCache {
    PageCache::builder().capacity(pages * PAGE_SIZE).huge_pages(false).build().unwrap()
}

fn kind<T: std::fmt::Debug>(r: io::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

/// A bystander: a file with known bytes, cached, that nothing else should touch.
struct Bystander {
    path: PathBuf,
    data: Vec<u8>,
    file: CachedFile,
}

impl Bystander {
    fn new(cache: &PageCache, dir: &Path) -> Bystander {
        let path = dir.join("bystander");
        let data = pattern(5 * PAGE_SIZE + 17, 99);
        std::fs::write(&path, &data).unwrap();
        let file = cache.open(&path).unwrap();
        let mut buf = vec![0; data.len()];
        file.read_exact_at(&mut buf, 0).unwrap();
        Bystander { path, data, file }
    }

    fn check(&self) {
        assert_eq!(std::fs::read(&self.path).unwrap(), self.data, "bystander changed on disk");
        assert_eq!(self.file.len(), self.data.len() as u64);
        let mut buf = vec![0; self.data.len()];
        self.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, self.data, "bystander changed in the cache");
    }

    /// As `check`, but a cache whose every frame is pinned by dirty pages
    /// that can never be written (offsets the file system refuses) may fail
    /// the read with `OutOfMemory`; the bytes it returns must still be right.
    fn check_allowing_full_cache(&self) -> bool {
        assert_eq!(std::fs::read(&self.path).unwrap(), self.data, "bystander changed on disk");
        assert_eq!(self.file.len(), self.data.len() as u64);
        let mut buf = vec![0; self.data.len()];
        let mut pos = 0;
        while pos < buf.len() {
            match self.file.read_at(&mut buf[pos..], pos as u64) {
                Ok(n) => {
                    assert!(n > 0, "early end of file at {pos}");
                    assert_eq!(&buf[pos..pos + n], &self.data[pos..pos + n], "bystander changed in the cache");
                    pos += n;
                }
                Err(e) if e.kind() == ErrorKind::OutOfMemory => return false,
                Err(e) => panic!("bystander read failed: {e}"),
            }
        }
        true
    }
}

#[test]
fn huge_offsets_read_and_set_len() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    let by = Bystander::new(&cache, dir.path());
    let f = cache.create(dir.path().join("f")).unwrap();
    f.write_all_at(b"0123456789", 0).unwrap();
    let mut buf = [0u8; 100];
    for off in [u64::MAX, u64::MAX - 1, u64::MAX - 5000, i64::MAX as u64, 1 << 62, 11] {
        assert_eq!(f.read_at(&mut buf, off).unwrap(), 0, "read at {off}");
        assert_eq!(kind(f.read_exact_at(&mut buf, off)), ErrorKind::UnexpectedEof);
    }
    assert_eq!(f.read_at(&mut [], u64::MAX).unwrap(), 0);
    // Past u64 once the buffer is added:
    assert_eq!(kind(f.write_at(b"x", u64::MAX)), ErrorKind::InvalidInput);
    assert_eq!(kind(f.write_at(&buf, u64::MAX - 50)), ErrorKind::InvalidInput);
    assert_eq!(kind(f.write_all_at(&buf, u64::MAX - 50)), ErrorKind::InvalidInput);
    for len in [u64::MAX, u64::MAX - 1, u64::MAX - 5000, i64::MAX as u64 + 1] {
        assert_eq!(kind(f.set_len(len)), ErrorKind::InvalidInput, "set_len({len})");
        assert_eq!(f.len(), 10, "a failed set_len({len}) changed the size");
    }
    // Empty writes anywhere are no-ops.
    assert_eq!(f.write_at(&[], u64::MAX).unwrap(), 0);
    f.sync_data().unwrap();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"0123456789");
    by.check();
    cache.check_invariants();
}

/// Linux files end at `i64::MAX` (MAX_LFS_FILESIZE): a write whose end lies
/// past it can never reach the file, so it must be refused up front rather
/// than accepted into the cache and then fail writeback forever.
#[test]
fn write_past_largest_file_offset_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    let f = cache.create(dir.path().join("f")).unwrap();
    for off in [u64::MAX - 5000, u64::MAX / 2 + 1, i64::MAX as u64] {
        let r = f.write_at(b"x", off);
        assert_eq!(f.len(), 0, "write_at(.., {off}) grew the file to {} ({r:?})", f.len());
        assert_eq!(r.map_err(|e| e.kind()), Err(ErrorKind::InvalidInput), "write_at(.., {off})");
    }
    f.sync_data().unwrap();
}

#[test]
fn cursor_at_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    let f = cache.create(dir.path().join("f")).unwrap();
    let mut c = f.cursor();
    assert_eq!(kind(c.seek(SeekFrom::End(-1))), ErrorKind::InvalidInput);
    assert_eq!(kind(c.seek(SeekFrom::Current(-1))), ErrorKind::InvalidInput);
    assert_eq!(c.position(), 0, "a failed seek moved the cursor");
    assert_eq!(c.seek(SeekFrom::Start(u64::MAX)).unwrap(), u64::MAX);
    assert_eq!(kind(c.seek(SeekFrom::Current(1))), ErrorKind::InvalidInput);
    assert_eq!(kind(c.seek(SeekFrom::End(i64::MIN))), ErrorKind::InvalidInput);
    let mut buf = [0u8; 10];
    assert_eq!(c.read(&mut buf).unwrap(), 0);
    assert_eq!(kind(c.write(b"abc")), ErrorKind::InvalidInput);
    assert_eq!(c.position(), u64::MAX);
    c.flush().unwrap();
    assert_eq!(f.len(), 0);
}

#[test]
fn bad_cache_configuration() {
    assert_eq!(kind(PageCache::new(0)), ErrorKind::InvalidInput);
    assert_eq!(kind(PageCache::new(PAGE_SIZE - 1)), ErrorKind::InvalidInput);
    assert_eq!(kind(PageCache::builder().capacity(0).build()), ErrorKind::InvalidInput);
    assert_eq!(kind(PageCache::builder().capacity(1 << 20).dirty_ratios(50, 10).build()), ErrorKind::InvalidInput);
    assert_eq!(kind(PageCache::builder().capacity(1 << 20).dirty_ratios(10, 101).build()), ErrorKind::InvalidInput);
    // Degenerate but valid: one page, no readahead.
    let c = PageCache::builder().capacity(PAGE_SIZE).readahead_max(0).readahead_threads(0).build().unwrap();
    assert_eq!(c.capacity(), PAGE_SIZE);
}

#[test]
fn bad_page_level_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    assert_eq!(kind(cache.alloc_pages(MAX_ORDER + 1)), ErrorKind::InvalidInput);
    assert_eq!(kind(cache.alloc_pages(11)), ErrorKind::InvalidInput);
    assert_eq!(kind(cache.alloc_pages(usize::MAX)), ErrorKind::InvalidInput);
    // 64 frames cannot hold a 1024-frame block.
    assert_eq!(kind(cache.alloc_pages(MAX_ORDER)), ErrorKind::OutOfMemory);
    assert!(cache.page_address(u32::MAX).is_none());
    assert!(cache.page_address(64).is_none());
    assert!(cache.pfn_to_page(u32::MAX).is_none());
    assert!(cache.virt_to_page(std::ptr::null()).is_none());
    assert!(cache.virt_to_page(usize::MAX as *const u8).is_none());
    let f = cache.create(dir.path().join("f")).unwrap();
    let m = f.mapping();
    assert!(m.find_get_page(u64::MAX).is_none());
    assert!(m.find_lock_page(u64::MAX).is_none());
    assert_eq!(kind(m.find_or_create_page(u64::MAX)), ErrorKind::InvalidInput);
    assert!(m.find_get_pages(u64::MAX, usize::MAX).is_empty());
    assert!(m.find_get_pages_contig(u64::MAX, usize::MAX).is_empty());
    let mut index = u64::MAX;
    assert!(m.find_get_pages_tag(&mut index, Tag::Dirty, usize::MAX).is_empty());
    assert!(!m.page_has_tag(u64::MAX, Tag::ToWrite));
    assert_eq!(m.nr_pages(), 0);
    cache.check_invariants();
}

#[test]
fn directories_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    assert_eq!(kind(cache.open(dir.path())), ErrorKind::IsADirectory);
    assert_eq!(kind(cache.create(dir.path())), ErrorKind::IsADirectory);
    assert_eq!(kind(cache.open_with(dir.path(), OpenOptions::new().read(true).write(true))), ErrorKind::IsADirectory);
    assert_eq!(kind(cache.open(dir.path().join("missing"))), ErrorKind::NotFound);
    assert_eq!(kind(cache.create(dir.path().join("missing/deeper"))), ErrorKind::NotFound);
    cache.check_invariants();
}

/// Runs `f` on a thread; `None` if it has not finished after `timeout`.
fn with_timeout<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).ok()
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(st.success(), "mkfifo failed");
}

#[test]
fn fifo_read_write_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let cache = small_cache(64);
    // O_RDWR on a FIFO does not wait for a partner.
    let (c, p) = (cache.clone(), fifo.clone());
    let r = with_timeout(Duration::from_secs(10), move || {
        c.open_with(&p, OpenOptions::new().read(true).write(true)).map(drop).map_err(|e| e.kind())
    });
    assert_eq!(r, Some(Err(ErrorKind::InvalidInput)));
    let (c, p) = (cache.clone(), fifo.clone());
    let r = with_timeout(Duration::from_secs(10), move || c.create(&p).map(drop).map_err(|e| e.kind()));
    assert_eq!(r, Some(Err(ErrorKind::InvalidInput)));
}

/// `PageCache::open` is read-only, and a read-only open of a FIFO blocks
/// until a writer appears: the cache must refuse the FIFO without waiting.
#[test]
fn fifo_read_only_open_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let cache = small_cache(64);
    let (c, p) = (cache.clone(), fifo.clone());
    let r = with_timeout(Duration::from_secs(5), move || c.open(&p).map(drop).map_err(|e| e.kind()));
    if r.is_none() {
        // Unblock the stuck open so the thread can finish, then fail.
        let _w = OpenOptions::new().write(true).open(&fifo);
        panic!("PageCache::open on a FIFO hung for 5 s instead of failing with InvalidInput");
    }
    assert_eq!(r, Some(Err(ErrorKind::InvalidInput)));
}

#[test]
fn read_only_files_and_handles() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    let path = dir.path().join("ro");
    std::fs::write(&path, b"read only").unwrap();

    // A read-only handle refuses writes whatever the permissions.
    let f = cache.open(&path).unwrap();
    assert_eq!(kind(f.write_at(b"x", 0)), ErrorKind::PermissionDenied);
    assert_eq!(kind(f.write_all_at(b"x", 0)), ErrorKind::PermissionDenied);
    assert_eq!(kind(f.set_len(0)), ErrorKind::PermissionDenied);
    assert_eq!(kind(f.cursor().write(b"x")), ErrorKind::PermissionDenied);
    f.sync_data().unwrap();
    drop(f);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    if OpenOptions::new().write(true).open(&path).is_ok() {
        // Root (or CAP_DAC_OVERRIDE) bypasses permission checks.
        println!("skipping the mode-0444 checks: running with permission overrides (root)");
    } else {
        assert_eq!(kind(cache.create(&path)), ErrorKind::PermissionDenied);
        assert_eq!(kind(cache.open_with(&path, OpenOptions::new().write(true))), ErrorKind::PermissionDenied);
        let f = cache.open(&path).unwrap();
        assert_eq!(kind(f.write_at(b"x", 0)), ErrorKind::PermissionDenied);
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"read only");
    cache.check_invariants();
}

/// Another process truncates the file behind the cache's back: reads must
/// not panic and return, byte for byte, either what the file held or zeros.
#[test]
fn file_shrunk_behind_the_caches_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(64);
    let by = Bystander::new(&cache, dir.path());
    let path = dir.path().join("shrinks");
    let old = pattern(16 * PAGE_SIZE, 3);
    std::fs::write(&path, &old).unwrap();
    let f = cache.open_with(&path, OpenOptions::new().read(true).write(true)).unwrap();
    let mut buf = vec![0; 4 * PAGE_SIZE];
    f.read_exact_at(&mut buf, 0).unwrap(); // pages 0..4 (and some readahead) cached
    let st = std::process::Command::new("truncate").args(["-s", "5000"]).arg(&path).status().unwrap();
    assert!(st.success());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 5000);

    let check = |round: &str| {
        let mut all = vec![0xAA; old.len()];
        let mut pos = 0;
        while pos < all.len() {
            match f.read_at(&mut all[pos..], pos as u64) {
                Ok(0) => break,
                Ok(n) => pos += n,
                Err(e) => panic!("{round}: read at {pos} failed: {e}"),
            }
        }
        for (i, (&got, &was)) in all[..pos].iter().zip(&old).enumerate() {
            assert!(got == was || got == 0, "{round}: byte {i} is {got:#x}, neither the old {was:#x} nor zero");
        }
        pos
    };
    check("cached");
    cache.shrink(usize::MAX);
    check("after shrink");
    // The cache still believes in its size; writing through it works and
    // the file follows the cache again.
    f.write_all_at(b"tail", 20000).unwrap();
    f.sync_all().unwrap();
    let disk = std::fs::read(&path).unwrap();
    // Only dirty pages are written, so the file ends with the last of them
    // (page 4 here), not at the size the cache still believes in.
    assert!(disk.len() >= 20004 && disk.len() as u64 <= f.len(), "file is {} bytes", disk.len());
    assert_eq!(&disk[20000..20004], b"tail");
    assert_eq!(&disk[..4096], &old[..4096]);
    by.check();
    cache.check_invariants();
}

#[derive(Clone, Debug)]
enum Op {
    Read { file: usize, off: u64, len: usize },
    Write { file: usize, off: u64, len: usize, byte: u8 },
    SetLen { file: usize, len: u64 },
    Sync { file: usize, all: bool },
    SeekRead { file: usize, pos: SeekFrom, len: usize },
    SeekWrite { file: usize, pos: SeekFrom, len: usize, byte: u8 },
    Shrink,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0..256 * 1024u64,
        1 => any::<u64>(),
        1 => (0..8192u64).prop_map(|d| u64::MAX - d),
        1 => (0..8192u64).prop_map(|d| (i64::MAX as u64).wrapping_sub(4096).wrapping_add(d)),
    ]
}

fn seek() -> impl Strategy<Value = SeekFrom> {
    prop_oneof![
        offset().prop_map(SeekFrom::Start),
        any::<i64>().prop_map(SeekFrom::End),
        (-70_000..70_000i64).prop_map(SeekFrom::End),
        any::<i64>().prop_map(SeekFrom::Current),
        (-70_000..70_000i64).prop_map(SeekFrom::Current),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let file = 0..3usize;
    let len = 0..=64 * 1024usize;
    prop_oneof![
        3 => (file.clone(), offset(), len.clone()).prop_map(|(file, off, len)| Op::Read { file, off, len }),
        3 => (file.clone(), offset(), len.clone(), any::<u8>())
            .prop_map(|(file, off, len, byte)| Op::Write { file, off, len, byte }),
        1 => (file.clone(), offset()).prop_map(|(file, len)| Op::SetLen { file, len }),
        1 => (file.clone(), any::<bool>()).prop_map(|(file, all)| Op::Sync { file, all }),
        1 => (file.clone(), seek(), len.clone()).prop_map(|(file, pos, len)| Op::SeekRead { file, pos, len }),
        1 => (file, seek(), len, any::<u8>()).prop_map(|(file, pos, len, byte)| Op::SeekWrite { file, pos, len, byte }),
        1 => Just(Op::Shrink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary operation sequences with arbitrary offsets on three files
    /// in a 32-page cache: errors are fine, panics are not, and a fourth
    /// file nobody touches keeps its bytes.
    #[test]
    fn arbitrary_operations_never_panic_or_touch_other_files(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let cache = small_cache(32);
        let by = Bystander::new(&cache, dir.path());
        let files: Vec<CachedFile> = (0..3).map(|i| cache.create(dir.path().join(format!("f{i}"))).unwrap()).collect();
        let mut cursors: Vec<_> = files.iter().map(|f| f.cursor()).collect();
        for op in ops {
            match op {
                Op::Read { file, off, len } => {
                    let mut buf = vec![0; len];
                    if let Ok(n) = files[file].read_at(&mut buf, off) {
                        prop_assert!(n <= len);
                    }
                }
                Op::Write { file, off, len, byte } => {
                    if let Ok(n) = files[file].write_at(&vec![byte; len], off) {
                        prop_assert!(n <= len);
                    }
                }
                Op::SetLen { file, len } => {
                    let before = files[file].len();
                    if files[file].set_len(len).is_ok() {
                        prop_assert_eq!(files[file].len(), len);
                    } else {
                        prop_assert_eq!(files[file].len(), before);
                    }
                }
                Op::Sync { file, all } => {
                    let _ = if all { files[file].sync_all() } else { files[file].sync_data() };
                }
                Op::SeekRead { file, pos, len } => {
                    let c = &mut cursors[file];
                    if c.seek(pos).is_ok() {
                        let _ = c.read(&mut vec![0; len]);
                    }
                }
                Op::SeekWrite { file, pos, len, byte } => {
                    let c = &mut cursors[file];
                    if c.seek(pos).is_ok() {
                        let _ = c.write(&vec![byte; len]);
                    }
                }
                Op::Shrink => {
                    cache.shrink(usize::MAX);
                }
            }
        }
        if !by.check_allowing_full_cache() {
            println!("case ended with the cache full of dirty pages the file system refuses");
        }
        // Truncating the files drops whatever they could not write back; the
        // cache is whole again and quiet enough to check.
        for f in &files {
            f.set_len(0).unwrap();
            let _ = f.sync_data(); // may report a failure it saw earlier
            f.sync_data().unwrap();
            prop_assert_eq!(f.mapping().nr_pages(), 0);
        }
        by.check();
        cache.check_invariants();
    }
}
