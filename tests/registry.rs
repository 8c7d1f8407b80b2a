//! The registry against the real binary: quorum, refusals, races, signer
//! rotation, kill -9 during commits, the resumable stream, and a follower
//! that refuses a forged artifact.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{request, NodeBuilder};
use ed25519_dalek::{Signer, SigningKey};
use ron_registry::model::{encode_hex, hash_bytes, signing_message};
use serde_json::{json, Value};

struct Signers {
    keys: Vec<SigningKey>,
}

impl Signers {
    fn new(n: usize, salt: u8) -> Self {
        Signers {
            keys: (0..n)
                .map(|i| {
                    let mut seed = [salt; 32];
                    seed[0] = i as u8;
                    SigningKey::from_bytes(&seed)
                })
                .collect(),
        }
    }

    fn public(&self, i: usize) -> String {
        encode_hex(self.keys[i].verifying_key().as_bytes())
    }

    /// `[registry]` lines and `[[registry.signers]]` tables for ids s0…
    fn config(&self, m: usize) -> (String, String) {
        let mut tables = String::new();
        for i in 0..self.keys.len() {
            tables.push_str(&format!(
                "[[registry.signers]]\nid = \"s{i}\"\npublic_key = \"{}\"\n",
                self.public(i)
            ));
        }
        (format!("quorum_m = {m}\n"), tables)
    }

    fn sig(&self, i: usize, version: u64, payload_b3: &str) -> String {
        let msg = signing_message(version, &hash_bytes(payload_b3).unwrap());
        encode_hex(&self.keys[i].sign(&msg).to_bytes())
    }
}

fn registry_node(signers: &Signers, m: usize) -> NodeBuilder {
    let (keys, tables) = signers.config(m);
    NodeBuilder::new()
        .arg("--roles")
        .arg("registry")
        .config_replace(
            "[registry]\naddr = \"127.0.0.1:0\"\n",
            &format!("[registry]\naddr = \"127.0.0.1:0\"\n{keys}"),
        )
        .config_extra(&tables)
}

fn head(r: SocketAddr) -> Value {
    let resp = request(r, "GET", "/registry/head", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()
}

fn payload(r: SocketAddr, region: &str) -> Value {
    let h = head(r);
    json!({
        "version": h["version"].as_u64().unwrap() + 1,
        "prev_b3": h["payload_b3"],
        "items": [{"region": {"id": region, "name": format!("region {region}"), "parent": null}}],
        "created_at": "2026-11-25T10:00:00Z",
    })
}

/// Proposes `payload`; returns (id, payload_b3, version).
fn propose(r: SocketAddr, payload: &Value) -> (String, String, u64) {
    let body = json!({ "payload": payload }).to_string();
    let resp = request(r, "POST", "/registry/proposals", &[], body.as_bytes());
    assert_eq!(resp.status, 202, "{}", resp.body);
    let v = resp.json();
    (
        v["proposal_id"].as_str().unwrap().to_owned(),
        v["payload_b3"].as_str().unwrap().to_owned(),
        v["version"].as_u64().unwrap(),
    )
}

fn approve(r: SocketAddr, id: &str, signer: &str, sig: &str) -> common::Resp {
    let body = json!({"signer_id": signer, "sig": sig}).to_string();
    request(
        r,
        "POST",
        &format!("/registry/proposals/{id}/approvals"),
        &[],
        body.as_bytes(),
    )
}

fn commit(r: SocketAddr, id: &str) -> common::Resp {
    request(
        r,
        "POST",
        &format!("/registry/proposals/{id}/commit"),
        &[],
        b"",
    )
}

/// Proposes, approves with `who`, commits; returns the new head.
fn commit_with(r: SocketAddr, s: &Signers, who: &[usize], region: &str) -> Value {
    let (id, b3, v) = propose(r, &payload(r, region));
    for &i in who {
        let resp = approve(r, &id, &format!("s{i}"), &s.sig(i, v, &b3));
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let resp = commit(r, &id);
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.json()
}

#[test]
fn quorum_refusals_and_a_race_for_one_version() {
    let s = Signers::new(5, 1);
    let node = registry_node(&s, 3).start();
    node.wait_ready();
    let r = node.addr("registry");
    assert_eq!(head(r)["version"], 0);

    let (id, b3, v) = propose(r, &payload(r, "eu"));
    assert_eq!(v, 1);
    for i in [0, 3] {
        assert_eq!(
            approve(r, &id, &format!("s{i}"), &s.sig(i, v, &b3)).status,
            200
        );
    }
    // 2 of 5: not enough.
    let resp = commit(r, &id);
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert_eq!(resp.json()["reason"], "quorum_not_met");
    // A key outside the set, under a member's id and under its own.
    let outsider = Signers::new(1, 77);
    let resp = approve(r, &id, "s1", &outsider.sig(0, v, &b3));
    assert_eq!(
        (resp.status, resp.json()["reason"].clone()),
        (422, json!("bad_signature"))
    );
    let resp = approve(r, &id, "mallory", &outsider.sig(0, v, &b3));
    assert_eq!(
        (resp.status, resp.json()["reason"].clone()),
        (422, json!("unknown_signer"))
    );
    // Duplicate.
    let resp = approve(r, &id, "s0", &s.sig(0, v, &b3));
    assert_eq!(
        (resp.status, resp.json()["reason"].clone()),
        (409, json!("duplicate_approval"))
    );
    // The third approval; the commit is durable and answered with the head.
    assert_eq!(approve(r, &id, "s4", &s.sig(4, v, &b3)).status, 200);
    let resp = commit(r, &id);
    assert_eq!(resp.status, 201, "{}", resp.body);
    let h1 = resp.json();
    assert_eq!(
        (h1["version"].clone(), h1["payload_b3"].clone()),
        (json!(1), json!(b3))
    );
    // A retried commit: same head.
    let again = commit(r, &id);
    assert_eq!((again.status, again.json()), (201, h1.clone()));
    let art = request(r, "GET", "/registry/1", &[], b"").json();
    assert_eq!(art["payload_b3"], b3.as_str());
    assert_eq!(art["approvals"].as_array().unwrap().len(), 3);

    // Version 2: a tampered payload carries the approval made for the
    // original, and an approval for version 1 is replayed.
    let original = payload(r, "us");
    let (id2, b3_2, v2) = propose(r, &original);
    let mut tampered = original.clone();
    tampered["items"][0]["region"]["name"] = json!("region evil");
    let (id_t, _, _) = propose(r, &tampered);
    let resp = approve(r, &id_t, "s0", &s.sig(0, v2, &b3_2));
    assert_eq!(
        (resp.status, resp.json()["reason"].clone()),
        (422, json!("bad_signature"))
    );
    let resp = approve(r, &id2, "s0", &s.sig(0, 1, &b3_2));
    assert_eq!(
        resp.status, 422,
        "an approval for another version is not one for this"
    );

    // Two proposals for version 2, both approved: exactly one commits.
    for i in [0, 1, 2] {
        assert_eq!(
            approve(r, &id2, &format!("s{i}"), &s.sig(i, v2, &b3_2)).status,
            200
        );
    }
    let (id3, b3_3, v3) = propose(r, &payload(r, "ap"));
    assert_eq!(v3, 2);
    for i in [2, 3, 4] {
        assert_eq!(
            approve(r, &id3, &format!("s{i}"), &s.sig(i, v3, &b3_3)).status,
            200
        );
    }
    assert_eq!(commit(r, &id3).status, 201);
    let lost = commit(r, &id2);
    assert_eq!(
        (lost.status, lost.json()["reason"].clone()),
        (409, json!("chain_mismatch"))
    );
    assert_eq!(head(r)["payload_b3"], b3_3.as_str());
    let m = node.get("metrics", "/metrics").body;
    assert!(m.lines().any(|l| l == "commit_cas_fail_total 1"), "{m}");

    // Unknown fields are refused with a clear 400.
    let mut extra = payload(r, "x");
    extra["colour"] = json!("blue");
    let body = json!({ "payload": extra }).to_string();
    let resp = request(r, "POST", "/registry/proposals", &[], body.as_bytes());
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("colour"), "{}", resp.body);
}

#[test]
fn a_signer_set_rotation_is_in_force_from_the_next_version() {
    let s = Signers::new(3, 2);
    let node = registry_node(&s, 2).start();
    node.wait_ready();
    let r = node.addr("registry");
    let newcomer = Signers::new(1, 3);
    // Next set: s1, s2, n0 (s0 removed), m = 2.
    let h = head(r);
    let rotation = json!({
        "version": 1,
        "prev_b3": h["payload_b3"],
        "items": [{"signer_set": {"m": 2, "signers": [
            {"id": "s1", "public_key": s.public(1)},
            {"id": "s2", "public_key": s.public(2)},
            {"id": "n0", "public_key": newcomer.public(0)},
        ]}}],
        "created_at": "2026-11-25T10:00:00Z",
    });
    let (id, b3, v) = propose(r, &rotation);
    for i in [0, 1] {
        assert_eq!(
            approve(r, &id, &format!("s{i}"), &s.sig(i, v, &b3)).status,
            200
        );
    }
    assert_eq!(commit(r, &id).status, 201);
    let signers = request(r, "GET", "/registry/signers", &[], b"").json();
    assert_eq!(signers["for_version"], 2);
    assert!(signers["signers"].to_string().contains("n0"));

    let (id, b3, v) = propose(r, &payload(r, "eu"));
    let resp = approve(r, &id, "s0", &s.sig(0, v, &b3));
    assert_eq!(
        (resp.status, resp.json()["reason"].clone()),
        (422, json!("unknown_signer"))
    );
    assert_eq!(approve(r, &id, "n0", &newcomer.sig(0, v, &b3)).status, 200);
    assert_eq!(approve(r, &id, "s2", &s.sig(2, v, &b3)).status, 200);
    assert_eq!(commit(r, &id).status, 201);
    assert_eq!(head(r)["version"], 2);
}

#[test]
fn every_acknowledged_commit_survives_kill_9_with_an_intact_chain() {
    let s = Signers::new(1, 4);
    let b = registry_node(&s, 1);
    let (cfg, dir) = (b.config_path(), b.dir().to_path_buf());
    let mut node = b.keep_dir().start();
    node.wait_ready();
    let r = node.addr("registry");

    // Commit in a thread; kill -9 once 100 of the 200 were acknowledged.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(u64, String)>::new()));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                let Ok(p) = common::try_request(r, "GET", "/registry/head", &[], b"") else {
                    return;
                };
                let h: Value = serde_json::from_str(&p.body).unwrap();
                let body = json!({"payload": {
                    "version": h["version"].as_u64().unwrap() + 1,
                    "prev_b3": h["payload_b3"],
                    "items": [{"region": {"id": format!("r{i}"), "name": "r", "parent": null}}],
                    "created_at": "2026-11-25T10:00:00Z",
                }})
                .to_string();
                let Ok(p) =
                    common::try_request(r, "POST", "/registry/proposals", &[], body.as_bytes())
                else {
                    return;
                };
                let v: Value = serde_json::from_str(&p.body).unwrap();
                let (id, b3) = (
                    v["proposal_id"].as_str().unwrap(),
                    v["payload_b3"].as_str().unwrap(),
                );
                let version = v["version"].as_u64().unwrap();
                let sig = s.sig(0, version, b3);
                let ab = json!({"signer_id": "s0", "sig": sig}).to_string();
                let path = format!("/registry/proposals/{id}/approvals");
                let Ok(_) = common::try_request(r, "POST", &path, &[], ab.as_bytes()) else {
                    return;
                };
                let path = format!("/registry/proposals/{id}/commit");
                match common::try_request(r, "POST", &path, &[], b"") {
                    Ok(c) if c.status == 201 => {
                        acked.lock().unwrap().push((version, b3.to_owned()))
                    }
                    _ => return,
                }
            }
        })
    };
    let enough = common::poll(Duration::from_secs(120), || {
        (acked.lock().unwrap().len() >= 100).then_some(())
    });
    assert!(enough.is_some(), "commits stalled:\n{}", node.log_dump());
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(30));
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    let node = NodeBuilder::in_dir(dir, cfg)
        .arg("--roles")
        .arg("registry")
        .start();
    node.wait_ready();
    let r = node.addr("registry");
    let top = head(r)["version"].as_u64().unwrap();
    assert!(top >= acked.len() as u64);
    let mut prev = format!("b3:{}", "0".repeat(64));
    for v in 1..=top {
        let a = request(r, "GET", &format!("/registry/{v}"), &[], b"").json();
        assert_eq!(a["prev_b3"], prev.as_str(), "chain broken at {v}");
        prev = a["payload_b3"].as_str().unwrap().to_owned();
    }
    for (v, b3) in &acked {
        let a = request(r, "GET", &format!("/registry/{v}"), &[], b"").json();
        assert_eq!(a["payload_b3"], b3.as_str(), "acknowledged version {v}");
    }
}

/// Reads SSE events from `s` until one with id `until`; returns the ids
/// read by this call.
fn read_events(s: &mut TcpStream, until: u64) -> Vec<u64> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = Vec::new();
    let mut ids = Vec::new();
    let mut b = [0u8; 8192];
    loop {
        let n = s.read(&mut b).expect("stream read");
        assert!(n > 0, "stream ended after {ids:?}");
        buf.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        ids = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|v| v.trim().parse().unwrap())
            .collect();
        if ids.last() == Some(&until) {
            return ids;
        }
    }
}

fn open_stream(r: SocketAddr, headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(r).unwrap();
    write!(
        s,
        "GET /registry/stream HTTP/1.1\r\nHost: r\r\n{headers}\r\n"
    )
    .unwrap();
    s
}

#[test]
fn the_stream_resumes_from_last_event_id_without_gaps_or_repeats() {
    let s = Signers::new(1, 5);
    let node = registry_node(&s, 1).start();
    node.wait_ready();
    let r = node.addr("registry");
    let mut first = open_stream(r, "Last-Event-ID: 0\r\n");
    for i in 0..10 {
        commit_with(r, &s, &[0], &format!("a{i}"));
    }
    assert_eq!(read_events(&mut first, 10), (1..=10).collect::<Vec<_>>());
    drop(first);
    for i in 0..20 {
        commit_with(r, &s, &[0], &format!("b{i}"));
    }
    let mut again = open_stream(r, "Last-Event-ID: 10\r\n");
    assert_eq!(read_events(&mut again, 30), (11..=30).collect::<Vec<_>>());
    // Live commits follow the replay on the same connection.
    commit_with(r, &s, &[0], "c");
    let mut more = open_stream(r, "");
    commit_with(r, &s, &[0], "d");
    assert_eq!(read_events(&mut more, 32), vec![32]);
    assert_eq!(read_events(&mut again, 32), vec![31, 32]);
}

/// A TCP proxy to `upstream`; while `tamper` is set, it rewrites `from`
/// to `to` (same length) in what the upstream sends.
fn tampering_proxy(
    upstream: SocketAddr,
    from: &'static [u8],
    to: &'static [u8],
    tamper: Arc<AtomicBool>,
) -> SocketAddr {
    assert_eq!(from.len(), to.len());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let tamper = tamper.clone();
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut b = vec![0u8; 64 * 1024];
                loop {
                    let n = match s_in.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &mut b[..n];
                    if tamper.load(Ordering::SeqCst) {
                        let mut i = 0;
                        while i + from.len() <= chunk.len() {
                            if &chunk[i..i + from.len()] == from {
                                chunk[i..i + from.len()].copy_from_slice(to);
                            }
                            i += 1;
                        }
                    }
                    if c_out.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn a_follower_catches_up_and_refuses_a_forged_artifact() {
    let s = Signers::new(3, 6);
    let primary = registry_node(&s, 2).start();
    primary.wait_ready();
    let p = primary.addr("registry");
    for i in 0..5 {
        commit_with(p, &s, &[0, 2], &format!("early{i}"));
    }

    let tamper = Arc::new(AtomicBool::new(false));
    let proxy = tampering_proxy(p, b"region honest", b"region forged", tamper.clone());
    let (keys, tables) = s.config(2);
    let follower = NodeBuilder::new()
        .arg("--roles")
        .arg("registry")
        .config_replace(
            "[registry]\naddr = \"127.0.0.1:0\"\n",
            &format!("[registry]\naddr = \"127.0.0.1:0\"\n{keys}upstream = \"http://{proxy}\"\n"),
        )
        .config_extra(&tables)
        .start();
    follower.wait_ready();
    let f = follower.addr("registry");
    let caught_up = common::poll(Duration::from_secs(60), || {
        (head(f) == head(p)).then_some(())
    });
    assert!(
        caught_up.is_some(),
        "follower never caught up:\n{}",
        follower.log_dump()
    );
    commit_with(p, &s, &[1, 2], "live");
    let live = common::poll(Duration::from_secs(60), || {
        (head(f)["version"] == 6).then_some(())
    });
    assert!(live.is_some(), "{}", follower.log_dump());

    // Writes go to the primary.
    let body = json!({ "payload": payload(f, "x") }).to_string();
    let resp = request(f, "POST", "/registry/proposals", &[], body.as_bytes());
    assert_eq!(
        (resp.status, resp.json()["reason"].clone()),
        (421, json!("follower"))
    );

    // The path to the primary starts forging payloads: the follower
    // refuses the artifact and keeps its head.
    tamper.store(true, Ordering::SeqCst);
    let (id, b3, v) = propose(
        p,
        &json!({
            "version": 7,
            "prev_b3": head(p)["payload_b3"],
            "items": [{"region": {"id": "h", "name": "region honest", "parent": null}}],
            "created_at": "2026-11-25T10:00:00Z",
        }),
    );
    for i in [0, 1] {
        assert_eq!(
            approve(p, &id, &format!("s{i}"), &s.sig(i, v, &b3)).status,
            200
        );
    }
    assert_eq!(commit(p, &id).status, 201);
    let refused = common::poll(Duration::from_secs(60), || {
        let m = follower.get("metrics", "/metrics").body;
        m.lines()
            .any(|l| l.starts_with("registry_follower_rejected_total{reason=\"invalid\"}"))
            .then_some(())
    });
    assert!(refused.is_some(), "{}", follower.log_dump());
    assert_eq!(head(f)["version"], 6);

    // Honest again: it catches up.
    tamper.store(false, Ordering::SeqCst);
    let healed = common::poll(Duration::from_secs(60), || {
        (head(f) == head(p)).then_some(())
    });
    assert!(healed.is_some(), "{}", follower.log_dump());
}

/// A follower that starts with nothing (micronode: amnesia) reports ready
/// only once it has caught up with the primary's head, every artifact
/// verified; while the primary cannot be reached it stays unready and says
/// why.
#[test]
fn an_amnesia_follower_is_ready_only_once_caught_up() {
    let s = Signers::new(2, 8);
    let primary = registry_node(&s, 1).start();
    primary.wait_ready();
    let p = primary.addr("registry");
    for i in 0..4 {
        commit_with(p, &s, &[1], &format!("edge{i}"));
    }
    let follower_of = |upstream: SocketAddr| {
        let (keys, tables) = s.config(1);
        NodeBuilder::new()
            .bin(common::MICRONODE)
            .arg("--roles")
            .arg("registry")
            .config_replace(
                "[registry]\naddr = \"127.0.0.1:0\"\n",
                &format!(
                    "[registry]\naddr = \"127.0.0.1:0\"\n{keys}upstream = \"http://{upstream}\"\n"
                ),
            )
            .config_extra(&tables)
            .start()
    };

    // Nothing listens there: unready, naming the primary.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let lonely = follower_of(dead);
    let why = common::poll(Duration::from_secs(60), || {
        let r = lonely.get("metrics", "/readyz");
        (r.status == 503 && r.body.contains("head is unknown")).then_some(r.body)
    });
    assert!(
        why.is_some_and(|b| b.contains(&dead.to_string())),
        "{}",
        lonely.log_dump()
    );
    drop(lonely);

    // Ready means caught up: no waiting after /readyz says 200.
    let follower = follower_of(p);
    follower.wait_ready();
    assert_eq!(head(follower.addr("registry")), head(p));
    assert_eq!(head(p)["version"], 4);
}

#[test]
fn read_only_refuses_writes_and_serves_reads() {
    let s = Signers::new(1, 7);
    let node = registry_node(&s, 1).arg("--read-only").start();
    node.wait_ready();
    let r = node.addr("registry");
    let body = json!({ "payload": payload(r, "x") }).to_string();
    let resp = request(r, "POST", "/registry/proposals", &[], body.as_bytes());
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.header("retry-after").is_some());
    assert_eq!(head(r)["version"], 0);
    let resp = request(r, "GET", "/registry/7", &[], b"");
    assert_eq!(resp.status, 404);
}

/// `ctl registry`: keygen, propose, two approvals, commit, watch, backup;
/// then an offline restore into a fresh node gives the same head.
#[test]
fn the_operator_flow_from_the_shell_and_a_verified_restore() {
    let work = tempfile::tempdir().unwrap();
    let ctl = |url: &str, args: &[&str]| {
        let out = std::process::Command::new(common::MACRONODE)
            .args(["ctl", "--json", "registry", "--registry", url])
            .args(args)
            .output()
            .expect("ctl");
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    let mut tables = String::new();
    for i in 0..3 {
        let key = work.path().join(format!("k{i}"));
        let out = ctl(
            "http://127.0.0.1:1",
            &["keygen", "-o", key.to_str().unwrap()],
        );
        tables.push_str(&format!(
            "[[registry.signers]]\nid = \"op{i}\"\npublic_key = {}\n",
            out["public_key"]
        ));
    }
    // Two of the three operators' keys commit.
    let two_of_three = || {
        NodeBuilder::new()
            .arg("--roles")
            .arg("registry")
            .config_replace(
                "[registry]\naddr = \"127.0.0.1:0\"\n",
                "[registry]\naddr = \"127.0.0.1:0\"\nquorum_m = 2\n",
            )
            .config_extra(&tables)
    };
    let first = two_of_three();
    let running_cfg = first.config_path();
    let mut node = first.start();
    node.wait_ready();
    let url = format!("http://{}", node.addr("registry"));

    let items = work.path().join("items.json");
    std::fs::write(
        &items,
        r#"{"items": [{"region": {"id": "eu", "name": "Europe", "parent": null}}]}"#,
    )
    .unwrap();
    let p = ctl(&url, &["propose", items.to_str().unwrap()]);
    let id = p["proposal_id"].as_str().unwrap().to_owned();
    for i in [0, 2] {
        let key = work.path().join(format!("k{i}"));
        let signer = format!("op{i}");
        ctl(
            &url,
            &[
                "approve",
                &id,
                "--key",
                key.to_str().unwrap(),
                "--signer",
                &signer,
            ],
        );
    }
    let committed = ctl(&url, &["commit", &id]);
    assert_eq!(committed["version"], 1);
    assert_eq!(ctl(&url, &["head"]), committed);
    let watched = ctl(&url, &["watch", "--since", "0", "--count", "1"]);
    assert_eq!(watched["version"], 1, "{watched}");

    let backup = work.path().join("registry.jsonl");
    assert_eq!(
        ctl(&url, &["backup", backup.to_str().unwrap()])["versions"],
        1
    );
    // `ctl registry restore BACKUP --config CFG`, offline.
    let restore = |cfg: &std::path::Path| {
        std::process::Command::new(common::MACRONODE)
            .env_remove("RON_CONFIG")
            .args(["ctl", "registry", "restore"])
            .arg(&backup)
            .arg("--config")
            .arg(cfg)
            .output()
            .unwrap()
    };
    // Restore needs the node stopped: against a running one it fails (1),
    // it is not a usage error (2).
    let out = restore(&running_cfg);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(30));

    // A fresh node with the same config, stopped; restore offline; start.
    let fresh = two_of_three();
    let (cfg, dir) = (fresh.config_path(), fresh.dir().to_path_buf());
    let mut n = fresh.keep_dir().start();
    n.wait_ready();
    n.signal("TERM");
    n.wait_exit(Duration::from_secs(30));
    let out = restore(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = NodeBuilder::in_dir(dir, cfg)
        .arg("--roles")
        .arg("registry")
        .start();
    node.wait_ready();
    assert_eq!(head(node.addr("registry")), committed);
}

/// A client further behind than `stream_replay_max`, or ahead of the head,
/// is told `compacted` with the head to reconcile from.
#[test]
fn the_stream_says_compacted_when_history_is_out_of_reach() {
    let s = Signers::new(1, 8);
    let node = registry_node(&s, 1)
        .config_replace(
            "[registry]\naddr = \"127.0.0.1:0\"\n",
            "[registry]\naddr = \"127.0.0.1:0\"\nstream_replay_max = 3\n",
        )
        .start();
    node.wait_ready();
    let r = node.addr("registry");
    for i in 0..5 {
        commit_with(r, &s, &[0], &format!("v{i}"));
    }
    for from in ["1", "9"] {
        let mut st = open_stream(r, &format!("Last-Event-ID: {from}\r\n"));
        st.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("{\"head\":5}") {
            let n = st.read(&mut b).unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("event: compacted"), "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("id: ")),
            "no replay: {text}"
        );
    }
    // Within reach: replayed.
    let mut st = open_stream(r, "Last-Event-ID: 2\r\n");
    assert_eq!(read_events(&mut st, 5), vec![3, 4, 5]);
}

/// A third-party proposer hashes its own document — RFC 8785 by another
/// implementation than the node's, then BLAKE3 — and signs that digest
/// without asking the node for it. Optional fields it omits stay omitted:
/// the node neither adds `"parent": null` nor re-orders what it serves.
#[test]
fn the_hash_a_proposer_signs_is_of_the_json_it_sent() {
    let s = Signers::new(1, 9);
    let node = registry_node(&s, 1).start();
    node.wait_ready();
    let r = node.addr("registry");
    let independent_b3 = |doc: &str| {
        let v: Value = serde_json::from_str(doc).unwrap();
        format!(
            "b3:{}",
            blake3::hash(&serde_jcs::to_vec(&v).unwrap()).to_hex()
        )
    };
    let zero = format!("b3:{}", "0".repeat(64));
    let key = s.public(0);
    // Version 1 omits every optional field (region.parent, node.region),
    // compact, with keys in no canonical order.
    let v1 = format!(
        r#"{{"version":1,"prev_b3":"{zero}","items":[{{"region":{{"name":"Europe","id":"eu"}}}},{{"node":{{"id":"n1","public_key":"{key}","addrs":["oap://127.0.0.1:1"],"roles":["overlay"]}}}}],"created_at":"2026-11-25T10:00:00Z"}}"#
    );
    let v1_b3 = independent_b3(&v1);
    // Version 2 has them, written with whitespace and an escaped character.
    let v2 = format!(
        "{{ \"created_at\": \"2026-11-25T11:00:00Z\", \"version\": 2, \"prev_b3\": \"{v1_b3}\",\n  \"items\": [ {{\"region\": {{\"id\": \"eu-west\", \"name\": \"Europe \\u0057est\", \"parent\": \"eu\"}}}},\n {{\"node\": {{\"id\": \"n2\", \"public_key\": \"{key}\", \"addrs\": [], \"roles\": [], \"region\": \"eu-west\"}}}} ] }}"
    );
    for (version, doc) in [(1u64, &v1), (2, &v2)] {
        let ours = independent_b3(doc);
        let body = format!(r#"{{"payload":{doc}}}"#);
        let resp = request(r, "POST", "/registry/proposals", &[], body.as_bytes());
        assert_eq!(resp.status, 202, "{}", resp.body);
        let p = resp.json();
        assert_eq!(p["payload_b3"], ours.as_str(), "version {version}");
        let id = p["proposal_id"].as_str().unwrap();
        // The approval signs our own digest, not the node's answer.
        let resp = approve(r, id, "s0", &s.sig(0, version, &ours));
        assert_eq!(resp.status, 200, "version {version}: {}", resp.body);
        let resp = commit(r, id);
        assert_eq!(resp.status, 201, "version {version}: {}", resp.body);
        assert_eq!(resp.json()["payload_b3"], ours.as_str());
        // Served back as sent: the proposal and the artifact carry the
        // same value, and the stored text is the submitted one less the
        // whitespace between tokens.
        let sent: Value = serde_json::from_str(doc).unwrap();
        let resp = request(r, "GET", &format!("/registry/proposals/{id}"), &[], b"");
        assert_eq!(resp.json()["payload"], sent);
        let resp = request(r, "GET", &format!("/registry/{version}"), &[], b"");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["payload"], sent, "version {version}");
        let compact = serde_json::to_string(&sent).unwrap();
        if version == 1 {
            assert!(resp.body.contains(doc.as_str()), "{}", resp.body);
            assert!(!resp.body.contains("null"), "{}", resp.body);
        } else {
            assert!(
                resp.body.contains(r#""name":"Europe \u0057est""#),
                "{}",
                resp.body
            );
            assert!(
                !resp.body.contains(&compact),
                "re-serialised: {}",
                resp.body
            );
        }
    }
    assert_eq!(head(r)["payload_b3"], independent_b3(&v2).as_str());
    // Every 405 names the route's methods in Allow (RFC 9110 §15.5.6).
    for (method, p, allow) in [
        ("DELETE", "/registry/head", "GET, HEAD"),
        ("POST", "/registry/1", "GET, HEAD"),
        ("POST", "/registry/signers", "GET"),
        ("GET", "/registry/proposals", "POST"),
        ("GET", "/registry/proposals/x/commit", "POST"),
    ] {
        let resp = request(r, method, p, &[], b"");
        assert_eq!(resp.status, 405, "{method} {p}: {}", resp.body);
        assert_eq!(resp.header("allow"), Some(allow), "{method} {p}");
    }
}

/// A reload that changes a start-only registry key says so: the running
/// signer set keeps its m, `needs_restart` names the key, and the admin
/// plane shows the value in force; a hot key in the same file applies.
#[test]
fn a_reload_that_changes_quorum_m_reports_it_as_needing_a_restart() {
    let s = Signers::new(3, 4);
    let builder = registry_node(&s, 1);
    let path = builder.config_path();
    let node = builder.start();
    node.wait_ready();
    let r = node.addr("registry");
    let admin = node.addr("admin");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("quorum_m = 1\n"), "{text}");
    let changed = text.replace("quorum_m = 1\n", "quorum_m = 2\nproposal_ttl = \"1h\"\n")
        + "\n[limits]\nmax_body_bytes = 2097152\n";
    std::fs::write(&path, changed).unwrap();

    let resp = request(admin, "POST", "/api/v1/reload", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.body);
    let needs: Vec<String> = resp.json()["needs_restart"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        needs,
        ["registry.proposal_ttl", "registry.quorum_m"],
        "{}",
        resp.body
    );
    assert_eq!(
        request(r, "GET", "/registry/signers", &[], b"").json()["m"],
        1
    );
    let cfg = request(admin, "GET", "/api/v1/config", &[], b"").json();
    assert_eq!(cfg["registry"]["quorum_m"], 1, "the running value");
    assert_eq!(
        cfg["limits"]["max_body_bytes"], 2097152,
        "a hot key applies"
    );
    // One approval still commits: the running quorum is 1.
    commit_with(r, &s, &[0], "eu");
}

/// The registry runbook's §13.7 post-upgrade smoke test, as written, with
/// `ronctl` (only the ports are this node's): read the head, propose,
/// approve with two signers' keys found by signer id, commit, and see the
/// stream's first line.
#[test]
fn the_runbook_smoke_test_runs_as_written() {
    let work = tempfile::tempdir().unwrap();
    let ronctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ronctl"))
            .current_dir(work.path())
            .args(args)
            .output()
            .expect("ronctl");
        assert!(
            out.status.success(),
            "ronctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut signers = String::new();
    for s in ["signerA", "signerB"] {
        let out = ronctl(&["registry", "keygen", "--signer", s]);
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("public key "))
            .expect("public key line");
        signers += &format!("[[registry.signers]]\nid = \"{s}\"\npublic_key = \"{key}\"\n");
    }
    assert!(work.path().join("keys/signerA.key").is_file());
    let node = NodeBuilder::new()
        .arg("--roles")
        .arg("registry")
        .config_replace(
            "[registry]\naddr = \"127.0.0.1:0\"\n",
            "[registry]\naddr = \"127.0.0.1:0\"\nquorum_m = 2\n",
        )
        .config_extra(&signers)
        .start();
    node.wait_ready();
    let reg = node.addr("registry");
    let url = format!("http://{reg}");

    // curl -fsS http://127.0.0.1:9446/registry/head | jq .version
    assert_eq!(head(reg)["version"], 0);
    std::fs::write(
        work.path().join("sample.json"),
        r#"{"items": [{"region": {"id": "eu", "name": "Europe", "parent": null}}]}"#,
    )
    .unwrap();
    let out = ronctl(&[
        "registry",
        "--registry",
        &url,
        "propose",
        "--file",
        "sample.json",
    ]);
    let proposal = out
        .split_whitespace()
        .nth(1)
        .expect("proposal <id> ...")
        .to_owned();
    for s in ["signerA", "signerB"] {
        let out = ronctl(&[
            "registry",
            "--registry",
            &url,
            "approve",
            "--id",
            &proposal,
            "--signer",
            s,
        ]);
        assert!(out.contains("approved"), "{out}");
    }
    let out = ronctl(&["registry", "--registry", &url, "commit", "--id", &proposal]);
    assert!(out.starts_with("committed version 1"), "{out}");
    // curl -N http://127.0.0.1:9446/registry/stream | head -n 1
    let mut stream = open_stream(reg, "");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(": registry stream") {
        let n = stream.read(&mut b).expect("the stream's first line");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&b[..n]);
    }
    assert_eq!(head(reg)["version"], 1);
}
