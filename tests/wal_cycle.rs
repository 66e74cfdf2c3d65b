//! A write-ahead-log hook that holds the handle of its own log file (the
//! obvious way to write `flush_to`: `log.sync_data()`) must not keep the
//! cache alive: the hooks go when the file's last handle closes, so
//! dropping every handle and the cache stops the cache's threads. A test
//! binary of its own, because it counts this process's threads.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use page_cache::{CachedFile, PageCache, WriteAheadLog, PAGE_SIZE};

/// Threads of this process (the only test of its binary runs alone).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

struct Log {
    file: CachedFile,
    durable: AtomicU64,
}

impl WriteAheadLog for Log {
    fn page_lsn(&self, _: u64, page: &[u8]) -> u64 {
        u64::from_le_bytes(page[..8].try_into().unwrap())
    }
    fn durable_lsn(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
    fn flush_to(&self, lsn: u64) -> io::Result<()> {
        self.file.sync_data()?;
        self.durable.fetch_max(lsn, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_hook_holding_its_log_file_does_not_keep_the_cache_alive() {
    let dir = tempfile::tempdir().unwrap();
    let before = threads();
    {
        let cache = PageCache::new(1 << 20).unwrap();
        // kswapd, the flusher and a readahead worker.
        assert_eq!(threads(), before + 3);
        let data = cache.create(dir.path().join("data")).unwrap();
        let log = Arc::new(Log { file: cache.create(dir.path().join("log")).unwrap(), durable: AtomicU64::new(0) });
        data.set_write_ahead_log(log.clone());
        let mut page = vec![7u8; PAGE_SIZE];
        page[..8].copy_from_slice(&5u64.to_le_bytes());
        log.file.write_all_at(b"redo record 5", 0).unwrap();
        data.write_all_at(&page, 0).unwrap();
        data.sync_data().unwrap();
        assert!(log.durable_lsn() >= 5);
        drop(log);
        drop(data);
        drop(cache);
    }
    assert_eq!(threads(), before, "the cache's threads stopped: nothing kept it alive");
    assert_eq!(std::fs::read(dir.path().join("log")).unwrap(), b"redo record 5");
}
