//! The records and progress report: the `records in`/`records out` lines,
//! the bytes-copied line and `status=progress`, with gnulib's
//! `human_readable` figures and C's `%g`.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::operands::Status;

pub(crate) struct Stats {
    pub(crate) r_full: u64,
    pub(crate) r_partial: u64,
    pub(crate) w_full: u64,
    pub(crate) w_partial: u64,
    pub(crate) w_bytes: u64,
    pub(crate) status: Status,
    pub(crate) start: Instant,
    pub(crate) progress_len: usize,
    /// `w_bytes` at the last report, if any.
    pub(crate) reported_w_bytes: Option<u64>,
}

impl Stats {
    pub(crate) fn print_xfer(&mut self, progress: bool) {
        let elapsed = self.start.elapsed();
        let secs = elapsed.as_secs_f64();
        let si = human(self.w_bytes, 1000);
        let iec = human(self.w_bytes, 1024);
        let rate = if elapsed > Duration::ZERO {
            format!("{}/s", human_rate(self.w_bytes as f64 / secs))
        } else {
            "Infinity B/s".to_string()
        };
        let time = if progress { format!("{secs:.0} s") } else { format!("{} s", format_g(secs)) };
        let lacks_prefix = |s: &str| s.as_bytes().get(s.len().wrapping_sub(2)) == Some(&b' ');
        let line = if lacks_prefix(&si) {
            let unit = if self.w_bytes == 1 { "byte" } else { "bytes" };
            format!("{} {unit} copied, {time}, {rate}", self.w_bytes)
        } else if lacks_prefix(&iec) {
            format!("{} bytes ({si}) copied, {time}, {rate}", self.w_bytes)
        } else {
            format!("{} bytes ({si}, {iec}) copied, {time}, {rate}", self.w_bytes)
        };
        let mut err = io::stderr().lock();
        if progress {
            let pad = self.progress_len.saturating_sub(line.len());
            let _ = write!(err, "\r{line}{:pad$}", "");
            self.progress_len = line.len();
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.reported_w_bytes = Some(self.w_bytes);
    }

    pub(crate) fn print(&mut self) {
        if self.status == Status::None {
            return;
        }
        let mut err = io::stderr().lock();
        if self.progress_len > 0 {
            let _ = writeln!(err);
            self.progress_len = 0;
        }
        let _ = write!(
            err,
            "{}+{} records in\n{}+{} records out\n",
            self.r_full, self.r_partial, self.w_full, self.w_partial
        );
        drop(err);
        if self.status == Status::Noxfer {
            return;
        }
        self.print_xfer(false);
    }
}

/// gnulib `human_readable` with autoscale, round-to-nearest, a space before
/// the unit, SI prefixes and a `B` (`iB` for base 1024).
pub(crate) fn human(n: u64, base: u64) -> String {
    const LETTERS: &[u8] = b"\0KMGTPEZYRQ";
    let (mut amt, mut tenths, mut rounding, mut exponent) = (n, 0u64, 0u64, 0usize);
    let mut frac: Option<u64> = None;
    if base <= amt {
        loop {
            let r10 = (amt % base) * 10 + tenths;
            let r2 = (r10 % base) * 2 + (rounding >> 1);
            amt /= base;
            tenths = r10 / base;
            rounding = if r2 < base { u64::from(r2 + rounding != 0) } else { 2 + u64::from(base < r2 + rounding) };
            exponent += 1;
            if !(base <= amt && exponent < LETTERS.len() - 1) {
                break;
            }
        }
        if amt < 10 {
            if 2 < rounding + (tenths & 1) {
                tenths += 1;
                rounding = 0;
                if tenths == 10 {
                    amt += 1;
                    tenths = 0;
                }
            }
            if amt < 10 {
                frac = Some(tenths);
                tenths = 0;
                rounding = 0;
            }
        }
    }
    if 5 < tenths + u64::from(0 < rounding + (amt & 1)) {
        amt += 1;
        if amt == base && exponent < LETTERS.len() - 1 {
            exponent += 1;
            frac = Some(0);
            amt = 1;
        }
    }
    let mut s = amt.to_string();
    if let Some(t) = frac {
        s.push('.');
        s.push(char::from(b'0' + t as u8));
    }
    s.push(' ');
    if exponent > 0 {
        if base == 1000 && exponent == 1 {
            s.push('k');
        } else {
            s.push(char::from(LETTERS[exponent]));
        }
        if base == 1024 {
            s.push('i');
        }
    }
    s.push('B');
    s
}

/// The rate, as `human_readable`'s floating-point path prints it.
fn human_rate(bytes_per_s: f64) -> String {
    const LETTERS: &[&str] = &["", "k", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q"];
    let mut e = 1000.0f64;
    let mut exponent = 1;
    while e * 1000.0 <= bytes_per_s && exponent < LETTERS.len() - 1 {
        e *= 1000.0;
        exponent += 1;
    }
    let v = bytes_per_s / e;
    let mut s = format!("{v:.1}");
    if s.len() > 4 {
        s = format!("{v:.0}");
    }
    format!("{s} {}B", LETTERS[exponent])
}

/// C's `%g`.
fn format_g(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    if !x.is_finite() {
        return x.to_string();
    }
    let sci = format!("{x:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa.to_string()), exp.abs())
    } else {
        let decimals = (5 - exp) as usize;
        trim(format!("{x:.decimals$}"))
    }
}
