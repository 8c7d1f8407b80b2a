//! The registry log without HTTP: quorum, chain, rotation, restart,
//! backup/restore, and a property test over random signer sets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use ron_registry::log::{Options, Registry, RegistryError};
use ron_registry::model::{
    encode_hex, hash_bytes, signing_message, Approval, DescriptorSet, Item, Payload, Region,
    SignerEntry, SignerSet,
};

fn keys(n: usize, salt: u8) -> Vec<SigningKey> {
    (0..n)
        .map(|i| {
            SigningKey::from_bytes(&[
                i as u8 + 1,
                salt,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ])
        })
        .collect()
}

fn signer_set(keys: &[SigningKey], m: u32, prefix: &str) -> SignerSet {
    SignerSet {
        m,
        signers: keys
            .iter()
            .enumerate()
            .map(|(i, k)| SignerEntry {
                id: format!("{prefix}{i}"),
                public_key: encode_hex(k.verifying_key().as_bytes()),
            })
            .collect(),
    }
}

fn opts(genesis: SignerSet) -> Options {
    Options {
        genesis,
        proposal_ttl: Duration::from_secs(72 * 3600),
        upstream: None,
        bus: None,
        stream_buffer: ron_registry::log::STREAM_BUFFER,
    }
}

fn payload(reg: &Registry, items: Vec<Item>) -> Payload {
    let head = reg.snapshot().head.clone();
    Payload::from_set(DescriptorSet {
        version: head.version + 1,
        prev_b3: head.payload_b3,
        items,
        created_at: "2026-11-25T10:00:00Z".into(),
    })
    .unwrap()
}

fn region(id: &str) -> Item {
    Item::Region(Region {
        id: id.into(),
        name: format!("region {id}"),
        parent: None,
    })
}

fn approve(key: &SigningKey, id: &str, version: u64, payload_b3: &str) -> Approval {
    let h = hash_bytes(payload_b3).unwrap();
    Approval {
        signer_id: id.into(),
        sig: encode_hex(&key.sign(&signing_message(version, &h)).to_bytes()),
    }
}

/// Proposes `items` and approves with signers `who` (indexes into `keys`,
/// ids `{prefix}{i}`); returns the proposal id.
fn proposed(
    reg: &Registry,
    items: Vec<Item>,
    keys: &[SigningKey],
    prefix: &str,
    who: &[usize],
) -> String {
    let p = reg.propose(payload(reg, items)).unwrap();
    for &i in who {
        reg.approve(
            &p.id,
            approve(
                &keys[i],
                &format!("{prefix}{i}"),
                p.payload.version,
                &p.payload_b3,
            ),
        )
        .unwrap();
    }
    p.id
}

#[test]
fn three_of_five_commits_two_of_five_does_not() {
    let k = keys(5, 1);
    let reg = Registry::in_memory(opts(signer_set(&k, 3, "s"))).unwrap();
    let id = proposed(&reg, vec![region("eu")], &k, "s", &[0, 1]);
    assert!(matches!(
        reg.commit(&id),
        Err(RegistryError::QuorumNotMet { have: 2, need: 3 })
    ));
    let p = reg.proposal(&id).unwrap();
    reg.approve(&id, approve(&k[4], "s4", 1, &p.payload_b3))
        .unwrap();
    let (head, new) = reg.commit(&id).unwrap();
    assert!(new);
    assert_eq!(head.version, 1);
    // A retried commit returns the same head.
    let (again, new) = reg.commit(&id).unwrap();
    assert!(!new);
    assert_eq!(again, head);
}

#[test]
fn bad_approvals_are_refused_with_their_reason() {
    let k = keys(5, 2);
    let reg = Registry::in_memory(opts(signer_set(&k, 3, "s"))).unwrap();
    let p = reg.propose(payload(&reg, vec![region("eu")])).unwrap();
    // Outsider key under a member's id: bad signature.
    let outsider = keys(1, 99);
    assert!(matches!(
        reg.approve(&p.id, approve(&outsider[0], "s0", 1, &p.payload_b3)),
        Err(RegistryError::BadSignature(_))
    ));
    // Unknown id.
    assert!(matches!(
        reg.approve(&p.id, approve(&outsider[0], "mallory", 1, &p.payload_b3)),
        Err(RegistryError::UnknownSigner(_))
    ));
    // Signed for another version: replay refused.
    assert!(matches!(
        reg.approve(&p.id, approve(&k[0], "s0", 2, &p.payload_b3)),
        Err(RegistryError::BadSignature(_))
    ));
    // Signed for another payload (tampered after approval): refused.
    let other = format!("b3:{}", "1".repeat(64));
    assert!(matches!(
        reg.approve(&p.id, approve(&k[0], "s0", 1, &other)),
        Err(RegistryError::BadSignature(_))
    ));
    reg.approve(&p.id, approve(&k[0], "s0", 1, &p.payload_b3))
        .unwrap();
    assert!(matches!(
        reg.approve(&p.id, approve(&k[0], "s0", 1, &p.payload_b3)),
        Err(RegistryError::DuplicateApproval(_))
    ));
}

#[test]
fn two_proposals_for_one_version_exactly_one_commits() {
    let k = keys(3, 3);
    let reg = Registry::in_memory(opts(signer_set(&k, 2, "s"))).unwrap();
    let a = proposed(&reg, vec![region("a")], &k, "s", &[0, 1]);
    let b = proposed(&reg, vec![region("b")], &k, "s", &[1, 2]);
    reg.commit(&a).unwrap();
    assert!(matches!(
        reg.commit(&b),
        Err(RegistryError::ChainMismatch { head: 1, .. })
    ));
    assert_eq!(reg.snapshot().head.version, 1);
}

#[test]
fn a_rotated_signer_set_is_in_force_from_the_next_version() {
    let k = keys(3, 4);
    let newcomer = keys(1, 5);
    let reg = Registry::in_memory(opts(signer_set(&k, 2, "s"))).unwrap();
    // New set: s1, s2 and n0; s0 is removed. m = 2.
    let next = SignerSet {
        m: 2,
        signers: vec![
            signer_set(&k, 2, "s").signers[1].clone(),
            signer_set(&k, 2, "s").signers[2].clone(),
            signer_set(&newcomer, 1, "n").signers[0].clone(),
        ],
    };
    let id = proposed(&reg, vec![Item::SignerSet(next)], &k, "s", &[0, 1]);
    reg.commit(&id).unwrap();
    assert_eq!(reg.snapshot().signers.signers.len(), 3);

    // The removed key no longer counts; the new one does.
    let p = reg.propose(payload(&reg, vec![region("x")])).unwrap();
    assert!(matches!(
        reg.approve(&p.id, approve(&k[0], "s0", 2, &p.payload_b3)),
        Err(RegistryError::UnknownSigner(_))
    ));
    reg.approve(&p.id, approve(&newcomer[0], "n0", 2, &p.payload_b3))
        .unwrap();
    reg.approve(&p.id, approve(&k[2], "s2", 2, &p.payload_b3))
        .unwrap();
    assert_eq!(reg.commit(&p.id).unwrap().0.version, 2);
}

#[test]
fn head_and_signers_survive_a_restart_and_a_backup_restores_verified() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(3, 6);
    let genesis = signer_set(&k, 2, "s");
    let path = dir.path().join("r.redb");
    let head = {
        let reg = Registry::open(&path, opts(genesis.clone())).unwrap();
        for i in 0..5 {
            let id = proposed(&reg, vec![region(&format!("r{i}"))], &k, "s", &[0, 2]);
            reg.commit(&id).unwrap();
        }
        reg.snapshot().head.clone()
    };
    let reg = Registry::open(&path, opts(genesis.clone())).unwrap();
    assert_eq!(reg.snapshot().head, head);

    let mut backup = Vec::new();
    assert_eq!(reg.backup(&mut backup).unwrap(), 5);
    let fresh = Registry::in_memory(opts(genesis.clone())).unwrap();
    assert_eq!(fresh.restore(&mut backup.as_slice()).unwrap(), head);

    // A backup with a tampered payload is refused at that version.
    let text = String::from_utf8(backup).unwrap();
    let tampered = text.replacen("region r3", "region rX", 1);
    let fresh = Registry::in_memory(opts(genesis)).unwrap();
    assert!(matches!(
        fresh.restore(&mut tampered.as_bytes()),
        Err(RegistryError::Invalid(_))
    ));
    assert_eq!(fresh.snapshot().head.version, 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever mix of valid, forged, outsider and repeated approvals a
    /// proposal collects, it commits exactly when at least M distinct
    /// members signed validly.
    #[test]
    fn never_commits_without_m_valid_distinct_signatures(
        n in 1usize..=16,
        m_frac in 0.0f64..1.0,
        picks in proptest::collection::vec((0usize..16, 0u8..4), 0..40),
    ) {
        let m = 1 + ((n as f64 - 1.0) * m_frac) as u32;
        let k = keys(n, 8);
        let reg = Registry::in_memory(opts(signer_set(&k, m, "s"))).unwrap();
        let p = reg.propose(payload(&reg, vec![region("p")])).unwrap();
        let outsider = keys(1, 9);
        let mut valid = std::collections::BTreeSet::new();
        for (who, how) in picks {
            let who = who % n;
            let id = format!("s{who}");
            let a = match how {
                0 => approve(&k[who], &id, 1, &p.payload_b3),             // valid
                1 => approve(&outsider[0], &id, 1, &p.payload_b3),        // forged
                2 => approve(&k[who], &id, 2, &p.payload_b3),             // replay
                _ => approve(&k[who], "outsider", 1, &p.payload_b3),      // unknown id
            };
            let ok = reg.approve(&p.id, a).is_ok();
            prop_assert_eq!(ok, how == 0 && !valid.contains(&who));
            if ok {
                valid.insert(who);
            }
        }
        let committed = reg.commit(&p.id).is_ok();
        prop_assert_eq!(committed, valid.len() >= m as usize);
        prop_assert_eq!(reg.snapshot().head.version, u64::from(committed));
    }
}
