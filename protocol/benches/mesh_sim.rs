//! The mesh at fleet scale, in the deterministic simulator: prints the figures BENCHMARKS.md
//! records, each scenario ending with a census of the fleet (its round trip at the publisher
//! and census messages per node), then the staged rollouts (waves 1%, 10%, 50%, 100%, a 3 s bake).
//! `cargo bench --workspace --bench mesh_sim [-- nodes [seed]]`; `ONLY_WAN=1`: the reference
//! WAN model only (no 5% loss runs); `ONLY_ROLLOUTS=1`: the rollouts only (`=good`, `trial`, `errors`, `resume` or `canary`: that one).

use std::time::{Duration, Instant};

use fleetcast_protocol::scenario::rollout::{self, Rollout};
use fleetcast_protocol::scenario::{self, Scenario};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let nodes: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    println!(
        "mesh_sim: {nodes} nodes, seed {seed} (replay: cargo bench --workspace --bench mesh_sim -- {nodes} {seed})"
    );

    if std::env::var("ONLY_ROLLOUTS").is_ok() {
        return rollouts(nodes, seed);
    }
    let mut sc = Scenario::wan(nodes, seed);
    sc.idle = Duration::from_secs(60);
    let t = Instant::now();
    let fig = scenario::run_release(&sc);
    println!(
        "\n== reference WAN model: 10–50 ms, 100 Mb/s up, 1% loss, 5 MiB, 256 KiB chunks ==\n{fig}  (simulated in {:.1} s wall)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let rot = scenario::run_rotation(&Scenario::wan(nodes, seed));
    println!(
        "\n== fleet root rotation (v1 → v2, new release key), then a head of the new epoch ==\n{rot}  (simulated in {:.1} s wall)",
        t.elapsed().as_secs_f64()
    );

    if std::env::var("ONLY_WAN").is_err() {
        loss_and_crashes(nodes, seed);
    }
    rollouts(nodes, seed);
}

/// 5% loss, with and without 10% of the nodes crashing mid-release.
fn loss_and_crashes(nodes: usize, seed: u64) {
    let mut crash = Scenario::wan(nodes, seed);
    crash.net.loss = 0.05;
    crash.crash_fraction = 0.10;
    let t = Instant::now();
    let base = {
        let mut b = crash.clone();
        b.crash_fraction = 0.0;
        scenario::run_release(&b)
    };
    let fig = scenario::run_release(&crash);
    println!(
        "\n== 5% loss, no faults ==\n{base}\n== 5% loss, 10% of nodes crash {} ms into the release ==\n{fig}  (both simulated in {:.1} s wall)",
        crash.crash_at.as_millis(),
        t.elapsed().as_secs_f64()
    );
    if let (Some(a), Some(b)) = (base.bytes_all, fig.bytes_all) {
        println!(
            "convergence with crashes − without: {:+.0} ms (target ≤ +5000 ms)",
            (b.as_secs_f64() - a.as_secs_f64()) * 1e3
        );
    }
}

/// The five staged-rollout scenarios on the reference WAN model.
fn rollouts(nodes: usize, seed: u64) {
    let sc = Scenario::wan(nodes, seed);
    let ro = Rollout::default();
    let waves: Vec<String> = ro
        .waves
        .iter()
        .map(|w| fleetcast_protocol::rollout::pct(*w))
        .collect();
    let head = format!(
        "waves {}, bake {} s, {} requests/s per node, trial {} s",
        waves.join("/"),
        ro.gates.bake_ms / 1000,
        ro.rps,
        ro.trial.as_secs()
    );
    // ONLY_ROLLOUTS=resume (or good, trial, errors, canary): that scenario only.
    let only = std::env::var("ONLY_ROLLOUTS").unwrap_or_default();
    let run = |name: &str| {
        !["good", "trial", "errors", "resume", "canary"].contains(&only.as_str()) || only == name
    };
    if run("good") {
        let t = Instant::now();
        let good = rollout::run_good(&sc, &ro);
        println!(
            "\n== staged rollout of a good release ({head}) ==\n{good}  (simulated in {:.1} s wall)",
            t.elapsed().as_secs_f64()
        );
    }
    if run("trial") {
        let t = Instant::now();
        let trial = rollout::run_bad_trial(&sc, &ro);
        println!(
            "\n== a release whose trial fails on 20% of the nodes ==\n{trial}  (simulated in {:.1} s wall)",
            t.elapsed().as_secs_f64()
        );
    }
    if run("errors") {
        let t = Instant::now();
        let errors = rollout::run_bad_errors(&sc, &ro);
        println!(
            "\n== a release answering 5xx on half its requests, no trap ==\n{errors}  (simulated in {:.1} s wall)",
            t.elapsed().as_secs_f64()
        );
    }
    if run("resume") {
        let t = Instant::now();
        let resume = rollout::run_resume(&sc, &ro);
        println!(
            "\n== the operator dies after pushing wave 2, then a resume ==\n{resume}  (simulated in {:.1} s wall)",
            t.elapsed().as_secs_f64()
        );
    }
    if run("canary") {
        let t = Instant::now();
        let canary = rollout::run_partitioned_canary(&sc, &ro);
        println!(
            "\n== a 5xx release, a canary partitioned as it takes it (before the halt), then healed ==\n{canary}  (simulated in {:.1} s wall)",
            t.elapsed().as_secs_f64()
        );
    }
}
