//! Tests of the node actor's counters and of the families they render.
use std::time::Instant;

use fleetcast_net::endpoint::{ByKind, TrafficSnapshot};
use fleetcast_protocol::node::NodeConfig;
use fleetcast_protocol::wire::NodeId;
use fleetcast_protocol::{HeadError, TrustPolicy};

use super::*;
use crate::runtime::metrics::Metrics;
use crate::runtime::metrics::exposition::{check_exposition, parse_sample};

fn app(name: &str) -> AppName {
    AppName::new(name).unwrap()
}

fn accepted(name: &str, seq: u64) -> Event {
    Event::Accepted {
        app: app(name),
        seq,
        version: "1.0.0".parse().unwrap(),
        cached: false,
    }
}

fn rejected(name: &str, kind: &'static str) -> Event {
    Event::Rejected {
        app: app(name),
        seq: 9,
        kind,
        reason: format!("refused: {kind}"),
    }
}

/// The lines of `text` that are samples of `family` (with any labels).
fn samples<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect()
}

fn render(scrape: &Scrape) -> String {
    let mut out = String::new();
    scrape.write_prometheus(&mut out).unwrap();
    out
}

#[test]
fn duplicate_bytes_only_go_up_when_a_transfer_is_let_go() {
    let m = MeshMetrics::default();
    // The node's figure rises, falls when a transfer is dropped, and rises again.
    for seen in [0, 100, 150, 150, 40, 90, 0, 10] {
        m.observe_duplicates(seen);
    }
    assert_eq!(m.snapshot().duplicate_bytes, 100 + 50 + 50 + 10);
}

#[test]
fn observe_node_copies_the_gauges_of_a_real_node() {
    let cfg = NodeConfig::new(
        NodeId([7; 32]),
        TrustPolicy {
            fleet: "test".into(),
            keys: Vec::new(),
        },
    );
    let node: Node<u64> = Node::new(Instant::now(), cfg, [], []);
    let m = MeshMetrics::default();
    m.neighbours.store(5, Ordering::Relaxed);
    m.transfers.store(3, Ordering::Relaxed);
    m.observe_node(&node);
    let s = m.snapshot();
    assert_eq!((s.neighbours, s.transfers_in_progress), (0, 0));
    assert_eq!(s.duplicate_bytes, 0);
}

#[test]
fn events_are_counted_per_app() {
    let m = MeshMetrics::default();
    let nobody = |_: &AppName| false;
    m.event(&accepted("hello", 1), nobody);
    m.event(&accepted("hello", 2), nobody);
    m.event(
        &Event::Activated {
            app: app("hello"),
            seq: 1,
            version: "1.0.0".parse().unwrap(),
        },
        nobody,
    );
    m.event(
        &Event::ActivationFailed {
            app: app("hello"),
            seq: 2,
            reason: "smoke: 500".into(),
        },
        nobody,
    );
    m.event(&rejected("hello", "stale"), nobody);
    m.event(&rejected("hello", "stale"), nobody);
    m.event(&rejected("hello", "untrusted"), nobody);
    m.event(
        &Event::Neighbor {
            node: NodeId([1; 32]),
            up: true,
        },
        nobody,
    );
    let s = m.snapshot();
    assert_eq!(s.apps.len(), 1);
    let h = &s.apps[&app("hello")];
    assert_eq!((h.accepted, h.activated, h.failed), (2, 1, 1));
    assert_eq!(h.refused, BTreeMap::from([("stale", 2), ("untrusted", 1)]));
    assert!(s.refused_unknown.is_empty());
}

#[test]
fn a_refused_head_names_its_app_only_if_the_agent_knows_it() {
    let m = MeshMetrics::default();
    // Known through the node's records (restored at start, no head accepted since).
    m.event(&rejected("restored", "bad-signature"), |a| {
        a.as_str() == "restored"
    });
    // Nobody vouched for these names: one bucket, whatever they are.
    for name in ["forged-1", "forged-2", "forged-3"] {
        m.event(&rejected(name, "untrusted"), |_| false);
    }
    m.event(&rejected("forged-4", "wrong-fleet"), |_| false);
    let s = m.snapshot();
    assert_eq!(s.apps.keys().collect::<Vec<_>>(), [&app("restored")]);
    assert_eq!(
        s.apps[&app("restored")].refused,
        BTreeMap::from([("bad-signature", 1)])
    );
    assert_eq!(
        s.refused_unknown,
        BTreeMap::from([("untrusted", 3), ("wrong-fleet", 1)])
    );
    let text = render(&Scrape {
        mesh: s,
        ..Scrape::default()
    });
    assert_eq!(
        samples(&text, "fleetcast_heads_refused_total"),
        [
            r#"fleetcast_heads_refused_total{app="restored",reason="bad-signature"} 1"#,
            r#"fleetcast_heads_refused_total{app="(unknown)",reason="untrusted"} 3"#,
            r#"fleetcast_heads_refused_total{app="(unknown)",reason="wrong-fleet"} 1"#,
        ]
    );
    // The app is listed with zero accepted heads and activations.
    assert_eq!(
        samples(&text, "fleetcast_activations_total"),
        [
            r#"fleetcast_activations_total{app="restored",result="ok"} 0"#,
            r#"fleetcast_activations_total{app="restored",result="failed"} 0"#,
        ]
    );
    check_exposition(&text);
}

#[test]
fn refusal_reasons_are_the_protocol_kinds() {
    // The label values come from HeadError::kind, a fixed set of names, and render as they
    // are; a kind the protocol adds later (version-reuse is coming) needs no change here.
    let kinds = [HeadError::Unsigned.kind(), "version-reuse"];
    let m = MeshMetrics::default();
    m.event(&accepted("hello", 1), |_| false);
    for kind in kinds {
        m.event(&rejected("hello", kind), |_| false);
    }
    let text = render(&Scrape {
        mesh: m.snapshot(),
        ..Scrape::default()
    });
    for kind in kinds {
        let line = format!(r#"fleetcast_heads_refused_total{{app="hello",reason="{kind}"}} 1"#);
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

fn full_scrape() -> Scrape {
    let m = MeshMetrics::default();
    m.neighbours.store(4, Ordering::Relaxed);
    m.transfers.store(1, Ordering::Relaxed);
    m.observe_duplicates(16_384);
    for _ in 0..3 {
        m.chunk_served(ChunkSource::Store);
    }
    m.chunk_served(ChunkSource::Transfer);
    m.event(&accepted("beta", 3), |_| false);
    m.event(&accepted("alpha", 1), |_| false);
    m.observe_trust(&fleetcast_protocol::trust::TrustStatus {
        version: 3,
        epoch: 2,
        expires_ms: 1_800_000_000_500,
        ..Default::default()
    });
    m.admission_refused("revoked");
    m.admission_refused("not-enrolled");
    m.admission_refused("revoked");
    let traffic = |frames, bytes| TrafficSnapshot { frames, bytes };
    Scrape {
        mesh: m.snapshot(),
        net: NetSnapshot {
            sent: ByKind {
                payload: traffic(3, 3 * 16_400),
                control: traffic(20, 2_000),
            },
            received: ByKind {
                payload: traffic(5, 5 * 16_400),
                control: traffic(30, 3_000),
            },
            connections: 6,
            ..NetSnapshot::default()
        },
        passive_peers: Some(12),
        apps: Some(vec![
            AppServing {
                app: "alpha".into(),
                seq: 1,
                state: "trial",
                serving: Some(("1.0.0".into(), "ab".repeat(32))),
            },
            AppServing {
                app: "beta".into(),
                seq: 3,
                state: "reverted",
                serving: Some(("2.0.0".into(), "cd".repeat(32))),
            },
            // Accepted, nothing serves yet: a seq, no info series.
            AppServing {
                app: "gamma".into(),
                seq: 1,
                state: "activating",
                serving: None,
            },
        ]),
    }
}

#[test]
fn a_full_scrape_renders_every_value() {
    let text = render(&full_scrape());
    for line in [
        "fleetcast_mesh_neighbours 4",
        "fleetcast_mesh_passive_peers 12",
        "fleetcast_mesh_links 6",
        r#"fleetcast_net_bytes_sent_total{kind="payload"} 49200"#,
        r#"fleetcast_net_bytes_sent_total{kind="control"} 2000"#,
        r#"fleetcast_net_bytes_received_total{kind="payload"} 82000"#,
        r#"fleetcast_net_bytes_received_total{kind="control"} 3000"#,
        r#"fleetcast_net_frames_sent_total{kind="payload"} 3"#,
        r#"fleetcast_net_frames_sent_total{kind="control"} 20"#,
        r#"fleetcast_net_frames_received_total{kind="payload"} 5"#,
        r#"fleetcast_net_frames_received_total{kind="control"} 30"#,
        r#"fleetcast_chunks_served_total{source="store"} 3"#,
        r#"fleetcast_chunks_served_total{source="transfer"} 1"#,
        "fleetcast_transfers_in_progress 1",
        "fleetcast_duplicate_chunk_bytes_total 16384",
        r#"fleetcast_heads_accepted_total{app="alpha"} 1"#,
        r#"fleetcast_heads_accepted_total{app="beta"} 1"#,
        r#"fleetcast_app_seq{app="gamma"} 1"#,
        "fleetcast_root_version 3",
        "fleetcast_root_epoch 2",
        "fleetcast_root_expires_timestamp_seconds 1800000000",
        "fleetcast_root_expired 0",
        r#"fleetcast_admission_refused_total{reason="not-enrolled"} 1"#,
        r#"fleetcast_admission_refused_total{reason="revoked"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    let (a, b) = ("ab".repeat(32), "cd".repeat(32));
    assert_eq!(
        samples(&text, "fleetcast_app_serving_info"),
        [
            format!(
                r#"fleetcast_app_serving_info{{app="alpha",version="1.0.0",digest="{a}",state="trial"}} 1"#
            ),
            format!(
                r#"fleetcast_app_serving_info{{app="beta",version="2.0.0",digest="{b}",state="reverted"}} 1"#
            ),
        ]
    );
    // Sorted by app within a family.
    assert_eq!(
        samples(&text, "fleetcast_heads_accepted_total"),
        [
            r#"fleetcast_heads_accepted_total{app="alpha"} 1"#,
            r#"fleetcast_heads_accepted_total{app="beta"} 1"#,
        ]
    );
    check_exposition(&text);
}

#[test]
fn a_fleet_without_a_root_shows_no_expiry_and_an_expired_root_shows_1() {
    let m = MeshMetrics::default();
    m.observe_trust(&fleetcast_protocol::trust::Trust::legacy("f".into(), vec![]).status());
    let text = render(&Scrape {
        mesh: m.snapshot(),
        ..Scrape::default()
    });
    assert!(samples(&text, "fleetcast_root_expires_timestamp_seconds").is_empty());
    assert!(
        text.lines().any(|l| l == "fleetcast_root_version 0"),
        "{text}"
    );
    m.observe_trust(&fleetcast_protocol::trust::TrustStatus {
        version: 1,
        expires_ms: 5_000,
        expired: true,
        ..Default::default()
    });
    let text = render(&Scrape {
        mesh: m.snapshot(),
        ..Scrape::default()
    });
    assert!(
        text.lines().any(|l| l == "fleetcast_root_expired 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "fleetcast_root_expires_timestamp_seconds 5"),
        "{text}"
    );
    check_exposition(&text);
}

#[test]
fn what_was_not_answered_is_left_out_but_its_family_stays() {
    let scrape = Scrape {
        passive_peers: None,
        apps: None,
        ..full_scrape()
    };
    let text = render(&scrape);
    for family in [
        "fleetcast_mesh_passive_peers",
        "fleetcast_app_serving_info",
        "fleetcast_app_seq",
    ] {
        assert!(samples(&text, family).is_empty(), "{family}\n{text}");
        assert!(text.contains(&format!("# TYPE {family} gauge\n")), "{text}");
    }
    // What the atomics hold is still there.
    assert!(text.contains("fleetcast_mesh_neighbours 4\n"));
    check_exposition(&text);
}

#[test]
fn every_family_has_help_with_its_unit_and_a_type() {
    let text = render(&Scrape::default());
    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_once(' ').unwrap())
        .collect();
    let names: Vec<&str> = families.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "fleetcast_mesh_neighbours",
            "fleetcast_mesh_passive_peers",
            "fleetcast_mesh_links",
            "fleetcast_net_bytes_sent_total",
            "fleetcast_net_bytes_received_total",
            "fleetcast_net_frames_sent_total",
            "fleetcast_net_frames_received_total",
            "fleetcast_chunks_served_total",
            "fleetcast_transfers_in_progress",
            "fleetcast_duplicate_chunk_bytes_total",
            "fleetcast_heads_accepted_total",
            "fleetcast_heads_refused_total",
            "fleetcast_activations_total",
            "fleetcast_prefetches_total",
            "fleetcast_root_version",
            "fleetcast_root_epoch",
            "fleetcast_root_expires_timestamp_seconds",
            "fleetcast_root_expired",
            "fleetcast_admission_refused_total",
            "fleetcast_app_serving_info",
            "fleetcast_app_seq",
        ]
    );
    for (name, kind) in families {
        // Counters end in _total, and only counters do.
        assert_eq!(name.ends_with("_total"), kind == "counter", "{name} {kind}");
        let help = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or_else(|| panic!("no HELP for {name}"));
        // The unit is named: what is counted, or what the value is.
        let units = [
            "Bytes",
            "Frames",
            "Chunks",
            "Peers",
            "Heads",
            "Activations",
            "Releases",
        ];
        let units = units
            .into_iter()
            .chain(["Open QUIC connections", "Content"]);
        let units = units.chain(["The release", "The seq"]);
        let units = units.chain(["The version", "The epoch", "The time", "The newest"]);
        assert!(
            units.into_iter().any(|u| help.starts_with(u)),
            "{name}: {help}"
        );
    }
    // Zero values, no apps: every sample is still well-formed.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        parse_sample(line).unwrap();
    }
    check_exposition(&text);
}

#[test]
fn the_agent_scrape_is_one_valid_exposition() {
    // /metrics is the runtime's families, then these: no family twice, all well-formed.
    let runtime = Metrics::default();
    runtime
        .release("alpha", "1.0.0")
        .record_response(200, Default::default());
    let mut text = String::new();
    runtime.write_prometheus(&mut text).unwrap();
    full_scrape().write_prometheus(&mut text).unwrap();
    check_exposition(&text);
}

#[test]
fn prefetches_are_counted_by_result() {
    let m = MeshMetrics::default();
    let hello = app("hello");
    m.event(&accepted("hello", 2), |_| false);
    m.event(
        &Event::Prefetched {
            app: hello.clone(),
            seq: 2,
            version: "2.0.0".parse().unwrap(),
        },
        |_| false,
    );
    m.prefetch_failed(
        &hello,
        &fleetcast_protocol::ActivationError::Refused {
            stage: "compile".into(),
            reason: "not a component".into(),
        },
    );
    m.prefetch_failed(&hello, &fleetcast_protocol::ActivationError::Cancelled);
    m.prefetch_failed(&hello, &fleetcast_protocol::ActivationError::Cancelled);
    // The node also tells a failed prefetch as an activation failure: not counted twice.
    m.event(
        &Event::ActivationFailed {
            app: hello.clone(),
            seq: 2,
            reason: "prefetch: compile: not a component".into(),
        },
        |_| false,
    );
    assert_eq!(m.snapshot().apps[&hello].failed, 0);
    let text = render(&Scrape {
        mesh: m.snapshot(),
        ..Scrape::default()
    });
    assert_eq!(
        samples(&text, "fleetcast_prefetches_total"),
        [
            r#"fleetcast_prefetches_total{app="hello",result="ok"} 1"#,
            r#"fleetcast_prefetches_total{app="hello",result="failed"} 1"#,
            r#"fleetcast_prefetches_total{app="hello",result="cancelled"} 2"#,
        ]
    );
    assert!(text.contains("# HELP fleetcast_prefetches_total "));
    assert!(text.contains("# TYPE fleetcast_prefetches_total counter"));
    check_exposition(&text);
}
