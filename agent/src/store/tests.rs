//! The store against real sled databases in temporary directories.

use super::*;

#[test]
fn a_store_of_another_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    // Reopening our own format is fine.
    drop(Store::open(dir.path()).unwrap());
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = format!("{:#}", Store::open(dir.path()).err().unwrap());
    assert!(
        err.contains("store format 1") && err.contains("move the data directory"),
        "{err}"
    );
}
use fleetcast_protocol::wire::HistoryEntry;
use fleetcast_protocol::{AppName, Head, HeadKind};

#[test]
fn a_store_held_by_another_agent_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(
        err.contains("is locked") && err.contains("--data-dir") && !err.contains("Os {"),
        "{err}"
    );
}

fn release(content: &[u8]) -> Release {
    Release::build(
        AppName::new("a").unwrap(),
        "1.0.0".parse().unwrap(),
        content,
        4096,
    )
    .unwrap()
}

#[test]
fn blobs_round_trip_and_damage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let r = release(&content);
    assert!(!s.has_blob(&r.digest).unwrap());
    s.put_blob(&r, &content).unwrap();
    assert!(s.has_blob(&r.digest).unwrap());
    assert_eq!(s.read_blob(&r).unwrap(), content);
    assert_eq!(
        s.read_chunk(&r.digest, 1).unwrap().unwrap(),
        &content[4096..8192]
    );
    assert_eq!(s.complete_blobs().unwrap(), vec![r.digest]);
    // Damage one chunk on disk: reads refuse it.
    s.blobs
        .insert(chunk_key(&r.digest, 2), &b"evil"[..])
        .unwrap();
    assert!(format!("{:#}", s.read_blob(&r).unwrap_err()).contains("damaged"));
    assert!(s.read_chunk(&r.digest, 2).is_err());
}

#[test]
fn chunks_are_served_from_a_reopened_store_and_still_verified() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let r = release(&content);
    Store::open(dir.path())
        .unwrap()
        .put_blob(&r, &content)
        .unwrap();
    let s = Store::open(dir.path()).unwrap();
    for _ in 0..2 {
        for i in 0..r.chunk_count() {
            let start = i as usize * 4096;
            let end = (start + 4096).min(content.len());
            assert_eq!(
                s.read_chunk(&r.digest, i).unwrap().unwrap(),
                &content[start..end]
            );
        }
    }
    assert_eq!(s.read_chunk(&r.digest, 99).unwrap(), None);
    assert_eq!(s.read_chunk(&Digest::of(b"other"), 0).unwrap(), None);
    s.blobs
        .insert(chunk_key(&r.digest, 0), &b"evil"[..])
        .unwrap();
    assert!(s.read_chunk(&r.digest, 0).is_err(), "still verified");
}

#[test]
fn temporary_store_without_flusher_is_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"hello".repeat(100);
    let r = release(&content);
    let opts = StoreOptions {
        flush_every_ms: None,
        temporary: true,
        ..StoreOptions::default()
    };
    let s = Store::open_with(dir.path(), opts).unwrap();
    s.put_blob(&r, &content).unwrap();
    s.flush().unwrap();
    assert_eq!(s.read_blob(&r).unwrap(), content);
    assert!(dir.path().join("store").exists());
    drop(s);
    // sled removes a temporary database when the last holder of its config drops, which
    // can be one of its background threads finishing just after the `Db`: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dir.path().join("store").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the temporary store was not removed"
        );
        std::thread::yield_now();
    }
}

#[test]
fn compiled_artifacts_are_checksummed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let d = Digest::of(b"x");
    let compat = [7u8; 32];
    s.put_compiled(&d, &compat, b"artifact").unwrap();
    assert_eq!(s.get_compiled(&d, &compat).unwrap().unwrap(), b"artifact");
    assert_eq!(
        s.get_compiled(&d, &[8u8; 32]).unwrap(),
        None,
        "other engine"
    );
    let mut v = s
        .compiled
        .get(compiled_key(&d, &compat))
        .unwrap()
        .unwrap()
        .to_vec();
    v[36] ^= 1; // a byte of the artifact, after the 32-byte checksum
    s.compiled.insert(compiled_key(&d, &compat), v).unwrap();
    assert_eq!(s.get_compiled(&d, &compat).unwrap(), None);
}

#[test]
fn records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"hello".repeat(100);
    let r = release(&content);
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let head = Head {
        fleet: "f".into(),
        app: r.app.clone(),
        seq: 4,
        release: r,
        kind: HeadKind::Release,
        issued_at_ms: 0,
        epoch: 0,
        plan: None,
    }
    .sign(&key);
    let rec = AppRecord::advance(None, &head, 8);
    let state = ServingState {
        activating: Some(ReleaseRef {
            seq: 4,
            release: head.head.release.clone(),
        }),
        ..ServingState::default()
    };
    {
        let s = Store::open(dir.path()).unwrap();
        s.commit(&rec, &state).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.records().unwrap(), vec![rec]);
    assert_eq!(
        s.states().unwrap().remove("a"),
        Some(state),
        "the serving state went in with the record"
    );
}

#[test]
fn a_format_2_store_is_migrated_and_keeps_its_serving_state() {
    #[derive(Serialize)]
    struct V2 {
        committed: Option<ReleaseRef>,
        trial: Option<ReleaseRef>,
        trial_clean_stop: bool,
        failure: Option<FailureRecord>,
        local_override: Option<ReleaseRef>,
        cached: Vec<Release>,
    }
    let dir = tempfile::tempdir().unwrap();
    let r = release(b"v1");
    let committed = Some(ReleaseRef {
        seq: 3,
        release: r.clone(),
    });
    let failure = Some(FailureRecord {
        seq: 4,
        version: "1.0.0".into(),
        digest: r.digest.to_hex(),
        stage: Stage::Smoke,
        reason: "no".into(),
        at_ms: 9,
    });
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(FORMAT_KEY, &2u32.to_be_bytes()).unwrap();
        let old = V2 {
            committed: committed.clone(),
            trial: None,
            trial_clean_stop: true,
            failure: failure.clone(),
            local_override: None,
            cached: vec![r.clone()],
        };
        db.open_tree("serving")
            .unwrap()
            .insert("a", postcard::to_stdvec(&old).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let want = ServingState {
        committed,
        trial_clean_stop: true,
        failure,
        cached: vec![r],
        ..ServingState::default()
    };
    assert_eq!(s.states().unwrap().remove("a"), Some(want));
    assert_eq!(
        s.db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
        &STORE_FORMAT.to_be_bytes()
    );
}

#[test]
fn stages_are_stored_and_shown_by_name() {
    assert_eq!(serde_json::to_string(&Stage::Smoke).unwrap(), "\"smoke\"");
    let s: Stage = serde_json::from_str("\"restart\"").unwrap();
    assert_eq!(s, Stage::Restart);
    assert!(serde_json::from_str::<Stage>("\"later\"").is_err());
    // On disk, as the string format 2 stored.
    assert_eq!(
        postcard::to_stdvec(&Stage::Trial).unwrap(),
        postcard::to_stdvec("trial").unwrap()
    );
}

/// Writes `rec` as store formats 2 and 3 did: the head without an epoch.
fn put_format_3_record(db: &sled::Db, rec: &AppRecord) {
    use fleetcast_protocol::head::HeadSignature;
    #[derive(Serialize)]
    struct V3Head<'a> {
        fleet: &'a str,
        app: &'a AppName,
        seq: u64,
        release: &'a Release,
        kind: HeadKind,
        issued_at_ms: u64,
    }
    #[derive(Serialize)]
    struct V3Signed<'a> {
        head: V3Head<'a>,
        signatures: &'a [HeadSignature],
    }
    #[derive(Serialize)]
    struct V3Record<'a> {
        head: V3Signed<'a>,
        history: &'a [HistoryEntry],
    }
    let h = &rec.head.head;
    let old = V3Record {
        head: V3Signed {
            head: V3Head {
                fleet: &h.fleet,
                app: &h.app,
                seq: h.seq,
                release: &h.release,
                kind: h.kind,
                issued_at_ms: h.issued_at_ms,
            },
            signatures: &rec.head.signatures,
        },
        history: &rec.history,
    };
    db.open_tree("apps")
        .unwrap()
        .insert(h.app.as_str(), postcard::to_stdvec(&old).unwrap())
        .unwrap();
}

#[test]
fn a_format_3_store_is_migrated_and_its_heads_still_verify() {
    use fleetcast_protocol::trust::Trust;
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut recs = Vec::new();
    for (name, seq) in [("a", 3u64), ("shop", 11)] {
        let mut r = release(name.as_bytes());
        r.app = AppName::new(name).unwrap();
        let head = Head {
            fleet: "prod".into(),
            app: r.app.clone(),
            seq,
            release: r,
            kind: HeadKind::Release,
            issued_at_ms: 1_700_000_000_000 + seq,
            epoch: 0,
            plan: None,
        }
        .sign(&key);
        recs.push(AppRecord::advance(None, &head, 8));
    }
    let state = ServingState {
        committed: Some(ReleaseRef {
            seq: 3,
            release: recs[0].head.head.release.clone(),
        }),
        ..ServingState::default()
    };
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(FORMAT_KEY, &3u32.to_be_bytes()).unwrap();
        for rec in &recs {
            put_format_3_record(&db, rec);
        }
        db.open_tree("serving")
            .unwrap()
            .insert("a", postcard::to_stdvec(&state).unwrap())
            .unwrap();
        db.flush().unwrap();
        // A format-3 record does not decode as a current one: the migration is needed.
        let raw = db.open_tree("apps").unwrap().get("a").unwrap().unwrap();
        assert_ne!(
            postcard::from_bytes::<AppRecord>(&raw).ok().as_ref(),
            Some(&recs[0])
        );
    }
    let s = Store::open(dir.path()).unwrap();
    // 3 → 4 → 5 in one open.
    assert_eq!(
        s.db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
        &STORE_FORMAT.to_be_bytes()
    );
    let got = s.records().unwrap();
    assert_eq!(got, recs, "the same records, at epoch 0");
    let trust = Trust::legacy(
        "prod".into(),
        vec![fleetcast_protocol::PublicKey::from(&key.verifying_key())],
    );
    for rec in &got {
        assert_eq!(rec.head.head.epoch, 0);
        trust.verify_stored_head(&rec.head).unwrap();
    }
    assert_eq!(s.states().unwrap().remove("a"), Some(state));
    drop(s);
    // Opening again is a no-op.
    assert_eq!(Store::open(dir.path()).unwrap().records().unwrap(), recs);
}

/// Writes `rec` as store format 4 did: the head with an epoch, without a plan.
fn put_format_4_record(db: &sled::Db, rec: &AppRecord) {
    use fleetcast_protocol::head::HeadSignature;
    #[derive(Serialize)]
    struct V4Head<'a> {
        fleet: &'a str,
        app: &'a AppName,
        seq: u64,
        release: &'a Release,
        kind: HeadKind,
        issued_at_ms: u64,
        epoch: u64,
    }
    #[derive(Serialize)]
    struct V4Signed<'a> {
        head: V4Head<'a>,
        signatures: &'a [HeadSignature],
    }
    #[derive(Serialize)]
    struct V4Record<'a> {
        head: V4Signed<'a>,
        history: &'a [HistoryEntry],
    }
    let h = &rec.head.head;
    assert!(h.plan.is_none(), "format 4 had no plans");
    let old = V4Record {
        head: V4Signed {
            head: V4Head {
                fleet: &h.fleet,
                app: &h.app,
                seq: h.seq,
                release: &h.release,
                kind: h.kind,
                issued_at_ms: h.issued_at_ms,
                epoch: h.epoch,
            },
            signatures: &rec.head.signatures,
        },
        history: &rec.history,
    };
    db.open_tree("apps")
        .unwrap()
        .insert(h.app.as_str(), postcard::to_stdvec(&old).unwrap())
        .unwrap();
}

#[test]
fn a_format_4_store_is_migrated_and_its_heads_still_verify() {
    use fleetcast_protocol::trust::Trust;
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut recs = Vec::new();
    // Epoch 0 (v2 signing bytes) and epoch 3 (v3 signing bytes): both must still verify.
    for (name, seq, epoch) in [("a", 3u64, 0u64), ("shop", 11, 3)] {
        let mut r = release(name.as_bytes());
        r.app = AppName::new(name).unwrap();
        let head = Head {
            fleet: "prod".into(),
            app: r.app.clone(),
            seq,
            release: r,
            kind: HeadKind::Release,
            issued_at_ms: 1_700_000_000_000 + seq,
            epoch,
            plan: None,
        }
        .sign(&key);
        let prev = AppRecord::advance(None, &head, 8);
        recs.push(AppRecord::advance(Some(&prev), &head, 8));
    }
    let state = ServingState {
        committed: Some(ReleaseRef {
            seq: 3,
            release: recs[0].head.head.release.clone(),
        }),
        ..ServingState::default()
    };
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(FORMAT_KEY, &4u32.to_be_bytes()).unwrap();
        for rec in &recs {
            put_format_4_record(&db, rec);
        }
        db.open_tree("serving")
            .unwrap()
            .insert("a", postcard::to_stdvec(&state).unwrap())
            .unwrap();
        db.flush().unwrap();
        // A format-4 record does not decode as a format-5 one: the migration is needed.
        let raw = db.open_tree("apps").unwrap().get("a").unwrap().unwrap();
        assert_ne!(
            postcard::from_bytes::<AppRecord>(&raw).ok().as_ref(),
            Some(&recs[0])
        );
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
        &5u32.to_be_bytes()
    );
    let got = s.records().unwrap();
    assert_eq!(got, recs, "the same records, without a plan");
    let trust = Trust::legacy(
        "prod".into(),
        vec![fleetcast_protocol::PublicKey::from(&key.verifying_key())],
    );
    // The epoch-0 head verifies under the lab root; the epoch-3 one keeps its v3 bytes.
    trust.verify_stored_head(&got[0].head).unwrap();
    for (rec, want) in got.iter().zip(&recs) {
        assert!(rec.head.head.plan.is_none());
        assert_eq!(
            rec.head.head.signing_bytes(),
            want.head.head.signing_bytes()
        );
        assert_eq!(rec.history.len(), 2);
    }
    assert_eq!(s.states().unwrap().remove("a"), Some(state));
    drop(s);
    // Opening again is a no-op.
    assert_eq!(Store::open(dir.path()).unwrap().records().unwrap(), recs);
}

#[test]
fn a_damaged_format_4_record_is_refused_and_the_store_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(FORMAT_KEY, &4u32.to_be_bytes()).unwrap();
        db.open_tree("apps")
            .unwrap()
            .insert("a", &b"xx"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("stored record of app \"a\""), "{err}");
    let db = sled::open(dir.path().join("store")).unwrap();
    assert_eq!(
        db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
        &4u32.to_be_bytes()
    );
}

#[test]
fn a_damaged_format_3_record_is_refused_and_the_store_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("store")).unwrap();
        db.insert(FORMAT_KEY, &3u32.to_be_bytes()).unwrap();
        db.open_tree("apps")
            .unwrap()
            .insert("a", &b"xx"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("stored record of app \"a\""), "{err}");
    let db = sled::open(dir.path().join("store")).unwrap();
    assert_eq!(
        db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
        &3u32.to_be_bytes()
    );
}

fn signed_root(version: u64) -> SignedRoot {
    use fleetcast_protocol::trust::{Role, Roles, Root};
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let pk = fleetcast_protocol::PublicKey::from(&key.verifying_key());
    Root {
        fleet: "prod".into(),
        version,
        epoch: 1,
        issued_ms: 1000 * version,
        expires_ms: u64::MAX,
        roles: Roles {
            root: Role::new(vec![pk], 1),
            release: Role::new(vec![pk], 1),
            nodes: Role::new(vec![pk], 1),
        },
        revoked: Vec::new(),
    }
    .sign(&key)
}

#[test]
fn the_root_chain_and_floor_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.roots().unwrap(), (Vec::new(), 0));
        s.put_roots(&[signed_root(1)], 5_000).unwrap();
        // Versions sort numerically (big-endian keys), not as text.
        s.put_roots(&[signed_root(2), signed_root(10)], 9_000)
            .unwrap();
        // The floor never goes down.
        s.put_roots(&[], 7_000).unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let (chain, floor) = s.roots().unwrap();
    let versions: Vec<u64> = chain.iter().map(|r| r.root.version).collect();
    assert_eq!(versions, vec![1, 2, 10]);
    assert_eq!(chain[1], signed_root(2));
    assert_eq!(floor, 9_000);
}
