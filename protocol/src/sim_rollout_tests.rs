//! Staged rollouts through the simulator, at a few hundred nodes on the reference WAN model
//! ([`Scenario::wan`]): the five rollout scenarios of [`crate::scenario::rollout`] with their
//! goals asserted, and a 100% wave that leaves no node out. Every test prints its seed;
//! `FLEETCAST_SEED=<n> cargo test -p fleetcast-protocol <name>` replays one.

use std::time::Duration;

use crate::head::HeadKind;
use crate::release::Digest;
use crate::rollout::{FULL, Gate, Gates, Plan, includes};
use crate::scenario::rollout::{
    self as ro, Rollout, all_on, fleet_on_release_1, head, release, running,
};
use crate::scenario::{Scenario, content};
use crate::sim::{Behaviour, Workload, node_id};
use crate::sim_tests::seed;

/// The WAN model at `n` nodes with a 1 MiB release (fast enough for the test suite).
fn wan(n: usize, seed: u64) -> Scenario {
    let mut sc = Scenario::wan(n, seed);
    sc.size = 1024 * 1024;
    sc
}

#[test]
fn a_good_release_goes_through_its_waves_and_every_node_ends_on_it() {
    let seed = seed(1);
    let sc = wan(300, seed);
    let fig = ro::run_good(&sc, &Rollout::default());
    eprintln!("{fig}");
    assert!(fig.done, "the driver finished the rollout");
    assert_eq!(fig.waves.len(), 4, "one head per wave");
    assert_eq!(fig.all_active, fig.live, "every live node runs the release");
    let last = fig.last_wave.expect("the last wave reached every node");
    let plain = fig
        .plain_release
        .expect("the release without waves reached every node");
    assert!(
        last < plain,
        "prefetch makes the last wave a broadcast plus a swap ({last:?}), faster than a fetch ({plain:?})"
    );
}

/// (2) At 500 nodes the 1% wave is a handful of nodes: the goal (≤ 1.5% ever ran it) holds
/// only if the halt comes at the first wave, before the 10% one opens.
#[test]
fn a_release_failing_its_trial_on_a_fifth_of_the_nodes_halts_at_the_first_wave() {
    let seed = seed(3);
    let sc = wan(500, seed);
    let fig = ro::run_bad_trial(&sc, &Rollout::default());
    eprintln!("{fig}");
    assert!(
        fig.failing_in_first_wave > 0,
        "seed {seed}: the first wave ({} nodes) must hold a failing node for this test to mean anything",
        fig.in_first_wave
    );
    assert_eq!(
        fig.halted.as_ref().map(|h| h.0),
        Some(Gate::Failed),
        "{fig}"
    );
    assert_eq!(fig.halted_at_wave, Some(0), "halted at the first wave");
    assert_eq!(
        fig.ever_ran, fig.in_first_wave,
        "only the first wave ever ran it"
    );
    assert!(
        fig.ever_ran_share() <= 0.015,
        "{:.2}% ran it",
        fig.ever_ran_share() * 100.0
    );
    assert!(
        fig.failure_to_reverted.is_some(),
        "every node went back to the old release"
    );
}

/// (3) Nothing traps, nothing fails its trial: the error-rate gate halts it.
#[test]
fn a_release_answering_5xx_on_half_its_requests_is_halted_by_the_error_rate_gate() {
    let seed = seed(4);
    let sc = wan(300, seed);
    let fig = ro::run_bad_errors(&sc, &Rollout::default());
    eprintln!("{fig}");
    assert_eq!(
        fig.halted.as_ref().map(|h| h.0),
        Some(Gate::ErrorRate),
        "{fig}"
    );
    assert_eq!(fig.halted_at_wave, Some(0));
    assert_eq!(fig.failed_at_halt, 0, "no trial failed");
    assert!(
        fig.error_rate_new_bp >= 4000 && fig.error_rate_old_bp == 0,
        "{fig}"
    );
    assert_eq!(
        fig.ever_ran, fig.in_first_wave,
        "only the first wave ever ran it"
    );
    assert!(
        fig.halt_to_reverted.is_some(),
        "every node went back to the old release"
    );
}

/// (4) Fail-static: with no operator the fleet stays at wave 2 (a node that restarts and one
/// that joins mid-rollout follow it); a new driver over the newest head completes.
#[test]
fn an_operator_that_dies_at_wave_2_leaves_the_fleet_there_and_a_resume_completes() {
    let seed = seed(5);
    let sc = wan(300, seed);
    let fig = ro::run_resume(&sc, &Rollout::default());
    eprintln!("{fig}");
    assert!(fig.pushed_wave_2 && fig.wave_2_settled, "{fig}");
    assert!(
        fig.restarted_and_joined_followed.is_some(),
        "restarts and joins follow wave 2"
    );
    assert!(fig.static_checks >= 10);
    assert_eq!(
        fig.misplaced_worst, 0,
        "every node stays where wave 2 puts it"
    );
    assert!(fig.done, "the resumed driver finished");
    assert_eq!(fig.all_active, fig.live, "every live node runs the release");
}

/// (5) Anti-entropy brings the halt to a canary that was cut off when it took the release.
#[test]
fn a_canary_partitioned_before_the_halt_rolls_back_after_the_heal() {
    let seed = seed(6);
    let sc = wan(300, seed);
    let r = Rollout {
        waves: vec![300, 1000, 5000, FULL],
        ..Rollout::default()
    };
    let fig = ro::run_partitioned_canary(&sc, &r);
    eprintln!("{fig}");
    assert!(fig.partitioned_before_halt, "{fig}");
    assert_eq!(fig.halted.as_ref().map(|h| h.0), Some(Gate::ErrorRate));
    assert!(
        fig.others_rolled_back && fig.canary_on_new_before_heal,
        "{fig}"
    );
    assert!(
        fig.heal_to_reverted.is_some(),
        "the canary rolled back after the heal"
    );
    assert!(fig.all_back);
}

/// A head whose open wave is 100% is active on every one of N nodes: none is left to
/// prefetch (the bucket is always below 100%).
#[test]
fn a_full_wave_leaves_no_node_out() {
    let seed = seed(7);
    let sc = wan(400, seed);
    let (mut sim, _) = fleet_on_release_1(&sc, &Rollout::default());
    let body = content(2, 64 * 1024);
    let r2 = release(1, &body, sc.chunk_size);
    for n in [10, 1_000, 100_000] {
        let out = (0..n)
            .filter(|i| !includes(&r2.digest, &node_id(*i), FULL))
            .count();
        assert_eq!(out, 0, "{out} of {n} node ids outside the 100% wave");
    }
    let plan = Plan::new(vec![FULL], Gates::default()).unwrap();
    sim.publish(0, head(2, &r2, HeadKind::Release, Some(plan), 10), body);
    let end = sim.now + Duration::from_secs(30);
    while sim.now < end && !all_on(&sim, &r2.digest, 2) {
        sim.run(Duration::from_millis(100));
    }
    let live = sim.live();
    let off: Vec<_> = live
        .iter()
        .filter(|i| running(&sim, **i) != Some(r2.digest))
        .collect();
    assert!(off.is_empty(), "nodes left out of the 100% wave: {off:?}");
    let staged = live
        .iter()
        .filter(|i| {
            sim.nodes[*i]
                .node
                .as_ref()
                .unwrap()
                .staged(&ro::shop())
                .is_some()
        })
        .count();
    assert_eq!(staged, 0, "nobody prefetched instead");
    sim.run(Duration::from_secs(2));
    let t = &sim.publisher.tallies[&(ro::shop(), 2)];
    assert_eq!((t.nodes, t.in_wave, t.active), (400, 400, 400), "{t:?}");
}

/// The latency model and the p99 gate: a release 75× slower than the one it replaces halts.
#[test]
fn a_slow_release_is_halted_by_the_latency_gate() {
    let seed = seed(8);
    let sc = wan(200, seed);
    let r = Rollout {
        waves: vec![500, FULL],
        gates: Gates {
            bake_ms: 3_000,
            max_p99_increase_pct: Some(50),
            ..Gates::default()
        },
        ..Rollout::default()
    };
    let slow = Behaviour {
        latency: Duration::from_millis(300),
        ..Behaviour::default()
    };
    let fig = ro::run_bad(&sc, &r, slow);
    eprintln!("{fig}");
    assert_eq!(
        fig.halted.as_ref().map(|h| h.0),
        Some(Gate::Latency),
        "{fig}"
    );
    assert_eq!(fig.halted_at_wave, Some(0));
    assert!(
        fig.halt_to_reverted.is_some(),
        "every node went back to the old release"
    );
}

/// Which nodes fail a trial is a fixed hash share: about the share asked, the same on every
/// call, other nodes for another seed.
#[test]
fn trial_failures_are_a_deterministic_hash_share_of_the_nodes() {
    let seed = seed(9);
    let w = Workload {
        releases: [(
            Digest::of(b"bad"),
            Behaviour {
                trial_fail_bp: 2000,
                ..Behaviour::default()
            },
        )]
        .into(),
        ..Workload::default()
    };
    let bad = Digest::of(b"bad");
    let failing: Vec<usize> = (0..10_000)
        .filter(|i| w.fails_trial(seed, &bad, *i))
        .collect();
    assert!(
        (1800..2200).contains(&failing.len()),
        "{} of 10,000",
        failing.len()
    );
    let again: Vec<usize> = (0..10_000)
        .filter(|i| w.fails_trial(seed, &bad, *i))
        .collect();
    assert_eq!(failing, again);
    let other: Vec<usize> = (0..10_000)
        .filter(|i| w.fails_trial(seed + 1, &bad, *i))
        .collect();
    assert_ne!(failing, other);
    let good = Digest::of(b"good");
    assert!((0..10_000).all(|i| !w.fails_trial(seed, &good, i)));
}
