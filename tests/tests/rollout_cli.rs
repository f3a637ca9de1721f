//! Staged rollouts as an operator runs them: the real `fleetcast` binary drives
//! `release --waves` against agents in this process (real quinn, sled and wasmtime on
//! loopback): a good release is promoted wave by wave (exit 0, every agent serves it,
//! `rollout status` says 100%), a release whose trial fails on the agents that run it is
//! halted by the `failed` gate and rolled back (exit 5, every agent serves the old release).
//!
//! Agents outside a wave prefetch the release (`Output::Prefetch`); whichever agents a wave
//! includes (a hash of the release and the node id), the outcome checked is the same: a wave
//! that includes nobody is skipped once the whole fleet counted itself.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cli::{fleetcast, release};
use common::{Fleet, TIMEOUT, until_every_agent_serves};
use fleetcast::http_get;
use serde_json::Value;
use tokio::time::Instant;

const AGENTS: usize = 4;

/// Four agents, each joined through agent 0, all serving hello 1.0.0.
async fn fleet_on_v1() -> Fleet {
    let fleet = Fleet::start(AGENTS, |i| if i == 0 { vec![] } else { vec![0] }).await;
    release(&fleet, "hello-v1.wasm", "1.0.0", &["--wait"])
        .await
        .expect(0);
    until_every_agent_serves(&fleet, "1.0.0").await;
    fleet
}

fn events_named<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_is_promoted_wave_by_wave_and_status_says_100() {
    let fleet = fleet_on_v1().await;
    let r = release(
        &fleet,
        "hello-v2.wasm",
        "2.0.0",
        &[
            "--waves",
            "50%,100%",
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
    let done = r.last();
    assert_eq!(done["event"], "done", "{r:#?}");
    assert_eq!(done["result"], "promoted", "{done}");
    assert_eq!(done["active"].as_u64(), Some(AGENTS as u64), "{done}");
    // A head per wave (a wave that includes nobody is skipped: at least the 100% one), each
    // signed one seq above the one before.
    let pushed = events_named(&lines, "pushed");
    assert!(!pushed.is_empty() && pushed.len() <= 2, "{pushed:?}");
    let seqs: Vec<u64> = pushed.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // The live view's events: the last one at 100%, passing, every agent in the wave active.
    let views = events_named(&lines, "rollout");
    let last = views.last().expect("rollout events");
    assert_eq!(last["plan"]["fraction"], "100%", "{last}");
    assert_eq!(last["plan"]["waves"], serde_json::json!(["50%", "100%"]));
    assert_eq!(
        last["counts"]["in_wave"].as_u64(),
        Some(AGENTS as u64),
        "{last}"
    );
    assert_eq!(
        last["counts"]["active"].as_u64(),
        Some(AGENTS as u64),
        "{last}"
    );
    assert_eq!(
        last["counts"]["census"].as_u64(),
        Some(AGENTS as u64),
        "{last}"
    );
    assert_eq!(last["verdict"]["state"], "pass", "{last}");
    assert_eq!(last["plan"]["gates"]["bake_ms"], 1000);
    assert_eq!(
        last["plan"]["gates"]["max_error_rate_bp"], 100,
        "the default: +1%"
    );
    until_every_agent_serves(&fleet, "2.0.0").await;

    // rollout status, from another agent, without keys.
    let peer = fleet.agent(AGENTS - 1).quic_addr().to_string();
    let st = fleetcast(&[
        "rollout", "status", "--app", "hello", "--peer", &peer, "--json",
    ])
    .await;
    st.expect(0);
    let s = st.last();
    assert_eq!(s["event"], "rollout-status", "{s}");
    assert_eq!(s["release"]["version"], "2.0.0", "{s}");
    assert_eq!(s["plan"]["fraction"], "100%", "{s}");
    assert_eq!(s["plan"]["wave"], 2, "{s}");
    assert_eq!(s["here"], true, "{s}");
    let human = fleetcast(&["rollout", "status", "--app", "hello", "--peer", &peer]).await;
    human.expect(0);
    assert!(
        human.stdout.contains("hello 2.0.0 at ") && human.stdout.contains("wave 2 of 2 (100%)"),
        "{human:#?}"
    );
    assert!(
        human
            .stdout
            .contains("gates: bake 1s, --max-failed 0, --max-error-rate +1%"),
        "{human:#?}"
    );

    // Nothing is staged any more: pause has nothing... but it is a plan head at 100%; abort
    // goes back to 1.0.0 and exits 0 once every agent is back.
    let key = fleet.key().display().to_string();
    let entry = fleet.agent(0).quic_addr().to_string();
    let a = fleetcast(&[
        "rollout", "abort", "--app", "hello", "--key", &key, "--peer", &entry, "--json",
    ])
    .await;
    a.expect(0);
    let ends = a.json();
    let halted = events_named(&ends, "halted");
    assert_eq!(halted.len(), 1, "{a:#?}");
    assert_eq!(halted[0]["gate"], Value::Null);
    assert_eq!(halted[0]["rolled_back_to"]["version"], "1.0.0");
    assert_eq!(a.last()["result"], "aborted", "{a:#?}");
    until_every_agent_serves(&fleet, "1.0.0").await;

    // The same release again, as a person sees it: a line per wave, then the result.
    let r = release(
        &fleet,
        "hello-v2.wasm",
        "2.0.0",
        &[
            "--waves",
            "50%,100%",
            "--bake",
            "500ms",
            "--min-requests",
            "0",
        ],
    )
    .await;
    println!("{}", r.stdout);
    r.expect(0);
    assert!(
        r.stdout.contains("the fleet has 4 agents (census)"),
        "{r:#?}"
    );
    assert!(
        r.stdout.contains("gates: bake 500ms, --max-failed 0, --max-error-rate +1%, --max-p99-increase off, --min-requests 0"),
        "{r:#?}"
    );
    assert!(
        r.stdout
            .contains("wave 2/2 100%: 4 of 4 active (in wave), 0 failed, "),
        "{r:#?}"
    );
    assert!(
        r.stdout
            .contains("promoted to 100%: 4 of 4 agents run hello 2.0.0"),
        "{r:#?}"
    );
    until_every_agent_serves(&fleet, "2.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_fails_its_trial_is_halted_by_the_failed_gate_and_rolled_back() {
    let fleet = fleet_on_v1().await;
    // Every agent gets /crash requests: an agent that runs the fault release traps, its trial
    // fails and it reverts; the others serve 1.0.0, which answers them.
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<_> = fleet
        .agents
        .iter()
        .flatten()
        .map(|a| a.http_addr())
        .collect();
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for a in &addrs {
                    let _ = http_get::get(*a, "hello", "/crash").await;
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    let r = release(
        &fleet,
        "fault-crash.wasm",
        "3.0.0",
        &[
            "--waves",
            "50%,100%",
            "--bake",
            "1s",
            "--trial-requests",
            "100000",
            "--trial-secs",
            "120",
            "--json",
        ],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 0);
    r.expect(5);
    let lines = r.json();
    let e = r.last();
    assert_eq!(
        (e["event"].as_str(), e["kind"].as_str()),
        (Some("error"), Some("halted")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("halted by the failed gate"),
        "{e}"
    );
    let halted = events_named(&lines, "halted");
    assert_eq!(halted.len(), 1, "{r:#?}");
    assert_eq!(halted[0]["gate"], "failed", "{}", halted[0]);
    assert_eq!(halted[0]["rolled_back_to"]["version"], "1.0.0");
    assert_eq!(halted[0]["complete"], true, "{}", halted[0]);
    assert!(r.stderr.contains("halted by the failed gate"), "{r:#?}");
    // The rollback head was the last one pushed.
    let pushed = events_named(&lines, "pushed");
    assert_eq!(pushed.last().unwrap()["kind"], "rollback", "{pushed:?}");
    until_every_agent_serves(&fleet, "1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_stops_its_driver_and_resume_promotes_it_from_another_process() {
    let fleet = fleet_on_v1().await;
    let key = fleet.key().display().to_string();
    let entry = fleet.agent(0).quic_addr().to_string();
    // The driver, with a bake long enough for the pause to come during its first wave; the
    // pause, as soon as agent 0 holds a staged head.
    let driver = release(
        &fleet,
        "hello-v2.wasm",
        "2.0.0",
        &[
            "--waves",
            "50%,100%",
            "--bake",
            "4s",
            "--min-requests",
            "0",
            "--json",
        ],
    );
    let pauser = async {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let st = fleet.agent(0).status().await.unwrap();
            let staged = st
                .apps
                .iter()
                .any(|a| a.plan.is_some() || a.staged.as_ref().is_some_and(|s| s.plan.is_some()));
            if staged {
                break;
            }
            assert!(Instant::now() < deadline, "no staged head on agent 0");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        fleetcast(&[
            "rollout", "pause", "--app", "hello", "--key", &key, "--peer", &entry, "--json",
        ])
        .await
    };
    let (d, p) = tokio::join!(driver, pauser);
    p.expect(0);
    assert_eq!(p.last()["result"], "paused", "{p:#?}");
    d.expect(6);
    let e = d.last();
    assert_eq!(e["kind"], "superseded", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("someone paused the rollout"),
        "{e}"
    );
    let st = fleetcast(&[
        "rollout", "status", "--app", "hello", "--peer", &entry, "--json",
    ])
    .await;
    st.expect(0);
    let s = st.last();
    assert_eq!(s["plan"]["paused"], true, "{s}");
    assert_eq!(s["verdict"]["state"], "paused", "{s}");
    // Pausing again is nothing to do.
    let again = fleetcast(&[
        "rollout", "pause", "--app", "hello", "--key", &key, "--peer", &entry,
    ])
    .await;
    again.expect(0);
    assert!(again.stdout.contains("already paused"), "{again:#?}");

    // Another process resumes it from where it stopped and drives it to 100%.
    let r = fleetcast(&[
        "rollout", "resume", "--app", "hello", "--key", &key, "--peer", &entry, "--json",
    ])
    .await;
    r.expect(0);
    assert_eq!(r.last()["result"], "promoted", "{r:#?}");
    until_every_agent_serves(&fleet, "2.0.0").await;
}
