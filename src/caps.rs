//! The host's side of capabilities: where the token files live, loading
//! them with the config's inline tokens, and rotation
//! (`POST /api/v1/cap/rotate`, `ronctl cap rotate`).
//!
//! Two capabilities exist. `write` is the one bearer capability every
//! service plane checks (omnigate, storage, index, mailbox, registry: the
//! role names are accepted as aliases and all rotate the same set);
//! `admin` is the admin plane's token. The overlay authenticates peers by
//! their node key over TLS and has no token to rotate.
//!
//! Under amnesia the rotated sets live in RAM only: a restart goes back to
//! the config's inline tokens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ron_kernel::cap::Capability;
use ron_kernel::Secret;
use serde::Serialize;

use crate::config::NodeConfig;

/// Longest grace a rotation accepts.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Write,
    Admin,
}

impl Service {
    pub fn parse(s: &str) -> Result<Self, CapError> {
        match crate::ctl_ops::role_name(s) {
            "write" | "omnigate" | "gateway" | "storage" | "index" | "mailbox" | "registry" => {
                Ok(Service::Write)
            }
            "admin" => Ok(Service::Admin),
            "overlay" => Err(CapError::Usage(
                "the overlay authenticates peers by their node key over TLS; it has no token \
                 to rotate"
                    .into(),
            )),
            other => Err(CapError::Usage(format!(
                "unknown service {other:?}: write (also omnigate, storage, index, mailbox, \
                 registry — they share one write capability) or admin"
            ))),
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Service::Write => "write.tokens",
            Service::Admin => "admin.tokens",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Service::Write => "ronw_",
            Service::Admin => "rona_",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Service::Write => "auth.token_file",
            Service::Admin => "admin.token_file",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("{0}")]
    Usage(String),
    #[error("{path} ({key}): {source}")]
    Parse {
        path: String,
        key: &'static str,
        source: ron_kernel::cap::ParseError,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; the previous tokens stay in force")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("no randomness for a token: {0}")]
    Random(String),
}

/// The node's capabilities in force, and (under amnesia) the rotated sets
/// that exist only in RAM.
#[derive(Debug, Default)]
pub struct Caps {
    mem_write: Option<Capability>,
    mem_admin: Option<Capability>,
}

/// What a rotation answers, once: the only place the token is ever shown.
#[derive(Debug, Serialize)]
pub struct Rotated {
    pub service: Service,
    pub token: String,
    /// Every older grant is refused from this instant (RFC 3339).
    pub old_valid_until: String,
    pub grace_seconds: u64,
    /// Where the digests are kept; `null` under amnesia (RAM only).
    pub file: Option<String>,
    pub summary: ron_kernel::cap::Summary,
}

impl Drop for Rotated {
    fn drop(&mut self) {
        // The token exists only in this answer; wipe it once it is sent.
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl Caps {
    pub fn file(cfg: &NodeConfig, service: Service) -> Option<PathBuf> {
        if cfg.amnesia {
            return None;
        }
        let set = match service {
            Service::Write => &cfg.auth.token_file,
            Service::Admin => &cfg.admin.token_file,
        };
        Some(if set.as_os_str().is_empty() {
            cfg.data_dir.join("auth").join(service.file_name())
        } else {
            set.clone()
        })
    }

    fn inline(cfg: &NodeConfig, service: Service) -> &[Secret] {
        match service {
            Service::Write => &cfg.auth.write_tokens,
            Service::Admin => cfg.admin.token.as_slice(),
        }
    }

    /// The file's grants (RAM under amnesia), without the inline tokens.
    fn stored(&self, cfg: &NodeConfig, service: Service) -> Result<Capability, CapError> {
        let mem = match service {
            Service::Write => &self.mem_write,
            Service::Admin => &self.mem_admin,
        };
        let Some(path) = Self::file(cfg, service) else {
            return Ok(mem.clone().unwrap_or_default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Capability::parse(&text).map_err(|source| CapError::Parse {
                path: path.display().to_string(),
                key: service.key(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Capability::default()),
            Err(source) => Err(CapError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The capability in force for `service` under `cfg`.
    pub fn load(&self, cfg: &NodeConfig, service: Service) -> Result<Capability, CapError> {
        let stored = self.stored(cfg, service)?;
        let inline = Self::inline(cfg, service);
        let retired = stored.retired(inline, SystemTime::now());
        if retired > 0 {
            tracing::warn!(
                key = if service == Service::Write {
                    "auth.write_tokens"
                } else {
                    "admin.token"
                },
                retired,
                "the config lists tokens that a rotation retired; they stay refused — remove them"
            );
        }
        Ok(Capability::merged(stored, inline))
    }

    /// Rotates `service`: a new token in force at once, every older grant
    /// until `now + grace`. The file is replaced atomically before anything
    /// changes in the node, so a failed write changes nothing.
    pub fn rotate(
        &mut self,
        cfg: &NodeConfig,
        service: Service,
        grace: Duration,
    ) -> Result<(Capability, Rotated), CapError> {
        if grace > MAX_GRACE {
            return Err(CapError::Usage(format!(
                "grace {} is longer than the most a rotation allows ({})",
                humantime::format_duration(grace),
                humantime::format_duration(MAX_GRACE)
            )));
        }
        let now = SystemTime::now();
        let current = self.load(cfg, service)?;
        let token = ron_kernel::cap::new_token(service.prefix())
            .map_err(|e| CapError::Random(e.to_string()))?;
        let next = current.rotated(now, grace, &token, Self::inline(cfg, service));
        let file = Self::file(cfg, service);
        match &file {
            Some(path) => {
                write_private(path, next.render().as_bytes()).map_err(|source| CapError::Write {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => {
                let slot = match service {
                    Service::Write => &mut self.mem_write,
                    Service::Admin => &mut self.mem_admin,
                };
                *slot = Some(next.clone());
            }
        }
        // Inline tokens the file now names (retiring) are not added again.
        let in_force = Capability::merged(next, Self::inline(cfg, service));
        let outcome = Rotated {
            service,
            token,
            old_valid_until: humantime::format_rfc3339_seconds(ron_kernel::cap::grace_end(
                now, grace,
            ))
            .to_string(),
            grace_seconds: grace.as_secs(),
            file: file.map(|p| p.display().to_string()),
            summary: in_force.summary(now),
        };
        Ok((in_force, outcome))
    }
}

/// Replaces `path` with `bytes`, mode 0600, durably: a temporary file in
/// the same directory (made 0700 if missing), fsynced, renamed over the
/// old one, and the directory fsynced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;

    #[test]
    fn services_and_aliases() {
        assert_eq!(Service::parse("svc-storage").unwrap(), Service::Write);
        assert_eq!(Service::parse("write").unwrap(), Service::Write);
        assert_eq!(Service::parse("admin").unwrap(), Service::Admin);
        assert!(Service::parse("overlay")
            .unwrap_err()
            .to_string()
            .contains("node key"));
        assert!(Service::parse("nope")
            .unwrap_err()
            .to_string()
            .contains("write"));
    }

    #[test]
    fn rotation_persists_digests_only_and_survives_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::defaults(Profile::Macronode);
        cfg.data_dir = dir.path().to_path_buf();
        cfg.auth.write_tokens = vec![Secret::new("inline")];
        let mut caps = Caps::default();
        let (cap, r) = caps
            .rotate(&cfg, Service::Write, Duration::from_secs(60))
            .unwrap();
        let now = SystemTime::now();
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        assert!(cap.allows(now, false, Some(&bearer(&r.token))));
        assert!(cap.allows(now, false, Some(&bearer("inline"))));
        let path = dir.path().join("auth/write.tokens");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&r.token) && !text.contains("inline"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Loaded again (a restart): same set.
        assert_eq!(caps.load(&cfg, Service::Write).unwrap(), cap);

        // An unreadable file is an error, not an empty set.
        cfg.auth.token_file = dir.path().join("auth/write.tokens/not-a-dir/f");
        let e = caps.load(&cfg, Service::Write).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        // The file's directory cannot be made (not even by root, in /proc):
        // an error, and the old set stays.
        cfg.auth.token_file = PathBuf::from("/proc/macronode-no-such-dir/write.tokens");
        let e = caps
            .rotate(&cfg, Service::Write, Duration::from_secs(60))
            .unwrap_err();
        assert!(e.to_string().contains("previous tokens stay"), "{e}");
        cfg.auth.token_file = PathBuf::new();
        assert_eq!(caps.load(&cfg, Service::Write).unwrap(), cap);
        assert!(caps
            .rotate(&cfg, Service::Write, MAX_GRACE + Duration::from_secs(1))
            .is_err());
    }

    #[test]
    fn amnesia_keeps_rotations_in_ram() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::defaults(Profile::Micronode);
        cfg.data_dir = dir.path().join("data");
        let mut caps = Caps::default();
        let (cap, r) = caps.rotate(&cfg, Service::Admin, Duration::ZERO).unwrap();
        assert!(r.file.is_none());
        assert!(!cfg.data_dir.exists());
        assert_eq!(caps.load(&cfg, Service::Admin).unwrap(), cap);
    }
}
