//! Overlay: OAP/1 over TLS 1.3/TCP between nodes (DESIGN §9).
//!
//! `identity.rs` — the node key and its certificate; `tls.rs` — pinned-key
//! TLS configs; `net.rs` — TCP listener, dialer and the session task;
//! `quic.rs` — the same over QUIC on the UDP port of the same number. Peers are
//! the static `overlay.peers` list for now: each listed key may connect,
//! and those with an address are dialed and kept connected.

pub mod apps;
pub mod config;
pub mod identity;
pub mod net;
pub mod quic;
pub mod session;
pub mod tls;

use std::sync::Arc;

pub use config::{OverlayConfig, PeerConfig, PqMode, Transport};

use ron_kernel::{Live, RoleContext, RoleResult};

/// How often readiness is re-evaluated, and how long a bus overflow holds
/// it down.
const READY_TICK: std::time::Duration = std::time::Duration::from_millis(250);
const OVERFLOW_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(ctx: RoleContext, cfg: Live<OverlayConfig>) -> RoleResult {
    let c = cfg.load();
    let settings = ctx.settings.load();
    let identity = if settings.amnesia {
        identity::Identity::ephemeral()?
    } else {
        let dir = settings.data_dir.clone();
        tokio::task::spawn_blocking(move || identity::Identity::load_or_create(&dir)).await??
    };
    let keys: Vec<([u8; 32], Option<std::net::SocketAddr>, Transport)> = c
        .peers
        .iter()
        .filter_map(|p| identity::parse_key_hex(&p.public_key).map(|k| (k, p.addr, p.transport)))
        .collect();
    let pins = Arc::new(tls::Pins::new(keys.iter().map(|(k, _, _)| *k)));
    let server_tls = tls::server_config(&identity, pins.clone(), c.pq_mode)?;
    let client_tls = tls::client_config(&identity, pins.clone(), c.pq_mode)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls.clone()));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls.clone()));
    let kex_preference = match c.pq_mode {
        PqMode::Hybrid => "X25519MLKEM768",
        PqMode::Classical => "X25519",
    };
    tracing::info!(role = ctx.name, node_id = %identity.node_id(), pq_mode = ?c.pq_mode, peers = keys.len(), "overlay identity");
    let overlay = Arc::new(net::Overlay::new(
        identity,
        pins,
        acceptor,
        connector,
        net::Limits::from_config(&c),
        ctx.shutdown.clone(),
        kex_preference,
        ctx.handles.clone(),
    ));
    ctx.handles.publish("overlay", overlay.clone());
    // Omnigate fetches what it lacks through this, without knowing the
    // overlay's types: verified bytes are stored locally before it returns.
    let fetcher = overlay.clone();
    ctx.handles.publish(
        "overlay",
        Arc::new(ron_kernel::handles::PeerFetch(Arc::new(move |address| {
            let ov = fetcher.clone();
            Box::pin(async move {
                let data = ov.fetch(address).await?;
                let store = ov.clone();
                tokio::task::spawn_blocking(move || net::local_put(&store, &data))
                    .await
                    .map_err(|e| e.to_string())?
            })
        }))),
    );
    let mut tasks = tokio::task::JoinSet::new();
    let mut quic_endpoint = None;
    for name in ctx.listeners.names().map(str::to_owned).collect::<Vec<_>>() {
        let listener = ctx.listeners.tcp(&name)?;
        // QUIC on the UDP port with the TCP listener's number.
        let bound = listener.local_addr()?;
        let udp = std::net::UdpSocket::bind(bound).map_err(|e| {
            std::io::Error::new(e.kind(), format!("overlay QUIC on udp {bound}: {e}"))
        })?;
        let endpoint = quic::endpoint(udp, server_tls.clone())?;
        tasks.spawn(net::listen(overlay.clone(), listener));
        tasks.spawn(quic::listen(overlay.clone(), endpoint.clone()));
        quic_endpoint.get_or_insert(endpoint);
    }
    let quic_client = quic::client_config(client_tls)?;
    for (key, addr, transport) in keys {
        match (addr, transport, &quic_endpoint) {
            (Some(addr), Transport::Tcp, _) => {
                tasks.spawn(net::dial(overlay.clone(), addr, key));
            }
            (Some(addr), Transport::Quic, Some(ep)) => {
                tasks.spawn(quic::dial(
                    overlay.clone(),
                    ep.clone(),
                    quic_client.clone(),
                    addr,
                    key,
                ));
            }
            _ => {}
        }
    }
    // Bus → gossip: a local registry commit is news for the peers.
    {
        let ov = overlay.clone();
        let mut bus = ctx.bus.subscribe();
        let stop = ctx.shutdown.clone();
        tasks.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = bus.recv() => m,
                };
                match msg {
                    None => return,
                    Some(ron_kernel::BusMessage::Event(
                        ron_kernel::KernelEvent::RegistryCommitted {
                            version,
                            payload_b3,
                        },
                    )) => apps::publish(
                        &ov,
                        apps::TOPIC_REGISTRY_HEAD,
                        serde_json::json!({"version": version, "payload_b3": payload_b3}),
                    ),
                    Some(_) => {}
                }
            }
        });
    }
    // Readiness: unready while unacknowledged frames over all sessions
    // exceed `overlay.inflight_critical`, and for a while after the bus
    // overflowed.
    let critical = c.inflight_critical;
    let mut tick = tokio::time::interval(READY_TICK);
    let mut seen_overflow = ctx.bus.overflow_dropped();
    let mut overflow_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let dropped = ctx.bus.overflow_dropped();
        if dropped > seen_overflow {
            seen_overflow = dropped;
            overflow_until = Some(now + OVERFLOW_HOLD);
        }
        let inflight = overlay.inflight_frames();
        if inflight > critical {
            ctx.ready.set_unready(format!(
                "{inflight} overlay frames unacknowledged, above overlay.inflight_critical {critical}"
            ));
        } else if overflow_until.is_some_and(|t| t > now) {
            ctx.ready.set_unready("the bus overflowed");
        } else {
            ctx.ready.set_ready();
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
