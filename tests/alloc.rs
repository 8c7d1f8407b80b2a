//! Heap allocations per request on the public read path: a 4 KiB object
//! GET through omnigate over keep-alive, counted by a counting global
//! allocator around mimalloc (the production allocator) in this test binary.
//!
//! The node runs in this process (the only way to count its allocations),
//! with every HTTP plane on a Unix socket in a temp dir (`uds.only`), so its
//! sockets are known without reading a log. The client allocates nothing
//! while it measures: one request buffer, one response buffer, std I/O.

#![cfg(all(feature = "omnigate", feature = "storage"))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

mod common;

struct Counting;

/// Every allocation of every thread: the node's work for a request is
/// spread over its runtime's workers.
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// `ALLOC_SITES=1`: every allocation of the measured loop is also traced
/// to its call stack, and the sites are printed, most frequent first.
static TRACE: AtomicBool = AtomicBool::new(false);
static SITES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if !TRACE.load(Ordering::Relaxed) || IN_TRACE.try_with(|t| t.replace(true)).unwrap_or(true) {
        return;
    }
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    // The first frames outside the standard library and this file, each
    // with its crate-relative place.
    let mut site = Vec::new();
    let mut name = "";
    for line in bt.lines() {
        let line = line.trim_start();
        match line.strip_prefix("at ") {
            None => name = line.split_once(": ").map_or(line, |(_, f)| f),
            Some(place) => {
                if place.starts_with("/rustc/") || place.contains("tests/alloc.rs") {
                    continue;
                }
                let place = place.rsplit_once("/src/").map_or(place, |(_, p)| p);
                site.push(format!("{name} ({place})"));
                if site.len() == 3 {
                    break;
                }
            }
        }
    }
    let mut sites = SITES.lock().unwrap();
    *sites
        .get_or_insert_with(HashMap::new)
        .entry(site.join(" <- "))
        .or_default() += 1;
    drop(sites);
    let _ = IN_TRACE.try_with(|t| t.set(false));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarding the caller's layout.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from mimalloc with this layout.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One HTTP/1.1 exchange on a kept-alive stream: `buf` receives the whole
/// response (head and a Content-Length body). Returns (status, head length,
/// total length). Allocates nothing.
fn exchange(s: &mut UnixStream, req: &[u8], buf: &mut [u8]) -> (u16, usize, usize) {
    s.write_all(req).unwrap();
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "the node closed the connection");
        have += n;
        let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = &buf[..end];
        let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
        let len: usize = head
            .split(|b| *b == b'\n')
            .find_map(|l| {
                let l = std::str::from_utf8(l).ok()?.trim();
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let total = end + 4 + len;
        while have < total {
            let n = s.read(&mut buf[have..total]).unwrap();
            assert!(n > 0, "the node closed the connection mid-body");
            have += n;
        }
        assert_eq!(have, total, "more than one response arrived");
        return (status, end + 4, total);
    }
}

fn connect_when_ready(run: &Path) -> UnixStream {
    let mut buf = vec![0u8; 64 * 1024];
    let ready = common::poll(Duration::from_secs(120), || {
        let mut s = UnixStream::connect(run.join("metrics.sock")).ok()?;
        let (st, _, _) = exchange(&mut s, b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n", &mut buf);
        (st == 200).then_some(())
    });
    assert!(ready.is_some(), "the node never became ready");
    UnixStream::connect(run.join("omnigate.sock")).unwrap()
}

#[test]
fn a_small_object_get_allocates_little() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "data_dir = {:?}\n[log]\nfilter = \"warn\"\n[uds]\nonly = true\ndir = {:?}\n",
            dir.path().join("data"),
            run
        ),
    )
    .unwrap();
    let overrides = macronode::config::CliOverrides {
        roles: Some(vec!["omnigate".into(), "storage".into()]),
        ..Default::default()
    };
    let src = macronode::config::ConfigSource::new(
        macronode::config::Profile::Macronode,
        Some(cfg_path),
        overrides,
    );
    let cfg = src.load().unwrap();
    let log = macronode::logging::init(&cfg.log);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(macronode::node::run(src, cfg, log));
    });

    let mut s = connect_when_ready(&run);
    let mut buf = vec![0u8; 64 * 1024];
    let object = vec![0x5au8; 4096];
    let mut put = b"PUT /v1/o HTTP/1.1\r\nhost: x\r\ncontent-length: 4096\r\n\r\n".to_vec();
    put.extend_from_slice(&object);
    let (st, head, total) = exchange(&mut s, &put, &mut buf);
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&buf[..total]));
    let body: serde_json::Value = serde_json::from_slice(&buf[head..total]).unwrap();
    let address = body["address"].as_str().unwrap();
    let get = format!("GET /v1/o/{address} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes();

    let mut one = || {
        let (st, head, total) = exchange(&mut s, &get, &mut buf);
        assert_eq!(st, 200);
        assert_eq!(&buf[head..total], &object[..]);
    };
    // Warm-up: first-use allocations (metric series, pools) are not per
    // request.
    for _ in 0..500 {
        one();
    }
    const N: u64 = 2_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        one();
    }
    let per_request = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    if std::env::var_os("ALLOC_SITES").is_some() {
        TRACE.store(true, Ordering::Relaxed);
        for _ in 0..100 {
            one();
        }
        TRACE.store(false, Ordering::Relaxed);
        let sites = SITES.lock().unwrap().take().unwrap_or_default();
        let mut sites: Vec<_> = sites.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (site, n) in sites {
            println!("{:6.2} {site}", n as f64 / 100.0);
        }
    }
    println!("allocations per 4 KiB GET: {per_request:.2}");
    assert!(
        per_request <= 14.0,
        "a 4 KiB GET allocates {per_request:.2} times"
    );
}
