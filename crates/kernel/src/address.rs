//! The content address: `b3:` followed by the 64 lowercase hex digits of
//! the BLAKE3 hash of a whole object.
//!
//! Invariant: a `ContentAddress` only exists in canonical form; parsing
//! refuses uppercase, wrong lengths and missing prefixes with a reason an
//! operator can act on.

use std::fmt;
use std::str::FromStr;

pub const PREFIX: &str = "b3:";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentAddress([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must start with \"b3:\"")]
    MissingPrefix,
    #[error("address must have 64 hex digits after \"b3:\", found {0}")]
    WrongLength(usize),
    #[error("address hex digits must be lowercase 0-9a-f")]
    NotLowercaseHex,
}

impl ContentAddress {
    pub const fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let hex = s.strip_prefix(PREFIX).ok_or(AddressError::MissingPrefix)?;
        if hex.len() != 64 {
            return Err(AddressError::WrongLength(hex.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        let mut hex = [0u8; 64];
        self.write_hex(&mut hex);
        hex.iter().map(|&b| b as char).collect()
    }

    /// The 64 lowercase hex digits, written into `out` (no allocation).
    pub fn write_hex(&self, out: &mut [u8; 64]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[(b >> 4) as usize];
            pair[1] = HEX[(b & 15) as usize];
        }
    }
}

fn nibble(c: u8) -> Result<u8, AddressError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(AddressError::NotLowercaseHex),
    }
}

impl FromStr for ContentAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, AddressError> {
        Self::parse(s)
    }
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.to_hex())
    }
}

impl fmt::Debug for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for ContentAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "b3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    #[test]
    fn round_trips_canonical_form() {
        let a = ContentAddress::parse(GOOD).unwrap();
        assert_eq!(a.to_string(), GOOD);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{GOOD}\""));
        let back: ContentAddress = serde_json::from_str(&format!("\"{GOOD}\"")).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn refuses_non_canonical_forms() {
        assert_eq!(
            ContentAddress::parse(&GOOD.to_uppercase().replace("B3:", "b3:")),
            Err(AddressError::NotLowercaseHex)
        );
        assert_eq!(
            ContentAddress::parse(&GOOD[3..]),
            Err(AddressError::MissingPrefix)
        );
        assert_eq!(
            ContentAddress::parse(&GOOD[..60]),
            Err(AddressError::WrongLength(57))
        );
        assert_eq!(
            ContentAddress::parse(&format!("{GOOD}0")),
            Err(AddressError::WrongLength(65))
        );
        assert_eq!(
            ContentAddress::parse(
                "b3:zz1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
            ),
            Err(AddressError::NotLowercaseHex)
        );
    }
}
