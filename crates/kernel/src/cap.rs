//! Capabilities: who may write on the service planes, who may use the admin
//! plane. A capability is a set of grants, each a bearer token (held only as
//! its BLAKE3 digest) or "any loopback peer", each valid until an optional
//! instant.
//!
//! Rotation (`ronctl cap rotate`) gives every grant that is still valid an
//! end at `now + grace`, adds one fresh token with no end, and hands the
//! token back once: nothing stores it, the token file keeps its digest.
//!
//! The token file is text, one grant per line, `#` comments:
//!
//! ```text
//! b3:<64 hex> [not_after=2026-12-04T10:00:00Z]
//! loopback not_after=2026-12-04T10:00:00Z
//! ```
//!
//! `loopback` appears when a node that let loopback peers write without a
//! token is rotated: loopback writes keep working through the grace.

use std::fmt;
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// What a grant lets through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// A bearer token whose BLAKE3 digest is this.
    Token([u8; 32]),
    /// Any loopback peer, no token needed.
    Loopback,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    pub kind: GrantKind,
    /// Refused from this instant on; `None`: until rotated.
    pub not_after: Option<SystemTime>,
}

impl Grant {
    fn valid_at(&self, now: SystemTime) -> bool {
        self.not_after.is_none_or(|t| now < t)
    }
}

/// A set of grants. `Debug` never shows a digest.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Capability {
    grants: Vec<Grant>,
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capability({} grants)", self.grants.len())
    }
}

/// A bad line in a token file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// What `summary` reports: counts and end instants, never a digest.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Tokens valid now with no end.
    pub active: usize,
    /// End instants (RFC 3339) of grants valid now that will end.
    pub retiring: Vec<String>,
    /// Loopback peers may act without a token right now.
    pub loopback: bool,
}

/// When a grace that starts at `now` ends: whole seconds (what the token
/// file records), and at most the year 9999 (callers bound the grace).
pub fn grace_end(now: SystemTime, grace: Duration) -> SystemTime {
    let end = now
        .checked_add(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799));
    let secs = end
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn digest(token: &[u8]) -> [u8; 32] {
    *blake3::hash(token).as_bytes()
}

impl Capability {
    /// Grants from a token file's lines, then every inline token (from the
    /// config) the file does not already name. A token the file retired
    /// stays retired even while the config still lists it.
    pub fn merged(file: Capability, inline: &[Secret]) -> Self {
        let mut grants = file.grants;
        for s in inline.iter().filter(|s| !s.is_empty()) {
            let d = digest(s.expose().as_bytes());
            if !grants.iter().any(|g| g.kind == GrantKind::Token(d)) {
                grants.push(Grant {
                    kind: GrantKind::Token(d),
                    not_after: None,
                });
            }
        }
        Self { grants }
    }

    /// How many of `inline` this set names as ended at `now`: config tokens
    /// a rotation retired (the host warns about them).
    pub fn retired(&self, inline: &[Secret], now: SystemTime) -> usize {
        inline
            .iter()
            .filter(|s| !s.is_empty())
            .filter(|s| {
                let d = digest(s.expose().as_bytes());
                self.grants
                    .iter()
                    .any(|g| g.kind == GrantKind::Token(d) && !g.valid_at(now))
            })
            .count()
    }

    /// Whether any token grant exists (valid or not). With none, loopback
    /// peers act without a token: the node's default before any token is
    /// configured or rotated in.
    fn has_tokens(&self) -> bool {
        self.grants
            .iter()
            .any(|g| matches!(g.kind, GrantKind::Token(_)))
    }

    /// Whether a client has to present a token (loopback alone is not
    /// enough right now).
    pub fn requires_token(&self, now: SystemTime) -> bool {
        !self.loopback_allowed(now)
    }

    /// Whether loopback peers act without a token at `now`.
    pub fn loopback_allowed(&self, now: SystemTime) -> bool {
        !self.has_tokens()
            || self
                .grants
                .iter()
                .any(|g| g.kind == GrantKind::Loopback && g.valid_at(now))
    }

    /// Whether an `Authorization: Bearer <token>` header value names a
    /// token valid at `now`. Constant time in the token's content; every
    /// grant is compared.
    pub fn bearer_allowed(&self, now: SystemTime, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        if presented.is_empty() {
            return false;
        }
        let d = digest(presented);
        let mut ok = false;
        for g in &self.grants {
            if let GrantKind::Token(t) = &g.kind {
                ok |= bool::from(t.ct_eq(&d)) && g.valid_at(now);
            }
        }
        ok
    }

    /// The write rule: a valid bearer token, or a loopback peer while
    /// loopback is allowed.
    pub fn allows(&self, now: SystemTime, peer_is_loopback: bool, header: Option<&[u8]>) -> bool {
        (peer_is_loopback && self.loopback_allowed(now)) || self.bearer_allowed(now, header)
    }

    /// Rotation: every grant valid at `now` ends at `now + grace` at the
    /// latest (one that ends sooner keeps its end) and `new_token` is added
    /// with no end. A set with no tokens (loopback open) gets a loopback
    /// grant that ends with the grace. Ended grants are dropped, except the
    /// tokens `inline` (the config) still lists: they stay as the record
    /// that keeps them refused.
    pub fn rotated(
        &self,
        now: SystemTime,
        grace: Duration,
        new_token: &str,
        inline: &[Secret],
    ) -> Self {
        let end = grace_end(now, grace);
        let inline: Vec<[u8; 32]> = inline
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| digest(s.expose().as_bytes()))
            .collect();
        let mut grants: Vec<Grant> = Vec::new();
        if !self.has_tokens() && end > now {
            grants.push(Grant {
                kind: GrantKind::Loopback,
                not_after: Some(end),
            });
        }
        for g in &self.grants {
            let not_after = match g.not_after {
                Some(t) if t <= now => t,
                Some(t) => t.min(end),
                None => end,
            };
            let keep =
                not_after > now || matches!(g.kind, GrantKind::Token(d) if inline.contains(&d));
            if keep {
                grants.push(Grant {
                    kind: g.kind,
                    not_after: Some(not_after),
                });
            }
        }
        grants.push(Grant {
            kind: GrantKind::Token(digest(new_token.as_bytes())),
            not_after: None,
        });
        Self { grants }
    }

    pub fn summary(&self, now: SystemTime) -> Summary {
        let valid = self.grants.iter().filter(|g| g.valid_at(now));
        Summary {
            active: valid
                .clone()
                .filter(|g| matches!(g.kind, GrantKind::Token(_)) && g.not_after.is_none())
                .count(),
            retiring: valid
                .filter_map(|g| g.not_after)
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .collect(),
            loopback: self.loopback_allowed(now),
        }
    }

    /// The token file's text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Capability grants, written by `ronctl cap rotate`. One per line:\n\
             # b3:<digest of the token> [not_after=RFC3339] | loopback not_after=RFC3339\n",
        );
        for g in &self.grants {
            match &g.kind {
                GrantKind::Token(d) => {
                    out.push_str("b3:");
                    out.push_str(&blake3::Hash::from_bytes(*d).to_hex());
                }
                GrantKind::Loopback => out.push_str("loopback"),
            }
            if let Some(t) = g.not_after {
                out.push_str(" not_after=");
                out.push_str(&humantime::format_rfc3339_seconds(t).to_string());
            }
            out.push('\n');
        }
        out
    }

    /// Parses a token file.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut grants = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |msg: String| ParseError { line: i + 1, msg };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let head = parts.next().unwrap_or_default();
            let kind = if head == "loopback" {
                GrantKind::Loopback
            } else if let Some(hex) = head.strip_prefix("b3:") {
                let h = blake3::Hash::from_hex(hex).map_err(|_| {
                    err(format!(
                        "`{head}` is not b3: and 64 hex digits (the file holds token digests, not tokens)"
                    ))
                })?;
                GrantKind::Token(*h.as_bytes())
            } else {
                return Err(err(format!(
                    "expected `b3:<digest>` or `loopback`, found `{head}`"
                )));
            };
            let mut not_after = None;
            for p in parts {
                let Some(v) = p.strip_prefix("not_after=") else {
                    return Err(err(format!("unknown field `{p}` (only not_after=RFC3339)")));
                };
                not_after = Some(
                    humantime::parse_rfc3339(v)
                        .map_err(|e| err(format!("not_after `{v}`: {e}")))?,
                );
            }
            if kind == GrantKind::Loopback && not_after.is_none() {
                return Err(err(
                    "`loopback` needs not_after= (an open loopback grant is the default with no tokens)"
                        .into(),
                ));
            }
            grants.push(Grant { kind, not_after });
        }
        Ok(Self { grants })
    }
}

/// A fresh token: 32 random bytes as hex behind a prefix that names what
/// it is (`ronw_` write, `rona_` admin), so secret scanners can find it.
pub fn new_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    let mut s = String::with_capacity(prefix.len() + 64);
    s.push_str(prefix);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn bearer(s: &str) -> Vec<u8> {
        format!("Bearer {s}").into_bytes()
    }

    #[test]
    fn inline_tokens_and_loopback_default() {
        let open = Capability::merged(Capability::default(), &[]);
        assert!(open.allows(t(0), true, None));
        assert!(!open.allows(t(0), false, None));
        assert!(!open.requires_token(t(0)));

        let c = Capability::merged(Capability::default(), &[Secret::new("abc")]);
        assert!(c.requires_token(t(0)));
        assert!(!c.allows(t(0), true, None));
        assert!(c.allows(t(0), false, Some(&bearer("abc"))));
        assert!(!c.allows(t(0), false, Some(&bearer("ab"))));
        assert!(!c.allows(t(0), false, Some(b"Bearer ")));
        assert!(!c.allows(t(0), false, Some(b"abc")));
    }

    #[test]
    fn rotation_keeps_old_through_grace_then_refuses() {
        let c = Capability::merged(Capability::default(), &[Secret::new("old")]);
        let r = c.rotated(t(0), Duration::from_secs(600), "new", &[]);
        assert!(r.allows(t(1), false, Some(&bearer("new"))));
        assert!(r.allows(t(599), false, Some(&bearer("old"))));
        assert!(!r.allows(t(600), false, Some(&bearer("old"))));
        assert!(r.allows(t(600), false, Some(&bearer("new"))));
        // Through the file and back; the config still lists "old".
        let back = Capability::parse(&r.render()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.retired(&[Secret::new("old")], t(601)), 1);
        let m = Capability::merged(back, &[Secret::new("old")]);
        assert!(!m.allows(t(601), false, Some(&bearer("old"))));
        // A second rotation drops what had ended and shortens nothing it need not.
        let r2 = m.rotated(t(700), Duration::from_secs(60), "newer", &[]);
        assert!(r2.allows(t(759), false, Some(&bearer("new"))));
        assert!(!r2.allows(t(760), false, Some(&bearer("new"))));
        assert_eq!(r2.summary(t(700)).active, 1);
        assert_eq!(r2.summary(t(700)).retiring.len(), 1);
        assert!(!r2.render().contains(&"old".to_string()));
        // A config token rotated out with no grace stays refused while the
        // config lists it.
        let inline = [Secret::new("cfg")];
        let c = Capability::merged(Capability::default(), &inline);
        let r = c.rotated(t(0), Duration::ZERO, "n1", &inline);
        let r = Capability::merged(r, &inline).rotated(t(5), Duration::ZERO, "n2", &inline);
        let m = Capability::merged(r, &inline);
        assert!(!m.allows(t(6), false, Some(&bearer("cfg"))));
        assert!(!m.allows(t(6), false, Some(&bearer("n1"))));
        assert!(m.allows(t(6), false, Some(&bearer("n2"))));
        assert_eq!(m.retired(&inline, t(6)), 1);
    }

    #[test]
    fn rotating_an_open_node_keeps_loopback_through_grace() {
        let open = Capability::default();
        let r = open.rotated(t(0), Duration::from_secs(10), "tok", &[]);
        assert!(r.allows(t(5), true, None));
        assert!(!r.allows(t(10), true, None));
        assert!(r.allows(t(10), true, Some(&bearer("tok"))));
        let zero = open.rotated(t(0), Duration::ZERO, "tok", &[]);
        assert!(!zero.allows(t(0), true, None));
    }

    #[test]
    fn file_never_holds_a_token_and_bad_lines_name_their_number() {
        let r = Capability::default().rotated(t(0), Duration::from_secs(1), "s3cret-token", &[]);
        assert!(!r.render().contains("s3cret-token"));
        let e = Capability::parse("# c\n\nb3:zz\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = Capability::parse("s3cret\n").unwrap_err();
        assert!(e.msg.contains("expected"), "{e}");
        let e = Capability::parse("loopback\n").unwrap_err();
        assert!(e.msg.contains("not_after"), "{e}");
        let e = Capability::parse(&format!("b3:{} when=now\n", "0".repeat(64))).unwrap_err();
        assert!(e.msg.contains("unknown field"), "{e}");
    }

    #[test]
    fn new_tokens_differ() {
        let a = new_token("ronw_").unwrap();
        assert_eq!(a.len(), 5 + 64);
        assert_ne!(a, new_token("ronw_").unwrap());
    }
}
