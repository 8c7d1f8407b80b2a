//! What a redb failure means to a role, decided once for every store: out
//! of space (the write is refused with 507 and nothing of it is kept), or
//! anything else. Decided by the I/O error's kind (ENOSPC, EDQUOT), not
//! by its message, so every role says the same and none drifts. And how
//! every role opens one: [`builder`], with a bounded page cache.

use std::io;

/// redb's own page cache per database file: 16 MiB, where redb's default
/// is 1 GiB. redb keeps every page a commit wrote in that cache until it
/// is full, so with the default a node that stored 512 MiB held 600 MiB
/// more resident (a storage file's pages are mostly chunk bytes, which
/// the storage role caches itself, verified, and the kernel's page cache
/// holds anyway). 16 MiB keeps a B-tree's branch pages for millions of
/// entries; a page that is not in it is one `pread` from the page cache.
pub const PAGE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How every role opens its redb file (or RAM backend): redb's builder
/// with a [`PAGE_CACHE_BYTES`] cache.
pub fn builder() -> redb::Builder {
    let mut b = redb::Database::builder();
    b.set_cache_size(PAGE_CACHE_BYTES);
    b
}

/// A store failure as the roles report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbFailure {
    /// The disk (or the quota) is full.
    Full(String),
    /// Anything else.
    Other(String),
}

/// Whether an I/O error means there is no space left.
pub fn out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Classifies a redb error (any of its error types) or an I/O error.
pub fn classify(e: impl Into<redb::Error>) -> DbFailure {
    let e: redb::Error = e.into();
    let full = matches!(&e, redb::Error::Io(io) if out_of_space(io));
    if full {
        DbFailure::Full(e.to_string())
    } else {
        DbFailure::Other(e.to_string())
    }
}

/// `classify`, into a role's own error type (for `.map_err(db_err)`).
pub fn db_err<E: From<DbFailure>>(e: impl Into<redb::Error>) -> E {
    E::from(classify(e))
}

/// Makes `$t` (a role's store error, with `DiskFull(String)` and
/// `Db(String)` variants) take redb failures: `From<DbFailure>` and a
/// module-local `db_err` for `.map_err(db_err)`.
#[macro_export]
macro_rules! db_error_type {
    ($t:ty) => {
        impl From<$crate::db::DbFailure> for $t {
            fn from(f: $crate::db::DbFailure) -> Self {
                match f {
                    $crate::db::DbFailure::Full(s) => Self::DiskFull(s),
                    $crate::db::DbFailure::Other(s) => Self::Db(s),
                }
            }
        }

        fn db_err(e: impl Into<$crate::db::RedbError>) -> $t {
            $crate::db::db_err(e)
        }
    };
}

pub use redb::Error as RedbError;

/// Whether a write transaction can be opened and committed (the stores'
/// readiness probe).
pub fn writable(db: &redb::Database) -> bool {
    match db.begin_write() {
        Ok(t) => t.commit().is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_is_told_by_kind_through_every_redb_wrapper() {
        let enospc = || io::Error::from_raw_os_error(28);
        let edquot = || io::Error::from_raw_os_error(122);
        assert!(matches!(classify(enospc()), DbFailure::Full(_)));
        assert!(matches!(classify(edquot()), DbFailure::Full(_)));
        assert!(matches!(
            classify(redb::StorageError::Io(enospc())),
            DbFailure::Full(_)
        ));
        assert!(matches!(
            classify(redb::CommitError::Storage(redb::StorageError::Io(enospc()))),
            DbFailure::Full(_)
        ));
        assert!(matches!(
            classify(io::Error::other("No space left, says the message")),
            DbFailure::Other(_)
        ));
        assert!(matches!(
            classify(redb::StorageError::Corrupted("x".into())),
            DbFailure::Other(_)
        ));
    }
}
