//! The trust shell against real stores and files in temporary directories.

use ed25519_dalek::SigningKey;
use fleetcast_protocol::PublicKey;
use fleetcast_protocol::trust::{NodeCert, Role, Roles, Root};

use super::*;

const DAY: u64 = 24 * 3600 * 1000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn pk(k: &SigningKey) -> PublicKey {
    PublicKey::from(&k.verifying_key())
}

/// Version 1 of fleet `prod`: key 1 is root, release and nodes key; issued now, expires in a
/// year.
fn root_v1() -> Root {
    let now = crate::supervisor::unix_ms();
    let r = Role::new(vec![pk(&key(1))], 1);
    Root {
        fleet: "prod".into(),
        version: 1,
        epoch: 1,
        issued_ms: now - 1000,
        expires_ms: now + 365 * DAY,
        roles: Roles {
            root: r.clone(),
            release: r.clone(),
            nodes: r,
        },
        revoked: Vec::new(),
    }
}

/// The root after `prev` (same roles), signed by key 1.
fn next(prev: &Root, revoked: Vec<NodeId>) -> Root {
    let mut r = prev.next(prev.issued_ms + 1, prev.expires_ms);
    r.revoked = revoked;
    r.fix_epoch(prev);
    r
}

struct Env {
    dir: tempfile::TempDir,
    store: Store,
    cfg: AgentConfig,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    let mut cfg = AgentConfig::with_data_dir(dir.path().join("data"));
    cfg.root = Some(dir.path().join("root.json"));
    Env { dir, store, cfg }
}

impl Env {
    fn write_root(&self, root: &SignedRoot) {
        std::fs::write(
            self.cfg.root.as_ref().unwrap(),
            serde_json::to_vec_pretty(root).unwrap(),
        )
        .unwrap();
    }

    fn write_cert(&mut self, cert: &SignedNodeCert) {
        let p = self.dir.path().join("node.cert");
        std::fs::write(&p, serde_json::to_vec(cert).unwrap()).unwrap();
        self.cfg.node_cert = Some(p);
    }
}

#[test]
fn a_root_file_anchors_the_trust_when_nothing_is_stored() {
    let e = env();
    let v1 = root_v1().sign(&key(1));
    e.write_root(&v1);
    let loaded = load_trust(&e.cfg, &e.store).unwrap();
    assert_eq!(loaded.trust.version(), 1);
    assert_eq!(loaded.trust.fleet(), "prod");
    assert_eq!(loaded.new_roots, vec![v1.clone()], "to be stored");
    assert!(!loaded.trust.is_legacy());
}

#[test]
fn the_stored_chain_comes_first_then_a_newer_file_and_an_older_file_is_ignored() {
    let e = env();
    let v1 = root_v1().sign(&key(1));
    let v2 = next(&v1.root, vec![]).sign(&key(1));
    let v3 = next(&v2.root, vec![NodeId([5; 32])]).sign(&key(1));
    e.store.put_roots(&[v1.clone(), v2.clone()], 42).unwrap();

    e.write_root(&v1);
    let loaded = load_trust(&e.cfg, &e.store).unwrap();
    assert_eq!(
        loaded.trust.version(),
        2,
        "an older file does not move the chain back"
    );
    assert!(loaded.new_roots.is_empty());
    assert!(loaded.trust.floor_ms() >= v2.root.issued_ms);

    e.write_root(&v3);
    let loaded = load_trust(&e.cfg, &e.store).unwrap();
    assert_eq!(loaded.trust.version(), 3);
    assert_eq!(loaded.new_roots, vec![v3]);
    assert!(loaded.trust.current().is_revoked(&NodeId([5; 32])));
}

#[test]
fn a_stored_floor_is_never_lost() {
    let e = env();
    let v1 = root_v1().sign(&key(1));
    let far = v1.root.expires_ms + 1;
    e.store.put_roots(std::slice::from_ref(&v1), far).unwrap();
    e.write_root(&v1);
    let loaded = load_trust(&e.cfg, &e.store).unwrap();
    assert_eq!(loaded.floor_ms, far);
    assert!(
        loaded.trust.expired(),
        "a clock set back does not revive an expired root"
    );
}

#[test]
fn a_file_root_that_does_not_follow_the_chain_is_an_error_naming_the_file() {
    let e = env();
    let v1 = root_v1().sign(&key(1));
    e.store.put_roots(std::slice::from_ref(&v1), 0).unwrap();
    // Version 2 signed only by a key root version 1 does not hold.
    let mut v2 = next(&v1.root, vec![]);
    v2.roles.root = Role::new(vec![pk(&key(2))], 1);
    e.write_root(&v2.sign(&key(2)));
    let err = load_trust(&e.cfg, &e.store).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TrustError::DoesNotChain { .. }), "{text}");
    assert!(text.contains("root.json"), "{text}");
    assert!(
        text.contains("version 2") && text.contains("version 1"),
        "{text}"
    );
    // A version that skips one is refused the same way.
    let v3 = next(&next(&v1.root, vec![]), vec![]).sign(&key(1));
    e.write_root(&v3);
    let text = load_trust(&e.cfg, &e.store).unwrap_err().to_string();
    assert!(text.contains("one version at a time"), "{text}");
}

#[test]
fn a_root_file_that_is_missing_damaged_or_unsigned_is_an_error_naming_it() {
    let e = env();
    let text = load_trust(&e.cfg, &e.store).unwrap_err().to_string();
    assert!(
        text.contains("root.json") && text.contains("--root"),
        "{text}"
    );
    std::fs::write(e.cfg.root.as_ref().unwrap(), b"{\"root\": 1}").unwrap();
    let text = load_trust(&e.cfg, &e.store).unwrap_err().to_string();
    assert!(text.contains("is not a fleet root"), "{text}");
    // Signed by a key that is not one of its root keys.
    e.write_root(&root_v1().sign(&key(9)));
    let err = load_trust(&e.cfg, &e.store).unwrap_err();
    assert!(matches!(err, TrustError::BadRoot { .. }), "{err}");
    assert!(e.store.roots().unwrap().0.is_empty(), "nothing stored");
}

#[test]
fn a_stored_chain_needs_a_root_in_the_config_and_the_same_fleet() {
    let mut e = env();
    let v1 = root_v1().sign(&key(1));
    e.store.put_roots(std::slice::from_ref(&v1), 0).unwrap();
    e.write_root(&v1);
    e.cfg.fleet = "staging".into();
    let text = load_trust(&e.cfg, &e.store).unwrap_err().to_string();
    assert!(
        text.contains("\"staging\"") && text.contains("\"prod\""),
        "{text}"
    );
    e.cfg.fleet = "prod".into();
    load_trust(&e.cfg, &e.store).unwrap();
    e.cfg.root = None;
    e.cfg.trusted_keys = vec!["ops.pub".into()];
    let text = load_trust(&e.cfg, &e.store).unwrap_err().to_string();
    assert!(text.contains("set root"), "{text}");
}

#[test]
fn without_a_root_the_trusted_keys_are_the_implicit_root() {
    let mut e = env();
    let (pubfile, vk) = fleetcast_net::keys::generate(&e.dir.path().join("ops")).unwrap();
    e.cfg.root = None;
    e.cfg.trusted_keys = vec![pubfile];
    let t = load_trust(&e.cfg, &e.store).unwrap().trust;
    assert!(t.is_legacy());
    assert_eq!(t.version(), 0);
    assert!(t.current().roles.release.contains(&PublicKey::from(&vk)));
    assert!(!t.expired());
}

fn cert(node: NodeId, expires_ms: u64, signer: &SigningKey) -> SignedNodeCert {
    NodeCert {
        fleet: "prod".into(),
        node,
        issued_ms: 0,
        expires_ms,
    }
    .sign(signer)
}

fn anchored(e: &Env) -> Trust {
    let v1 = root_v1().sign(&key(1));
    e.write_root(&v1);
    load_trust(&e.cfg, &e.store).unwrap().trust
}

#[test]
fn the_own_certificate_is_checked_at_start_with_what_to_do() {
    let mut e = env();
    let trust = anchored(&e);
    let me = NodeId([3; 32]);
    let later = crate::supervisor::unix_ms() + 90 * DAY;

    let err = load_node_cert(&e.cfg, &trust, me).unwrap_err().to_string();
    assert!(
        err.contains("fleetcast node enroll")
            && err.contains("node_cert")
            && err.contains(&me.to_string()),
        "{err}"
    );
    e.write_cert(&cert(NodeId([4; 32]), later, &key(1)));
    let err = load_node_cert(&e.cfg, &trust, me).unwrap_err().to_string();
    assert!(
        err.contains("node.cert") && err.contains("bound to one node id"),
        "{err}"
    );
    e.write_cert(&cert(me, 1000, &key(1)));
    let err = load_node_cert(&e.cfg, &trust, me).unwrap_err().to_string();
    assert!(
        err.contains("expired") && err.contains("enroll it again"),
        "{err}"
    );
    e.write_cert(&cert(me, later, &key(8)));
    let err = load_node_cert(&e.cfg, &trust, me).unwrap_err().to_string();
    assert!(err.contains("needs 1"), "{err}");
    let good = cert(me, later, &key(1));
    e.write_cert(&good);
    assert_eq!(load_node_cert(&e.cfg, &trust, me).unwrap(), Some(good));
    // Open admission does without one.
    e.cfg.node_cert = None;
    e.cfg.admission = Some(Admission::Open);
    assert_eq!(load_node_cert(&e.cfg, &trust, me).unwrap(), None);
}

#[test]
fn fleet_admission_judges_by_the_snapshot_and_counts_refusals_by_kind() {
    let e = env();
    let trust = anchored(&e);
    let metrics = Arc::new(MeshMetrics::default());
    let policy = FleetAdmission::new(trust.clone(), Admission::Enrolled, metrics.clone());
    let (a, b) = (NodeId([3; 32]), NodeId([4; 32]));
    let later = crate::supervisor::unix_ms() + 90 * DAY;
    let with_cert = |n| Hello::Node {
        cert: Some(cert(n, later, &key(1))),
    };
    assert_eq!(policy.admit(a, &with_cert(a)), Ok(PeerRole::Node));
    let err = policy.admit(b, &Hello::Node { cert: None }).unwrap_err();
    assert!(err.contains("fleetcast node enroll"), "{err}");
    // An operator must hold a release key: key 1 does, node id 4 does not.
    let op = NodeId(pk(&key(1)).0);
    assert_eq!(policy.admit(op, &Hello::Operator), Ok(PeerRole::Operator));
    assert!(policy.admit(b, &Hello::Operator).is_err());

    // A new root revokes node a: the same hello is refused once the snapshot moves.
    let mut t2 = trust.clone();
    let v2 = next(trust.current(), vec![a]).sign(&key(1));
    assert!(t2.update([v2]).1.is_none());
    policy.set_trust(t2);
    let err = policy.admit(a, &with_cert(a)).unwrap_err();
    assert!(err.contains("revoked"), "{err}");

    // Time passes beyond the certificate.
    let soon = cert(b, crate::supervisor::unix_ms() + 10_000, &key(1));
    let hello = Hello::Node { cert: Some(soon) };
    assert_eq!(policy.admit(b, &hello), Ok(PeerRole::Node));
    policy.set_now(crate::supervisor::unix_ms() + 20_000);
    assert!(policy.admit(b, &hello).unwrap_err().contains("expired"));

    let counted = metrics.snapshot().admission_refused;
    let want: std::collections::BTreeMap<&str, u64> = [
        ("not-enrolled", 1),
        ("not-operator", 1),
        ("revoked", 1),
        ("cert-expired", 1),
    ]
    .into();
    assert_eq!(counted, want);

    // Open admission takes a node without a certificate.
    let open = FleetAdmission::new(trust, Admission::Open, metrics);
    assert_eq!(
        open.admit(b, &Hello::Node { cert: None }),
        Ok(PeerRole::Node)
    );
}

#[test]
fn the_expiry_warning_is_said_at_the_first_check_and_whenever_it_changes() {
    let status = |expired, soon| TrustStatus {
        version: 4,
        expires_ms: 100 * DAY,
        now_ms: 90 * DAY,
        expired,
        expires_soon: soon,
        ..TrustStatus::default()
    };
    let mut w = ExpiryWatch::default();
    assert!(w.check(&status(false, true), None), "soon: said at start");
    assert!(!w.check(&status(false, true), None), "not again");
    assert!(w.check(&status(true, true), None), "expired: said");
    assert!(!w.check(&status(true, true), None));
    // A new root that is fine: nothing to warn about.
    assert!(!w.check(&status(false, false), None));

    let mut w = ExpiryWatch::default();
    assert!(
        !w.check(&status(false, false), None),
        "a fine root says nothing"
    );
    // No root (trusted_keys): never warns.
    let legacy = Trust::legacy("f".into(), vec![]).status();
    assert!(!ExpiryWatch::default().check(&legacy, None));
    // The own certificate: within 30 days, then expired.
    let mut w = ExpiryWatch::default();
    let fine = status(false, false);
    assert!(!w.check(&fine, Some(fine.now_ms + 60 * DAY)));
    assert!(w.check(&fine, Some(fine.now_ms + 10 * DAY)));
    assert!(!w.check(&fine, Some(fine.now_ms + 9 * DAY)));
    assert!(w.check(&fine, Some(fine.now_ms)));
}
