//! A storage engine embedding the cache: a redb database whose storage is a
//! `CachedFile`, through redb's `StorageBackend` trait. Writes a table,
//! commits, reopens the database from the file, and reads it back.
//!
//! `cargo run --release --example redb -- [PATH]`

use std::io;

use page_cache::{CachedFile, PageCache};
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};

const TABLE: TableDefinition<u64, &str> = TableDefinition::new("kv");

/// redb's storage, served by the page cache.
#[derive(Debug)]
struct CachedBackend(CachedFile);

impl StorageBackend for CachedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.0.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write_all_at(data, offset)
    }
}

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
        let file = cache.create(&path)?;
        let db = Database::builder().create_with_backend(CachedBackend(file))?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for i in 0..n {
                table.insert(i, format!("value {i}").as_str())?;
            }
        }
        txn.commit()?;
        println!("wrote and committed {n} rows through the cache");
    }
    // Reopen from the file (same cache: the pages are still warm).
    let file = cache.open_with(&path, std::fs::OpenOptions::new().read(true).write(true))?;
    let db = Database::builder().create_with_backend(CachedBackend(file))?;
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
