//! Integration tests of the `cat` and `dd` examples: both are built once with
//! `cargo build --example cat --example dd --example fincore`, run on
//! generated inputs, and compared with coreutils (`/bin/cat`, `/bin/dd`):
//! output bytes, exit status and diagnostics (for dd: the `records in/out`
//! lines and the bytes figure of the last line, not the time or the rate).
//! The `fincore` example is built with them for its `--help`/`--version` tests.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tempfile::TempDir;

mod common;
use common::json_string_field;

const REAL_CAT: &str = "/bin/cat";
const REAL_DD: &str = "/bin/dd";
const MIB: usize = 1 << 20;

// ----------------------------------------------------------------- building

struct Examples {
    cat: PathBuf,
    dd: PathBuf,
    fincore: PathBuf,
}

fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(build_examples)
}

fn build_examples() -> Examples {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO"))
        .args(["build", "--example", "cat", "--example", "dd", "--example", "fincore"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(manifest)
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo");
    assert!(out.status.success(), "cargo build --example cat --example dd --example fincore failed");
    // Cargo tells where it put the executables; fall back on the default
    // layout (`$CARGO_TARGET_DIR` or `target/`, then `debug/examples/`).
    let (mut cat, mut dd, mut fincore) = (None, None, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        if let Some(exe) = json_string_field(line, "executable") {
            let exe = PathBuf::from(exe);
            match exe.file_name().and_then(|n| n.to_str()) {
                Some("cat") => cat = Some(exe),
                Some("dd") => dd = Some(exe),
                Some("fincore") => fincore = Some(exe),
                _ => {}
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { manifest.join(t) })
        .unwrap_or_else(|| manifest.join("target"));
    let dir = target.join("debug").join("examples");
    let cat = cat.unwrap_or_else(|| dir.join("cat"));
    let dd = dd.unwrap_or_else(|| dir.join("dd"));
    let fincore = fincore.unwrap_or_else(|| dir.join("fincore"));
    assert!(cat.is_file(), "no cat example at {}", cat.display());
    assert!(dd.is_file(), "no dd example at {}", dd.display());
    assert!(fincore.is_file(), "no fincore example at {}", fincore.display());
    Examples { cat, dd, fincore }
}

/// Run `f` on every item, a few at a time: the tools mostly wait (process
/// start-up and exit, I/O), so this shortens the wall time on two cores.
fn par_each<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                f(item);
            });
        }
    });
}

fn have(tool: &str) -> bool {
    if Path::new(tool).exists() {
        true
    } else {
        println!("skipping: {tool} is missing");
        false
    }
}

// ------------------------------------------------------------------- inputs

fn xorshift_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Text-like bytes (letters, so that lcase/ucase change something).
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    xorshift_bytes(len, seed)
        .into_iter()
        .map(|b| match b % 64 {
            0..=25 => b'a' + b % 26,
            26..=51 => b'A' + b % 26,
            52..=61 => b' ',
            _ => b'\n',
        })
        .collect()
}

/// A sparse file of `len` bytes: data islands between holes, trailing hole.
fn write_holes(path: &Path, len: u64) -> Vec<u8> {
    let file = File::create(path).expect("create holes file");
    file.set_len(len).expect("set_len");
    let islands = [(0u64, 100usize), (len / 4 + 7, 5000), (len / 2 + 4093, 10), (len * 3 / 4, 4097)];
    for (i, &(at, n)) in islands.iter().enumerate() {
        let n = n.min((len - at) as usize);
        file.write_all_at(&xorshift_bytes(n, 77 + i as u64), at).expect("write island");
    }
    drop(file);
    fs::read(path).expect("read holes file")
}

/// Inputs by name, written into `dir`.
fn make_input(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let data = match name {
        "empty" => Vec::new(),
        "one" => b"x".to_vec(),
        "p4095" => text_bytes(4095, 1),
        "p4096" => text_bytes(4096, 2),
        "p4097" => text_bytes(4097, 3),
        "odd" => text_bytes(10_001, 4),
        "holes" => return write_holes(&path, 40_000),
        "bigholes" => return write_holes(&path, 3 * MIB as u64 + 123),
        "big" => xorshift_bytes(10 * MIB, 5),
        other => panic!("no input named {other}"),
    };
    fs::write(&path, &data).expect("write input");
    data
}

// ---------------------------------------------------------------------- cat

fn run_cat(real: bool, dir: &Path, args: &[&str], stdin: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = if real { Command::new(REAL_CAT) } else { Command::new(&examples().cat) };
    cmd.arg0("cat").args(args).current_dir(dir).env("LC_ALL", "C").env_remove("PAGE_CACHE_BYTES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    match stdin {
        Some(p) => cmd.stdin(File::open(dir.join(p)).expect("open stdin file")),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().expect("run cat")
}

fn check_cat(dir: &Path, args: &[&str], stdin: Option<&Path>, env: &[(&str, &str)]) {
    check_cat_with(dir, &[], args, stdin, env);
}

/// Compare `cat ARGS` with the example's `cat MINE_ONLY ARGS`.
fn check_cat_with(dir: &Path, mine_only: &[&str], args: &[&str], stdin: Option<&Path>, env: &[(&str, &str)]) {
    let real = run_cat(true, dir, args, stdin, env);
    let mine_args: Vec<&str> = mine_only.iter().chain(args).copied().collect();
    let mine = run_cat(false, dir, &mine_args, stdin, env);
    let mine_err = String::from_utf8_lossy(&mine.stderr);
    assert!(!mine_err.contains("panicked"), "cat {args:?} panicked: {mine_err}");
    assert!(
        real.stdout == mine.stdout,
        "cat {args:?}: stdout differs ({} vs {} bytes); status {:?}, stderr {mine_err}",
        real.stdout.len(),
        mine.stdout.len(),
        mine.status.code()
    );
    assert_eq!(real.status.code(), mine.status.code(), "cat {args:?}: exit status");
    assert_eq!(String::from_utf8_lossy(&real.stderr), mine_err, "cat {args:?}: stderr");
}

#[test]
fn cat_small_files_one_by_one_and_together() {
    if !have(REAL_CAT) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    let names = ["empty", "one", "p4095", "p4096", "p4097", "odd", "holes"];
    for name in names {
        make_input(dir, name);
        check_cat(dir, &[name], None, &[]);
    }
    check_cat(dir, &names, None, &[]);
    check_cat(dir, &["p4097", "p4097", "one", "empty", "p4095"], None, &[]);
    // A cache smaller than the data: pages are evicted and read again.
    check_cat(dir, &names, None, &[("PAGE_CACHE_BYTES", "65536")]);
    check_cat_with(dir, &["--cache-size=32768"], &["holes", "p4097"], None, &[]);
    check_cat_with(dir, &["-u", "--cache-size=1M"], &names, None, &[]);
}

#[test]
fn cat_errors_and_stdin() {
    if !have(REAL_CAT) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    for name in ["one", "p4097", "odd"] {
        make_input(dir, name);
    }
    fs::create_dir(dir.join("subdir")).expect("mkdir");
    check_cat(dir, &["one", "missing", "p4097"], None, &[]);
    check_cat(dir, &["missing"], None, &[]);
    check_cat(dir, &["missing", "also-missing", "one"], None, &[]);
    check_cat(dir, &["one", "subdir", "p4097"], None, &[]);
    check_cat(dir, &["one/x"], None, &[]);
    // Standard input: no operand, `-`, and `-` between files.
    check_cat(dir, &[], Some(Path::new("odd")), &[]);
    check_cat(dir, &["-"], Some(Path::new("odd")), &[]);
    check_cat(dir, &["one", "-", "p4097"], Some(Path::new("odd")), &[]);
    check_cat(dir, &["one", "-", "-", "one"], Some(Path::new("p4097")), &[]);
    // Non-regular files are streamed.
    if Path::new("/dev/null").exists() {
        check_cat(dir, &["one", "/dev/null", "one"], None, &[]);
    }
}

#[test]
fn cat_large_files() {
    if !have(REAL_CAT) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    make_input(dir, "big");
    make_input(dir, "bigholes");
    make_input(dir, "p4097");
    check_cat(dir, &["big"], None, &[]);
    check_cat(dir, &["bigholes", "p4097", "bigholes"], None, &[]);
    // A cache much smaller than the file.
    check_cat(dir, &["big"], None, &[("PAGE_CACHE_BYTES", "1M")]);
}

#[test]
fn cat_broken_pipe_is_quiet() {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    make_input(dir, "bigholes");
    let mut child = Command::new(&examples().cat)
        .arg("bigholes")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cat");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = [0u8; 10];
    stdout.read_exact(&mut head).expect("read head");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "exit status after EPIPE");
    assert!(out.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

// ----------------------------------------------------------------------- dd

#[derive(Clone, Copy)]
struct DdCase<'a> {
    args: &'a [&'a str],
    /// Existing output file contents before the run.
    pre: Option<&'a [u8]>,
    /// Give the input as standard input (a regular file) instead of `if=`.
    stdin: bool,
    /// Leave the output on standard output instead of `of=`.
    stdout: bool,
    env: &'a [(&'a str, &'a str)],
}

impl<'a> DdCase<'a> {
    fn new(args: &'a [&'a str]) -> Self {
        DdCase { args, pre: None, stdin: false, stdout: false, env: &[] }
    }
}

struct DdRun {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    out_file: Option<Vec<u8>>,
}

fn run_dd(real: bool, dir: &Path, input: &Path, case: DdCase<'_>) -> DdRun {
    fs::create_dir(dir).expect("mkdir");
    fs::copy(input, dir.join("in")).expect("copy input");
    if let Some(pre) = case.pre {
        fs::write(dir.join("out"), pre).expect("write pre-existing output");
    }
    let mut cmd = if real { Command::new(REAL_DD) } else { Command::new(&examples().dd) };
    cmd.arg0("dd").current_dir(dir).env("LC_ALL", "C").env_remove("PAGE_CACHE_BYTES");
    for (k, v) in case.env {
        cmd.env(k, v);
    }
    if case.stdin {
        cmd.stdin(File::open(dir.join("in")).expect("open input"));
    } else {
        cmd.arg("if=in").stdin(Stdio::null());
    }
    if !case.stdout {
        cmd.arg("of=out");
    }
    cmd.args(case.args);
    let out = cmd.output().expect("run dd");
    DdRun {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        out_file: fs::read(dir.join("out")).ok(),
    }
}

/// Stderr without the time and rate of the last line.
fn strip_timing(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| match l.find(" copied, ") {
            Some(i) => &l[..i + " copied".len()],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_dd(input: &Path, case: DdCase<'_>) {
    let tmp = TempDir::new().expect("tempdir");
    let (real, mine) = std::thread::scope(|s| {
        let real = s.spawn(|| run_dd(true, &tmp.path().join("real"), input, case));
        let mine = run_dd(false, &tmp.path().join("mine"), input, case);
        (real.join().expect("real dd thread"), mine)
    });
    let what = format!(
        "dd {:?} on {} ({} bytes){}",
        case.args,
        input.file_name().unwrap_or_default().to_string_lossy(),
        fs::metadata(input).map(|m| m.len()).unwrap_or(0),
        if case.pre.is_some() { " onto an existing output" } else { "" }
    );
    assert!(!mine.stderr.contains("panicked"), "{what} panicked: {}", mine.stderr);
    assert_eq!(real.code, mine.code, "{what}: exit status; stderr {}", mine.stderr);
    assert_eq!(strip_timing(&real.stderr), strip_timing(&mine.stderr), "{what}: stderr");
    match (&real.out_file, &mine.out_file) {
        (Some(r), Some(m)) => assert!(
            r == m,
            "{what}: output file differs ({} vs {} bytes, first difference at {:?})",
            r.len(),
            m.len(),
            r.iter().zip(m.iter()).position(|(a, b)| a != b)
        ),
        (r, m) => assert_eq!(r.is_some(), m.is_some(), "{what}: output file existence"),
    }
    assert!(real.stdout == mine.stdout, "{what}: stdout differs");
}

/// Operand sets that are run against every small input.
const MATRIX: &[&[&str]] = &[
    &[],
    &["bs=1K"],
    &["bs=4096"],
    &["bs=5000"],
    &["ibs=1000"],
    &["obs=1000"],
    &["ibs=1000", "obs=3000"],
    &["ibs=4096", "obs=512"],
    &["ibs=100", "bs=1K"],
    &["bs=1K", "obs=100"],
    &["count=3"],
    &["bs=1000", "count=2"],
    &["skip=2"],
    &["seek=2"],
    &["bs=100", "skip=3", "count=4", "seek=5"],
    &["ibs=100", "obs=300", "skip=3", "count=7", "seek=2"],
    &["conv=sync"],
    &["ibs=3000", "conv=sync"],
    &["bs=3000", "conv=sync"],
    &["bs=3000", "conv=sync", "count=1"],
    &["ibs=3000", "obs=1000", "conv=sync,noerror"],
    &["conv=noerror"],
    &["conv=fsync"],
    &["conv=fdatasync"],
    &["conv=excl"],
    &["conv=nocreat"],
    &["seek=300"],
    &["skip=100"],
    &["bs=1K", "skip=4", "count=1"],
    &["iflag=skip_bytes", "skip=1000"],
    &["iflag=count_bytes", "count=1001"],
    &["iflag=skip_bytes,count_bytes", "skip=77", "count=2049"],
    &["bs=1000", "iflag=skip_bytes,count_bytes", "skip=77", "count=2049"],
    &["oflag=seek_bytes", "seek=1234"],
    &["oflag=seek_bytes", "seek=700", "obs=300"],
    &["count=0"],
    &["count=0", "seek=3"],
    &["count=0", "seek=3", "oflag=seek_bytes"],
    &["bs=2x512"],
    &["bs=1kB"],
    &["count=1kB"],
    &["bs=1MiB"],
    &["bs=1M"],
    &["bs=3c", "count=5w"],
    &["bs=2w"],
    &["bs=1b", "count=3"],
    &["bs=1", "count=1Kx2"],
    &["skip=1KiB"],
    &["seek=1000B"],
    &["count=1000B", "bs=300"],
    &["count=0x5"],
    &["iseek=1", "oseek=1"],
    &["cbs=10"],
    &["iflag=fullblock", "bs=4000"],
    &["status=noxfer"],
    &["status=none"],
    &["status=progress"],
    &["status=progress", "conv=fsync"],
    &["status=none", "skip=100000"],
    &["conv=lcase"],
    &["conv=ucase", "bs=100"],
    &["conv=swab"],
    &["conv=swab", "bs=333"],
    &["conv=sparse"],
    &["conv=sparse", "bs=1K", "seek=2"],
    &["oflag=append"],
];

fn dd_matrix(inputs: &[&str]) {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let mut jobs = Vec::new();
    for &name in inputs {
        make_input(tmp.path(), name);
        jobs.extend(MATRIX.iter().map(|args| (tmp.path().join(name), *args)));
    }
    par_each(&jobs, |(input, args)| check_dd(input, DdCase::new(args)));
}

#[test]
fn dd_matrix_tiny_inputs() {
    dd_matrix(&["empty", "one"]);
}

#[test]
fn dd_matrix_page_sized_inputs() {
    dd_matrix(&["p4095", "p4096"]);
}

#[test]
fn dd_matrix_odd_inputs() {
    dd_matrix(&["p4097", "holes"]);
}

#[test]
fn dd_onto_existing_output() {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let pre = xorshift_bytes(20_000, 99);
    let cases: &[&[&str]] = &[
        &[],
        &["conv=notrunc"],
        &["conv=notrunc", "seek=3"],
        &["conv=notrunc", "bs=1000", "count=2", "seek=1"],
        &["conv=notrunc", "seek=100"],
        &["seek=3"],
        &["seek=3", "oflag=seek_bytes"],
        &["seek=3", "oflag=seek_bytes", "obs=2"],
        &["oflag=append", "conv=notrunc"],
        &["oflag=append", "conv=notrunc", "bs=1000", "count=1"],
        &["oflag=append"],
        &["oflag=append", "seek=2"],
        &["conv=sparse,notrunc"],
        &["conv=sparse,notrunc", "bs=1000"],
        &["count=0"],
        &["count=0", "conv=notrunc"],
        &["count=0", "seek=5"],
        &["conv=excl"],
        &["conv=nocreat"],
        &["conv=nocreat,notrunc", "skip=1"],
        &["conv=sync,notrunc", "ibs=3000", "obs=7000"],
    ];
    let mut jobs = Vec::new();
    for name in ["one", "p4097", "holes"] {
        make_input(tmp.path(), name);
        jobs.extend(cases.iter().map(|args| (tmp.path().join(name), *args)));
    }
    par_each(&jobs, |(input, args)| {
        let mut case = DdCase::new(args);
        case.pre = Some(&pre);
        check_dd(input, case);
    });
}

#[test]
fn dd_standard_streams() {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let cases: &[&[&str]] = &[
        &[],
        &["bs=1000"],
        &["ibs=100", "obs=333"],
        &["bs=100", "skip=3", "count=5"],
        &["skip=100"],
        &["conv=sync", "ibs=3000"],
        &["iflag=skip_bytes,count_bytes", "skip=5", "count=4000"],
        &["status=none"],
    ];
    let mut jobs = Vec::new();
    for name in ["p4097", "odd"] {
        make_input(tmp.path(), name);
        jobs.extend(cases.iter().map(|args| (tmp.path().join(name), *args)));
    }
    par_each(&jobs, |(input, args)| {
        // stdin a regular file, output to of=; then stdin to stdout (a pipe).
        let mut case = DdCase::new(args);
        case.stdin = true;
        check_dd(input, case);
        case.stdout = true;
        check_dd(input, case);
        // if= to stdout.
        let mut case = DdCase::new(args);
        case.stdout = true;
        check_dd(input, case);
    });
}

#[test]
fn dd_large_file() {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    make_input(tmp.path(), "big");
    make_input(tmp.path(), "bigholes");
    let big = tmp.path().join("big");
    let cases: &[&[&str]] = &[
        &["bs=1M"],
        &["bs=64K", "count=50", "skip=3", "seek=7"],
        &["ibs=64K", "obs=1M", "skip=5"],
        &["ibs=1M", "obs=3000", "count=3"],
        &["bs=100000", "conv=sync"],
        &["bs=1M", "iflag=skip_bytes,count_bytes", "skip=12345", "count=5000000"],
        &["bs=1M", "oflag=seek_bytes", "seek=4097", "count=2"],
        &["bs=1M", "skip=11"],
    ];
    par_each(cases, |args| check_dd(&big, DdCase::new(args)));
    // The default 512-byte blocks, and a cache much smaller than the data.
    let mut case = DdCase::new(&["count=8000"]);
    case.env = &[("PAGE_CACHE_BYTES", "1M")];
    check_dd(&big, case);
    let mut case = DdCase::new(&["bs=256K"]);
    case.env = &[("PAGE_CACHE_BYTES", "1M")];
    check_dd(&tmp.path().join("bigholes"), case);
    // Large pages on both sides (dd writes with 4 KiB pages unless told).
    let forced: &[(&[&str], &str)] = &[
        (&["bs=1M"], "65536"),
        (&["bs=1000", "skip=7", "seek=3"], "65536"),
        (&["ibs=64K", "obs=3000", "seek=5"], "16384"),
        (&["bs=64K", "conv=sparse"], "65536"),
    ];
    for &(args, page_size) in forced {
        let env = [("PAGE_CACHE_PAGE_SIZE", page_size)];
        let mut case = DdCase::new(args);
        case.env = &env;
        check_dd(&big, case);
    }
    let mut case = DdCase::new(&["bs=64K", "conv=sparse"]);
    case.env = &[("PAGE_CACHE_PAGE_SIZE", "65536")];
    check_dd(&tmp.path().join("bigholes"), case);
}

/// dd with its input as its output (`if=f of=f`): one file, so one page
/// size in the cache (a second open with another size is refused). The
/// file's bytes, the status and the messages are compared with coreutils.
#[test]
fn dd_input_is_output() {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let data = xorshift_bytes(300_000, 7);
    let cases: &[&[&str]] = &[
        &["conv=notrunc"],
        &["conv=notrunc", "bs=64K", "skip=1", "seek=2", "count=2"],
        &["conv=notrunc", "bs=1000", "skip=3"],
        &["conv=notrunc", "bs=4096", "seek=1", "count=3"],
        &["bs=4K", "seek=1", "count=3"],
        &[],
    ];
    par_each(cases, |&args| {
        let run = |real: bool| {
            let dir = tmp.path().join(format!("{}{}", if real { "real" } else { "mine" }, args.join(" ")));
            fs::create_dir(&dir).expect("mkdir");
            fs::write(dir.join("f"), &data).expect("write f");
            let mut cmd = if real { Command::new(REAL_DD) } else { Command::new(&examples().dd) };
            cmd.arg0("dd").current_dir(&dir).env("LC_ALL", "C").env_remove("PAGE_CACHE_BYTES");
            let out = cmd.args(["if=f", "of=f"]).args(args).stdin(Stdio::null()).output().expect("run dd");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.code(), strip_timing(&stderr), fs::read(dir.join("f")).expect("read f"))
        };
        let (real, mine) = (run(true), run(false));
        assert!(!mine.1.contains("panicked"), "dd if=f of=f {args:?} panicked: {}", mine.1);
        assert_eq!(real.0, mine.0, "dd if=f of=f {args:?}: exit status; stderr {}", mine.1);
        assert_eq!(real.1, mine.1, "dd if=f of=f {args:?}: stderr");
        assert!(real.2 == mine.2, "dd if=f of=f {args:?}: file differs ({} vs {} bytes)", real.2.len(), mine.2.len());
    });
}

#[test]
fn dd_bad_operands() {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    make_input(tmp.path(), "p4097");
    let input = tmp.path().join("p4097");
    let cases: &[&[&str]] = &[
        &["foo"],
        &["foo=1"],
        &["bs=x1"],
        &["bs=0"],
        &["ibs=0"],
        &["obs=-5"],
        &["count=1x"],
        &["count=2xB"],
        &["bs=B"],
        &["bs=1g"],
        &["bs=1k2"],
        &["bs="],
        &["skip=99999999999999999999"],
        &["count=9223372036854775808"],
        &["bs=1Ex16"],
        &["conv=foo"],
        &["conv=notrunc,"],
        &["conv=excl,nocreat"],
        &["conv=lcase,ucase"],
        &["iflag=foo"],
        &["oflag=fullblock"],
        &["status=foo"],
        &["status="],
        &["bs=1K", "if"],
    ];
    for args in cases {
        for side in ["real", "mine"] {
            let dir = tmp.path().join(format!("bad-{side}"));
            let run = run_dd(side == "real", &dir, &input, DdCase::new(args));
            assert_eq!(run.code, Some(1), "{side} dd {args:?}: exit status");
            assert!(run.stderr.starts_with("dd: "), "{side} dd {args:?}: stderr {:?}", run.stderr);
            assert!(!run.stderr.contains("panicked"), "dd {args:?} panicked");
            assert!(run.out_file.is_none(), "{side} dd {args:?} created of=");
            fs::remove_dir_all(&dir).expect("clean up");
        }
    }
    // A missing input: nothing is created either.
    let dir = tmp.path().join("missing");
    fs::create_dir(&dir).expect("mkdir");
    for bin in [Path::new(REAL_DD), examples().dd.as_path()] {
        let out = Command::new(bin)
            .arg0("dd")
            .args(["if=nope", "of=out"])
            .current_dir(&dir)
            .env("LC_ALL", "C")
            .output()
            .expect("run dd");
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "dd: failed to open 'nope': No such file or directory\n");
        assert!(!dir.join("out").exists());
    }
}

#[test]
fn dd_never_panics_on_odd_operands() {
    let tmp = TempDir::new().expect("tempdir");
    make_input(tmp.path(), "one");
    let odd: &[&[&str]] = &[
        &["bs=1E"],
        &["bs=9223372036854775806"],
        &["seek=9223372036854775807", "conv=notrunc"],
        &["seek=9223372036854775807"],
        &["skip=9223372036854775807"],
        &["skip=4611686018427387904", "bs=4"],
        &["count=9223372036854775807", "bs=2"],
        &["bs=0x0x0"],
        &["bs= 5"],
        &["bs=+5"],
        &["--"],
        &["-x"],
        &["--bogus"],
        &["if="],
        &["of="],
        &["conv=ascii"],
        &["iflag=nofollow"],
    ];
    for args in odd {
        let dir = tmp.path().join("odd");
        let run = run_dd(false, &dir, &tmp.path().join("one"), DdCase::new(args));
        assert!(!run.stderr.contains("panicked"), "dd {args:?} panicked: {}", run.stderr);
        assert!(matches!(run.code, Some(0 | 1)), "dd {args:?}: {:?}", run.code);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}

// ------------------------------------------------------ --help and --version

/// Run `bin` as `name ARGS` in `dir`, standard input empty.
fn run_tool(bin: &Path, name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg0(name).args(args).current_dir(dir).env("LC_ALL", "C").env_remove("PAGE_CACHE_BYTES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {name}: {e}"))
}

#[test]
fn tools_answer_version() {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    let ex = examples();
    for (name, bin) in [("cat", &ex.cat), ("dd", &ex.dd), ("fincore", &ex.fincore)] {
        let out = run_tool(bin, name, dir, &["--version"], &[]);
        assert_eq!(out.status.code(), Some(0), "{name} --version: exit status");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{name} (page-cache) {}\n", env!("CARGO_PKG_VERSION")),
            "{name} --version: stdout"
        );
        assert!(out.stderr.is_empty(), "{name} --version: stderr {}", String::from_utf8_lossy(&out.stderr));
    }
    let version = format!("(page-cache) {}\n", env!("CARGO_PKG_VERSION"));
    // As with getopt: an option anywhere before `--`, whatever the operands.
    for args in [&["bs=x", "--version"][..], &["if=nope", "of=out", "--version"], &["--version", "--bogus"]] {
        let out = run_tool(&ex.dd, "dd", dir, args, &[]);
        assert_eq!(out.status.code(), Some(0), "dd {args:?}: exit status");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("dd {version}"), "dd {args:?}: stdout");
        assert!(!dir.join("out").exists(), "dd {args:?} created of=");
    }
    for args in [&["nope", "--version"][..], &["-u", "--version"], &["--version", "--bogus"]] {
        let out = run_tool(&ex.cat, "cat", dir, args, &[]);
        assert_eq!(out.status.code(), Some(0), "cat {args:?}: exit status");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("cat {version}"), "cat {args:?}: stdout");
    }
    // The environment is not looked at before the options.
    let out = run_tool(&ex.cat, "cat", dir, &["--version"], &[("PAGE_CACHE_BYTES", "bogus")]);
    assert_eq!(out.status.code(), Some(0), "PAGE_CACHE_BYTES=bogus cat --version: exit status");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("cat {version}"));
    let out = run_tool(&ex.dd, "dd", dir, &["--version"], &[("PAGE_CACHE_BYTES", "bogus")]);
    assert_eq!(out.status.code(), Some(0), "PAGE_CACHE_BYTES=bogus dd --version: exit status");
}

#[test]
fn tools_answer_help() {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    let ex = examples();
    let cases: &[(&str, &Path, &[&str])] = &[
        ("fincore", &ex.fincore, &["--help"]),
        ("fincore", &ex.fincore, &["-h"]),
        ("fincore", &ex.fincore, &["--preload", "--help", "nope"]),
        ("cat", &ex.cat, &["--help"]),
        ("cat", &ex.cat, &["nope", "--help"]),
        ("dd", &ex.dd, &["--help"]),
        ("dd", &ex.dd, &["if=nope", "--help"]),
    ];
    for &(name, bin, args) in cases {
        let out = run_tool(bin, name, dir, args, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name} {args:?}: exit status");
        assert!(stdout.starts_with(&format!("Usage: {name} ")), "{name} {args:?}: stdout {stdout}");
        assert!(stdout.contains("--version"), "{name} {args:?}: usage without --version: {stdout}");
        assert!(out.stderr.is_empty(), "{name} {args:?}: stderr {}", String::from_utf8_lossy(&out.stderr));
    }
    // Without a file, fincore still prints its usage line as an error.
    let out = run_tool(&ex.fincore, "fincore", dir, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "fincore: exit status");
    assert!(out.stdout.is_empty(), "fincore: stdout {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: fincore "), "fincore: stderr");
}

#[test]
fn cat_option_errors_like_coreutils() {
    if !have(REAL_CAT) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path();
    make_input(dir, "one");
    // After `--`, `--version` and `--help` are file names.
    check_cat(dir, &["--", "--version"], None, &[]);
    check_cat(dir, &["one", "--", "--help", "one"], None, &[]);
    check_cat(dir, &["--version=1"], None, &[]);
    check_cat(dir, &["--help=", "one"], None, &[]);
    check_cat(dir, &["--bogus", "--version"], None, &[]);
}

#[test]
fn dd_option_errors_like_coreutils() {
    if !have(REAL_DD) {
        return;
    }
    let tmp = TempDir::new().expect("tempdir");
    make_input(tmp.path(), "one");
    let input = tmp.path().join("one");
    let cases: &[&[&str]] = &[
        &["--", "--version"],
        &["--", "--help"],
        &["--version=1"],
        &["--help=x"],
        &["--bogus", "--version"],
        // Options are looked at before operands, as getopt does.
        &["bs=x", "--bogus"],
        &["foo", "-x"],
    ];
    for args in cases {
        check_dd(&input, DdCase::new(args));
    }
}
