//! Every node learns the fleet's count for a head, not only the node it entered through.

use std::time::Duration;

use fleetcast_protocol::head::HeadKind;
use fleetcast_protocol::release::AppName;
use fleetcast_protocol::scenario::{content, converged, fleet, signed};
use fleetcast_protocol::sim::SimConfig;

#[test]
fn the_settled_fleet_count_reaches_every_node() {
    let seed = std::env::var("FLEETCAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    eprintln!("seed {seed} (replay with FLEETCAST_SEED={seed})");
    let n = 60;
    let net = SimConfig {
        seed,
        latency: (Duration::from_millis(5), Duration::from_millis(40)),
        ..SimConfig::default()
    };
    let mut sim = fleet(n, 3, 5, net, Duration::from_secs(20));
    let app = AppName::new("shop").unwrap();
    let body = content(1, 100_000);
    sim.publish(
        0,
        signed("shop", 1, &body, 16 * 1024, HeadKind::Release),
        body,
    );
    let deadline = sim.now + Duration::from_secs(30);
    assert!(
        sim.run_until(deadline, |s| converged(s, &app, 1)),
        "seed {seed}: not converged"
    );
    // The count settles at the root, then travels down the tree.
    let deadline = sim.now + Duration::from_secs(10);
    let all_know = sim.run_until(deadline, |s| {
        s.nodes.values().all(|x| {
            x.node.as_ref().is_some_and(|node| {
                node.status()
                    .fleet_tallies
                    .iter()
                    .any(|t| t.seq == 1 && t.active as usize == n)
            })
        })
    });
    let missing: Vec<usize> = sim
        .nodes
        .iter()
        .filter(|(_, x)| {
            x.node
                .as_ref()
                .is_none_or(|node| node.status().fleet_tallies.is_empty())
        })
        .map(|(i, _)| *i)
        .collect();
    assert!(
        all_know,
        "seed {seed}: nodes without the fleet count: {missing:?}"
    );
}

/// The demo's story: a node is down while a head goes out, comes back with its contacts and
/// catches up by anti-entropy; its count reaches the root and the fleet count reaches it.
#[test]
fn a_restarted_node_catches_up_and_is_counted() {
    for seed in seeds() {
        eprintln!("seed {seed} (replay with FLEETCAST_SEED={seed})");
        let n = 5;
        let net = SimConfig {
            seed,
            latency: (Duration::from_millis(1), Duration::from_millis(3)),
            ..SimConfig::default()
        };
        let mut sim = fleet(n, 2, 6, net, Duration::from_secs(5));
        let app = AppName::new("shop").unwrap();
        for seq in 1..=4u64 {
            let body = content(seq as u8 % 2, 30_000);
            sim.publish(
                0,
                signed("shop", seq, &body, 16 * 1024, HeadKind::Release),
                body,
            );
            let deadline = sim.now + Duration::from_secs(10);
            assert!(
                sim.run_until(deadline, |s| converged(s, &app, seq)),
                "seed {seed}: seq {seq}"
            );
        }
        let last = n - 1;
        sim.crash(last);
        let body = content(1, 30_000);
        sim.publish(
            0,
            signed("shop", 5, &body, 16 * 1024, HeadKind::Rollback),
            body,
        );
        let deadline = sim.now + Duration::from_secs(10);
        assert!(
            sim.run_until(deadline, |s| converged(s, &app, 5)),
            "seed {seed}: seq 5"
        );
        sim.restart(last);
        let deadline = sim.now + Duration::from_secs(10);
        assert!(
            sim.run_until(deadline, |s| converged(s, &app, 5)),
            "seed {seed}: catch-up"
        );
        let deadline = sim.now + Duration::from_secs(15);
        let counted = sim.run_until(deadline, |s| {
            s.nodes.values().all(|x| {
                x.node.as_ref().is_some_and(|node| {
                    node.status()
                        .fleet_tallies
                        .iter()
                        .any(|t| t.seq == 5 && t.active as usize == n)
                })
            })
        });
        let views: Vec<String> = sim
            .nodes
            .iter()
            .map(|(i, x)| {
                let st = x.node.as_ref().unwrap().status();
                format!(
                    "{i}: subtree {:?} fleet {:?}",
                    st.tallies
                        .iter()
                        .map(|t| (t.seq, t.active))
                        .collect::<Vec<_>>(),
                    st.fleet_tallies
                        .iter()
                        .map(|t| (t.seq, t.active))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        assert!(counted, "seed {seed}: {views:#?}");
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("FLEETCAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => (1..=20).collect(),
    }
}

/// Releases right after the fleet starts (links still churning) and back to back: the
/// publisher's count reaches every node each time.
#[test]
fn the_publisher_counts_every_node_while_the_overlay_forms() {
    for seed in seeds() {
        eprintln!("seed {seed} (replay with FLEETCAST_SEED={seed})");
        for n in [5usize, 12] {
            let net = SimConfig {
                seed,
                latency: (Duration::from_millis(1), Duration::from_millis(3)),
                ..SimConfig::default()
            };
            let mut sim = fleet(n, 2, 6, net, Duration::from_millis(40));
            let app = AppName::new("shop").unwrap();
            for seq in 1..=4u64 {
                let body = content(seq as u8, 30_000);
                sim.publish(
                    0,
                    signed("shop", seq, &body, 16 * 1024, HeadKind::Release),
                    body,
                );
                let deadline = sim.now + Duration::from_secs(20);
                let key = (app.clone(), seq);
                let ok = sim.run_until(deadline, |s| {
                    converged(s, &app, seq)
                        && s.publisher
                            .tallies
                            .get(&key)
                            .is_some_and(|t| t.active as usize == n)
                });
                let views: Vec<String> = sim
                    .nodes
                    .iter()
                    .map(|(i, x)| {
                        let node = x.node.as_ref().unwrap();
                        let st = node.status();
                        format!(
                            "{i}: round {:?} subtree {:?} view {:?}",
                            node.round(&app),
                            st.tallies
                                .iter()
                                .map(|t| (t.seq, t.active))
                                .collect::<Vec<_>>(),
                            st.active_view
                                .iter()
                                .map(|p| p.addr.to_string())
                                .collect::<Vec<_>>()
                        )
                    })
                    .collect();
                assert!(
                    ok,
                    "seed {seed} n {n} seq {seq}: publisher counts {:?}\n{views:#?}",
                    sim.publisher.tallies.get(&key).map(|t| t.active)
                );
            }
        }
    }
}

/// A rollback's count reaches the publisher in about the time its head takes to cross the
/// mesh: tally pacing must not hold back the first counts of a head (simulated time).
#[test]
fn a_rollback_is_counted_without_pacing_delay() {
    for seed in seeds() {
        eprintln!("seed {seed} (replay with FLEETCAST_SEED={seed})");
        let n = 8;
        let net = SimConfig {
            seed,
            latency: (Duration::from_micros(100), Duration::from_micros(100)),
            ..SimConfig::default()
        };
        let mut sim = fleet(n, 1, 6, net, Duration::from_secs(5));
        let app = AppName::new("shop").unwrap();
        let (v1, v2) = (content(1, 30_000), content(2, 30_000));
        for (seq, body) in [(1u64, &v1), (2, &v2)] {
            sim.publish(
                0,
                signed("shop", seq, body, 16 * 1024, HeadKind::Release),
                body.clone(),
            );
            let deadline = sim.now + Duration::from_secs(10);
            assert!(sim.run_until(deadline, |s| converged(s, &app, seq)));
        }
        for seq in 3..=12u64 {
            let body = if seq % 2 == 1 { &v1 } else { &v2 };
            let t0 = sim.now;
            sim.publish(
                0,
                signed("shop", seq, body, 16 * 1024, HeadKind::Rollback),
                body.clone(),
            );
            let key = (app.clone(), seq);
            let deadline = sim.now + Duration::from_secs(10);
            assert!(sim.run_until(deadline, |s| {
                s.publisher
                    .tallies
                    .get(&key)
                    .is_some_and(|t| t.active as usize == n)
            }));
            let took = sim.now - t0;
            // 8 nodes at 0.1 ms per hop: a few ms at most, far below one 100 ms pacing period.
            assert!(
                took < Duration::from_millis(50),
                "seed {seed} seq {seq}: counted after {took:?}"
            );
        }
    }
}
