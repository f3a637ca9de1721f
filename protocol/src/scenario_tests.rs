//! The figures at a few hundred nodes, with fixed seeds, asserted against their targets
//! (the bench `mesh_sim` runs the same scenarios at 10,000 nodes and prints them). Every test
//! prints its seed and figures; `FLEETCAST_SEED=<n>` replays one.

use std::time::Duration;

use crate::scenario::{self, Figures, Scenario};
use crate::sim_tests::seed;

/// The reference WAN model (10–50 ms, 100 Mb/s up, 1% loss, 5 MiB) at `n` nodes.
fn wan(n: usize, seed: u64) -> Scenario {
    Scenario::wan(n, seed)
}

fn check_common(fig: &Figures) {
    check_counted(fig);
    assert_eq!(
        fig.publisher_count as usize, fig.live,
        "the publisher's tally counts every live node\n{fig}"
    );
    check_census(fig);
}

/// The census after the release counts every live node once, all on the release.
fn check_census(fig: &Figures) {
    let census = fig.census.as_ref().expect("the scenario asks for a census");
    let count = census.count.as_ref().expect("the census is answered");
    assert!(
        count.agents as usize <= fig.live,
        "a census never over-counts\n{fig}"
    );
    assert_eq!(
        (
            count.agents as usize,
            count.unanswered,
            count.focus_active as usize
        ),
        (fig.live, 0, fig.live),
        "the census counts every live node, each on the release\n{fig}"
    );
    let rtt = census.round_trip.expect("answered");
    assert!(
        rtt < scenario::CENSUS_BUDGET,
        "answered before the budget\n{fig}"
    );
}

/// Everything but the exact tally count (which misses orphaned subtrees after crashes).
fn check_counted(fig: &Figures) {
    assert_eq!(fig.converged, fig.live, "every live node converges\n{fig}");
    assert!(fig.max_hops <= 10, "last-delivery hops ≤ 10\n{fig}");
    assert!(fig.duplicate_ratio <= 0.02, "duplicate payload ≤ 2%\n{fig}");
    assert!(
        fig.publisher_egress <= 2.0,
        "publisher egress ≤ 2× S\n{fig}"
    );
    assert!(
        fig.publisher_count as usize <= fig.live,
        "the publisher's tally never over-counts\n{fig}"
    );
}

#[test]
fn reference_wan_release_meets_the_targets() {
    let seed = seed(101);
    let mut sc = wan(300, seed);
    sc.idle = Duration::from_secs(30);
    let fig = scenario::run_release(&sc);
    eprintln!("{fig}");
    check_common(&fig);
    let head = fig.head_all.expect("every node got the head");
    assert!(
        head <= Duration::from_millis(400),
        "head to 100% ≤ 0.4 s\n{fig}"
    );
    assert!(fig.control_ratio <= 0.01, "control ≤ 1% of payload\n{fig}");
    let idle = fig.idle_bps_per_node.expect("measured");
    assert!(
        idle <= 10_000.0,
        "idle membership ≤ 10 kbit/s per node\n{fig}"
    );
}

#[test]
fn one_mib_release_keeps_control_traffic_under_one_percent() {
    let seed = seed(102);
    let mut sc = wan(300, seed);
    sc.size = 1024 * 1024;
    let fig = scenario::run_release(&sc);
    eprintln!("{fig}");
    check_common(&fig);
    assert!(fig.control_ratio <= 0.01, "control ≤ 1% of payload\n{fig}");
}

#[test]
fn ten_percent_crashing_mid_release_with_five_percent_loss_converges_in_time() {
    let seed = seed(103);
    let mut base = wan(300, seed);
    base.net.loss = 0.05;
    let mut crash = base.clone();
    crash.crash_fraction = 0.10;
    let no_fault = scenario::run_release(&base);
    eprintln!("no faults:\n{no_fault}");
    check_common(&no_fault);
    let fig = scenario::run_release(&crash);
    eprintln!("10% crash at {:?}:\n{fig}", crash.crash_at);
    // Nodes whose tally parent crashed re-parent (poisoning their subtree first when no
    // neighbour ranks below them): the publisher counts every live node.
    check_common(&fig);
    assert!(fig.live < fig.nodes, "nodes crashed");
    let (a, b) = (no_fault.bytes_all.unwrap(), fig.bytes_all.unwrap());
    assert!(
        b <= a + Duration::from_secs(5),
        "converges within the no-fault time + 5 s: {b:?} vs {a:?}"
    );
}

/// Known miss: bytes to 100% are ~3× the lower bound (10k nodes: ~3.8×), not 1.3×. The ramp is
/// bound by pull latency: each hop of a chunk costs announce + request + chunk (~3 one-way
/// latencies + serialisation), so holders double every ~90 ms instead of ~50 ms, and uploads
/// sit idle (least-served-first serving and larger request windows barely change it). Request-
/// ahead (`Coming`) and a one-per-chunk first-copy push were tried (not merged; BENCHMARKS.md):
/// the median improved but the last node finished later, and unconstrained push cost ~60%
/// duplicates. Note the sim charges a lost packet as one RTT on the whole chunk, and with 1%
/// loss 89% of 256 KiB chunks lose one, so each hop costs ~c/B + L + 2L, not c/B + L.
#[test]
#[ignore = "target not met yet: bytes to 100% ≈ 3× the lower bound at 300 nodes, 3.8× at 10k (BENCHMARKS.md)"]
fn reference_wan_bytes_within_1_3x_of_the_lower_bound() {
    let seed = seed(101);
    let fig = scenario::run_release(&wan(300, seed));
    eprintln!("{fig}");
    let ratio = fig.bytes_vs_bound().expect("converged");
    assert!(ratio <= 1.3, "bytes to 100% ≤ 1.3× the lower bound\n{fig}");
}

#[test]
fn a_root_rotation_and_a_new_epoch_head_reach_a_wan_fleet() {
    let seed = seed(31);
    let fig = scenario::run_rotation(&Scenario::wan(150, seed));
    eprintln!("{fig}");
    assert!(
        fig.root_to_100.is_some_and(|t| t < Duration::from_secs(2)),
        "{fig}"
    );
    assert!(fig.head_to_100.is_some(), "{fig}");
}
