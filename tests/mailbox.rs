//! The mailbox role's HTTP API against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::time::Duration;

use common::{request, NodeBuilder};

#[test]
fn send_receive_ack_nack_feed_over_http() {
    let node = NodeBuilder::new().arg("--roles").arg("mailbox").start();
    node.wait_ready();
    let m = node.addr("mailbox");

    let r = request(
        m,
        "POST",
        "/v1/topics/jobs/messages",
        &[("Idempotency-Key", "k1")],
        br#"{"n":1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let first = r.json();
    assert_eq!(first["duplicate"], false);
    let r = request(
        m,
        "POST",
        "/v1/topics/jobs/messages",
        &[("Idempotency-Key", "k1")],
        br#"{"n":1}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["duplicate"], true);
    assert_eq!(r.json()["msg_id"], first["msg_id"]);
    assert_eq!(
        request(m, "POST", "/v1/topics/jobs/messages", &[], b"second").status,
        201
    );

    let r = request(
        m,
        "POST",
        "/v1/topics/jobs/receive",
        &[],
        br#"{"max":1,"visibility_ms":60000}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json()["messages"].as_array().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["body"], r#"{"n":1}"#);
    assert_eq!(got[0]["attempts"], 1);
    let id = got[0]["msg_id"].as_str().unwrap().to_owned();

    // Nack: back at once, delivered again as attempt 2.
    assert_eq!(
        request(m, "POST", &format!("/v1/topics/jobs/nack/{id}"), &[], b"").status,
        204
    );
    let r = request(m, "POST", "/v1/topics/jobs/receive", &[], br#"{"max":10}"#);
    let got = r.json()["messages"].as_array().unwrap().clone();
    assert_eq!(got.len(), 2, "FIFO: the nacked first, then the second");
    assert_eq!(got[0]["msg_id"], id.as_str());
    assert_eq!(got[0]["attempts"], 2);
    for msg in &got {
        let mid = msg["msg_id"].as_str().unwrap();
        assert_eq!(
            request(m, "POST", &format!("/v1/topics/jobs/ack/{mid}"), &[], b"").status,
            204
        );
    }
    assert!(
        request(m, "POST", "/v1/topics/jobs/receive", &[], b"").json()["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        request(m, "POST", &format!("/v1/topics/jobs/ack/{id}"), &[], b"").status,
        404
    );

    // A feed reads without leasing.
    for i in 0..3 {
        request(
            m,
            "POST",
            "/v1/topics/news/messages",
            &[],
            format!("n{i}").as_bytes(),
        );
    }
    let r = request(
        m,
        "GET",
        "/v1/topics/news/messages?after=1&limit=5",
        &[],
        b"",
    );
    let feed = r.json();
    assert_eq!(feed["messages"].as_array().unwrap().len(), 2);
    assert_eq!(feed["next_after"], 3);
    assert_eq!(
        request(m, "POST", "/v1/topics/news/receive", &[], br#"{"max":10}"#).json()["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let metrics = node.get("metrics", "/metrics").body;
    assert!(
        metrics.contains(r#"mailbox_depth{topic="jobs"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mailbox_depth{topic="news"} 3"#),
        "{metrics}"
    );
}

#[test]
fn bad_requests_get_clear_problems() {
    let node = NodeBuilder::new().arg("--roles").arg("mailbox").start();
    node.wait_ready();
    let m = node.addr("mailbox");
    let r = request(m, "POST", "/v1/topics/Bad Topic/messages", &[], b"x");
    assert_eq!(r.status, 400);
    let r = request(m, "POST", "/v1/topics/UPPER/messages", &[], b"x");
    assert_eq!(r.json()["reason"], "bad_topic");
    let r = request(m, "POST", "/v1/topics/t/messages", &[], &[0xff, 0xfe]);
    assert_eq!(r.json()["reason"], "bad_body");
    let r = request(m, "POST", "/v1/topics/t/receive", &[], br#"{"max":0}"#);
    assert_eq!(r.status, 400);
    let r = request(m, "POST", "/v1/topics/t/receive", &[], br#"{"maximum":3}"#);
    assert_eq!(r.json()["reason"], "bad_json");
    let r = request(m, "GET", "/v1/topics/t/messages?limit=abc", &[], b"");
    assert_eq!(r.json()["reason"], "bad_query");
    let r = request(m, "POST", "/v1/topics/t/messages", &[], b"hello");
    let id = r.json()["msg_id"].as_str().unwrap().to_owned();
    let r = request(m, "POST", &format!("/v1/topics/t/ack/{id}"), &[], b"");
    assert_eq!(r.status, 409, "never delivered: nothing to ack");
    assert_eq!(r.json()["reason"], "not_leased");
    assert_eq!(
        request(m, "GET", "/v1/topics/t/receive", &[], b"").status,
        405
    );
}

#[test]
fn acknowledged_sends_survive_kill_9() {
    let (mut node, dir, cfg) = common::restartable("mailbox");
    let m = node.addr("mailbox");
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = request(
            m,
            "POST",
            "/v1/topics/durable/messages",
            &[],
            format!("m{i}").as_bytes(),
        );
        assert_eq!(r.status, 201);
        ids.push(r.json()["msg_id"].as_str().unwrap().to_owned());
    }
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(30));
    let node = common::restarted(dir, cfg, "mailbox");
    let m = node.addr("mailbox");
    assert_eq!(
        waiting_ids(m, "durable"),
        ids,
        "every acknowledged send, in order"
    );
}

/// The ids of the first 100 messages waiting on `topic`, in order.
fn waiting_ids(m: std::net::SocketAddr, topic: &str) -> Vec<String> {
    let r = request(
        m,
        "GET",
        &format!("/v1/topics/{topic}/messages?limit=100"),
        &[],
        b"",
    );
    r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["msg_id"].as_str().unwrap().to_owned())
        .collect()
}

/// 64 clients sending at once share durable commits (group commit); every
/// send that got its 201 is there after kill -9, in each sender's order.
#[test]
fn acknowledged_sends_of_64_concurrent_senders_survive_kill_9() {
    use std::sync::{Arc, Mutex};
    let (mut node, dir, cfg) = common::restartable("mailbox");
    let m = node.addr("mailbox");
    let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::new(Mutex::new(vec![Vec::new(); 64]));
    let senders: Vec<_> = (0..64usize)
        .map(|w| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let path = format!("/v1/topics/c{w}/messages");
                    match common::try_request(m, "POST", &path, &[], format!("m{i}").as_bytes()) {
                        Ok(r) if r.status == 201 => acked.lock().unwrap()[w]
                            .push(r.json()["msg_id"].as_str().unwrap().to_owned()),
                        Ok(r) => panic!("send {w}/{i}: {} {}", r.status, r.body),
                        Err(_) => break, // the node is gone
                    }
                }
            })
        })
        .collect();
    let enough = common::poll(Duration::from_secs(120), || {
        (acked.lock().unwrap().iter().map(Vec::len).sum::<usize>() >= 400).then_some(())
    });
    assert!(enough.is_some(), "sends too slow:\n{}", node.log_dump());
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(30));
    for s in senders {
        s.join().unwrap();
    }
    let node = common::restarted(dir, cfg, "mailbox");
    let m = node.addr("mailbox");
    for (w, ids) in acked.lock().unwrap().iter().enumerate() {
        let got = waiting_ids(m, &format!("c{w}"));
        // A send cut off by the kill may be there unacknowledged, after
        // the acknowledged ones.
        assert!(
            got.starts_with(ids),
            "sender {w}: {} acknowledged, {} kept",
            ids.len(),
            got.len()
        );
    }
}
