//! The registry's data model (DESIGN §8), its canonical hash and the
//! approval signature.
//!
//! - A payload (a `DescriptorSet`) is hashed as BLAKE3 over the RFC 8785
//!   (JCS) canonical JSON of the value *as the proposer sent it*; that hash,
//!   `payload_b3`, is what signers approve and what the next version's
//!   `prev_b3` names, so each version commits to the whole history before
//!   it. The node never re-serialises a payload from its parsed form (that
//!   would add `"parent": null` for an omitted optional field and change
//!   the hash under the signer's feet): `Payload` keeps the submitted text
//!   and the parsed set side by side.
//! - An approval is an ed25519 signature, checked with `verify_strict`,
//!   over `"ron:registry:v1\n" ‖ version (u64 BE) ‖ payload_b3 (32 bytes)`:
//!   it cannot be replayed for another version or another payload.
//!
//! Every type rejects unknown fields; `validate` checks what types cannot
//! (encodings, duplicates, the quorum of a new signer set).

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The domain separator of an approval's signed message.
pub const SIGNING_CONTEXT: &[u8] = b"ron:registry:v1\n";

/// The `payload_b3` (and `prev_b3`) of the empty registry.
pub fn zero_hash() -> String {
    format!("b3:{}", "0".repeat(64))
}

/// One version's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorSet {
    pub version: u64,
    pub prev_b3: String,
    pub items: Vec<Item>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// A descriptor, written `{"node": {…}}`, `{"service": {…}}`, …
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Item {
    Node(Node),
    Service(Service),
    Region(Region),
    SignerSet(SignerSet),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    /// ed25519, 64 lowercase hex.
    pub public_key: String,
    pub addrs: Vec<String>,
    pub roles: Vec<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: String,
    pub kind: String,
    pub node_id: String,
    pub endpoints: Vec<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub id: String,
    pub name: String,
    pub parent: Option<String>,
}

/// Who may approve, and how many approvals a commit needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerSet {
    pub m: u32,
    pub signers: Vec<SignerEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerEntry {
    pub id: String,
    /// ed25519, 64 lowercase hex.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub signer_id: String,
    /// 128 lowercase hex.
    pub sig: String,
}

/// A committed version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub version: u64,
    pub prev_b3: String,
    pub payload: Payload,
    pub payload_b3: String,
    pub approvals: Vec<Approval>,
    pub committed_at: String,
}

/// What `GET /registry/head` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub version: u64,
    pub payload_b3: String,
    pub prev_b3: String,
    /// Empty for the empty registry.
    pub committed_at: String,
}

impl Head {
    pub fn empty() -> Self {
        Head {
            version: 0,
            payload_b3: zero_hash(),
            prev_b3: zero_hash(),
            committed_at: String::new(),
        }
    }

    pub fn of(a: &Artifact) -> Self {
        Head {
            version: a.version,
            payload_b3: a.payload_b3.clone(),
            prev_b3: a.prev_b3.clone(),
            committed_at: a.committed_at.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("{0}")]
    Invalid(String),
    #[error("canonical JSON: {0}")]
    Canonical(String),
}

fn invalid(s: impl Into<String>) -> ModelError {
    ModelError::Invalid(s.into())
}

/// A payload as its proposer sent it: the JSON text (whitespace between
/// tokens dropped, nothing else changed: same members, same order, same
/// spelling of every string and number) and the `DescriptorSet` it parses
/// to. It serialises as that text, so every artifact carrying it is served
/// with the payload byte for byte as submitted in compact form, and one
/// version is the same bytes on every node.
#[derive(Debug, Clone)]
pub struct Payload {
    json: std::sync::Arc<str>,
    set: DescriptorSet,
}

impl Payload {
    /// Parses a payload strictly (unknown or duplicate fields refused) and
    /// keeps its text. `validate` is the caller's next step.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let set: DescriptorSet =
            serde_json::from_str(text).map_err(|e| invalid(format!("payload: {e}")))?;
        Ok(Payload {
            json: compact_json(text).into(),
            set,
        })
    }

    /// A payload built in code, serialised once (tools and tests; a node
    /// only ever takes payloads as JSON).
    pub fn from_set(set: DescriptorSet) -> Result<Self, ModelError> {
        let json = serde_json::to_string(&set).map_err(|e| invalid(format!("payload: {e}")))?;
        Ok(Payload {
            json: json.into(),
            set,
        })
    }

    /// The submitted text, compact.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// BLAKE3 of the JCS canonical form of the submitted value, as
    /// `b3:<hex>`.
    pub fn b3(&self) -> Result<String, ModelError> {
        payload_b3_of_json(&self.json)
    }
}

impl std::ops::Deref for Payload {
    type Target = DescriptorSet;
    fn deref(&self) -> &DescriptorSet {
        &self.set
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.json.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Payload::from_json(raw.get()).map_err(serde::de::Error::custom)
    }
}

/// BLAKE3 of the JCS canonical form of a JSON text, as `b3:<hex>`: the
/// `payload_b3` of a payload written that way.
pub fn payload_b3_of_json(text: &str) -> Result<String, ModelError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ModelError::Canonical(e.to_string()))?;
    let canonical = serde_json_canonicalizer::to_vec(&value)
        .map_err(|e| ModelError::Canonical(e.to_string()))?;
    Ok(format!("b3:{}", blake3::hash(&canonical).to_hex()))
}

/// `text` (valid JSON) without the whitespace between its tokens, so a
/// payload fits one line of an SSE event or a backup.
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The 32 raw bytes of a `b3:<hex>` hash.
pub fn hash_bytes(h: &str) -> Result<[u8; 32], ModelError> {
    let hex = h
        .strip_prefix("b3:")
        .ok_or_else(|| invalid(format!("hash {h:?} must start with b3:")))?;
    decode_hex::<32>(hex)
        .ok_or_else(|| invalid(format!("hash {h:?} must be b3: and 64 lowercase hex")))
}

/// The message an approval signs.
pub fn signing_message(version: u64, payload_b3: &[u8; 32]) -> [u8; 56] {
    let mut m = [0u8; 56];
    m[..16].copy_from_slice(SIGNING_CONTEXT);
    m[16..24].copy_from_slice(&version.to_be_bytes());
    m[24..].copy_from_slice(payload_b3);
    m
}

/// The `sig` of an approval by the key with this secret seed.
pub fn sign_approval(secret_seed: &[u8; 32], version: u64, payload_b3: &[u8; 32]) -> String {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(secret_seed);
    encode_hex(&key.sign(&signing_message(version, payload_b3)).to_bytes())
}

pub fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = nib(pair[0])? << 4 | nib(pair[1])?;
    }
    Some(out)
}

pub fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A public key given as 64 lowercase hex, checked to be a valid point.
pub fn parse_public_key(hex: &str) -> Result<VerifyingKey, ModelError> {
    let raw = decode_hex::<32>(hex)
        .ok_or_else(|| invalid(format!("public key {hex:?} must be 64 lowercase hex")))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| invalid(format!("public key {hex:?} is not an ed25519 point")))
}

pub fn parse_signature(hex: &str) -> Option<Signature> {
    decode_hex::<64>(hex).map(|raw| Signature::from_bytes(&raw))
}

/// The current UTC time as RFC 3339 (second precision).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn check_id(what: &str, id: &str) -> Result<(), ModelError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {id:?} must be 1-128 characters of A-Z a-z 0-9 - _ . :"
        )))
    }
}

fn check_text(what: &str, s: &str) -> Result<(), ModelError> {
    if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} must be 1-255 characters without control characters"
        )));
    }
    Ok(())
}

/// The role names a node descriptor may list.
pub const ROLES: &[&str] = &[
    "omnigate", "overlay", "registry", "storage", "index", "mailbox",
];

impl SignerSet {
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.signers.is_empty() || self.signers.len() > 64 {
            return Err(invalid("a signer set has 1-64 signers"));
        }
        if self.m == 0 || self.m as usize > self.signers.len() {
            return Err(invalid(format!(
                "signer set m = {} must be between 1 and the {} signers",
                self.m,
                self.signers.len()
            )));
        }
        let mut ids = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for s in &self.signers {
            check_id("signer id", &s.id)?;
            parse_public_key(&s.public_key)?;
            if !ids.insert(&s.id) {
                return Err(invalid(format!("signer id {:?} appears twice", s.id)));
            }
            if !keys.insert(&s.public_key) {
                return Err(invalid(format!(
                    "signer key {} appears twice",
                    s.public_key
                )));
            }
        }
        Ok(())
    }

    /// The key of `id`, when it is in this set.
    pub fn key_of(&self, id: &str) -> Option<VerifyingKey> {
        self.signers
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| parse_public_key(&s.public_key).ok())
    }
}

impl DescriptorSet {
    /// Checks encodings and uniqueness. The chain position (version,
    /// prev_b3) is the log's to check.
    pub fn validate(&self) -> Result<(), ModelError> {
        hash_bytes(&self.prev_b3)?;
        humantime::parse_rfc3339(&self.created_at).map_err(|_| {
            invalid(format!(
                "created_at {:?} must be an RFC 3339 UTC time like 2026-01-02T03:04:05Z",
                self.created_at
            ))
        })?;
        if self.items.len() > 10_000 {
            return Err(invalid("at most 10000 items per version"));
        }
        let mut seen = BTreeSet::new();
        let mut signer_sets = 0;
        for item in &self.items {
            let (kind, id) = match item {
                Item::Node(n) => {
                    check_id("node id", &n.id)?;
                    parse_public_key(&n.public_key)?;
                    if n.addrs.len() > 16 {
                        return Err(invalid(format!("node {:?}: at most 16 addrs", n.id)));
                    }
                    for a in &n.addrs {
                        check_text("a node address", a)?;
                    }
                    for r in &n.roles {
                        if !ROLES.contains(&r.as_str()) {
                            return Err(invalid(format!(
                                "node {:?}: unknown role {r:?} (known: {})",
                                n.id,
                                ROLES.join(", ")
                            )));
                        }
                    }
                    if let Some(r) = &n.region {
                        check_id("region id", r)?;
                    }
                    ("node", n.id.as_str())
                }
                Item::Service(s) => {
                    check_id("service id", &s.id)?;
                    check_id("service kind", &s.kind)?;
                    check_id("node id", &s.node_id)?;
                    if s.endpoints.len() > 16 {
                        return Err(invalid(format!("service {:?}: at most 16 endpoints", s.id)));
                    }
                    for e in &s.endpoints {
                        check_text("a service endpoint", e)?;
                    }
                    ("service", s.id.as_str())
                }
                Item::Region(r) => {
                    check_id("region id", &r.id)?;
                    check_text("a region name", &r.name)?;
                    if let Some(p) = &r.parent {
                        check_id("region parent", p)?;
                        if p == &r.id {
                            return Err(invalid(format!("region {:?} is its own parent", r.id)));
                        }
                    }
                    ("region", r.id.as_str())
                }
                Item::SignerSet(s) => {
                    signer_sets += 1;
                    s.validate()?;
                    ("signer_set", "")
                }
            };
            if !seen.insert((kind, id)) {
                return Err(invalid(format!("{kind} {id:?} appears twice")));
            }
        }
        if signer_sets > 1 {
            return Err(invalid("at most one signer_set item per version"));
        }
        Ok(())
    }

    /// The signer set this payload installs, if any.
    pub fn signer_set(&self) -> Option<&SignerSet> {
        self.items.iter().find_map(|i| match i {
            Item::SignerSet(s) => Some(s),
            _ => None,
        })
    }
}

/// The approvals that count: valid, distinct signatures by members of
/// `set` over (`version`, `payload_b3`), first of each signer, in order.
/// Invalid ones and repeats are skipped. The one rule both a commit and
/// an apply count a quorum with.
pub fn valid_approvals(
    set: &SignerSet,
    version: u64,
    payload_b3: &[u8; 32],
    approvals: &[Approval],
) -> Vec<Approval> {
    let msg = signing_message(version, payload_b3);
    let mut counted = BTreeSet::new();
    let mut kept = Vec::new();
    for a in approvals {
        if counted.contains(&a.signer_id) {
            continue;
        }
        let (Some(key), Some(sig)) = (set.key_of(&a.signer_id), parse_signature(&a.sig)) else {
            continue;
        };
        if key.verify_strict(&msg, &sig).is_ok() {
            counted.insert(a.signer_id.clone());
            kept.push(a.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn set(n: u8, m: u32) -> (Vec<SigningKey>, SignerSet) {
        let keys: Vec<_> = (1..=n).map(key).collect();
        let signers = keys
            .iter()
            .enumerate()
            .map(|(i, k)| SignerEntry {
                id: format!("s{i}"),
                public_key: encode_hex(k.verifying_key().as_bytes()),
            })
            .collect();
        (keys, SignerSet { m, signers })
    }

    fn payload() -> DescriptorSet {
        DescriptorSet {
            version: 1,
            prev_b3: zero_hash(),
            items: vec![Item::Region(Region {
                id: "eu".into(),
                name: "Europe".into(),
                parent: None,
            })],
            created_at: "2026-11-25T10:00:00Z".into(),
        }
    }

    #[test]
    fn items_are_externally_tagged_and_unknown_fields_refused() {
        let json = r#"{"version":1,"prev_b3":"b3:0000000000000000000000000000000000000000000000000000000000000000","created_at":"2026-11-25T10:00:00Z","items":[{"region":{"id":"eu","name":"Europe","parent":null}}]}"#;
        let p: DescriptorSet = serde_json::from_str(json).unwrap();
        assert_eq!(p, payload());
        let extra = json.replace(r#""parent":null"#, r#""parent":null,"x":1"#);
        assert!(serde_json::from_str::<DescriptorSet>(&extra).is_err());
        let unknown = json.replace(r#"{"region""#, r#"{"planet""#);
        assert!(serde_json::from_str::<DescriptorSet>(&unknown).is_err());
    }

    #[test]
    fn the_hash_is_of_the_canonical_form_whatever_the_key_order() {
        let json = r#"{"version":1,"prev_b3":"b3:0000000000000000000000000000000000000000000000000000000000000000","created_at":"2026-11-25T10:00:00Z","items":[{"region":{"id":"eu","name":"Europe","parent":null}}]}"#;
        let a = Payload::from_json(json).unwrap().b3().unwrap();
        // Same content, keys in another order, whitespace: same hash.
        let reordered = r#"{ "items": [{"region": {"parent": null, "name": "Europe", "id": "eu"}}],
            "created_at": "2026-11-25T10:00:00Z",
            "prev_b3": "b3:0000000000000000000000000000000000000000000000000000000000000000", "version": 1 }"#;
        assert_eq!(Payload::from_json(reordered).unwrap().b3().unwrap(), a);
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            a,
            format!(
                "b3:{}",
                blake3::hash(&serde_json_canonicalizer::to_vec(&v).unwrap()).to_hex()
            )
        );
    }

    #[test]
    fn an_omitted_optional_field_stays_omitted_in_text_and_hash() {
        let with_null = r#"{"version":1,"prev_b3":"b3:0000000000000000000000000000000000000000000000000000000000000000","created_at":"2026-11-25T10:00:00Z","items":[{"region":{"id":"eu","name":"Europe","parent":null}}]}"#;
        let omitted = with_null.replace(r#","parent":null"#, "");
        let p = Payload::from_json(&omitted).unwrap();
        assert_eq!(p.items, payload().items, "parsed the same");
        assert_eq!(p.json(), omitted, "kept as sent");
        assert_ne!(
            p.b3().unwrap(),
            Payload::from_json(with_null).unwrap().b3().unwrap()
        );
        // Through an artifact and back, the text is unchanged.
        let a = Artifact {
            version: 1,
            prev_b3: zero_hash(),
            payload: p.clone(),
            payload_b3: p.b3().unwrap(),
            approvals: vec![],
            committed_at: "2026-11-25T10:00:01Z".into(),
        };
        let served = serde_json::to_string(&a).unwrap();
        assert!(served.contains(&omitted), "{served}");
        let back: Artifact = serde_json::from_str(&served).unwrap();
        assert_eq!(back.payload.json(), omitted);
    }

    #[test]
    fn compaction_drops_whitespace_between_tokens_only() {
        let text = "{ \"a\" :\t[1 ,\r\n2],\"b\": \"x  \\\" y\" }";
        assert_eq!(compact_json(text), r#"{"a":[1,2],"b":"x  \" y"}"#);
    }

    #[test]
    fn approvals_count_once_per_member_and_bind_version_and_payload() {
        let (keys, set) = set(5, 3);
        let p = payload();
        let h = hash_bytes(&Payload::from_set(p).unwrap().b3().unwrap()).unwrap();
        let sign = |i: usize, version: u64, h: &[u8; 32]| Approval {
            signer_id: format!("s{i}"),
            sig: encode_hex(&keys[i].sign(&signing_message(version, h)).to_bytes()),
        };
        let good: Vec<_> = (0..3).map(|i| sign(i, 1, &h)).collect();
        assert_eq!(valid_approvals(&set, 1, &h, &good).len(), 3);
        // The same signer twice counts once.
        let dup = vec![sign(0, 1, &h), sign(0, 1, &h), sign(1, 1, &h)];
        assert_eq!(valid_approvals(&set, 1, &h, &dup).len(), 2);
        // A signature for another version, or another payload, does not count.
        assert_eq!(valid_approvals(&set, 2, &h, &good).len(), 0);
        let other = [7u8; 32];
        assert_eq!(valid_approvals(&set, 1, &other, &good).len(), 0);
        // A key outside the set does not count, even with a valid signature.
        let outsider = key(99);
        let a = Approval {
            signer_id: "s9".into(),
            sig: encode_hex(&outsider.sign(&signing_message(1, &h)).to_bytes()),
        };
        assert_eq!(valid_approvals(&set, 1, &h, &[a]).len(), 0);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut p = payload();
        p.created_at = "yesterday".into();
        assert!(p.validate().unwrap_err().to_string().contains("created_at"));
        let mut p = payload();
        p.items.push(p.items[0].clone());
        assert!(p.validate().unwrap_err().to_string().contains("twice"));
        let (_, mut s) = set(3, 4);
        assert!(s.validate().is_err());
        s.m = 2;
        assert!(s.validate().is_ok());
        s.signers[1].public_key = s.signers[0].public_key.clone();
        assert!(s.validate().is_err());
    }
}
