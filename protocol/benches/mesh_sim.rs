//! The mesh at fleet scale, in the deterministic simulator: prints the figures BENCHMARKS.md
//! records, each scenario ending with a census of the fleet (its round trip at the publisher
//! and census messages per node). `cargo bench --workspace --bench mesh_sim [-- nodes [seed]]`.

use std::time::{Duration, Instant};

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

    if std::env::var("ONLY_WAN").is_ok() {
        return;
    }
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
