//! `NameIndex`: names → `{address, version, updated_at, content_type,
//! feed, meta}` on redb, with every version kept.
//!
//! Invariants: versions of a name only go up and are never reused (a name
//! deleted and set again continues from its last version); a write with
//! `if_match` changes nothing unless the current version is that one; every
//! write is durable before it returns.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use ron_kernel::ContentAddress;
use serde::{Deserialize, Serialize};

/// name → current record (JSON).
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
/// (name, version) → record (JSON), every version ever written.
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("name_history");
/// name → the highest version ever written (survives deletes).
const LAST_VERSION: TableDefinition<&str, u64> = TableDefinition::new("name_last_version");

pub const MAX_NAME: usize = 253;
pub const MAX_META_BYTES: usize = 16 * 1024;

/// This file's layout versions (`ron_kernel::schema`): 1 is the first
/// versioned layout, the same tables as the unversioned files before it.
/// A layout change adds a step here and its test.
pub static SCHEMA: ron_kernel::schema::Schema = ron_kernel::schema::Schema {
    role: "index",
    file: "index.redb",
    steps: &[ron_kernel::schema::unversioned_to_1],
};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Schema(#[from] ron_kernel::schema::SchemaError),
    #[error("invalid name: {0}")]
    BadName(&'static str),
    #[error("invalid record: {0}")]
    BadRecord(String),
    #[error("name not found")]
    NotFound,
    #[error("version mismatch: current is {current:?}, If-Match said {expected}")]
    VersionMismatch { expected: u64, current: Option<u64> },
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("index storage error: {0}")]
    Db(String),
}

ron_kernel::db_error_type!(IndexError);

/// Names are 1–253 characters of `[a-z0-9._/-]`, without `..`, and neither
/// start nor end with `/` (so `/v1/names/{name}` is unambiguous).
pub fn validate_name(name: &str) -> Result<(), IndexError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(IndexError::BadName("names are 1 to 253 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/-".contains(&b))
    {
        return Err(IndexError::BadName("names use only a-z 0-9 . _ / -"));
    }
    if name.contains("..") {
        return Err(IndexError::BadName("names may not contain \"..\""));
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err(IndexError::BadName(
            "names may not start or end with \"/\" or contain \"//\"",
        ));
    }
    Ok(())
}

/// Topic names (for `feed`): 1–128 characters of `[a-z0-9._-]`.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// What a writer sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameUpdate {
    pub address: ContentAddress,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub feed: Option<String>,
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
}

impl NameUpdate {
    fn validate(&self) -> Result<(), IndexError> {
        if let Some(ct) = &self.content_type {
            if ct.is_empty()
                || ct.len() > 255
                || !ct.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' ')
            {
                return Err(IndexError::BadRecord(
                    "content_type must be 1-255 printable ASCII characters".into(),
                ));
            }
        }
        if let Some(f) = &self.feed {
            if !valid_topic(f) {
                return Err(IndexError::BadRecord(
                    "feed must be a topic name: 1-128 of a-z 0-9 . _ -".into(),
                ));
            }
        }
        if let Some(m) = &self.meta {
            if !m.is_object() {
                return Err(IndexError::BadRecord("meta must be a JSON object".into()));
            }
            if serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_META_BYTES {
                return Err(IndexError::BadRecord(format!(
                    "meta is larger than {MAX_META_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// A name's record, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameRecord {
    pub name: String,
    pub address: ContentAddress,
    pub version: u64,
    pub updated_at: String,
    pub content_type: Option<String>,
    pub feed: Option<String>,
    pub meta: Option<serde_json::Value>,
}

#[derive(Clone)]
pub struct NameIndex {
    db: Arc<Database>,
    /// Held while `index_names` is read and set, so the last setter always
    /// exports the newest committed count.
    export: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for NameIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameIndex").finish_non_exhaustive()
    }
}

fn decode(raw: &[u8]) -> Result<NameRecord, IndexError> {
    serde_json::from_slice(raw)
        .map_err(|e| IndexError::Db(format!("stored record unreadable: {e}")))
}

impl NameIndex {
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        Self::init(ron_kernel::db::builder().create(path).map_err(db_err)?)
    }

    pub fn in_memory() -> Result<Self, IndexError> {
        let db = ron_kernel::db::builder()
            .create_with_backend(ron_kernel::memstore::PagedMemory::new())
            .map_err(db_err)?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, IndexError> {
        ron_kernel::schema::check_or_stamp(&db, &SCHEMA)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(NAMES).map_err(db_err)?;
            txn.open_table(HISTORY).map_err(db_err)?;
            txn.open_table(LAST_VERSION).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let index = Self {
            db: Arc::new(db),
            export: Arc::new(std::sync::Mutex::new(())),
        };
        index.export_count();
        Ok(index)
    }

    /// Sets `index_names` to the committed count (called after every
    /// commit that adds or removes a name, so the gauge is never behind).
    fn export_count(&self) {
        // The lock guards no data, so a poisoned one is still sound.
        let _held = self
            .export
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(n) = self.count() {
            metrics::gauge!(ron_kernel::metrics::names::INDEX_NAMES).set(n as f64);
        }
    }

    pub fn get(&self, name: &str) -> Result<NameRecord, IndexError> {
        validate_name(name)?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let names = txn.open_table(NAMES).map_err(db_err)?;
        let raw = names
            .get(name)
            .map_err(db_err)?
            .ok_or(IndexError::NotFound)?;
        decode(raw.value())
    }

    /// Every version of `name`, oldest first (also after a delete).
    pub fn history(&self, name: &str) -> Result<Vec<NameRecord>, IndexError> {
        validate_name(name)?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let hist = txn.open_table(HISTORY).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in hist.range((name, 0)..=(name, u64::MAX)).map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(decode(v.value())?);
        }
        if out.is_empty() {
            return Err(IndexError::NotFound);
        }
        Ok(out)
    }

    /// Writes a new version. With `if_match`, only when the current version
    /// is exactly that (a name that does not exist has no version).
    /// Returns the record and whether the name was created.
    pub fn set(
        &self,
        name: &str,
        update: NameUpdate,
        if_match: Option<u64>,
    ) -> Result<(NameRecord, bool), IndexError> {
        validate_name(name)?;
        update.validate()?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        let result = {
            let mut names = txn.open_table(NAMES).map_err(db_err)?;
            let current = match names.get(name).map_err(db_err)? {
                Some(raw) => Some(decode(raw.value())?.version),
                None => None,
            };
            if let Some(expected) = if_match {
                if current != Some(expected) {
                    return Err(IndexError::VersionMismatch { expected, current });
                }
            }
            let mut last = txn.open_table(LAST_VERSION).map_err(db_err)?;
            let version = last
                .get(name)
                .map_err(db_err)?
                .map(|g| g.value())
                .unwrap_or(0)
                + 1;
            let record = NameRecord {
                name: name.to_owned(),
                address: update.address,
                version,
                updated_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                content_type: update.content_type,
                feed: update.feed,
                meta: update.meta,
            };
            let raw = serde_json::to_vec(&record).map_err(|e| IndexError::Db(e.to_string()))?;
            names.insert(name, &raw[..]).map_err(db_err)?;
            txn.open_table(HISTORY)
                .map_err(db_err)?
                .insert((name, version), &raw[..])
                .map_err(db_err)?;
            last.insert(name, version).map_err(db_err)?;
            (record, current.is_none())
        };
        txn.commit().map_err(db_err)?;
        if result.1 {
            self.export_count();
        }
        Ok(result)
    }

    /// Removes the name's current record (history stays). With `if_match`,
    /// only when the current version is that one.
    pub fn delete(&self, name: &str, if_match: Option<u64>) -> Result<(), IndexError> {
        validate_name(name)?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut names = txn.open_table(NAMES).map_err(db_err)?;
            let current = match names.get(name).map_err(db_err)? {
                Some(raw) => decode(raw.value())?.version,
                None => return Err(IndexError::NotFound),
            };
            if let Some(expected) = if_match {
                if current != expected {
                    return Err(IndexError::VersionMismatch {
                        expected,
                        current: Some(current),
                    });
                }
            }
            names.remove(name).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        self.export_count();
        Ok(())
    }

    /// Every address a current name points to (what an amnesia store
    /// must not evict). One pass over the names.
    pub fn named_addresses(&self) -> Result<std::collections::HashSet<ContentAddress>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let names = txn.open_table(NAMES).map_err(db_err)?;
        let mut out = std::collections::HashSet::new();
        for entry in names.iter().map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.insert(decode(v.value())?.address);
        }
        Ok(out)
    }

    pub fn count(&self) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let names = txn.open_table(NAMES).map_err(db_err)?;
        names.len().map_err(db_err)
    }

    pub fn writable(&self) -> bool {
        ron_kernel::db::writable(&self.db)
    }
}
