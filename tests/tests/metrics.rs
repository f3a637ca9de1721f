//! What `/metrics` exports, scraped over HTTP from real agents (quinn, sled, wasmtime on
//! loopback), against the Grafana dashboard built on it (`deploy/grafana/fleetcast.json`): every
//! metric a panel queries is exported, with its HELP and TYPE, and the values say what happened.
//! Also the transport's counters on two bare endpoints, exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use common::{Fleet, TIMEOUT};
use fleetcast_net::codec::{MAX_FRAME, encode};
use fleetcast_net::endpoint::{NetCounters, NetSnapshot, TrafficSnapshot};
use fleetcast_net::{Identity, Net, NetConfig, NetEvent};
use fleetcast_protocol::Digest;
use fleetcast_protocol::wire::{ContentMsg, Message, Payload};
use serde_json::Value;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/fleetcast.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel of the dashboard, rows' nested panels included (rows themselves left out).
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] != "row" {
                out.push(p);
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The identifiers `fleetcast_[a-z0-9_]+` in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("fleetcast_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(word) {
            names.push(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
}

/// The families of an exposition: name → (TYPE, HELP), and every sample line.
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    samples: Vec<String>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition {
        types: BTreeMap::new(),
        helps: BTreeMap::new(),
        samples: Vec::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                e.types.insert(name.into(), kind.into()).is_none(),
                "second TYPE for {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            assert!(
                e.helps.insert(name.into(), help.into()).is_none(),
                "second HELP for {name}"
            );
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            e.samples.push(line.to_string());
        }
    }
    e
}

impl Exposition {
    /// The family a dashboard name refers to: itself, or the histogram it is a series of.
    fn family(&self, name: &str) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && self.types.get(base).is_some_and(|t| t == "histogram")
            {
                return base.to_string();
            }
        }
        name.to_string()
    }

    /// The value of the one sample line that is exactly `series` (name and labels).
    fn value(&self, series: &str) -> Option<f64> {
        self.samples.iter().find_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            (s == series).then(|| v.parse().expect("a number"))
        })
    }

    /// The sample lines of family `name` (any labels).
    fn series(&self, name: &str) -> Vec<&str> {
        self.samples
            .iter()
            .map(String::as_str)
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']))
            })
            .collect()
    }
}

async fn scrape(admin: SocketAddr) -> Exposition {
    let (code, body) = tokio::task::spawn_blocking(move || {
        fleetcast_agent::cli::admin_request(admin, "GET", "/metrics")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 200, "{body}");
    parse(&body)
}

/// Scrapes `admin` until `ok` holds (deadline [`TIMEOUT`]), for values the transport updates
/// after the event a test waits on (a frame counts as sent once the peer acknowledged it).
async fn scrape_until(admin: SocketAddr, ok: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let e = scrape(admin).await;
        if ok(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never matched:\n{}",
            e.samples.join("\n")
        );
        tokio::task::yield_now().await;
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_a_datasource_and_instance_variable() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36, "Grafana 10+");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");
    let panels = panels(&dash);
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in &panels {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
        }
    }
    // The serving table reads the info metric as an instant table.
    let table = panels.iter().find(|p| p["type"] == "table").unwrap();
    assert_eq!(table["targets"][0]["format"], "table");
    assert_eq!(
        metric_names(table["targets"][0]["expr"].as_str().unwrap()),
        ["fleetcast_app_serving_info"]
    );
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(fleetcast_request_duration_seconds_bucket{app="x"}[5m]))) / my_fleetcast_other + fleetcast_a1_total"#
        ),
        [
            "fleetcast_request_duration_seconds_bucket",
            "fleetcast_a1_total"
        ]
    );
    assert!(metric_names("up").is_empty());
}

/// Every metric the dashboard queries (panel targets and variable queries).
fn dashboard_metrics(dash: &Value) -> BTreeSet<String> {
    let mut exprs: Vec<&str> = panels(dash)
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    for v in dash["templating"]["list"].as_array().unwrap() {
        exprs.extend(v["definition"].as_str());
    }
    exprs.into_iter().flat_map(metric_names).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_is_exported_by_a_real_agent() {
    // Agent 1 joins through agent 0; the publisher pushes to agent 0, which serves agent 1.
    let fleet = Fleet::start(2, |i| if i == 0 { vec![] } else { vec![0] }).await;
    fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    let a = fleet.agent(0);
    for _ in 0..3 {
        assert_eq!(common::serves(a).await, "1.0.0");
    }
    // A head signed by a key the fleet does not trust, for an app the agents run.
    let rogue = fleet.dir.path().join("rogue.key");
    fleetcast_net::keys::generate(&rogue).unwrap();
    let mut args = fleet.push_args(2);
    args.key = rogue;
    let refused = fleet.release_with("hello-v2.wasm", "2.0.0", args).await;
    assert!(refused.is_err(), "the rogue head was accepted");

    let admin = a.admin_addr().unwrap();
    // Agent 0's chunk frames count as sent once agent 1 acknowledged their streams.
    let sent = r#"fleetcast_net_bytes_sent_total{kind="payload"}"#;
    let m = scrape_until(admin, |m| m.value(sent).is_some_and(|v| v > 0.0)).await;

    // (a) + (b): the dashboard's metrics; (c): all exported, each family with HELP and TYPE.
    let wanted = dashboard_metrics(&dashboard());
    assert!(wanted.len() >= 20, "{wanted:?}");
    for name in &wanted {
        let family = m.family(name);
        assert!(
            m.types.contains_key(&family),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
    for family in m.types.keys() {
        assert!(m.helps.contains_key(family), "{family} has no HELP");
    }
    for family in m.helps.keys() {
        assert!(m.types.contains_key(family), "{family} has no TYPE");
    }
    for line in &m.samples {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = m.family(name);
        assert!(m.types.contains_key(&family), "sample without TYPE: {line}");
    }

    // And the values say what happened on agent 0.
    let v = |series: &str| {
        m.value(series)
            .unwrap_or_else(|| panic!("no {series} in\n{}", m.samples.join("\n")))
    };
    assert_eq!(v("fleetcast_mesh_neighbours"), 1.0);
    assert!(v("fleetcast_mesh_links") >= 1.0);
    assert!(!m.series("fleetcast_mesh_passive_peers").is_empty());
    assert_eq!(v(r#"fleetcast_heads_accepted_total{app="hello"}"#), 1.0);
    assert_eq!(
        v(r#"fleetcast_heads_refused_total{app="hello",reason="untrusted"}"#),
        1.0
    );
    assert_eq!(
        v(r#"fleetcast_activations_total{app="hello",result="ok"}"#),
        1.0
    );
    assert_eq!(
        v(r#"fleetcast_activations_total{app="hello",result="failed"}"#),
        0.0
    );
    assert_eq!(v(r#"fleetcast_app_seq{app="hello"}"#), 1.0);
    let digest = Digest::of(&std::fs::read(common::guest("hello-v1.wasm")).unwrap()).to_hex();
    let info = m.series("fleetcast_app_serving_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let committed_or_trial = ["committed", "trial"].map(|state| {
        format!(
            r#"fleetcast_app_serving_info{{app="hello",version="1.0.0",digest="{digest}",state="{state}"}} 1"#
        )
    });
    assert!(
        committed_or_trial.contains(&info[0].to_string()),
        "{info:?}"
    );
    // hello-v1 is two 16 KiB chunks: agent 1 could only fetch them from agent 0.
    let served = v(r#"fleetcast_chunks_served_total{source="store"}"#)
        + v(r#"fleetcast_chunks_served_total{source="transfer"}"#);
    assert!(served >= 2.0, "served {served}");
    assert!(v(r#"fleetcast_net_frames_received_total{kind="payload"}"#) >= 2.0);
    assert!(v(r#"fleetcast_net_bytes_received_total{kind="payload"}"#) > 21_200.0);
    assert!(v(r#"fleetcast_net_frames_sent_total{kind="control"}"#) > 0.0);
    assert_eq!(v("fleetcast_transfers_in_progress"), 0.0);
    assert!(v(r#"fleetcast_requests_total{app="hello",version="1.0.0"}"#) >= 3.0);
    assert!(v(r#"fleetcast_request_duration_seconds_count{app="hello",version="1.0.0"}"#) >= 3.0);
}

async fn next(rx: &mut Receiver<NetEvent>) -> NetEvent {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("timed out waiting for a net event")
        .expect("event channel closed")
}

/// Waits (deadline [`TIMEOUT`]) until `counters` satisfy `ok`: sends count on acknowledgement,
/// which no event announces.
async fn counters_until(counters: &NetCounters, ok: impl Fn(&NetSnapshot) -> bool) -> NetSnapshot {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = counters.snapshot();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "counters never matched: {s:?}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_counts_frames_and_bytes_by_kind_and_connections() {
    let (a, mut a_rx) = Net::bind(
        "127.0.0.1:0".parse().unwrap(),
        &Identity::generate(),
        NetConfig::default(),
    )
    .unwrap();
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    let (a_counters, b_counters) = (a.counters(), b.counters());
    let b_conn = b.dial(a.local_addr()).await.unwrap();
    let NetEvent::Connected { conn: a_conn, .. } = next(&mut a_rx).await else {
        panic!("expected Connected")
    };
    assert!(matches!(next(&mut b_rx).await, NetEvent::Connected { .. }));
    assert_eq!(a_counters.snapshot().connections, 1);
    assert_eq!(b_counters.snapshot().connections, 1);

    let chunk: Message = ContentMsg::Chunk {
        digest: Digest([9; 32]),
        index: 0,
        data: Payload(vec![7u8; 5_000].into()),
    }
    .into();
    let control = Message::StatusRequest;
    let len = |m: &Message| encode(m, MAX_FRAME).unwrap().len() as u64 + 4;
    for _ in 0..2 {
        b.send(b_conn, &chunk).unwrap();
    }
    b.send(b_conn, &control).unwrap();
    for _ in 0..3 {
        assert!(matches!(next(&mut a_rx).await, NetEvent::Message { .. }));
    }
    // Counted before each message was handed over: exact once the three arrived.
    let got = a_counters.snapshot();
    let traffic = |frames: u64, bytes: u64| TrafficSnapshot { frames, bytes };
    assert_eq!(got.received.payload, traffic(2, 2 * len(&chunk)));
    assert_eq!(got.received.control, traffic(1, len(&control)));
    assert_eq!(got.sent.payload, traffic(0, 0));
    let sent = counters_until(&b_counters, |s| {
        s.sent.payload.frames == 2 && s.sent.control.frames == 1
    })
    .await;
    assert_eq!(sent.sent.payload, traffic(2, 2 * len(&chunk)));
    assert_eq!(sent.sent.control, traffic(1, len(&control)));
    assert_eq!(sent.received, Default::default());

    // A closed connection leaves the gauge before its Disconnected is emitted.
    a.close(a_conn, "done");
    loop {
        if let NetEvent::Disconnected { .. } = next(&mut a_rx).await {
            break;
        }
    }
    assert_eq!(a_counters.snapshot().connections, 0);
    loop {
        if let NetEvent::Disconnected { .. } = next(&mut b_rx).await {
            break;
        }
    }
    assert_eq!(b_counters.snapshot().connections, 0);
}
