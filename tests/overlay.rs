//! Overlay sessions between real nodes on loopback: pinned keys connect
//! (TLS 1.3 + HELLO both ways), an unknown key is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::time::Duration;

use common::NodeBuilder;

/// A node running only the overlay, with the node key `seed` written into
/// its data dir before start, and `peers` as `[[overlay.peers]]` tables.
fn overlay_node(
    seed: u8,
    peers: &[(String, Option<std::net::SocketAddr>)],
) -> (common::Node, String) {
    overlay_node_via(seed, peers, "tcp", "classical")
}

fn overlay_node_via(
    seed: u8,
    peers: &[(String, Option<std::net::SocketAddr>)],
    transport: &str,
    pq_mode: &str,
) -> (common::Node, String) {
    let b = NodeBuilder::new().arg("--roles").arg("overlay");
    let data = b.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let key = format!("{:02x}", seed).repeat(32);
    std::fs::write(data.join("node.key"), format!("{key}\n")).unwrap();
    let id = ron_overlay::identity::Identity::from_seed([seed; 32])
        .unwrap()
        .node_id();
    let mut tables = String::new();
    for (k, addr) in peers {
        tables.push_str(&format!("[[overlay.peers]]\npublic_key = \"{k}\"\n"));
        if let Some(a) = addr {
            tables.push_str(&format!("addr = \"{a}\"\ntransport = \"{transport}\"\n"));
        }
    }
    let node = b
        .config_replace(
            "[overlay]\naddr = \"127.0.0.1:0\"\n",
            &format!("[overlay]\naddr = \"127.0.0.1:0\"\npq_mode = \"{pq_mode}\"\n"),
        )
        .config_extra(&tables)
        .start();
    node.wait_ready();
    (node, id)
}

/// A test harness's TLS client: `evil`'s certificate, trusting `peer`.
fn harness_connector(
    evil: &ron_overlay::identity::Identity,
    peer: [u8; 32],
) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        ron_overlay::tls::client_config(
            evil,
            std::sync::Arc::new(ron_overlay::tls::Pins::new([peer])),
            ron_overlay::PqMode::Classical,
        )
        .unwrap(),
    ))
}

/// An encoded HELLO frame from `node_id`, granting a window of 16.
fn hello_wire(node_id: &str) -> Vec<u8> {
    hello_granting(node_id, 16)
}

/// An encoded HELLO frame from `node_id` granting `window` per stream.
fn hello_granting(node_id: &str, window: u32) -> Vec<u8> {
    let h = ron_oap::Hello::new(node_id, 1 << 20, window);
    ron_oap::Encoder::default()
        .encode(
            &ron_oap::FrameSpec::hello(ron_oap::Flags::REQ),
            &[],
            bytes::Bytes::from(h.to_json()),
        )
        .unwrap()
        .to_vec()
}

/// Stores `data` through `node`'s gateway; its address.
fn put_object(node: &common::Node, data: &[u8]) -> String {
    let r = common::request(node.addr("omnigate"), "PUT", "/v1/o", &[], data);
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["address"].as_str().unwrap().to_owned()
}

/// The START payload of a blob request (app protocol 2) for all of
/// `address`.
fn blob_request(address: &str) -> Vec<u8> {
    serde_json::to_vec(&ron_overlay::blob::BlobRequest {
        address: address.to_owned(),
        range: None,
    })
    .unwrap()
}

fn id_of(seed: u8) -> String {
    ron_overlay::identity::Identity::from_seed([seed; 32])
        .unwrap()
        .node_id()
}

/// A GET of `path` through `node`'s gateway that its peers could not
/// serve: 404, with `rejected_total{reason}` counted.
fn missed_and_counted(node: &common::Node, path: &str, headers: &[(&str, &str)], reason: &str) {
    let r = common::request(node.addr("omnigate"), "GET", path, headers, b"");
    assert_eq!(r.status, 404, "{path}: {}", r.body);
    let metric = format!("rejected_total{{reason=\"{reason}\"}}");
    assert!(
        metric_at_least(node, &metric, 1.0),
        "{}",
        node.get("metrics", "/metrics").body
    );
}

fn metric_at_least(node: &common::Node, prefix: &str, n: f64) -> bool {
    node.get("metrics", "/metrics").body.lines().any(|l| {
        l.starts_with(prefix)
            && l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= n)
    })
}

#[test]
fn pinned_peers_connect_and_an_unknown_key_is_refused() {
    // A accepts B; B dials A; C dials A but A does not know C.
    let (a, a_id) = overlay_node(1, &[(id_of(2), None)]);
    let a_addr = a.addr("overlay");
    let (b, _) = overlay_node(2, &[(a_id.clone(), Some(a_addr))]);
    let up = |n: &common::Node, peer: &str| {
        n.wait_for_log(Duration::from_secs(60), |v| {
            v["fields"]["message"] == "overlay session up" && v["fields"]["peer"] == peer
                || v["message"] == "overlay session up" && v["peer"] == peer
        })
    };
    assert!(
        up(&b, &a_id).is_some(),
        "B never got a session:\n{}",
        b.log_dump()
    );
    assert!(
        up(&a, &id_of(2)).is_some(),
        "A never got a session:\n{}",
        a.log_dump()
    );
    assert!(metric_at_least(&a, "overlay_sessions_active", 1.0));
    let peers = a.get("admin", "/api/v1/peers").json();
    assert_eq!(peers["node_id"], a_id.as_str());
    let list = peers["peers"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{peers}");
    assert_eq!(list[0]["peer_id"], id_of(2).as_str());
    assert_eq!(list[0]["transport"], "tcp");
    assert_eq!(list[0]["direction"], "in");
    assert_eq!(list[0]["kex"], "X25519");
    // Each side pings the other at once: the round trip is listed.
    let rtt = common::poll(Duration::from_secs(30), || {
        let p = a.get("admin", "/api/v1/peers").json();
        p["peers"][0]["rtt_ms"].as_f64()
    });
    assert!(rtt.is_some_and(|ms| ms > 0.0), "{}", a.log_dump());

    let (c, _) = overlay_node(3, &[(a_id.clone(), Some(a_addr))]);
    let refused = common::poll(Duration::from_secs(60), || {
        metric_at_least(&a, "handshake_total{result=\"refused\"", 1.0).then_some(())
    });
    assert!(refused.is_some(), "{}", a.log_dump());
    let c_refused = common::poll(Duration::from_secs(60), || {
        metric_at_least(&c, "handshake_total{result=\"refused\"", 1.0).then_some(())
    });
    assert!(c_refused.is_some(), "{}", c.log_dump());
    // A still has exactly its one session, with B.
    let m = a.get("metrics", "/metrics").body;
    assert!(m.lines().any(|l| l == "overlay_sessions_active 1"), "{m}");
}

/// A peer that opens TCP and never speaks is cut off at the handshake
/// timeout and counted.
#[test]
fn a_silent_connection_is_cut_at_the_handshake_timeout() {
    use std::io::Read;
    let (a, _) = overlay_node(4, &[]);
    let mut s = std::net::TcpStream::connect(a.addr("overlay")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).unwrap(), 0, "the node closes the connection");
    let counted = common::poll(Duration::from_secs(30), || {
        metric_at_least(&a, "handshake_total{result=\"timeout\",kex=\"none\"}", 1.0).then_some(())
    });
    assert!(counted.is_some(), "{}", a.get("metrics", "/metrics").body);
}

/// A harness peer speaking raw OAP/1 over a pinned TLS connection: each
/// protocol violation is answered with an ERROR frame naming its reason
/// before the node closes, and the node stays ready.
#[test]
fn a_malicious_peer_gets_the_right_reject_and_the_node_stays_ready() {
    use bytes::BytesMut;
    use ron_oap::{Decoded, Decoder, Flags, Header, HEADER_LEN};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let evil = ron_overlay::identity::Identity::from_seed([9; 32]).unwrap();
    let (a, a_id) = overlay_node(5, &[(evil.node_id(), None)]);
    let a_key = ron_overlay::identity::parse_key_hex(&a_id).unwrap();
    let connector = harness_connector(&evil, a_key);
    let addr = a.addr("overlay");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let hello = hello_wire(&evil.node_id());
    let raw_header = |flags: u16, len: u32| {
        Header {
            len,
            ver: 1,
            flags: Flags(flags),
            code: 0,
            app_proto_id: 1,
            tenant: 0,
            cap_len: 0,
            corr_id: 7,
        }
        .to_bytes()
        .to_vec()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad_hello", raw_header(0b1_1001, HEADER_LEN as u32)), // a START before HELLO
        (
            "bad_flags",
            [
                hello.clone(),
                raw_header(0x0100 | 0b1_1001, HEADER_LEN as u32),
            ]
            .concat(),
        ),
        (
            "frame_oversize",
            [hello.clone(), raw_header(0b1_1001, 2 << 20)].concat(),
        ),
        ("bad_hello", [hello.clone(), hello.clone()].concat()), // a second HELLO
    ];
    for (reason, wire) in cases {
        let got = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = connector
                .connect(ron_overlay::tls::peer_name(), tcp)
                .await
                .unwrap();
            tls.write_all(&wire).await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut out)).await;
            out
        });
        let mut buf = BytesMut::from(&got[..]);
        let dec = Decoder::default();
        let mut frames = Vec::new();
        while let Ok(Decoded::Frame(f)) = dec.decode(&mut buf) {
            frames.push(f);
        }
        let last = frames
            .last()
            .unwrap_or_else(|| panic!("{reason}: no frame back"));
        assert!(last.header.code >= 400, "{reason}: {:?}", last.header);
        let body: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!(body["reason"], reason, "{body}");
    }
    a.wait_ready();
    let m = a.get("metrics", "/metrics").body;
    for reason in ["bad_hello", "bad_flags", "frame_oversize"] {
        assert!(
            m.contains(&format!("rejected_total{{reason=\"{reason}\"}}")),
            "{reason} not counted:\n{m}"
        );
        // The oap runbook's series, through crates/oap's health hook: the
        // decoder's rejects (bad_flags, frame_oversize) and the session's
        // (bad_hello) alike.
        assert!(
            metric_at_least(
                &a,
                &format!("oap_rejects_total{{reason=\"{reason}\"}}"),
                1.0
            ),
            "oap_rejects_total{{reason={reason}}} not counted:\n{m}"
        );
    }
    assert!(
        metric_at_least(&a, "oap_frames_total{kind=\"hello\"}", 3.0),
        "{m}"
    );
    assert!(
        metric_at_least(&a, "oap_read_frame_seconds_count", 3.0),
        "{m}"
    );
    assert!(
        m.contains("oap_read_frame_seconds_bucket{le=\"0.02\"}"),
        "{m}"
    );
    // /readyz shows the overlay's four readiness inputs.
    let ready = a.get("metrics", "/readyz").json();
    let inputs = &ready["roles"]["overlay"]["inputs"];
    for input in [
        "oap_parser_ready",
        "oap_reject_rate_ok",
        "oap_ack_window_ok",
        "oap_backpressure_ok",
    ] {
        assert!(inputs[input].is_boolean(), "{input} missing: {ready}");
    }
}

/// OAP-1 §4 as an independent peer sees it: the node that accepts the
/// connection sends its HELLO with RESP (the dialer's is the REQ), and a
/// `node_id` written `ed25519:<hex>` names the same key as bare hex — the
/// session comes up either way. A `node_id` naming another key than the
/// one the peer authenticated with is `bad_hello`.
#[test]
fn the_acceptors_hello_is_resp_and_an_ed25519_prefixed_node_id_is_the_same_key() {
    use ron_oap::{Flags, FrameKind};

    let evil = ron_overlay::identity::Identity::from_seed([0x61; 32]).unwrap();
    let evil_id = evil.node_id();
    let (a, a_id) = overlay_node(0x51, &[(evil_id.clone(), None)]);
    let addr = a.addr("overlay");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (corr, hello_id) in [(5u64, format!("ed25519:{evil_id}")), (7, evil_id.clone())] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut raw = Raw::over_with(&evil, &a_id, tcp, hello_wire(&hello_id)).await;
            raw.answer_pings = true;
            let first = raw.next().await.expect("the node's HELLO");
            assert_eq!(first.kind(), FrameKind::Hello);
            assert!(
                first.header.flags.contains(Flags::RESP)
                    && !first.header.flags.contains(Flags::REQ),
                "the acceptor's HELLO flags: {:?}",
                first.header.flags
            );
            let theirs = ron_oap::Hello::parse(&first.payload).unwrap();
            assert_eq!(
                theirs.node_key(),
                ron_overlay::identity::parse_key_hex(&a_id),
                "{hello_id}"
            );
            // The session is up: the node answers a ping.
            raw.frames_before_ping_answer(corr).await;
        }
        let other = format!("ed25519:{}", "22".repeat(32));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut raw = Raw::over_with(&evil, &a_id, tcp, hello_wire(&other)).await;
        let mut last = None;
        while let Some(f) = raw.next().await {
            last = Some(f);
        }
        let last = last.expect("an ERROR frame before the close");
        assert!(last.header.code >= 400, "{:?}", last.header);
        let body: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!(body["reason"], "bad_hello", "{body}");
    });
    a.wait_ready();
}

#[test]
fn two_nodes_connect_over_quic() {
    let (a, a_id) = overlay_node(6, &[(id_of(7), None)]);
    let (b, _) = overlay_node_via(
        7,
        &[(a_id.clone(), Some(a.addr("overlay")))],
        "quic",
        "classical",
    );
    let up = |n: &common::Node, peer: &str| {
        n.wait_for_log(Duration::from_secs(60), |v| {
            v["message"] == "overlay session up" && v["peer"] == peer && v["transport"] == "quic"
        })
    };
    assert!(up(&b, &a_id).is_some(), "{}", b.log_dump());
    assert!(up(&a, &id_of(7)).is_some(), "{}", a.log_dump());
}

#[test]
fn hybrid_nodes_negotiate_x25519mlkem768_and_count_it() {
    let (a, a_id) = overlay_node_via(8, &[(id_of(9), None)], "tcp", "hybrid");
    let (b, _) = overlay_node_via(
        9,
        &[(a_id.clone(), Some(a.addr("overlay")))],
        "tcp",
        "hybrid",
    );
    let up = b.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "overlay session up" && v["peer"] == a_id.as_str()
    });
    assert_eq!(up.expect("session")["kex"], "X25519MLKEM768");
    let counted = common::poll(Duration::from_secs(30), || {
        metric_at_least(
            &a,
            "handshake_total{result=\"ok\",kex=\"X25519MLKEM768\"}",
            1.0,
        )
        .then_some(())
    });
    assert!(counted.is_some(), "{}", a.get("metrics", "/metrics").body);
}

/// A node with overlay, storage and omnigate; `omnigate` and `peers` as in
/// `overlay_node`.
fn full_node(seed: u8, omnigate: &str, peers: &str) -> common::Node {
    let b = NodeBuilder::new()
        .arg("--roles")
        .arg("overlay,storage,omnigate");
    let data = b.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("node.key"), format!("{:02x}", seed).repeat(32)).unwrap();
    let node = b
        .config_replace(
            "[omnigate]\naddr = \"127.0.0.1:0\"",
            &format!("[omnigate]\naddr = \"127.0.0.1:0\"\n{omnigate}"),
        )
        .config_extra(peers)
        .start();
    node.wait_ready();
    node
}

#[test]
fn an_object_on_a_is_fetched_through_bs_gateway_verified_and_kept() {
    let a = full_node(
        10,
        "",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\n[limits]\nmax_body_bytes = 4194304\n",
            id_of(11)
        ),
    );
    // B grants a window of 1024 frames per stream: it acknowledges on its
    // own only after 512, far past A's cap of 32 unacknowledged frames, so
    // the transfer moves only because A asks for ACKs at its cap.
    let b = full_node(
        11,
        "fetch_from_peers = true",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\naddr = \"{}\"\n[overlay.peer]\nsend_window_frames = 1024\n[limits]\nmax_body_bytes = 4194304\n",
            id_of(10),
            a.addr("overlay")
        ),
    );
    let up = b.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "overlay session up"
    });
    assert!(up.is_some(), "{}", b.log_dump());

    // 49 frames of up to 64 KiB.
    let data = common::body_of((3 << 20) + 5, 42);
    let address = put_object(&a, &data);
    let path = format!("/v1/o/{address}");

    let (status, _, body) = common::request_bytes(b.addr("omnigate"), "GET", &path, &[], b"");
    assert_eq!(status, 200);
    assert_eq!(body, data, "B served A's bytes");
    // B keeps it: with A gone, B still serves it.
    drop(a);
    let (status, _, body) = common::request_bytes(
        b.addr("omnigate"),
        "GET",
        &path,
        &[("Range", "bytes=100-199")],
        b"",
    );
    assert_eq!(status, 206);
    assert_eq!(body, &data[100..200]);
    // An object nobody has is still a 404.
    let r = common::request(
        b.addr("omnigate"),
        "GET",
        &format!("/v1/o/b3:{}", "e".repeat(64)),
        &[],
        b"",
    );
    assert_eq!(r.status, 404);
}

/// A peer that answers a blob fetch with bytes that do not hash to the
/// address: nothing is stored or served, the session is dropped and
/// counted, and the gateway answers 404.
#[test]
fn a_peer_sending_corrupt_blob_bytes_is_disconnected_and_nothing_is_served() {
    use bytes::{Bytes, BytesMut};
    use ron_oap::{Decoded, Decoder, Encoder, Flags, FrameSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let liar = ron_overlay::identity::Identity::from_seed([12; 32]).unwrap();
    let b_id = id_of(13);
    let b_key = ron_overlay::identity::parse_key_hex(&b_id).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
        ron_overlay::tls::server_config(
            &liar,
            std::sync::Arc::new(ron_overlay::tls::Pins::new([b_key])),
            ron_overlay::PqMode::Classical,
        )
        .unwrap(),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let liar_addr = listener.local_addr().unwrap();
    let liar_id = liar.node_id();
    // An address the liar never answers for (it only stalls).
    let stall = format!("b3:{}", blake3::hash(b"never answered").to_hex());
    let stall_req = stall.clone();
    // The liar: HELLO, then every blob request gets the wrong bytes.
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut enc = Encoder::default();
            let _ = tls.write_all(&hello_wire(&liar_id)).await;
            let dec = Decoder::default();
            let mut buf = BytesMut::new();
            while tls.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                while let Ok(Decoded::Frame(frame)) = dec.decode(&mut buf) {
                    let asked: Option<ron_overlay::blob::BlobRequest> =
                        serde_json::from_slice(&frame.payload).ok();
                    if frame.header.app_proto_id == 2
                        && frame.header.code == 0
                        && asked.is_some_and(|a| a.address != stall_req)
                    {
                        // The right size for "the real content" and no
                        // proof (one group), then other bytes of that
                        // length.
                        let mut wrong = 16u64.to_le_bytes().to_vec();
                        wrong.extend_from_slice(b"not what you ask");
                        let spec = FrameSpec::start(2, frame.header.corr_id, Flags::RESP)
                            .with_flags(Flags::END);
                        let f = enc.encode(&spec, &[], Bytes::from(wrong)).unwrap();
                        let _ = tls.write_all(&f.to_vec()).await;
                    }
                }
            }
        }
    });

    let b = full_node(
        13,
        "fetch_from_peers = true",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\naddr = \"{liar_addr}\"\n",
            liar.node_id()
        ),
    );
    let up = b.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "overlay session up"
    });
    assert!(up.is_some(), "{}", b.log_dump());

    // A peer that never answers: after `overlay.read_timeout` (5 s) the
    // fetch is given up and counted, the gateway answers the local 404,
    // and the session stays up.
    missed_and_counted(&b, &format!("/v1/o/{stall}"), &[], "fetch_stalled");

    let address = format!("b3:{}", blake3::hash(b"the real content").to_hex());
    let r = common::request(
        b.addr("omnigate"),
        "GET",
        &format!("/v1/o/{address}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let counted = common::poll(Duration::from_secs(30), || {
        metric_at_least(&b, "rejected_total{reason=\"blob_mismatch\"}", 1.0).then_some(())
    });
    assert!(counted.is_some(), "{}", b.get("metrics", "/metrics").body);
    let dropped = b.wait_for_log(Duration::from_secs(30), |v| {
        v["message"] == "overlay session ended"
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("do not match the address"))
    });
    assert!(dropped.is_some(), "{}", b.log_dump());
    b.wait_ready();
}

const GROUP: usize = ron_kernel::outboard::GROUP_BYTES as usize;

/// How a scripted holder answers blob requests for its one object.
#[derive(Clone, Copy)]
enum Script {
    /// Size, proof and the groups asked for, as a node would.
    Honest,
    /// As `Honest`, with one byte of this group flipped.
    FlipByteIn(u64),
    /// As `Honest`, but the connection is dropped after this many groups.
    DieAfter(usize),
}

/// A peer (node key `seed`) that dials `node` (key `node_key`), says
/// HELLO and answers blob requests for `data` by `script`; every range it
/// is asked for is pushed to `asked`. Returns once its HELLO is sent.
fn scripted_holder(
    rt: &tokio::runtime::Runtime,
    seed: u8,
    node: std::net::SocketAddr,
    node_key: [u8; 32],
    data: std::sync::Arc<Vec<u8>>,
    script: Script,
    asked: std::sync::Arc<std::sync::Mutex<Vec<Option<[u64; 2]>>>>,
) {
    use bytes::{Bytes, BytesMut};
    use ron_kernel::outboard;
    use ron_oap::{Decoded, Decoder, Encoder, Flags, FrameSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let me = ron_overlay::identity::Identity::from_seed([seed; 32]).unwrap();
    let connector = harness_connector(&me, node_key);
    let address = format!("b3:{}", blake3::hash(&data).to_hex());
    let tree = outboard::Tree::of(&data);
    let mut tls = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(node).await.unwrap();
        let mut tls = connector
            .connect(ron_overlay::tls::peer_name(), tcp)
            .await
            .unwrap();
        tls.write_all(&hello_wire(&me.node_id())).await.unwrap();
        tls
    });
    rt.spawn(async move {
        let (dec, mut enc, mut buf) = (Decoder::default(), Encoder::default(), BytesMut::new());
        while tls.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
            while let Ok(Decoded::Frame(frame)) = dec.decode(&mut buf) {
                let h = frame.header;
                if h.app_proto_id != 2 || h.code != 0 {
                    continue;
                }
                let Ok(req) =
                    serde_json::from_slice::<ron_overlay::blob::BlobRequest>(&frame.payload)
                else {
                    continue;
                };
                if req.address != address {
                    let spec = FrameSpec::error(2, h.corr_id, 404, Flags::RESP);
                    let body =
                        Bytes::from_static(br#"{"reason":"not_found","message":"not here"}"#);
                    let f = enc.encode(&spec, &[], body).unwrap();
                    if tls.write_all(&f.to_vec()).await.is_err() {
                        return;
                    }
                    continue;
                }
                asked.lock().unwrap().push(req.range);
                let size = data.len() as u64;
                let range = req.range.map(|[a, b]| a..b);
                let mut head = size.to_le_bytes().to_vec();
                let group = |g: u64| -> Result<&[u8], ()> {
                    let at = g as usize * GROUP;
                    Ok(&data[at..(at + GROUP).min(data.len())])
                };
                let ranges = outboard::ranges_for(size, range.clone());
                head.extend(tree.proof(&ranges, group).unwrap());
                let mut payloads = vec![Bytes::from(head)];
                for r in outboard::runs(size, range) {
                    for at in (r.start as usize..r.end as usize).step_by(GROUP) {
                        let mut g = data[at..(at + GROUP).min(r.end as usize)].to_vec();
                        if matches!(script, Script::FlipByteIn(k) if at == k as usize * GROUP) {
                            g[1] ^= 0xff;
                        }
                        payloads.push(Bytes::from(g));
                    }
                }
                let n = payloads.len();
                for (i, p) in payloads.into_iter().enumerate() {
                    if matches!(script, Script::DieAfter(k) if i == k + 1) {
                        // The connection ends mid-answer, after every byte
                        // sent so far is out (flushed, closed cleanly, and
                        // what the asker sends drained until it hangs up:
                        // a close with unread input would be a reset, which
                        // can cost the asker bytes it had not read yet).
                        let _ = tls.flush().await;
                        let _ = tls.shutdown().await;
                        let _ = tokio::io::copy(&mut tls, &mut tokio::io::sink()).await;
                        return;
                    }
                    let spec = match (i, i + 1 == n) {
                        (0, true) => {
                            FrameSpec::start(2, h.corr_id, Flags::RESP).with_flags(Flags::END)
                        }
                        (0, false) => FrameSpec::start(2, h.corr_id, Flags::RESP),
                        (_, false) => FrameSpec::data(2, h.corr_id, Flags::RESP),
                        (_, true) => FrameSpec::end(2, h.corr_id, Flags::RESP),
                    };
                    let f = enc.encode(&spec, &[], p).unwrap();
                    if tls.write_all(&f.to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// A node with storage, omnigate fetching from peers, and the keys of
/// `seeds` pinned (they dial it).
fn node_pinning(seed: u8, seeds: &[u8]) -> (common::Node, [u8; 32]) {
    let mut peers = String::new();
    for s in seeds {
        peers.push_str(&format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\n",
            id_of(*s)
        ));
    }
    let node = full_node(seed, "fetch_from_peers = true", &peers);
    let key = ron_overlay::identity::parse_key_hex(&id_of(seed)).unwrap();
    (node, key)
}

/// Waits until `node` has a session up with the peer `seed`.
fn wait_session(node: &common::Node, seed: u8) {
    let id = id_of(seed);
    let up = node.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "overlay session up" && v["peer"] == id.as_str()
    });
    assert!(up.is_some(), "{}", node.log_dump());
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_range_of_an_object_only_a_holds_comes_through_bs_gateway_verified_and_alone() {
    let a = full_node(
        30,
        "",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\n[limits]\nmax_body_bytes = 16777216\n",
            id_of(31)
        ),
    );
    let b = full_node(
        31,
        "fetch_from_peers = true",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\naddr = \"{}\"\n",
            id_of(30),
            a.addr("overlay")
        ),
    );
    wait_session(&b, 30);
    let data = common::body_of((8 << 20) + 5, 7);
    let address = put_object(&a, &data);
    let path = format!("/v1/o/{address}");
    let bytes_in = |n: &common::Node| n.metric("overlay_bytes_total{dir=\"in\"}").unwrap_or(0.0);

    let get_range = |spec: &str| {
        common::request_bytes(b.addr("omnigate"), "GET", &path, &[("Range", spec)], b"")
    };

    // 1 MiB at 3 MiB, on group boundaries and 12,345 bytes off them: the
    // range rounded out to 1 KiB chunks, the last chunk (the size's proof)
    // and the proof's pairs cross the wire, nothing else of the object
    // (16 KiB covers the pairs, 2 KiB of rounding and the framing).
    for from in [3 << 20, (3 << 20) + 12_345] {
        let to = from + (1 << 20) - 1;
        let before = bytes_in(&b);
        let (status, headers, body) = get_range(&format!("bytes={from}-{to}"));
        assert_eq!(status, 206);
        assert_eq!(
            common::header(&headers, "content-range"),
            Some(format!("bytes {from}-{to}/{}", data.len()).as_str())
        );
        assert!(body == data[from..=to], "exactly the range");
        let moved = bytes_in(&b) - before;
        let budget = (1 << 20) + 16 * 1024;
        assert!(
            moved < budget as f64,
            "{moved} bytes came in for a 1 MiB range at {from}"
        );
    }

    // Any bytes, across group boundaries; and past the end.
    for (from, to) in [
        (100usize, 199usize),
        (GROUP - 3, 2 * GROUP + 7),
        (data.len() - 10, data.len() - 1),
    ] {
        let (status, _, body) = get_range(&format!("bytes={from}-{to}"));
        assert_eq!(status, 206);
        assert!(body == data[from..=to], "{from}-{to}");
    }
    // The last n bytes: the size is proved first (the last chunk), then
    // only those bytes cross the wire. More than the object is all of it;
    // none answers as A's own store does.
    let before = bytes_in(&b);
    let (status, headers, body) = get_range("bytes=-1000");
    assert_eq!(status, 206);
    let (len, from) = (data.len(), data.len() - 1000);
    assert_eq!(
        common::header(&headers, "content-range"),
        Some(format!("bytes {from}-{}/{len}", len - 1).as_str())
    );
    assert!(body == data[from..], "the last 1000 bytes");
    let moved = bytes_in(&b) - before;
    assert!(
        moved < 16.0 * 1024.0,
        "{moved} bytes came in for the last 1000"
    );
    let (status, _, body) = get_range(&format!("bytes=-{}", len + 100));
    assert_eq!(status, 206);
    assert!(body == data, "all of it");
    let (status, headers, _) = get_range("bytes=-0");
    let local = common::request(
        a.addr("omnigate"),
        "GET",
        &path,
        &[("Range", "bytes=-0")],
        b"",
    );
    assert_eq!(status, local.status);
    assert_eq!(
        common::header(&headers, "content-range"),
        local.header("content-range")
    );

    let (status, headers, _) = get_range("bytes=99999999-");
    assert_eq!(status, 416);
    assert_eq!(
        common::header(&headers, "content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );
    // A range is streamed, not kept: with A gone B has nothing.
    drop(a);
    let r = common::request(
        b.addr("omnigate"),
        "GET",
        &path,
        &[("Range", "bytes=0-9")],
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn a_holder_that_corrupts_one_byte_of_a_range_is_caught_at_that_group_and_nothing_is_served() {
    let (b, b_key) = node_pinning(33, &[34]);
    let rt = current_thread();
    let data = std::sync::Arc::new(common::body_of(8 * GROUP - 100, 9));
    let asked = std::sync::Arc::default();
    let addr = b.addr("overlay");
    scripted_holder(
        &rt,
        34,
        addr,
        b_key,
        data.clone(),
        Script::FlipByteIn(2),
        asked,
    );
    wait_session(&b, 34);
    let address = format!("b3:{}", blake3::hash(&data).to_hex());
    let range = format!("bytes={}-{}", 2 * GROUP + 10, 2 * GROUP + 20);
    // No byte of a piece that failed.
    let path = format!("/v1/o/{address}");
    missed_and_counted(&b, &path, &[("Range", &range)], "blob_mismatch");
    let cut = b.wait_for_log(Duration::from_secs(30), |v| {
        v["message"] == "overlay session ended"
            && v["error"].as_str().is_some_and(|e| {
                // The range lies in one 1 KiB chunk: that is the piece
                // sent, and the one caught.
                e.contains(&format!("bytes {}..{}", 2 * GROUP, 2 * GROUP + 1024))
                    && e.contains("do not match the address")
            })
    });
    assert!(cut.is_some(), "{}", b.log_dump());
    b.wait_ready();
}

#[test]
fn a_fetch_cut_off_half_way_resumes_at_the_next_peer_from_the_verified_groups() {
    let (b, b_key) = node_pinning(35, &[36, 37, 38, 39]);
    let rt = current_thread();
    let data = std::sync::Arc::new(common::body_of(12 * GROUP - 7, 11));
    let addr = b.addr("overlay");
    let first: std::sync::Arc<std::sync::Mutex<Vec<Option<[u64; 2]>>>> = Default::default();
    let second: std::sync::Arc<std::sync::Mutex<Vec<Option<[u64; 2]>>>> = Default::default();
    // The peer that comes up first is asked first: it sends 6 groups
    // and its connection drops.
    scripted_holder(
        &rt,
        36,
        addr,
        b_key,
        data.clone(),
        Script::DieAfter(6),
        first.clone(),
    );
    wait_session(&b, 36);
    scripted_holder(
        &rt,
        37,
        addr,
        b_key,
        data.clone(),
        Script::Honest,
        second.clone(),
    );
    wait_session(&b, 37);
    let address = format!("b3:{}", blake3::hash(&data).to_hex());
    let (status, _, body) = common::request_bytes(
        b.addr("omnigate"),
        "GET",
        &format!("/v1/o/{address}"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert!(body == data[..], "the whole object, verified and kept");
    assert_eq!(*first.lock().unwrap(), [None], "the whole object, first");
    assert_eq!(
        *second.lock().unwrap(),
        [Some([6 * GROUP as u64, data.len() as u64])],
        "only what the first peer did not deliver"
    );

    // The only peer dies half-way: the fetch fails (404) but keeps the
    // groups that verified; a later fetch, from a peer that came since,
    // asks only for the rest.
    let data = std::sync::Arc::new(common::body_of(10 * GROUP + 3, 12));
    let address = format!("b3:{}", blake3::hash(&data).to_hex());
    let path = format!("/v1/o/{address}");
    let dying: std::sync::Arc<std::sync::Mutex<Vec<Option<[u64; 2]>>>> = Default::default();
    scripted_holder(
        &rt,
        38,
        addr,
        b_key,
        data.clone(),
        Script::DieAfter(4),
        dying.clone(),
    );
    wait_session(&b, 38);
    let r = common::request(b.addr("omnigate"), "GET", &path, &[], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(*dying.lock().unwrap(), [None]);
    let later: std::sync::Arc<std::sync::Mutex<Vec<Option<[u64; 2]>>>> = Default::default();
    scripted_holder(
        &rt,
        39,
        addr,
        b_key,
        data.clone(),
        Script::Honest,
        later.clone(),
    );
    wait_session(&b, 39);
    let (status, _, body) = common::request_bytes(b.addr("omnigate"), "GET", &path, &[], b"");
    assert_eq!(status, 200);
    assert!(body == data[..]);
    assert_eq!(
        *later.lock().unwrap(),
        [Some([4 * GROUP as u64, data.len() as u64])],
        "the second fetch resumed the first one's verified groups"
    );
}

fn registry_node(signer: [u8; 32], seed: u8, peers: String) -> common::Node {
    registry::node(signer, seed, &peers)
}

#[test]
fn registry_commits_on_a_reach_b_through_gossip_and_sync() {
    let signer = [21u8; 32];
    let registry_node = |seed: u8, peers: String| registry_node(signer, seed, peers);
    let a = registry_node(
        22,
        format!("[[overlay.peers]]\npublic_key = \"{}\"\n", id_of(23)),
    );
    let ra = a.addr("registry");
    // A version before B exists: B catches up when the session comes up.
    registry::commit_region(ra, signer, "early", &[]);
    let b = registry_node(
        23,
        format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\naddr = \"{}\"\n",
            id_of(22),
            a.addr("overlay")
        ),
    );
    let rb = b.addr("registry");
    let head_of = |r| common::request(r, "GET", "/registry/head", &[], b"").json();
    let caught_up = common::poll(Duration::from_secs(60), || {
        (head_of(rb)["version"] == 1).then_some(())
    });
    assert!(caught_up.is_some(), "{}", b.log_dump());
    // A commit while both run travels as gossip, then sync.
    let h2 = registry::commit_region(ra, signer, "late", &[]);
    let same = common::poll(Duration::from_secs(60), || {
        (head_of(rb) == h2).then_some(())
    });
    assert!(
        same.is_some(),
        "A: {h2}\nB: {}\n{}",
        head_of(rb),
        b.log_dump()
    );
    // B verified it: the artifact is the same, signatures and all.
    let art_a = common::request(ra, "GET", "/registry/2", &[], b"").json();
    let art_b = common::request(rb, "GET", "/registry/2", &[], b"").json();
    assert_eq!(art_a["payload_b3"], art_b["payload_b3"]);
    assert_eq!(art_a["approvals"], art_b["approvals"]);
}

/// A node descriptor committed to A's registry makes A pin that node's
/// key and dial its `oap://` address; before it, A neither knows nor
/// dials B. A later descriptor with another key unpins B's and ends the
/// session.
#[test]
fn a_node_descriptor_in_the_registry_pins_and_dials_that_peer() {
    let signer = [31u8; 32];
    let a = registry_node(signer, 32, String::new());
    let a_id = id_of(32);
    // B accepts A's key but has no address for it: only A can dial.
    let (b, b_id) = overlay_node(33, &[(a_id.clone(), None)]);
    assert!(a.get("admin", "/api/v1/peers").json()["peers"]
        .as_array()
        .unwrap()
        .is_empty());
    registry::commit_items(
        a.addr("registry"),
        signer,
        serde_json::json!([{"node": {
            "id": "node-b",
            "public_key": b_id,
            "addrs": ["https://b.example", format!("oap://{}", b.addr("overlay"))],
            "roles": ["overlay"],
            "region": null,
        }}]),
        &[],
    );
    let dialed = common::poll(Duration::from_secs(60), || {
        let p = a.get("admin", "/api/v1/peers").json();
        p["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["peer_id"] == b_id.as_str())
            .cloned()
    });
    let session = dialed.unwrap_or_else(|| panic!("A never dialed B:\n{}", a.log_dump()));
    assert_eq!(session["direction"], "out", "{session}");
    assert_eq!(session["transport"], "tcp", "{session}");
    let seen_by_b = common::poll(Duration::from_secs(30), || {
        let p = b.get("admin", "/api/v1/peers").json();
        (p["peers"][0]["peer_id"] == a_id.as_str()).then_some(())
    });
    assert!(seen_by_b.is_some(), "{}", b.log_dump());

    // node-b's descriptor now names another key: A unpins B's and ends
    // the live session (it would otherwise run on until B left).
    registry::commit_items(
        a.addr("registry"),
        signer,
        serde_json::json!([{"node": {
            "id": "node-b",
            "public_key": id_of(34),
            "addrs": [format!("oap://{}", b.addr("overlay"))],
            "roles": ["overlay"],
            "region": null,
        }}]),
        &[],
    );
    let dropped = common::poll(Duration::from_secs(60), || {
        let p = a.get("admin", "/api/v1/peers").json();
        let gone = !p["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["peer_id"] == b_id.as_str());
        (gone && metric_at_least(&a, "rejected_total{reason=\"unpinned\"}", 1.0)).then_some(())
    });
    assert!(dropped.is_some(), "{}", a.log_dump());
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// B is killed while it fetches a large object from A: A's session ends,
/// A stays ready, and A's open file descriptors return to where they were
/// before B connected.
#[test]
fn killing_a_peer_mid_transfer_leaves_no_session_or_fd_behind() {
    let a = full_node(
        30,
        "",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\n[limits]\nmax_body_bytes = 33554432\n",
            id_of(31)
        ),
    );
    let data = common::body_of(24 << 20, 9);
    let address = put_object(&a, &data);
    // Settle: nothing of the upload is still open.
    let mut last = None;
    let baseline = common::poll(Duration::from_secs(30), || {
        let n = fd_count(a.pid());
        let steady = last == Some(n);
        last = Some(n);
        steady.then_some(n)
    })
    .unwrap();

    let mut b = full_node(
        31,
        "fetch_from_peers = true",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\naddr = \"{}\"\n",
            id_of(30),
            a.addr("overlay")
        ),
    );
    let up = a.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "overlay session up"
    });
    assert!(up.is_some(), "{}", a.log_dump());
    let g = b.addr("omnigate");
    let path = format!("/v1/o/{address}");
    let fetch = std::thread::spawn(move || common::try_request(g, "GET", &path, &[], b""));
    // Kill B while its gateway request (and the fetch behind it) is in
    // flight.
    let m = a.get("metrics", "/metrics").body;
    assert!(m.lines().any(|l| l == "overlay_sessions_active 1"), "{m}");
    b.signal("KILL");
    b.wait_exit(Duration::from_secs(30));
    let _ = fetch.join();

    let ended = a.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "overlay session ended" || v["message"] == "overlay session closed"
    });
    assert!(ended.is_some(), "{}", a.log_dump());
    a.wait_ready();
    let back = common::poll(Duration::from_secs(60), || {
        (fd_count(a.pid()) <= baseline).then_some(())
    });
    assert!(
        back.is_some(),
        "A holds {} fds, {baseline} before B came",
        fd_count(a.pid())
    );
    let m = a.get("metrics", "/metrics").body;
    assert!(m.lines().any(|l| l == "overlay_sessions_active 0"), "{m}");
}

/// A harness peer asks for an object, then acknowledges frames the node
/// never sent: the node answers with an ERROR frame `ack_regress`.
#[test]
fn an_ack_past_what_was_sent_is_rejected_as_ack_regress() {
    use bytes::{Bytes, BytesMut};
    use ron_oap::{Decoded, Decoder, Encoder, Flags, FrameSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let evil = ron_overlay::identity::Identity::from_seed([40; 32]).unwrap();
    let a = full_node(
        41,
        "",
        &format!(
            "[[overlay.peers]]\npublic_key = \"{}\"\n[limits]\nmax_body_bytes = 4194304\n",
            evil.node_id()
        ),
    );
    // Larger than one window (16 × 64 KiB): the node's send half is still
    // open, waiting for credit, when the bogus ACK arrives.
    let data = common::body_of(2 << 20, 3);
    let address = put_object(&a, &data);
    let a_key = ron_overlay::identity::parse_key_hex(&id_of(41)).unwrap();
    let connector = harness_connector(&evil, a_key);
    let addr = a.addr("overlay");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let frames = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(ron_overlay::tls::peer_name(), tcp)
            .await
            .unwrap();
        let mut enc = Encoder::default();
        let mut wire = hello_wire(&evil.node_id());
        let ask = FrameSpec::start(2, 1, Flags::REQ).with_flags(Flags::END);
        wire.extend(
            enc.encode(&ask, &[], Bytes::from(blob_request(&address)))
                .unwrap()
                .to_vec(),
        );
        tls.write_all(&wire).await.unwrap();
        // Wait for the first frame of the answer, then over-acknowledge.
        let dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        while !frames
            .iter()
            .any(|f: &ron_oap::Frame| f.header.app_proto_id == 2)
        {
            assert!(tls.read_buf(&mut buf).await.unwrap() > 0);
            while let Ok(Decoded::Frame(f)) = dec.decode(&mut buf) {
                frames.push(f);
            }
        }
        tls.write_all(&enc.encode_ack(1, 99, 16).to_vec())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut rest)).await;
        buf.extend_from_slice(&rest);
        while let Ok(Decoded::Frame(f)) = dec.decode(&mut buf) {
            frames.push(f);
        }
        frames
    });
    let last = frames.last().unwrap();
    assert!(last.header.code >= 400, "{:?}", last.header);
    let body: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(body["reason"], "ack_regress", "{body}");
    a.wait_ready();
}

/// A test harness peer speaking raw OAP/1 over pinned TLS.
struct Raw {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: bytes::BytesMut,
    dec: ron_oap::Decoder,
    enc: ron_oap::Encoder,
    /// Answer the node's pings (as a live peer does).
    answer_pings: bool,
}

impl Raw {
    /// Connects as `evil` to the node `node_id` at `addr` and sends HELLO.
    async fn connect(
        evil: &ron_overlay::identity::Identity,
        node_id: &str,
        addr: std::net::SocketAddr,
    ) -> Raw {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Raw::over(evil, node_id, tcp, 16).await
    }

    /// As `connect`, over a TCP connection the caller made, granting
    /// `window` frames per stream.
    async fn over(
        evil: &ron_overlay::identity::Identity,
        node_id: &str,
        tcp: tokio::net::TcpStream,
        window: u32,
    ) -> Raw {
        Raw::over_with(evil, node_id, tcp, hello_granting(&evil.node_id(), window)).await
    }

    /// As `over`, sending `hello` (an encoded HELLO frame) first.
    async fn over_with(
        evil: &ron_overlay::identity::Identity,
        node_id: &str,
        tcp: tokio::net::TcpStream,
        hello: Vec<u8>,
    ) -> Raw {
        let key = ron_overlay::identity::parse_key_hex(node_id).unwrap();
        let tls = harness_connector(evil, key)
            .connect(ron_overlay::tls::peer_name(), tcp)
            .await
            .unwrap();
        let mut raw = Raw {
            tls,
            buf: bytes::BytesMut::new(),
            dec: ron_oap::Decoder::default(),
            enc: ron_oap::Encoder::default(),
            answer_pings: false,
        };
        raw.write(&hello).await;
        raw
    }

    async fn write(&mut self, wire: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.tls.write_all(wire).await.unwrap();
    }

    async fn send(&mut self, spec: ron_oap::FrameSpec, payload: &[u8]) {
        let f = self
            .enc
            .encode(&spec, &[], bytes::Bytes::copy_from_slice(payload))
            .unwrap()
            .to_vec();
        self.write(&f).await;
    }

    /// The next frame from the node; None once it closed the connection
    /// (or after 30 s of silence).
    async fn next(&mut self) -> Option<ron_oap::Frame> {
        use ron_oap::{Flags, FrameSpec};
        use tokio::io::AsyncReadExt;
        loop {
            if let Ok(ron_oap::Decoded::Frame(f)) = self.dec.decode(&mut self.buf) {
                let h = f.header;
                if self.answer_pings && h.app_proto_id == 4 && h.flags.contains(Flags::REQ) {
                    let spec = FrameSpec::start(4, h.corr_id, Flags::RESP).with_flags(Flags::END);
                    self.send(spec, b"").await;
                }
                return Some(f);
            }
            match tokio::time::timeout(Duration::from_secs(30), self.tls.read_buf(&mut self.buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Sends a ping and returns every frame that arrives before its answer.
    async fn frames_before_ping_answer(&mut self, corr: u64) -> Vec<ron_oap::Frame> {
        use ron_oap::{Flags, FrameSpec};
        self.send(
            FrameSpec::start(4, corr, Flags::REQ).with_flags(Flags::END),
            b"",
        )
        .await;
        let mut out = Vec::new();
        loop {
            let f = self
                .next()
                .await
                .expect("the node closed before the ping answer");
            if f.header.app_proto_id == 4 && f.header.corr_id == corr {
                return out;
            }
            out.push(f);
        }
    }
}

fn overlay_limits_node(seed: u8, evil: &str, overlay: &str, extra: &str) -> common::Node {
    let b = NodeBuilder::new()
        .arg("--roles")
        .arg("overlay,storage,omnigate");
    let data = b.dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("node.key"), format!("{:02x}", seed).repeat(32)).unwrap();
    let node = b
        .config_replace(
            "[overlay]\naddr = \"127.0.0.1:0\"\n",
            &format!("[overlay]\naddr = \"127.0.0.1:0\"\n{overlay}"),
        )
        .config_extra(&format!(
            "[[overlay.peers]]\npublic_key = \"{evil}\"\n{extra}"
        ))
        .start();
    node.wait_ready();
    node
}

#[test]
fn a_peer_that_does_not_ack_holds_at_most_inflight_frames_and_flips_readiness() {
    use ron_oap::{Flags, FrameSpec};

    let evil = ron_overlay::identity::Identity::from_seed([50; 32]).unwrap();
    // The harness grants a window of 16 per stream; the node's own cap
    // per peer is 8, and 4 unacknowledged frames make it unready.
    let a = overlay_limits_node(
        51,
        &evil.node_id(),
        // Pings every 150 s: none but the first while the test runs.
        "inflight_critical = 4\nidle_timeout = \"600s\"\n",
        "[overlay.peer]\ninflight_frames = 8\n[limits]\nmax_body_bytes = 4194304\n",
    );
    let data = common::body_of(2 << 20, 5); // 32 frames of 64 KiB
    let address = put_object(&a, &data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut raw = rt.block_on(Raw::connect(&evil, &id_of(51), a.addr("overlay")));
    // Answered, the node's own pings hold no frame in flight. The node
    // pings once when the session comes up: that ping is answered before
    // the request goes out, so (frames being read in order) it is no
    // longer in flight when the node starts answering.
    raw.answer_pings = true;
    rt.block_on(async {
        loop {
            let f = raw.next().await.expect("the node closed the session");
            if f.header.app_proto_id == 4 && f.header.flags.contains(Flags::REQ) {
                break;
            }
        }
    });
    let blob = |fs: &[ron_oap::Frame]| fs.iter().filter(|f| f.header.app_proto_id == 2).count();
    let got = rt.block_on(async {
        raw.send(
            FrameSpec::start(2, 1, Flags::REQ).with_flags(Flags::END),
            &blob_request(&address),
        )
        .await;
        // Everything the node sends before answering a later ping is what
        // it sends without an ACK.
        // The answer starts once the blocking lookup is done; its first
        // frame comes with every frame the node sends without an ACK.
        let first = loop {
            let f = raw.next().await.expect("the node closed the session");
            if f.header.app_proto_id == 2 {
                break f;
            }
        };
        // The answer's frames come as the node reads them from its store:
        // rounds of pings until the cap is reached (bounded), then one
        // more round, which must bring none.
        let mut got = vec![first];
        let mut corr = 3;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while blob(&got) < 8 && std::time::Instant::now() < deadline {
            got.extend(raw.frames_before_ping_answer(corr).await);
            corr += 2;
        }
        got.extend(raw.frames_before_ping_answer(corr).await);
        got
    });
    assert_eq!(blob(&got), 8, "frames sent without an ACK");
    // The frame that filled the cap, and only that one, asks for an ACK
    // (the harness grants 16 per stream: at 8 it would ACK on its own, but
    // a peer granting more never would).
    let asks: Vec<u64> = got
        .iter()
        .filter(|f| f.header.app_proto_id == 2 && f.header.flags.contains(Flags::ACK_REQ))
        .map(|f| f.header.corr_id)
        .collect();
    assert_eq!(asks.len(), 1, "one ACK_REQ per cap");
    let unready = common::poll(Duration::from_secs(30), || {
        let r = a.get("metrics", "/readyz");
        (r.status == 503).then_some(r.body)
    })
    .unwrap_or_else(|| panic!("readyz never flipped:\n{}", a.log_dump()));
    assert!(unready.contains("inflight_critical"), "{unready}");
    let m = a.get("metrics", "/metrics").body;
    assert!(
        m.lines()
            .any(|l| l == r#"overlay_inflight_frames{state="all"} 8"#),
        "{m}"
    );
    // Over the critical mark: the backpressure guard's series and the
    // readiness input say so too.
    assert!(
        m.lines()
            .any(|l| l == r#"overlay_inflight_frames{state="high"} 8"#),
        "{m}"
    );
    assert!(unready.contains("oap_backpressure_ok false"), "{unready}");
    assert_eq!(
        a.get("metrics", "/readyz").json()["roles"]["overlay"]["inputs"]["oap_backpressure_ok"],
        false
    );
    assert!(m.lines().any(|l| l == "oap_inflight_frames 8"), "{m}");
    let peers = a.get("admin", "/api/v1/peers").json();
    assert_eq!(peers["peers"][0]["inflight_frames"], 8, "{peers}");

    // Acknowledging the 8 releases exactly 8 more.
    let got = rt.block_on(async {
        let ack = raw.enc.encode_ack(1, 8, 16).to_vec();
        raw.write(&ack).await;
        raw.frames_before_ping_answer(5).await
    });
    assert_eq!(blob(&got), 8, "frames sent after one ACK");

    // The peer goes away: nothing is in flight, the node is ready again.
    drop(raw);
    let ready = common::poll(Duration::from_secs(30), || {
        let m = a.get("metrics", "/metrics").body;
        (a.get("metrics", "/readyz").status == 200
            && m.lines()
                .any(|l| l == r#"overlay_inflight_frames{state="all"} 0"#)
            && m.lines()
                .any(|l| l == r#"overlay_inflight_frames{state="high"} 0"#))
        .then_some(())
    });
    assert!(ready.is_some(), "{}", a.log_dump());
}

/// A peer that asks for data and then reads nothing: once the node's
/// socket buffers are full its queued frames wait, and the session is cut
/// at `write_timeout` (the only timeout that can fire: the peer sent whole
/// frames, and `idle_timeout` is a minute).
#[test]
fn a_peer_that_stops_reading_is_cut_at_the_write_timeout() {
    use ron_oap::{Flags, FrameSpec};

    let evil = ron_overlay::identity::Identity::from_seed([54; 32]).unwrap();
    // 16 MiB in flight allowed: far more than loopback socket buffers
    // (up to 4 MiB each way) and rustls's 512 KiB take.
    let a = overlay_limits_node(
        55,
        &evil.node_id(),
        "write_timeout = \"1s\"\n",
        "[overlay.peer]\ninflight_frames = 256\n[limits]\nmax_body_bytes = 16777216\n",
    );
    let data = common::body_of(16 << 20, 9);
    let address = put_object(&a, &data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _raw = rt.block_on(async {
        // A small receive buffer, and a window of 256 frames: the node
        // queues the whole 16 MiB object and can hand the socket only a
        // part of it.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = sock.connect(a.addr("overlay")).await.unwrap();
        let mut raw = Raw::over(&evil, &id_of(55), tcp, 256).await;
        raw.send(
            FrameSpec::start(2, 1, Flags::REQ).with_flags(Flags::END),
            &blob_request(&address),
        )
        .await;
        raw // kept open, never read
    });
    let cut = common::poll(Duration::from_secs(60), || {
        metric_at_least(&a, "rejected_total{reason=\"write_timeout\"}", 1.0).then_some(())
    });
    assert!(cut.is_some(), "{}", a.log_dump());
    let gone = common::poll(Duration::from_secs(30), || {
        let p = a.get("admin", "/api/v1/peers").json();
        p["peers"].as_array().unwrap().is_empty().then_some(())
    });
    assert!(gone.is_some(), "{}", a.log_dump());
    a.wait_ready();
}

#[test]
fn requests_past_max_rps_get_429_and_stalled_or_idle_peers_are_cut_off() {
    use ron_oap::{Flags, FrameSpec};

    let evil = ron_overlay::identity::Identity::from_seed([52; 32]).unwrap();
    let a = overlay_limits_node(
        53,
        &evil.node_id(),
        "read_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
        "[overlay.peer]\nmax_rps = 1\n",
    );
    let addr = a.addr("overlay");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Ten pings at once against 1 request/s: the first is answered, the
    // others get a stream ERROR 429 `peer_rps`; the session stays up.
    let log = || a.log_dump();
    let (answered, limited) = rt.block_on(async {
        let mut raw = Raw::connect(&evil, &id_of(53), addr).await;
        let mut wire = Vec::new();
        for i in 0..10u64 {
            let spec = FrameSpec::start(4, 1 + 2 * i, Flags::REQ).with_flags(Flags::END);
            wire.extend(
                raw.enc
                    .encode(&spec, &[], bytes::Bytes::new())
                    .unwrap()
                    .to_vec(),
            );
        }
        raw.write(&wire).await;
        let (mut answered, mut limited) = (0, 0);
        while answered + limited < 10 {
            let f = raw
                .next()
                .await
                .unwrap_or_else(|| panic!("the node closed the session:\n{}", log()));
            let odd = f.header.corr_id % 2 == 1;
            if f.header.app_proto_id == 4 && odd && f.header.code == 429 {
                let body: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
                assert_eq!(body["reason"], "peer_rps", "{body}");
                limited += 1;
            } else if f.header.app_proto_id == 4 && odd && f.header.flags.contains(Flags::RESP) {
                answered += 1;
            }
        }
        (answered, limited)
    });
    assert!(
        answered >= 1 && limited >= 1,
        "{answered} answered, {limited} limited"
    );

    // Half a frame header, then nothing: cut at read_timeout.
    rt.block_on(async {
        let mut raw = Raw::connect(&evil, &id_of(53), addr).await;
        let spec = FrameSpec::start(4, 1, Flags::REQ).with_flags(Flags::END);
        let frame = raw
            .enc
            .encode(&spec, &[], bytes::Bytes::from(vec![0; 100]))
            .unwrap();
        raw.write(&frame.to_vec()[..10]).await;
        while raw.next().await.is_some() {}
    });
    // HELLO, then silence (the node's pings go unanswered): cut at
    // idle_timeout.
    rt.block_on(async {
        let mut raw = Raw::connect(&evil, &id_of(53), addr).await;
        while raw.next().await.is_some() {}
    });
    let m = a.get("metrics", "/metrics").body;
    for reason in ["peer_rps", "read_timeout", "idle_timeout"] {
        assert!(
            m.contains(&format!("rejected_total{{reason=\"{reason}\"}}")),
            "{reason} not counted:\n{m}"
        );
    }
    a.wait_ready();
}
