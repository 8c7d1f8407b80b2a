//! The gateway against the real binary: every role in one process (typed
//! handles), and omnigate with a remote storage that is down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::io::Write;
use std::time::Duration;

use common::{body_of, request, request_bytes, NodeBuilder};

/// A node with every data role behind the gateway; `omnigate` is extra
/// TOML for the `[omnigate]` table.
fn gateway(omnigate: &str) -> common::Node {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,storage,index,mailbox")
        .config_replace(
            "[omnigate]\naddr = \"127.0.0.1:0\"",
            &format!("[omnigate]\naddr = \"127.0.0.1:0\"\n{omnigate}"),
        )
        .start();
    node.wait_ready();
    node
}

/// Waits until `rejected_total{reason}` reads exactly `n`.
fn wait_rejected(node: &common::Node, reason: &str, n: u64, within: Duration) {
    let want = format!("rejected_total{{reason=\"{reason}\"}} {n}");
    let seen = common::poll(within, || {
        let m = node.get("metrics", "/metrics").body;
        m.lines().any(|l| l == want).then_some(())
    });
    assert!(
        seen.is_some(),
        "no `{want}` in\n{}",
        node.get("metrics", "/metrics").body
    );
}

#[test]
fn put_name_view_and_ranged_get_through_the_gateway() {
    let node = gateway("");
    let g = node.addr("omnigate");

    let data = body_of(150 * 1024 + 3, 7);
    let r = request(g, "PUT", "/v1/o", &[], &data);
    assert_eq!(r.status, 201, "{}", r.body);
    let address = r.json()["address"].as_str().unwrap().to_owned();

    let rec = format!(r#"{{"address":"{address}","content_type":"image/png","feed":"news"}}"#);
    let r = request(g, "PUT", "/v1/names/site/logo", &[], rec.as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    for m in ["first", "second", "third"] {
        let r = request(g, "POST", "/v1/topics/news/messages", &[], m.as_bytes());
        assert_eq!(r.status, 201, "{}", r.body);
    }

    let r = request(g, "GET", "/v1/view/site/logo", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["address"], address.as_str());
    assert_eq!(v["size"], data.len() as u64);
    assert_eq!(v["content_type"], "image/png");
    assert_eq!(v["links"]["raw"], format!("/v1/o/{address}"));
    let feed: Vec<_> = v["feed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(feed, ["first", "second", "third"]);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 0, "{v}");

    let path = format!("/v1/o/{address}");
    let (status, headers, body) =
        request_bytes(g, "GET", &path, &[("Range", "bytes=65530-65545")], b"");
    assert_eq!(status, 206);
    assert_eq!(body, &data[65530..65546]);
    assert_eq!(
        common::header(&headers, "content-range"),
        Some(format!("bytes 65530-65545/{}", data.len()).as_str())
    );
    let (_, headers, body) = request_bytes(g, "GET", &path, &[], b"");
    assert_eq!(body, data);
    let etag = common::header(&headers, "etag").unwrap().to_owned();
    let (status, _, _) = request_bytes(g, "GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!(status, 304);

    let r = request(g, "GET", "/v1/view/no/such", &[], b"");
    assert_eq!(r.status, 404);
    let r = request(g, "GET", "/nowhere", &[], b"");
    assert_eq!(r.status, 404);
}

#[test]
fn a_gzip_bomb_is_refused_without_inflating_it() {
    let node = gateway("");
    let g = node.addr("omnigate");

    // 64 MiB of zeros compress to ~64 KiB: far past 10× and past the cap.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let rss_before = common::rss_kib(node.pid());
    let r = request(g, "PUT", "/v1/o", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("decompress"), "{}", r.body);
    // Counted once, where the inflater refused it.
    wait_rejected(&node, "decompress", 1, Duration::from_secs(10));
    let grown = common::rss_kib(node.pid()).saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");

    // A small honest gzip body is decoded and stored as its plain bytes.
    let plain = body_of(10_000, 3);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&plain).unwrap();
    let r = request(
        g,
        "PUT",
        "/v1/o",
        &[("Content-Encoding", "gzip")],
        &enc.finish().unwrap(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["address"],
        format!("b3:{}", blake3::hash(&plain).to_hex()).as_str()
    );

    let r = request(g, "PUT", "/v1/o", &[("Content-Encoding", "br")], b"x");
    assert_eq!(r.status, 415, "{}", r.body);
}

#[test]
fn a_remote_storage_that_is_down_fails_fast_and_unreadies_the_gateway() {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,index")
        .config_extra("[omnigate.downstream]\nstorage = \"http://127.0.0.1:1\"\n")
        .start();
    let g = node.addr("omnigate");
    let health = node.addr("metrics");

    let r = common::poll(Duration::from_secs(30), || {
        let r = request(health, "GET", "/readyz", &[], b"");
        // Unready for storage alone once the in-process index is up.
        let v = r.json();
        let why = v["roles"]["omnigate"]["reason"].as_str().unwrap_or("");
        (r.status == 503 && v["roles"]["index"]["ready"] == true && why.contains("storage"))
            .then_some(r)
    });
    assert!(
        r.is_some(),
        "readyz never named storage:\n{}",
        node.log_dump()
    );

    let r = request(g, "GET", &format!("/v1/o/b3:{}", "0".repeat(64)), &[], b"");
    assert!(matches!(r.status, 502 | 503), "{} {}", r.status, r.body);
    assert!(r.body.contains("storage"), "{}", r.body);

    // The index is in process and still answers.
    let r = request(g, "GET", "/v1/names/none", &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
}

/// Writes held open past 90 % of the in-flight cap are shed with 503 at
/// once; the held ones and a read still complete when their bodies arrive.
#[test]
fn over_the_inflight_cap_writes_are_shed_and_held_requests_complete() {
    use std::io::Read;
    use std::net::TcpStream;

    let node = gateway("inflight_max = 10");
    let g = node.addr("omnigate");
    let address = format!("b3:{}", "a".repeat(64));
    let rec = format!(r#"{{"address":"{address}"}}"#);

    // 12 index writes, each with its last body byte held back.
    let mut conns: Vec<TcpStream> = (0..12)
        .map(|i| {
            let mut s = TcpStream::connect(g).unwrap();
            let head = format!(
                "PUT /v1/names/held-{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                rec.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&rec.as_bytes()[..rec.len() - 1]).unwrap();
            s
        })
        .collect();

    // 9 writes fit under 90 % of 10; the other 3 are shed.
    wait_rejected(&node, "shed_write", 3, Duration::from_secs(30));

    // A read still gets through while 9 writes are held.
    let r = request(g, "GET", "/v1/names/absent", &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);

    // Collect the shed answers first (wait until all three are on the
    // wire), then finish the held bodies.
    for s in &conns {
        s.set_nonblocking(true).unwrap();
    }
    let answered = |s: &TcpStream| matches!(s.peek(&mut [0u8; 1]), Ok(n) if n > 0);
    let three = common::poll(Duration::from_secs(30), || {
        (conns.iter().filter(|s| answered(s)).count() == 3).then_some(())
    });
    assert!(three.is_some());
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for s in conns.drain(..) {
        let done = answered(&s);
        s.set_nonblocking(false).unwrap();
        if done {
            let (status, text) = read_response(s);
            // The body names the same reason as the metric and the docs.
            assert!(text.contains(r#""reason":"shed_write""#), "{text}");
            statuses.push(status);
        } else {
            open.push(s);
        }
    }
    assert_eq!(statuses, [503, 503, 503]);
    for mut s in open {
        s.write_all(&rec.as_bytes()[rec.len() - 1..]).unwrap();
        statuses.push(read_status(s));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 201, 201, 201, 201, 201, 503, 503, 503]
    );

    fn read_status(s: TcpStream) -> u16 {
        read_response(s).0
    }

    fn read_response(mut s: TcpStream) -> (u16, String) {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

/// 300 clients dribbling request heads neither take in-flight slots nor
/// stop a normal client; each is cut off at the header-read timeout and
/// counted.
#[test]
fn slow_loris_connections_do_not_starve_a_normal_client() {
    use std::net::TcpStream;

    let node = gateway("inflight_max = 16");
    let g = node.addr("omnigate");

    let lorises: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(g).unwrap();
            s.write_all(b"GET /v1/names/x HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();

    for _ in 0..20 {
        let r = request(g, "GET", "/v1/names/absent", &[], b"");
        assert_eq!(r.status, 404, "{}", r.body);
    }

    wait_rejected(&node, "header_timeout", 300, Duration::from_secs(60));
    drop(lorises);
    let r = request(g, "GET", "/v1/names/absent", &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
}

/// A chunk damaged on disk is never served through the gateway: the read
/// fails (an error status or a cut-off body), and the damaged bytes do not
/// reach the client. A range past the end is 416.
#[test]
fn a_corrupted_chunk_is_never_served_through_the_gateway() {
    use std::io::Read;

    let b = NodeBuilder::new().arg("--roles").arg("omnigate,storage");
    let cfg_path = b.config_path();
    let dir = b.dir().to_path_buf();
    let mut node = b.keep_dir().start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let data = body_of(200 * 1024, 9);
    let r = request(g, "PUT", "/v1/o", &[], &data);
    assert_eq!(r.status, 201, "{}", r.body);
    let address = r.json()["address"].as_str().unwrap().to_owned();
    let path = format!("/v1/o/{address}");
    let r = request(g, "GET", &path, &[("Range", "bytes=999999999-")], b"");
    assert_eq!(r.status, 416, "{}", r.body);
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(30));

    // Flip one byte inside the second chunk.
    let db = dir.join("data").join("storage.redb");
    let mut file = std::fs::read(&db).unwrap();
    let marker = &data[70_000..70_032];
    let at = file
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("chunk bytes are in the file");
    file[at + 5] ^= 0x20;
    let damaged = file[at..at + marker.len()].to_vec();
    std::fs::write(&db, &file).unwrap();

    let node = NodeBuilder::in_dir(dir, cfg_path)
        .arg("--roles")
        .arg("omnigate,storage")
        .start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let mut s = std::net::TcpStream::connect(g).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        !raw.windows(damaged.len()).any(|w| w == damaged.as_slice()),
        "damaged bytes reached the client"
    );
    assert!(
        !raw.windows(marker.len()).any(|w| w == marker),
        "the damaged chunk was served although it failed verification"
    );
}

/// A client over its quota gets 429 with Retry-After; the refusal is
/// counted.
#[test]
fn a_client_over_its_quota_gets_429() {
    let node = gateway("[omnigate.quota]\nper_client_rps = 1\nper_client_burst = 5");
    let g = node.addr("omnigate");
    let start = std::time::Instant::now();
    let mut ok = 0;
    let mut limited = None;
    for _ in 0..200 {
        let r = request(g, "GET", "/v1/names/absent", &[], b"");
        match r.status {
            404 => ok += 1,
            429 => {
                limited = Some(r);
                break;
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    // At most the burst plus one refill per elapsed second got through.
    let allowed = 5 + start.elapsed().as_secs() as usize + 1;
    assert!(ok <= allowed, "{ok} admitted, at most {allowed} allowed");
    let r = limited.expect("no request was limited");
    assert_eq!(r.json()["reason"], "quota");
    assert!(r.header("retry-after").is_some());
    let m = node.get("metrics", "/metrics").body;
    assert!(m.contains("rejected_total{reason=\"quota\"}"), "{m}");
}

/// A downstream that accepts requests and holds them until released, then
/// answers each held one (and every later one) with `200 held`.
struct Tarpit {
    addr: std::net::SocketAddr,
    release: std::sync::mpsc::Sender<()>,
}

impl Tarpit {
    fn start() -> Self {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            fn answer(mut s: std::net::TcpStream) {
                use std::io::Read;
                // Read the request head first, so closing never resets a
                // connection that still has unread bytes.
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nheld",
                );
            }
            // Connections are accepted as fast as they arrive (a blocking
            // accept: a burst of 512 must not overflow the listen backlog
            // and leave connects to time out) and held until released.
            let held = std::sync::Arc::new(std::sync::Mutex::new(Some(Vec::new())));
            let holding = held.clone();
            std::thread::spawn(move || {
                let _ = released.recv();
                let streams = holding.lock().unwrap().take().unwrap_or_default();
                for s in streams {
                    std::thread::spawn(move || answer(s));
                }
            });
            for s in listener.incoming().flatten() {
                let mut h = held.lock().unwrap();
                match h.as_mut() {
                    Some(streams) => streams.push(s),
                    None => {
                        drop(h);
                        std::thread::spawn(move || answer(s));
                    }
                }
            }
        });
        Tarpit { addr, release }
    }
}

/// 600 slow reads against the default cap of 512: the 88 over the cap get
/// 503 `busy` at once while the 512 admitted are held by a slow storage
/// downstream; `/readyz` turns 503 while the gateway is that full and
/// 200 again after the admitted requests complete.
#[test]
fn six_hundred_slow_reads_against_a_cap_of_512() {
    use std::io::Read;
    use std::net::TcpStream;

    let tarpit = Tarpit::start();
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate")
        .config_replace(
            "[omnigate]\naddr = \"127.0.0.1:0\"",
            "[omnigate]\naddr = \"127.0.0.1:0\"\nstorage_semaphore = 1024",
        )
        .config_extra(&format!(
            "[omnigate.downstream]\nstorage = \"http://{}\"\nrequest_timeout = \"120s\"\nconnect_timeout = \"30s\"\n",
            tarpit.addr
        ))
        .start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let health = node.addr("metrics");

    let req = format!(
        "GET /v1/o/b3:{} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "c".repeat(64)
    );
    let conns: Vec<TcpStream> = (0..600)
        .map(|_| {
            let mut s = TcpStream::connect(g).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            s
        })
        .collect();

    wait_rejected(&node, "busy", 88, Duration::from_secs(60));
    let unready = common::poll(Duration::from_secs(30), || {
        let r = request(health, "GET", "/readyz", &[], b"");
        (r.status == 503 && r.body.contains("in flight")).then_some(())
    });
    assert!(
        unready.is_some(),
        "readyz did not flip: {}",
        request(health, "GET", "/readyz", &[], b"").body
    );

    tarpit.release.send(()).unwrap();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for mut s in conns {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code == 200 {
            assert!(text.ends_with("held"), "{text}");
        }
        *statuses.entry(code).or_default() += 1;
    }
    assert_eq!(
        statuses,
        [(200, 512), (503, 88)].into_iter().collect(),
        "every admitted read completes, every other one is refused"
    );
    let ready = common::poll(Duration::from_secs(30), || {
        (request(health, "GET", "/readyz", &[], b"").status == 200).then_some(())
    });
    assert!(ready.is_some(), "readyz did not recover");
}

/// A storage downstream that answers `GET`s with `hello`, except request
/// number `stall_at` (1-based, over all connections): that one gets its
/// response head and then no body byte, ever.
fn stalling_downstream(stall_at: usize) -> std::net::SocketAddr {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                loop {
                    // One request head per loop (GETs carry no body).
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    };
                    buf.drain(..end);
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
                    if n == stall_at {
                        let _ = s.write_all(head);
                        // Hold the connection open without a body byte
                        // until the peer goes away.
                        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                        return;
                    }
                    let mut out = head.to_vec();
                    out.extend_from_slice(b"hello");
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `hedge_read`: a read whose downstream sent its head but no body byte is
/// sent again after the observed p95 delay, and the copy answers the
/// client. Without the hedge this read would never finish.
#[test]
fn a_stalled_read_is_hedged_and_the_copy_answers() {
    // Hedging starts after 20 observed reads; the 21st stalls.
    let downstream = stalling_downstream(21);
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate")
        .config_replace(
            "[omnigate]\naddr = \"127.0.0.1:0\"",
            "[omnigate]\naddr = \"127.0.0.1:0\"\nhedge_read = true",
        )
        .config_extra(&format!(
            "[omnigate.downstream]\nstorage = \"http://{downstream}\"\nrequest_timeout = \"600s\"\n"
        ))
        .start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let path = format!("/v1/o/b3:{}", "d".repeat(64));
    for _ in 0..21 {
        let r = request(g, "GET", &path, &[], b"");
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
    }
    let m = node.get("metrics", "/metrics").body;
    assert!(
        m.lines()
            .any(|l| l == "omnigate_hedged_reads_total{outcome=\"hedge_won\"} 1"),
        "{m}"
    );
}

/// HTTP/2 without TLS (prior knowledge): one connection carries a write and
/// then many concurrent ranged reads, each answered with its own bytes.
#[test]
fn http2_clients_are_served_on_one_connection() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let node = gateway("");
    let g = node.addr("omnigate");
    let data = body_of(300 * 1024 + 11, 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(g).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::put(format!("http://{g}/v1/o"))
            .body(Full::new(bytes::Bytes::from(data.clone())))
            .unwrap();
        let resp = send.clone().send_request(req).await.unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let address = v["address"].as_str().unwrap().to_owned();

        let reads = (0..16u64).map(|i| {
            let mut send = send.clone();
            let uri = format!("http://{g}/v1/o/{address}");
            async move {
                let start = i * 15_000;
                let end = start + 50_000;
                let req = http::Request::get(uri)
                    .header("range", format!("bytes={start}-{end}"))
                    .body(Full::new(bytes::Bytes::new()))
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 206);
                let got = resp.into_body().collect().await.unwrap().to_bytes();
                (start as usize, end as usize, got)
            }
        });
        let mut handles = Vec::new();
        for f in reads {
            handles.push(tokio::spawn(f));
        }
        for h in handles {
            let (start, end, got) = h.await.unwrap();
            assert_eq!(&got[..], &data[start..=end]);
        }
    });
}

/// RFC 9110's MUSTs as a third-party client sees them through the gateway
/// and the node's own planes: `Allow` on every 405, `If-Range` that does not
/// match means the whole object with 200, HEAD ignores `Range`, and a 415
/// for a content coding names the codings taken in `Accept-Encoding`.
#[test]
fn range_validators_head_allow_and_accept_encoding_follow_rfc_9110() {
    let node = gateway("");
    let g = node.addr("omnigate");
    let data = body_of(100 * 1024, 3);
    let r = request(g, "PUT", "/v1/o", &[], &data);
    assert_eq!(r.status, 201, "{}", r.body);
    let address = r.json()["address"].as_str().unwrap().to_owned();
    let path = format!("/v1/o/{address}");
    let etag = format!("\"{address}\"");
    let len = data.len().to_string();

    // If-Range with the object's ETag: the range is served.
    let r = request_bytes(
        g,
        "GET",
        &path,
        &[("Range", "bytes=10-19"), ("If-Range", &etag)],
        b"",
    );
    assert_eq!(r.0, 206);
    assert_eq!(r.2, &data[10..20]);
    // Any other validator — another tag, a weak tag, an HTTP-date — and the
    // Range is ignored: 200 with the whole body, no Content-Range.
    let other = format!("\"b3:{}\"", "0".repeat(64));
    let weak = format!("W/{etag}");
    for validator in [
        other.as_str(),
        weak.as_str(),
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        let r = request_bytes(
            g,
            "GET",
            &path,
            &[("Range", "bytes=10-19"), ("If-Range", validator)],
            b"",
        );
        assert_eq!(r.0, 200, "If-Range: {validator}");
        assert_eq!(r.2, data, "If-Range: {validator}");
        assert_eq!(common::header(&r.1, "content-range"), None);
    }
    // HEAD ignores Range: 200 and the full length.
    let r = request_bytes(g, "HEAD", &path, &[("Range", "bytes=10-19")], b"");
    assert_eq!(r.0, 200);
    assert_eq!(common::header(&r.1, "content-length"), Some(len.as_str()));
    assert_eq!(common::header(&r.1, "content-range"), None);
    let r = request_bytes(g, "HEAD", &path, &[("Range", "bytes=999999999-")], b"");
    assert_eq!(r.0, 200, "an unsatisfiable Range on HEAD is ignored too");

    // Every 405 names the route's methods in Allow.
    let metrics = node.addr("metrics");
    let admin = node.addr("admin");
    for (addr, method, p, allow) in [
        (g, "POST", "/v1/o", "PUT"),
        (g, "POST", path.as_str(), "GET, HEAD, PUT, DELETE"),
        (g, "DELETE", "/v1/view/site", "GET, HEAD"),
        (g, "PUT", "/v1/topics/news/messages", "GET, POST"),
        (g, "GET", "/v1/topics/news/receive", "POST"),
        (g, "PATCH", "/v1/names/site", "GET, HEAD, PUT, DELETE"),
        (g, "GET", "/v1/uploads", "POST"),
        (g, "POST", "/v1/uploads/00000000000000aa", "GET, DELETE"),
        (g, "GET", "/v1/uploads/00000000000000aa/complete", "POST"),
        (g, "GET", "/v1/uploads/00000000000000aa/0", "PUT"),
        (metrics, "POST", "/readyz", "GET, HEAD"),
        (admin, "POST", "/api/v1/status", "GET"),
        (admin, "GET", "/api/v1/reload", "POST"),
    ] {
        let r = request(addr, method, p, &[], b"");
        assert_eq!(r.status, 405, "{method} {p}: {}", r.body);
        assert_eq!(r.header("allow"), Some(allow), "{method} {p}");
    }

    // A content coding the gateway does not take: 415 with the ones it does.
    let r = request(g, "PUT", "/v1/o", &[("Content-Encoding", "br")], b"abc");
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(r.header("accept-encoding"), Some("gzip, zstd"));
}

/// The gateway's request id reaches a remote downstream: a request sent
/// without one gets a generated id, and the storage node behind the
/// gateway answers under that same id (its problem body names it), so one
/// grep finds the request in both nodes' logs. A method of the client's
/// own making is counted under `method="other"`, never as a new series.
#[test]
fn a_forwarded_request_keeps_the_gateways_request_id() {
    let store = NodeBuilder::new().arg("--roles").arg("storage").start();
    store.wait_ready();
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("omnigate,index")
        .config_extra(&format!(
            "[omnigate.downstream]\nstorage = \"http://{}\"\n",
            store.addr("storage")
        ))
        .start();
    node.wait_ready();
    let g = node.addr("omnigate");
    let missing = format!("/v1/o/b3:{}", "0".repeat(64));
    let r = request(g, "GET", &missing, &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    let id = r.header("x-request-id").expect("an id").to_owned();
    assert_eq!(id.len(), 16, "{id}");
    assert_eq!(r.json()["corr_id"], id.as_str(), "{}", r.body);

    let r = request(g, "BREW", "/v1/o", &[], b"");
    assert_eq!(r.status, 405, "{}", r.body);
    let m = request(node.addr("metrics"), "GET", "/metrics", &[], b"").body;
    assert!(m.contains("method=\"other\""), "{m}");
    assert!(!m.contains("BREW"), "{m}");
}
