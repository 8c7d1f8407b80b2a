//! The name index: versions, history, compare-and-set, validation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use ron_index::store::validate_name;
use ron_index::{IndexError, NameIndex, NameUpdate};
use ron_kernel::ContentAddress;

fn addr(n: u8) -> ContentAddress {
    ContentAddress::from_bytes([n; 32])
}

fn update(n: u8) -> NameUpdate {
    NameUpdate {
        address: addr(n),
        content_type: Some("text/html".into()),
        feed: Some("news".into()),
        meta: Some(serde_json::json!({"title": "hello"})),
    }
}

#[test]
fn versions_go_up_and_history_keeps_every_one() {
    let ix = NameIndex::in_memory().unwrap();
    let (r1, created) = ix.set("site/home", update(1), None).unwrap();
    assert!(created);
    assert_eq!(r1.version, 1);
    let (r2, created) = ix.set("site/home", update(2), None).unwrap();
    assert!(!created);
    assert_eq!(r2.version, 2);
    assert_eq!(ix.get("site/home").unwrap().address, addr(2));
    let h = ix.history("site/home").unwrap();
    assert_eq!(h.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(h[0].address, addr(1));
    // Deleting keeps history; setting again continues the numbering.
    ix.delete("site/home", None).unwrap();
    assert!(matches!(ix.get("site/home"), Err(IndexError::NotFound)));
    assert_eq!(ix.history("site/home").unwrap().len(), 2);
    let (r3, created) = ix.set("site/home", update(3), None).unwrap();
    assert!(created);
    assert_eq!(r3.version, 3, "versions are never reused");
    assert_eq!(ix.count().unwrap(), 1);
}

#[test]
fn if_match_is_compare_and_set() {
    let ix = NameIndex::in_memory().unwrap();
    assert!(matches!(
        ix.set("a", update(1), Some(1)),
        Err(IndexError::VersionMismatch {
            expected: 1,
            current: None
        })
    ));
    ix.set("a", update(1), None).unwrap();
    ix.set("a", update(2), Some(1)).unwrap();
    assert!(matches!(
        ix.set("a", update(3), Some(1)),
        Err(IndexError::VersionMismatch {
            expected: 1,
            current: Some(2)
        })
    ));
    assert_eq!(
        ix.get("a").unwrap().address,
        addr(2),
        "a failed CAS changes nothing"
    );
    assert!(matches!(
        ix.delete("a", Some(1)),
        Err(IndexError::VersionMismatch { .. })
    ));
    ix.delete("a", Some(2)).unwrap();
}

#[test]
fn names_and_records_are_validated() {
    for good in ["a", "site/home", "a.b_c-d/e9", &"x".repeat(253)] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "A",
        "a b",
        "a/../b",
        "..",
        "/a",
        "a/",
        "a//b",
        "a%2f",
        &"x".repeat(254),
        "ünï",
    ] {
        assert!(
            matches!(validate_name(bad), Err(IndexError::BadName(_))),
            "{bad:?}"
        );
    }
    let ix = NameIndex::in_memory().unwrap();
    let mut u = update(1);
    u.feed = Some("Bad Topic".into());
    assert!(matches!(
        ix.set("a", u, None),
        Err(IndexError::BadRecord(_))
    ));
    let mut u = update(1);
    u.meta = Some(serde_json::json!([1, 2]));
    assert!(matches!(
        ix.set("a", u, None),
        Err(IndexError::BadRecord(_))
    ));
    let mut u = update(1);
    u.meta = Some(serde_json::json!({"big": "x".repeat(20_000)}));
    assert!(matches!(
        ix.set("a", u, None),
        Err(IndexError::BadRecord(_))
    ));
}

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.redb");
    NameIndex::open(&path)
        .unwrap()
        .set("keep", update(7), None)
        .unwrap();
    let ix = NameIndex::open(&path).unwrap();
    assert_eq!(ix.get("keep").unwrap().address, addr(7));
}
