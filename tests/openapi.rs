//! The OpenAPI documents against the real binary: each listener serves its
//! own, the gateway's document is exactly the routes behind it (read from
//! the role sources, then driven method by method), docs/API.md's tables
//! name the same routes, and what schemathesis found (packaging/check.sh
//! runs it) stays fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use std::collections::BTreeSet;

use common::{request, NodeBuilder};

const OMNIGATE: &str = include_str!("../docs/openapi/omnigate.json");

/// An all-roles node.
fn node() -> common::Node {
    let node = NodeBuilder::new().start();
    node.wait_ready();
    node
}

/// The document's operations, `METHOD path`.
fn operations(doc: &str) -> BTreeSet<String> {
    let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
    let methods = ["get", "head", "post", "put", "delete", "patch", "options"];
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            if methods.contains(&m.as_str()) {
                ops.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    ops
}

/// Every route template the routers behind the gateway name (the roles'
/// route constants and the mailbox's route labels, read from their
/// sources), without the labels of refusals (`{unknown}`, `{verb}`).
fn routed_templates() -> BTreeSet<String> {
    let sources = [
        include_str!("../roles/storage/src/http.rs"),
        include_str!("../roles/index/src/http.rs"),
        include_str!("../roles/mailbox/src/http.rs"),
        include_str!("../roles/omnigate/src/view.rs"),
    ];
    let mut out = BTreeSet::new();
    for src in sources {
        for line in src.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            let named = line.starts_with("const ROUTE") || line.starts_with("pub const ROUTE");
            for (i, quoted) in line.split('"').enumerate() {
                let template =
                    quoted.starts_with("/v1/") && quoted.contains('{') && !quoted.contains("{}");
                if i % 2 == 1 && (named || template) && !quoted.contains("{verb}") {
                    out.insert(quoted.to_owned());
                }
            }
        }
    }
    out.insert("/openapi.json".into());
    out
}

/// A concrete path for a template.
fn concrete(template: &str) -> String {
    template
        .replace("{address}", &format!("b3:{}", "ab".repeat(32)))
        .replace("{id}", "00000000000000aa")
        .replace("{n}", "0")
        .replace("{name}", "site")
        .replace("{topic}", "news")
        .replace("{msg_id}", &"cd".repeat(16))
}

#[test]
fn the_gateway_document_is_the_routes_behind_it_and_every_listener_serves_its_own() {
    let paths: BTreeSet<String> = operations(OMNIGATE)
        .iter()
        .map(|op| op.split_once(' ').unwrap().1.to_owned())
        .collect();
    assert_eq!(routed_templates(), paths);

    let node = node();
    let gate = node.addr("omnigate");
    for (listener, file) in [
        ("omnigate", OMNIGATE),
        ("registry", include_str!("../docs/openapi/registry.json")),
        ("metrics", include_str!("../docs/openapi/health.json")),
        ("admin", include_str!("../docs/openapi/admin.json")),
    ] {
        let r = request(node.addr(listener), "GET", "/openapi.json", &[], b"");
        assert_eq!(r.status, 200, "{listener}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let served: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            served,
            serde_json::from_str::<serde_json::Value>(file).unwrap()
        );
    }

    // Each documented operation is answered by its route (not 405, not
    // the gateway's "no route"); each other method on that path is 405.
    let ops = operations(OMNIGATE);
    for path in &paths {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] {
            let r = request(gate, method, &concrete(path), &[], b"");
            if ops.contains(&format!("{method} {path}")) {
                assert_ne!(r.status, 405, "{method} {path}: {}", r.body);
                assert!(!r.body.contains("no route"), "{method} {path}: {}", r.body);
            } else {
                assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
                assert!(r.header("allow").is_some(), "{method} {path}");
            }
        }
    }
}

/// docs/API.md's tables for storage, index, mailbox and the gateway name
/// every operation of the gateway's document (its HEADs are sentences),
/// and no other route.
#[test]
fn the_guide_names_every_gateway_route() {
    let guide = include_str!("../docs/API.md");
    let mut rows = BTreeSet::new();
    for heading in ["## Storage", "## Index", "## Mailbox", "## Omnigate"] {
        let start = guide.find(heading).unwrap();
        let end = start + 3 + guide[start + 3..].find("\n## ").unwrap();
        for line in guide[start..end].lines() {
            let Some(cell) = line.strip_prefix("| `") else {
                continue;
            };
            let route = cell.split('`').next().unwrap();
            let route = route.split(['[', '?']).next().unwrap();
            let Some((method, path)) = route.split_once(' ') else {
                continue; // "`GET` with `Range`": a variant of a route above
            };
            let verb = method.bytes().all(|b| b.is_ascii_uppercase());
            if verb && path.starts_with('/') && method != "HEAD" {
                rows.insert(format!("{method} {path}"));
            }
        }
    }
    let want: BTreeSet<String> = operations(OMNIGATE)
        .into_iter()
        .filter(|op| !op.starts_with("HEAD "))
        .collect();
    assert_eq!(rows, want);
}

/// What schemathesis found against the gateway, each now answered right.
#[test]
fn what_the_fuzzer_found_stays_fixed() {
    let node = node();
    let gate = node.addr("omnigate");
    let body = b"percent-encoded";
    let address = format!("b3:{}", blake3::hash(body).to_hex());
    let encoded = address.replace(':', "%3A");

    // A client that escapes `:` in the address (as generated clients do)
    // names the same object.
    let put = request(gate, "PUT", &format!("/v1/o/{encoded}"), &[], body);
    assert_eq!(put.status, 201, "{}", put.body);
    let get = request(gate, "GET", &format!("/v1/o/{encoded}"), &[], b"");
    assert_eq!((get.status, get.body.as_str()), (200, "percent-encoded"));
    // And a name whose `/` is escaped is the name with the `/`.
    let rec = format!("{{\"address\":\"{address}\"}}");
    let named = request(gate, "PUT", "/v1/names/site%2Fhome", &[], rec.as_bytes());
    assert_eq!(named.status, 201, "{}", named.body);
    assert_eq!(named.json()["name"], "site/home");
    assert_eq!(
        request(gate, "GET", "/v1/names/site/home", &[], b"").status,
        200
    );
    let view = request(gate, "GET", "/v1/view/site%2Fhome", &[], b"");
    assert_eq!(view.status, 200, "{}", view.body);

    // The largest part number is out of order, not an overflow (a debug
    // build panicked: 500).
    let up = request(gate, "POST", "/v1/uploads", &[], b"").json();
    let id = up["id"].as_str().unwrap();
    let last = format!("/v1/uploads/{id}/{}", u64::MAX);
    let r = request(gate, "PUT", &last, &[], b"part");
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (409, Some("part_order"))
    );

    // PUT on an upload's `complete` is the wrong method, not a bad part.
    let up = request(gate, "POST", "/v1/uploads", &[], b"").json();
    let id = up["id"].as_str().unwrap();
    let r = request(gate, "PUT", &format!("/v1/uploads/{id}/complete"), &[], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));

    // A yes/no parameter takes yes or no; anything else is an error, not
    // a silent "no".
    let bad_query = |path: &str| {
        let r = request(gate, "GET", path, &[], b"");
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()["reason"], "bad_query", "{path}");
    };
    bad_query("/v1/names/site/home?history=maybe");
    bad_query("/v1/names/site/home?history=true&history=false");
    bad_query("/v1/topics/news/messages?latest=null");
    let plain = request(gate, "GET", "/v1/names/site/home?history=false", &[], b"");
    assert_eq!(plain.json()["version"], 1);

    // If-Match is a version, quoted or not, and nothing half-quoted.
    let current = || {
        let r = request(gate, "GET", "/v1/names/site/home", &[], b"");
        r.json()["version"].as_u64().unwrap()
    };
    for (quote, status) in [
        (["\"", ""], 400),
        (["", "\""], 400),
        (["\"", "\""], 200),
        (["", ""], 200),
    ] {
        let v = current();
        let value = format!("{}{v}{}", quote[0], quote[1]);
        let headers = [("if-match", value.as_str())];
        let r = request(gate, "PUT", "/v1/names/site/home", &headers, rec.as_bytes());
        assert_eq!(r.status, status, "If-Match: {value}: {}", r.body);
        let reason = (status == 400).then(|| r.json()["reason"].clone());
        assert!(
            reason.is_none_or(|r| r == "bad_if_match"),
            "If-Match: {value}"
        );
        assert_eq!(current(), if status == 200 { v + 1 } else { v });
    }

    // A JSON body is an object: serde would take a struct written as an
    // array.
    for (path, array) in [
        ("/v1/topics/news/receive", "[null, null]"),
        ("/v1/names/other", &format!("[\"{address}\"]")[..]),
    ] {
        let method = if path.contains("names") {
            "PUT"
        } else {
            "POST"
        };
        let r = request(gate, method, path, &[], array.as_bytes());
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()["reason"], "bad_json", "{path}");
    }
    let reg = node.addr("registry");
    let r = request(reg, "POST", "/registry/proposals", &[], b"[1]");
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (400, Some("bad_json"))
    );
    let admin = node.addr("admin");
    let r = request(admin, "POST", "/api/v1/cap/rotate", &[], b"[\"write\"]");
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (400, Some("bad_json"))
    );
}
