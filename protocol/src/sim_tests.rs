//! Mesh behaviour through the deterministic simulator (no IO). Every test prints its seed;
//! `FLEETCAST_SEED=<n> cargo test -p fleetcast-protocol <name>` replays one.
//!
//! Safety (only verified heads and content are activated; seqs never decrease) is asserted by
//! the simulator itself on every step; these tests check the behaviour around it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;

use crate::head::{Head, HeadKind, SignedHead};
use crate::node::{Event, Input, Output};
use crate::release::{AppName, Digest, Release};
use crate::scenario::{self, Scenario, content, converged, fleet, signed};
use crate::sim::{Id, Sim, SimConfig};
use crate::wire::{BroadcastMsg, ContentMsg, Message, Position};

pub(crate) fn seed(default: u64) -> u64 {
    let s = std::env::var("FLEETCAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {s} (replay with FLEETCAST_SEED={s})");
    s
}

pub(crate) fn shop() -> AppName {
    AppName::new("shop").unwrap()
}

/// Small chunks keep the behaviour tests fast while still giving a transfer many chunks.
const CHUNK: u32 = 16 * 1024;

/// A small, fast network: 5–20 ms one way, 100 Mb/s up, no loss.
pub(crate) fn lan(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        latency: (Duration::from_millis(5), Duration::from_millis(20)),
        upload_bps: Some(100_000_000),
        ..SimConfig::default()
    }
}

/// A settled fleet of `n` nodes (active views of 4, 5 bootstrap contacts each).
fn small_fleet(n: usize, seed: u64) -> Sim {
    fleet(n, 5, 4, lan(seed), Duration::from_secs(20))
}

pub(crate) fn head(seq: u64, body: &[u8], kind: HeadKind) -> SignedHead {
    signed("shop", seq, body, CHUNK, kind)
}

/// Runs until every live node runs `seq`, for at most `limit`. Returns whether it did.
pub(crate) fn converge(sim: &mut Sim, seq: u64, limit: Duration) -> bool {
    let app = shop();
    let end = sim.now + limit;
    sim.run_until(end, |s| converged(s, &app, seq))
}

fn rejections(sim: &Sim) -> Vec<(Id, u64, String)> {
    sim.events
        .iter()
        .filter_map(|(id, e)| match e {
            Event::Rejected { seq, reason, .. } => Some((*id, *seq, reason.clone())),
            _ => None,
        })
        .collect()
}

fn accepted(sim: &Sim) -> Vec<(Id, u64)> {
    sim.events
        .iter()
        .filter_map(|(id, e)| match e {
            Event::Accepted { seq, .. } => Some((*id, *seq)),
            _ => None,
        })
        .collect()
}

/// A connection from `id` to one of its active peers, and that peer.
fn a_neighbour(sim: &Sim, id: Id) -> (u64, Id) {
    let node = sim.nodes[&id].node.as_ref().expect("alive");
    let conn = node.active_peers()[0];
    (conn, sim.peer_of(id, conn).expect("linked"))
}

/// Whether the live nodes' overlay (active views) is one connected graph.
pub(crate) fn overlay_connected(sim: &Sim) -> bool {
    let g = sim.overlay();
    let Some(&start) = g.keys().next() else {
        return true;
    };
    // Links are symmetric in HyParView; treat the graph as undirected regardless.
    let mut adj: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    for (a, ps) in &g {
        for b in ps {
            adj.entry(*a).or_default().insert(*b);
            adj.entry(*b).or_default().insert(*a);
        }
    }
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(x) = todo.pop() {
        for y in adj.get(&x).into_iter().flatten() {
            if seen.insert(*y) {
                todo.push(*y);
            }
        }
    }
    seen.len() == g.len()
}

#[test]
fn smoke_release_reaches_every_node() {
    let seed = seed(1);
    let mut sc = Scenario::wan(200, seed);
    sc.size = 1024 * 1024;
    let fig = scenario::run_release(&sc);
    eprintln!("{fig}");
    assert_eq!(fig.converged, fig.live, "{fig}");
}

#[test]
fn a_head_signed_by_an_untrusted_key_is_refused_and_not_relayed() {
    let seed = seed(2);
    let mut sim = small_fleet(30, seed);
    let body = content(1, 100_000);
    let rogue = SigningKey::from_bytes(&[9; 32]);
    let forged = Head {
        fleet: "sim".into(),
        app: shop(),
        seq: 1,
        release: Release::build(shop(), "1.0.1".parse().unwrap(), &body, CHUNK).unwrap(),
        kind: HeadKind::Release,
        issued_at_ms: 1,
        epoch: 0,
        plan: None,
    }
    .sign(&rogue);
    // Pushed by a "publisher" with the rogue key, and gossiped by a node inside the mesh.
    sim.publish(0, forged.clone(), body);
    let (conn, victim) = a_neighbour(&sim, 7);
    sim.inject(
        7,
        conn,
        BroadcastMsg::Gossip {
            head: Box::new(forged),
            round: 0,
        }
        .into(),
    );
    sim.run(Duration::from_secs(10));

    let rejected = rejections(&sim);
    let by: BTreeSet<Id> = rejected.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(by, BTreeSet::from([0, victim]), "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|(_, _, r)| r.contains("which are not release keys")),
        "{rejected:?}"
    );
    assert!(accepted(&sim).is_empty(), "nobody accepts it");
    for (id, n) in &sim.nodes {
        assert_eq!(n.seq(&shop()), None, "node {id}");
        assert!(n.disk.blobs.is_empty(), "node {id} stored nothing");
    }
    assert_eq!(sim.traffic.payload, 0, "no chunk moved");
    let t = &sim.publisher.tallies[&(shop(), 1)];
    assert_eq!((t.active, t.rejected), (0, 1), "{t:?}");
}

#[test]
fn stale_and_conflicting_heads_are_refused() {
    let seed = seed(3);
    let mut sim = small_fleet(30, seed);
    let (v1, v2) = (content(1, 60_000), content(2, 60_000));
    let h1 = head(1, &v1, HeadKind::Release);
    sim.publish(0, h1.clone(), v1.clone());
    assert!(converge(&mut sim, 1, Duration::from_secs(10)));
    sim.publish(0, head(2, &v2, HeadKind::Release), v2.clone());
    assert!(converge(&mut sim, 2, Duration::from_secs(10)));
    sim.events.clear();

    // A replayed seq 1 pushed to one node, and gossiped by another; a different seq 2.
    sim.publish(3, h1.clone(), v1.clone());
    let (conn, _) = a_neighbour(&sim, 9);
    sim.inject(
        9,
        conn,
        BroadcastMsg::Gossip {
            head: Box::new(h1),
            round: 0,
        }
        .into(),
    );
    let conflict = head(2, &v1, HeadKind::Rollback);
    sim.publish(4, conflict, v1);
    sim.run(Duration::from_secs(10));

    let rejected = rejections(&sim);
    assert!(
        rejected
            .iter()
            .any(|(id, seq, r)| *id == 3 && *seq == 1 && r.contains("not newer than seq 2")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|(id, seq, r)| *id == 4 && *seq == 2 && r.contains("two different heads")),
        "{rejected:?}"
    );
    assert!(accepted(&sim).is_empty(), "{:?}", accepted(&sim));
    for (id, n) in &sim.nodes {
        assert_eq!(n.seq(&shop()), Some(2), "node {id}");
        let rec = &n.disk.records[&shop()];
        assert_eq!(rec.head.head.release.digest, Digest::of(&v2), "node {id}");
    }
}

#[test]
fn a_lying_peer_is_dropped_and_its_chunks_come_from_elsewhere() {
    let seed = seed(4);
    let mut sim = small_fleet(40, seed);
    let liars = [5, 11, 17, 23, 29];
    for l in liars {
        sim.nodes.get_mut(&l).unwrap().faults.corrupt_chunks = true;
    }
    let body = content(1, 400_000);
    sim.publish(0, head(1, &body, HeadKind::Release), body);
    assert!(converge(&mut sim, 1, Duration::from_secs(30)));

    // The simulator checked every activated content byte for byte; the liars were caught.
    let served: u64 = liars.iter().map(|l| sim.nodes[l].chunks_served).sum();
    let dropped: Vec<&(Id, Option<Id>, String)> = sim
        .disconnects
        .iter()
        .filter(|(_, _, r)| r.contains("bad chunk"))
        .collect();
    assert!(served > 0, "the liars were asked");
    assert!(!dropped.is_empty(), "a liar was dropped");
    assert!(
        dropped
            .iter()
            .all(|(_, other, _)| other.is_some_and(|o| liars.contains(&o))),
        "only liars are dropped: {dropped:?}"
    );
    // A dropped liar stays out of the dropper's active view.
    let overlay = sim.overlay();
    for (by, liar, _) in &dropped {
        let liar = liar.unwrap();
        assert!(
            !overlay[by].contains(&liar),
            "node {by} took liar {liar} back"
        );
    }
}

#[test]
fn content_the_runtime_refuses_fails_and_the_old_release_keeps_serving() {
    let seed = seed(5);
    let n = 30;
    let mut sim = small_fleet(n, seed);
    sim.accepts = |c| !c.starts_with(b"JUNK");
    let v1 = content(1, 60_000);
    sim.publish(0, head(1, &v1, HeadKind::Release), v1.clone());
    assert!(converge(&mut sim, 1, Duration::from_secs(10)));

    let junk = b"JUNK".repeat(20_000);
    sim.publish(0, head(2, &junk, HeadKind::Release), junk);
    let failed_everywhere = |s: &Sim| {
        let failed: BTreeSet<Id> = s
            .events
            .iter()
            .filter_map(|(id, e)| match e {
                Event::ActivationFailed { seq: 2, .. } => Some(*id),
                _ => None,
            })
            .collect();
        failed.len() == n
    };
    let end = sim.now + Duration::from_secs(15);
    assert!(sim.run_until(end, failed_everywhere), "every node tried");
    sim.run(Duration::from_secs(2));
    for (id, sn) in &sim.nodes {
        assert_eq!(sn.seq(&shop()), Some(1), "node {id} keeps serving seq 1");
        assert_eq!(
            sn.disk.records[&shop()].head.head.release.digest,
            Digest::of(&v1)
        );
        let st = sn.node.as_ref().unwrap().status();
        assert_eq!(
            st.seqs,
            vec![(shop(), Position { epoch: 0, seq: 2 })],
            "node {id} holds seq 2"
        );
        let err = st.apps[0].last_error.as_deref().unwrap_or_default();
        assert!(err.contains("not a component"), "node {id}: {err:?}");
    }
    let t = &sim.publisher.tallies[&(shop(), 2)];
    assert_eq!((t.active, t.failed), (0, n as u32), "{t:?}");
    assert!(!t.samples.is_empty());

    // A fixed release with a higher seq goes through.
    let v3 = content(3, 60_000);
    sim.publish(0, head(3, &v3, HeadKind::Release), v3);
    assert!(converge(&mut sim, 3, Duration::from_secs(10)));
}

#[test]
fn a_rollback_moves_no_chunk() {
    let seed = seed(6);
    let mut sim = small_fleet(40, seed);
    let (v1, v2) = (content(1, 100_000), content(2, 100_000));
    sim.publish(0, head(1, &v1, HeadKind::Release), v1.clone());
    assert!(converge(&mut sim, 1, Duration::from_secs(10)));
    sim.publish(0, head(2, &v2, HeadKind::Release), v2);
    assert!(converge(&mut sim, 2, Duration::from_secs(10)));

    sim.traffic = Default::default();
    let t0 = sim.now;
    sim.publish(0, head(3, &v1, HeadKind::Rollback), v1.clone());
    assert!(converge(&mut sim, 3, Duration::from_secs(10)));
    let took = sim.now - t0;
    assert_eq!(sim.traffic.payload, 0, "no chunk moved");
    assert_eq!(sim.traffic.publisher_egress, 0);
    assert!(took < Duration::from_millis(500), "rollback took {took:?}");
    for (id, n) in &sim.nodes {
        let rec = &n.disk.records[&shop()];
        assert_eq!(rec.head.head.release.digest, Digest::of(&v1), "node {id}");
        let seqs: Vec<u64> = rec.history.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3], "node {id}");
    }
}

#[test]
fn a_node_crashed_during_a_release_catches_up_by_anti_entropy_after_restart() {
    let seed = seed(7);
    let mut sim = small_fleet(60, seed);
    let body = content(1, 300_000);
    sim.publish(0, head(1, &body, HeadKind::Release), body);
    sim.run(Duration::from_millis(40));
    let victims = [7, 21, 33, 48];
    for v in victims {
        sim.crash(v);
    }
    assert!(converge(&mut sim, 1, Duration::from_secs(20)));
    for v in victims {
        assert_eq!(sim.nodes[&v].seq(&shop()), None, "node {v} missed it");
    }
    sim.run(Duration::from_secs(5));
    let t0 = sim.now;
    for v in victims {
        sim.restart(v);
    }
    // No new release: anti-entropy with their new neighbours brings the head.
    assert!(converge(&mut sim, 1, Duration::from_secs(30)));
    eprintln!("caught up {:?} after restart", sim.now - t0);
}

#[test]
fn a_partition_during_a_release_converges_after_heal() {
    let seed = seed(8);
    let mut sim = small_fleet(80, seed);
    let side = |id: Id| (id % 2) as u8;
    sim.partition(side);
    let body = content(1, 200_000);
    sim.publish(0, head(1, &body, HeadKind::Release), body);
    sim.run(Duration::from_secs(20));
    for (id, n) in &sim.nodes {
        let expect = if side(*id) == 0 { Some(1) } else { None };
        assert_eq!(n.seq(&shop()), expect, "node {id}");
    }
    let t0 = sim.now;
    sim.heal();
    assert!(converge(&mut sim, 1, Duration::from_secs(30)));
    eprintln!("converged {:?} after heal", sim.now - t0);
    assert!(overlay_connected(&sim));
}

#[test]
fn a_newer_head_supersedes_a_fetch_in_progress() {
    let seed = seed(9);
    let mut sim = small_fleet(40, seed);
    let (v1, v2) = (content(1, 2_000_000), content(2, 100_000));
    sim.publish(0, head(1, &v1, HeadKind::Release), v1.clone());
    sim.run(Duration::from_millis(80));
    let fetching = sim
        .nodes
        .values()
        .filter(|n| n.accepted_at.contains_key(&(shop(), 1)))
        .count();
    assert!(fetching > 10, "the head ran ahead ({fetching} have it)");
    sim.publish(0, head(2, &v2, HeadKind::Release), v2.clone());
    assert!(converge(&mut sim, 2, Duration::from_secs(10)));
    for (id, n) in &sim.nodes {
        assert!(
            !n.activated_at.contains_key(&(shop(), 1)),
            "node {id} finished the old fetch"
        );
        assert!(!n.disk.blobs.contains(&Digest::of(&v1)), "node {id}");
    }
    // The old transfer stopped: far less than one copy of it per node moved.
    let per_node = sim.traffic.payload as f64 / 40.0;
    assert!(per_node < v1.len() as f64 / 2.0, "{per_node} bytes/node");
}

#[test]
fn a_peer_that_never_answers_chunk_requests_is_abandoned_after_the_deadline() {
    let seed = seed(10);
    let mut sim = small_fleet(20, seed);
    // Two of the entry's neighbours: they get chunks first, so their neighbours ask them.
    let entry = &sim.nodes[&0].node.as_ref().unwrap();
    let silent: Vec<Id> = entry.active_peers()[..2]
        .iter()
        .map(|c| sim.peer_of(0, *c).unwrap())
        .collect();
    for &s in &silent {
        sim.nodes.get_mut(&s).unwrap().faults.silent_chunks = true;
    }
    let deadline = sim.nodes[&0].cfg.swarm.chunk_timeout;
    let body = content(1, 300_000);
    let t0 = sim.now;
    sim.publish(0, head(1, &body, HeadKind::Release), body);
    assert!(converge(&mut sim, 1, deadline * 4 + Duration::from_secs(5)));
    let ignored: u64 = silent.iter().map(|s| sim.nodes[s].requests_ignored).sum();
    assert!(ignored > 0, "the silent peers were asked");
    // Whoever asked a silent peer waited for the deadline, then got the chunk elsewhere.
    let last = sim
        .nodes
        .values()
        .filter_map(|n| n.activated_at.get(&(shop(), 1)))
        .max()
        .unwrap();
    assert!(*last - t0 >= deadline, "{:?}", *last - t0);
}

#[test]
fn active_views_stay_bounded_and_survivors_repair_after_kills() {
    let seed = seed(11);
    let active_size = 5;
    let mut sim = fleet(200, 5, active_size, lan(seed), Duration::ZERO);
    let check_bounded = |sim: &Sim| {
        for (id, n) in &sim.nodes {
            if let Some(node) = &n.node {
                let k = node.active_peers().len();
                assert!(k <= active_size, "node {id} has {k} active peers");
            }
        }
    };
    for _ in 0..30 {
        sim.run(Duration::from_secs(1));
        check_bounded(&sim);
    }
    assert!(overlay_connected(&sim), "the overlay formed");
    let full = sim
        .overlay()
        .values()
        .filter(|v| v.len() == active_size)
        .count();
    assert!(full >= 180, "{full} of 200 nodes have a full active view");

    let ids: Vec<Id> = (0..200).collect();
    let victims = sim.rng().sample(&ids, 50);
    for v in &victims {
        sim.crash(*v);
    }
    for _ in 0..30 {
        sim.run(Duration::from_secs(1));
        check_bounded(&sim);
    }
    let overlay = sim.overlay();
    let mut sizes = Vec::new();
    for (id, peers) in &overlay {
        let node = sim.nodes[id].node.as_ref().unwrap();
        // Every active peer is alive: dead ones were replaced.
        assert_eq!(
            peers.len(),
            node.active_peers().len(),
            "node {id} keeps a dead peer"
        );
        assert!(!peers.is_empty(), "node {id} is isolated");
        sizes.push(peers.len());
    }
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    assert!(mean >= active_size as f64 - 0.5, "mean active view {mean}");
    assert!(overlay_connected(&sim), "survivors stay connected");

    // And a release still reaches every survivor.
    let body = content(1, 100_000);
    let entry = *overlay.keys().next().unwrap();
    sim.publish(entry, head(1, &body, HeadKind::Release), body);
    assert!(converge(&mut sim, 1, Duration::from_secs(10)));
}

/// A release that activated and then failed its trial on some nodes (the shell reverted them to
/// the previous release) is counted as failed there: the fleet's totals move from active to
/// failed, status names what serves instead and why, and the seq stays held (anti-entropy does
/// not bring the release back).
#[test]
fn a_release_reverted_after_its_trial_counts_as_failed_and_stays_off() {
    let seed = seed(12);
    let n = 24;
    let mut sim = small_fleet(n, seed);
    let (v1, v2) = (content(1, 50_000), content(2, 50_000));
    sim.publish(0, head(1, &v1, HeadKind::Release), v1.clone());
    assert!(converge(&mut sim, 1, Duration::from_secs(10)));
    sim.publish(0, head(2, &v2, HeadKind::Release), v2);
    assert!(converge(&mut sim, 2, Duration::from_secs(10)));
    sim.run(Duration::from_secs(2));
    let t = &sim.publisher.tallies[&(shop(), 2)];
    assert_eq!((t.active, t.failed), (n as u32, 0), "{t:?}");

    let v1_release = head(1, &v1, HeadKind::Release).head.release;
    let reverted: Vec<Id> = sim.live().into_iter().step_by(3).collect();
    for id in &reverted {
        sim.input(
            *id,
            Input::Reverted {
                app: shop(),
                seq: 2,
                reason: "trial failed: the guest trapped".into(),
                serving: Some(v1_release.clone()),
            },
        );
    }
    // Longer than an anti-entropy period: nobody re-activates seq 2.
    sim.run(Duration::from_secs(15));
    let t = &sim.publisher.tallies[&(shop(), 2)];
    let k = reverted.len() as u32;
    assert_eq!((t.active, t.failed), (n as u32 - k, k), "{t:?}");
    assert!(
        t.samples
            .iter()
            .any(|r| format!("{:?}", r.outcome).contains("trapped")),
        "{t:?}"
    );
    for id in &reverted {
        let st = sim.nodes[id].node.as_ref().unwrap().status();
        let app = &st.apps[0];
        assert_eq!(app.seq, 2, "node {id} holds seq 2");
        assert_eq!(
            app.serving.as_ref().map(|r| r.digest),
            Some(Digest::of(&v1))
        );
        assert!(!app.local_override);
        assert!(app.last_error.as_deref().unwrap().contains("trapped"));
        let again = sim
            .events
            .iter()
            .filter(|(i, e)| i == id && matches!(e, Event::Activated { seq: 2, .. }));
        assert_eq!(again.count(), 1, "node {id} activated seq 2 once only");
    }
    // A newer head clears the revert.
    let v3 = content(3, 50_000);
    sim.publish(0, head(3, &v3, HeadKind::Release), v3);
    assert!(converge(&mut sim, 3, Duration::from_secs(10)));
    for id in &reverted {
        let st = sim.nodes[id].node.as_ref().unwrap().status();
        assert_eq!(
            (st.apps[0].serving.as_ref(), st.apps[0].last_error.as_ref()),
            (None, None)
        );
    }
}

/// A newer head arriving while a release is being activated asks the shell to cancel that
/// activation (once), and starts once the shell reports back.
#[test]
fn a_newer_head_during_an_activation_asks_to_cancel_it() {
    use crate::node::Node;
    use crate::wire::NodeId;
    let cfg = scenario::node_config(1, 4);
    let now = std::time::Instant::now();
    let mut node: Node<u32> = Node::new(now, cfg, [], []);
    let peer_addr = "127.0.0.1:9".parse().unwrap();
    node.handle(
        now,
        Input::PeerUp {
            peer: 1,
            node: NodeId([9; 32]),
            addr: peer_addr,
            outbound: false,
            role: crate::trust::PeerRole::Operator,
        },
    );
    let (v1, v2, v3) = (content(1, 20_000), content(2, 20_000), content(3, 20_000));
    let outputs = |node: &mut Node<u32>| {
        let mut v = Vec::new();
        while let Some(o) = node.poll_output() {
            v.push(o);
        }
        v
    };
    let _ = outputs(&mut node);
    // The peer has the content: it answers the node's chunk requests.
    let sh = head(1, &v1, HeadKind::Release);
    let rel = sh.head.release.clone();
    let push = BroadcastMsg::Head(Box::new(sh));
    node.handle(now, Input::Message(1, push.into()));
    let bits = crate::swarm::bits_full(rel.chunk_count());
    node.handle(
        now,
        Input::Message(
            1,
            ContentMsg::Have {
                digest: rel.digest,
                bits,
                want: false,
            }
            .into(),
        ),
    );
    let mut activated = false;
    for _ in 0..100 {
        let outs = outputs(&mut node);
        if outs.is_empty() {
            break;
        }
        for o in outs {
            match o {
                Output::Send {
                    msg: Message::Content(ContentMsg::GetChunk { digest, index }),
                    ..
                } => {
                    let start = index as usize * rel.chunk_size as usize;
                    let end = (start + rel.chunk_size as usize).min(v1.len());
                    let data = v1[start..end].to_vec().into();
                    node.handle(
                        now,
                        Input::Message(
                            1,
                            ContentMsg::Chunk {
                                digest,
                                index,
                                data,
                            }
                            .into(),
                        ),
                    );
                }
                Output::Activate(a) => activated |= a.head.head.seq == 1,
                _ => {}
            }
        }
    }
    assert!(activated, "seq 1 went to activation");
    // Two newer heads while seq 1 activates: one cancel, for seq 1.
    for (seq, body) in [(2, &v2), (3, &v3)] {
        let sh = head(seq, body, HeadKind::Release);
        let push = BroadcastMsg::Head(Box::new(sh));
        node.handle(now, Input::Message(1, push.into()));
    }
    let outs = outputs(&mut node);
    let cancels: Vec<u64> = outs
        .iter()
        .filter_map(|o| match o {
            Output::CancelActivation { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, vec![1], "{outs:?}");
    node.handle(
        now,
        Input::Activated {
            app: shop(),
            seq: 1,
            result: Err(crate::node::ActivationError::Cancelled),
        },
    );
    let st = node.status();
    assert_eq!(
        st.seqs,
        vec![(shop(), Position { epoch: 0, seq: 3 })],
        "seq 3 took over"
    );
}
