//! Diagnostics: leaving with an exit status, usage and fatal errors, error
//! texts as coreutils prints them, and coreutils' quoting of names.

use std::io;

/// Leave `dd` with this exit status (messages already printed).
pub(crate) struct Exit(pub(crate) u8);

pub(crate) fn usage_error(msg: &str) -> Exit {
    errln!("dd: {msg}");
    errln!("Try 'dd --help' for more information.");
    Exit(1)
}

pub(crate) fn fatal(msg: &str) -> Exit {
    errln!("dd: {msg}");
    Exit(1)
}
/// The error's text as coreutils prints it: strerror without Rust's
/// " (os error N)" suffix.
pub(crate) fn reason(e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => return e.to_string(),
    };
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

pub(crate) fn os_err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// `quote`/`quoteaf` of coreutils in the C locale: always single-quoted.
pub(crate) fn quote_bytes(s: &[u8]) -> String {
    format!("'{}'", String::from_utf8_lossy(s).replace('\'', "'\\''"))
}

pub(crate) fn quoteaf(s: &str) -> String {
    quote_bytes(s.as_bytes())
}

/// `quotef`: quoted only when the shell would need it.
pub(crate) fn quotef(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with(['#', '~'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"%+,-./:=@_^{}]".contains(&b) || b >= 0x80);
    if plain {
        s.to_string()
    } else {
        quoteaf(s)
    }
}
