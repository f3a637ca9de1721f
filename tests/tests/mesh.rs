//! The mesh over real QUIC: a thousand agents in one process (each with its own quinn endpoint
//! on loopback, real verification, a real sled store and the daemon's activation path) take a
//! 1 MiB release, another, and a rollback; and a third of a fleet killed during a rollout comes
//! back and converges.
//!
//! Behaviour only: nothing here asserts a duration (see `benches/mesh_quic.rs` for figures).
//! Every random choice comes from a printed seed (`FLEETCAST_SEED` replays it).

mod common;

use std::time::Duration;

use common::mesh::{APP, Mesh, MeshOptions, seed_from_env};
use common::serves;
use tokio::time::Instant;

/// 1 MiB / 64 KiB: 16 chunks, so the content streams through the mesh chunk by chunk.
const CHUNK: u32 = 64 * 1024;
const V1: &str = "hello-1mib-v1.wasm";
const V2: &str = "hello-1mib-v2.wasm";
/// Generous: a debug build on a 2-core machine moves 1 GiB through 1,000 QUIC endpoints.
const PUSH_TIMEOUT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(120);

/// The two tests each load both cores fully: run them one after the other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn log_init() {
    if std::env::var_os("RUST_LOG").is_some() {
        fleetcast_net::logging::init("text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_release_release_and_roll_back_over_quic() {
    let _serial = SERIAL.lock().await;
    log_init();
    // FLEETCAST_MESH_AGENTS overrides the size for experiments; the suite runs 1,000.
    let n = std::env::var("FLEETCAST_MESH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let t = Instant::now();
    let mut mesh = Mesh::start(n, MeshOptions::new(seed_from_env()))
        .await
        .unwrap();
    println!("started {n} agents in {:.1?}", t.elapsed());
    let formed = mesh.wait_overlay(2, WAIT).await.unwrap();
    println!("overlay connected in {formed:.1?}");

    // v1: 1 MiB into agent 0; the publisher waits for the whole fleet's tally.
    let t = Instant::now();
    let out = mesh
        .release(V1, "1.0.0", mesh.push_args(0, Some(n), PUSH_TIMEOUT), CHUNK)
        .await
        .unwrap();
    println!(
        "v1: {} active after {:.1?}, publisher served {} chunks",
        out.active(),
        t.elapsed(),
        out.chunks_served
    );
    let chunks = out.head.head.release.chunk_count() as u64;
    assert_eq!(out.head.head.release.size, 1024 * 1024);
    assert_eq!(chunks, 16);
    assert_eq!(
        out.active(),
        n,
        "the tally counts every agent: {:?}",
        out.tally
    );
    assert!(
        out.chunks_served <= 2 * chunks,
        "the publisher served {} chunks of {chunks}: the mesh should fetch from itself",
        out.chunks_served
    );
    let behind = mesh.behind(1, "1.0.0").await.unwrap();
    assert!(behind.is_empty(), "{} behind: {behind:?}", behind.len());
    for i in mesh.sample(5) {
        assert_eq!(serves(mesh.agent(i)).await, "1.0.0", "agent {i}");
    }

    // v2 through another agent, then a rollback (to v1) through a third one.
    let entry = mesh.sample(1)[0];
    let t = Instant::now();
    let out = mesh
        .release(
            V2,
            "2.0.0",
            mesh.push_args(entry, Some(n), PUSH_TIMEOUT),
            CHUNK,
        )
        .await
        .unwrap();
    println!(
        "v2 via agent {entry}: {} active after {:.1?}, publisher served {} chunks",
        out.active(),
        t.elapsed(),
        out.chunks_served
    );
    assert_eq!(out.head.head.seq, 2);
    assert_eq!(out.active(), n, "{:?}", out.tally);
    assert!(out.chunks_served <= 2 * chunks, "{}", out.chunks_served);
    let behind = mesh.behind(2, "2.0.0").await.unwrap();
    assert!(behind.is_empty(), "{} behind: {behind:?}", behind.len());

    let entry = mesh.sample(1)[0];
    let t = Instant::now();
    let out = mesh
        .rollback(None, mesh.push_args(entry, Some(n), PUSH_TIMEOUT))
        .await
        .unwrap();
    println!(
        "rollback via agent {entry}: {} active after {:.1?}",
        out.active(),
        t.elapsed()
    );
    assert_eq!(out.head.head.seq, 3);
    assert_eq!(out.head.head.release.version.to_string(), "1.0.0");
    assert_eq!(out.active(), n, "{:?}", out.tally);
    assert_eq!(out.chunks_served, 0, "a rollback moves no content");
    let behind = mesh.behind(3, "1.0.0").await.unwrap();
    assert!(behind.is_empty(), "{} behind: {behind:?}", behind.len());
    for i in mesh.sample(5) {
        assert_eq!(serves(mesh.agent(i)).await, "1.0.0", "agent {i}");
    }
    // Each release compiled once for the whole process (the cache is keyed by digest).
    let cache = mesh.cache.stats();
    assert_eq!(cache.misses, 2, "{cache:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_killed_during_a_rollout_comes_back_and_converges() {
    let _serial = SERIAL.lock().await;
    log_init();
    let n: usize = std::env::var("FLEETCAST_MESH_KILL_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut opts = MeshOptions::new(seed_from_env());
    // Data directories outlive the agents: killed agents restart from their stores.
    opts.persistent = true;
    let mut mesh = Mesh::start(n, opts).await.unwrap();
    mesh.wait_overlay(2, WAIT).await.unwrap();
    let out = mesh
        .release(V1, "1.0.0", mesh.push_args(0, Some(n), PUSH_TIMEOUT), CHUNK)
        .await
        .unwrap();
    assert_eq!(out.active(), n, "{:?}", out.tally);

    // v2 goes in through agent 0; a third of the others die as soon as agent 0 has it.
    let killed: Vec<usize> = {
        let mut pick: Vec<usize> = mesh.sample(n).into_iter().filter(|i| *i != 0).collect();
        pick.truncate(n / 3);
        pick.sort_unstable();
        pick
    };
    let survivors = n - killed.len();
    // The publisher returns once agent 0 runs v2 (and the count settled): who dies is not
    // known to it, so the survivors' convergence is checked on their status below.
    let mut args = mesh.push_args(0, None, PUSH_TIMEOUT);
    args.wait = false;
    let push = tokio::spawn(common::mesh::release_cmd(V2, "2.0.0", args, CHUNK).execute());
    let deadline = Instant::now() + WAIT;
    loop {
        let st = mesh.agent(0).status().await.unwrap();
        if st.seqs.iter().any(|(a, s)| a.as_str() == APP && s.seq >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "agent 0 never accepted v2");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    mesh.stop(&killed).await;
    println!("killed {} agents mid-rollout: {killed:?}", killed.len());

    let out = push.await.unwrap().unwrap();
    assert_eq!(out.head.head.seq, 2);
    let took = mesh.wait_active(2, "2.0.0", WAIT).await.unwrap();
    println!("all {survivors} survivors run v2 {took:.1?} after the publisher returned");

    // Back with the same data directories, addresses and contacts: they restore v1 (or v2, if
    // they activated it before they died) from their stores, and anti-entropy brings v2.
    for &i in &killed {
        mesh.restart(i, WAIT).await.unwrap();
    }
    let took = mesh.wait_active(2, "2.0.0", WAIT).await.unwrap();
    println!("all {n} agents run v2 {took:.1?} after the restarts");
    for &i in &killed {
        assert_eq!(serves(mesh.agent(i)).await, "2.0.0", "restarted agent {i}");
    }

    // The restarted agents are back in the overlay: a rollback's tally counts every agent.
    let out = mesh
        .rollback(None, mesh.push_args(0, Some(n), PUSH_TIMEOUT))
        .await
        .unwrap();
    assert_eq!(out.active(), n, "{:?}", out.tally);
    let behind = mesh.behind(3, "1.0.0").await.unwrap();
    assert!(behind.is_empty(), "{} behind: {behind:?}", behind.len());
}
