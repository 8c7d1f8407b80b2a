//! Overlay: OAP/1 over TLS 1.3/TCP between nodes (DESIGN §9).
//!
//! `identity.rs` — the node key and its certificate; `tls.rs` — pinned-key
//! TLS configs; `net.rs` — listener, dialer and session tasks. Peers are
//! the static `overlay.peers` list for now: each listed key may connect,
//! and those with an address are dialed and kept connected.

pub mod config;
pub mod identity;
pub mod net;
pub mod tls;

use std::sync::Arc;

pub use config::{OverlayConfig, PeerConfig, PqMode};

use ron_kernel::{Live, RoleContext, RoleResult};

pub async fn run(ctx: RoleContext, cfg: Live<OverlayConfig>) -> RoleResult {
    let c = cfg.load();
    let settings = ctx.settings.load();
    let identity = if settings.amnesia {
        identity::Identity::ephemeral()?
    } else {
        let dir = settings.data_dir.clone();
        tokio::task::spawn_blocking(move || identity::Identity::load_or_create(&dir)).await??
    };
    let keys: Vec<([u8; 32], Option<std::net::SocketAddr>)> = c
        .peers
        .iter()
        .filter_map(|p| identity::parse_key_hex(&p.public_key).map(|k| (k, p.addr)))
        .collect();
    let pins = Arc::new(tls::Pins::new(keys.iter().map(|(k, _)| *k)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(
        &identity,
        pins.clone(),
        c.pq_mode,
    )?));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls::client_config(
        &identity,
        pins.clone(),
        c.pq_mode,
    )?));
    tracing::info!(role = ctx.name, node_id = %identity.node_id(), pq_mode = ?c.pq_mode, peers = keys.len(), "overlay identity");
    let overlay = Arc::new(net::Overlay::new(
        identity,
        pins,
        acceptor,
        connector,
        c.handshake_timeout,
        c.max_conns as usize,
        ctx.shutdown.clone(),
    ));
    ctx.handles.publish("overlay", overlay.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for name in ctx.listeners.names().map(str::to_owned).collect::<Vec<_>>() {
        let listener = ctx.listeners.tcp(&name)?;
        tasks.spawn(net::listen(overlay.clone(), listener));
    }
    for (key, addr) in keys {
        if let Some(addr) = addr {
            tasks.spawn(net::dial(overlay.clone(), addr, key));
        }
    }
    ctx.ready.set_ready();
    ctx.shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}
