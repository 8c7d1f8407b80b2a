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
///
/// Small writes go further with [`GroupCommit::apply`]: writes queued
/// while a durable transaction runs are all made in the next one, one
/// transaction and one fsync for the lot.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: std::sync::Mutex<Syncs>,
    synced: std::sync::Condvar,
    /// A database in RAM: nothing to share, each commit is simply made.
    in_ram: bool,
}

#[derive(Default)]
struct Syncs {
    /// Commits ended so far (each writer's number, in order of ending).
    committed: u64,
    /// Every commit up to this number is durable.
    durable: u64,
    /// A durable commit is running.
    syncing: bool,
    /// Writes waiting for the next shared transaction (`apply`), in order,
    /// each with the thread waiting for it.
    queue: Vec<(Box<dyn Job>, std::thread::Thread)>,
    /// Writes queued so far (each one's number, in order of queueing).
    queued: u64,
    /// Every queued write up to this number has its outcome.
    applied: u64,
    /// A shared transaction is running.
    applying: bool,
}

impl std::fmt::Debug for Syncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncs")
            .field("committed", &self.committed)
            .field("durable", &self.durable)
            .field("queued", &self.queued)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

/// One write of a shared transaction (`GroupCommit::apply`).
trait Job: Send {
    /// Makes the write in `txn`, keeping its outcome; `false` when it
    /// failed (then `txn` must be dropped, not committed).
    fn run(&mut self, txn: &redb::WriteTransaction) -> bool;
    /// The shared transaction could not be made durable: this write fails
    /// with it.
    fn fail(&mut self, why: &DbFailure);
}

/// A write's outcome, kept for the thread that asked for it.
type Outcome<R, E> = std::sync::Arc<std::sync::Mutex<Option<Result<R, E>>>>;

struct Write<F, R, E> {
    make: F,
    outcome: Outcome<R, E>,
}

impl<F, R, E> Job for Write<F, R, E>
where
    F: FnMut(&redb::WriteTransaction) -> Result<R, E> + Send,
    R: Send,
    E: From<DbFailure> + Send,
{
    fn run(&mut self, txn: &redb::WriteTransaction) -> bool {
        let r = (self.make)(txn);
        let ok = r.is_ok();
        *lock_outcome(&self.outcome) = Some(r);
        ok
    }

    fn fail(&mut self, why: &DbFailure) {
        *lock_outcome(&self.outcome) = Some(Err(E::from(why.clone())));
    }
}

fn lock_outcome<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // One assignment under the lock: a panic cannot leave it half-made.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Makes the write `make` describes in a transaction it may share
    /// with other writes queued at about the same time, and returns its
    /// outcome once that transaction is durable (blocking, as `commit`).
    ///
    /// The first write queued while no shared transaction runs makes one:
    /// it takes every write queued so far, runs each in order in one
    /// `Durability::Immediate` transaction and commits it; the writes
    /// queued meanwhile wait for the next. A write sees the writes queued
    /// before it. One that fails fails alone: the transaction is dropped
    /// and made again without it (`make` runs again then, so it must
    /// leave nothing outside the transaction). Its durable commit also
    /// makes every `commit` that ended before it durable.
    pub fn apply<F, R, E>(&self, db: &redb::Database, make: F) -> Result<R, E>
    where
        F: FnMut(&redb::WriteTransaction) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbFailure> + Send + 'static,
    {
        let outcome: Outcome<R, E> = std::sync::Arc::default();
        let job = Box::new(Write {
            make,
            outcome: outcome.clone(),
        });
        let mut s = self.lock();
        s.queue.push((job, std::thread::current()));
        s.queued += 1;
        let mine = s.queued;
        while s.applied < mine {
            if s.applying {
                // Woken when its transaction has ended, or when the one
                // running ends and this write is the first one queued
                // (it runs the next): not every waiter at every end.
                // A wake-up before `park` is kept, so none is lost.
                drop(s);
                std::thread::park();
                s = self.lock();
                continue;
            }
            let (jobs, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut s.queue).into_iter().unzip();
            let last = s.queued;
            // Every commit numbered so far has ended: the transaction
            // below begins after them, and its fsync covers them.
            let covers = s.committed;
            s.applying = true;
            drop(s);
            let mut done = Applied {
                group: self,
                last,
                covers: None,
                waiting,
            };
            if apply_all(db, jobs, !self.in_ram) {
                done.covers = Some(covers);
            }
            drop(done);
            s = self.lock();
        }
        drop(s);
        let kept = lock_outcome(&outcome).take();
        // Set by `run` or `fail` before `applied` passed `mine`, unless
        // a write of its batch panicked.
        kept.unwrap_or_else(|| {
            Err(E::from(DbFailure::Other(
                "the write was lost: another write of its transaction panicked".into(),
            )))
        })
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

/// Ends a shared transaction's turn, also when one of its writes
/// panicked (the waiting writers then fail instead of waiting for ever).
struct Applied<'a> {
    group: &'a GroupCommit,
    /// The last write the transaction took.
    last: u64,
    /// `Some(covers)` once it is durable.
    covers: Option<u64>,
    /// The threads waiting for its writes.
    waiting: Vec<std::thread::Thread>,
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let mut s = self.group.lock();
        s.applying = false;
        s.applied = s.applied.max(self.last);
        if let Some(covers) = self.covers {
            s.durable = s.durable.max(covers);
            self.group.synced.notify_all();
        }
        // The first write queued meanwhile runs the next transaction.
        let next = s.queue.first().map(|(_, t)| t.clone());
        drop(s);
        let me = std::thread::current().id();
        for t in self.waiting.iter().chain(&next) {
            if t.id() != me {
                t.unpark();
            }
        }
    }
}

/// Runs `jobs` in one transaction and commits it; a job that fails is
/// left out and the rest run again in a new one. Returns whether a
/// transaction committed.
fn apply_all(db: &redb::Database, mut jobs: Vec<Box<dyn Job>>, durable: bool) -> bool {
    let fail_all = |jobs: &mut Vec<Box<dyn Job>>, e: redb::Error| {
        let why = classify(e);
        for j in jobs.iter_mut() {
            j.fail(&why);
        }
        false
    };
    while !jobs.is_empty() {
        let mut txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => return fail_all(&mut jobs, e.into()),
        };
        if durable {
            if let Err(e) = txn.set_durability(redb::Durability::Immediate) {
                return fail_all(&mut jobs, e.into());
            }
        }
        match jobs.iter_mut().position(|j| !j.run(&txn)) {
            Some(failed) => {
                // Its outcome is its own error; the others' are made again.
                if let Err(e) = txn.abort() {
                    jobs.remove(failed);
                    return fail_all(&mut jobs, e.into());
                }
                jobs.remove(failed);
            }
            None => {
                return match txn.commit() {
                    Ok(()) => true,
                    Err(e) => fail_all(&mut jobs, e.into()),
                }
            }
        }
    }
    false
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

    use redb::{ReadableDatabase, ReadableTable};

    const T: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("t");

    /// One write of a crash test: key `k` set to `v`, durable on return.
    type Write = fn(&redb::Database, &GroupCommit, u64, u64);

    /// 64 threads × 8 writes through `write`, then a non-durable commit
    /// nobody was told of, then a crash: every write that returned is
    /// there, the last commit is not, and the writes took at most one
    /// durable commit each (how many they shared depends on the
    /// scheduler; the bench measures it).
    fn every_write_that_returned_survives_a_crash(write: Write) {
        let disk = Disk::default();
        let db = std::sync::Arc::new(builder().create_with_backend(disk.clone()).unwrap());
        let group = std::sync::Arc::new(GroupCommit::default());
        let before = disk.syncs();
        let writers: Vec<_> = (0..64u64)
            .map(|i| {
                let (db, group) = (db.clone(), group.clone());
                std::thread::spawn(move || (0..8u64).for_each(|j| write(&db, &group, i * 8 + j, j)))
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let syncs = disk.syncs() - before;
        let mut txn = db.begin_write().unwrap();
        txn.open_table(T).unwrap().insert(9999, 0).unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        txn.commit().unwrap();

        let after = builder().create_with_backend(disk.crash()).unwrap();
        let r = after.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        for k in 0..512u64 {
            assert_eq!(t.get(k).unwrap().map(|v| v.value()), Some(k % 8), "key {k}");
        }
        assert!(t.get(9999).unwrap().is_none());
        let one = {
            let d = disk.syncs();
            sync(&db).unwrap();
            disk.syncs() - d
        };
        assert!(syncs <= 512 * one, "{syncs} syncs for 512 writes");
    }

    #[test]
    fn every_commit_that_returned_survives_a_crash() {
        every_write_that_returned_survives_a_crash(|db, group, k, v| {
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert(k, v).unwrap();
            group.commit(db, txn).unwrap();
        });
    }

    #[test]
    fn every_applied_write_that_returned_survives_a_crash() {
        every_write_that_returned_survives_a_crash(|db, group, k, v| {
            group
                .apply(db, move |txn| {
                    txn.open_table(T)?.insert(k, v)?;
                    Ok::<_, Failed>(())
                })
                .unwrap();
        });
    }

    /// An error of a test's write (any redb error, or its own refusal).
    #[derive(Debug)]
    enum Failed {
        // Read by the panic messages (`Debug`) of the tests' unwraps.
        #[allow(dead_code)]
        Db(DbFailure),
        Refused,
    }

    impl From<DbFailure> for Failed {
        fn from(f: DbFailure) -> Self {
            Failed::Db(f)
        }
    }

    impl<E: Into<redb::Error>> From<E> for Failed {
        fn from(e: E) -> Self {
            Failed::Db(classify(e))
        }
    }

    /// Spins (yielding) until `f` holds: for a state another thread
    /// reaches without telling anyone. Bounded: fails after 60 s.
    fn until(what: &str, f: impl Fn() -> bool) {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !f() {
            assert!(std::time::Instant::now() < end, "never: {what}");
            std::thread::yield_now();
        }
    }

    /// Three writes queued while a transaction is held open elsewhere all
    /// go in the next shared transaction: one fsync. The one that fails
    /// leaves nothing of itself and fails alone; a write sees the writes
    /// queued before it; and one that panics does not hang the rest.
    #[test]
    fn queued_writes_share_one_transaction_and_fail_alone() {
        let disk = Disk::default();
        let db = std::sync::Arc::new(builder().create_with_backend(disk.clone()).unwrap());
        let group = std::sync::Arc::new(GroupCommit::default());
        type Make = Box<dyn FnMut(&redb::WriteTransaction) -> Result<u64, Failed> + Send>;
        let write = |make: Make| {
            let (db, group) = (db.clone(), group.clone());
            std::thread::spawn(move || group.apply(&db, make))
        };
        // The write slot, held: the first write takes the queue (itself)
        // and waits for the slot; the next ones queue behind it.
        let held = db.begin_write().unwrap();
        let first = write(Box::new(|txn| {
            txn.open_table(T)?.insert(1, 1)?;
            Ok(1)
        }));
        until("the first write is running", || group.lock().applying);
        let second = write(Box::new(|txn| {
            txn.open_table(T)?.insert(2, 20)?;
            Ok(2)
        }));
        until("the second write is queued", || group.lock().queued == 2);
        let refused = write(Box::new(|txn| {
            txn.open_table(T)?.insert(3, 3)?;
            Err(Failed::Refused)
        }));
        until("the failing write is queued", || group.lock().queued == 3);
        let sees = write(Box::new(|txn| {
            let mut t = txn.open_table(T)?;
            let second = t.get(2)?.map(|v| v.value());
            t.insert(4, second.unwrap_or(0) + 1)?;
            Ok(4)
        }));
        until("the last write is queued", || group.lock().queued == 4);
        let before = disk.syncs();
        drop(held);

        assert_eq!(first.join().unwrap().unwrap(), 1);
        assert_eq!(second.join().unwrap().unwrap(), 2);
        assert!(matches!(refused.join().unwrap(), Err(Failed::Refused)));
        assert_eq!(sees.join().unwrap().unwrap(), 4);
        let one = {
            let d = disk.syncs();
            sync(&db).unwrap();
            disk.syncs() - d
        };
        // The first write's transaction, then one for the other three.
        assert_eq!(disk.syncs() - one - before, 2 * one);

        let after = builder().create_with_backend(disk.crash()).unwrap();
        let r = after.begin_read().unwrap();
        let t = r.open_table(T).unwrap();
        let got: Vec<_> = (1..=4u64)
            .map(|k| t.get(k).unwrap().map(|v| v.value()))
            .collect();
        assert_eq!(got, [Some(1), Some(20), None, Some(21)]);

        // A write that panics (in whichever thread runs its transaction)
        // leaves the others an error, not a wait for ever.
        let held = db.begin_write().unwrap();
        let first = write(Box::new(|_| Ok(0)));
        until("the first write is running", || group.lock().applying);
        let panics = write(Box::new(|_| panic!("a bug in a write")));
        until("the panicking write is queued", || group.lock().queued == 6);
        let last = write(Box::new(|txn| {
            txn.open_table(T)?.insert(5, 5)?;
            Ok(5)
        }));
        until("the last write is queued", || group.lock().queued == 7);
        drop(held);
        assert_eq!(first.join().unwrap().unwrap(), 0);
        // Each of the two ran the transaction or waited for it: the one
        // that ran it panicked; the other has an error.
        let outcomes = [panics.join(), last.join()];
        assert!(outcomes.iter().any(|o| o.is_err()), "one thread panicked");
        assert!(
            outcomes.iter().all(|o| !matches!(o, Ok(Ok(_)))),
            "nothing of the panicked transaction was kept"
        );
        // And the next write goes through.
        assert_eq!(write(Box::new(|_| Ok(9))).join().unwrap().unwrap(), 9);
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
