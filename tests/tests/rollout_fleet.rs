//! Staged rollouts on a 20-agent mesh (real quinn, sled and wasmtime on loopback, the real
//! `fleetcast` binary driving): a good release goes through its waves, the agents outside a
//! wave prefetch it and the last wave swaps without a transfer; a release that fails only on
//! some agents (those whose bucket for it is in the lower half: chosen by a hash of the node
//! id) is halted at its first wave and rolled back, and the agents outside that wave never
//! serve it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cli::release;
use common::{Fleet, guest, until_every_agent_serves};
use fleetcast::http_get;
use fleetcast_protocol::Digest;
use fleetcast_protocol::rollout::{bucket, pct};
use fleetcast_protocol::wire::NodeId;
use serde_json::Value;

const AGENTS: usize = 20;

/// 20 agents; agent i joins through agents i-1 and i/2 (a connected mesh, no hub).
async fn fleet_on_v1() -> Fleet {
    let fleet = Fleet::start(AGENTS, |i| match i {
        0 => vec![],
        1 => vec![0],
        i => vec![i - 1, i / 2],
    })
    .await;
    let n = AGENTS.to_string();
    release(
        &fleet,
        "hello-v1.wasm",
        "1.0.0",
        &["--wait", "--expect", &n],
    )
    .await
    .expect(0);
    until_every_agent_serves(&fleet, "1.0.0").await;
    fleet
}

async fn node_ids(fleet: &Fleet) -> Vec<NodeId> {
    let mut ids = Vec::new();
    for i in 0..AGENTS {
        ids.push(fleet.agent(i).status().await.unwrap().node);
    }
    ids
}

/// The first wave that includes exactly the `k` agents of lowest bucket for `digest`: its
/// fraction ("0.37%" …) and those agents.
fn first_wave(ids: &[NodeId], digest: &Digest, k: usize) -> (String, Vec<usize>) {
    let mut b: Vec<(u16, usize)> = ids
        .iter()
        .enumerate()
        .map(|(i, n)| (bucket(digest, n), i))
        .collect();
    b.sort();
    let cut = b[k - 1].0 + 1;
    assert!(b[k].0 >= cut, "two agents share a bucket: {b:?}");
    (pct(cut), b[..k].iter().map(|(_, i)| *i).collect())
}

fn events<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == name).collect()
}

fn digest_of(file: &str) -> Digest {
    Digest::of(&std::fs::read(guest(file)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_a_good_release_is_promoted_and_a_release_failing_on_some_is_halted_at_its_first_wave()
 {
    let fleet = fleet_on_v1().await;
    let ids = node_ids(&fleet).await;

    // A good release through three waves: 3 agents, then half, then all.
    let (w1, canaries) = first_wave(&ids, &digest_of("hello-v2.wasm"), 3);
    let waves = format!("{w1},50%,100%");
    let r = release(
        &fleet,
        "hello-v2.wasm",
        "2.0.0",
        &[
            "--waves",
            &waves,
            "--bake",
            "1s",
            "--min-requests",
            "0",
            "--json",
        ],
    )
    .await;
    r.expect(0);
    let lines = r.json();
    let rollout = events(&lines, "rollout");
    let first = rollout
        .iter()
        .rfind(|e| e["plan"]["wave"] == 1)
        .unwrap_or_else(|| panic!("no rollout event for wave 1: {r:#?}"));
    let c = &first["counts"];
    assert_eq!(c["in_wave"], 3, "{first}");
    assert_eq!(c["nodes"], AGENTS, "every agent counted itself: {first}");
    assert_eq!(
        c["prefetched"],
        AGENTS - 3,
        "the others prefetched: {first}"
    );
    assert_eq!(c["census"], AGENTS, "{first}");
    assert_eq!(r.last()["result"], "promoted", "{r:#?}");
    until_every_agent_serves(&fleet, "2.0.0").await;
    assert_eq!(canaries.len(), 3);

    // A release that traps on /crash; only the agents in the lower half of buckets for it get
    // /crash requests, so it fails on those (all three canaries among them) and nowhere else.
    let bad = digest_of("fault-crash.wasm");
    let (w1, canaries) = first_wave(&ids, &bad, 3);
    let (_, failing) = first_wave(&ids, &bad, AGENTS / 2);
    let addrs: Vec<_> = failing
        .iter()
        .map(|i| fleet.agent(*i).http_addr())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for a in &addrs {
                    let _ = http_get::get(*a, "hello", "/crash").await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let waves = format!("{w1},50%,100%");
    let r = release(
        &fleet,
        "fault-crash.wasm",
        "3.0.0",
        &[
            "--waves",
            &waves,
            "--bake",
            "2s",
            "--trial-requests",
            "100000",
            "--trial-secs",
            "120",
            "--json",
        ],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    r.expect(5);
    let lines = r.json();
    let halted = events(&lines, "halted");
    assert_eq!(halted.len(), 1, "{r:#?}");
    assert_eq!(halted[0]["gate"], "failed", "{}", halted[0]);
    assert_eq!(
        halted[0]["wave"], 1,
        "halted at the first wave: {}",
        halted[0]
    );
    assert_eq!(halted[0]["rolled_back_to"]["version"], "2.0.0");
    until_every_agent_serves(&fleet, "2.0.0").await;
    // Only the canaries ever ran 3.0.0.
    for i in 0..AGENTS {
        let st = fleet.agent(i).status().await.unwrap();
        let ran = st.apps[0]
            .history
            .iter()
            .any(|h| h.release.version.to_string() == "3.0.0");
        assert_eq!(
            ran,
            canaries.contains(&i),
            "agent {i} ran 3.0.0: {ran}; canaries {canaries:?}"
        );
    }
}
