//! Schema versions of the redb files the roles keep (storage, index,
//! mailbox, registry). Every file carries its layout's version in the
//! table `ron_schema` (key `version`); a file with tables but no version
//! was written before versions existed and is version 0.
//!
//! - A role opening its file ([`check_or_stamp`]) stamps a new, empty file
//!   with the version this build writes, accepts that version, and refuses
//!   every other one: an older file needs `ronctl migrate ROLE` (with the
//!   node stopped), a newer one needs the build that wrote it.
//! - [`migrate`] upgrades an older file by running each role's steps in
//!   one write transaction (all of them or none), then records the new
//!   version.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition, TableHandle, WriteTransaction};

const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("ron_schema");
const KEY: &str = "version";

/// One upgrade step: version `i` to `i + 1`, inside the migration's write
/// transaction.
pub type Step = fn(&WriteTransaction) -> Result<(), redb::Error>;

/// A role's file layout: `steps[i]` upgrades version `i` to `i + 1`, so
/// the version this build writes is `steps.len()`.
#[derive(Debug)]
pub struct Schema {
    pub role: &'static str,
    /// The file's name under `data_dir`.
    pub file: &'static str,
    pub steps: &'static [Step],
}

impl Schema {
    pub const fn current(&self) -> u64 {
        self.steps.len() as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the {role} file has schema version {found}; this build reads version {current}: \
         stop the node and run `ronctl migrate {role}`"
    )]
    Older {
        role: &'static str,
        found: u64,
        current: u64,
    },
    #[error(
        "the {role} file has schema version {found}, newer than the {current} this build \
         knows: run the build that wrote it (or restore a backup made for this one)"
    )]
    Newer {
        role: &'static str,
        found: u64,
        current: u64,
    },
    #[error("the {role} file is open in another process (a node running on this data_dir?)")]
    Locked { role: &'static str },
    #[error("{0}")]
    Db(#[from] redb::Error),
}

fn db<E: Into<redb::Error>>(e: E) -> SchemaError {
    SchemaError::Db(e.into())
}

/// The file's version: `None` for a file with no tables yet (new), 0 for
/// tables without a version.
pub fn version(db_: &Database) -> Result<Option<u64>, SchemaError> {
    let txn = db_.begin_read().map_err(db)?;
    let mut has_tables = false;
    let mut has_schema = false;
    for t in txn.list_tables().map_err(db)? {
        has_tables = true;
        has_schema |= t.name() == SCHEMA.name();
    }
    if txn.list_multimap_tables().map_err(db)?.next().is_some() {
        has_tables = true;
    }
    if !has_schema {
        return Ok(has_tables.then_some(0));
    }
    let table = txn.open_table(SCHEMA).map_err(db)?;
    let v = table.get(KEY).map_err(db)?.map_or(0, |g| g.value());
    Ok(Some(v))
}

fn stamp(txn: &WriteTransaction, v: u64) -> Result<(), SchemaError> {
    txn.open_table(SCHEMA)
        .map_err(db)?
        .insert(KEY, v)
        .map_err(db)?;
    Ok(())
}

/// What a role does when it opens its file: a new file gets this build's
/// version; the same version passes; any other is refused.
pub fn check_or_stamp(db_: &Database, schema: &Schema) -> Result<(), SchemaError> {
    let found = version(db_)?;
    judge(schema, found)?;
    if found.is_none() {
        let txn = db_.begin_write().map_err(db)?;
        stamp(&txn, schema.current())?;
        txn.commit().map_err(db)?;
    }
    Ok(())
}

/// Whether a role may open a file at version `found` (`None`: no tables).
fn judge(schema: &Schema, found: Option<u64>) -> Result<(), SchemaError> {
    let current = schema.current();
    match found {
        None => Ok(()),
        Some(v) if v == current => Ok(()),
        Some(found) if found > current => Err(SchemaError::Newer {
            role: schema.role,
            found,
            current,
        }),
        Some(found) => Err(SchemaError::Older {
            role: schema.role,
            found,
            current,
        }),
    }
}

/// What `migrate` found and did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migration {
    pub role: &'static str,
    /// The version found; `None`: an empty file.
    pub from: Option<u64>,
    pub to: u64,
    /// Whether the file was changed.
    pub upgraded: bool,
}

/// Upgrades `db_` to `schema`'s version (or, with `apply = false`, only
/// reports). A newer file is refused. Every step runs in one write
/// transaction with the version stamp: a crash leaves the old version.
pub fn migrate(db_: &Database, schema: &Schema, apply: bool) -> Result<Migration, SchemaError> {
    let current = schema.current();
    let from = version(db_)?;
    let found = from.unwrap_or(current);
    if found > current {
        return Err(SchemaError::Newer {
            role: schema.role,
            found,
            current,
        });
    }
    let upgraded = apply && from != Some(current);
    if upgraded {
        let txn = db_.begin_write().map_err(db)?;
        for step in &schema.steps[found as usize..] {
            step(&txn).map_err(SchemaError::Db)?;
        }
        stamp(&txn, current)?;
        txn.commit().map_err(db)?;
    }
    Ok(Migration {
        role: schema.role,
        from,
        to: current,
        upgraded,
    })
}

/// Opens an existing file for `migrate`; a file another process holds
/// (a running node) is [`SchemaError::Locked`].
pub fn open_offline(path: &Path, schema: &Schema) -> Result<Database, SchemaError> {
    crate::db::builder().open(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => SchemaError::Locked { role: schema.role },
        other => db(other),
    })
}

/// The host's check before it starts a role: an existing file must hold
/// this build's version (or no tables yet); a missing one is created by
/// the role. Opens and closes the file.
pub fn preflight(path: &Path, schema: &Schema) -> Result<(), SchemaError> {
    if !path.exists() {
        return Ok(());
    }
    let d = open_offline(path, schema)?;
    judge(schema, version(&d)?)
}

/// The step that takes a file written before versions existed to version
/// 1, where the layout did not change: the stamp is the whole upgrade.
pub fn unversioned_to_1(_: &WriteTransaction) -> Result<(), redb::Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTable;

    const DATA: TableDefinition<&str, u64> = TableDefinition::new("data");

    fn add_two(txn: &WriteTransaction) -> Result<(), redb::Error> {
        let mut t = txn.open_table(DATA)?;
        let v = t.get("n")?.map_or(0, |g| g.value());
        t.insert("n", v + 2)?;
        Ok(())
    }

    static V2: Schema = Schema {
        role: "test",
        file: "test.redb",
        steps: &[unversioned_to_1, add_two],
    };

    fn mem() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap()
    }

    fn n(d: &Database) -> u64 {
        let txn = d.begin_read().unwrap();
        let t = txn.open_table(DATA).unwrap();
        t.get("n").unwrap().unwrap().value()
    }

    #[test]
    fn new_files_are_stamped_and_reopen() {
        let d = mem();
        assert_eq!(version(&d).unwrap(), None);
        check_or_stamp(&d, &V2).unwrap();
        assert_eq!(version(&d).unwrap(), Some(2));
        check_or_stamp(&d, &V2).unwrap();
    }

    #[test]
    fn unversioned_files_are_refused_then_migrated_in_order() {
        let d = mem();
        let txn = d.begin_write().unwrap();
        txn.open_table(DATA).unwrap().insert("n", 40).unwrap();
        txn.commit().unwrap();
        assert_eq!(version(&d).unwrap(), Some(0));
        let e = check_or_stamp(&d, &V2).unwrap_err();
        assert!(e.to_string().contains("ronctl migrate test"), "{e}");
        // A report changes nothing.
        let m = migrate(&d, &V2, false).unwrap();
        assert_eq!((m.from, m.to, m.upgraded), (Some(0), 2, false));
        assert_eq!(version(&d).unwrap(), Some(0));
        let m = migrate(&d, &V2, true).unwrap();
        assert_eq!((m.from, m.upgraded), (Some(0), true));
        assert_eq!(n(&d), 42);
        check_or_stamp(&d, &V2).unwrap();
        // Again: nothing to do.
        assert!(!migrate(&d, &V2, true).unwrap().upgraded);
        assert_eq!(n(&d), 42);
    }

    #[test]
    fn newer_files_are_refused_everywhere() {
        let d = mem();
        let txn = d.begin_write().unwrap();
        stamp(&txn, 9).unwrap();
        txn.commit().unwrap();
        for e in [
            check_or_stamp(&d, &V2).unwrap_err(),
            migrate(&d, &V2, true).unwrap_err(),
        ] {
            assert!(matches!(e, SchemaError::Newer { found: 9, .. }), "{e}");
            assert!(e.to_string().contains("newer"), "{e}");
        }
    }

    #[test]
    fn a_failing_step_leaves_the_old_version() {
        fn fail(_: &WriteTransaction) -> Result<(), redb::Error> {
            Err(redb::Error::Corrupted("no".into()))
        }
        static BAD: Schema = Schema {
            role: "bad",
            file: "bad.redb",
            steps: &[unversioned_to_1, add_two, fail],
        };
        let d = mem();
        let txn = d.begin_write().unwrap();
        txn.open_table(DATA).unwrap().insert("n", 1).unwrap();
        txn.commit().unwrap();
        assert!(migrate(&d, &BAD, true).is_err());
        assert_eq!(version(&d).unwrap(), Some(0));
        assert_eq!(n(&d), 1);
    }
}
