//! Test harness: starts the real binary on ephemeral loopback ports, reads
//! the bound addresses from its `listeners bound` log line, and speaks plain
//! HTTP/1.1 to it. Every wait is a bounded poll, never a bare sleep.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MACRONODE: &str = env!("CARGO_BIN_EXE_macronode");
pub const MICRONODE: &str = env!("CARGO_BIN_EXE_micronode");

/// A config with every listener on an ephemeral loopback port and the data
/// dir inside `dir`.
pub fn base_config(dir: &Path) -> String {
    format!(
        r#"data_dir = "{data}"

[metrics]
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[omnigate]
addr = "127.0.0.1:0"

[overlay]
addr = "127.0.0.1:0"

[registry]
addr = "127.0.0.1:0"

[storage]
addr = "127.0.0.1:0"

[index]
addr = "127.0.0.1:0"

[mailbox]
addr = "127.0.0.1:0"

[testrole]
addr = "127.0.0.1:0"
"#,
        data = dir.join("data").display()
    )
}

pub struct NodeBuilder {
    bin: &'static str,
    /// A program the node runs under (strace), with its arguments.
    wrapper: Option<(String, Vec<String>)>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    config: Option<String>,
    dir: Dir,
}

/// A test's working directory: removed at the end, unless kept for a
/// restart (`Kept`); the node that restarts on it (`Adopted`) removes it.
pub enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
    Adopted(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) | Dir::Adopted(p) => p,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Dir::Adopted(p) = self {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

impl NodeBuilder {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Some(base_config(dir.path()));
        Self {
            bin: MACRONODE,
            wrapper: None,
            args: vec!["run".into()],
            env: Vec::new(),
            config,
            dir: Dir::Temp(dir),
        }
    }

    /// Keeps the directory after this node is gone, for a restart with
    /// `in_dir`.
    pub fn keep_dir(mut self) -> Self {
        let path = self.dir.path().to_path_buf();
        let mut old = std::mem::replace(&mut self.dir, Dir::Kept(path));
        match &mut old {
            Dir::Temp(t) => t.disable_cleanup(true),
            // Dropping it would remove the directory this keeps.
            Dir::Adopted(_) => std::mem::forget(old),
            Dir::Kept(_) => {}
        }
        self
    }

    /// A node on an existing directory and config (after `keep_dir`); the
    /// directory is removed when this node is dropped.
    pub fn in_dir(dir: PathBuf, config: PathBuf) -> Self {
        let text = std::fs::read_to_string(&config).expect("config");
        Self {
            bin: MACRONODE,
            wrapper: None,
            args: vec!["run".into()],
            env: Vec::new(),
            config: Some(text),
            dir: Dir::Adopted(dir),
        }
    }

    /// Runs the node as `program args… <bin> <args…>` (e.g. under strace);
    /// `Node::pid` is then the wrapper's, `Node::node_pid` the node's.
    pub fn wrapped_in(mut self, program: &str, args: &[&str]) -> Self {
        self.wrapper = Some((
            program.into(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        ));
        self
    }

    pub fn bin(mut self, bin: &'static str) -> Self {
        self.bin = bin;
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Appends TOML to the base config (top-level keys must come first,
    /// so use sections here).
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k.as_ref(), v.as_ref());
        }
        self
    }

    pub fn config_extra(mut self, toml: &str) -> Self {
        let c = self.config.get_or_insert_with(String::new);
        c.push('\n');
        c.push_str(toml);
        self
    }

    /// Replaces text in the config (to change a key the base config sets).
    pub fn config_replace(mut self, from: &str, to: &str) -> Self {
        let c = self.config.get_or_insert_with(String::new);
        assert!(c.contains(from), "config has no {from:?}");
        *c = c.replace(from, to);
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the node key `seed` repeated (64 hex digits) into the data
    /// dir: a known node id (`Identity::from_seed([seed; 32])`).
    pub fn node_key(self, seed: u8) -> Self {
        let data = self.dir().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(data.join("node.key"), format!("{seed:02x}").repeat(32)).expect("node key");
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.wrapper {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(self.bin);
                c
            }
            None => Command::new(self.bin),
        };
        cmd.args(&self.args);
        if let Some(c) = &self.config {
            std::fs::write(self.config_path(), c).expect("write config");
            cmd.arg("--config").arg(self.config_path());
        }
        cmd.env_remove("RON_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Runs to completion (for commands that should exit).
    pub fn output(self) -> std::process::Output {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null());
        cmd.output().expect("spawn")
    }

    /// Starts the node and waits for its listeners to be bound.
    pub fn start(self) -> Node {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn node");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let esink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                esink.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let mut node = Node {
            child,
            lines,
            addrs: BTreeMap::new(),
            unix: BTreeMap::new(),
            _dir: self.dir,
        };
        let line = node
            .wait_for_log(Duration::from_secs(60), |v| v["bound"] == 1)
            .unwrap_or_else(|| panic!("node never bound its listeners:\n{}", node.log_dump()));
        let addrs: BTreeMap<String, String> =
            serde_json::from_str(line["addrs"].as_str().expect("addrs")).expect("addrs json");
        for (k, v) in addrs {
            match v.strip_prefix("unix:") {
                Some(path) => {
                    node.unix.insert(k, PathBuf::from(path));
                }
                None => {
                    node.addrs.insert(k, v.parse().expect("addr"));
                }
            }
        }
        node
    }
}

pub struct Node {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub addrs: BTreeMap<String, SocketAddr>,
    /// Listeners on Unix sockets (`--uds-only`), by name.
    pub unix: BTreeMap<String, PathBuf>,
    _dir: Dir,
}

impl Node {
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.addrs))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's own pid when it runs under a wrapper (`wrapped_in`): the
    /// wrapper's first child.
    pub fn node_pid(&self) -> u32 {
        let path = format!("/proc/{0}/task/{0}/children", self.pid());
        poll(Duration::from_secs(30), || {
            std::fs::read_to_string(&path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no child of {}", self.pid()))
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    pub fn log_dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a JSON log line matching `pred`.
    pub fn wait_for_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        poll(timeout, || {
            let lines = self.lines.lock().unwrap();
            lines
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| pred(v))
        })
    }

    pub fn get(&self, listener: &str, path: &str) -> Resp {
        request(self.addr(listener), "GET", path, &[], b"")
    }

    /// The value of an unlabelled series on `/metrics` (`name value`).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.get("metrics", "/metrics").body.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.parse().ok()).flatten()
        })
    }

    /// The sum of the series `name` whose labels include every pair of
    /// `labels` (0 when there is none).
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get("metrics", "/metrics")
            .body
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Injects a drill fault (`spec`: the JSON of `POST /api/v1/chaos`,
    /// the node started with `chaos.enabled = true`); its id.
    pub fn inject(&self, spec: &str) -> String {
        let r = request(
            self.addr("admin"),
            "POST",
            "/api/v1/chaos",
            &[],
            spec.as_bytes(),
        );
        assert_eq!(r.status, 201, "{spec}: {}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// Clears every drill fault; how many there were.
    pub fn clear_faults(&self) -> u64 {
        let r = request(self.addr("admin"), "DELETE", "/api/v1/chaos", &[], b"");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["cleared"].as_u64().unwrap()
    }

    pub fn wait_ready(&self) {
        let ok = poll(Duration::from_secs(60), || {
            let r = try_request(self.addr("metrics"), "GET", "/readyz", &[], b"").ok()?;
            (r.status == 200).then_some(())
        });
        assert!(
            ok.is_some(),
            "node never became ready:\n{}",
            self.log_dump()
        );
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let st = poll(timeout, || self.child.try_wait().ok().flatten());
        st.unwrap_or_else(|| panic!("node did not exit in {timeout:?}:\n{}", self.log_dump()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends only a request head that declares `content_length` body bytes,
/// and returns the response (for limits judged from the headers).
pub fn request_declaring(addr: SocketAddr, method: &str, path: &str, content_length: u64) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {content_length}\r\n\r\n"
    )
    .expect("write");
    let raw = read_lenient(&mut s).expect("read");
    parse_response(&raw).expect("response")
}

/// Sends `body` with chunked transfer encoding (no declared length).
pub fn request_chunked(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut wire = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for c in body.chunks(64 * 1024) {
        wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        wire.extend_from_slice(c);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&wire);
    let raw = read_lenient(&mut s).expect("read");
    parse_response(&raw).expect("response")
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    parse_response(&exchange(addr, method, path, headers, body)?)
}

/// Sends one request (`Connection: close`) and returns the raw response.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // One write for the request and a small body, so a server that answers
    // early (401, 413…) has no unread bytes arriving after it closed.
    let mut wire = req.into_bytes();
    wire.extend_from_slice(body);
    // A server may answer and close before reading a large body; the
    // answer is what matters, so a failed body write is not.
    let _ = s.write_all(&wire);
    read_lenient(&mut s)
}

/// A request whose response body is kept as raw bytes: (status, headers,
/// body). Handles `Content-Length` and chunked bodies.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let raw = exchange(addr, method, path, headers, body).expect("request");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = &raw[end + 4..];
    let chunked =
        header(&hdrs, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
                .expect("chunk size");
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    (status, hdrs, body)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads until EOF; a reset after some bytes arrived ends the read (the
/// server closed on an unread request body) rather than failing it.
fn read_lenient(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if !raw.is_empty() => {
                let _ = e;
                return Ok(raw);
            }
            Err(e) => return Err(e),
        }
    }
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let mut lines = head.lines();
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// An open server-sent-events stream; lines arrive on a channel.
pub struct Sse {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Sse {
    pub fn open(addr: SocketAddr, path: &str) -> Sse {
        let mut s = TcpStream::connect(addr).expect("connect sse");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("write sse");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sse = Sse {
            rx,
            seen: Vec::new(),
        };
        assert!(
            sse.wait_line(Duration::from_secs(30), |l| l.starts_with(": subscribed")),
            "bus stream never confirmed the subscription"
        );
        sse
    }

    /// Waits for a line matching `pred`; bounded by `timeout`.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

/// A node running `roles` whose directory outlives it, ready: the node,
/// its directory and its config, for [`restarted`].
pub fn restartable(roles: &str) -> (Node, PathBuf, PathBuf) {
    let b = NodeBuilder::new().arg("--roles").arg(roles);
    let cfg = b.config_path();
    let dir = b.dir().to_path_buf();
    let node = b.keep_dir().start();
    node.wait_ready();
    (node, dir, cfg)
}

/// A [`restartable`] node started again on its directory, ready.
pub fn restarted(dir: PathBuf, config: PathBuf, roles: &str) -> Node {
    let node = NodeBuilder::in_dir(dir, config)
        .arg("--roles")
        .arg(roles)
        .start();
    node.wait_ready();
    node
}

/// The resident memory of process `pid`, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `len` deterministic pseudo-random bytes (BLAKE3 XOF of `seed`).
pub fn body_of(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}
