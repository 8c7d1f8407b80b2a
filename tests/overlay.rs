//! Overlay sessions between real nodes on loopback: pinned keys connect
//! (TLS 1.3 + HELLO both ways), an unknown key is refused.

mod common;

use std::time::Duration;

use common::NodeBuilder;

/// A node running only the overlay, with the node key `seed` written into
/// its data dir before start, and `peers` as `[[overlay.peers]]` tables.
fn overlay_node(
    seed: u8,
    peers: &[(String, Option<std::net::SocketAddr>)],
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
            tables.push_str(&format!("addr = \"{a}\"\n"));
        }
    }
    let node = b.config_extra(&tables).start();
    node.wait_ready();
    (node, id)
}

fn id_of(seed: u8) -> String {
    ron_overlay::identity::Identity::from_seed([seed; 32])
        .unwrap()
        .node_id()
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

    let (c, _) = overlay_node(3, &[(a_id.clone(), Some(a_addr))]);
    let refused = common::poll(Duration::from_secs(60), || {
        metric_at_least(&a, "handshake_total{result=\"refused\"", 1.0).then_some(())
    });
    assert!(refused.is_some(), "{}", a.log_dump());
    assert!(metric_at_least(
        &c,
        "handshake_total{result=\"refused\"",
        1.0
    ));
    // A still has exactly its one session, with B.
    let m = a.get("metrics", "/metrics").body;
    assert!(m.lines().any(|l| l == "overlay_sessions_active 1"), "{m}");
}
