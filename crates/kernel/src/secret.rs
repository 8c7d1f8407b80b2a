//! Secrets in config (admin token, write tokens): never printed, never
//! logged, compared in constant time.

use serde::{Deserialize, Serialize, Serializer};
use subtle::ConstantTimeEq;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Constant-time comparison with what a client presented. The length of
    /// the secret may leak through timing; its content does not.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub const REDACTED: &str = "<redacted>";

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Checks an `Authorization: Bearer <token>` header value against any of
/// `tokens`, without short-circuiting on the first match.
pub fn bearer_matches(header: Option<&[u8]>, tokens: &[Secret]) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let mut ok = false;
    for t in tokens.iter().filter(|t| !t.is_empty()) {
        ok |= t.matches(presented);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
    }

    #[test]
    fn bearer_check() {
        let toks = [Secret::new("abc"), Secret::new("")];
        assert!(bearer_matches(Some(b"Bearer abc"), &toks));
        assert!(!bearer_matches(Some(b"Bearer ab"), &toks));
        assert!(!bearer_matches(Some(b"Bearer "), &toks));
        assert!(!bearer_matches(Some(b"abc"), &toks));
        assert!(!bearer_matches(None, &toks));
    }
}
