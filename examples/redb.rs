//! A storage engine embedding the cache: a redb database whose storage is a
//! `CachedFile`, through `page_cache::redb::CachedBackend` (redb's
//! `StorageBackend` trait, locked like redb's own file backend). Writes a
//! table, commits, shows that a second open is refused while the database is
//! open, reopens the database from the file, and reads it back.
//!
//! `cargo run --release --features redb --example redb -- [PATH]`

use page_cache::redb::CachedBackend;
use page_cache::PageCache;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

const TABLE: TableDefinition<u64, &str> = TableDefinition::new("kv");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir;
    let path = match std::env::args_os().nth(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            dir = tempfile::tempdir()?;
            dir.path().join("example.redb")
        }
    };
    let cache = PageCache::new(32 << 20)?;
    let n = 10_000u64;
    {
        let db = Database::builder().create_with_backend(CachedBackend::create(&cache, &path)?)?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for i in 0..n {
                table.insert(i, format!("value {i}").as_str())?;
            }
        }
        txn.commit()?;
        println!("wrote and committed {n} rows through the cache");
        // The backend holds the file's lock, as redb's own backend does.
        let second = Database::builder().create_with_backend(CachedBackend::open(&cache, &path, true)?);
        assert!(matches!(second, Err(DatabaseError::DatabaseAlreadyOpen)));
        assert!(matches!(Database::open(&path), Err(DatabaseError::DatabaseAlreadyOpen)));
        println!("a second open while it is open: {}", DatabaseError::DatabaseAlreadyOpen);
    }
    // Reopen from the file (same cache: the pages are still warm).
    let db = Database::builder().create_with_backend(CachedBackend::open(&cache, &path, true)?)?;
    let txn = db.begin_read()?;
    let table = txn.open_table(TABLE)?;
    let mut count = 0u64;
    for row in table.iter()? {
        let (k, v) = row?;
        assert_eq!(v.value(), format!("value {}", k.value()));
        count += 1;
    }
    assert_eq!(count, n);
    println!("reopened and read back {count} rows; {} bytes on disk", std::fs::metadata(&path)?.len());
    let s = cache.stats();
    println!("cache: {} hits, {} misses, {} pages written back", s.hits, s.misses, s.writeback_pages);
    Ok(())
}
