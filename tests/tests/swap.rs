//! Swaps never fail a request, and a restarted agent serves from its cache without compiling.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Fleet, serves};
use fleetcast::http_get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_swaps_all_succeed() {
    let fleet = Fleet::start(1, |_| vec![]).await;
    fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    let addr = fleet.agent(0).http_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // ok, failed, v1, v2
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, counts) = (stop.clone(), counts.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http_get::get(addr, "hello", "/").await {
                    Ok(r) if r.status == 200 => {
                        counts[0].fetch_add(1, Ordering::Relaxed);
                        match r.version_header.as_deref() {
                            Some("1.0.0") => counts[2].fetch_add(1, Ordering::Relaxed),
                            Some("2.0.0") => counts[3].fetch_add(1, Ordering::Relaxed),
                            _ => counts[1].fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    _ => {
                        counts[1].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Swap back and forth under load: a release, then rollbacks from cache.
    fleet.release("hello-v2.wasm", "2.0.0").await.unwrap();
    for i in 0..6 {
        fleet.rollback(None).await.unwrap();
        let want = if i % 2 == 0 { "1.0.0" } else { "2.0.0" };
        assert_eq!(serves(fleet.agent(0)).await, want);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let [ok, failed, v1, v2] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    println!("requests during 7 swaps: {ok} ok ({v1} v1, {v2} v2), {failed} failed");
    assert_eq!(failed, 0);
    assert!(
        v1 > 0 && v2 > 0,
        "both versions were served: {v1} v1, {v2} v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_network_serves_from_cache_without_compiling() {
    let mut fleet = Fleet::start(2, |i| if i == 0 { vec![] } else { vec![0] }).await;
    fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    fleet.release("hello-v2.wasm", "2.0.0").await.unwrap();
    fleet.rollback(None).await.unwrap();

    // Stop everything, then bring agent 1 back alone: no peers, nobody to fetch from.
    let cfg = fleet.config(1, vec![]);
    for a in fleet.agents.iter_mut() {
        a.take().unwrap().shutdown().await;
    }
    let agent = fleetcast_agent::agent::start(cfg).await.unwrap();
    assert_eq!(
        serves(&agent).await,
        "1.0.0",
        "serving as soon as start returns"
    );
    let stats = agent.runtime_stats();
    assert_eq!(stats.compiles, 0, "no recompile on restart");
    assert_eq!(stats.cache_loads, 1);
    let st = agent.status().await.unwrap();
    assert_eq!((st.apps[0].seq, st.links), (3, 0));
}
