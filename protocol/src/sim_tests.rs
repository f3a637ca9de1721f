//! Mesh behaviour through the deterministic simulator (no IO). Every test prints its seed;
//! `FLEETCAST_SEED=<n> cargo test -p fleetcast-protocol <name>` replays one.

use std::time::Duration;

use crate::head::HeadKind;
use crate::release::AppName;
use crate::scenario::{self, Scenario, content, converged, fleet, signed};
use crate::sim::SimConfig;

fn seed(default: u64) -> u64 {
    let s = std::env::var("FLEETCAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("seed {s} (replay with FLEETCAST_SEED={s})");
    s
}

fn shop() -> AppName {
    AppName::new("shop").unwrap()
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
