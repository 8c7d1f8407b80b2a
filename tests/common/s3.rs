//! Real S3 servers on loopback for the tests (the storage crate's backend
//! suite and the node's replica tests): `s3s-fs` (checks SigV4
//! signatures) and moto. Each runs on a port of its own with a bucket made
//! for the test, and is killed when the `Server` drops.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "ron-test-key";
pub const SECRET_KEY: &str = "ron-test-secret";
pub const BUCKET: &str = "ron-bucket";

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    S3sFs,
    Moto,
}

pub struct Server {
    child: Child,
    pub endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

impl Server {
    /// Starts the server, or says why not: `None` (skipped) outside CI
    /// when it is not installed; under CI a missing server fails.
    pub fn start(kind: Kind) -> Option<Server> {
        let bin = match kind {
            Kind::S3sFs => "s3s-fs",
            Kind::Moto => "moto_server",
        };
        if !on_path(bin) {
            let why = format!("{bin} is not installed (packaging/tools.sh installs it)");
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin);
        match kind {
            Kind::S3sFs => {
                std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
                cmd.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--access-key",
                    ACCESS_KEY,
                    "--secret-key",
                    SECRET_KEY,
                ])
                .arg(root.path());
            }
            Kind::Moto => {
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            _root: root,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{bin} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Kind::Moto = kind {
            server.create_bucket_unsigned();
        }
        Some(server)
    }

    /// moto takes an unsigned CreateBucket.
    fn create_bucket_unsigned(&self) {
        use std::io::{Read as _, Write as _};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "CreateBucket: {out}");
    }
}
