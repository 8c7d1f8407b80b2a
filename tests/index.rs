//! The index role's HTTP API against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

mod common;

use common::{request, NodeBuilder};

const ADDR: &str = "b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
const ADDR2: &str = "b3:0000000000000000000000000000000000000000000000000000000000000001";

#[test]
fn names_versions_history_and_cas_over_http() {
    let node = NodeBuilder::new().arg("--roles").arg("index").start();
    node.wait_ready();
    let ix = node.addr("index");
    let body = format!(
        r#"{{"address":"{ADDR}","content_type":"text/plain","feed":"news","meta":{{"k":1}}}}"#
    );

    let r = request(ix, "PUT", "/v1/names/blog/post-1", &[], body.as_bytes());
    assert_eq!(r.status, 201, "{}", r.body);
    let rec = r.json();
    assert_eq!(rec["name"], "blog/post-1");
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["address"], ADDR);
    assert_eq!(rec["feed"], "news");
    assert!(rec["updated_at"].as_str().unwrap().ends_with('Z'));

    let r = request(ix, "GET", "/v1/names/blog/post-1", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.json()["meta"]["k"], 1);

    let body2 = format!(r#"{{"address":"{ADDR2}"}}"#);
    let r = request(
        ix,
        "PUT",
        "/v1/names/blog/post-1",
        &[("If-Match", "\"1\"")],
        body2.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], 2);
    let r = request(
        ix,
        "PUT",
        "/v1/names/blog/post-1",
        &[("If-Match", "1")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.json()["reason"], "version_mismatch");

    let r = request(ix, "GET", "/v1/names/blog/post-1?history=true", &[], b"");
    assert_eq!(r.status, 200);
    let versions = r.json()["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["address"], ADDR);
    assert_eq!(versions[1]["address"], ADDR2);

    assert_eq!(
        request(ix, "DELETE", "/v1/names/blog/post-1", &[], b"").status,
        204
    );
    assert_eq!(
        request(ix, "GET", "/v1/names/blog/post-1", &[], b"").status,
        404
    );
}

#[test]
fn bad_names_and_bodies_get_clear_problems() {
    let node = NodeBuilder::new().arg("--roles").arg("index").start();
    node.wait_ready();
    let ix = node.addr("index");
    let good = format!(r#"{{"address":"{ADDR}"}}"#);
    for (path, reason) in [
        ("/v1/names/Upper", "bad_name"),
        ("/v1/names/a/../b", "bad_name"),
        ("/v1/names/trailing/", "bad_name"),
    ] {
        let r = request(ix, "PUT", path, &[], good.as_bytes());
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json()["reason"], reason, "{path}");
    }
    let r = request(ix, "PUT", "/v1/names/x", &[], br#"{"address":"B3:NOPE"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "bad_json");
    let r = request(
        ix,
        "PUT",
        "/v1/names/x",
        &[],
        br#"{"address":"b3:00","extra":1}"#,
    );
    assert_eq!(r.json()["reason"], "bad_json");
    let r = request(
        ix,
        "PUT",
        "/v1/names/x",
        &[("If-Match", "soon")],
        good.as_bytes(),
    );
    assert_eq!(r.json()["reason"], "bad_if_match");
    let r = request(
        ix,
        "PUT",
        "/v1/names/x",
        &[],
        format!(r#"{{"address":"{ADDR}","feed":"Not A Topic"}}"#).as_bytes(),
    );
    assert_eq!(r.json()["reason"], "bad_record");
    assert_eq!(request(ix, "GET", "/v1/names/nope", &[], b"").status, 404);
    let r = request(
        ix,
        "PUT",
        "/v1/names/x",
        &[("Content-Encoding", "zstd")],
        good.as_bytes(),
    );
    assert_eq!(r.status, 415);
    let r = common::request_declaring(ix, "PUT", "/v1/names/x", (1 << 20) + 1);
    assert_eq!(r.status, 413);
    assert_eq!(request(ix, "POST", "/v1/names/x", &[], b"").status, 405);
}

#[test]
fn ctl_names_set_and_get() {
    let node = NodeBuilder::new().arg("--roles").arg("index").start();
    node.wait_ready();
    let url = format!("http://{}", node.addr("index"));
    let ctl = |args: &[&str]| {
        std::process::Command::new(common::MACRONODE)
            .args(["ctl", "--url", &url, "--json", "names"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctl(&[
        "set",
        "docs/readme",
        ADDR,
        "--content-type",
        "text/markdown",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["version"], 1);
    let out = ctl(&["set", "docs/readme", ADDR2, "--if-match", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("412"));
    let out = ctl(&["get", "docs/readme"]);
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["content_type"], "text/markdown");
    assert_eq!(rec["address"], ADDR);
    // Without --json: one line an operator reads.
    let out = std::process::Command::new(common::MACRONODE)
        .args(["ctl", "--url", &url, "names", "get", "docs/readme"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.starts_with("docs/readme  version 1  ") && line.contains("text/markdown"),
        "{line}"
    );
}
