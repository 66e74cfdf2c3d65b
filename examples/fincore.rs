//! Which pages of a file are resident in a page cache (like `fincore` and
//! `vmtouch`): reads part of the file, then maps residency with
//! `find_get_pages`; `--preload` reads the whole file into the cache first.
//!
//! `cargo run --release --example fincore -- [--preload] [--read BYTES] FILE...`
//!
//! `--help` (or `-h`) prints the usage and `--version` the version, on
//! standard output, and exit 0.

use std::process::ExitCode;

use page_cache::{PageCache, PAGE_SIZE};

fn print_help() {
    println!(
        "Usage: fincore [--preload] [--read BYTES] FILE...\n\
         Read part of each FILE through a page cache, then show which of its pages\n\
         are resident: bytes and pages resident, file size, a 32-column map\n\
         ('#' all resident, 'o' some, '.' none).\n\n\
         \x20 --preload       read the whole file first\n\
         \x20 --read BYTES    read the first BYTES bytes first (default: 0)\n\
         \x20 -h, --help      display this help and exit\n\
         \x20 --version       output version information and exit"
    );
}

fn main() -> ExitCode {
    let mut preload = false;
    let mut read_bytes: u64 = 0;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print_help();
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("fincore (page-cache) {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--preload" => preload = true,
            "--read" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => read_bytes = n,
                None => {
                    eprintln!("fincore: --read needs a byte count");
                    return ExitCode::FAILURE;
                }
            },
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        eprintln!("usage: fincore [--preload] [--read BYTES] FILE...");
        return ExitCode::FAILURE;
    }
    let cache = match PageCache::new(256 << 20) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fincore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut status = ExitCode::SUCCESS;
    println!("{:>10} {:>8} {:>12}  MAP{:32}FILE", "RES", "PAGES", "SIZE", "");
    for name in files {
        let file = match cache.open(&name) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("fincore: {name}: {e}");
                status = ExitCode::FAILURE;
                continue;
            }
        };
        let want = if preload { file.len() } else { read_bytes.min(file.len()) };
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < want {
            let n = (want - off).min(buf.len() as u64) as usize;
            match file.read_at(&mut buf[..n], off) {
                Ok(0) => break,
                Ok(n) => off += n as u64,
                Err(e) => {
                    eprintln!("fincore: {name}: {e}");
                    status = ExitCode::FAILURE;
                    break;
                }
            }
        }
        let pages = file.len().div_ceil(PAGE_SIZE as u64);
        let mut resident = vec![false; pages as usize];
        let mut index = 0;
        loop {
            let batch = file.mapping().find_get_pages(index, 64);
            let Some(last) = batch.last().map(|p| p.index()) else { break };
            for p in &batch {
                if let Some(r) = resident.get_mut(p.index() as usize) {
                    *r = true;
                }
            }
            index = last + 1;
        }
        let res = resident.iter().filter(|&&r| r).count();
        // A 32-column residency map: each column is 1/32 of the file.
        let map: String = (0..32)
            .map(|c| {
                let (a, b) =
                    (c * resident.len() / 32, ((c + 1) * resident.len() / 32).max(c * resident.len() / 32 + 1));
                let slice = &resident[a.min(resident.len())..b.min(resident.len())];
                match slice.iter().filter(|&&r| r).count() {
                    0 => '.',
                    n if n == slice.len() => '#',
                    _ => 'o',
                }
            })
            .collect();
        println!("{:>10} {:>8} {:>12}  [{}]  {}", res * PAGE_SIZE, res, file.len(), map, name);
    }
    status
}
