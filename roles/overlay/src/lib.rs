//! Overlay: OAP/1 over TLS 1.3/TCP between nodes (DESIGN §9).
//!
//! `identity.rs` — the node key and its certificate; `tls.rs` — pinned-key
//! TLS configs; `net.rs` — the `Overlay` (sessions, links, fetches), TCP
//! listener and dialer; `session.rs` — one session's task over any
//! stream (HELLO, credit windows, blob serving and fetching); `quic.rs` —
//! the same over QUIC on the UDP port of the same number; `apps.rs` —
//! gossip and registry sync; `oap_health.rs` — the `oap_*` metrics hook
//! and readiness inputs; `peers.rs` — the registry's `node` descriptors
//! as pins and dial targets. A key from the static `overlay.peers` list or
//! from the registry may connect; peers with an address are dialed and
//! kept connected. The overlay reaches storage and the registry only
//! through their kernel handles (`Objects`, `DescriptorLog`) and publishes
//! `PeerFetch` and `Peers`.

pub mod apps;
pub mod blob;
pub mod config;
pub mod error;
pub mod identity;
pub mod net;
pub mod oap_health;
pub mod peers;
pub mod proto;
pub mod quic;
mod sansio;
pub mod session;
pub mod state;
pub mod tls;

use std::sync::Arc;

pub use config::{OverlayConfig, PeerConfig, PqMode, Transport};

use ron_kernel::handles::{DescriptorLog, HandleResult, PeerFetch, Peers};
use ron_kernel::{Live, RoleContext, RoleResult};

/// How often readiness is re-evaluated, and how long a bus overflow holds
/// it down.
const READY_TICK: std::time::Duration = std::time::Duration::from_millis(250);
const OVERFLOW_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// The role's series at zero: handshakes by result and key exchange,
/// every reason a session or connection is refused for, the gauges.
pub fn init_series() {
    use ron_kernel::metrics::{names, zero_counters};
    for kex in ["X25519", "X25519MLKEM768", "none"] {
        for result in ["ok", "refused", "timeout"] {
            metrics::counter!(names::HANDSHAKE_TOTAL, "result" => result, "kex" => kex)
                .increment(0);
        }
    }
    let oap: Vec<&'static str> = ron_oap::RejectReason::ALL
        .iter()
        .map(|r| r.label())
        .collect();
    zero_counters(names::REJECTED_TOTAL, "reason", &oap);
    zero_counters(names::REJECTED_TOTAL, "reason", session::CLOSE_REASONS);
    zero_counters(names::REJECTED_TOTAL, "reason", &["max_conns"]);
    metrics::gauge!(names::OVERLAY_SESSIONS_ACTIVE).set(0.0);
    for state in ["all", "high"] {
        metrics::gauge!(names::OVERLAY_INFLIGHT_FRAMES, "state" => state).set(0.0);
    }
    for dir in ["in", "out"] {
        metrics::counter!(names::OVERLAY_BYTES_TOTAL, "dir" => dir).increment(0);
    }
}

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
    let static_keys: Vec<[u8; 32]> = keys.iter().map(|(k, _, _)| *k).collect();
    let pins = Arc::new(tls::Pins::new(static_keys.iter().copied()));
    let server_tls = tls::server_config(&identity, pins.clone(), c.pq_mode)?;
    let client_tls = tls::client_config(&identity, pins.clone(), c.pq_mode)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls.clone()));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls.clone()));
    let kex_preference = match c.pq_mode {
        PqMode::Hybrid => "X25519MLKEM768",
        PqMode::Classical => "X25519",
    };
    tracing::info!(role = ctx.name.as_str(), node_id = %identity.node_id(), pq_mode = ?c.pq_mode, peers = keys.len(), "overlay identity");
    let overlay = Arc::new(state::Overlay::new(
        identity,
        pins,
        acceptor,
        connector,
        state::Limits::from_config(&c),
        ctx.shutdown.clone(),
        kex_preference,
        ctx.handles.clone(),
    ));
    // Omnigate fetches what it lacks through this, without knowing the
    // overlay's types: verified bytes are stored locally before it returns
    // (written as they arrive, committed once verified).
    let handle = Arc::new(OverlayHandle(overlay.clone()));
    ctx.handles.publish::<dyn PeerFetch>(handle.clone());
    ctx.handles.publish::<dyn Peers>(handle);
    let mut tasks = tokio::task::JoinSet::new();
    let mut quic_endpoint = None;
    for name in ctx.listeners.names().map(str::to_owned).collect::<Vec<_>>() {
        let listener = ctx.listeners.tcp(&name)?;
        let bound = listener.local_addr()?;
        tasks.spawn(net::listen(overlay.clone(), listener));
        if !c.quic {
            continue;
        }
        // QUIC on the UDP port with the TCP listener's number.
        let udp = std::net::UdpSocket::bind(bound).map_err(|e| {
            std::io::Error::new(e.kind(), format!("overlay QUIC on udp {bound}: {e}"))
        })?;
        let endpoint = quic::endpoint(udp, server_tls.clone())?;
        tasks.spawn(quic::listen(overlay.clone(), endpoint.clone()));
        quic_endpoint.get_or_insert(endpoint);
    }
    let quic_client = quic::client_config(client_tls)?;
    let dialer = Dialer {
        overlay: overlay.clone(),
        quic: quic_endpoint.map(|ep| (ep, quic_client)),
    };
    let static_dialed: std::collections::BTreeSet<[u8; 32]> = keys
        .iter()
        .filter(|(_, addr, _)| addr.is_some())
        .map(|(k, _, _)| *k)
        .collect();
    for (key, addr, transport) in keys {
        if let Some(addr) = addr {
            dialer.spawn(&mut tasks, ctx.shutdown.clone(), key, (addr, transport));
        }
    }
    // Registry-fed peers: pinned next to the static ones, and dialed when
    // their descriptor has an `oap://` address; re-read when the head moves.
    let mut directory = peers::Directory::new(overlay.identity.public_key());
    let mut registry_dials: std::collections::BTreeMap<
        [u8; 32],
        (peers::DialTarget, tokio_util::sync::CancellationToken),
    > = std::collections::BTreeMap::new();
    // Bus → gossip: a local registry commit and a stored object are news
    // for the peers.
    {
        let ov = overlay.clone();
        let mut bus = ctx.bus.subscribe();
        let stop = ctx.shutdown.clone();
        let mut announce = apps::Budget::with(50.0, 100.0, std::time::Instant::now());
        tasks.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = bus.recv() => m,
                };
                match msg {
                    None => return,
                    Some(ron_kernel::BusMessage::Event(ron_kernel::KernelEvent::ObjectStored {
                        address,
                        size,
                    })) => {
                        // Hints are best effort: past the budget (which
                        // keeps a bulk upload under the peers' gossip
                        // budgets) announcements are skipped.
                        if announce.take(std::time::Instant::now()) {
                            apps::publish(
                                &ov,
                                apps::TOPIC_OBJECT_STORED,
                                serde_json::json!({"address": address, "size": size, "node": ov.identity.node_id()}),
                            );
                        }
                    }
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
                    // Missed events (an overflow, a drill's lossy bus): the
                    // commits among them are reconciled from the head, so
                    // the peers still hear of it.
                    Some(ron_kernel::BusMessage::Lagged(_)) => apps::publish_head(&ov),
                    Some(_) => {}
                }
            }
        });
    }
    // Readiness: unready while unacknowledged frames over all sessions
    // exceed `overlay.inflight_critical`, and for a while after the bus
    // overflowed.
    let critical = c.inflight_critical;
    let inputs = oap_health::Inputs::new(overlay.oap.clone());
    let listening = ctx.listeners.names().next().is_some();
    let started = std::time::Instant::now();
    // `overlay_inflight_frames{state="high"}`: the frames in flight while
    // over the critical mark (the backpressure guard engaged), else 0.
    let inflight_high =
        metrics::gauge!(ron_kernel::metrics::names::OVERLAY_INFLIGHT_FRAMES, "state" => "high");
    let mut tick = ron_kernel::ReadyTick::new(READY_TICK);
    let mut overflow = ctx.bus.overflow_watch(OVERFLOW_HOLD);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Some(changed) = refresh_directory(&overlay, &mut directory).await {
            if changed {
                let all = static_keys.iter().copied().chain(directory.keys());
                overlay.pins.set(all);
                let dropped = overlay.drop_unpinned();
                let targets = directory.dial_targets();
                registry_dials.retain(|key, (target, stop)| {
                    let keep = targets.get(key) == Some(target);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for (key, target) in targets {
                    if static_dialed.contains(&key) || registry_dials.contains_key(&key) {
                        continue;
                    }
                    let stop = ctx.shutdown.child_token();
                    dialer.spawn(&mut tasks, stop.clone(), key, target);
                    registry_dials.insert(key, (target, stop));
                }
                tracing::info!(
                    registry_version = directory.folded(),
                    registry_peers = directory.keys().len(),
                    dialed = registry_dials.len(),
                    sessions_dropped = dropped,
                    "overlay peers from the registry"
                );
            }
        }
        let inflight = overlay.inflight_frames();
        let overflowed = overflow.check();
        let judged = inputs.judge(
            started.elapsed().as_secs(),
            listening,
            overlay.windows_granted(),
            inflight,
            critical,
        );
        ctx.ready.set_inputs(&judged.pairs());
        inflight_high.set(if inflight > critical {
            inflight as f64
        } else {
            0.0
        });
        let failed: Vec<&str> = judged
            .pairs()
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| *name)
            .collect();
        if !judged.backpressure_ok {
            ctx.ready.set_unready(format!(
                "{inflight} overlay frames unacknowledged, above overlay.inflight_critical {critical} (oap_backpressure_ok false)"
            ));
        } else if !failed.is_empty() {
            ctx.ready.set_unready(format!(
                "OAP/1 readiness inputs false: {}",
                failed.join(", ")
            ));
        } else if overflowed {
            ctx.ready.set_unready("the bus overflowed");
        } else {
            ctx.ready.set_ready();
            tick.settled();
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Starts the dialer of one peer on the right transport.
struct Dialer {
    overlay: Arc<state::Overlay>,
    /// The QUIC endpoint and client config, when a listener gave one.
    quic: Option<(quinn::Endpoint, quinn::ClientConfig)>,
}

impl Dialer {
    fn spawn(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        stop: tokio_util::sync::CancellationToken,
        key: [u8; 32],
        (addr, transport): peers::DialTarget,
    ) {
        match (transport, &self.quic) {
            (Transport::Tcp, _) => {
                tasks.spawn(net::dial(self.overlay.clone(), stop, addr, key));
            }
            (Transport::Quic, Some((ep, client))) => {
                tasks.spawn(quic::dial(
                    self.overlay.clone(),
                    stop,
                    ep.clone(),
                    client.clone(),
                    addr,
                    key,
                ));
            }
            (Transport::Quic, _) => {
                tracing::warn!(%addr, "overlay: QUIC is off here (overlay.quic = false); this peer is dialed over QUIC only");
            }
        }
    }
}

/// Folds new registry versions into `directory`: `Some(changed)` when the
/// registry runs here and its head moved, `None` otherwise.
async fn refresh_directory(
    overlay: &Arc<state::Overlay>,
    directory: &mut peers::Directory,
) -> Option<bool> {
    let registry = overlay.handles.get::<dyn DescriptorLog>().ok()?;
    if registry.head().version == directory.folded() {
        return None;
    }
    let mut d = std::mem::take(directory);
    // Reading artifacts touches redb: on the blocking pool.
    let (d, result) = tokio::task::spawn_blocking(move || {
        let r = d.refresh(&*registry);
        (d, r)
    })
    .await
    .ok()?;
    *directory = d;
    match result {
        Ok(changed) => Some(changed),
        Err(e) => {
            tracing::warn!(error = %e, "overlay: reading node descriptors from the registry failed");
            None
        }
    }
}

/// What the overlay promises other roles: fetching from peers
/// ([`PeerFetch`]) and its sessions for the admin plane ([`Peers`]).
pub struct OverlayHandle(Arc<state::Overlay>);

impl PeerFetch for OverlayHandle {
    fn fetch(
        &self,
        address: ron_kernel::ContentAddress,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = HandleResult<()>> + Send + 'static>>
    {
        let ov = self.0.clone();
        Box::pin(async move { ov.fetch_into_store(address).await })
    }

    fn fetch_range(
        &self,
        address: ron_kernel::ContentAddress,
        range: std::ops::Range<u64>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = HandleResult<(u64, ron_kernel::handles::PeerBytes)>>
                + Send
                + 'static,
        >,
    > {
        let ov = self.0.clone();
        Box::pin(async move { Ok(ov.fetch_range(address, range).await?) })
    }
}

impl Peers for OverlayHandle {
    fn status(&self) -> serde_json::Value {
        serde_json::json!({"node_id": self.0.identity.node_id(), "peers": self.0.peers()})
    }
}
