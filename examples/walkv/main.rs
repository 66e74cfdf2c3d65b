//! `walkv`: a small key-value store over one `PageCache`, written as the
//! reference for storage engines that embed the crate. It relies on the
//! cache's two engine hooks: the write-ahead-log rule
//! (`CachedFile::set_write_ahead_log`: no data page reaches the file before
//! the redo log is durable past the page's LSN) and checksums on read-in
//! (`CachedFile::set_read_verifier`).
//!
//! ```text
//! walkv put DIR KEY VALUE      set KEY (a u64) to VALUE (at most 100 bytes)
//! walkv get DIR KEY            print KEY's value (exit 1 if absent)
//! walkv del DIR KEY            remove KEY
//! walkv check DIR              recover, then check every page on disk
//! walkv bench DIR N [THREADS]  N random puts from THREADS threads, then N gets
//! walkv crash-child DIR SEED [THREADS]
//!                              random commits forever, one stdout line per
//!                              acknowledged commit (for tests/walkv.rs)
//! ```
//!
//! `engine/` is the store (`mod.rs`: commit and recovery; `page.rs`: the
//! slotted data page; `log.rs`: the redo log, group commit and the cache's
//! `WriteAheadLog`; `crc.rs`: CRC-32); `workload.rs` drives `bench` and
//! `crash-child`. The cache holds `WALKV_CACHE_PAGES` pages (default 1024,
//! 4 MiB; `crash-child` uses 48 so reclaim and the flusher write data pages
//! on their own). `WALKV_TRACE=FILE` makes `bench` write the pages its puts
//! and gets touch to FILE (`engine/trace.rs`; the policy table's `walkv`
//! trace, recorded with THREADS=1).

mod engine;
mod workload;

use std::path::Path;
use std::process::ExitCode;

use page_cache::{PageCache, PAGE_SIZE};

use engine::Store;

const USAGE: &str = "usage: walkv put DIR KEY VALUE | get DIR KEY | del DIR KEY | check DIR | bench DIR N [THREADS] | crash-child DIR SEED [THREADS]";

fn cache(default_pages: usize) -> std::io::Result<PageCache> {
    let pages = std::env::var("WALKV_CACHE_PAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_pages);
    PageCache::builder().capacity(pages * PAGE_SIZE).build()
}

fn number(arg: Option<&String>, what: &str) -> Result<u64, String> {
    let arg = arg.ok_or_else(|| format!("missing {what}\n{USAGE}"))?;
    arg.parse().map_err(|_| format!("{what}: not a number: {arg}"))
}

/// An optional number operand, `default` when absent.
fn number_or(arg: Option<&String>, what: &str, default: u64) -> Result<u64, String> {
    arg.map_or(Ok(default), |a| number(Some(a), what))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let (Some(cmd), Some(dir)) = (args.first(), args.get(1)) else { return Err(USAGE.into()) };
    let dir = Path::new(dir);
    let io = |e: std::io::Error| format!("walkv: {}: {e}", dir.display());
    match cmd.as_str() {
        "put" | "get" | "del" => {
            let key = number(args.get(2), "KEY")?;
            let cache = cache(1024).map_err(io)?;
            let store = Store::open_dir(&cache, dir).map_err(io)?;
            match cmd.as_str() {
                "put" => {
                    let value = args.get(3).ok_or_else(|| format!("missing VALUE\n{USAGE}"))?;
                    let lsn = store.put(key, value.as_bytes()).map_err(io)?;
                    println!("ok lsn {lsn}");
                }
                "del" => {
                    let lsn = store.delete(key).map_err(io)?;
                    println!("ok lsn {lsn}");
                }
                _ => match store.get(key).map_err(io)? {
                    Some(v) => println!("{}", String::from_utf8_lossy(&v)),
                    None => {
                        eprintln!("walkv: key {key} not found");
                        return Ok(ExitCode::FAILURE);
                    }
                },
            }
        }
        "check" => {
            let cache = cache(1024).map_err(io)?;
            let store = Store::open_dir(&cache, dir).map_err(io)?;
            let r = store.recovery().clone();
            let keys = store.entries().map_err(io)?.len();
            store.checkpoint().map_err(io)?;
            let bytes = std::fs::read(dir.join("data")).map_err(io)?;
            let on_disk = engine::check_image(&bytes, store.durable_lsn()).map_err(|e| format!("walkv: {e}"))?;
            println!(
                "ok: {} log records (last LSN {}), {} replayed, {} torn tail bytes cut, {} pages rebuilt; {keys} keys, {on_disk} on disk, every page's checksum holds",
                r.records, r.last_lsn, r.replayed, r.torn_tail, r.rebuilt_pages
            );
        }
        "bench" => {
            let n = number(args.get(2), "N")?;
            let threads = number_or(args.get(3), "THREADS", 4)?;
            workload::bench(dir, n, threads.max(1) as usize, || cache(1024)).map_err(io)?;
        }
        "crash-child" => {
            let seed = number(args.get(2), "SEED")?;
            let threads = number_or(args.get(3), "THREADS", 3)?;
            let cache = cache(48).map_err(io)?;
            workload::crash_child(&cache, dir, seed, threads.max(1) as usize).map_err(io)?;
        }
        _ => return Err(USAGE.into()),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}
