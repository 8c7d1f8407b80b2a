//! At-least-once delivery with a clock the test moves: leases, redelivery,
//! dead letters, idempotency, FIFO, feeds, restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::sync::Arc;

use ron_mailbox::store::{MailboxError, ManualClock, MAX_ATTEMPTS};
use ron_mailbox::Mailbox;

fn mailbox() -> (Mailbox, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    (Mailbox::in_memory(Arc::new(clock.clone())).unwrap(), clock)
}

#[test]
fn delivery_is_fifo_leased_and_acked() {
    let (mb, clock) = mailbox();
    for i in 0..5 {
        mb.send("jobs", &format!("m{i}"), None).unwrap();
    }
    let (got, _) = mb.receive("jobs", 3, 10_000).unwrap();
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    // Leased messages are invisible until the lease ends.
    let (more, _) = mb.receive("jobs", 10, 10_000).unwrap();
    assert_eq!(
        more.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["m3", "m4"]
    );
    assert!(mb.receive("jobs", 10, 10_000).unwrap().0.is_empty());
    for m in got.iter().chain(&more) {
        mb.ack("jobs", &m.msg_id).unwrap();
    }
    clock.advance(60_000);
    assert!(
        mb.receive("jobs", 10, 10_000).unwrap().0.is_empty(),
        "acked is gone for good"
    );
    assert_eq!(mb.depths().unwrap(), vec![("jobs".to_owned(), 0)]);
}

#[test]
fn an_expired_lease_is_redelivered_and_five_failures_dead_letter() {
    let (mb, clock) = mailbox();
    let sent = mb.send("jobs", "flaky", None).unwrap();
    for attempt in 1..=MAX_ATTEMPTS {
        let (got, stats) = mb.receive("jobs", 1, 1_000).unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].attempts, attempt);
        assert_eq!(stats.redelivered, u64::from(attempt > 1));
        // Not before the lease ends…
        clock.advance(999);
        assert!(mb.receive("jobs", 1, 1_000).unwrap().0.is_empty());
        // …but right after.
        clock.advance(1);
    }
    let (got, stats) = mb.receive("jobs", 1, 1_000).unwrap();
    assert!(got.is_empty());
    assert_eq!(stats.dead_lettered, 1);
    let dead = mb.dead_letters("jobs", 0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].msg_id, sent.msg_id);
    assert_eq!(dead[0].attempts, MAX_ATTEMPTS);
    assert!(matches!(
        mb.ack("jobs", &sent.msg_id),
        Err(MailboxError::NotFound)
    ));
}

#[test]
fn nack_returns_a_message_at_once_and_counts_as_a_failure() {
    let (mb, _clock) = mailbox();
    let sent = mb.send("jobs", "x", None).unwrap();
    assert!(matches!(
        mb.nack("jobs", &sent.msg_id),
        Err(MailboxError::NotLeased)
    ));
    assert!(matches!(
        mb.ack("jobs", &sent.msg_id),
        Err(MailboxError::NotLeased)
    ));
    for attempt in 1..=MAX_ATTEMPTS {
        let (got, _) = mb.receive("jobs", 1, 60_000).unwrap();
        assert_eq!(got[0].attempts, attempt);
        let dead = mb.nack("jobs", &sent.msg_id).unwrap();
        assert_eq!(dead, attempt == MAX_ATTEMPTS);
    }
    assert!(mb.receive("jobs", 1, 60_000).unwrap().0.is_empty());
    assert_eq!(mb.dead_letters("jobs", 0, 10).unwrap().len(), 1);
}

#[test]
fn idempotency_keys_hold_for_five_minutes() {
    let (mb, clock) = mailbox();
    let a = mb.send("t", "one", Some("key-1")).unwrap();
    let b = mb.send("t", "one again", Some("key-1")).unwrap();
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.msg_id, b.msg_id);
    assert_eq!(a.seq, b.seq);
    // The same key on another topic is another message.
    assert!(!mb.send("u", "one", Some("key-1")).unwrap().duplicate);
    clock.advance(5 * 60 * 1000);
    let c = mb.send("t", "later", Some("key-1")).unwrap();
    assert!(!c.duplicate);
    assert_ne!(c.msg_id, a.msg_id);
    assert_eq!(mb.feed("t", 0, 10).unwrap().len(), 2);
    clock.advance(5 * 60 * 1000);
    assert_eq!(mb.prune_idempotency().unwrap(), 2);
}

#[test]
fn feeds_read_without_leasing() {
    let (mb, _clock) = mailbox();
    for i in 0..4 {
        mb.send("news", &format!("n{i}"), None).unwrap();
    }
    let first = mb.feed("news", 0, 2).unwrap();
    assert_eq!(first.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    let rest = mb.feed("news", 2, 10).unwrap();
    assert_eq!(
        rest.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["n2", "n3"]
    );
    // Reading the feed leased nothing.
    assert_eq!(mb.receive("news", 10, 1000).unwrap().0.len(), 4);
}

#[test]
fn bad_topics_are_refused_and_sends_survive_reopening() {
    let (mb, _clock) = mailbox();
    for bad in ["", "Upper", "has space", "a/b", &"x".repeat(129)] {
        assert!(
            matches!(mb.send(bad, "x", None), Err(MailboxError::BadTopic)),
            "{bad:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.redb");
    let clock = Arc::new(ManualClock::new(5));
    let id = Mailbox::open(&path, clock.clone())
        .unwrap()
        .send("keep", "me", None)
        .unwrap()
        .msg_id;
    let mb = Mailbox::open(&path, clock).unwrap();
    let (got, _) = mb.receive("keep", 1, 1000).unwrap();
    assert_eq!(got[0].msg_id, id);
    assert_eq!(got[0].body, "me");
}
