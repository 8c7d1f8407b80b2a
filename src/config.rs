//! The node config: one struct, assembled by figment from built-in defaults
//! (per profile) → file → environment → command-line flags.
//!
//! Invariants: every section is `deny_unknown_fields`, so a typo is an error
//! naming the key and where it came from; secrets are `Secret`s and never
//! print; an invalid config is never put in force (at start or on reload).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ron_kernel::Secret;
use serde::{Deserialize, Serialize};

use ron_kernel::section::{Reload, RoleSection};
use ron_kernel::RoleName;

use crate::roles;

/// Which binary's defaults apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Macronode,
    Micronode,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Macronode => "macronode",
            Profile::Micronode => "micronode",
        }
    }
}

/// The node config's struct, its defaults and what it does with each role
/// section, generated from the one table of roles (`roles::role_table!`).
macro_rules! node_config {
    ($($feat:literal $field:ident : $ty:ty => $($krate:ident)::+;)*) => {
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct NodeConfig {
            /// Where on-disk state lives (redb files, node key). Ignored under amnesia.
            pub data_dir: PathBuf,
            /// RAM only: no file is written anywhere.
            pub amnesia: bool,
            /// Refuse writes (503 with Retry-After); reads keep working.
            pub read_only: bool,
            /// Roles to run; empty = every production role compiled in.
            pub roles: Vec<String>,
            pub log: LogConfig,
            pub metrics: MetricsConfig,
            pub admin: AdminConfig,
            pub bus: BusConfig,
            pub shutdown: ShutdownConfig,
            pub limits: LimitsConfig,
            pub supervisor: SupervisorConfig,
            pub auth: AuthConfig,
            pub uds: UdsConfig,
            pub chaos: ChaosConfig,
            $(#[cfg(feature = $feat)]
            pub $field: $ty,)*
        }

        impl NodeConfig {
        pub fn defaults(profile: Profile) -> Self {
            let micro = profile == Profile::Micronode;
            Self {
                data_dir: PathBuf::from("./data"),
                amnesia: micro,
                read_only: false,
                roles: Vec::new(),
                log: LogConfig {
                    filter: "info".into(),
                    format: LogFormat::Json,
                },
                metrics: MetricsConfig {
                    addr: SocketAddr::from(([0, 0, 0, 0], 9909)),
                },
                admin: AdminConfig {
                    addr: SocketAddr::from(([127, 0, 0, 1], 9910)),
                    token: None,
                    trust_loopback: true,
                    token_file: PathBuf::new(),
                },
                bus: BusConfig {
                    capacity: if micro {
                        256
                    } else {
                        ron_kernel::bus::DEFAULT_BUS_CAPACITY
                    },
                },
                shutdown: ShutdownConfig {
                    drain_deadline: Duration::from_secs(5),
                },
                limits: LimitsConfig {
                    max_body_bytes: 1 << 20,
                    header_read_timeout: Duration::from_secs(5),
                    body_read_timeout: Duration::from_secs(5),
                },
                supervisor: SupervisorConfig {
                    backoff_base: Duration::from_millis(100),
                    backoff_max: Duration::from_secs(30),
                    quarantine_after: 5,
                    quarantine_window: Duration::from_secs(60),
                },
                auth: AuthConfig::default(),
                uds: UdsConfig::default(),
                chaos: ChaosConfig::default(),
                $(#[cfg(feature = $feat)]
                $field: if micro {
                    <$ty as RoleSection>::micro()
                } else {
                    <$ty as Default>::default()
                },)*
            }
        }

            /// Each role section's own checks.
            fn validate_sections(&self, errs: &mut Vec<String>) {
                $(#[cfg(feature = $feat)]
                self.$field.validate(errs);)*
                let _ = errs;
            }

            /// Each role section and its restart-only keys.
            fn role_restart_keys() -> Vec<(&'static str, &'static [&'static str])> {
                vec![$(#[cfg(feature = $feat)]
                (stringify!($field), <$ty as Reload>::RESTART),)*]
            }

            /// Keeps each role section's restart-only keys from `self`
            /// in `new`, and says which of them `new` changed.
            fn reload_sections(&self, new: &mut NodeConfig, changed: &mut Vec<String>) {
                $(#[cfg(feature = $feat)]
                {
                    changed.extend(new.$field.restart_changes(stringify!($field), &self.$field));
                    new.$field.keep_restart_keys(&self.$field);
                })*
                let _ = (new, changed);
            }
        }
    };
}
roles::role_table!(node_config);

// Top-level keys; each section declares its own below.
ron_kernel::restart_keys!(NodeConfig {
    data_dir,
    amnesia,
    roles
});

/// The host's sections, handed to `$then!` (reload walks them all).
macro_rules! host_sections {
    ($then:ident) => {
        $then!(
            log: LogConfig,
            metrics: MetricsConfig,
            admin: AdminConfig,
            bus: BusConfig,
            shutdown: ShutdownConfig,
            limits: LimitsConfig,
            supervisor: SupervisorConfig,
            auth: AuthConfig,
            uds: UdsConfig,
            chaos: ChaosConfig
        )
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing `EnvFilter` directives. Hot.
    pub filter: String,
    /// `json` (default) or `text`. Needs a restart.
    pub format: LogFormat,
}

ron_kernel::restart_keys!(LogConfig { format });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Health plane: /metrics /healthz /readyz /version (env `METRICS_ADDR`).
    pub addr: SocketAddr,
}

ron_kernel::restart_keys!(MetricsConfig { addr });

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin plane (env `ADMIN_ADDR`). Keep it on loopback unless a token is set.
    pub addr: SocketAddr,
    /// Bearer token for admin requests from non-loopback peers. Hot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Treat loopback peers as trusted without a token. Turn off when a
    /// proxy on the same host forwards outside traffic to the admin port. Hot.
    pub trust_loopback: bool,
    /// Admin token digests kept by `ronctl cap rotate --service admin`;
    /// empty: `<data_dir>/auth/admin.tokens`. Unused under amnesia. Hot.
    pub token_file: PathBuf,
}

ron_kernel::restart_keys!(AdminConfig { addr });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Events held for the slowest subscriber. Needs a restart.
    pub capacity: usize,
}

ron_kernel::restart_keys!(BusConfig { capacity });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests get to finish after SIGTERM. Hot.
    #[serde(with = "humantime_serde")]
    pub drain_deadline: Duration,
}

ron_kernel::restart_keys!(ShutdownConfig {});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body any listener accepts. Hot.
    pub max_body_bytes: u64,
    /// A client must finish sending request headers within this. Hot (new
    /// connections).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A client must finish sending a request body within this. Hot.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

ron_kernel::restart_keys!(LimitsConfig {});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// First restart delay ceiling; doubles per crash up to `backoff_max`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// More than this many restarts within `quarantine_window` quarantines
    /// the role until an operator reloads.
    pub quarantine_after: u32,
    #[serde(with = "humantime_serde")]
    pub quarantine_window: Duration,
}

ron_kernel::restart_keys!(SupervisorConfig {});

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens that may write (PUT/DELETE/POST on the service plane).
    /// Empty: writes only from loopback peers. Hot.
    pub write_tokens: Vec<Secret>,
    /// Write token digests kept by `ronctl cap rotate`; empty:
    /// `<data_dir>/auth/write.tokens`. Unused under amnesia. Hot.
    pub token_file: PathBuf,
}

ron_kernel::restart_keys!(AuthConfig {});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdsConfig {
    /// Serve every HTTP plane on a Unix socket `<dir>/<listener>.sock`
    /// and bind no TCP port (`--uds-only`). Needs a restart.
    pub only: bool,
    /// Where the sockets are created (mode 0700 if it is made here); under
    /// systemd, `RuntimeDirectory=` and `RON_UDS__DIR=/run/<name>`. Needs a
    /// restart.
    pub dir: PathBuf,
}

ron_kernel::restart_keys!(UdsConfig: all);

/// Fault injection for drills (RUNBOOK, "Chaos drills").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosConfig {
    /// Take faults from admin `POST /api/v1/chaos`; off, every chaos call
    /// is refused (403 `chaos_disabled`). Needs a restart.
    pub enabled: bool,
}
ron_kernel::restart_keys!(ChaosConfig: all);

impl Default for UdsConfig {
    fn default() -> Self {
        Self {
            only: false,
            dir: PathBuf::from("./run"),
        }
    }
}

impl NodeConfig {
    /// Checks what types alone cannot: ranges, cross-field rules, role names.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.bus.capacity == 0 {
            errs.push("bus.capacity must be at least 1".into());
        }
        if self.limits.max_body_bytes == 0 {
            errs.push("limits.max_body_bytes must be at least 1".into());
        }
        if self.supervisor.backoff_base.is_zero()
            || self.supervisor.backoff_max < self.supervisor.backoff_base
        {
            errs.push("supervisor.backoff_base must be above zero and ≤ backoff_max".into());
        }
        if self.supervisor.quarantine_window.is_zero() {
            errs.push("supervisor.quarantine_window must be above zero".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            errs.push(format!(
                "log.filter {:?} is not a valid filter: {e}",
                self.log.filter
            ));
        }
        match roles::select(&self.roles) {
            Err(e) => errs.push(e.to_string()),
            Ok(selected) if self.uds.only && selected.contains(&RoleName::Overlay) => errs.push(
                "uds.only (--uds-only): the overlay listens for other hosts on TCP and UDP; \
                 run it without the overlay (--roles with the others)"
                    .into(),
            ),
            Ok(_) => {}
        }
        self.validate_sections(&mut errs);
        errs
    }

    /// Builds the config a reload puts in force: every hot knob from `new`,
    /// every restart-only key kept from `self`. Returns it with the list
    /// of restart-only keys that differ (they need a restart). Which keys
    /// need a restart is declared once, beside each section's struct
    /// (`restart_keys!`).
    pub fn reloaded(&self, mut new: NodeConfig) -> (NodeConfig, Vec<String>) {
        let mut changed = new.restart_changes("", self);
        new.keep_restart_keys(self);
        macro_rules! keep {
            ($($s:ident: $t:ty),*) => {$(
                changed.extend(new.$s.restart_changes(stringify!($s), &self.$s));
                new.$s.keep_restart_keys(&self.$s);
            )*};
        }
        host_sections!(keep);
        self.reload_sections(&mut new, &mut changed);
        (new, changed)
    }

    /// Whether `key` (`section.key`, or a top-level key) takes effect only
    /// at start, as its section declares; `None` for no such section.
    pub fn restart_only(key: &str) -> Option<bool> {
        macro_rules! list {
            ($($s:ident: $t:ty),*) => {
                vec![$((stringify!($s), <$t as Reload>::RESTART)),*]
            };
        }
        let mut sections: Vec<(&str, &[&str])> = host_sections!(list);
        sections.extend(Self::role_restart_keys());
        let (section, rest) = key.split_once('.').unwrap_or(("", key));
        let (section, leaf) = match sections.iter().find(|(s, _)| *s == section) {
            Some(found) => (found.1, rest.split('.').next().unwrap_or(rest)),
            None if section.is_empty() || !key.contains('.') => (Self::RESTART, key),
            None => return None,
        };
        Some(section.iter().any(|k| *k == "*" || *k == leaf))
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Flags of `run` that override config (the last layer).
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub roles: Option<Vec<String>>,
    /// `--amnesia` / `--no-amnesia` (`--amnesia=on|off`).
    pub amnesia: Option<bool>,
    pub read_only: bool,
    pub hedge_read: bool,
    pub pilot_pq: bool,
    /// `--quic` / `--no-quic`.
    pub quic: Option<bool>,
    /// `--oap-concurrency N`.
    pub oap_concurrency: Option<u32>,
    pub uds_only: bool,
}

/// Everything needed to (re)assemble the config; kept by the running node so
/// a reload goes through exactly the start-up path.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub profile: Profile,
    /// `RON_CONFIG`, else `--config`, else none.
    pub file: Option<PathBuf>,
    pub overrides: CliOverrides,
}

impl ConfigSource {
    /// `RON_CONFIG` wins over `--config` (runbook rule).
    pub fn new(profile: Profile, flag: Option<PathBuf>, overrides: CliOverrides) -> Self {
        let env_file = std::env::var_os("RON_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self {
            profile,
            file: env_file.or(flag),
            overrides,
        }
    }

    pub fn load(&self) -> Result<NodeConfig, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(NodeConfig::defaults(self.profile)));
        if let Some(path) = &self.file {
            if !path.is_file() {
                return Err(ConfigError::FileMissing(path.clone()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(
                Env::raw()
                    .only(&["OVERLAY_ADMIN_ADDR"])
                    .map(|_| "metrics.addr".into()),
            )
            .merge(seed_env())
            .merge(Env::prefixed("RON_").ignore(NOT_CONFIG_ENV).split("__"))
            .merge(Serialized::defaults(self.overrides_value()));
        let cfg: NodeConfig = fig.extract().map_err(ConfigError::from_figment)?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn overrides_value(&self) -> serde_json::Value {
        let o = &self.overrides;
        let mut root = serde_json::Map::new();
        if let Some(r) = &o.roles {
            root.insert("roles".into(), serde_json::json!(r));
        }
        if let Some(a) = o.amnesia {
            root.insert("amnesia".into(), a.into());
        }
        if o.uds_only {
            root.insert("uds".into(), serde_json::json!({"only": true}));
        }
        if o.read_only {
            root.insert("read_only".into(), true.into());
        }
        #[cfg(feature = "omnigate")]
        if o.hedge_read {
            root.insert("omnigate".into(), serde_json::json!({"hedge_read": true}));
        }
        #[cfg(feature = "overlay")]
        {
            let mut ov = serde_json::Map::new();
            if o.pilot_pq {
                ov.insert("pq_mode".into(), "hybrid".into());
            }
            if let Some(q) = o.quic {
                ov.insert("quic".into(), q.into());
            }
            if let Some(n) = o.oap_concurrency {
                ov.insert("peer".into(), serde_json::json!({ "max_streams": n }));
            }
            if !ov.is_empty() {
                root.insert("overlay".into(), ov.into());
            }
        }
        serde_json::Value::Object(root)
    }
}

/// The seed environment names of the runbook, each mapped to its key. A
/// name for a role that is not compiled in is not read.
pub const SEED_ENV: &[(&str, &str, &str)] = &[
    // (env name, key path, role that must be compiled in or "" for the host)
    ("METRICS_ADDR", "metrics.addr", ""),
    ("ADMIN_ADDR", "admin.addr", ""),
    ("SERVICE_ADDR", "omnigate.addr", "omnigate"),
    ("OMNIGATE_INFLIGHT_MAX", "omnigate.inflight_max", "omnigate"),
    (
        "OMNIGATE_INDEX_SEMAPHORE",
        "omnigate.index_semaphore",
        "omnigate",
    ),
    (
        "OMNIGATE_STORAGE_SEMAPHORE",
        "omnigate.storage_semaphore",
        "omnigate",
    ),
    (
        "OMNIGATE_MAILBOX_SEMAPHORE",
        "omnigate.mailbox_semaphore",
        "omnigate",
    ),
    (
        "OMNIGATE_STREAM_CHUNK_BYTES",
        "omnigate.stream_chunk_bytes",
        "omnigate",
    ),
    ("OVERLAY_OAP_ADDR", "overlay.addr", "overlay"),
    ("OVERLAY_PQ_MODE", "overlay.pq_mode", "overlay"),
    ("REGISTRY_ADDR", "registry.addr", "registry"),
    ("STORAGE_ADDR", "storage.addr", "storage"),
    ("INDEX_ADDR", "index.addr", "index"),
    ("MAILBOX_ADDR", "mailbox.addr", "mailbox"),
];

/// `RON_` variables that are not config keys: `RON_CONFIG` names the file;
/// the runbooks' `RON_BUS_SOCK` and `RON_INDEX_SOCK` name sockets of
/// separate processes, which macronode does not have (see `env_notes`).
const NOT_CONFIG_ENV: &[&str] = &[
    "CONFIG",
    "config",
    "BUS_SOCK",
    "bus_sock",
    "INDEX_SOCK",
    "index_sock",
];

/// One line for each runbook environment variable that is set and means
/// something else here (logged at start, printed by `config check`).
pub fn env_notes() -> Vec<String> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let mut notes = Vec::new();
    for (name, what) in [
        (
            "RON_BUS_SOCK",
            "the bus runs in-process in macronode; there is no bus socket (follow it with \
             `ronctl tail`, admin /api/v1/bus)",
        ),
        (
            "RON_INDEX_SOCK",
            "the index runs in-process in macronode; there is no index socket (its HTTP API \
             is index.addr when it runs without omnigate)",
        ),
    ] {
        if set(name) {
            notes.push(format!("{name} is ignored: {what}"));
        }
    }
    if set("OVERLAY_ADMIN_ADDR") {
        let winner = if set("METRICS_ADDR") {
            "; METRICS_ADDR is also set and wins"
        } else {
            ""
        };
        notes.push(format!(
            "OVERLAY_ADMIN_ADDR is read as metrics.addr: the overlay's /metrics /healthz \
             /readyz /version are the node's health plane{winner}"
        ));
    }
    notes
}

fn seed_env() -> Env {
    let names: Vec<&'static str> = SEED_ENV
        .iter()
        .filter(|(_, _, role)| role.is_empty() || roles::compiled_names().contains(role))
        .map(|(name, _, _)| *name)
        .collect();
    Env::raw()
        .only(&names)
        .map(|k| {
            let key = SEED_ENV
                .iter()
                .find(|(name, _, _)| k.as_str().eq_ignore_ascii_case(name))
                .map(|(_, key, _)| *key)
                .unwrap_or("");
            key.into()
        })
        .lowercase(false)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist or is not a file")]
    FileMissing(PathBuf),
    #[error("{}", .0.join("\n"))]
    Parse(Vec<String>),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl ConfigError {
    fn from_figment(err: figment::Error) -> Self {
        ConfigError::Parse(err.into_iter().map(|e| render_figment_error(&e)).collect())
    }
}

/// "unknown key `omnigate.inflgt_max` (from environment variable
/// `RON_OMNIGATE__INFLGT_MAX`): expected one of …"
fn render_figment_error(e: &figment::Error) -> String {
    use figment::error::Kind;
    let mut path = e.path.join(".");
    let what = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if !path.ends_with(field.as_str()) {
                path = if path.is_empty() {
                    field.clone()
                } else {
                    format!("{path}.{field}")
                };
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        other => other.to_string(),
    };
    let source = match &e.metadata {
        Some(md) => {
            let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
            let native = match &e.profile {
                Some(p) => md.interpolate(p, &keys),
                None => path.clone(),
            };
            match &md.source {
                Some(figment::Source::File(f)) => format!("in file {}", f.display()),
                _ if md.name.contains("environment") => {
                    format!("from environment variable {}", env_name_for(&native))
                }
                _ => format!("from {}", md.name),
            }
        }
        None => "from defaults".into(),
    };
    format!("config key `{path}` ({source}): {what}")
}

/// figment's env interpolation gives `OMNIGATE.INFLGT_MAX`; operators set
/// `RON_OMNIGATE__INFLGT_MAX` (or a seed name, which maps one to one).
fn env_name_for(native: &str) -> String {
    let lower = native.to_ascii_lowercase();
    if let Some((name, _, _)) = SEED_ENV.iter().find(|(_, key, _)| *key == lower) {
        if std::env::var_os(name).is_some() {
            return (*name).to_owned();
        }
    }
    if lower == "metrics.addr" && std::env::var_os("OVERLAY_ADMIN_ADDR").is_some() {
        return "OVERLAY_ADMIN_ADDR".to_owned();
    }
    format!("RON_{}", native.to_ascii_uppercase().replace('.', "__"))
}

/// Reads a config file the way `run` would, for `check`/`config validate`.
pub fn describe_source(src: &ConfigSource) -> String {
    match &src.file {
        Some(p) => format!("file {} + environment + defaults", display(p)),
        None => "environment + defaults (no file)".into(),
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
