//! Helpers shared by the benches: a random number generator and the data
//! files they read (made once under /var/tmp and reused).

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    let mut f = File::create(&tmp).expect("create data file");
    let mut chunk = vec![0u8; MIB];
    for (i, off) in (0..size).step_by(MIB).enumerate() {
        for (p, page) in chunk.chunks_mut(PAGE_SIZE).enumerate() {
            page.fill(((i * MIB / PAGE_SIZE + p) % 255 + 1) as u8);
        }
        let n = (size - off).min(MIB as u64) as usize;
        f.write_all(&chunk[..n]).expect("write data file");
    }
    f.sync_all().expect("sync data file");
    std::fs::rename(&tmp, &path).expect("rename data file");
    path
}

/// Prints the CPU model and its L3 size once per bench binary: figures
/// from another machine are no baseline.
pub fn print_cpu() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let l3 = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").unwrap_or_default();
        eprintln!("CPU: {model}, L3 {}", l3.trim());
    });
}
