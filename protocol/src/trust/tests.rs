//! The trust module driven by hand: the tuf-conformance root-rotation matrix (each case by
//! name), the chain rules (duplicate key ids, skipped versions, rollback), expiry and the time
//! floor, head thresholds and epochs, node certificates and admission.

use ed25519_dalek::SigningKey;

use super::*;
use crate::head::HeadError;
use crate::head::tests::{head, key};

const DAY: u64 = 24 * 3600 * 1000;
const T0: u64 = 1_800_000_000_000;

fn pk(i: u64) -> PublicKey {
    PublicKey::from(&key(i).verifying_key())
}

fn role(keys: &[u64], threshold: u32) -> Role {
    Role::new(keys.iter().map(|&i| pk(i)).collect(), threshold)
}

/// Keys 1..=99 are root keys in these cases; 100+ release keys; 200 the enroll key.
fn root(version: u64, root_keys: &[u64], threshold: u32) -> Root {
    Root {
        fleet: "test".into(),
        version,
        epoch: 1,
        issued_ms: T0 + version,
        expires_ms: T0 + 365 * DAY,
        roles: Roles {
            root: role(root_keys, threshold),
            release: role(&[101], 1),
            nodes: role(&[200], 1),
        },
        revoked: Vec::new(),
    }
}

fn signed(r: Root, signers: &[u64]) -> SignedRoot {
    let mut s = SignedRoot {
        root: r,
        signatures: Vec::new(),
    };
    for &i in signers {
        s.add_signature(&key(i));
    }
    s
}

/// Trust anchored at a v1 root over `keys` with `threshold`, signed by `signers`.
fn anchored(keys: &[u64], threshold: u32, signers: &[u64]) -> Trust {
    let mut t = Trust::with_root(signed(root(1, keys, threshold), signers)).expect("v1 verifies");
    t.set_now(T0);
    t
}

/// Applies `next` and returns the version trusted afterwards and the error, if any.
fn apply(t: &mut Trust, next: SignedRoot) -> (u64, Option<RootError>) {
    let (_, err) = t.update([next]);
    (t.version(), err)
}

// --- tuf-conformance: root rotation -----------------------------------------------------

#[test]
fn rotation_1_of_1_key() {
    let mut t = anchored(&[1], 1, &[1]);
    let (v, err) = apply(&mut t, signed(root(2, &[2], 1), &[1, 2]));
    assert_eq!((v, err), (2, None));
    assert_eq!(t.current().roles.root, role(&[2], 1));
}

#[test]
fn rotation_with_unused_signatures() {
    // Signatures by keys in no role are ignored, neither counted nor refused.
    let mut t = anchored(&[1], 1, &[1, 7, 8]);
    let (v, err) = apply(&mut t, signed(root(2, &[2], 1), &[9, 1, 2, 10]));
    assert_eq!((v, err), (2, None));
}

#[test]
fn rotation_3_of_5_with_different_key_combinations() {
    let keys = [1, 2, 3, 4, 5];
    let mut t = anchored(&keys, 3, &[1, 2, 3]);
    for (v, signers) in [
        (2, [1, 2, 3]),
        (3, [3, 4, 5]),
        (4, [1, 3, 5]),
        (5, [2, 4, 5]),
    ] {
        let (got, err) = apply(&mut t, signed(root(v, &keys, 3), &signers));
        assert_eq!((got, err), (v, None), "version {v} signed by {signers:?}");
    }
}

#[test]
fn rotation_3_of_5_with_one_key_rotated() {
    let mut t = anchored(&[1, 2, 3, 4, 5], 3, &[1, 2, 3]);
    // Key 5 replaced by 6: 3 old (1, 2, 3) and 3 new (1, 2, 6 are in the new role).
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3, 4, 6], 3), &[1, 2, 3, 6]));
    assert_eq!((v, err), (2, None));
    // The next version needs the new set: 5 no longer counts.
    let (v, err) = apply(&mut t, signed(root(3, &[1, 2, 3, 4, 6], 3), &[1, 2, 5]));
    assert_eq!(v, 2);
    assert!(
        matches!(err, Some(RootError::Threshold { have: 2, .. })),
        "{err:?}"
    );
}

#[test]
fn rotation_with_an_intermediate_step() {
    let mut t = anchored(&[1, 2, 3], 2, &[1, 2]);
    let v2 = signed(root(2, &[1, 4, 5], 2), &[1, 2, 4, 5]);
    let v3 = signed(root(3, &[4, 5, 6], 2), &[4, 5, 6]);
    let (adopted, err) = t.update([v3, v2]);
    assert_eq!(err, None);
    assert_eq!(adopted.len(), 2);
    assert_eq!(t.version(), 3);
}

#[test]
fn all_keys_rotated_with_an_intermediate_step() {
    let mut t = anchored(&[1, 2, 3], 2, &[1, 2, 3]);
    let v2 = signed(root(2, &[4, 5, 6], 2), &[1, 2, 4, 5]);
    let v3 = signed(root(3, &[7, 8, 9], 2), &[4, 6, 7, 9]);
    let (_, err) = t.update([v2, v3]);
    assert_eq!((t.version(), err), (3, None));
    // Jumping from v1's keys straight to v3's would not have verified.
    let mut fresh = anchored(&[1, 2, 3], 2, &[1, 2, 3]);
    let direct = signed(root(2, &[7, 8, 9], 2), &[7, 8, 9]);
    let (v, err) = apply(&mut fresh, direct);
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "previous",
            have: 0,
            ..
        })
    ));
}

#[test]
fn threshold_1_of_3_to_2_of_3() {
    let mut t = anchored(&[1, 2, 3], 1, &[1]);
    // The new root needs 1 old (any) and 2 of its own.
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3], 2), &[1]));
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "its own",
            have: 1,
            need: 2,
            ..
        })
    ));
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3], 2), &[1, 3]));
    assert_eq!((v, err), (2, None));
}

#[test]
fn threshold_2_of_3_to_1_of_3() {
    let mut t = anchored(&[1, 2, 3], 2, &[1, 2]);
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3], 1), &[2]));
    assert_eq!(v, 1, "one signature does not meet the old threshold");
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "previous",
            have: 1,
            need: 2,
            ..
        })
    ));
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3], 1), &[2, 3]));
    assert_eq!((v, err), (2, None));
    // From now on one key is enough.
    let (v, err) = apply(&mut t, signed(root(3, &[1, 2, 3], 1), &[3]));
    assert_eq!((v, err), (3, None));
}

#[test]
fn threshold_1_of_2_to_2_of_2() {
    let mut t = anchored(&[1, 2], 1, &[1]);
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2], 2), &[1]));
    assert_eq!(v, 1);
    assert!(err.is_some());
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2], 2), &[1, 2]));
    assert_eq!((v, err), (2, None));
}

#[test]
fn rotation_not_signed_with_the_old_key_fails() {
    let mut t = anchored(&[1], 1, &[1]);
    let (v, err) = apply(&mut t, signed(root(2, &[2], 1), &[2]));
    assert_eq!(v, 1);
    let err = err.expect("refused");
    assert!(matches!(
        err,
        RootError::Threshold {
            which: "previous",
            have: 0,
            ..
        }
    ));
    assert!(err.to_string().contains("--root-key"), "{err}");
}

#[test]
fn rotation_not_signed_with_the_new_key_fails() {
    let mut t = anchored(&[1], 1, &[1]);
    let (v, err) = apply(&mut t, signed(root(2, &[2], 1), &[1]));
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "its own",
            have: 0,
            ..
        })
    ));
}

#[test]
fn rotation_3_of_5_missing_3_new_signatures_fails() {
    let mut t = anchored(&[1, 2, 3, 4, 5], 3, &[1, 2, 3]);
    // New role 6..=10; signed by 3 old and only 2 new.
    let (v, err) = apply(
        &mut t,
        signed(root(2, &[6, 7, 8, 9, 10], 3), &[1, 2, 3, 6, 7]),
    );
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "its own",
            have: 2,
            need: 3,
            ..
        })
    ));
}

#[test]
fn rotation_3_of_5_missing_3_old_signatures_fails() {
    let mut t = anchored(&[1, 2, 3, 4, 5], 3, &[1, 2, 3]);
    let (v, err) = apply(
        &mut t,
        signed(root(2, &[6, 7, 8, 9, 10], 3), &[1, 2, 6, 7, 8]),
    );
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "previous",
            have: 2,
            need: 3,
            ..
        })
    ));
}

#[test]
fn rotation_new_threshold_not_reached_fails() {
    let mut t = anchored(&[1, 2, 3], 1, &[1]);
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3], 3), &[1, 2]));
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "its own",
            have: 2,
            need: 3,
            ..
        })
    ));
}

#[test]
fn rotation_old_threshold_not_reached_fails() {
    let mut t = anchored(&[1, 2, 3], 3, &[1, 2, 3]);
    let (v, err) = apply(&mut t, signed(root(2, &[1, 2, 3], 1), &[1, 2]));
    assert_eq!(v, 1);
    assert!(matches!(
        err,
        Some(RootError::Threshold {
            which: "previous",
            have: 2,
            need: 3,
            ..
        })
    ));
}

#[test]
fn on_failure_the_trusted_root_stays_at_the_last_valid_version() {
    let mut t = anchored(&[1], 1, &[1]);
    let v2 = signed(root(2, &[2], 1), &[1, 2]);
    let v3_bad = signed(root(3, &[3], 1), &[3]); // not signed by v2's key
    let v4 = signed(root(4, &[3], 1), &[3]);
    let (adopted, err) = t.update([v2, v3_bad, v4]);
    assert_eq!(adopted.len(), 1);
    assert!(err.is_some());
    assert_eq!(t.version(), 2);
    assert_eq!(t.chain().len(), 2);
}

// --- the chain's other rules ---------------------------------------------------------------

#[test]
fn a_duplicate_key_id_is_counted_once() {
    let mut t = anchored(&[1, 2, 3], 2, &[1, 2]);
    let mut twice = signed(root(2, &[1, 2, 3], 2), &[1]);
    let dup = twice.signatures[0].clone();
    twice.signatures.push(dup);
    let (v, err) = apply(&mut t, twice);
    assert_eq!(v, 1);
    assert!(
        matches!(
            err,
            Some(RootError::Threshold {
                have: 1,
                need: 2,
                ..
            })
        ),
        "{err:?}"
    );
    // A role that lists a key twice is malformed.
    let bad = signed(root(2, &[1, 1, 2], 2), &[1, 2]);
    let (_, err) = apply(&mut t, bad);
    assert!(matches!(err, Some(RootError::Shape(_))), "{err:?}");
}

#[test]
fn a_skipped_version_is_refused() {
    let mut t = anchored(&[1], 1, &[1]);
    let (v, err) = apply(&mut t, signed(root(3, &[1], 1), &[1]));
    assert_eq!(v, 1);
    assert_eq!(err, Some(RootError::NotNext { current: 1, got: 3 }));
}

#[test]
fn a_version_rollback_is_ignored_and_changes_nothing() {
    let mut t = anchored(&[1], 1, &[1]);
    let v2 = signed(root(2, &[1], 1), &[1]);
    assert_eq!(apply(&mut t, v2.clone()), (2, None));
    // An older (even validly signed) version and the same version again change nothing.
    let (adopted, err) = t.update([signed(root(1, &[1], 1), &[1]), v2]);
    assert!(adopted.is_empty());
    assert_eq!((t.version(), err), (2, None));
}

#[test]
fn a_tampered_root_signature_by_a_role_key_is_refused() {
    let mut t = anchored(&[1, 2], 1, &[1]);
    let mut s = signed(root(2, &[1, 2], 1), &[1, 2]);
    s.root.expires_ms += 1; // altered after signing
    let (v, err) = apply(&mut t, s);
    assert_eq!(v, 1);
    assert!(
        matches!(err, Some(RootError::BadSignature { .. })),
        "{err:?}"
    );
}

#[test]
fn an_anchor_must_be_signed_by_its_own_threshold() {
    let err = Trust::with_root(signed(root(1, &[1, 2, 3], 2), &[1])).unwrap_err();
    assert!(matches!(
        err,
        RootError::Threshold {
            have: 1,
            need: 2,
            ..
        }
    ));
    let err = Trust::with_root(signed(root(1, &[1], 2), &[1])).unwrap_err();
    assert!(
        matches!(err, RootError::Shape(_)),
        "threshold above the key count"
    );
}

#[test]
fn the_epoch_follows_release_role_changes() {
    let mut t = anchored(&[1], 1, &[1]);
    // Same release role: the epoch stays; claiming a new one is refused.
    let mut same = root(2, &[1], 1);
    same.epoch = 2;
    let (_, err) = apply(&mut t, signed(same, &[1]));
    assert_eq!(
        err,
        Some(RootError::Epoch {
            version: 2,
            got: 2,
            want: 1
        })
    );
    // Rotating a release key starts epoch = version.
    let mut rotated = root(2, &[1], 1);
    rotated.roles.release = role(&[102], 1);
    rotated.fix_epoch(t.current());
    assert_eq!(rotated.epoch, 2);
    assert_eq!(apply(&mut t, signed(rotated, &[1])), (2, None));
    assert_eq!(t.epoch(), 2);
}

#[test]
fn root_json_round_trips_with_hex_keys() {
    let s = signed(root(1, &[1, 2], 2), &[1, 2]);
    let json = serde_json::to_string_pretty(&s).unwrap();
    assert!(
        json.contains(&pk(1).to_string()),
        "keys are hex in JSON: {json}"
    );
    let back: SignedRoot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    back.check_self_signed().unwrap();
    // And postcard (wire, disk) round-trips as well.
    let wire: SignedRoot = postcard::from_bytes(&postcard::to_stdvec(&s).unwrap()).unwrap();
    assert_eq!(wire, s);
}

// --- expiry and the time floor ------------------------------------------------------------

fn release_head(seq: u64, epoch: u64, signers: &[u64], issued: u64) -> SignedHead {
    let mut h = head("a", seq, b"content");
    h.epoch = epoch;
    h.issued_at_ms = issued;
    let mut sh = SignedHead {
        head: h,
        signatures: Vec::new(),
    };
    for &i in signers {
        sh.add_signature(&key(i));
    }
    sh
}

#[test]
fn an_expired_root_refuses_heads() {
    let mut t = anchored(&[1], 1, &[1]);
    let expires = t.current().expires_ms;
    let sh = release_head(1, 1, &[101], T0);
    t.verify_head(&sh).unwrap();
    t.set_now(expires - 31 * DAY);
    assert!(!t.status().expires_soon);
    t.set_now(expires - DAY);
    assert!(t.status().expires_soon, "warned a day ahead");
    t.verify_head(&sh).unwrap();
    t.set_now(expires);
    assert!(t.expired() && t.status().expired);
    let err = t.verify_head(&sh).unwrap_err();
    assert!(
        matches!(err, HeadError::RootExpired { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("keeps serving"), "{err}");
    // A stored head still verifies from disk: fail-static.
    t.verify_stored_head(&sh).unwrap();
    // A newer root with a later expiry lifts it.
    let mut v2 = root(2, &[1], 1);
    v2.expires_ms = expires + 365 * DAY;
    assert_eq!(apply(&mut t, signed(v2, &[1])), (2, None));
    t.verify_head(&sh).unwrap();
}

#[test]
fn an_expired_root_stays_expired_when_the_clock_is_turned_back() {
    let mut t = anchored(&[1], 1, &[1]);
    let expires = t.current().expires_ms;
    // Signed metadata from after expiry was seen (a head signed then).
    t.observe(expires + 10);
    t.set_now(expires - 100 * DAY);
    assert!(t.expired(), "the floor keeps it expired");
    assert_eq!(t.effective_now(), expires + 10);
    // The floor is only raised by signed time, never lowered.
    t.observe(T0);
    assert_eq!(t.floor_ms(), expires + 10);
}

#[test]
fn a_legacy_trust_never_expires_and_takes_no_root() {
    let mut t = Trust::legacy("test".into(), vec![pk(101)]);
    t.set_now(u64::MAX - 1);
    assert!(!t.expired());
    t.verify_head(&release_head(1, 0, &[101], 1)).unwrap();
    let (_, err) = t.update([signed(root(1, &[1], 1), &[1])]);
    assert_eq!(err, Some(RootError::NoRoot));
    assert!(t.is_legacy());
}

// --- heads: thresholds and epochs -----------------------------------------------------------

fn release_2_of_3() -> Trust {
    let mut r = root(1, &[1], 1);
    r.roles.release = role(&[101, 102, 103], 2);
    let mut t = Trust::with_root(signed(r, &[1])).unwrap();
    t.set_now(T0);
    t
}

#[test]
fn a_head_needs_the_release_threshold_of_distinct_keys() {
    let t = release_2_of_3();
    let one = release_head(1, 1, &[101], T0);
    let err = t.verify_head(&one).unwrap_err();
    assert_eq!(err, HeadError::BelowThreshold { have: 1, need: 2 });
    assert!(err.to_string().contains("fleetcast sign"), "{err}");
    // The same key twice is one key.
    let mut dup = one.clone();
    dup.signatures.push(dup.signatures[0].clone());
    assert_eq!(
        t.verify_head(&dup),
        Err(HeadError::BelowThreshold { have: 1, need: 2 })
    );
    t.verify_head(&release_head(1, 1, &[101, 103], T0)).unwrap();
    // Signatures by strangers do not help, and do not hurt.
    let err = t
        .verify_head(&release_head(1, 1, &[101, 7], T0))
        .unwrap_err();
    assert_eq!(err, HeadError::BelowThreshold { have: 1, need: 2 });
    t.verify_head(&release_head(1, 1, &[7, 101, 102], T0))
        .unwrap();
    // Only strangers: untrusted.
    assert!(matches!(
        t.verify_head(&release_head(1, 1, &[7], T0)),
        Err(HeadError::Untrusted { .. })
    ));
}

#[test]
fn a_head_of_an_older_epoch_is_refused_however_high_its_seq() {
    let mut t = release_2_of_3();
    let fast_forwarded = release_head(u64::MAX - 1, 1, &[101, 102], T0);
    t.verify_head(&fast_forwarded).unwrap();
    // Key 101 leaked: rotate it out; the release role changed, so epoch 2 starts.
    let mut v2 = t.current().next(T0 + 1, T0 + 365 * DAY);
    v2.roles.release = role(&[104, 102, 103], 2);
    v2.fix_epoch(t.current());
    assert_eq!(apply(&mut t, signed(v2, &[1])), (2, None));
    let err = t.verify_head(&fast_forwarded).unwrap_err();
    assert!(
        matches!(
            err,
            HeadError::OldEpoch {
                epoch: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    // Even signed by keys that stayed in the role: the epoch is signed into the head.
    let replay = release_head(u64::MAX, 1, &[102, 103], T0);
    assert!(matches!(
        t.verify_head(&replay),
        Err(HeadError::OldEpoch { .. })
    ));
    // The removed key cannot sign the new epoch.
    let with_removed = release_head(1, 2, &[101, 102], T0);
    assert_eq!(
        t.verify_head(&with_removed),
        Err(HeadError::BelowThreshold { have: 1, need: 2 })
    );
    t.verify_head(&release_head(1, 2, &[104, 102], T0)).unwrap();
    // The old head still verifies from disk under its own epoch's root (fail-static)…
    t.verify_stored_head(&fast_forwarded).unwrap();
    // …and a head claiming an epoch no root has started is refused with what to do.
    let err = t
        .verify_head(&release_head(1, 3, &[104, 102], T0))
        .unwrap_err();
    assert!(err.to_string().contains("fleetcast fleet push"), "{err}");
}

// --- node certificates and admission ----------------------------------------------------------

fn node(i: u64) -> NodeId {
    NodeId(key(i).verifying_key().to_bytes())
}

fn cert(n: NodeId, signer: &SigningKey, expires: u64) -> SignedNodeCert {
    NodeCert {
        fleet: "test".into(),
        node: n,
        issued_ms: T0,
        expires_ms: expires,
    }
    .sign(signer)
}

#[test]
fn an_enrolled_node_is_admitted_and_others_are_refused_with_a_reason() {
    let t = anchored(&[1], 1, &[1]);
    let enroll = key(200);
    let n = node(300);
    let good = Hello::Node {
        cert: Some(cert(n, &enroll, T0 + DAY)),
    };
    assert_eq!(t.admit(Admission::Enrolled, n, &good), Ok(PeerRole::Node));

    let none = Hello::Node { cert: None };
    let err = t.admit(Admission::Enrolled, n, &none).unwrap_err();
    assert_eq!(err.kind(), "not-enrolled");
    assert!(err.to_string().contains("fleetcast node enroll"), "{err}");
    assert_eq!(t.admit(Admission::Open, n, &none), Ok(PeerRole::Node));

    // Someone else's certificate: bound to one node id.
    let stolen = t.admit(Admission::Enrolled, node(301), &good).unwrap_err();
    assert_eq!(stolen.kind(), "wrong-cert");
    // Signed by a key outside the nodes role.
    let forged = Hello::Node {
        cert: Some(cert(n, &key(7), T0 + DAY)),
    };
    assert_eq!(
        t.admit(Admission::Enrolled, n, &forged).unwrap_err().kind(),
        "cert-untrusted"
    );
    // A certificate that is there must be good even in an open fleet.
    assert!(t.admit(Admission::Open, n, &forged).is_err());
    // Expired.
    let old = Hello::Node {
        cert: Some(cert(n, &enroll, T0 - 1)),
    };
    assert_eq!(
        t.admit(Admission::Enrolled, n, &old).unwrap_err().kind(),
        "cert-expired"
    );
    // Tampered after signing.
    let Hello::Node { cert: Some(mut c) } = good.clone() else {
        unreachable!()
    };
    c.cert.expires_ms += DAY;
    let err = t
        .admit(Admission::Enrolled, n, &Hello::Node { cert: Some(c) })
        .unwrap_err();
    assert_eq!(err.kind(), "cert-untrusted");
}

#[test]
fn operators_must_hold_a_release_key_in_an_enrolled_fleet() {
    let t = anchored(&[1], 1, &[1]);
    let op = NodeId(key(101).verifying_key().to_bytes());
    assert_eq!(
        t.admit(Admission::Enrolled, op, &Hello::Operator),
        Ok(PeerRole::Operator)
    );
    let stranger = node(55);
    let err = t
        .admit(Admission::Enrolled, stranger, &Hello::Operator)
        .unwrap_err();
    assert_eq!(err.kind(), "not-operator");
    assert!(err.to_string().contains("--key"), "{err}");
    assert_eq!(
        t.admit(Admission::Open, stranger, &Hello::Operator),
        Ok(PeerRole::Operator)
    );
}

#[test]
fn a_revoked_node_is_refused_whatever_its_certificate_says() {
    let mut t = anchored(&[1], 1, &[1]);
    let n = node(300);
    let hello = Hello::Node {
        cert: Some(cert(n, &key(200), T0 + DAY)),
    };
    assert!(t.admit(Admission::Enrolled, n, &hello).is_ok());
    let mut v2 = t.current().next(T0 + 5, T0 + 365 * DAY);
    v2.revoked.push(n);
    v2.fix_epoch(t.current());
    assert_eq!(v2.epoch, 1, "revoking a node does not start an epoch");
    assert_eq!(apply(&mut t, signed(v2, &[1])), (2, None));
    let err = t.admit(Admission::Enrolled, n, &hello).unwrap_err();
    assert_eq!(err.kind(), "revoked");
    assert!(err.to_string().contains("root version 2"), "{err}");
    assert!(
        t.admit(Admission::Open, n, &Hello::Node { cert: None })
            .is_err()
    );
}

#[test]
fn status_names_version_epoch_and_expiry() {
    let t = release_2_of_3();
    let s = t.status();
    assert_eq!(
        (s.version, s.epoch, s.release_keys, s.release_threshold),
        (1, 1, 3, 2)
    );
    assert!(!s.expired);
}
