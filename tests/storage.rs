//! The storage role's HTTP API against the real binary (`--roles storage`,
//! so the role serves its own listener).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{body_of, request, try_request, NodeBuilder};

fn b3(data: &[u8]) -> String {
    format!("b3:{}", blake3::hash(data).to_hex())
}

fn storage_node() -> common::Node {
    let node = NodeBuilder::new().arg("--roles").arg("storage").start();
    node.wait_ready();
    node
}

#[test]
fn put_get_head_range_etag_round_trip() {
    let node = storage_node();
    let s = node.addr("storage");
    let data = body_of(200 * 1024 + 7, 1);
    let addr = b3(&data);

    let r = request(s, "PUT", "/v1/o", &[], &data);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["address"], addr);
    assert_eq!(r.json()["size"], data.len());
    // Same content again: already there.
    assert_eq!(request(s, "PUT", "/v1/o", &[], &data).status, 200);

    let path = format!("/v1/o/{addr}");
    let r = common::request_bytes(s, "GET", &path, &[], b"");
    assert_eq!(r.0, 200);
    assert_eq!(r.2, data, "the bytes come back exactly");
    let etag = format!("\"{addr}\"");
    assert_eq!(common::header(&r.1, "etag"), Some(etag.as_str()));
    assert_eq!(
        common::header(&r.1, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(common::header(&r.1, "accept-ranges"), Some("bytes"));

    let r = common::request_bytes(s, "HEAD", &path, &[], b"");
    assert_eq!(r.0, 200);
    assert_eq!(
        common::header(&r.1, "content-length"),
        Some(data.len().to_string().as_str())
    );
    assert!(r.2.is_empty());

    let r = common::request_bytes(s, "GET", &path, &[("If-None-Match", &etag)], b"");
    assert_eq!(r.0, 304);

    // A range across the 64 KiB chunk boundary.
    let r = common::request_bytes(s, "GET", &path, &[("Range", "bytes=65530-65545")], b"");
    assert_eq!(r.0, 206);
    assert_eq!(r.2, &data[65530..65546]);
    assert_eq!(
        common::header(&r.1, "content-range"),
        Some(format!("bytes 65530-65545/{}", data.len()).as_str())
    );
    let r = request(s, "GET", &path, &[("Range", "bytes=999999999-")], b"");
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );
}

#[test]
fn digest_checked_put() {
    let node = storage_node();
    let s = node.addr("storage");
    let data = body_of(1000, 2);
    let path = format!("/v1/o/{}", b3(&data));
    assert_eq!(request(s, "PUT", &path, &[], &data).status, 201);
    assert_eq!(request(s, "PUT", &path, &[], &data).status, 200);
    let other = body_of(1000, 3);
    let wrong = format!("/v1/o/{}", b3(&other));
    let r = request(s, "PUT", &wrong, &[], &data);
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["reason"], "digest_mismatch");
    // Nothing was kept under either address for the mismatched body.
    assert_eq!(request(s, "GET", &wrong, &[], b"").status, 404);
}

#[test]
fn bad_input_gets_clear_problems() {
    let node = storage_node();
    let s = node.addr("storage");
    let good = b3(b"x");
    for bad in [
        good.to_uppercase(),
        good[3..].to_string(),
        good[..40].to_string(),
        format!("{good}00"),
    ] {
        let r = request(s, "GET", &format!("/v1/o/{bad}"), &[], b"");
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["reason"], "bad_address");
    }
    assert_eq!(
        request(s, "GET", &format!("/v1/o/{good}"), &[], b"").json()["reason"],
        "not_found"
    );
    assert_eq!(request(s, "POST", "/v1/o", &[], b"").status, 405);

    // Judged from Content-Length, before any body byte is read.
    let r = common::request_declaring(s, "PUT", "/v1/o", (1 << 20) + 1);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["reason"], "body_cap");
    // A body that turns out larger than the cap without declaring it
    // (chunked) is cut off as it streams.
    let r = common::request_chunked(s, "PUT", "/v1/o", &vec![7u8; (1 << 20) + 10]);
    assert_eq!(r.status, 413);

    let r = request(s, "PUT", "/v1/o", &[("Content-Encoding", "gzip")], b"abc");
    assert_eq!(r.status, 415);

    // A body cut short (the client closes halfway) is no object: nothing
    // of it, nor of the over-cap body above, is kept.
    let mut c = std::net::TcpStream::connect(s).unwrap();
    use std::io::{Read, Write};
    write!(
        c,
        "PUT /v1/o HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n"
    )
    .unwrap();
    c.write_all(&body_of(200_000, 9)).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(!answer.starts_with("HTTP/1.1 20"), "{answer}");
    assert_eq!(node.metric("storage_chunks"), Some(0.0));
    assert_eq!(node.metric("storage_bytes_stored"), Some(0.0));
}

#[test]
fn writes_need_the_write_token_when_one_is_configured() {
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("storage")
        .config_extra("[auth]\nwrite_tokens = [\"w-123\"]\n")
        .start();
    node.wait_ready();
    let s = node.addr("storage");
    let r = request(s, "PUT", "/v1/o", &[], b"hello");
    assert_eq!(r.status, 401);
    let r = request(
        s,
        "PUT",
        "/v1/o",
        &[("Authorization", "Bearer nope")],
        b"hello",
    );
    assert_eq!(r.status, 403);
    let ok = [("Authorization", "Bearer w-123")];
    let r = request(s, "PUT", "/v1/o", &ok, b"hello");
    assert_eq!(r.status, 201);
    let path = format!("/v1/o/{}", b3(b"hello"));
    // Reads are open; deletes need the token.
    assert_eq!(request(s, "GET", &path, &[], b"").status, 200);
    assert_eq!(request(s, "DELETE", &path, &[], b"").status, 401);
    assert_eq!(request(s, "DELETE", &path, &ok, b"").status, 204);
    assert_eq!(request(s, "GET", &path, &[], b"").status, 404);
    assert_eq!(request(s, "DELETE", &path, &ok, b"").status, 404);
}

#[test]
fn what_was_stored_is_not_kept_resident() {
    // Without the role's own read cache, what stays resident after 96 MiB
    // of PUTs is the file's page cache (the kernel's, not this process's)
    // and redb's page cache, which is bounded (kernel::db): with redb's
    // default it kept every page written, up to 1 GiB.
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("storage")
        .config_replace("[storage]\n", "[storage]\nread_cache_bytes = 0\n")
        .start();
    node.wait_ready();
    let s = node.addr("storage");
    let first = body_of(1 << 20, 0);
    assert_eq!(request(s, "PUT", "/v1/o", &[], &first).status, 201);
    let before = common::rss_kib(node.pid());
    for i in 1..=96u8 {
        let r = request(s, "PUT", "/v1/o", &[], &body_of(1 << 20, i));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let grown = common::rss_kib(node.pid()).saturating_sub(before);
    assert!(grown < 40 * 1024, "96 MiB stored, RSS grew by {grown} KiB");
    let r = common::request_bytes(s, "GET", &format!("/v1/o/{}", b3(&first)), &[], b"");
    assert_eq!((r.0, &r.2), (200, &first));
}

/// (address, bytes) of every PUT that got 201.
type Acked = Vec<(String, Vec<u8>)>;

#[test]
fn every_acknowledged_put_survives_kill_9() {
    acknowledged_puts_survive_kill_9(1, 200);
}

/// 64 clients at once: their PUTs share durable commits (group commit),
/// and still none is acknowledged before it is durable.
#[test]
fn every_acknowledged_put_of_64_concurrent_writers_survives_kill_9() {
    acknowledged_puts_survive_kill_9(64, 400);
}

/// `writers` clients PUT objects (1–61 KiB) until the node is killed with
/// SIGKILL, once `enough` PUTs were acknowledged; after a restart every
/// acknowledged object reads back whole.
fn acknowledged_puts_survive_kill_9(writers: u32, enough: usize) {
    let (mut node, dir, cfg_path) = common::restartable("storage");
    let s = node.addr("storage");

    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for i in 0..1000u32 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let data = body_of(1024 + (i as usize % 7) * 10_000, (i % 251) as u8)
                        .into_iter()
                        .chain(i.to_be_bytes())
                        .chain(w.to_be_bytes())
                        .collect::<Vec<u8>>();
                    match try_request(s, "PUT", "/v1/o", &[], &data) {
                        Ok(r) if r.status == 201 => acked.lock().unwrap().push((b3(&data), data)),
                        Ok(r) => panic!("PUT {w}/{i}: {} {}", r.status, r.body),
                        Err(_) => break, // the node is gone
                    }
                }
            })
        })
        .collect();
    // Kill the node mid-stream, once a good number of PUTs were acknowledged.
    let got = common::poll(Duration::from_secs(120), || {
        (acked.lock().unwrap().len() >= enough).then_some(())
    });
    assert!(got.is_some(), "PUTs too slow:\n{}", node.log_dump());
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= enough);
    let node = common::restarted(dir, cfg_path, "storage");
    let s = node.addr("storage");
    for (addr, data) in &acked {
        let r = common::request_bytes(s, "GET", &format!("/v1/o/{addr}"), &[], b"");
        assert_eq!(r.0, 200, "acknowledged {addr} lost after kill -9");
        assert_eq!(&r.2, data, "{addr} came back different");
    }
}

#[test]
fn a_resumable_upload_survives_kill_9_between_parts() {
    let (mut node, dir, cfg_path) = common::restartable("storage");
    let s = node.addr("storage");
    // 2.5 MiB: larger than the 1 MiB body cap, so it must be uploaded.
    let data = body_of(5 << 19, 42);
    let parts: Vec<&[u8]> = data.chunks(1 << 20).collect();
    assert_eq!(parts.len(), 3);

    let r = request(s, "POST", "/v1/uploads", &[], b"");
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = request(s, "PUT", &format!("/v1/uploads/{id}/0"), &[], parts[0]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["next_part"], 1);
    let r = request(s, "PUT", &format!("/v1/uploads/{id}/2"), &[], parts[2]);
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["reason"], "part_order");

    node.signal("KILL");
    node.wait_exit(Duration::from_secs(30));

    let node = common::restarted(dir, cfg_path, "storage");
    let s = node.addr("storage");
    let r = request(s, "GET", &format!("/v1/uploads/{id}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["next_part"], 1, "the acknowledged part survived");
    for (n, p) in parts.iter().enumerate().skip(1) {
        let r = request(s, "PUT", &format!("/v1/uploads/{id}/{n}"), &[], p);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = request(s, "POST", &format!("/v1/uploads/{id}/complete"), &[], b"");
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["address"], b3(&data));
    let got = common::request_bytes(s, "GET", &format!("/v1/o/{}", b3(&data)), &[], b"");
    assert_eq!(got.0, 200);
    assert!(got.2 == data, "the uploaded object comes back exactly");
    assert_eq!(
        request(s, "GET", &format!("/v1/uploads/{id}"), &[], b"").status,
        404
    );
    assert_eq!(
        request(s, "GET", "/v1/uploads/nothex", &[], b"").status,
        400
    );
}

/// Storage's own listener takes bodies only as they are: its 415 says so in
/// `Accept-Encoding`; HEAD and a mismatched `If-Range` ignore `Range`.
#[test]
fn own_listener_415_names_identity_and_range_is_for_get_only() {
    let node = storage_node();
    let s = node.addr("storage");
    let data = body_of(70_000, 4);
    let path = format!("/v1/o/{}", b3(&data));
    let r = request(s, "PUT", "/v1/o", &[("Content-Encoding", "gzip")], &data);
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(r.header("accept-encoding"), Some("identity"));
    assert_eq!(request(s, "PUT", "/v1/o", &[], &data).status, 201);
    let r = common::request_bytes(s, "HEAD", &path, &[("Range", "bytes=0-9")], b"");
    assert_eq!(r.0, 200);
    assert_eq!(common::header(&r.1, "content-length"), Some("70000"));
    let r = common::request_bytes(
        s,
        "GET",
        &path,
        &[("Range", "bytes=0-9"), ("If-Range", "\"b3:x\"")],
        b"",
    );
    assert_eq!((r.0, r.2.len()), (200, data.len()));
}
