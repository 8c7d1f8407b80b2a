//! Committing to a node's registry as a 1-of-1 signer set (id `s0`) would:
//! propose, approve with the signer's key, commit. For the tests that
//! need a version to travel (overlay sync, followers, drills).

#![allow(dead_code)]

use std::net::SocketAddr;

use crate::common::request;

/// The genesis signer set naming `seed`'s key as `s0`, as config.
pub fn signer_config(seed: [u8; 32]) -> String {
    let public: String = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("[[registry.signers]]\nid = \"s0\"\npublic_key = \"{public}\"\n")
}

/// One committed version holding a region `region`, signed by `seed`;
/// `headers` go with every request (a write token). The commit's answer.
pub fn commit_region(
    registry: SocketAddr,
    seed: [u8; 32],
    region: &str,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    commit_items(
        registry,
        seed,
        serde_json::json!([{"region": {"id": region, "name": region, "parent": null}}]),
        headers,
    )
}

/// One committed version with `items`, signed as in `commit_region`.
pub fn commit_items(
    registry: SocketAddr,
    seed: [u8; 32],
    items: serde_json::Value,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let head = request(registry, "GET", "/registry/head", headers, b"").json();
    let payload = serde_json::json!({"payload": {
        "version": head["version"].as_u64().unwrap() + 1,
        "prev_b3": head["payload_b3"],
        "items": items,
        "created_at": "2026-11-25T10:00:00Z",
    }});
    let r = request(
        registry,
        "POST",
        "/registry/proposals",
        headers,
        payload.to_string().as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let p = r.json();
    let id = p["proposal_id"].as_str().unwrap();
    let h = ron_registry::model::hash_bytes(p["payload_b3"].as_str().unwrap()).unwrap();
    let sig = ron_registry::model::sign_approval(&seed, p["version"].as_u64().unwrap(), &h);
    let body = serde_json::json!({"signer_id": "s0", "sig": sig}).to_string();
    let r = request(
        registry,
        "POST",
        &format!("/registry/proposals/{id}/approvals"),
        headers,
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        registry,
        "POST",
        &format!("/registry/proposals/{id}/commit"),
        headers,
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// The registry's head.
pub fn head(registry: SocketAddr) -> serde_json::Value {
    request(registry, "GET", "/registry/head", &[], b"").json()
}

/// A ready node running the registry (genesis signer set: `signer` as
/// `s0`) and the overlay with node key `seed`, with `extra` config (peer
/// tables, sections).
pub fn node(signer: [u8; 32], seed: u8, extra: &str) -> crate::common::Node {
    let node = crate::common::NodeBuilder::new()
        .arg("--roles")
        .arg("registry,overlay")
        .node_key(seed)
        .config_extra(&format!("{}{extra}", signer_config(signer)))
        .start();
    node.wait_ready();
    node
}
