//! The page size the tools (`cat`, `dd`) stream files with, shared by both
//! through `#[path]` (each example is its own crate).

use std::ffi::OsString;

use page_cache::PAGE_SIZE;

/// The largest page size a file is streamed with.
pub const STREAM_PAGE_MAX: usize = 64 << 10;

/// Large pages need at least this many in the cache, and a cache of at
/// least `STREAM_MIN_CACHE`, see `stream_page_size`.
const STREAM_MIN_PAGES: usize = 256;
const STREAM_MIN_CACHE: usize = 8 << 20;

/// The page size to stream files with through a cache of `capacity`
/// bytes: the largest power of two from 4 KiB to 64 KiB that leaves at
/// least `STREAM_MIN_PAGES` pages in a cache of at least
/// `STREAM_MIN_CACHE` (32 KiB in 8 MiB, 64 KiB from 16 MiB), else 4 KiB.
/// A large page is one lookup, one reference, one LRU entry and one
/// `IoSlice` for eight or sixteen 4 KiB ones. Medians of 11 to 21
/// interleaved runs of `cat`, a 1 GiB file hot in the kernel's cache: to
/// /dev/null 101 ms with 32 KiB pages in 8 MiB against 147 ms with 4 KiB
/// pages in 4 MiB; into a pipe 188 against 225 ms; into a new file 233
/// against 272 ms. In fewer pages large ones lost: with 64 KiB pages in
/// 4 MiB (64 pages) readahead windows came apart into short reads when an
/// allocation of a block found none free (8,477 `preadv` per GiB instead
/// of 4,096; 143, 367 and 430 ms), and in 8 MiB (128 pages) reclaim
/// evicted pages read ahead before they were read (1.6 times the reads;
/// 167 and 348 ms).
pub fn stream_page_size(capacity: usize) -> usize {
    if capacity < STREAM_MIN_CACHE {
        return PAGE_SIZE;
    }
    let mut ps = STREAM_PAGE_MAX;
    while ps > PAGE_SIZE && capacity / ps < STREAM_MIN_PAGES {
        ps /= 2;
    }
    ps
}

/// `PAGE_CACHE_PAGE_SIZE`, if set: a page size (a power of two from 4096
/// to 65536) that replaces the tool's own choice, for timing one against
/// the other. `Err` holds the value when it is not one.
pub fn page_size_from_env() -> Result<Option<usize>, OsString> {
    let Some(v) = std::env::var_os("PAGE_CACHE_PAGE_SIZE") else {
        return Ok(None);
    };
    match v.to_str().and_then(|s| s.parse::<usize>().ok()) {
        Some(n) if n.is_power_of_two() && (PAGE_SIZE..=STREAM_PAGE_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(v),
    }
}
