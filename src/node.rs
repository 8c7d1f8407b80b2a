//! A running node: binds listeners, starts the planes and the supervised
//! roles, then waits for signals and admin commands (reload, shutdown).
//!
//! Shutdown order (the runbook's): `/readyz` 503 at once → listeners stop
//! accepting → in-flight requests drain up to `shutdown.drain_deadline` →
//! `Shutdown` on the bus → exit 0. A second SIGINT/SIGTERM exits at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use ron_kernel::http::{serve, Handler, ServeOptions};
use ron_kernel::metrics::names;
use ron_kernel::{
    Bus, KernelEvent, Live, NodeSettings, Readiness, RoleContext, RoleListeners, StdListener,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::caps::{CapError, Caps, Service};
use crate::config::{ConfigSource, NodeConfig};
use crate::logging::LogHandle;
use crate::planes::{self, AdminCommand, PlaneState, ReloadOutcome};
use crate::roles;
use crate::supervisor::Supervisor;

/// Exit code when a second signal cuts the drain short.
pub const EXIT_FORCED: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot bind {name} listener on {addr}: {source}")]
    Bind {
        name: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot install metrics recorder: {0}")]
    Metrics(String),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Roles(#[from] roles::RoleSelectError),
    #[error("capability tokens: {0}")]
    Caps(#[from] CapError),
    #[error("{path}: {source}")]
    Schema {
        path: String,
        source: ron_kernel::schema::SchemaError,
    },
}

fn settings_from(cfg: &NodeConfig, write_cap: ron_kernel::cap::Capability) -> NodeSettings {
    NodeSettings {
        data_dir: cfg.data_dir.clone(),
        amnesia: cfg.amnesia,
        read_only: cfg.read_only,
        drain_deadline: cfg.shutdown.drain_deadline,
        header_read_timeout: cfg.limits.header_read_timeout,
        body_read_timeout: cfg.limits.body_read_timeout,
        max_body_bytes: cfg.limits.max_body_bytes,
        write_cap,
    }
}

/// Tells systemd (when `NOTIFY_SOCKET` is set, i.e. `Type=notify`) how
/// the node stands; a failure to tell is logged, never fatal.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The Prometheus exporter as the node installs it: every histogram with
/// its buckets (`ron_kernel::metrics::histogram_buckets`), none a summary.
pub fn prometheus_builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::Matcher;
    let mut b = PrometheusBuilder::new().set_buckets(ron_kernel::metrics::REQUEST_BUCKETS)?;
    for (name, buckets) in ron_kernel::metrics::histogram_buckets() {
        b = b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)?;
    }
    Ok(b)
}

/// Creates every documented series of the host and of `specs`' roles at
/// zero, so they are there from the first scrape.
pub fn init_series(specs: &[roles::RoleSpec]) {
    let names: Vec<&'static str> = specs.iter().map(|s| s.name.as_str()).collect();
    ron_kernel::metrics::init_host_series(&names);
    for spec in specs {
        (spec.init_series)();
    }
}

/// Binds listener `name`: on its TCP address, or under `--uds-only` on
/// the Unix socket `<uds.dir>/<name>.sock`. Nonblocking, ready for tokio.
fn bind(
    name: &str,
    addr: SocketAddr,
    uds: &crate::config::UdsConfig,
) -> Result<StdListener, NodeError> {
    let (shown, bound) = if uds.only {
        // Absolute, so the `ready=1` line and /api/v1/status say where.
        let path = std::path::absolute(&uds.dir)
            .unwrap_or_else(|_| uds.dir.clone())
            .join(format!("{name}.sock"));
        let shown = format!("unix:{}", path.display());
        (
            shown,
            ron_kernel::listener::bind_unix(&path).map(StdListener::Unix),
        )
    } else {
        (
            addr.to_string(),
            std::net::TcpListener::bind(addr).map(StdListener::Tcp),
        )
    };
    bound
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| NodeError::Bind {
            name: name.to_owned(),
            addr: shown,
            source,
        })
}

pub async fn run(src: ConfigSource, cfg: NodeConfig, log: LogHandle) -> Result<i32, NodeError> {
    let started = Instant::now();
    let prometheus = prometheus_builder()
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| NodeError::Metrics(e.to_string()))?;
    ron_kernel::metrics::describe_all();
    let process = Arc::new(metrics_process::Collector::default());
    process.describe();
    process.collect();
    {
        let h = prometheus.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    }

    if !cfg.amnesia {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| NodeError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
    }

    let readiness = Readiness::new();
    readiness.set_config_loaded(true);
    let bus = Bus::new(cfg.bus.capacity);
    // The host's own subscription: logs crashes, and is the "bus is
    // subscribed" readiness gate.
    let mut host_rx = bus.subscribe();
    readiness.set_bus_subscribed(true);
    tokio::spawn(async move {
        while let Some(msg) = host_rx.recv().await {
            if let ron_kernel::BusMessage::Event(KernelEvent::ServiceCrashed { service, reason }) =
                msg
            {
                tracing::warn!(service, reason, "bus: service crashed");
            }
        }
    });

    let role_names = roles::select(&cfg.roles)?;
    let (specs, live_sections) = roles::build(&role_names, &cfg);
    if !cfg.amnesia {
        // A file of another schema version stops the node here, naming
        // what to run, rather than crash-looping the role.
        for schema in specs.iter().filter_map(|s| s.schema) {
            let path = cfg.data_dir.join(schema.file);
            ron_kernel::schema::preflight(&path, schema).map_err(|source| NodeError::Schema {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    init_series(&specs);
    // Every role is on the board (starting, not ready) before the health
    // plane serves; the board itself stays unready until this is done.
    let role_ready =
        readiness.register_roles(&specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>());

    // Bind everything before anything starts, so a port conflict fails fast
    // and a restarted role keeps its port.
    readiness.expect_listener("metrics");
    readiness.expect_listener("admin");
    let metrics_l = bind("metrics", cfg.metrics.addr, &cfg.uds)?;
    let admin_l = bind("admin", cfg.admin.addr, &cfg.uds)?;
    let mut role_listeners: Vec<RoleListeners> = Vec::new();
    for spec in &specs {
        let mut ls = RoleListeners::default();
        for (lname, addr) in &spec.listeners {
            readiness.expect_listener(lname);
            // The overlay speaks OAP/1 to other hosts: always TCP (config
            // validation refuses it under `uds.only`).
            let uds = if *lname == "overlay" {
                &crate::config::UdsConfig::default()
            } else {
                &cfg.uds
            };
            let l = bind(lname, *addr, uds)?;
            ls.insert(lname, l).map_err(|source| NodeError::Bind {
                name: lname.to_string(),
                addr: addr.to_string(),
                source,
            })?;
            if let Some(a) = ls.addr(lname) {
                readiness.listener_bound(lname, a.clone());
            }
        }
        role_listeners.push(ls);
    }

    let shutdown = CancellationToken::new();
    let planes_shutdown = CancellationToken::new();
    let mut caps = Caps::default();
    let admin_cap = Live::new(caps.load(&cfg, Service::Admin)?);
    let config = Live::new(cfg.clone());
    let settings = Live::new(settings_from(&cfg, caps.load(&cfg, Service::Write)?));
    let policy = Live::new(cfg.supervisor.clone());
    let config_version = Arc::new(AtomicU64::new(1));
    metrics::gauge!(names::CONFIG_VERSION).set(1.0);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<AdminCommand>(8);

    if cfg.chaos.enabled {
        ron_kernel::chaos::CHAOS.enable();
        tracing::warn!(
            "chaos.enabled: this node takes injected faults (admin /api/v1/chaos); \
             chaos_faults_active counts those in force"
        );
    }
    let handles = ron_kernel::Handles::default();
    let plane_state = PlaneState {
        handles: handles.clone(),
        started,
        profile: src.profile,
        readiness: readiness.clone(),
        bus: bus.clone(),
        prometheus,
        process,
        config: config.clone(),
        admin_cap: admin_cap.clone(),
        config_version: config_version.clone(),
        config_file: src.file.as_ref().map(|p| p.display().to_string()),
        commands: cmd_tx,
        shutdown: planes_shutdown.clone(),
    };
    let mut planes_tasks = tokio::task::JoinSet::new();
    for (name, l) in [("metrics", metrics_l), ("admin", admin_l)] {
        let bind_err = |source| NodeError::Bind {
            name: name.into(),
            addr: name.into(),
            source,
        };
        let local = l.addr().map_err(bind_err)?;
        let tl = ron_kernel::HttpListener::from_std(l).map_err(bind_err)?;
        readiness.listener_bound(name, local);
        let st = plane_state.clone();
        let handler: Arc<dyn Handler> = if name == "metrics" {
            Arc::new(move |req, _peer| planes::health(st.clone(), req))
        } else {
            Arc::new(move |req, peer| planes::admin(st.clone(), req, peer))
        };
        let mut opts = ServeOptions::new(if name == "metrics" {
            "metrics"
        } else {
            "admin"
        });
        opts.log_requests_at_info = name != "metrics";
        opts.drain_deadline = Duration::from_secs(1);
        planes_tasks.spawn(serve(tl, handler, planes_shutdown.clone(), opts));
    }

    {
        let addrs: BTreeMap<String, String> = readiness
            .bound_addrs()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        tracing::info!(
            bound = 1,
            addrs = %serde_json::to_string(&addrs).unwrap_or_default(),
            "listeners bound"
        );
    }

    let node_roles: Arc<[ron_kernel::RoleName]> = specs.iter().map(|s| s.name).collect();
    let mut contexts = Vec::new();
    for ((spec, ls), ready) in specs
        .into_iter()
        .zip(role_listeners.iter().cloned())
        .zip(role_ready)
    {
        let ctx = RoleContext {
            name: spec.name,
            bus: bus.clone(),
            ready,
            shutdown: shutdown.child_token(),
            listeners: ls,
            settings: settings.clone(),
            handles: handles.clone(),
            node_roles: node_roles.clone(),
        };
        contexts.push((spec, ctx));
    }
    let supervisor = Supervisor::start(contexts, policy.clone());

    // Announce readiness once, with every bound address.
    {
        let readiness = readiness.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                if readiness.is_ready() {
                    let addrs: BTreeMap<String, String> = readiness
                        .bound_addrs()
                        .into_iter()
                        .map(|(k, v)| (k, v.to_string()))
                        .collect();
                    let addrs_json = serde_json::to_string(&addrs).unwrap_or_default();
                    let pairs: Vec<String> =
                        addrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    metrics::gauge!(names::NODE_READY).set(1.0);
                    // Under systemd (Type=notify): started once ready.
                    notify(&[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status("ready"),
                    ]);
                    tracing::info!(
                        ready = 1,
                        addrs = %addrs_json,
                        startup_ms = started.elapsed().as_secs_f64() * 1e3,
                        "ready=1 {}",
                        pairs.join(" ")
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    let mut sigterm = signal(SignalKind::terminate()).map_err(NodeError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(NodeError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(NodeError::Signal)?;

    let mut current = cfg;
    let reload = |current: &mut NodeConfig, caps: &Caps| -> Result<ReloadOutcome, String> {
        let new = src.load().map_err(|e| e.to_string())?;
        let (effective, needs_restart) = current.reloaded(new);
        // Token files are read again: a hand edit applies on reload.
        let write_cap = caps
            .load(&effective, Service::Write)
            .map_err(|e| e.to_string())?;
        let new_admin_cap = caps
            .load(&effective, Service::Admin)
            .map_err(|e| e.to_string())?;
        log.set_filter(&effective.log.filter)?;
        policy.store(effective.supervisor.clone());
        settings.store(settings_from(&effective, write_cap));
        admin_cap.store(new_admin_cap);
        live_sections.store(&effective);
        config.store(effective.clone());
        *current = effective;
        let released = supervisor.release_quarantined();
        let version = config_version.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(names::CONFIG_VERSION).set(version as f64);
        bus.publish(KernelEvent::ConfigUpdated { version });
        Ok(ReloadOutcome {
            version,
            needs_restart,
            released,
        })
    };
    let do_reload = |current: &mut NodeConfig, caps: &Caps, via: &str| {
        let result = reload(current, caps);
        match &result {
            Ok(o) => {
                metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "ok").increment(1);
                for key in &o.needs_restart {
                    tracing::warn!(
                        key,
                        "config change to a start-only key needs a restart; kept the running value"
                    );
                }
                tracing::info!(via, version = o.version, released = ?o.released, "config reloaded");
                notify(&[sd_notify::NotifyState::Status(&format!(
                    "ready; config version {}",
                    o.version
                ))]);
            }
            Err(e) => {
                metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => "error").increment(1);
                tracing::error!(via, error = %e, "config reload rejected; previous config kept");
            }
        }
        result
    };

    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => { let _ = do_reload(&mut current, &caps, "SIGHUP"); }
            cmd = cmd_rx.recv() => match cmd {
                Some(AdminCommand::Reload(reply)) => {
                    let _ = reply.send(do_reload(&mut current, &caps, "admin"));
                }
                Some(AdminCommand::RotateCap { service, grace, reply }) => {
                    let result = caps.rotate(&current, service, grace).map(|(cap, outcome)| {
                        match service {
                            Service::Write => {
                                let mut s = (*settings.load()).clone();
                                s.write_cap = cap;
                                settings.store(s);
                            }
                            Service::Admin => admin_cap.store(cap),
                        }
                        bus.publish(KernelEvent::CapRotated {
                            service: format!("{service:?}").to_lowercase(),
                            grace_seconds: grace.as_secs(),
                        });
                        tracing::warn!(
                            ?service,
                            old_valid_until = %outcome.old_valid_until,
                            file = ?outcome.file,
                            "capability rotated; older tokens end after the grace"
                        );
                        outcome
                    });
                    if let Err(e) = &result {
                        tracing::error!(?service, error = %e, "capability rotation failed");
                    }
                    let _ = reply.send(result);
                }
                Some(AdminCommand::Shutdown) => break "admin shutdown",
                None => break "admin plane gone",
            },
        }
    };

    // 1. Unready at once, so load balancers stop sending.
    readiness.set_shutting_down();
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
    ]);
    metrics::gauge!(names::NODE_READY).set(0.0);
    let deadline = current.shutdown.drain_deadline;
    tracing::info!(
        reason,
        drain_deadline_ms = deadline.as_millis() as u64,
        "shutdown: readiness 503, draining"
    );
    // A second signal ends the drain at once.
    tokio::spawn(async move {
        // `recv` yields None when the runtime winds down at a normal exit;
        // only a real signal counts.
        tokio::select! {
            Some(()) = sigterm.recv() => {}
            Some(()) = sigint.recv() => {}
            else => return,
        }
        tracing::warn!("second signal: exiting without waiting for the drain");
        std::process::exit(EXIT_FORCED);
    });
    // 2. Stop accepting: roles' accept loops end on the token; dropping the
    //    host's copies closes the sockets.
    shutdown.cancel();
    for ls in &role_listeners {
        ls.close();
    }
    // 3. Drain, bounded by the deadline (plus a moment for roles to return).
    let aborted = supervisor.join(deadline + Duration::from_millis(500)).await;
    if !aborted.is_empty() {
        tracing::warn!(?aborted, "roles did not stop within the drain deadline");
    }
    // 4. Tell whoever still listens, then close the planes.
    bus.publish(KernelEvent::Shutdown);
    planes_shutdown.cancel();
    while planes_tasks.join_next().await.is_some() {}
    // Nothing accepts on our Unix sockets any more: take their files away.
    for addr in readiness.bound_addrs().values() {
        if let ron_kernel::BoundAddr::Unix(path) = addr {
            let _ = std::fs::remove_file(path);
        }
    }
    // The last line of a clean stop (the runbooks watch for it).
    tracing::info!(
        shutdown_complete = 1,
        uptime_s = started.elapsed().as_secs_f64(),
        "shutdown_complete=1"
    );
    Ok(0)
}
