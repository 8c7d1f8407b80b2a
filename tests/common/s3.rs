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
    kind: Kind,
    port: u16,
    pub endpoint: String,
    root: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn bin(kind: Kind) -> &'static str {
    match kind {
        Kind::S3sFs => "s3s-fs",
        Kind::Moto => "moto_server",
    }
}

impl Server {
    /// Starts the server, or says why not: `None` (skipped) outside CI
    /// when it is not installed; under CI a missing server fails.
    pub fn start(kind: Kind) -> Option<Server> {
        if !on_path(bin(kind)) {
            let why = format!(
                "{} is not installed (packaging/tools.sh installs it)",
                bin(kind)
            );
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
        std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
        let child = Self::spawn(kind, port, root.path());
        let mut server = Server {
            child,
            kind,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        };
        server.wait_listening();
        if let Kind::Moto = kind {
            server.create_bucket_unsigned();
        }
        Some(server)
    }

    fn spawn(kind: Kind, port: u16, root: &std::path::Path) -> Child {
        let mut cmd = Command::new(bin(kind));
        match kind {
            Kind::S3sFs => {
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
                .arg(root)
                // Its "server is running at …" line is logged at info.
                .env("RUST_LOG", "info");
            }
            Kind::Moto => {
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for the server's own "running at http://127.0.0.1:PORT"
    /// line (both servers print one once they listen); its output is
    /// read to the end meanwhile, so a chatty server never blocks on a
    /// full pipe.
    fn wait_listening(&mut self) {
        use std::io::BufRead as _;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(self.child.stdout.take().unwrap()),
            Box::new(self.child.stderr.take().unwrap()),
        ];
        for stream in out {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream)
                    .lines()
                    .map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let want = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(&want) => return,
                Ok(_) => {}
                Err(e) => panic!("{} never said it listens on {want}: {e}", bin(self.kind)),
            }
        }
    }

    /// Kills the server (its files stay).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and files (s3s-fs keeps its
    /// objects; moto starts empty).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.kind, self.port, self.root.path());
        self.wait_listening();
        if let Kind::Moto = self.kind {
            self.create_bucket_unsigned();
        }
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
