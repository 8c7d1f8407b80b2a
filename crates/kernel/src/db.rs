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

/// Group commit for one redb file: writers that commit at about the same
/// time share one fsync. Each writer's transaction commits without one
/// (`Durability::None`), then waits until a durable commit that began
/// after it has ended: the first waiter with nobody syncing runs one (an
/// empty `Durability::Immediate` transaction, which makes every earlier
/// commit durable with it), and everyone whose commit ended before that
/// one began returns with it; the rest run or wait for the next. A writer
/// returns only once its commit is durable, so an answer sent after
/// [`GroupCommit::commit`] is one a crash cannot take back. Its data is
/// visible to readers a little before that (from its own commit).
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: std::sync::Mutex<Syncs>,
    synced: std::sync::Condvar,
    /// A database in RAM: nothing to share, each commit is simply made.
    in_ram: bool,
}

#[derive(Debug, Default)]
struct Syncs {
    /// Commits ended so far (each writer's number, in order of ending).
    committed: u64,
    /// Every commit up to this number is durable.
    durable: u64,
    /// A durable commit is running.
    syncing: bool,
}

impl GroupCommit {
    /// For a database on a RAM backend (amnesia): `commit` commits, no
    /// more (a second, empty commit per writer would sync nothing).
    pub fn in_ram() -> Self {
        GroupCommit {
            in_ram: true,
            ..GroupCommit::default()
        }
    }

    /// Commits `txn` and returns once it is durable (blocking: call it
    /// where blocking is allowed, as every redb commit is).
    pub fn commit(
        &self,
        db: &redb::Database,
        mut txn: redb::WriteTransaction,
    ) -> Result<(), redb::Error> {
        if self.in_ram {
            txn.commit()?;
            return Ok(());
        }
        txn.set_durability(redb::Durability::None)?;
        txn.commit()?;
        let mine = {
            let mut s = self.lock();
            s.committed += 1;
            s.committed
        };
        self.wait_durable(db, mine)
    }

    /// Returns once every commit that ended before this call is durable:
    /// for an answer that reports what another writer committed without
    /// committing anything itself (a retried request's first outcome).
    /// Call it holding no write transaction.
    pub fn settle(&self, db: &redb::Database) -> Result<(), redb::Error> {
        if self.in_ram {
            return Ok(());
        }
        // Counted as a commit that ends now: the durable commit that
        // covers it began after every commit before it ended.
        let mine = {
            let mut s = self.lock();
            s.committed += 1;
            s.committed
        };
        self.wait_durable(db, mine)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Syncs> {
        // A panic elsewhere never leaves `Syncs` half-updated (each
        // change is one assignment): its state is still right.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait_durable(&self, db: &redb::Database, mine: u64) -> Result<(), redb::Error> {
        let mut s = self.lock();
        loop {
            if s.durable >= mine {
                return Ok(());
            }
            if s.syncing {
                s = self
                    .synced
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            s.syncing = true;
            // Every commit numbered so far has ended, so it is before the
            // durable commit this one begins.
            let covers = s.committed;
            drop(s);
            let synced = sync(db);
            s = self.lock();
            s.syncing = false;
            if synced.is_ok() {
                s.durable = s.durable.max(covers);
            }
            self.synced.notify_all();
            // A failed sync fails its runner; the others try their own.
            synced?;
        }
    }
}

/// An empty durable commit: every earlier commit becomes durable with it.
fn sync(db: &redb::Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    txn.commit()?;
    Ok(())
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

    /// A disk that loses, at a crash, everything written since its last
    /// sync: `crash()` is what a fresh boot would read.
    /// (what was written, what was synced, syncs so far)
    type Image = (Vec<u8>, Vec<u8>, usize);

    #[derive(Debug, Default, Clone)]
    struct Disk(std::sync::Arc<std::sync::Mutex<Image>>);

    impl Disk {
        fn crash(&self) -> Disk {
            let synced = self.0.lock().unwrap().1.clone();
            Disk(std::sync::Arc::new(std::sync::Mutex::new((
                synced.clone(),
                synced,
                0,
            ))))
        }
        fn syncs(&self) -> usize {
            self.0.lock().unwrap().2
        }
    }

    impl redb::StorageBackend for Disk {
        fn len(&self) -> Result<u64, io::Error> {
            Ok(self.0.lock().unwrap().0.len() as u64)
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            let d = self.0.lock().unwrap();
            let at = offset as usize;
            out.copy_from_slice(&d.0[at..at + out.len()]);
            Ok(())
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.0.lock().unwrap().0.resize(len as usize, 0);
            Ok(())
        }
        fn sync_data(&self) -> Result<(), io::Error> {
            let mut d = self.0.lock().unwrap();
            d.1 = d.0.clone();
            d.2 += 1;
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            let mut d = self.0.lock().unwrap();
            let at = offset as usize;
            d.0[at..at + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    use redb::ReadableDatabase;

    const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");

    #[test]
    fn every_commit_that_returned_survives_a_crash() {
        let disk = Disk::default();
        let db = std::sync::Arc::new(builder().create_with_backend(disk.clone()).unwrap());
        let group = std::sync::Arc::new(GroupCommit::default());
        let before = disk.syncs();
        let writers: Vec<_> = (0..64u64)
            .map(|i| {
                let (db, group) = (db.clone(), group.clone());
                std::thread::spawn(move || {
                    for j in 0..8u64 {
                        let txn = db.begin_write().unwrap();
                        txn.open_table(T).unwrap().insert(i * 8 + j, j).unwrap();
                        group.commit(&db, txn).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let syncs = disk.syncs() - before;
        // One commit without a sync after them all: lost at the crash,
        // and nobody was told it was kept.
        let txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(9999, 0).unwrap();
        let mut txn = txn;
        txn.set_durability(redb::Durability::None).unwrap();
        txn.commit().unwrap();

        let after = builder().create_with_backend(disk.crash()).unwrap();
        let r = after.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        for k in 0..512u64 {
            assert_eq!(t.get(k).unwrap().map(|v| v.value()), Some(k % 8), "key {k}");
        }
        assert!(t.get(9999).unwrap().is_none());
        // How many were shared depends on the scheduler (the bench
        // measures it); never more than one durable commit per commit.
        let one = {
            let d = disk.syncs();
            sync(&db).unwrap();
            disk.syncs() - d
        };
        assert!(syncs <= 512 * one, "{syncs} syncs for 512 commits");
    }

    #[test]
    fn settle_returns_once_what_others_committed_is_durable() {
        let disk = Disk::default();
        let db = builder().create_with_backend(disk.clone()).unwrap();
        let group = GroupCommit::default();
        // Another writer's commit, ended but not yet synced (it would be
        // waiting in `commit`).
        let mut txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(1, 1).unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        txn.commit().unwrap();
        group.settle(&db).unwrap();
        let after = builder().create_with_backend(disk.crash()).unwrap();
        let r = after.begin_read().unwrap();
        assert_eq!(
            r.open_table(T).unwrap().get(1).unwrap().map(|v| v.value()),
            Some(1)
        );
    }
}
