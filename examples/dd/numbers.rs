//! Numeric operands: gnulib's `xstrtoumax` and coreutils dd's
//! `parse_integer`, with their suffixes and `x` products.

use crate::INTMAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NumErr {
    Ok,
    Invalid,
    Overflow,
}

/// What gnulib's `xstrtoumax` reports.
#[derive(Clone, Copy, PartialEq, Eq)]
struct StrtolErr {
    overflow: bool,
    invalid: bool,
    invalid_suffix: bool,
}

/// gnulib `xstrtoumax(s, &end, 10, &n, "bcEGkKMPQRTwYZ0")`.
fn xstrtoumax(s: &[u8]) -> (u64, usize, StrtolErr) {
    let mut err = StrtolErr { overflow: false, invalid: false, invalid_suffix: false };
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    if s.get(i) == Some(&b'-') {
        err.invalid = true;
        return (0, 0, err);
    }
    let mut j = i;
    if s.get(j) == Some(&b'+') {
        j += 1;
    }
    let digits_start = j;
    let mut tmp: u64 = 0;
    while j < s.len() && s[j].is_ascii_digit() {
        match tmp.checked_mul(10).and_then(|t| t.checked_add(u64::from(s[j] - b'0'))) {
            Some(t) => tmp = t,
            None => {
                tmp = u64::MAX;
                err.overflow = true;
            }
        }
        j += 1;
    }
    const VALID: &[u8] = b"bcEGkKMPQRTwYZ0";
    let mut p = j;
    if j == digits_start {
        // No digits: strtoumax leaves the end at the string's start.
        p = 0;
        if !s.is_empty() && VALID.contains(&s[0]) {
            tmp = 1;
        } else {
            err.invalid = true;
            return (0, 0, err);
        }
    }
    if p < s.len() {
        let c = s[p];
        if !VALID.contains(&c) {
            err.invalid_suffix = true;
            return (tmp, p, err);
        }
        let mut base: u64 = 1024;
        let mut suffix_len = 1;
        match s.get(p + 1) {
            Some(b'i') if s.get(p + 2) == Some(&b'B') => suffix_len += 2,
            Some(b'B') | Some(b'D') => {
                base = 1000;
                suffix_len += 1;
            }
            _ => {}
        }
        let power = |e: u32| -> Option<u64> { base.checked_pow(e) };
        let mult = match c {
            b'b' => Some(512),
            b'c' => Some(1),
            b'w' => Some(2),
            b'k' | b'K' => power(1),
            b'M' => power(2),
            b'G' => power(3),
            b'T' => power(4),
            b'P' => power(5),
            b'E' => power(6),
            b'Z' => power(7),
            b'Y' => power(8),
            b'R' => power(9),
            b'Q' => power(10),
            _ => {
                err.invalid_suffix = true;
                return (tmp, p, err);
            }
        };
        match mult.and_then(|m| tmp.checked_mul(m)) {
            Some(v) => tmp = v,
            None => {
                tmp = u64::MAX;
                err.overflow = true;
            }
        }
        p += suffix_len;
        if p < s.len() {
            err.invalid_suffix = true;
        }
    }
    (tmp, p, err)
}

/// coreutils dd's `parse_integer` (as of 9.1): a number with suffixes, a
/// lone trailing `B`, and one `x` product whose right side is a plain
/// suffixed number.
pub(crate) fn parse_integer(s: &[u8]) -> (u64, NumErr) {
    let (n, mut end, mut e) = xstrtoumax(s);
    let only_suffix = |e: &StrtolErr| e.invalid_suffix && !e.invalid;
    if only_suffix(&e) && s.get(end) == Some(&b'B') && end > 0 && s[end - 1] != b'B' {
        end += 1;
        if end == s.len() {
            e.invalid_suffix = false;
        }
    }
    if only_suffix(&e) && s.get(end) == Some(&b'x') {
        let (o, _, f) = xstrtoumax(&s[end + 1..]);
        if f.invalid || f.invalid_suffix {
            return (0, NumErr::Invalid);
        }
        return match n.checked_mul(o) {
            Some(r) if r <= INTMAX && !(r != 0 && (e.overflow || f.overflow)) => {
                if r == 0 && s.starts_with(b"0x") {
                    errln!("dd: warning: '0x' is a zero multiplier; use '00x' if that is intended");
                }
                (r, NumErr::Ok)
            }
            _ => (INTMAX, NumErr::Overflow),
        };
    }
    if e.invalid || e.invalid_suffix {
        (n, NumErr::Invalid)
    } else if e.overflow || n > INTMAX {
        (INTMAX, NumErr::Overflow)
    } else {
        (n, NumErr::Ok)
    }
}
