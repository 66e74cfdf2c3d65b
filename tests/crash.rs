//! Crash test with a real process: a child (this test binary, re-executed
//! to run the ignored `crash_child` test) appends checksummed records
//! through the cache, calls `sync_data`, and reports "synced N" after each
//! successful sync; the parent kills it with SIGKILL at a random moment and
//! checks that every record the child reported synced is on disk intact.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use page_cache::PageCache;

const CHILD_ENV: &str = "PAGE_CACHE_CRASH_CHILD";
const START_ENV: &str = "PAGE_CACHE_CRASH_START";
const SEED_ENV: &str = "PAGE_CACHE_CRASH_SEED";
/// Bytes per record: not a divisor of the page size, so records straddle pages.
const REC: usize = 100;
const ROUNDS: usize = 10;

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// FNV-1a.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Record `seq`: the sequence number, a payload derived from it and
/// `generation` (which child wrote it), and a checksum of both.
fn record(seq: u64, generation: u64) -> [u8; REC] {
    let mut r = [0u8; REC];
    r[..8].copy_from_slice(&seq.to_le_bytes());
    r[8..16].copy_from_slice(&generation.to_le_bytes());
    let mut s = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in &mut r[16..REC - 8] {
        *b = xorshift(&mut s) as u8;
    }
    let sum = checksum(&r[..REC - 8]);
    r[REC - 8..].copy_from_slice(&sum.to_le_bytes());
    r
}

/// Checks record `seq` in `bytes`; the reason it is bad, if it is.
fn verify(bytes: &[u8], seq: u64) -> Result<(), String> {
    let at = seq as usize * REC;
    let Some(r) = bytes.get(at..at + REC) else {
        return Err(format!("record {seq} missing: file is {} bytes", bytes.len()));
    };
    let got = u64::from_le_bytes(r[..8].try_into().unwrap());
    if got != seq {
        return Err(format!("record {seq} holds sequence number {got}"));
    }
    let sum = u64::from_le_bytes(r[REC - 8..].try_into().unwrap());
    if sum != checksum(&r[..REC - 8]) {
        return Err(format!("record {seq} fails its checksum"));
    }
    let generation = u64::from_le_bytes(r[8..16].try_into().unwrap());
    if r != record(seq, generation) {
        return Err(format!("record {seq} has the wrong payload"));
    }
    Ok(())
}

/// The child: runs only when re-executed by `crash_survives_sigkill`.
#[test]
#[ignore = "run by crash_survives_sigkill in a child process"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let mut seq: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let mut rng: u64 = std::env::var(SEED_ENV).unwrap().parse::<u64>().unwrap() | 1;
    let generation = rng;
    // A small cache, so reclaim and background writeback run too.
    // Every other child opens its file O_DIRECT, so its writeback runs go
    // on io_uring.
    let direct = generation & 2 == 0;
    let cache = PageCache::builder().capacity(64 * 4096).huge_pages(false).direct_io(direct).build().unwrap();
    let file = cache.open_with(&path, OpenOptions::new().read(true).write(true).create(true)).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    loop {
        let n = xorshift(&mut rng) % 60 + 1;
        let mut batch = Vec::with_capacity(n as usize * REC);
        for s in seq..seq + n {
            batch.extend_from_slice(&record(s, generation));
        }
        // Sometimes in two writes, the second first.
        let at = seq * REC as u64;
        if xorshift(&mut rng) % 3 == 0 && batch.len() > REC {
            let mid = batch.len() / 2 + 7;
            file.write_all_at(&batch[mid..], at + mid as u64).unwrap();
            file.write_all_at(&batch[..mid], at).unwrap();
        } else {
            file.write_all_at(&batch, at).unwrap();
        }
        seq += n;
        if xorshift(&mut rng) % 4 == 0 {
            file.sync_all().unwrap();
        } else {
            file.sync_data().unwrap();
        }
        writeln!(out, "synced {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn crash_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let exe = std::env::current_exe().unwrap();
    let mut rng = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let (mut verified_records, mut bytes_verified, mut crashes, mut extra_intact) = (0u64, 0u64, 0usize, 0u64);
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(START_ENV, verified_records.to_string())
            .env(SEED_ENV, xorshift(&mut rng).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has the file open. (libtest may print
        // "test crash_child ... " on the same line first.)
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                if l.ends_with("ready") {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("round {round}: the child exited early: {status}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("round {round}: the child never became ready");
            }
        }
        let delay = Duration::from_millis(10 + xorshift(&mut rng) % 291);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child finished by itself");
        reader.join().unwrap();
        // Everything the child printed before it died.
        let mut synced = verified_records;
        for line in rx.try_iter() {
            if let Some(n) = line.split("synced ").nth(1) {
                synced = n.trim().parse().unwrap();
            }
        }
        crashes += 1;
        let bytes = std::fs::read(&path).unwrap();
        for seq in 0..synced {
            if let Err(e) = verify(&bytes, seq) {
                panic!("round {round} (killed after {delay:?}): {e}; the child had reported {synced} synced");
            }
        }
        // Records past the last acknowledged sync may or may not have made it.
        let mut seq = synced;
        while verify(&bytes, seq).is_ok() {
            seq += 1;
        }
        extra_intact += seq - synced;
        println!(
            "round {round}: killed after {delay:?}; {} records synced this round, {synced} verified, \
             {} more intact past the last sync",
            synced - verified_records,
            seq - synced
        );
        bytes_verified += synced * REC as u64;
        verified_records = synced;
    }
    println!(
        "crash test: {crashes} SIGKILLs survived, {verified_records} records ({} bytes) acknowledged and intact, \
         {bytes_verified} bytes verified over all rounds, {extra_intact} unacknowledged records found intact, 0 lost",
        verified_records * REC as u64
    );
    assert!(verified_records > 0, "no sync ever completed: the test proved nothing");
}
