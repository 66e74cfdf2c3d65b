//! Helpers shared by the benches: a random number generator and random
//! permutations of keys, the data files they read (made once under /var/tmp
//! and reused), threads timed together, and the machine's description (CPU
//! model, L3 size) printed at the start of every bench binary.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use page_cache::PAGE_SIZE;

pub const DIR: &str = "/var/tmp/page-cache-bench";
pub const MIB: usize = 1 << 20;

/// xorshift64: a fast, seedable generator for benchmark offsets.
pub fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// A data file of `size` bytes, each page filled with a non-zero byte that
/// depends on its index; made once, reused while its size is right.
pub fn data_file(name: &str, size: u64) -> PathBuf {
    let path = Path::new(DIR).join(name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        return path;
    }
    std::fs::create_dir_all(DIR).expect("bench dir");
    let tmp = path.with_extension("tmp");
    write_data(&tmp, size);
    std::fs::rename(&tmp, &path).expect("rename data file");
    path
}

/// Writes and syncs a file of `size` bytes whose every 4 KiB page holds one
/// byte that depends on its index (the contents of `data_file`).
pub fn write_data(path: &Path, size: u64) {
    let mut f = File::create(path).expect("create data file");
    let mut chunk = vec![0u8; MIB];
    for (i, off) in (0..size).step_by(MIB).enumerate() {
        for (p, page) in chunk.chunks_mut(PAGE_SIZE).enumerate() {
            page.fill(((i * MIB / PAGE_SIZE + p) % 255 + 1) as u8);
        }
        let n = (size - off).min(MIB as u64) as usize;
        f.write_all(&chunk[..n]).expect("write data file");
    }
    f.sync_all().expect("sync data file");
}

/// Reads the whole file with buffered reads, so the kernel caches it (this
/// VM drops idle file cache after about a minute).
pub fn warm_kernel(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = File::open(path).expect("open");
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while let Ok(n @ 1..) = f.read_at(&mut buf, off) {
        off += n as u64;
    }
}

/// Reads the whole file through the cache; every page ends up cached.
pub fn fill_cache(file: &page_cache::CachedFile) {
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while off < file.len() {
        off += file.read_at(&mut buf, off).expect("read through cache") as u64;
    }
}

/// A random permutation of `0..n` (Fisher-Yates over xorshift): walked in
/// order it touches every one of `n` keys once per pass, in an order no
/// prefetcher follows, so a pass over `n` resident pages touches all of them.
pub fn permutation(n: u64, seed: u64) -> Vec<u64> {
    let mut s = seed | 1;
    let mut v: Vec<u64> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = (xorshift(&mut s) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Runs `body(t)` for `t` in `0..threads` on scoped threads released
/// together by a barrier; returns the wall time from their release to the
/// last one's end (spawning is not timed).
pub fn wall_time_on_threads(threads: usize, body: &(dyn Fn(usize) + Sync)) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    body(t)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        for h in handles {
            h.join().expect("bench thread");
        }
        t0.elapsed()
    })
}

/// The last-level cache's size in bytes, from sysfs (the L3 of cpu0; on a
/// VM this is what the hypervisor reports, which may not be the host's).
pub fn l3_bytes() -> Option<u64> {
    let dir = Path::new("/sys/devices/system/cpu/cpu0/cache");
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let level = std::fs::read_to_string(e.path().join("level")).unwrap_or_default();
        if level.trim() != "3" {
            continue;
        }
        let size = std::fs::read_to_string(e.path().join("size")).ok()?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
        let mult = match unit {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            _ => return None,
        };
        return digits.parse::<u64>().ok().map(|d| d * mult);
    }
    None
}

/// Prints, once per bench binary, the CPU model (`model name`, family,
/// model and stepping from /proc/cpuinfo), the number of CPUs and the L3
/// size: whether a working set is memory-bound depends on the L3.
pub fn print_machine() {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "?".into())
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let l3 = l3_bytes().map_or_else(|| "unknown".into(), |b| format!("{} MiB", b >> 20));
    eprintln!(
        "machine: {} (family {} model {} stepping {}), {cpus} CPUs, L3 {l3}",
        field("model name"),
        field("cpu family"),
        field("model"),
        field("stepping"),
    );
}

/// Prints a group's working set (the bytes its keys touch over one pass)
/// next to the L3's size: the group is memory-bound only if it is larger.
pub fn print_working_set(group: &str, bytes: u64) {
    let vs = match l3_bytes() {
        Some(l3) => format!("{:.1}x the L3 ({} MiB)", bytes as f64 / l3 as f64, l3 >> 20),
        None => "L3 size unknown".into(),
    };
    eprintln!("{group}: working set about {:.1} MiB, {vs}", bytes as f64 / MIB as f64);
}

/// Whether the command line's criterion filter (the arguments that are not
/// flags) selects something in `group`: no filter, or an alternative of
/// one (split at `|`) whose part before the first `/` is a prefix of the
/// group's name or has it as a prefix. For the work a group does outside
/// criterion's rows (interleaved series), which a filter does not skip.
#[allow(dead_code)]
pub fn group_wanted(group: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            f.split('|').any(|alt| {
                let head = alt.trim_start_matches('^').split('/').next().unwrap_or("");
                group.starts_with(head) || head.starts_with(group)
            })
        })
}

/// Runs `N` variants interleaved: `rounds` rounds, each running every
/// variant once (`run(which)`, which returns the time it measured, so that
/// set-up between runs stays out of it), in an order that rotates every
/// round (a run right after another of the same kind can find its data
/// warm); returns each variant's median time.
#[allow(dead_code)]
pub fn interleaved_medians<const N: usize>(rounds: usize, mut run: impl FnMut(usize) -> Duration) -> [Duration; N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..rounds {
        for k in 0..N {
            let which = (round + k) % N;
            times[which].push(run(which));
        }
    }
    times.map(|mut v| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    })
}
