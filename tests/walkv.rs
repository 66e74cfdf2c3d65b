//! Crash tests of the `walkv` example (`examples/walkv`), the key-value
//! store that relies on the cache's write-ahead-log hook and read verifier.
//!
//! - `sigkill_keeps_every_acknowledged_commit`: the example's `crash-child`
//!   (built with `cargo build --example walkv`, as `tests/tools.rs` builds
//!   its tools) commits from three threads and prints each acknowledged
//!   commit; it is killed with SIGKILL at a random moment, twice per store
//!   (the second run recovers the first's crash), and the store is recovered
//!   in this process and checked against what was acknowledged.
//! - `power_loss_keeps_every_acknowledged_commit`: the engine runs in this
//!   process over two [`ShadowFile`] backings that know what a power loss
//!   would leave (only what `sync_data` made durable, plus a random subset
//!   of the later writes, some torn at 512-byte sectors); the power is cut
//!   at a random backing operation, the files are rebuilt from that, and a
//!   new cache recovers them, three times per seed. The data backing also
//!   checks the WAL rule at every write: no page reaches the data file with
//!   an LSN past the log's durable end.
//! - `corrupt_page_is_refused_then_rebuilt`: the read verifier at work.
//!
//! Each checks, after every recovery, that every key holds its last
//! acknowledged value or one written after it (never an older one, never
//! one never written), and that every page's checksum holds.

// The engine itself, shared with the example.
#[allow(dead_code)]
#[path = "../examples/walkv/engine/mod.rs"]
mod engine;

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use page_cache::{Backing, FileBacking, PageCache, PAGE_SIZE};

use engine::Store;

mod common;
use common::json_string_field;

fn sanitizer() -> bool {
    std::env::var_os("PAGE_CACHE_SANITIZER").is_some()
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// FNV-1a 64, as the crash child hashes values.
fn value_hash(value: &[u8]) -> u64 {
    value.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

// ------------------------------------------------------ what must survive

/// One commit of a key, in the order the key's (only) thread issued them.
#[derive(Clone, Debug)]
struct Commit {
    /// Hash of the value, `None` for a delete.
    value: Option<u64>,
    /// Acknowledged (returned, the log durable past it) before the crash.
    acked: bool,
}

/// What a crash may leave of a round's commits: for each key, its value
/// before the round and the round's commits.
#[derive(Default)]
struct Expected {
    before: HashMap<u64, u64>,
    commits: HashMap<u64, Vec<Commit>>,
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    /// Keys whose last acknowledged commit was checked.
    acked_keys: u64,
    /// Acknowledged commits before the crash.
    acked_commits: u64,
    /// Keys that came back with a value written after their last ack (a
    /// commit that became durable without being acknowledged).
    later_values: u64,
    /// Keys recovered.
    recovered_keys: u64,
}

impl Expected {
    /// Checks the recovered contents; the rule, for each key: its value is
    /// that of its last acknowledged commit or of a commit after it; with no
    /// acknowledged commit in the round, its value before the round or that
    /// of any commit of the round.
    fn check(&self, recovered: &BTreeMap<u64, Vec<u8>>) -> Result<Tally, String> {
        let mut tally = Tally { recovered_keys: recovered.len() as u64, ..Tally::default() };
        let got = |k: &u64| recovered.get(k).map(|v| value_hash(v));
        for (key, commits) in &self.commits {
            tally.acked_commits += commits.iter().filter(|c| c.acked).count() as u64;
            let last_ack = commits.iter().rposition(|c| c.acked);
            let mut allowed: Vec<Option<u64>> = match last_ack {
                Some(i) => commits[i..].iter().map(|c| c.value).collect(),
                None => std::iter::once(self.before.get(key).copied()).chain(commits.iter().map(|c| c.value)).collect(),
            };
            let value = got(key);
            if !allowed.contains(&value) {
                allowed.dedup();
                return Err(format!(
                    "key {key}: recovered {value:x?}, allowed {allowed:x?} (commits {commits:x?}, before {:x?})",
                    self.before.get(key)
                ));
            }
            if let Some(i) = last_ack {
                tally.acked_keys += 1;
                if value != commits[i].value {
                    tally.later_values += 1;
                }
            }
        }
        for (key, value) in recovered {
            if !self.commits.contains_key(key) && self.before.get(key) != Some(&value_hash(value)) {
                return Err(format!("key {key}: recovered {:x}, which nobody wrote", value_hash(value)));
            }
        }
        for (key, before) in &self.before {
            if !self.commits.contains_key(key) && got(key) != Some(*before) {
                return Err(format!("key {key}: recovered {:x?}, had {before:x} and was not written", got(key)));
            }
        }
        Ok(tally)
    }

    /// The next round starts from what was recovered.
    fn next_round(recovered: &BTreeMap<u64, Vec<u8>>) -> Expected {
        Expected { before: recovered.iter().map(|(k, v)| (*k, value_hash(v))).collect(), commits: HashMap::new() }
    }
}

/// Recovers the store in `dir` through a fresh cache, checks it against
/// `expected`, makes it durable, and checks the data file on disk.
fn recover_dir(dir: &Path, expected: &Expected) -> (BTreeMap<u64, Vec<u8>>, Tally) {
    let cache = PageCache::new(4 << 20).unwrap();
    let store = Store::open_dir(&cache, dir).unwrap_or_else(|e| panic!("recovery of {} failed: {e}", dir.display()));
    let recovered = store.entries().unwrap();
    let tally = expected.check(&recovered).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    store.checkpoint().unwrap();
    let bytes = std::fs::read(dir.join("data")).unwrap();
    let on_disk = engine::check_image(&bytes, store.durable_lsn()).unwrap_or_else(|e| panic!("after recovery: {e}"));
    assert_eq!(on_disk, recovered.len(), "the data file on disk holds what the cache showed");
    (recovered, tally)
}

// ----------------------------------------------------- building the example

fn walkv_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(env!("CARGO"))
            .args(["build", "--example", "walkv", "--message-format=json-render-diagnostics"])
            .current_dir(manifest)
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run cargo");
        assert!(out.status.success(), "cargo build --example walkv failed");
        // Cargo says where it put the executable; else the default layout.
        let from_cargo = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
            .filter_map(|l| json_string_field(l, "executable"))
            .map(PathBuf::from)
            .find(|p| p.file_name().is_some_and(|n| n == "walkv"));
        let exe = from_cargo.unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| if t.is_absolute() { t } else { manifest.join(t) })
                .unwrap_or_else(|| manifest.join("target"));
            target.join("debug").join("examples").join("walkv")
        });
        assert!(exe.is_file(), "no walkv example at {}", exe.display());
        exe
    })
}

// ------------------------------------------------------------------ SIGKILL

/// Parses the crash child's `try KEY HASH` / `ack KEY HASH LSN` lines into
/// `expected`'s commits.
fn parse_child(lines: &[String], expected: &mut Expected) {
    let hash = |h: &str| (h != "-").then(|| u64::from_str_radix(h, 16).expect("a hex hash"));
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        match f[..] {
            ["try", key, h] => {
                let commits = expected.commits.entry(key.parse().unwrap()).or_default();
                commits.push(Commit { value: hash(h), acked: false });
            }
            ["ack", key, h, _lsn] => {
                let c = expected.commits.get_mut(&key.parse().unwrap()).and_then(|c| c.last_mut());
                let c = c.unwrap_or_else(|| panic!("ack without try: {line}"));
                assert_eq!(c.value, hash(h), "ack of another value than tried: {line}");
                c.acked = true;
            }
            ["open", ..] => {}
            _ => panic!("unexpected line from the crash child: {line:?}"),
        }
    }
}

#[test]
fn sigkill_keeps_every_acknowledged_commit() {
    let exe = walkv_exe();
    // WALKV_KILL_RUNS=N runs more (or fewer) stores.
    let runs = if sanitizer() { 5 } else { 20 };
    let runs = std::env::var("WALKV_KILL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(runs);
    let mut rng = Rng::new(0x5eed_0001 ^ std::process::id() as u64);
    let (mut kills, mut total) = (0, Tally::default());
    let mut wal_pages_checked = 0;
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Expected::default();
        // Two lives per store: the second recovers the first's crash, then
        // crashes itself.
        for life in 0..2 {
            let seed = rng.next();
            let delay = Duration::from_millis(50 + rng.below(350));
            let mut child = Command::new(exe)
                .args(["crash-child", dir.path().to_str().unwrap(), &seed.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            let reader = std::thread::spawn(move || {
                let mut lines = Vec::new();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("open ") {
                        let _ = tx.send(());
                    }
                    lines.push(line);
                }
                lines
            });
            // The delay counts from the end of the child's own recovery.
            let opened = rx.recv_timeout(Duration::from_secs(60)).is_ok();
            if opened {
                std::thread::sleep(delay);
            }
            let exited = child.try_wait().unwrap();
            child.kill().unwrap(); // SIGKILL
            let status = child.wait().unwrap();
            let lines = reader.join().unwrap();
            if !opened || exited.is_some() {
                let mut err = String::new();
                io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                panic!("run {run} life {life}: the child stopped by itself ({status}): {err}");
            }
            kills += 1;
            parse_child(&lines, &mut expected);
            // What the kill left, before recovery touches it: every page
            // intact and none ahead of the log (the WAL rule).
            let log = engine::log::scan_bytes(&std::fs::read(dir.path().join("log")).unwrap());
            let last = log.records.last().map_or(0, |r| r.lsn);
            let data = std::fs::read(dir.path().join("data")).unwrap();
            engine::check_image(&data, last)
                .unwrap_or_else(|e| panic!("run {run} life {life}, as the kill left it: {e} (log ends at {last})"));
            wal_pages_checked += data.len() / PAGE_SIZE;
            let (recovered, tally) = recover_dir(dir.path(), &expected);
            total.acked_keys += tally.acked_keys;
            total.acked_commits += tally.acked_commits;
            total.later_values += tally.later_values;
            total.recovered_keys += tally.recovered_keys;
            expected = Expected::next_round(&recovered);
        }
    }
    println!(
        "sigkill: {runs} stores, {kills} kills, {} acknowledged commits, {} keys checked against their last ack ({} held a later unacknowledged value), {} keys recovered, {wal_pages_checked} pages checked on disk against the log; violations: 0",
        total.acked_commits, total.acked_keys, total.later_values, total.recovered_keys
    );
}

// --------------------------------------------------------------- power loss

/// What both files of one simulated machine share: the power, which goes
/// out at the `cut_at`-th backing operation or at the `cut_at_log_sync`-th
/// sync of the log (where the log's last writes are still pending).
struct Power {
    state: Mutex<PowerState>,
}

struct PowerState {
    ops: u64,
    cut_at: u64,
    log_syncs: u64,
    cut_at_log_sync: u64,
    cut: bool,
}

impl Power {
    fn new(cut_at: u64, cut_at_log_sync: u64) -> Arc<Power> {
        let state = PowerState { ops: 0, cut_at, log_syncs: 0, cut_at_log_sync, cut: false };
        Arc::new(Power { state: Mutex::new(state) })
    }

    fn is_cut(&self) -> bool {
        self.state.lock().unwrap().cut
    }

    fn cut_now(&self) {
        self.state.lock().unwrap().cut = true;
    }
}

/// The log's end as the power loss would find it: parsed from the synced
/// bytes only (not from what the engine believes).
#[derive(Default)]
struct LogWatch {
    durable_lsn: AtomicU64,
    parsed_end: AtomicU64,
}

impl LogWatch {
    fn advance(&self, durable: &[u8]) {
        let mut at = self.parsed_end.load(Ordering::Relaxed) as usize;
        let mut lsn = self.durable_lsn.load(Ordering::Relaxed);
        while let Some((r, len)) = durable.get(at..).and_then(engine::log::Record::decode) {
            if r.lsn != lsn + 1 {
                break;
            }
            lsn = r.lsn;
            at += len;
        }
        self.parsed_end.store(at as u64, Ordering::Relaxed);
        self.durable_lsn.store(lsn, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct WalChecks {
    pages: AtomicU64,
    violations: Mutex<Vec<String>>,
}

enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// What the disk holds for sure (`durable`) and what was written since the
/// last sync (`pending`), which a power loss may or may not keep.
#[derive(Default)]
struct Shadow {
    durable: Vec<u8>,
    pending: Vec<Op>,
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(off, bytes) => {
            let end = *off as usize + bytes.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*off as usize..end].copy_from_slice(bytes);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

enum Role {
    Log(Arc<LogWatch>),
    Data(Arc<LogWatch>, Arc<WalChecks>),
}

/// A real file (which holds every write, as the kernel's cache would until
/// the power goes) and the shadow of what a power loss would leave of it.
/// After the cut, writes still reach the file, so the engine runs on
/// undisturbed, but no longer the shadow. `sync_data` marks writes durable
/// in the shadow only (the real `fdatasync` would only cost time).
struct ShadowFile {
    file: FileBacking,
    power: Arc<Power>,
    shadow: Mutex<Shadow>,
    role: Role,
}

impl ShadowFile {
    fn new(path: &Path, image: &[u8], power: &Arc<Power>, role: Role) -> Arc<ShadowFile> {
        std::fs::write(path, image).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
        if let Role::Log(watch) = &role {
            watch.advance(image);
        }
        Arc::new(ShadowFile {
            file: FileBacking::new(file, false),
            power: power.clone(),
            shadow: Mutex::new(Shadow { durable: image.to_vec(), pending: Vec::new() }),
            role,
        })
    }

    /// Counts one operation; true while the power is on (the operation
    /// that meets the cut is already lost). Called under the power lock.
    fn tick(&self, state: &mut PowerState, sync: bool) -> bool {
        state.ops += 1;
        if sync && matches!(self.role, Role::Log(_)) {
            state.log_syncs += 1;
            state.cut |= state.log_syncs >= state.cut_at_log_sync;
        }
        state.cut |= state.ops >= state.cut_at;
        !state.cut
    }

    /// The file as a power loss now leaves it: the durable bytes, then each
    /// later write's pages kept or dropped at random (`mode` 0: all
    /// dropped; 1: half kept; 2: half kept, half of those torn, only some
    /// of their 512-byte sectors landing).
    fn after_power_loss(&self, rng: &mut Rng, mode: u64) -> Vec<u8> {
        let shadow = self.shadow.lock().unwrap();
        let mut image = shadow.durable.clone();
        if mode == 0 {
            return image;
        }
        for op in &shadow.pending {
            let Op::Write(off, bytes) = op else {
                if rng.below(2) == 0 {
                    apply(&mut image, op);
                }
                continue;
            };
            let mut at = 0usize;
            while at < bytes.len() {
                let pos = *off as usize + at;
                let n = (PAGE_SIZE - pos % PAGE_SIZE).min(bytes.len() - at);
                if rng.below(2) == 0 {
                    if mode == 2 && rng.below(2) == 0 {
                        for s in (0..n).step_by(512) {
                            if rng.below(2) == 0 {
                                let e = (s + 512).min(n);
                                apply(&mut image, &Op::Write((pos + s) as u64, bytes[at + s..at + e].to_vec()));
                            }
                        }
                    } else {
                        apply(&mut image, &Op::Write(pos as u64, bytes[at..at + n].to_vec()));
                    }
                }
                at += n;
            }
        }
        image
    }

    fn durable(&self) -> Vec<u8> {
        self.shadow.lock().unwrap().durable.clone()
    }
}

impl Backing for ShadowFile {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        self.file.read_vectored_at(bufs, offset)
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<usize> {
        let mut power = self.power.state.lock().unwrap();
        let on = self.tick(&mut power, false);
        let n = self.file.write_vectored_at(bufs, offset)?;
        let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).take(n).collect();
        if let (true, Role::Data(watch, checks)) = (on, &self.role) {
            // The WAL rule, at the instant the page reaches the file (while
            // the power is on: after the cut, syncs no longer move the
            // shadow's durable end, and nothing written survives anyway).
            let durable = watch.durable_lsn.load(Ordering::SeqCst);
            for (i, page) in bytes.chunks(PAGE_SIZE).enumerate() {
                let lsn = engine::page::lsn(page);
                checks.pages.fetch_add(1, Ordering::Relaxed);
                if lsn > durable {
                    let index = offset / PAGE_SIZE as u64 + i as u64;
                    checks.violations.lock().unwrap().push(format!(
                        "data page {index} written with LSN {lsn} while the log is durable to {durable}"
                    ));
                }
            }
        }
        if on {
            self.shadow.lock().unwrap().pending.push(Op::Write(offset, bytes));
        }
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut power = self.power.state.lock().unwrap();
        if self.tick(&mut power, true) {
            let mut shadow = self.shadow.lock().unwrap();
            let Shadow { durable, pending } = &mut *shadow;
            for op in pending.drain(..) {
                apply(durable, &op);
            }
            if let Role::Log(watch) = &self.role {
                watch.advance(durable);
            }
        }
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut power = self.power.state.lock().unwrap();
        let on = self.tick(&mut power, false);
        self.file.set_len(len)?;
        if on {
            self.shadow.lock().unwrap().pending.push(Op::SetLen(len));
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
}

/// Totals over every seed and round of the power-loss test.
#[derive(Default, Debug)]
struct PowerTotals {
    cuts: u64,
    commits: u64,
    acked_commits: u64,
    acked_keys: u64,
    later_values: u64,
    acked_not_durable: u64,
    wal_pages: u64,
    wal_violations: Vec<String>,
    log_flushes: u64,
    log_skips: u64,
    rebuilt_pages: u64,
    torn_tails: u64,
    replayed: u64,
}

/// One life of the simulated machine: recover the files from `images`,
/// check the result against `expected`, commit from three threads until
/// the power goes at operation `cut_at`, and return the files a power loss
/// leaves, with what they must hold.
fn power_round(
    dir: &Path,
    images: (Vec<u8>, Vec<u8>),
    expected: &Expected,
    rng: &mut Rng,
    commits_per_thread: u64,
    totals: &mut PowerTotals,
) -> ((Vec<u8>, Vec<u8>), Expected) {
    // Half the cuts at any operation, half at a log sync.
    let power = if rng.below(2) == 0 {
        Power::new(1 + rng.below(commits_per_thread * 9), u64::MAX)
    } else {
        Power::new(u64::MAX, 1 + rng.below(commits_per_thread * 2))
    };
    let watch = Arc::new(LogWatch::default());
    let checks = Arc::new(WalChecks::default());
    let log = ShadowFile::new(&dir.join("log"), &images.1, &power, Role::Log(watch.clone()));
    let data = ShadowFile::new(&dir.join("data"), &images.0, &power, Role::Data(watch.clone(), checks.clone()));
    // 32 pages for a 256-page data file and the log: reclaim and the
    // flusher write data pages on their own.
    let cache = PageCache::builder().capacity(32 * PAGE_SIZE).build().unwrap();
    let store =
        Store::open(cache.open_backing(data.clone(), true).unwrap(), cache.open_backing(log.clone(), true).unwrap())
            .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    let r = store.recovery();
    totals.rebuilt_pages += r.rebuilt_pages as u64;
    totals.torn_tails += (r.torn_tail > 0) as u64;
    totals.replayed += r.replayed as u64;
    let recovered = store.entries().unwrap();
    let tally = expected.check(&recovered).unwrap_or_else(|e| panic!("after recovery: {e}"));
    totals.acked_commits += tally.acked_commits;
    totals.acked_keys += tally.acked_keys;
    totals.later_values += tally.later_values;

    const THREADS: u64 = 3;
    const KEYS: u64 = 300;
    let seeds: Vec<u64> = (0..THREADS).map(|_| rng.next()).collect();
    let per_thread: Vec<Vec<(u64, Commit, u64)>> = std::thread::scope(|s| {
        let workers: Vec<_> = seeds
            .iter()
            .enumerate()
            .map(|(t, &seed)| {
                let (store, power) = (&store, &power);
                s.spawn(move || {
                    let mut rng = Rng::new(seed);
                    let mut done = Vec::new();
                    for _ in 0..commits_per_thread {
                        // Keys t, t + 3, t + 6, ...: one thread per key.
                        let key = t as u64 + THREADS * rng.below(KEYS / THREADS);
                        let value: Option<Vec<u8>> = (rng.below(5) != 0).then(|| {
                            let len = 1 + rng.below(engine::page::MAX_VALUE as u64) as usize;
                            (0..len).map(|_| rng.next() as u8).collect()
                        });
                        let hash = value.as_deref().map(value_hash);
                        match store.commit(key, value.as_deref()) {
                            Ok(lsn) => {
                                // Acknowledged before the cut only if it
                                // returned before it.
                                let acked = !power.is_cut();
                                done.push((key, Commit { value: hash, acked }, lsn));
                                if !acked {
                                    break;
                                }
                            }
                            Err(e) => panic!("commit failed: {e}"),
                        }
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    // A machine that ran out of work still loses its power.
    power.cut_now();
    let durable_at_cut = watch.durable_lsn.load(Ordering::SeqCst);
    let mut next = Expected::next_round(&recovered);
    for (key, commit, lsn) in per_thread.into_iter().flatten() {
        totals.commits += 1;
        if commit.acked && lsn > durable_at_cut {
            totals.acked_not_durable += 1;
        }
        next.commits.entry(key).or_default().push(commit);
    }
    let stats = cache.stats();
    totals.log_flushes += stats.log_flushes;
    totals.log_skips += stats.log_skips;
    drop(store);
    drop(cache);
    totals.cuts += 1;
    totals.wal_pages += checks.pages.load(Ordering::Relaxed);
    totals.wal_violations.extend(checks.violations.lock().unwrap().drain(..));
    let mode = rng.below(3);
    ((data.after_power_loss(rng, mode), log.after_power_loss(rng, mode)), next)
}

#[test]
fn power_loss_keeps_every_acknowledged_commit() {
    // WALKV_POWER_SEEDS=N runs more (or fewer) seeds.
    let (seeds, rounds, commits) = if sanitizer() { (30, 2, 20) } else { (150, 3, 60) };
    let seeds = std::env::var("WALKV_POWER_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(seeds);
    let mut totals = PowerTotals::default();
    let started = Instant::now();
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(0xc0ffee + seed);
        let mut images = (Vec::new(), Vec::new());
        let mut expected = Expected::default();
        for round in 0..rounds {
            let before = totals.wal_violations.len();
            let (next_images, next) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                power_round(dir.path(), images.clone(), &expected, &mut rng, commits, &mut totals)
            }))
            .unwrap_or_else(|_| panic!("seed {seed} round {round} failed (see above)"));
            assert_eq!(totals.wal_violations.len(), before, "seed {seed} round {round}: {:?}", totals.wal_violations);
            images = next_images;
            expected = next;
        }
        // The last power loss, recovered and checked; then every page on
        // the disk as the engine left it after its checkpoint.
        let power = Power::new(u64::MAX, u64::MAX);
        let watch = Arc::new(LogWatch::default());
        let checks = Arc::new(WalChecks::default());
        let log = ShadowFile::new(&dir.path().join("log"), &images.1, &power, Role::Log(watch.clone()));
        let data = ShadowFile::new(&dir.path().join("data"), &images.0, &power, Role::Data(watch, checks.clone()));
        let cache = PageCache::builder().capacity(32 * PAGE_SIZE).build().unwrap();
        let store =
            Store::open(cache.open_backing(data.clone(), true).unwrap(), cache.open_backing(log, true).unwrap())
                .unwrap_or_else(|e| panic!("seed {seed}: final recovery failed: {e}"));
        let recovered = store.entries().unwrap();
        let tally = expected.check(&recovered).unwrap_or_else(|e| panic!("seed {seed}, final recovery: {e}"));
        totals.acked_commits += tally.acked_commits;
        totals.acked_keys += tally.acked_keys;
        totals.later_values += tally.later_values;
        let on_disk = engine::check_image(&data.durable(), store.durable_lsn())
            .unwrap_or_else(|e| panic!("seed {seed}, the data file after recovery: {e}"));
        assert_eq!(on_disk, recovered.len());
        assert!(checks.violations.lock().unwrap().is_empty(), "{:?}", checks.violations.lock().unwrap());
    }
    println!(
        "power loss: {seeds} seeds x {rounds} cuts = {} cuts in {:.1} s; {} commits, {} acknowledged before their cut, {} keys checked against their last ack ({} held a later unacknowledged value); recovery replayed {} records, cut {} torn log tails, rebuilt {} torn pages; WAL rule checked on {} data page writes; the cache asked the log to flush {} times and reclaim left {} pages for it; acknowledged but not durable: {}; WAL violations: {}",
        totals.cuts,
        started.elapsed().as_secs_f64(),
        totals.commits,
        totals.acked_commits,
        totals.acked_keys,
        totals.later_values,
        totals.replayed,
        totals.torn_tails,
        totals.rebuilt_pages,
        totals.wal_pages,
        totals.log_flushes,
        totals.log_skips,
        totals.acked_not_durable,
        totals.wal_violations.len(),
    );
    assert_eq!(totals.acked_not_durable, 0, "commits acknowledged before the log was durable past them");
    assert!(totals.wal_violations.is_empty(), "{:?}", totals.wal_violations);
    assert!(totals.log_flushes > 0, "the cache never had to flush the log: the WAL hook went untested");
}

// ------------------------------------------------------------ the verifier

#[test]
fn corrupt_page_is_refused_then_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let key = 42u64;
    let index = engine::bucket(key) as u64;
    {
        let cache = PageCache::new(1 << 20).unwrap();
        let store = Store::open_dir(&cache, dir.path()).unwrap();
        store.put(key, b"the answer").unwrap();
        store.checkpoint().unwrap();
    }
    // Flip a bit of the record behind the cache's back.
    let path = dir.path().join("data");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[index as usize * PAGE_SIZE + PAGE_SIZE - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    // Through a file with the verifier: refused, and not cached as good.
    let cache = PageCache::new(1 << 20).unwrap();
    let data = cache.open(&path).unwrap();
    data.set_read_verifier(Arc::new(engine::page::verify));
    let mut page = vec![0u8; PAGE_SIZE];
    for _ in 0..2 {
        let err = data.read_exact_at(&mut page, index * PAGE_SIZE as u64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
    assert!(cache.stats().verify_failures >= 2);
    drop(data);
    drop(cache);

    // Recovery rebuilds the page from the log.
    let cache = PageCache::new(1 << 20).unwrap();
    let store = Store::open_dir(&cache, dir.path()).unwrap();
    assert_eq!(store.recovery().rebuilt_pages, 1);
    assert_eq!(store.get(key).unwrap().as_deref(), Some(&b"the answer"[..]));
}

#[test]
fn commands() {
    let exe = walkv_exe();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(exe).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(run(&["put", d, "7", "seven"]), (Some(0), "ok lsn 1\n".into()));
    assert_eq!(run(&["get", d, "7"]), (Some(0), "seven\n".into()));
    assert_eq!(run(&["del", d, "7"]).0, Some(0));
    assert_eq!(run(&["get", d, "7"]).0, Some(1));
    let (code, out) = run(&["check", d]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ok: 2 log records"), "{out}");
    assert_eq!(run(&["frobnicate", d]).0, Some(2));
}
