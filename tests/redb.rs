//! `page_cache::redb::CachedBackend` against redb's own file backend: the
//! same lock conflicts, and the same answers to a corrupted file.
#![cfg(feature = "redb")]

use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use page_cache::redb::CachedBackend;
use page_cache::PageCache;
use redb::{
    BackendError, ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    StorageBackend, StorageError, TableDefinition,
};

const TABLE: TableDefinition<u64, &str> = TableDefinition::new("kv");
const ROWS: u64 = 2000;
/// redb's database header: magic number, flags, layout, two commit slots.
const DB_HEADER_SIZE: usize = 320;

fn value(i: u64) -> String {
    format!("value {i:06} of the table")
}

fn cache() -> PageCache {
    PageCache::new(8 << 20).unwrap()
}

/// Who opens a handle: this crate's backend through `cache` or a fresh
/// cache, or redb over its own file backend.
#[derive(Clone, Copy, Debug)]
enum Via<'a> {
    Cache(&'a PageCache),
    FreshCache,
    Redb,
}

impl Via<'_> {
    fn writer(self, path: &Path) -> Result<Database, DatabaseError> {
        let builder = Database::builder();
        match self {
            Via::Cache(cache) => builder.create_with_backend(CachedBackend::open(cache, path, true)?),
            Via::FreshCache => builder.create_with_backend(CachedBackend::open(&cache(), path, true)?),
            Via::Redb => builder.open(path),
        }
    }

    fn reader(self, path: &Path) -> Result<ReadOnlyDatabase, DatabaseError> {
        let builder = Database::builder();
        match self {
            Via::Cache(cache) => builder.open_read_only_with_backend(CachedBackend::open(cache, path, false)?),
            Via::FreshCache => builder.open_read_only_with_backend(CachedBackend::open(&cache(), path, false)?),
            Via::Redb => builder.open_read_only(path),
        }
    }
}

fn describe<T>(r: &Result<T, DatabaseError>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{e:?}: {e}"),
    }
}

/// A database of `ROWS` rows at `path`, written through `cache` and closed.
fn write_db(cache: &PageCache, path: &Path) {
    let db = Database::builder().create_with_backend(CachedBackend::create(cache, path).unwrap()).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(TABLE).unwrap();
        for i in 0..ROWS {
            table.insert(i, value(i).as_str()).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn read_rows(db: &impl ReadableDatabase) -> Result<String, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(TABLE)?;
    let (mut rows, mut wrong) = (0, Vec::new());
    for row in table.iter()? {
        let (k, v) = row?;
        rows += 1;
        if v.value() != value(k.value()) {
            wrong.push(format!("{} -> {:?}", k.value(), v.value()));
        }
    }
    Ok(format!("{rows} rows, wrong: {wrong:?}"))
}

#[test]
fn a_second_writer_is_refused_as_redb_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.redb");
    let theirs = dir.path().join("theirs.redb");
    let cache = cache();
    let db = Database::builder().create_with_backend(CachedBackend::create(&cache, &ours).unwrap()).unwrap();
    let redb_db = Database::create(&theirs).unwrap();

    // redb over its own backend refuses a second open of its file:
    let refusal = describe(&Database::create(&theirs));
    assert!(matches!(Database::create(&theirs), Err(DatabaseError::DatabaseAlreadyOpen)), "{refusal}");
    // ... and so it is refused, whoever opens it, over either backend.
    for (path, who) in [
        (&ours, Via::Cache(&cache)),
        (&ours, Via::FreshCache),
        (&ours, Via::Redb),
        (&theirs, Via::Cache(&cache)),
        (&theirs, Via::FreshCache),
        (&theirs, Via::Redb),
    ] {
        assert_eq!(describe(&who.writer(path)), refusal, "writer {who:?} on {}", path.display());
        assert_eq!(describe(&who.reader(path)), refusal, "reader {who:?} on {}", path.display());
    }
    let created = Database::builder().create_with_backend(CachedBackend::create(&cache, &ours).unwrap());
    assert_eq!(describe(&created), refusal);

    // The refused opens (whose backends redb closed) left the lock held,
    // and the first handle still works.
    assert_eq!(describe(&Database::open(&ours)), refusal);
    let txn = db.begin_write().unwrap();
    txn.open_table(TABLE).unwrap().insert(7, value(7).as_str()).unwrap();
    txn.commit().unwrap();
    assert_eq!(db.begin_read().unwrap().open_table(TABLE).unwrap().get(7).unwrap().unwrap().value(), value(7));

    // Closed, the file opens again: through the same cache, and through redb.
    drop(db);
    drop(redb_db);
    let db = Via::Cache(&cache).writer(&ours).unwrap();
    assert_eq!(read_rows(&db).unwrap(), "1 rows, wrong: []");
    drop(db);
    let db = Via::Redb.writer(&ours).unwrap();
    assert_eq!(read_rows(&db).unwrap(), "1 rows, wrong: []");
    drop(db);
    assert!(Via::Cache(&cache).writer(&theirs).is_ok());
}

/// The lock steps of one file, the database opened by `first` and the
/// contending handles by `second`: what each step answers.
fn reader_steps(path: &Path, first: Via<'_>, second: Via<'_>) -> Vec<String> {
    let mut steps = Vec::new();
    let mut step = |what: &str, outcome: String| steps.push(format!("{what}: {outcome}"));
    let r1 = first.reader(path);
    step("reader", describe(&r1));
    let r2 = second.reader(path);
    step("second reader", describe(&r2));
    step("writer beside readers", describe(&second.writer(path)));
    step("first writer beside readers", describe(&first.writer(path)));
    let r1 = r1.unwrap();
    step("rows through the first reader", format!("{:?}", read_rows(&r1).map_err(|e| e.to_string())));
    if let Ok(r2) = &r2 {
        step("rows through the second reader", format!("{:?}", read_rows(r2).map_err(|e| e.to_string())));
    }
    drop(r1);
    step("writer beside one reader", describe(&second.writer(path)));
    drop(r2);
    let w = first.writer(path);
    step("writer alone", describe(&w));
    step("reader beside the writer", describe(&second.reader(path)));
    drop(w);
    step("reader after the writer", describe(&second.reader(path)));
    steps
}

#[test]
fn read_only_handles_share_the_file_and_exclude_writers_as_redbs_do() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache();
    let path = dir.path().join("db.redb");
    write_db(&cache, &path);
    // Through redb's own backend alone: the behaviour to match.
    let expected = reader_steps(&path, Via::Redb, Via::Redb);
    let refused = describe::<()>(&Err(DatabaseError::DatabaseAlreadyOpen));
    let rows = format!("{:?}", Ok::<_, String>(format!("{ROWS} rows, wrong: []")));
    assert_eq!(
        expected,
        [
            "reader: ok".to_string(),
            "second reader: ok".to_string(),
            format!("writer beside readers: {refused}"),
            format!("first writer beside readers: {refused}"),
            format!("rows through the first reader: {rows}"),
            format!("rows through the second reader: {rows}"),
            format!("writer beside one reader: {refused}"),
            "writer alone: ok".to_string(),
            format!("reader beside the writer: {refused}"),
            "reader after the writer: ok".to_string(),
        ]
    );
    // A fresh cache per handle here: these tests are about the locks, and
    // a handle through a cache that held the file while redb's backend
    // wrote it could read stale pages (see the `_through_the_same_cache` tests).
    for (first, second) in
        [(Via::FreshCache, Via::FreshCache), (Via::FreshCache, Via::Redb), (Via::Redb, Via::FreshCache)]
    {
        assert_eq!(reader_steps(&path, first, second), expected, "{first:?} then {second:?}");
    }
    // Through one cache: nothing but this cache writes the file.
    assert_eq!(reader_steps(&path, Via::Cache(&cache), Via::Cache(&cache)), expected);
}

#[test]
fn shared_concurrency_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache();
    let path = dir.path().join("db.redb");
    write_db(&cache, &path);
    for mode in [ConcurrencyMode::SingleWriter, ConcurrencyMode::MultiWriter] {
        let mut builder = Database::builder();
        builder.set_concurrency_mode(mode);
        let w = builder.create_with_backend(CachedBackend::open(&cache, &path, true).unwrap());
        let r = builder.open_read_only_with_backend(CachedBackend::open(&cache, &path, false).unwrap());
        // Byte-range locks are unsupported: redb cannot enforce the mode.
        assert!(matches!(w, Err(DatabaseError::Storage(StorageError::Unsupported))), "{mode:?}: {}", describe(&w));
        assert!(matches!(r, Err(DatabaseError::Storage(StorageError::Unsupported))), "{mode:?}: {}", describe(&r));
    }
    // ... and left nothing locked. A database open through this backend
    // refuses redb's own handles in those modes too (they take the whole-file
    // lock shared beside their byte-range locks).
    let db = Via::Cache(&cache).writer(&path).unwrap();
    for mode in [ConcurrencyMode::SingleWriter, ConcurrencyMode::MultiWriter] {
        let mut builder = Database::builder();
        builder.set_concurrency_mode(mode);
        assert!(matches!(builder.open(&path), Err(DatabaseError::DatabaseAlreadyOpen)), "{mode:?}");
        let r = builder.open_read_only(&path);
        assert!(matches!(r, Err(DatabaseError::DatabaseAlreadyOpen)), "{mode:?}: {}", describe(&r));
    }
    drop(db);
    // ... and a redb single writer refuses this backend's writer.
    let mut builder = Database::builder();
    builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    let redb_db = builder.open(&path).unwrap();
    assert!(matches!(Via::FreshCache.writer(&path), Err(DatabaseError::DatabaseAlreadyOpen)));
    // The gap the module docs describe: it holds the whole-file lock shared,
    // so the lock does not refuse this backend's read-only handle; the open
    // fails only because the live writer's header asks for a recovery.
    let r = Via::FreshCache.reader(&path);
    assert!(matches!(r, Err(DatabaseError::RepairAborted)), "{}", describe(&r));
    drop(redb_db);
    assert!(Via::FreshCache.writer(&path).is_ok());
}

/// `close` writes back the pages this backend dirtied, then releases the
/// lock, though a clone of the `CachedFile` keeps them cached past it (redb
/// syncs before it closes, except after an I/O error or a panic; its own
/// backend's writes are in the file at once).
#[test]
fn close_writes_back_then_unlocks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PageCache::builder().capacity(8 << 20).dirty_expire(Duration::from_secs(3600)).build().unwrap();
    let path = dir.path().join("raw");
    let backend = CachedBackend::create(&cache, &path).unwrap();
    let file = backend.file().clone();
    let other = File::open(&path).unwrap();
    assert!(matches!(backend.try_lock_range(Included(1), Unbounded), Err(BackendError::Unsupported)));
    assert!(matches!(backend.try_lock_shared_range(Unbounded, Excluded(10)), Err(BackendError::Unsupported)));
    assert!(matches!(backend.query_lock_range(Unbounded, Unbounded), Err(BackendError::Unsupported)));
    assert!(backend.try_lock_range(Unbounded, Unbounded).unwrap());
    assert!(matches!(other.try_lock_shared(), Err(TryLockError::WouldBlock)));
    backend.write(0, b"written").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"", "still only in the cache");
    backend.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"written");
    other.try_lock().unwrap();
    other.unlock().unwrap();
    // A shared lock, as a read-only handle takes it, shares the file.
    let reader = CachedBackend::open(&cache, &path, false).unwrap();
    assert!(reader.try_lock_shared_range(Included(0), Unbounded).unwrap());
    other.try_lock_shared().unwrap();
    other.unlock().unwrap();
    let writer = CachedBackend::open(&cache, &path, true).unwrap();
    assert!(!writer.try_lock_range(Unbounded, Unbounded).unwrap());
    reader.unlock_range(Included(0), Unbounded).unwrap();
    assert!(writer.try_lock_range(Unbounded, Unbounded).unwrap());
    drop((reader, writer, file));
}

// -- corruption ------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Corruption {
    /// One bit of one row's value, inside a b-tree leaf page.
    FlipLeafBit,
    /// The database header (magic number, layout, both commit slots).
    ZeroHeader,
}

fn corrupt(path: &Path, how: Corruption) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    match how {
        Corruption::FlipLeafBit => {
            let bytes = std::fs::read(path).unwrap();
            let needle = value(ROWS / 2);
            let at: Vec<usize> = bytes
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle.as_bytes())
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "one copy of {needle:?} in the file");
            // The '0' of "value 001000": it reads as '1'.
            let off = (at[0] + 6) as u64;
            let mut b = [0u8];
            f.read_exact_at(&mut b, off).unwrap();
            f.write_all_at(&[b[0] ^ 1], off).unwrap();
        }
        Corruption::ZeroHeader => f.write_all_at(&[0; DB_HEADER_SIZE], 0).unwrap(),
    }
    f.sync_all().unwrap();
}

/// What redb makes of the database at `path` opened by `open`: the open, the
/// rows, then `check_integrity` (which may repair the file); and, on a copy,
/// an open with `set_check_integrity_on_open`.
fn outcome(path: &Path, open: impl Fn(&Path, bool) -> Result<Database, DatabaseError>) -> Vec<String> {
    let copy = path.with_extension("checked");
    std::fs::copy(path, &copy).unwrap();
    let mut out = Vec::new();
    match open(path, false) {
        Err(e) => out.push(format!("open: {e:?}: {e}")),
        Ok(mut db) => {
            out.push(format!("rows: {:?}", read_rows(&db).map_err(|e| e.to_string())));
            out.push(format!("check_integrity: {:?}", db.check_integrity().map_err(|e| e.to_string())));
            out.push(format!("rows after: {:?}", read_rows(&db).map_err(|e| e.to_string())));
        }
    }
    out.push(format!("open, checking integrity: {}", describe(&open(&copy, true))));
    out
}

fn open_ours(cache: &PageCache) -> impl Fn(&Path, bool) -> Result<Database, DatabaseError> + '_ {
    move |path, check| {
        let mut b = Database::builder();
        b.set_check_integrity_on_open(check);
        b.create_with_backend(CachedBackend::open(cache, path, true)?)
    }
}

fn open_redb(path: &Path, check: bool) -> Result<Database, DatabaseError> {
    let mut b = Database::builder();
    b.set_check_integrity_on_open(check);
    b.open(path)
}

/// Writes a database through `cache`, corrupts it `how`, and returns its
/// path and a copy for redb's own backend (the same bytes).
fn corrupted(dir: &Path, cache: &PageCache, how: Corruption) -> (PathBuf, PathBuf) {
    let ours = dir.join(format!("{how:?}.redb"));
    let theirs = dir.join(format!("{how:?}-redb.redb"));
    write_db(cache, &ours);
    // Written back in full by the close: redb over its own backend reads it.
    std::fs::copy(&ours, &theirs).unwrap();
    assert_eq!(
        outcome(&theirs, open_redb),
        [
            format!("rows: {:?}", Ok::<_, String>(format!("{ROWS} rows, wrong: []"))),
            "check_integrity: Ok(true)".to_string(),
            format!("rows after: {:?}", Ok::<_, String>(format!("{ROWS} rows, wrong: []"))),
            "open, checking integrity: ok".to_string(),
        ]
    );
    corrupt(&ours, how);
    std::fs::copy(&ours, &theirs).unwrap();
    (ours, theirs)
}

fn reopen_corrupted(how: Corruption, same_cache: bool) {
    let dir = tempfile::tempdir().unwrap();
    let writer = cache();
    let (ours, theirs) = corrupted(dir.path(), &writer, how);
    let expected = outcome(&theirs, open_redb);
    eprintln!("{how:?} through redb's own backend: {expected:#?}");
    let reader = if same_cache { writer } else { cache() };
    let got = outcome(&ours, open_ours(&reader));
    assert_eq!(got, expected, "{how:?}, through the {} cache", if same_cache { "same" } else { "a fresh" });
    // Both repairs (or refusals) left the same bytes.
    for ext in ["redb", "checked"] {
        let (ours, theirs) = (ours.with_extension(ext), theirs.with_extension(ext));
        assert!(std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(), "{how:?}: the .{ext} files differ");
    }
}

#[test]
fn a_flipped_leaf_bit_reads_as_over_redbs_backend() {
    reopen_corrupted(Corruption::FlipLeafBit, false);
}

#[test]
fn a_zeroed_header_is_refused_as_over_redbs_backend() {
    reopen_corrupted(Corruption::ZeroHeader, false);
}

/// The same through the cache that wrote the file, which still holds its
/// pages from before the corruption. Fails until the cache revalidates a
/// file's pages when it is opened again: it serves the stale pages, so redb
/// finds the database intact (every row right, `check_integrity` Ok(true))
/// where over its own backend it reads the flipped value and fails the
/// check, or refuses the zeroed header.
#[test]
fn a_flipped_leaf_bit_reads_as_over_redbs_backend_through_the_same_cache() {
    reopen_corrupted(Corruption::FlipLeafBit, true);
}

#[test]
fn a_zeroed_header_is_refused_as_over_redbs_backend_through_the_same_cache() {
    reopen_corrupted(Corruption::ZeroHeader, true);
}
