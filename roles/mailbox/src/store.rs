//! `Mailbox`: topics with at-least-once delivery on redb.
//!
//! A message is sent once (an `Idempotency-Key` repeated within five
//! minutes returns the first message), delivered in send order under a
//! visibility lease, and removed only when acknowledged. A lease that
//! expires, or a nack, makes it deliverable again; after five failed
//! deliveries it moves to the topic's dead-letter list.
//!
//! Invariants: an acknowledged send is durable; a message leaves the topic
//! only by ack or dead-lettering; time comes from a `Clock`, so tests move
//! it instead of sleeping.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

/// (topic, seq) → message record.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// (topic, seq) → dead-lettered message record.
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// topic → next sequence number.
const NEXT_SEQ: TableDefinition<&str, u64> = TableDefinition::new("topic_next_seq");
/// topic → messages waiting (sent, not acknowledged, not dead).
const DEPTH: TableDefinition<&str, u64> = TableDefinition::new("topic_depth");
/// msg_id → (seq ‖ topic), to find a message by id.
const BY_ID: TableDefinition<&str, &[u8]> = TableDefinition::new("message_ids");
/// (topic, idempotency key) → (sent_ms ‖ msg_id).
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency_keys");

/// Deliveries after which a failing message is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Where time comes from.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_ms)))
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// This file's layout versions (`ron_kernel::schema`): 1 is the first
/// versioned layout, the same tables as the unversioned files before it.
/// A layout change adds a step here and its test.
pub static SCHEMA: ron_kernel::schema::Schema = ron_kernel::schema::Schema {
    role: "mailbox",
    file: "mailbox.redb",
    steps: &[ron_kernel::schema::unversioned_to_1],
};

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error(transparent)]
    Schema(#[from] ron_kernel::schema::SchemaError),
    #[error("invalid topic: topics are 1-128 characters of a-z 0-9 . _ -")]
    BadTopic,
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("no such message in this topic")]
    NotFound,
    #[error("the message is not currently delivered (nothing to ack or nack)")]
    NotLeased,
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("mailbox storage error: {0}")]
    Db(String),
}

ron_kernel::db_error_type!(MailboxError);

pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A stored message: `attempts u32 ‖ lease_until u64 ‖ sent_ms u64 ‖
/// id_len u8 ‖ msg_id ‖ body`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub seq: u64,
    pub msg_id: String,
    pub body: String,
    pub attempts: u32,
    #[serde(skip)]
    pub lease_until: u64,
    pub sent_ms: u64,
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(21 + self.msg_id.len() + self.body.len());
        v.extend_from_slice(&self.attempts.to_be_bytes());
        v.extend_from_slice(&self.lease_until.to_be_bytes());
        v.extend_from_slice(&self.sent_ms.to_be_bytes());
        v.push(self.msg_id.len() as u8);
        v.extend_from_slice(self.msg_id.as_bytes());
        v.extend_from_slice(self.body.as_bytes());
        v
    }

    fn decode(seq: u64, raw: &[u8]) -> Result<Self, MailboxError> {
        let bad = || MailboxError::Db("stored message unreadable".into());
        if raw.len() < 21 {
            return Err(bad());
        }
        let mut a = [0u8; 4];
        a.copy_from_slice(&raw[..4]);
        let mut l = [0u8; 8];
        l.copy_from_slice(&raw[4..12]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&raw[12..20]);
        let id_len = raw[20] as usize;
        let id_end = 21 + id_len;
        if raw.len() < id_end {
            return Err(bad());
        }
        Ok(Self {
            seq,
            msg_id: String::from_utf8(raw[21..id_end].to_vec()).map_err(|_| bad())?,
            body: String::from_utf8(raw[id_end..].to_vec()).map_err(|_| bad())?,
            attempts: u32::from_be_bytes(a),
            lease_until: u64::from_be_bytes(l),
            sent_ms: u64::from_be_bytes(t),
        })
    }
}

/// What `send` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub msg_id: String,
    pub seq: u64,
    pub duplicate: bool,
}

/// Counters a receive produced, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    pub redelivered: u64,
    pub dead_lettered: u64,
}

#[derive(Clone)]
pub struct Mailbox {
    db: Arc<Database>,
    clock: Arc<dyn Clock>,
    /// Sends, receives, acks and nacks at about the same time share one
    /// transaction and its fsync (`GroupCommit::apply`); each still
    /// returns only once it is durable.
    group: Arc<ron_kernel::db::GroupCommit>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

fn check_topic(topic: &str) -> Result<(), MailboxError> {
    if valid_topic(topic) {
        Ok(())
    } else {
        Err(MailboxError::BadTopic)
    }
}

impl Mailbox {
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, MailboxError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        Self::init(
            ron_kernel::db::builder().create(path).map_err(db_err)?,
            clock,
            ron_kernel::db::GroupCommit::default(),
        )
    }

    pub fn in_memory(clock: Arc<dyn Clock>) -> Result<Self, MailboxError> {
        let db = ron_kernel::db::builder()
            .create_with_backend(ron_kernel::memstore::PagedMemory::new())
            .map_err(db_err)?;
        Self::init(db, clock, ron_kernel::db::GroupCommit::in_ram())
    }

    fn init(
        db: Database,
        clock: Arc<dyn Clock>,
        group: ron_kernel::db::GroupCommit,
    ) -> Result<Self, MailboxError> {
        ron_kernel::schema::check_or_stamp(&db, &SCHEMA)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(MESSAGES).map_err(db_err)?;
            txn.open_table(DEAD).map_err(db_err)?;
            txn.open_table(NEXT_SEQ).map_err(db_err)?;
            txn.open_table(DEPTH).map_err(db_err)?;
            txn.open_table(BY_ID).map_err(db_err)?;
            txn.open_table(IDEMPOTENCY).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Self {
            db: Arc::new(db),
            clock,
            group: Arc::new(group),
        })
    }

    /// Sends a message; durable when this returns. A repeated
    /// `idempotency_key` within five minutes returns the first message.
    pub fn send(
        &self,
        topic: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Sent, MailboxError> {
        check_topic(topic)?;
        if let Some(k) = idempotency_key {
            if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(MailboxError::BadRequest(
                    "Idempotency-Key must be 1-128 printable ASCII characters".into(),
                ));
            }
        }
        let now = self.clock.now_ms();
        let (topic, body) = (topic.to_owned(), body.to_owned());
        let key = idempotency_key.map(str::to_owned);
        // A duplicate writes nothing; its answer waits for the shared
        // transaction's fsync all the same, which makes the first send
        // durable if it was not yet (it committed before).
        self.group.apply(&self.db, move |txn| {
            Self::send_in(txn, &topic, &body, key.as_deref(), now)
        })
    }

    /// `send`'s write.
    fn send_in(
        txn: &redb::WriteTransaction,
        topic: &str,
        body: &str,
        idempotency_key: Option<&str>,
        now: u64,
    ) -> Result<Sent, MailboxError> {
        let sent = 'sent: {
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            if let Some(k) = idempotency_key {
                let hit = match idem.get((topic, k)).map_err(db_err)? {
                    Some(raw) => {
                        let raw = raw.value();
                        let at = be_u64(raw);
                        (now.saturating_sub(at) < IDEMPOTENCY_WINDOW_MS).then(|| {
                            String::from_utf8_lossy(raw.get(8..).unwrap_or_default()).into_owned()
                        })
                    }
                    None => None,
                };
                if let Some(msg_id) = hit {
                    let by_id = txn.open_table(BY_ID).map_err(db_err)?;
                    let seq = match by_id.get(msg_id.as_str()).map_err(db_err)? {
                        Some(v) => seq_of(v.value()),
                        None => 0,
                    };
                    break 'sent Sent {
                        msg_id,
                        seq,
                        duplicate: true,
                    };
                }
            }
            let mut next = txn.open_table(NEXT_SEQ).map_err(db_err)?;
            let seq = next
                .get(topic)
                .map_err(db_err)?
                .map(|g| g.value())
                .unwrap_or(1);
            next.insert(topic, seq + 1).map_err(db_err)?;
            let msg_id = format!("{:032x}", fastrand::u128(..));
            let msg = Message {
                seq,
                msg_id: msg_id.clone(),
                body: body.to_owned(),
                attempts: 0,
                lease_until: 0,
                sent_ms: now,
            };
            txn.open_table(MESSAGES)
                .map_err(db_err)?
                .insert((topic, seq), &msg.encode()[..])
                .map_err(db_err)?;
            let mut loc = seq.to_be_bytes().to_vec();
            loc.extend_from_slice(topic.as_bytes());
            txn.open_table(BY_ID)
                .map_err(db_err)?
                .insert(msg_id.as_str(), &loc[..])
                .map_err(db_err)?;
            let mut depth = txn.open_table(DEPTH).map_err(db_err)?;
            bump_depth(&mut depth, topic, 1)?;
            if let Some(k) = idempotency_key {
                let mut v = now.to_be_bytes().to_vec();
                v.extend_from_slice(msg_id.as_bytes());
                idem.insert((topic, k), &v[..]).map_err(db_err)?;
            }
            Sent {
                msg_id,
                seq,
                duplicate: false,
            }
        };
        Ok(sent)
    }

    /// Leases up to `max` deliverable messages, oldest first, for
    /// `visibility_ms`. Expired leases that used up their attempts are
    /// dead-lettered on the way.
    pub fn receive(
        &self,
        topic: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<(Vec<Message>, ReceiveStats), MailboxError> {
        check_topic(topic)?;
        let now = self.clock.now_ms();
        let topic = topic.to_owned();
        self.group.apply(&self.db, move |txn| {
            Self::receive_in(txn, &topic, max, visibility_ms, now)
        })
    }

    /// `receive`'s write.
    fn receive_in(
        txn: &redb::WriteTransaction,
        topic: &str,
        max: usize,
        visibility_ms: u64,
        now: u64,
    ) -> Result<(Vec<Message>, ReceiveStats), MailboxError> {
        let mut stats = ReceiveStats::default();
        let mut out = Vec::new();
        {
            let mut messages = txn.open_table(MESSAGES).map_err(db_err)?;
            let mut dead = txn.open_table(DEAD).map_err(db_err)?;
            let mut depth = txn.open_table(DEPTH).map_err(db_err)?;
            let mut by_id = txn.open_table(BY_ID).map_err(db_err)?;
            let mut candidates = Vec::new();
            for entry in messages
                .range((topic, 0)..=(topic, u64::MAX))
                .map_err(db_err)?
            {
                let (k, v) = entry.map_err(db_err)?;
                let msg = Message::decode(k.value().1, v.value())?;
                if msg.lease_until == 0 || msg.lease_until <= now {
                    candidates.push(msg);
                }
                if candidates.len() >= max + 64 {
                    break;
                }
            }
            for mut msg in candidates {
                if out.len() >= max {
                    break;
                }
                let expired = msg.lease_until != 0;
                if expired && msg.attempts >= MAX_ATTEMPTS {
                    messages.remove((topic, msg.seq)).map_err(db_err)?;
                    by_id.remove(msg.msg_id.as_str()).map_err(db_err)?;
                    msg.lease_until = 0;
                    dead.insert((topic, msg.seq), &msg.encode()[..])
                        .map_err(db_err)?;
                    bump_depth(&mut depth, topic, -1)?;
                    stats.dead_lettered += 1;
                    continue;
                }
                if msg.attempts > 0 {
                    stats.redelivered += 1;
                }
                msg.attempts += 1;
                msg.lease_until = now + visibility_ms.max(1);
                messages
                    .insert((topic, msg.seq), &msg.encode()[..])
                    .map_err(db_err)?;
                out.push(msg);
            }
        }
        Ok((out, stats))
    }

    fn locate(&self, topic: &str, msg_id: &str) -> Result<u64, MailboxError> {
        check_topic(topic)?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let by_id = txn.open_table(BY_ID).map_err(db_err)?;
        let raw = by_id
            .get(msg_id)
            .map_err(db_err)?
            .ok_or(MailboxError::NotFound)?;
        let raw = raw.value();
        if raw.len() < 8 || &raw[8..] != topic.as_bytes() {
            return Err(MailboxError::NotFound);
        }
        Ok(seq_of(raw))
    }

    /// Acknowledges a delivered message: it is gone for good.
    pub fn ack(&self, topic: &str, msg_id: &str) -> Result<(), MailboxError> {
        let seq = self.locate(topic, msg_id)?;
        let (topic, msg_id) = (topic.to_owned(), msg_id.to_owned());
        self.group
            .apply(&self.db, move |txn| Self::ack_in(txn, &topic, &msg_id, seq))?
    }

    /// `ack`'s write. A refusal (the message is gone or not leased) is
    /// decided before anything is written: it is the inner error, and the
    /// transaction it shares goes on for the other writes.
    fn ack_in(
        txn: &redb::WriteTransaction,
        topic: &str,
        msg_id: &str,
        seq: u64,
    ) -> Result<Result<(), MailboxError>, MailboxError> {
        let mut messages = txn.open_table(MESSAGES).map_err(db_err)?;
        let msg = match messages.get((topic, seq)).map_err(db_err)? {
            Some(v) => Message::decode(seq, v.value())?,
            None => return Ok(Err(MailboxError::NotFound)),
        };
        if msg.attempts == 0 {
            return Ok(Err(MailboxError::NotLeased));
        }
        messages.remove((topic, seq)).map_err(db_err)?;
        txn.open_table(BY_ID)
            .map_err(db_err)?
            .remove(msg_id)
            .map_err(db_err)?;
        let mut depth = txn.open_table(DEPTH).map_err(db_err)?;
        bump_depth(&mut depth, topic, -1)?;
        Ok(Ok(()))
    }

    /// Gives a delivered message back at once; after its last attempt it is
    /// dead-lettered. Returns whether it was dead-lettered.
    pub fn nack(&self, topic: &str, msg_id: &str) -> Result<bool, MailboxError> {
        let seq = self.locate(topic, msg_id)?;
        let (topic, msg_id) = (topic.to_owned(), msg_id.to_owned());
        self.group.apply(&self.db, move |txn| {
            Self::nack_in(txn, &topic, &msg_id, seq)
        })?
    }

    /// `nack`'s write; a refusal is the inner error, as for `ack_in`.
    fn nack_in(
        txn: &redb::WriteTransaction,
        topic: &str,
        msg_id: &str,
        seq: u64,
    ) -> Result<Result<bool, MailboxError>, MailboxError> {
        let dead_lettered = {
            let mut messages = txn.open_table(MESSAGES).map_err(db_err)?;
            let mut msg = match messages.get((topic, seq)).map_err(db_err)? {
                Some(v) => Message::decode(seq, v.value())?,
                None => return Ok(Err(MailboxError::NotFound)),
            };
            if msg.attempts == 0 || msg.lease_until == 0 {
                return Ok(Err(MailboxError::NotLeased));
            }
            msg.lease_until = 0;
            if msg.attempts >= MAX_ATTEMPTS {
                messages.remove((topic, seq)).map_err(db_err)?;
                txn.open_table(BY_ID)
                    .map_err(db_err)?
                    .remove(msg_id)
                    .map_err(db_err)?;
                txn.open_table(DEAD)
                    .map_err(db_err)?
                    .insert((topic, seq), &msg.encode()[..])
                    .map_err(db_err)?;
                let mut depth = txn.open_table(DEPTH).map_err(db_err)?;
                bump_depth(&mut depth, topic, -1)?;
                true
            } else {
                messages
                    .insert((topic, seq), &msg.encode()[..])
                    .map_err(db_err)?;
                false
            }
        };
        Ok(Ok(dead_lettered))
    }

    /// Messages after `after` in send order, without leasing them (a feed).
    pub fn feed(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, MailboxError> {
        self.list(MESSAGES, topic, after, limit)
    }

    /// The newest `limit` messages of a topic, oldest first, without
    /// leasing them: what a hydrated view shows of a record's feed.
    pub fn latest(&self, topic: &str, limit: usize) -> Result<Vec<Message>, MailboxError> {
        check_topic(topic)?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(MESSAGES).map_err(db_err)?;
        let mut out = Vec::with_capacity(limit.min(64));
        for entry in t
            .range((topic, 0)..=(topic, u64::MAX))
            .map_err(db_err)?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(db_err)?;
            out.push(Message::decode(k.value().1, v.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// The topic's dead-letter list, oldest first.
    pub fn dead_letters(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, MailboxError> {
        self.list(DEAD, topic, after, limit)
    }

    fn list(
        &self,
        table: TableDefinition<(&str, u64), &[u8]>,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, MailboxError> {
        check_topic(topic)?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        if after == u64::MAX {
            return Ok(out);
        }
        for entry in t
            .range((topic, after + 1)..=(topic, u64::MAX))
            .map_err(db_err)?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(db_err)?;
            out.push(Message::decode(k.value().1, v.value())?);
        }
        Ok(out)
    }

    /// Messages waiting per topic.
    pub fn depths(&self) -> Result<Vec<(String, u64)>, MailboxError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let depth = txn.open_table(DEPTH).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in depth.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value()));
        }
        Ok(out)
    }

    /// Forgets idempotency keys older than the window. Returns how many.
    pub fn prune_idempotency(&self) -> Result<usize, MailboxError> {
        let now = self.clock.now_ms();
        let txn = self.db.begin_write().map_err(db_err)?;
        let n = {
            let mut idem = txn.open_table(IDEMPOTENCY).map_err(db_err)?;
            let mut old: Vec<(String, String)> = Vec::new();
            for entry in idem.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                if now.saturating_sub(be_u64(v.value())) >= IDEMPOTENCY_WINDOW_MS {
                    let (topic, key) = k.value();
                    old.push((topic.to_owned(), key.to_owned()));
                }
            }
            for (topic, key) in &old {
                idem.remove((topic.as_str(), key.as_str()))
                    .map_err(db_err)?;
            }
            old.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(n)
    }

    pub fn writable(&self) -> bool {
        ron_kernel::db::writable(&self.db)
    }
}

fn seq_of(loc: &[u8]) -> u64 {
    be_u64(loc)
}

/// The big-endian u64 at the front of `b` (0 for a short slice: stored
/// records are written by this module and always long enough).
fn be_u64(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

type DepthTable<'t> = redb::Table<'t, &'static str, u64>;

/// Adds `delta` (±1) to a topic's waiting-message count.
fn bump_depth(depth: &mut DepthTable<'_>, topic: &str, delta: i64) -> Result<(), MailboxError> {
    let d = depth
        .get(topic)
        .map_err(db_err)?
        .map(|g| g.value())
        .unwrap_or(0);
    let d = if delta < 0 {
        d.saturating_sub(delta.unsigned_abs())
    } else {
        d + delta as u64
    };
    depth.insert(topic, d).map_err(db_err)?;
    Ok(())
}
