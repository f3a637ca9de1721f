//! The `fleetcast` binary as an operator or a script runs it: exit codes, `--json`, peer
//! resolution and fast failure, versions as identities, rollback directions. The agents run in
//! this process (real quinn, sled and wasmtime on loopback); the CLI is the real binary, built
//! by cargo with the workspace's features (`cargo build --workspace --bin fleetcast`) the first
//! time a test needs it. The `census_*` tests check "N of M" against agents that count
//! themselves (the census).

mod common;

use std::time::Duration;

use common::cli::{Run, fleetcast, release};
use common::{Fleet, guest};
use fleetcast_protocol::Digest;
use serde_json::Value;

/// `fleetcast rollback --app hello` to agent 0, plus `more`.
async fn rollback(fleet: &Fleet, more: &[&str]) -> Run {
    let (key, peer) = (
        fleet.key().display().to_string(),
        fleet.agent(0).quic_addr().to_string(),
    );
    let mut args = vec!["rollback", "--app", "hello", "--key", &key, "--peer", &peer];
    args.extend_from_slice(more);
    fleetcast(&args).await
}

/// The version of `hello`'s head in force on agent 0.
async fn active(fleet: &Fleet) -> String {
    let st = fleet.agent(0).status().await.unwrap();
    st.apps[0].active.version.to_string()
}

fn short(file: &str) -> String {
    Digest::of(&std::fs::read(guest(file)).unwrap()).short()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_exits_3_at_its_connect_timeout() {
    // A port that is held and silent: nothing answers QUIC there. The bound is loose (a loaded
    // machine starts processes slowly); what it tells apart is the 1 s connect timeout from
    // QUIC's 10 s idle timeout, which the CLI used to wait out. BENCHMARKS.md has the figure.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let r = fleetcast(&["status", "--peer", &addr]).await;
    r.expect(3);
    assert!(r.took < Duration::from_secs(6), "took {:?}", r.took);
    assert!(
        r.took >= Duration::from_millis(900),
        "it tried for the second: {:?}",
        r.took
    );
    assert!(
        r.stderr.contains(&format!(
            "no fleetcast-agent answered at {addr} within 1s: check it runs and that --peer names its QUIC listen address"
        )) && r.stderr.contains("raise --connect-timeout"),
        "{r:#?}"
    );

    // A release says the same, with --json on stdout; a longer --connect-timeout waits longer.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops.key");
    fleetcast_net::keys::generate(&key).unwrap();
    let file = guest("hello-v1.wasm").display().to_string();
    let key = key.display().to_string();
    let r = fleetcast(&[
        "release",
        &file,
        "--app",
        "hello",
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--peer",
        &addr,
        "--connect-timeout",
        "1.5",
        "--json",
    ])
    .await;
    r.expect(3);
    assert!(r.took >= Duration::from_millis(1400), "took {:?}", r.took);
    let e = r.last();
    assert_eq!(
        (e["event"].as_str(), e["code"].as_i64(), e["kind"].as_str()),
        (Some("error"), Some(3), Some("unreachable")),
        "{e}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("within 1.5s"),
        "{e}"
    );
    assert!(r.stderr.contains("no fleetcast-agent answered"), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_peer_or_file_is_a_usage_error_before_anything_is_sent() {
    let r = fleetcast(&["status", "--peer", "nonsense"]).await;
    r.expect(2);
    assert!(r.stderr.contains("expected HOST:PORT or IP:PORT"), "{r:#?}");
    let r = fleetcast(&["status", "--peer", "edge1:http", "--json"]).await;
    r.expect(2);
    let e = r.last();
    assert_eq!(
        (e["code"].as_i64(), e["kind"].as_str()),
        (Some(2), Some("usage"))
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("expected HOST:PORT or IP:PORT"),
        "{e}"
    );
    // A file that is not a component is refused before any agent is dialled (none listens).
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops.key");
    fleetcast_net::keys::generate(&key).unwrap();
    let (file, key) = (
        guest("not-a-component.wasm").display().to_string(),
        key.display().to_string(),
    );
    let r = fleetcast(&[
        "release",
        &file,
        "--app",
        "hello",
        "--version",
        "1.0.0",
        "--key",
        &key,
        "--peer",
        "127.0.0.1:9",
    ])
    .await;
    r.expect(2);
    assert!(r.stderr.contains("cannot be released"), "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_works_and_status_release_history_json_have_the_documented_fields() {
    let fleet = Fleet::start(1, |_| vec![]).await;
    let port = fleet.agent(0).quic_addr().port();
    let peer = format!("localhost:{port}");

    // release --json: pushed, peer, census, done, each on its own line.
    let r = release(&fleet, "hello-v1.wasm", "1.0.0", &["--json"]).await;
    r.expect(0);
    let lines = r.json();
    let events = r.events();
    assert_eq!(
        events.first().map(String::as_str),
        Some("pushed"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("done"),
        "{events:?}"
    );
    assert!(events.contains(&"peer".to_string()), "{events:?}");
    assert!(events.contains(&"census".to_string()), "{events:?}");
    let pushed = &lines[0];
    assert_eq!(pushed["kind"], "release");
    assert_eq!(pushed["app"], "hello");
    assert_eq!(pushed["seq"], 1);
    assert_eq!(pushed["release"]["version"], "1.0.0");
    assert_eq!(pushed["release"]["digest"].as_str().unwrap().len(), 64);
    assert!(pushed["release"]["size"].as_u64().unwrap() > 0);
    assert_eq!(pushed["direction"], "release");
    assert_eq!(pushed["from_version"], Value::Null);
    assert_eq!(pushed["peer_node"], fleet.agent(0).node_id().to_string());
    let peer_ev = lines.iter().find(|l| l["event"] == "peer").unwrap();
    assert_eq!(peer_ev["outcome"], "active");
    let done = r.last();
    assert_eq!(done["result"], "active");
    assert_eq!(done["seq"], 1);
    assert_eq!(done["kind"], "release");
    assert!(done["chunks_served"].as_u64().unwrap() > 0);
    assert!(done["bytes_served"].as_u64().unwrap() > 0);
    assert!(done["active"].is_u64());
    assert!(
        done["agents"].is_u64() || done["agents"].is_null(),
        "{done}"
    );

    // status through localhost: a table in text, one object with --json.
    let r = fleetcast(&["status", "--peer", &peer]).await;
    r.expect(0);
    let header = r
        .stdout
        .lines()
        .find(|l| l.starts_with("APP "))
        .unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "APP", "STATE", "VERSION", "SEQ", "DIGEST", "SINCE", "TRIAL", "LIMITS"
        ],
        "{r:#?}"
    );
    assert!(r.stdout.lines().any(|l| l.starts_with("hello  ")), "{r:#?}");
    assert!(r.stdout.contains("fleet: "), "{r:#?}");
    let r = fleetcast(&["status", "--peer", &peer, "--json"]).await;
    r.expect(0);
    assert_eq!(r.events(), ["status"]);
    let st = r.last();
    assert_eq!(st["node"], fleet.agent(0).node_id().to_string());
    assert_eq!(st["fleet"], "test");
    assert!(st["links"].as_u64().unwrap() >= 1);
    assert!(st["neighbours"].is_array() && st["passive_view"].is_u64());
    assert!(
        st["census"].is_object() || st["census_error"].is_string(),
        "{st}"
    );
    let app = &st["apps"][0];
    assert_eq!(app["app"], "hello");
    assert_eq!(app["version"], "1.0.0");
    assert_eq!(app["seq"], 1);
    assert_eq!(app["kind"], "release");
    assert!(app["state"].is_string() && app["digest"].is_string());
    assert_eq!(st["seqs"][0]["seq"], 1);
    // --raw is --json now.
    let raw = fleetcast(&["status", "--peer", &peer, "--raw"]).await;
    raw.expect(0);
    assert_eq!(raw.events(), ["status"]);

    // history --json, newest first, the serving one marked.
    release(&fleet, "hello-v2.wasm", "2.0.0", &[])
        .await
        .expect(0);
    let r = fleetcast(&["history", "--app", "hello", "--peer", &peer, "--json"]).await;
    r.expect(0);
    let h = r.last();
    assert_eq!(h["event"], "history");
    assert_eq!(h["app"], "hello");
    let entries = h["entries"].as_array().unwrap();
    let seen: Vec<(u64, &str, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["release"]["version"].as_str().unwrap(),
                e["serves"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(2, "2.0.0", true), (1, "1.0.0", false)]);
    assert_eq!(entries[0]["kind"], "release");
    assert!(entries[0]["issued_at_ms"].as_u64().unwrap() > 0);
    let r = fleetcast(&["history", "--app", "hello", "--peer", &peer]).await;
    r.expect(0);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["SEQ", "KIND", "VERSION", "DIGEST", "SIGNED"]),
        "{r:#?}"
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("*  2    release  2.0.0")),
        "{r:#?}"
    );
    let r = fleetcast(&["history", "--app", "nope", "--peer", &peer]).await;
    r.expect(2);
    assert!(
        r.stderr.contains("has no app nope (it has: hello)"),
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_identities() {
    let fleet = Fleet::start(1, |_| vec![]).await;
    release(&fleet, "hello-v1.wasm", "1.0.0", &[])
        .await
        .expect(0);

    // Other bytes under a version that exists: refused, naming both digests.
    let r = release(&fleet, "hello-v2.wasm", "1.0.0", &[]).await;
    r.expect(2);
    for d in [short("hello-v1.wasm"), short("hello-v2.wasm")] {
        assert!(r.stderr.contains(&d), "{d}: {r:#?}");
    }
    assert!(
        r.stderr.contains("release these bytes as a new version"),
        "{r:#?}"
    );
    assert_eq!(active(&fleet).await, "1.0.0");

    // Exactly what is active: nothing to do, exit 0 (a CI job may run again).
    let r = release(&fleet, "hello-v1.wasm", "1.0.0", &[]).await;
    r.expect(0);
    assert!(r.stdout.contains("already active"), "{r:#?}");
    let r = release(&fleet, "hello-v1.wasm", "1.0.0", &["--json"]).await;
    r.expect(0);
    assert_eq!(r.last()["result"], "already-active");
    assert_eq!(r.last()["seq"], 1);

    // The same bytes under a new version: allowed, and said.
    let r = release(&fleet, "hello-v1.wasm", "2.0.0", &[]).await;
    r.expect(0);
    assert!(r.stdout.contains("same bytes as hello 1.0.0"), "{r:#?}");
    assert_eq!(active(&fleet).await, "2.0.0");

    // Lower than what serves: needs --allow-downgrade; a version in the history points at
    // rollback.
    let r = release(&fleet, "hello-v2.wasm", "1.5.0", &[]).await;
    r.expect(2);
    assert!(r.stderr.contains("pass --allow-downgrade"), "{r:#?}");
    let r = release(&fleet, "hello-v1.wasm", "1.0.0", &[]).await;
    r.expect(2);
    assert!(
        r.stderr
            .contains("`fleetcast rollback --app hello --to 1.0.0`"),
        "{r:#?}"
    );
    assert_eq!(active(&fleet).await, "2.0.0", "nothing was pushed");
    let r = release(&fleet, "hello-v2.wasm", "1.5.0", &["--allow-downgrade"]).await;
    r.expect(0);
    assert!(r.stdout.contains("a downgrade from 2.0.0"), "{r:#?}");
    assert_eq!(active(&fleet).await, "1.5.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_goes_to_the_previous_distinct_version_and_words_match_the_direction() {
    let fleet = Fleet::start(1, |_| vec![]).await;
    release(&fleet, "hello-v1.wasm", "1.0.0", &[])
        .await
        .expect(0);
    // 2.0.0 carries 1.0.0's bytes: the previous *version* is still 1.0.0.
    release(&fleet, "hello-v1.wasm", "2.0.0", &[])
        .await
        .expect(0);

    let r = rollback(&fleet, &[]).await;
    r.expect(0);
    assert!(
        r.stdout.contains(
            "rolling hello back from 2.0.0 to 1.0.0 (the same bytes as 2.0.0: only the version changes)"
        ),
        "{r:#?}"
    );
    assert_eq!(active(&fleet).await, "1.0.0");

    let r = rollback(&fleet, &["--to", "2.0.0", "--json"]).await;
    r.expect(0);
    let pushed = &r.json()[0];
    assert_eq!(pushed["event"], "pushed");
    assert_eq!(pushed["kind"], "rollback");
    assert_eq!(pushed["direction"], "forward");
    assert_eq!(pushed["from_version"], "1.0.0");
    assert_eq!(active(&fleet).await, "2.0.0");
    let r = rollback(&fleet, &["--to", "1.0.0"]).await;
    r.expect(0);
    assert!(
        r.stdout.contains("rolling hello back from 2.0.0 to 1.0.0"),
        "{r:#?}"
    );
    let r = rollback(&fleet, &["--to", "2.0.0"]).await;
    r.expect(0);
    assert!(
        r.stdout
            .contains("moving hello forward from 1.0.0 to 2.0.0"),
        "{r:#?}"
    );
    assert!(!r.stdout.contains("rolling"), "{r:#?}");

    // To the active version: nothing to do; to an unknown one: usage, naming what is known.
    let r = rollback(&fleet, &["--to", "2.0.0"]).await;
    r.expect(0);
    assert!(r.stdout.contains("already active"), "{r:#?}");
    let r = rollback(&fleet, &["--to", "9.9.9"]).await;
    r.expect(2);
    assert!(r.stderr.contains("it holds 1.0.0, 2.0.0"), "{r:#?}");
    let st = fleet.agent(0).status().await.unwrap();
    assert_eq!(st.apps[0].seq, 6, "two releases and four rollbacks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_more_agents_than_exist_times_out_with_exit_4() {
    let fleet = Fleet::start(2, |i| if i == 0 { vec![] } else { vec![0] }).await;
    let r = release(
        &fleet,
        "hello-v1.wasm",
        "1.0.0",
        &["--expect", "3", "--timeout", "8", "--json"],
    )
    .await;
    r.expect(4);
    let e = r.last();
    assert_eq!(
        (e["kind"].as_str(), e["code"].as_i64()),
        (Some("timeout"), Some(4))
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("only 2 of the 3 expected agents run hello 1.0.0 after 8s"),
        "{e}"
    );
    let events = r.events();
    assert!(events.contains(&"progress".to_string()), "{events:?}");
    // Without a terminal the progress is plain lines, printed when the numbers move.
    let r = release(&fleet, "hello-v2.wasm", "2.0.0", &["--expect", "2"]).await;
    r.expect(0);
    let progress: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("agents active"))
        .collect();
    assert!(!progress.is_empty(), "{r:#?}");
    assert!(
        progress.windows(2).all(|w| w[0] != w[1]),
        "a line only when the numbers change: {progress:?}"
    );
}

// ---- the census (needs agents that answer it: the protocol side of issue #10) ----

async fn three_agents() -> Fleet {
    Fleet::start(3, |i| if i == 0 { vec![] } else { vec![0] }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_release_and_wait_count_n_of_m() {
    let fleet = three_agents().await;
    let r = release(&fleet, "hello-v1.wasm", "1.0.0", &[]).await;
    r.expect(0);
    assert!(
        r.stdout.contains("hello 1.0.0 active on the peer agent; ")
            && r.stdout.contains(" of 3 agents"),
        "{r:#?}"
    );
    assert!(!r.stdout.contains("agent(s)"), "{r:#?}");

    let r = release(&fleet, "hello-v2.wasm", "2.0.0", &["--wait"]).await;
    r.expect(0);
    assert!(r.stdout.contains("3 of 3 agents run hello 2.0.0"), "{r:#?}");

    let r = rollback(&fleet, &["--wait", "--json"]).await;
    r.expect(0);
    let done = r.last();
    assert_eq!(done["event"], "done");
    assert_eq!(
        (done["active"].as_u64(), done["agents"].as_u64()),
        (Some(3), Some(3)),
        "{done}"
    );
    let census = r
        .json()
        .into_iter()
        .rfind(|l| l["event"] == "census")
        .unwrap();
    assert_eq!(census["agents"], 3);
    assert_eq!(census["unanswered"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn census_status_counts_the_fleet_and_where_it_runs_what() {
    let fleet = three_agents().await;
    release(&fleet, "hello-v1.wasm", "1.0.0", &["--wait"])
        .await
        .expect(0);
    let peer = fleet.agent(2).quic_addr().to_string();
    let r = fleetcast(&["status", "--peer", &peer]).await;
    r.expect(0);
    assert!(
        r.stdout.contains("fleet: 3 agents counted (all answered)"),
        "{r:#?}"
    );
    assert!(
        r.stdout.contains("hello: fleet 3 on seq 1 (1.0.0)"),
        "{r:#?}"
    );
    let r = fleetcast(&["status", "--peer", &peer, "--json"]).await;
    r.expect(0);
    let st = r.last();
    assert_eq!(st["census"]["agents"], 3, "{st}");
    assert_eq!(st["census"]["entries"][0]["agents"], 3, "{st}");
    assert_eq!(st["census_error"], Value::Null);
}
