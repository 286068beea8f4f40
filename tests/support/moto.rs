//! A moto S3 server for tests (`moto[server]`, pinned in `tests/s3/requirements.txt`,
//! installed into `.venv` by `scripts/test`, which sets `TRACELIGHT_TEST_MOTO`), started on a
//! free port of 127.0.0.1 and killed when dropped. Included by the storage crate's tests and
//! the end-to-end tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tracelight_storage::objstore::S3Options;

/// A moto server on a free port of 127.0.0.1, killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto, or says why the test is skipped (never under CI).
pub fn moto(test: &str) -> Option<Moto> {
    let Ok(exe) = std::env::var("TRACELIGHT_TEST_MOTO") else {
        assert!(std::env::var_os("CI").is_none(), "TRACELIGHT_TEST_MOTO unset under CI; scripts/test sets it");
        eprintln!("SKIPPED {test}: TRACELIGHT_TEST_MOTO is not set (scripts/test installs moto and sets it)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "moto did not listen on {port} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

/// Creates a bucket (object_store does not create buckets): one unsigned path-style PUT.
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let addr = endpoint.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "create bucket {bucket}: {reply}");
}

pub fn options(endpoint: &str) -> S3Options {
    S3Options {
        endpoint: endpoint.into(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        allow_http: true,
        ..Default::default()
    }
}
