//! Cold start: time from spawning `macronode run` (all roles, empty data
//! dir) and `micronode` (all roles, amnesia) to the first `/readyz` 200,
//! next to their peer measured in the same run: spawning the same binary
//! for `version` and waiting for it to exit (the floor any start-up pays:
//! exec, dynamic loading, runtime).
//!
//! Run: `cargo bench --bench cold_start` (or `make bench`). Prints
//! min/median/p90 for each and the ratios.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_macronode");
const MICRO: &str = env!("CARGO_BIN_EXE_micronode");
const RUNS: usize = 30;

fn config(dir: &std::path::Path, metrics_port: u16) -> String {
    let mut s = format!("data_dir = \"{}\"\n", dir.join("data").display());
    s.push_str(&format!("[metrics]\naddr = \"127.0.0.1:{metrics_port}\"\n"));
    for sec in [
        "admin", "omnigate", "overlay", "registry", "storage", "index", "mailbox",
    ] {
        s.push_str(&format!("[{sec}]\naddr = \"127.0.0.1:0\"\n"));
    }
    s
}

fn ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() * 9 / 10])
}

/// Spawns `bin run --config …` and returns the time to `/readyz` 200.
fn start_once(bin: &str) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, config(dir.path(), port)).expect("config");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RON_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = t0 + Duration::from_secs(30);
    while !ready(addr) {
        assert!(Instant::now() < deadline, "node never became ready");
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = t0.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    took
}

fn main() {
    // `cargo bench` passes `--bench`; criterion-style filters are ignored.
    let mut starts = Vec::with_capacity(RUNS);
    let mut micros = Vec::with_capacity(RUNS);
    let mut floors = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        starts.push(start_once(BIN));
        micros.push(start_once(MICRO));
        let t0 = Instant::now();
        let st = Command::new(BIN)
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .expect("version");
        assert!(st.success());
        floors.push(t0.elapsed());
    }
    let (smin, smed, sp90) = stats(starts);
    let (mmin, mmed, mp90) = stats(micros);
    let (fmin, fmed, fp90) = stats(floors);
    println!("cold start to /readyz 200, all roles, empty data dir / amnesia ({RUNS} runs)");
    println!("  macronode run     min {smin:?}  median {smed:?}  p90 {sp90:?}");
    println!("  micronode run     min {mmin:?}  median {mmed:?}  p90 {mp90:?}");
    println!("  macronode version min {fmin:?}  median {fmed:?}  p90 {fp90:?}  (exec floor)");
    println!(
        "  ratio (median run / median exec floor): macronode {:.2}, micronode {:.2}",
        smed.as_secs_f64() / fmed.as_secs_f64(),
        mmed.as_secs_f64() / fmed.as_secs_f64()
    );
}
