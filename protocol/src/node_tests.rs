//! Node behaviour, driven through the deterministic simulator (no IO).

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use crate::head::tests::key;
use crate::head::{Head, HeadKind, SignedHead, TrustPolicy};
use crate::node::{Event, NodeConfig};
use crate::release::{AppName, Release};
use crate::sim::Sim;
use crate::wire::{Message, NodeId, Outcome};

const CHUNK: u32 = 4096;
const PUBLISHER: usize = 0;

fn cfg(id: usize, trusted: &SigningKey) -> NodeConfig {
    let mut c = NodeConfig::new(
        NodeId([id as u8; 32]),
        TrustPolicy {
            fleet: "f".into(),
            keys: vec![trusted.verifying_key()],
        },
    );
    c.chunk_timeout = Duration::from_millis(500);
    c
}

fn content(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

fn signed(
    app: &str,
    seq: u64,
    version: &str,
    c: &[u8],
    kind: HeadKind,
    k: &SigningKey,
) -> SignedHead {
    let app = AppName::new(app).unwrap();
    Head {
        fleet: "f".into(),
        app: app.clone(),
        seq,
        release: Release::build(app, version.parse().unwrap(), c, CHUNK).unwrap(),
        kind,
        issued_at_ms: seq,
    }
    .sign(k)
}

/// Publisher 0 holding `contents`, agents 1..=n, links given as pairs.
fn fleet(k: &SigningKey, n: usize, links: &[(usize, usize)], contents: Vec<Vec<u8>>) -> Sim {
    let mut sim = Sim::new(Instant::now());
    sim.chunk_size = CHUNK as usize;
    sim.add(PUBLISHER, cfg(PUBLISHER, k), contents);
    for id in 1..=n {
        sim.add(id, cfg(id, k), vec![]);
    }
    for (a, b) in links {
        sim.connect(*a, *b);
    }
    sim.run(Duration::from_secs(1));
    sim
}

fn reports_at(sim: &Sim, id: usize, app: &str, seq: u64) -> Vec<(NodeId, Outcome)> {
    sim.nodes[&id]
        .node
        .status()
        .reports
        .into_iter()
        .filter(|r| r.app.as_str() == app && r.seq == seq)
        .map(|r| (r.node, r.outcome))
        .collect()
}

#[test]
fn release_travels_down_a_chain_and_reports_flow_back() {
    let k = key(1);
    let v1 = content(1, 20_000);
    let mut sim = fleet(&k, 3, &[(0, 1), (1, 2), (2, 3)], vec![v1.clone()]);
    sim.inject(
        PUBLISHER,
        1,
        signed("shop", 1, "1.0.0", &v1, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(10));
    for id in 1..=3 {
        assert_eq!(sim.nodes[&id].seq("shop"), Some(1), "node {id}");
    }
    // The publisher served each chunk once: only node 1 fetched from it.
    assert_eq!(sim.nodes[&PUBLISHER].chunks_served, 5);
    // Every agent's Active report reached the publisher through the chain.
    let seen = reports_at(&sim, PUBLISHER, "shop", 1);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|(_, o)| *o == Outcome::Active));
}

#[test]
fn rollback_to_a_cached_release_fetches_nothing() {
    let k = key(1);
    let (v1, v2) = (content(1, 9000), content(2, 9000));
    let mut sim = fleet(
        &k,
        3,
        &[(0, 1), (1, 2), (1, 3)],
        vec![v1.clone(), v2.clone()],
    );
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 1, "1.0.0", &v1, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(10));
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 2, "2.0.0", &v2, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(10));
    let served: Vec<u64> = sim.nodes.values().map(|n| n.chunks_served).collect();
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 3, "1.0.0", &v1, HeadKind::Rollback, &k),
    );
    let took = sim.run(Duration::from_secs(10));
    for id in 1..=3 {
        let n = &sim.nodes[&id];
        assert_eq!(n.seq("a"), Some(3));
        assert_eq!(
            n.active[&AppName::new("a").unwrap()].1,
            crate::Digest::of(&v1)
        );
        let hist = &n.node.status().apps[0].history;
        assert_eq!(
            hist.iter().map(|h| h.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
    let after: Vec<u64> = sim.nodes.values().map(|n| n.chunks_served).collect();
    assert_eq!(served, after, "a rollback to cached content moved no chunk");
    // Two hops of 10 ms each plus the head's way in: the rollback is one small message wide.
    assert!(took <= Duration::from_millis(100), "rollback took {took:?}");
}

#[test]
fn untrusted_head_is_rejected_reported_and_changes_nothing() {
    let (k, rogue) = (key(1), key(2));
    let v1 = content(1, 5000);
    let mut sim = fleet(&k, 2, &[(0, 1), (1, 2)], vec![v1.clone()]);
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 1, "1.0.0", &v1, HeadKind::Release, &rogue),
    );
    sim.run(Duration::from_secs(5));
    for id in 1..=2 {
        assert_eq!(sim.nodes[&id].seq("a"), None);
        assert!(
            sim.nodes[&id].store.is_empty(),
            "nothing stored on node {id}"
        );
    }
    let seen = reports_at(&sim, PUBLISHER, "a", 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(matches!(&seen[0].1, Outcome::Rejected(r) if r.contains("does not trust")));
    assert_eq!(sim.nodes[&PUBLISHER].chunks_served, 0);
}

#[test]
fn replayed_older_head_is_stale_and_equal_seq_different_head_conflicts() {
    let k = key(1);
    let (v1, v2) = (content(1, 5000), content(2, 5000));
    let mut sim = fleet(&k, 1, &[(0, 1)], vec![v1.clone(), v2.clone()]);
    let h1 = signed("a", 1, "1.0.0", &v1, HeadKind::Release, &k);
    sim.inject(PUBLISHER, 1, h1.clone());
    sim.run(Duration::from_secs(5));
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 2, "2.0.0", &v2, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(5));
    sim.events.clear();
    sim.inject(PUBLISHER, 1, h1);
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 2, "1.0.0", &v1, HeadKind::Rollback, &k),
    );
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.nodes[&1].seq("a"), Some(2));
    assert_eq!(
        sim.nodes[&1].active[&AppName::new("a").unwrap()].1,
        crate::Digest::of(&v2)
    );
    let reasons: Vec<&str> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Rejected { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("not newer than seq 2"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("two different heads"), "{}", reasons[1]);
}

#[test]
fn a_peer_serving_bad_chunks_is_dropped_and_the_content_comes_from_another() {
    let k = key(1);
    let good = content(1, 16_000);
    let h = signed("a", 1, "1.0.0", &good, HeadKind::Release, &k);
    // Node 9 claims the release but holds corrupted bytes under its digest.
    let mut bad = good.clone();
    bad[5000] ^= 0xff;
    let mut sim = fleet(&k, 1, &[(0, 1)], vec![good.clone()]);
    sim.add(9, cfg(9, &k), vec![]);
    sim.nodes
        .get_mut(&9)
        .unwrap()
        .store
        .insert(h.head.release.digest, bad);
    sim.connect(9, 1);
    sim.run(Duration::from_secs(1));
    // The liar pushes the head first, so node 1 asks it first.
    sim.nodes.get_mut(&9).unwrap().node = crate::Node::new(cfg(9, &k), [], [h.head.release.digest]);
    sim.deliver(9, 1, Message::Head(Box::new(h)));
    sim.run(Duration::from_secs(10));
    assert_eq!(sim.nodes[&1].seq("a"), Some(1));
    assert_eq!(sim.nodes[&1].store[&crate::Digest::of(&good)], good);
    assert!(
        sim.nodes[&9].chunks_served >= 1,
        "the liar was asked and served at least one chunk"
    );
    assert!(
        sim.nodes[&PUBLISHER].chunks_served >= 1,
        "the honest peer filled in"
    );
}

#[test]
fn content_the_runtime_refuses_is_reported_and_the_old_release_keeps_serving() {
    let k = key(1);
    let (v1, junk) = (content(1, 5000), b"JUNK".repeat(2000));
    let mut sim = fleet(&k, 2, &[(0, 1), (1, 2)], vec![v1.clone(), junk.clone()]);
    sim.accepts = |c| !c.starts_with(b"JUNK");
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 1, "1.0.0", &v1, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(5));
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 2, "2.0.0", &junk, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.nodes[&1].seq("a"), Some(1));
    assert_eq!(
        sim.nodes[&2].seq("a"),
        Some(1),
        "a refused release is not relayed"
    );
    let st = sim.nodes[&1].node.status();
    assert!(
        st.apps[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("not a component")
    );
    let seen = reports_at(&sim, PUBLISHER, "a", 2);
    assert!(
        matches!(&seen[..], [(_, Outcome::Failed(r))] if r.contains("not a component")),
        "{seen:?}"
    );
    // A fixed release with a higher seq goes through.
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 3, "1.0.0", &v1, HeadKind::Rollback, &k),
    );
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.nodes[&2].seq("a"), Some(3));
}

#[test]
fn a_node_that_was_away_catches_up_on_reconnect() {
    let k = key(1);
    let v1 = content(1, 5000);
    let mut sim = fleet(&k, 3, &[(0, 1), (1, 2)], vec![v1.clone()]);
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 1, "1.0.0", &v1, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.nodes[&3].seq("a"), None);
    sim.connect(2, 3);
    sim.run(Duration::from_secs(5));
    assert_eq!(
        sim.nodes[&3].seq("a"),
        Some(1),
        "summary exchange pulled the head"
    );
}

#[test]
fn a_newer_head_supersedes_one_still_fetching() {
    let k = key(1);
    let (v1, v2) = (content(1, 40_000), content(2, 5000));
    let mut sim = fleet(&k, 1, &[(0, 1)], vec![v1.clone(), v2.clone()]);
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 1, "1.0.0", &v1, HeadKind::Release, &k),
    );
    sim.run(Duration::from_millis(15)); // the head has arrived, chunks are in flight
    sim.inject(
        PUBLISHER,
        1,
        signed("a", 2, "2.0.0", &v2, HeadKind::Release, &k),
    );
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.nodes[&1].seq("a"), Some(2));
    assert!(!sim.nodes[&1].store.contains_key(&crate::Digest::of(&v1)));
}

#[test]
fn a_silent_peer_loses_its_requests_after_the_deadline() {
    let k = key(1);
    let v1 = content(1, 8192);
    let h = signed("a", 1, "1.0.0", &v1, HeadKind::Release, &k);
    let mut sim = fleet(&k, 1, &[(0, 1)], vec![v1.clone()]);
    // Node 8 announces the head but is never scheduled to answer: it is removed.
    sim.add(8, cfg(8, &k), vec![]);
    sim.connect(8, 1);
    sim.run(Duration::from_secs(1));
    sim.nodes.remove(&8);
    sim.deliver(8, 1, Message::Head(Box::new(h)));
    let took = sim.run(Duration::from_secs(10));
    assert_eq!(sim.nodes[&1].seq("a"), Some(1));
    assert!(
        took >= Duration::from_millis(500),
        "waited for the deadline: {took:?}"
    );
}
