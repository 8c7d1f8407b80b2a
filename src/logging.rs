//! JSON (or text) log lines on stdout through `tracing`, with a filter that
//! reload can swap.
//!
//! Invariant: nothing logs a secret or a payload; config is logged only in
//! its redacted form.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

/// Swaps the log filter at run time.
#[derive(Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG`, when set: it wins over `log.filter`, at start and on
    /// every reload.
    env_filter: Option<String>,
}

impl LogHandle {
    /// Puts `log.filter` in force, unless `RUST_LOG` overrides it (the
    /// config's value is still checked).
    pub fn set_filter(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        if self.env_filter.is_some() {
            return Ok(());
        }
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// `RUST_LOG`, if set to something non-empty.
fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

pub fn init(cfg: &LogConfig) -> LogHandle {
    let env_filter = rust_log();
    let directives = env_filter.as_deref().unwrap_or(&cfg.filter);
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|e| {
        eprintln!("log filter {directives:?} is not valid ({e}); using \"info\"");
        EnvFilter::new("info")
    });
    let (filter, handle) = reload::Layer::new(filter);
    ron_kernel::http::set_json_logs(cfg.format == LogFormat::Json);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stdout),
            )
            .try_init(),
        // Colour only for a person at a terminal: a file, a pipe or the
        // journal gets plain `key=value` text that grep and awk can read.
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stdout().is_terminal())
                    .with_writer(std::io::stdout),
            )
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    LogHandle { handle, env_filter }
}
