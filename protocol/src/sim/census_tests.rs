//! The census in the simulator: a 1,000-node fleet counted exactly, before and after crashes
//! (split from `sim_tests.rs`). The test prints its seed; `FLEETCAST_SEED=<n>` replays it.

use std::time::Duration;

use crate::head::HeadKind;
use crate::scenario::{content, fleet};
use crate::sim::Id;
use crate::sim_tests::{converge, head, lan, overlay_connected, seed, shop};

/// A census from the publisher counts a 1,000-node fleet exactly, with the per-app entries of
/// the release. After 10% of the nodes crash and membership repairs the overlay, it counts
/// exactly the live nodes: every active view holds live peers only again, so no subtree is
/// left waiting. (What holds whatever the timing, and is asserted too: a census never
/// over-counts, and with nothing `unanswered` it counts every node the overlay reaches.)
#[test]
fn a_census_counts_the_fleet_exactly_before_and_after_crashes() {
    use crate::scenario::{CENSUS_BUDGET, measure_census};
    use crate::wire::{CensusEntry, Focus, ServeState};
    let seed = seed(13);
    let n = 1_000;
    let mut sim = fleet(n, 5, 6, lan(seed), Duration::from_secs(20));
    sim.record_events = false;
    let body = content(1, 100_000);
    let h1 = head(1, &body, HeadKind::Release);
    sim.publish(0, h1.clone(), body);
    assert!(
        converge(&mut sim, 1, Duration::from_secs(20)),
        "seed {seed}"
    );
    let focus = Some(Focus {
        app: shop(),
        seq: 1,
    });
    let fig = measure_census(&mut sim, 0, 1, CENSUS_BUDGET, focus.clone());
    eprintln!("{n} nodes:\n{fig}");
    let count = fig.count.expect("answered");
    assert_eq!(
        (count.agents, count.unanswered),
        (n as u32, 0),
        "seed {seed}"
    );
    assert_eq!((count.focus_active, count.missing.len()), (n as u32, 0));
    let rel = &h1.head.release;
    let entry = CensusEntry {
        app: shop(),
        seq: 1,
        version: rel.version.clone(),
        digest: rel.digest,
        state: ServeState::Active,
        agents: n as u32,
    };
    assert_eq!(count.entries, vec![entry.clone()], "seed {seed}");
    assert!(
        fig.round_trip.unwrap() < Duration::from_secs(1),
        "seed {seed}"
    );

    let ids: Vec<Id> = (1..n).collect();
    let victims = sim.rng().sample(&ids, n / 10);
    for v in &victims {
        sim.crash(*v);
    }
    sim.run(Duration::from_secs(30));
    assert!(
        overlay_connected(&sim),
        "seed {seed}: the survivors repaired"
    );
    let live = sim.live().len();
    let entry_node = sim.live()[live / 2];
    let fig = measure_census(&mut sim, entry_node, 2, CENSUS_BUDGET, focus);
    eprintln!(
        "after {} crashes, asked at node {entry_node}:\n{fig}",
        victims.len()
    );
    let count = fig.count.expect("answered");
    assert!(
        count.agents as usize <= live,
        "seed {seed}: never over-counts"
    );
    if count.unanswered == 0 {
        assert_eq!(count.agents as usize, live, "seed {seed}");
    }
    assert_eq!(
        (count.agents as usize, count.unanswered),
        (live, 0),
        "seed {seed}"
    );
    let entry = CensusEntry {
        agents: live as u32,
        ..entry
    };
    assert_eq!(count.entries, vec![entry], "seed {seed}");

    // Crashes while a census is in flight: links to the dead are noticed after
    // `detect_after`, the dead count as unanswered, and the census answers within its budget.
    let ids = sim.live();
    let victims = sim.rng().sample(&ids[1..], 10);
    sim.census(0, 3, CENSUS_BUDGET, None);
    sim.run(Duration::from_millis(30));
    for v in &victims {
        sim.crash(*v);
    }
    let end = sim.now + CENSUS_BUDGET;
    assert!(sim.run_until(end, |s| s.publisher.censuses[&3].answered_at.is_some()));
    let answer = &sim.publisher.censuses[&3];
    let count = answer.count.as_ref().expect("a count");
    let took = answer.answered_at.unwrap() - answer.asked_at;
    eprintln!(
        "{} crashed mid-census: {} agents of {live} live before, {} unanswered, in {took:?}",
        victims.len(),
        count.agents,
        count.unanswered
    );
    assert!(
        count.agents as usize <= live,
        "seed {seed}: never over-counts"
    );
    assert!(count.unanswered > 0, "seed {seed}: the dead are unanswered");
    assert!(took < CENSUS_BUDGET, "seed {seed}: not stalled ({took:?})");
}
