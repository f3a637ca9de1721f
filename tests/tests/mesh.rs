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

fn log_init() {
    if std::env::var_os("RUST_LOG").is_some() {
        fleetcast_agent::logging::init("text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_agents_release_release_and_roll_back_over_quic() {
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
    let _ = APP;
}
