//! Release and rollback latency across a fleet of in-process agents on loopback (real quinn,
//! sled, wasmtime), against a baseline measured in the same run: one small-message round trip
//! to the entry agent (a status request) over the same QUIC stack.
//!
//! Run: `cargo bench --workspace --bench propagation` (env FLEETCAST_BENCH_AGENTS, default 8;
//! FLEETCAST_BENCH_ROUNDS, default 10). Each agent's bootstrap contact is the agent before it;
//! the mesh then builds its own overlay (HyParView), so a head crosses fewer hops than a chain.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Fleet, TIMEOUT};
use fleetcast::session::Session;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn summary(name: &str, mut xs: Vec<Duration>) {
    xs.sort();
    let p = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<34} n={:<3} p50 {:>9.2?}  p90 {:>9.2?}  max {:>9.2?}",
        xs.len(),
        p(0.5),
        p(0.9),
        xs[xs.len() - 1]
    );
}

fn main() {
    let agents = env("FLEETCAST_BENCH_AGENTS", 8);
    let rounds = env("FLEETCAST_BENCH_ROUNDS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fleet = Fleet::start(agents, |i| if i == 0 { vec![] } else { vec![i - 1] }).await;
        println!("fleet: {agents} agents, each joining through the one before it, {rounds} rounds");

        // Baseline: one small-message round trip to the entry agent.
        let mut s = Session::connect(fleet.agent(0).quic_addr(), TIMEOUT).await.unwrap();
        let mut base = Vec::new();
        for _ in 0..rounds * 10 {
            let t = Instant::now();
            s.status(TIMEOUT).await.unwrap();
            base.push(t.elapsed());
        }
        drop(s);

        let t = Instant::now();
        fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
        let first = t.elapsed();
        let t = Instant::now();
        fleet.release("hello-v2.wasm", "2.0.0").await.unwrap();
        let second = t.elapsed();

        let mut rollbacks = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let out = fleet.rollback(None).await.unwrap();
            rollbacks.push(t.elapsed());
            assert_eq!(out.active(), agents);
        }
        summary("baseline: status round trip (1 hop)", base);
        println!("{:<34} {first:>9.2?}  (fetch + compile on every agent)", "release v1 -> all active");
        println!("{:<34} {second:>9.2?}", "release v2 -> all active");
        summary("rollback -> all active", rollbacks);
        println!("(times include the publisher's connect + status + sign; the fleet count comes back up the broadcast tree)");
    });
}
