//! The fleet root in the simulator: rotations spreading, a partitioned node catching up the
//! chain, roots persisted on the simulated disk and rebuilt on restart. Each test prints its
//! seed; `FLEETCAST_SEED=<n> cargo test -p fleetcast-protocol <name>` replays one.

use std::time::Duration;

use crate::release::AppName;
use crate::scenario::{
    content, converged, first_root, fleet_with, next_root, rooted_config, signed_in, time_to_root,
};
use crate::sim::{Id, Sim, SimConfig};
use crate::sim_tests::seed;
use crate::trust::SignedRoot;

const CHUNK: u32 = 16 * 1024;

fn shop() -> AppName {
    AppName::new("shop").unwrap()
}

/// A settled fleet of `n` nodes anchored at `anchor` (active views of 4, 5 contacts each).
fn rooted_fleet(n: usize, seed: u64, anchor: &SignedRoot) -> Sim {
    let net = SimConfig {
        seed,
        latency: (Duration::from_millis(5), Duration::from_millis(20)),
        upload_bps: Some(100_000_000),
        ..SimConfig::default()
    };
    fleet_with(n, 5, net, Duration::from_secs(20), |id| {
        rooted_config(id, 4, anchor)
    })
}

#[test]
fn a_root_rotation_reaches_every_node() {
    let seed = seed(21);
    let v1 = first_root(u64::MAX);
    let mut sim = rooted_fleet(60, seed, &v1);
    let v2 = next_root(&v1, 100, u64::MAX, 1, &[]);
    sim.push_roots(0, vec![v2.clone()]);
    let t = time_to_root(&mut sim, 2, Duration::from_secs(10));
    eprintln!("root v2 at 100% of 60 nodes in {t:?}");
    assert!(t.is_some_and(|t| t < Duration::from_secs(2)), "{t:?}");
    for (id, n) in &sim.nodes {
        assert_eq!(n.disk.roots, vec![v2.clone()], "node {id} persisted it");
        assert_eq!(n.disk.floor_ms, 100, "node {id}");
    }
    // A restarted node rebuilds its trust from its disk.
    sim.crash(9);
    sim.run(Duration::from_secs(3));
    sim.restart(9);
    let n = &sim.nodes[&9];
    assert_eq!(n.node.as_ref().unwrap().trust().version(), 2);
    assert_eq!(n.node.as_ref().unwrap().trust().epoch(), 2);
}

#[test]
fn a_node_partitioned_across_two_rotations_catches_up_and_takes_the_new_epoch() {
    let seed = seed(22);
    let v1 = first_root(u64::MAX);
    let mut sim = rooted_fleet(40, seed, &v1);
    let app = shop();
    let a = content(1, 100_000);
    sim.publish(0, signed_in("shop", 5, 1, &a, CHUNK, 0, 10), a);
    sim.run(Duration::from_secs(10));
    assert!(converged(&sim, &app, 5));

    let away: Id = 17;
    let side = move |id: Id| u8::from(id == away);
    sim.partition(side);
    sim.run(Duration::from_secs(5));
    let v2 = next_root(&v1, 100, u64::MAX, 1, &[]); // a new release key: epoch 2
    let v3 = next_root(&v2, 200, u64::MAX, 1, &[]);
    sim.push_roots(0, vec![v2.clone()]);
    sim.run(Duration::from_secs(3));
    sim.push_roots(1, vec![v3.clone()]);
    sim.run(Duration::from_secs(3));
    for (id, n) in &sim.nodes {
        let want = if *id == away { 1 } else { 3 };
        assert_eq!(n.root_version(), want, "node {id}");
    }

    sim.heal();
    let t = time_to_root(&mut sim, 3, Duration::from_secs(60));
    eprintln!("node {away} caught up v2 and v3 {t:?} after the heal");
    assert!(t.is_some(), "node {away} got the chain");
    assert_eq!(sim.nodes[&away].disk.roots, vec![v2, v3]);

    let b = content(2, 100_000);
    sim.publish(3, signed_in("shop", 1, 2, &b, CHUNK, 1, 300), b);
    let end = sim.now + Duration::from_secs(20);
    assert!(sim.run_until(end, |s| converged(s, &app, 1)));
    assert_eq!(sim.nodes[&away].node.as_ref().unwrap().trust().epoch(), 2);
    let pos = sim.nodes[&away].position(&app).unwrap();
    assert_eq!((pos.epoch, pos.seq), (2, 1));
}
