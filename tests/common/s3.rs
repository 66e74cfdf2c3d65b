//! A bucket on a local S3-compatible server, shared by `tests/object.rs`
//! and `benches/object.rs` through `#[path]`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Creates a bucket with a plain HTTP PUT (object_store cannot; moto takes
/// it unsigned).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.strip_prefix("http://").expect("an http:// endpoint");
    let mut s = TcpStream::connect(host).expect("connect to the S3 server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"), "create bucket: {answer}");
}
