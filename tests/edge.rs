//! micronode's RAM store is a bounded cache (`storage.max_bytes`): when
//! full it evicts the least recently used objects no name points to, keeps
//! named ones, and answers 507 `storage_full` only when nothing more can
//! go — with nothing of the refused write kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use common::{body_of, request, NodeBuilder};

const MIB: usize = 1 << 20;

fn put(node: &common::Node, data: &[u8]) -> common::Resp {
    request(node.addr("omnigate"), "PUT", "/v1/o", &[], data)
}

fn name(node: &common::Node, name: &str, address: &str) {
    let body = serde_json::json!({ "address": address }).to_string();
    let r = request(
        node.addr("omnigate"),
        "PUT",
        &format!("/v1/names/{name}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
}

fn present(node: &common::Node, address: &str, want: &[u8]) -> bool {
    let (status, _, body) = common::request_bytes(
        node.addr("omnigate"),
        "GET",
        &format!("/v1/o/{address}"),
        &[],
        b"",
    );
    match status {
        200 => {
            assert_eq!(body, want, "{address} served other bytes");
            true
        }
        404 => false,
        s => panic!("GET {address}: {s}"),
    }
}

#[test]
fn the_amnesia_store_evicts_unnamed_objects_and_refuses_only_when_all_are_named() {
    let budget = 4 * MIB;
    let node = NodeBuilder::new()
        .bin(common::MICRONODE)
        .config_replace(
            "[storage]\naddr = \"127.0.0.1:0\"",
            &format!("[storage]\naddr = \"127.0.0.1:0\"\nmax_bytes = {budget}"),
        )
        .start();
    node.wait_ready();
    assert_eq!(node.metric("storage_max_bytes"), Some(budget as f64));

    // One named object, then ten unnamed ones: twice and a half the budget.
    let keep = body_of(MIB, 100);
    let keep_addr = put(&node, &keep).json()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    name(&node, "site/keep", &keep_addr);
    let mut objects = Vec::new();
    for i in 0..10u8 {
        let data = body_of(MIB, i);
        let r = put(&node, &data);
        assert_eq!(r.status, 201, "object {i}: {}", r.body);
        objects.push((r.json()["address"].as_str().unwrap().to_owned(), data));
        let stored = node.metric("storage_bytes_stored").unwrap();
        assert!(stored <= budget as f64, "stored {stored} over the budget");
    }
    assert!(node.metric("storage_evictions_total").unwrap() >= 6.0);
    assert!(
        present(&node, &keep_addr, &keep),
        "the named object was evicted"
    );
    assert!(!present(&node, &objects[0].0, &objects[0].1), "oldest kept");
    let (last, last_data) = objects.last().unwrap();
    assert!(present(&node, last, last_data), "newest evicted");

    // Name every object still there, and each new one: once nothing can
    // go, a write is refused, clearly, and leaves nothing behind.
    for (i, (addr, data)) in objects.iter().enumerate() {
        if present(&node, addr, data) {
            name(&node, &format!("site/{i}"), addr);
        }
    }
    let mut refused = None;
    for i in 0..4u8 {
        let before = node.metric("storage_bytes_stored").unwrap();
        let r = put(&node, &body_of(MIB, 200 + i));
        if r.status == 201 {
            let addr = r.json()["address"].as_str().unwrap().to_owned();
            name(&node, &format!("site/more{i}"), &addr);
            continue;
        }
        refused = Some((r, before));
        break;
    }
    let (r, before) = refused.expect("a store whose objects are all named took 4 MiB more");
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["reason"], "storage_full");
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("storage.max_bytes"));
    assert_eq!(node.metric("storage_bytes_stored"), Some(before));
    assert!(present(&node, &keep_addr, &keep));

    // Unnaming one lets the write in (the freed object is evicted).
    let r = request(
        node.addr("omnigate"),
        "DELETE",
        "/v1/names/site/keep",
        &[],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = put(&node, &body_of(MIB, 201));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!present(&node, &keep_addr, &keep));
}
