//! The whole path over real QUIC, sled and wasmtime on loopback: release, relay, serve, swap,
//! rollback.

mod common;

use common::{Fleet, serves};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_release_swap_rollback_and_roll_forward() {
    // Agent 1 and 2 both connect to agent 0; the publisher talks to agent 0 only.
    let fleet = Fleet::start(3, |i| if i == 0 { vec![] } else { vec![0] }).await;

    let out = fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    assert_eq!(out.active(), 3, "{:?}", out.tally);
    assert_eq!(fleet.versions().await, ["1.0.0"; 3]);
    // The publisher served the content once (to agent 0); the others fetched from agent 0.
    let chunks = out.head.head.release.chunk_count() as u64;
    assert_eq!(out.chunks_served, chunks);

    let out = fleet.release("hello-v2.wasm", "2.0.0").await.unwrap();
    assert_eq!(out.head.head.seq, 2);
    assert_eq!(fleet.versions().await, ["2.0.0"; 3]);

    let out = fleet.rollback(None).await.unwrap();
    assert_eq!(out.head.head.seq, 3);
    assert_eq!(out.head.head.release.version.to_string(), "1.0.0");
    assert_eq!(out.chunks_served, 0, "a rollback moves no content");
    assert_eq!(fleet.versions().await, ["1.0.0"; 3]);

    let out = fleet.rollback(Some("2.0.0")).await.unwrap();
    assert_eq!(out.head.head.seq, 4);
    assert_eq!(fleet.versions().await, ["2.0.0"; 3]);

    // Rollbacks reused compiled artifacts: each agent compiled v1 and v2 once.
    for a in fleet.agents.iter().flatten() {
        assert_eq!(a.runtime_stats().compiles, 2);
        let st = a.status().await.unwrap();
        let app = &st.apps[0];
        assert_eq!(app.seq, 4);
        let hist: Vec<(u64, String)> = app
            .history
            .iter()
            .map(|h| (h.seq, h.release.version.to_string()))
            .collect();
        assert_eq!(
            hist,
            [(1, "1.0.0"), (2, "2.0.0"), (3, "1.0.0"), (4, "2.0.0")]
                .map(|(s, v)| (s, v.to_string()))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_relays_to_the_far_end() {
    // A - B - C by their contacts (the mesh may add links): the publisher reaches A only.
    let fleet = Fleet::start(3, |i| if i == 0 { vec![] } else { vec![i - 1] }).await;
    let out = fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    assert_eq!(
        out.active(),
        3,
        "C's count came up the tree through A: {:?}",
        out.tally
    );
    assert_eq!(serves(fleet.agent(2)).await, "1.0.0");
    let st = fleet.agent(0).status().await.unwrap();
    let t = st
        .tallies
        .iter()
        .find(|t| t.seq == 1)
        .expect("a tally for seq 1");
    assert_eq!(t.active, 3, "A's fleet view counts all three: {t:?}");
}
