//! The agent runtime that never drops a request: smoke checks before the swap, trials after it
//! with automatic revert, per-app limits, several apps side by side, local rollback, and
//! crashes at every step of the activation pipeline. Real quinn, sled and wasmtime on loopback.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Fleet, TIMEOUT, guest};
use fleetcast::commands::publish::{PushArgs, PushOutcome};
use fleetcast::commands::release::{PolicyArgs, ReleaseCmd};
use fleetcast::http_get;
use fleetcast_agent::agent::AgentHandle;
use fleetcast_agent::config::{AgentConfig, RouteConfig};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

/// What `fleetcast release` would be told for `app` at `version` from `file`, pushed to the
/// agent at `quic` (no waiting for the fleet's count).
fn release_cmd(
    key: std::path::PathBuf,
    quic: SocketAddr,
    app: &str,
    file: &str,
    version: &str,
    policy: PolicyArgs,
) -> ReleaseCmd {
    ReleaseCmd {
        file: guest(file),
        app: app.into(),
        version: version.into(),
        push: PushArgs {
            key,
            peer: quic,
            fleet: Some("test".into()),
            wait: false,
            expect: None,
            timeout: 20,
        },
        chunk_size: 16 * 1024,
        policy,
    }
}

async fn release(
    fleet: &Fleet,
    app: &str,
    file: &str,
    version: &str,
    policy: PolicyArgs,
) -> anyhow::Result<PushOutcome> {
    release_at(
        fleet,
        fleet.agent(0).quic_addr(),
        app,
        file,
        version,
        policy,
    )
    .await
}

async fn release_at(
    fleet: &Fleet,
    quic: SocketAddr,
    app: &str,
    file: &str,
    version: &str,
    policy: PolicyArgs,
) -> anyhow::Result<PushOutcome> {
    release_cmd(fleet.key(), quic, app, file, version, policy)
        .execute()
        .await
}

/// A release that asks for a health check and a trial of `trial_requests` requests.
fn checked(trial_requests: u32) -> PolicyArgs {
    PolicyArgs {
        health_path: Some("/health".into()),
        trial_requests: Some(trial_requests),
        ..PolicyArgs::default()
    }
}

async fn admin(addr: SocketAddr, method: &'static str, path: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || fleetcast_agent::cli::admin_request(addr, method, &path))
        .await
        .unwrap()
        .unwrap()
}

/// The `/status` entry of `app`.
async fn app_status(a: &AgentHandle, app: &str) -> Value {
    let (code, body) = admin(a.admin_addr().unwrap(), "GET", "/status".into()).await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["app"] == app)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The versions in an app status's cached list, newest first.
fn cached_versions(st: &Value) -> Vec<String> {
    st["cached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["version"].as_str().unwrap().to_string())
        .collect()
}

/// `POST /apps/{app}/rollback[?to=]` on `a`'s admin endpoint: (status, body).
async fn local_rollback(a: &AgentHandle, app: &str, to: Option<&str>) -> (u16, String) {
    let query = to.map(|v| format!("?to={v}")).unwrap_or_default();
    admin(
        a.admin_addr().unwrap(),
        "POST",
        format!("/apps/{app}/rollback{query}"),
    )
    .await
}

/// Waits (deadline [`TIMEOUT`]) until `app`'s status satisfies `ok`; returns it.
async fn until_status(a: &AgentHandle, app: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let st = app_status(a, app).await;
        if ok(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "status never matched: {st:#}");
        tokio::task::yield_now().await;
    }
}

async fn get(a: &AgentHandle, host: &str, path: &str) -> http_get::Response {
    http_get::get(a.http_addr(), host, path).await.unwrap()
}

async fn version(a: &AgentHandle, host: &str) -> String {
    let r = get(a, host, "/").await;
    r.version_header.unwrap_or(format!("status {}", r.status))
}

/// Requests `Host: hello` in a loop until stopped; returns every (status, version or body).
fn background_load(
    a: &AgentHandle,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<(u16, String)>>) {
    let (addr, stop) = (a.http_addr(), Arc::new(AtomicBool::new(false)));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            let r = http_get::get(addr, "hello", "/").await.unwrap();
            seen.push((r.status, r.version_header.unwrap_or(r.body)));
        }
        seen
    });
    (stop, task)
}

/// Bad releases are refused by the smoke check or reverted by their trial, by the agent alone;
/// the committed release serves throughout and status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_releases_are_refused_or_reverted_and_the_old_one_keeps_serving() {
    let fleet = Fleet::start(1, |_| vec![]).await;
    let a = fleet.agent(0);
    release(&fleet, "hello", "hello-v1.wasm", "1.0.0", checked(2))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(version(a, "hello").await, "1.0.0");
    }
    until_status(a, "hello", |s| s["state"] == "committed").await;

    // Refused before the swap: health path traps, memory bomb, trap at instantiation.
    let (stop, load) = background_load(a);
    let bomb = PolicyArgs {
        max_memory_mib: Some(16),
        ..checked(50)
    };
    let refused = [
        (
            "fault-health-trap.wasm",
            "3.0.0",
            checked(50),
            "health check GET /health failed",
        ),
        ("fault-bomb.wasm", "3.3.0", bomb, "over its limit"),
        (
            "start-trap.wasm",
            "3.4.0",
            PolicyArgs::default(),
            "instantiating the component failed",
        ),
    ];
    for (file, v, policy, why) in refused {
        let out = release(&fleet, "hello", file, v, policy).await;
        assert!(out.is_err(), "{file}: the publisher hears of the failure");
        let st = until_status(a, "hello", |s| s["last_failure"]["version"] == v).await;
        let f = &st["last_failure"];
        assert_eq!(f["stage"], "smoke", "{file}: {st:#}");
        assert!(
            f["reason"].as_str().unwrap().contains(why),
            "{file}: {st:#}"
        );
        assert_eq!(st["serving"]["version"], "1.0.0");
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.await.unwrap();
    assert!(seen.len() > 3);
    assert!(
        seen.iter().all(|(s, v)| *s == 200 && v == "1.0.0"),
        "the committed release served every request: {:?}",
        seen.iter().filter(|(s, _)| *s != 200).collect::<Vec<_>>()
    );

    // Traps on a later request (the Nth, here a request to /crash): reverted.
    release(&fleet, "hello", "fault-crash.wasm", "3.1.0", checked(50))
        .await
        .unwrap();
    until_status(a, "hello", |s| s["state"] == "trial").await;
    for _ in 0..3 {
        assert_eq!(version(a, "hello").await, "3.1.0");
    }
    let r = get(a, "hello", "/crash").await;
    assert_eq!(r.status, 500);
    let st = until_status(a, "hello", |s| s["state"] == "reverted").await;
    assert_eq!(st["last_failure"]["stage"], "trial");
    assert!(
        st["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("trapped on 1 of 4"),
        "{st:#}"
    );
    assert_eq!(version(a, "hello").await, "1.0.0");

    // Loops forever on every request but its health path: reverted after the first timeout.
    let (stop, load) = background_load(a);
    let spin = PolicyArgs {
        request_timeout_ms: Some(300),
        ..checked(50)
    };
    release(&fleet, "hello", "fault-spin.wasm", "3.2.0", spin)
        .await
        .unwrap();
    let st = until_status(a, "hello", |s| {
        s["state"] == "reverted" && s["last_failure"]["version"] == "3.2.0"
    })
    .await;
    assert!(
        st["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{st:#}"
    );
    // Let the load see the old release again, then stop it.
    let t0 = Instant::now();
    while version(a, "hello").await != "1.0.0" {
        assert!(t0.elapsed() < TIMEOUT);
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.await.unwrap();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed
            .iter()
            .all(|(s, body)| *s == 500 && body.contains("version 3.2.0")),
        "only requests that reached the spinning release failed: {failed:?}"
    );
    assert!(seen.iter().any(|(s, v)| *s == 200 && v == "1.0.0"));

    // Releases that failed are not rollback targets: only 1.0.0 is cached, and it serves.
    let cached = cached_versions(&st);
    assert_eq!(cached, ["1.0.0"], "{st:#}");
    let (code, body) = local_rollback(a, "hello", None).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("no cached release of hello other than the one serving"),
        "{body}"
    );

    // The fleet hears of it: the node's status and its tally count the failure.
    let ns = a.status().await.unwrap();
    let app = &ns.apps[0];
    assert_eq!(
        app.serving
            .as_ref()
            .map(|r| r.version.to_string())
            .as_deref(),
        Some("1.0.0")
    );
    assert!(
        app.last_error.as_deref().unwrap().contains("timed out"),
        "{app:?}"
    );
    let t = ns.tallies.iter().find(|t| t.seq == app.seq).unwrap();
    assert_eq!((t.active, t.failed), (0, 1), "{t:?}");

    // Metrics count the reverts and refusals.
    let (_, metrics) = admin(a.admin_addr().unwrap(), "GET", "/metrics".into()).await;
    assert!(
        metrics.contains("fleetcast_reverts_total{app=\"hello\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetcast_releases_refused_total{app=\"hello\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetcast_traps_total{app=\"hello\",version=\"3.1.0\"} 1"),
        "{metrics}"
    );

    // A newer head goes through.
    release(&fleet, "hello", "hello-v2.wasm", "2.0.0", checked(1))
        .await
        .unwrap();
    assert_eq!(version(a, "hello").await, "2.0.0");
    let st = until_status(a, "hello", |s| s["state"] == "committed").await;
    assert_eq!(st["last_failure"], Value::Null);
}

/// Over the app's concurrency limit a request gets 503 at once (no queue); the app serves again
/// as soon as slots free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_is_503_and_service_continues() {
    let fleet = Fleet::start_with(
        1,
        |_| vec![],
        |c| {
            c.trial.requests = 0;
            c.trial.secs = 0;
        },
    )
    .await;
    let a = fleet.agent(0);
    let policy = PolicyArgs {
        max_concurrent: Some(2),
        request_timeout_ms: Some(3_000),
        ..PolicyArgs::default()
    };
    release(&fleet, "hello", "fault-spin.wasm", "3.2.0", policy)
        .await
        .unwrap();
    let st = until_status(a, "hello", |s| s["state"] == "committed").await;
    assert_eq!(st["limits"]["max_concurrent"], 2);
    let addr = a.http_addr();
    let spinning: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { http_get::get(addr, "hello", "/spin").await.unwrap() }))
        .collect();
    let t0 = Instant::now();
    while a.runtime().instances_in_use() < 2 {
        assert!(t0.elapsed() < TIMEOUT);
        tokio::task::yield_now().await;
    }
    let r = get(a, "hello", "/health").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("limit of 2 concurrent requests"),
        "{}",
        r.body
    );
    // Answered while both slots are still taken: refused at once, not queued behind them.
    assert!(
        spinning.iter().all(|t| !t.is_finished()),
        "the 503 came before a slot freed"
    );
    for t in spinning {
        assert_eq!(
            t.await.unwrap().status,
            500,
            "the spinning requests time out"
        );
    }
    let r = get(a, "hello", "/health").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let (_, metrics) = admin(a.admin_addr().unwrap(), "GET", "/metrics".into()).await;
    assert!(
        metrics.contains("fleetcast_overloaded_total{app=\"hello\",version=\"3.2.0\"} 1"),
        "{metrics}"
    );
}

/// Two apps side by side: each has its own slot, swaps and rollback; a route table sends a path
/// prefix to one of them; an operator's local rollback shows as an override and survives a
/// restart, which serves from the compiled cache without compiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_swap_independently_and_a_local_rollback_is_an_override() {
    let tweak = |c: &mut AgentConfig| {
        c.trial.requests = 0;
        c.trial.secs = 0;
        c.activation.cached_releases = 2;
        c.routes = vec![RouteConfig {
            host: None,
            path_prefix: Some("/beta".into()),
            app: "beta".into(),
        }];
    };
    let mut fleet = Fleet::start_with(1, |_| vec![], tweak).await;
    let no = PolicyArgs::default;
    release(&fleet, "alpha", "hello-v1.wasm", "1.0.0", no())
        .await
        .unwrap();
    release(&fleet, "beta", "hello-v2.wasm", "2.0.0", no())
        .await
        .unwrap();
    let a = fleet.agent(0);
    assert_eq!(version(a, "alpha.example.com").await, "1.0.0");
    assert_eq!(version(a, "beta.example.com").await, "2.0.0");
    let r = get(a, "alpha.example.com", "/beta/x").await;
    assert_eq!(
        r.version_header.as_deref(),
        Some("2.0.0"),
        "the route table wins"
    );

    release(&fleet, "alpha", "hello-v2.wasm", "2.0.0", no())
        .await
        .unwrap();
    assert_eq!(version(a, "alpha").await, "2.0.0");
    assert_eq!(version(a, "beta").await, "2.0.0");
    until_status(a, "alpha", |s| cached_versions(s).len() == 2).await;

    // Local rollback of alpha only, to the cached 1.0.0.
    let (code, body) = local_rollback(a, "alpha", None).await;
    assert_eq!(code, 200, "{body}");
    let done: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (done["from"].as_str(), done["to"].as_str()),
        (Some("2.0.0"), Some("1.0.0"))
    );
    assert_eq!(version(a, "alpha").await, "1.0.0");
    assert_eq!(version(a, "beta").await, "2.0.0");
    let st = app_status(a, "alpha").await;
    assert_eq!(st["state"], "local-override");
    let ns = a.status().await.unwrap();
    let alpha = ns.apps.iter().find(|x| x.app.as_str() == "alpha").unwrap();
    assert!(alpha.local_override);
    // A version the agent does not hold is refused, naming what it holds.
    let (code, body) = local_rollback(a, "alpha", Some("9.9.9")).await;
    assert_eq!(code, 409);
    assert!(
        body.contains("cached: 1.0.0, 2.0.0") || body.contains("cached: 2.0.0, 1.0.0"),
        "{body}"
    );

    // Restart: the override holds, served from the compiled cache (no compile).
    let cfg = {
        let mut c = fleet.config(0, vec![]);
        tweak(&mut c);
        c
    };
    fleet.agents[0].take().unwrap().shutdown().await;
    fleet.agents[0] = Some(fleetcast_agent::agent::start(cfg).await.unwrap());
    let a = fleet.agent(0);
    assert_eq!(version(a, "alpha").await, "1.0.0");
    assert_eq!(version(a, "beta").await, "2.0.0");
    assert_eq!(
        a.runtime_stats().compiles,
        0,
        "served from the compiled cache"
    );
    assert_eq!(app_status(a, "alpha").await["state"], "local-override");

    // The next head for alpha ends the override.
    // (Other bytes than 1.0.0: the cache keeps releases by content digest.)
    release(&fleet, "alpha", "hello-1mib-v1.wasm", "1.0.1", no())
        .await
        .unwrap();
    let st = until_status(a, "alpha", |s| s["state"] == "committed").await;
    assert_eq!(st["serving"]["version"], "1.0.1");
    // activation.cached_releases = 2: the newest two served stay compiled, 2.0.0 was dropped.
    let cached = cached_versions(&st);
    assert_eq!(cached, ["1.0.1", "1.0.0"]);
    assert!(
        st["cached"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["compiled"] == true)
    );
}

// ---- crashes at each step of the pipeline (a real agent process, aborted by a failpoint) ----

/// Not a test on its own: when `FLEETCAST_TEST_AGENT` names a config file, runs an agent from it
/// in this process (the crash test starts the test binary again this way), printing the ready
/// line, until killed.
#[test]
#[ignore = "the entry point of the agent processes the crash test starts, not a test"]
fn agent_process() {
    let Ok(config) = std::env::var("FLEETCAST_TEST_AGENT") else {
        return;
    };
    let cfg = AgentConfig::load(std::path::Path::new(&config)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let agent = fleetcast_agent::agent::start(cfg).await.unwrap();
        println!(
            "fleetcast-agent ready quic={} http={} admin={}",
            agent.quic_addr(),
            agent.http_addr(),
            agent.admin_addr().unwrap()
        );
        std::future::pending::<()>().await;
    });
}

struct Child {
    child: tokio::process::Child,
    quic: SocketAddr,
    http: SocketAddr,
    admin: SocketAddr,
}

async fn spawn_agent(config: &std::path::Path, failpoint: Option<&str>) -> Child {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "agent_process",
        "--include-ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("FLEETCAST_TEST_AGENT", config)
    .env_remove("FLEETCAST_FAILPOINT")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    if let Some(f) = failpoint {
        cmd.env("FLEETCAST_FAILPOINT", f);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(TIMEOUT, async {
        loop {
            let l = lines
                .next_line()
                .await
                .unwrap()
                .expect("agent printed its ready line");
            // libtest prints "test agent_process ... " before it, on the same line.
            if let Some(i) = l.find("fleetcast-agent ready") {
                return l[i..].to_string();
            }
        }
    })
    .await
    .unwrap();
    let field = |k: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    Child {
        quic: field("quic="),
        http: field("http="),
        admin: field("admin="),
        child,
    }
}

async fn serves_at(http: SocketAddr) -> String {
    let r = http_get::get(http, "hello", "/").await.unwrap();
    r.version_header.unwrap_or(format!("status {}", r.status))
}

/// Kill the agent at each step of the activation pipeline: the restart serves the last
/// committed release (the new one once its commit is durable), and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_pipeline_step_restarts_into_the_last_committed_release() {
    let fleet = Fleet::start(0, |_| vec![]).await;
    let steps = [
        ("compile", "1.0.0", None),
        ("cache", "1.0.0", None),
        ("persist", "1.0.0", Some("restart")),
        ("smoke", "1.0.0", Some("restart")),
        ("swap", "1.0.0", Some("restart")),
        ("trial", "1.0.0", Some("restart")),
        ("commit", "2.0.0", None),
    ];
    for (step, expect, failure) in steps {
        let dir = fleet.dir.path().join(format!("crash-{step}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "fleet = \"test\"\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
                 trusted_keys = [{:?}]\n[admin]\nlisten = \"127.0.0.1:0\"\n[runtime]\nmax_instances = 8\n",
                fleet.dir.path().join("ops.pub")
            ),
        )
        .unwrap();
        // v1, committed.
        let mut c = spawn_agent(&config, None).await;
        release_at(
            &fleet,
            c.quic,
            "hello",
            "hello-v1.wasm",
            "1.0.0",
            checked(1),
        )
        .await
        .unwrap();
        assert_eq!(serves_at(c.http).await, "1.0.0");
        let t0 = Instant::now();
        loop {
            let (_, body) = admin(c.admin, "GET", "/status".into()).await;
            if body.contains("\"state\": \"committed\"") {
                break;
            }
            assert!(t0.elapsed() < TIMEOUT, "v1 never committed: {body}");
            tokio::task::yield_now().await;
        }
        c.child.kill().await.unwrap();
        // v2, with the agent aborting right after `step`.
        let mut c = spawn_agent(&config, Some(step)).await;
        let (quic, http) = (c.quic, c.http);
        let push = release_cmd(
            fleet.key(),
            quic,
            "hello",
            "hello-v2.wasm",
            "2.0.0",
            checked(1),
        );
        let push = tokio::spawn(push.execute());
        // Requests move the trial along (the `commit` step needs one); the process dies.
        let exited = tokio::time::timeout(TIMEOUT, async {
            loop {
                tokio::select! {
                    status = c.child.wait() => return status.unwrap(),
                    _ = http_get::get(http, "hello", "/") => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("step {step}: the failpoint was not reached"));
        assert!(!exited.success(), "step {step}: aborted");
        push.abort();
        // Restart without the failpoint.
        let mut c = spawn_agent(&config, None).await;
        assert_eq!(serves_at(c.http).await, expect, "step {step}");
        let st = {
            let mut s = fleetcast::session::Session::connect(c.quic, TIMEOUT)
                .await
                .unwrap();
            s.status(TIMEOUT).await.unwrap()
        };
        let app = &st.apps[0];
        match failure {
            Some(_) => {
                assert!(
                    app.last_error
                        .as_deref()
                        .unwrap_or_default()
                        .contains("agent stopped"),
                    "step {step}: {app:?}"
                );
                assert_eq!(
                    app.serving
                        .as_ref()
                        .map(|r| r.version.to_string())
                        .as_deref(),
                    Some("1.0.0")
                );
            }
            None => assert_eq!(app.last_error, None, "step {step}: {app:?}"),
        }
        c.child.kill().await.unwrap();
        eprintln!("step {step}: restarted into {expect}");
    }
}
