//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

use page_cache::{PageCache, Stats, PAGE_SIZE};

/// Waits until the cache's background threads (readahead workers, kswapd,
/// the flusher) have gone quiet, and leaves enough frames free that kswapd's
/// periodic pass has nothing to do, so `check_invariants` sees a still cache.
#[allow(dead_code)] // not every test crate that shares this module needs it
pub fn settle(cache: &PageCache) {
    fn quiet(cache: &PageCache) {
        let key = |s: Stats| (s.free_pages, s.cached_pages, s.evictions, s.read_calls, s.write_calls, s.dirty_pages);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = key(cache.stats());
        let mut stable = 0;
        while stable < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            let now = key(cache.stats());
            if now == last {
                stable += 1;
            } else {
                stable = 0;
                last = now;
            }
        }
    }
    quiet(cache);
    let s = cache.stats();
    // Above any high watermark the cache uses (5/4096 of the frames + 32).
    let want_free = (s.total_pages / 32 + 8).min(s.total_pages);
    if s.free_pages < want_free {
        cache.shrink((want_free - s.free_pages) as usize * PAGE_SIZE);
    }
    quiet(cache);
}

/// Runs a model test's cases: 48 of them, shrinking a failure for at most
/// 15 s, with no failure file (this crate keeps its regressions in the
/// tests themselves). Panics with the minimal failing case.
#[allow(dead_code)] // not every test crate that shares this module has a model test
pub fn run_model_cases<S: proptest::strategy::Strategy>(
    strategy: &S,
    case: impl Fn(S::Value) -> Result<(), proptest::test_runner::TestCaseError>,
) {
    let config = proptest::test_runner::Config {
        cases: 48,
        max_shrink_iters: 1000,
        max_shrink_time: 15_000,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    };
    if let Err(e) = proptest::test_runner::TestRunner::new(config).run(strategy, case) {
        panic!("{e}");
    }
}

/// A tmpfs of `size` (as mount's `size=` option) mounted at `dir` for as long
/// as the guard lives (unmounted on drop, also when the test panics); `None`
/// when it cannot be mounted (not root).
#[allow(dead_code)] // not every test crate that shares this module mounts one
pub fn tmpfs(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).ok()?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Tmpfs(dir.to_path_buf()))
}

/// A mounted tmpfs; unmounts on drop.
#[allow(dead_code)]
pub struct Tmpfs(pub std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// The string value of `"key":"..."` in one line of Cargo's JSON messages.
#[allow(dead_code)] // for the tests that build examples
pub fn json_string_field(line: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":\"");
    let start = line.find(&pattern)? + pattern.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    None
}
