//! Tests of the app server over real sockets, real wasmtime and real guests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::*;
use crate::runtime::RuntimeConfig;
use crate::runtime::testutil::*;

fn rt_with_timeout(request_timeout_ms: u64) -> Arc<Runtime> {
    runtime_with(RuntimeConfig {
        max_instances: 16,
        request_timeout_ms,
        ..RuntimeConfig::default()
    })
}

/// Waits, without sleeping, until `cond` holds (deadline: [`DEADLINE`]).
async fn until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition not reached before the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_hello_v1() {
    let rt = small_runtime();
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let c = client();
    let r = get(&c, server.addr, "hello.example.com", "/")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "hello from fleetcast 1.0.0\n");
    assert_eq!(r.header("x-hello-version"), Some("1.0.0"));
    let r = get(&c, server.addr, "hello", "/health?probe=1")
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok\n"));
    let stats = rt.stats();
    assert_eq!((stats.requests, stats.errors, stats.not_found), (2, 0, 0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http2_prior_knowledge() {
    let rt = small_runtime();
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let r = get(&h2, server.addr, "hello", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-hello-version"), Some("1.0.0"));
    server.stop().await.unwrap();
}

/// Several clients hammer the app while v1 is swapped for v2: no request
/// fails, both versions are served, and once a client has seen v2 it
/// never sees v1 again (the swap is atomic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_never_fails_a_request() {
    const CLIENTS: usize = 4;
    /// Responses seen per client: (v1, v2).
    type Seen = [(usize, usize); CLIENTS];
    let rt = small_runtime();
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_tx, seen_rx) = watch::channel::<Seen>([(0, 0); CLIENTS]);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = JoinSet::new();
    for id in 0..CLIENTS {
        let (stop, seen_tx, failures) = (stop.clone(), seen_tx.clone(), failures.clone());
        let addr = server.addr;
        tasks.spawn(async move {
            let c = client();
            let mut versions = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get(&c, addr, "hello", "/").await {
                    Ok(r) if r.status == StatusCode::OK => {
                        let v = r.header("x-hello-version").unwrap_or("?").to_string();
                        seen_tx.send_modify(|seen| match v.as_str() {
                            "1.0.0" => seen[id].0 += 1,
                            _ => seen[id].1 += 1,
                        });
                        versions.push(v);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", r.status, r.body)),
                    Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                }
            }
            versions
        });
    }
    let wait = |f: fn(&Seen) -> bool| {
        let mut rx = seen_rx.clone();
        async move {
            let seen = tokio::time::timeout(DEADLINE, rx.wait_for(f)).await;
            seen.expect("deadline").expect("senders alive");
        }
    };
    wait(|seen| seen.iter().all(|(v1, _)| *v1 >= 5)).await;
    // Compile while serving, then swap.
    let v2 = compile(&rt, HELLO_V2).await;
    assert!(seen_rx.borrow().iter().all(|(_, v2)| *v2 == 0));
    let old = rt.deploy(meta("hello", "2.0.0", 2), &v2).unwrap();
    assert_eq!(old.meta.version, "1.0.0");
    wait(|seen| seen.iter().all(|(_, v2)| *v2 >= 5)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    while let Some(versions) = tasks.join_next().await {
        let versions = versions.unwrap();
        total += versions.len();
        let first_v2 = versions.iter().position(|v| v == "2.0.0").expect("saw v2");
        assert!(first_v2 > 0, "saw v1 first: {versions:?}");
        assert!(
            versions[first_v2..].iter().all(|v| v == "2.0.0"),
            "a client saw v1 after v2: {versions:?}"
        );
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    let served: usize = seen_rx.borrow().iter().map(|(v1, v2)| v1 + v2).sum();
    assert_eq!(served, total);
    assert_eq!(rt.stats().errors, 0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_404s_unknown_apps() {
    let rt = small_runtime();
    rt.deploy(meta("alpha", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    rt.deploy(meta("beta", "2.0.0", 2), &compile(&rt, HELLO_V2).await);
    let server = TestServer::start(rt.clone()).await;
    let c = client();
    let version = |r: &Reply| r.header("x-hello-version").map(str::to_string);
    let r = get(&c, server.addr, "alpha.edge.example:8080", "/")
        .await
        .unwrap();
    assert_eq!(version(&r).as_deref(), Some("1.0.0"));
    let r = get(&c, server.addr, "BETA.edge.example", "/")
        .await
        .unwrap();
    assert_eq!(version(&r).as_deref(), Some("2.0.0"));

    let r = get(&c, server.addr, "gamma.edge.example", "/")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(
        r.body,
        "no app named \"gamma\" is deployed on this agent (deployed: alpha, beta)\n"
    );
    assert_eq!(rt.stats().not_found, 1);

    // With exactly one app left, it serves every host.
    rt.undeploy("beta");
    for host in ["gamma.edge.example", "beta", "localhost:1234"] {
        let r = get(&c, server.addr, host, "/").await.unwrap();
        assert_eq!(version(&r).as_deref(), Some("1.0.0"), "host {host}");
    }
    rt.undeploy("alpha");
    let r = get(&c, server.addr, "alpha", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.ends_with("(deployed: none)\n"), "{}", r.body);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_artifact_round_trip_serves_without_compiling() {
    let compiler = small_runtime();
    let artifact = compile(&compiler, HELLO_V1).await.artifact;
    let rt = small_runtime();
    // SAFETY: produced by `compile` on an engine with the same configuration.
    let loaded = unsafe { rt.load(&artifact) }.unwrap();
    rt.deploy(meta("hello", "1.0.0", 1), &loaded);
    let server = TestServer::start(rt.clone()).await;
    let r = get(&client(), server.addr, "hello", "/").await.unwrap();
    assert_eq!(r.body, "hello from fleetcast 1.0.0\n");
    let stats = rt.stats();
    assert_eq!((stats.compiles, stats.cache_loads), (0, 1));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_failures_are_500s_naming_app_and_version() {
    let rt = rt_with_timeout(300);
    let cases = [
        ("trap", "unreachable", "the guest trapped"),
        ("spin", "(loop $l (br $l))", "did not respond within 300ms"),
        ("silent", "", "returned without setting a response"),
    ];
    for (app, body, _) in cases {
        rt.deploy(
            meta(app, "0.1.0", 1),
            &prepare_wat(&rt, &handler_wat(body)).unwrap(),
        );
    }
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let c = client();
    for (app, _, reason) in cases {
        let r = get(&c, server.addr, app, "/").await.unwrap();
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{app}");
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let prefix = format!("app \"{app}\" version 0.1.0 failed to handle the request: ");
        assert!(
            r.body.starts_with(&prefix) && r.body.contains(reason),
            "{}",
            r.body
        );
    }
    // The agent keeps serving.
    let r = get(&c, server.addr, "hello", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(rt.stats().errors, 3);
    server.stop().await.unwrap();
}

/// On a single-threaded executor a spinning guest must still yield at
/// every epoch tick, so other requests are served before it times out.
#[tokio::test(flavor = "current_thread")]
async fn spinning_guest_does_not_starve_other_requests() {
    let rt = rt_with_timeout(20_000);
    rt.deploy(
        meta("spin", "0.1.0", 1),
        &prepare_wat(&rt, &handler_wat("(loop $l (br $l))")).unwrap(),
    );
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let addr = server.addr;
    let spin = tokio::spawn(async move { get(&client(), addr, "spin", "/").await });
    until(|| rt.instances_in_use() == 1).await;
    let r = get(&client(), addr, "hello", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !spin.is_finished(),
        "hello was served only after the spinning guest ended"
    );
    spin.abort();
    server.stop().await.unwrap();
}

/// Fuel, when the agent meters it: a guest that spins runs out of fuel (a trap) long before
/// its deadline; hello, under the same budget, is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_out_of_fuel_traps_and_others_are_served() {
    let rt = runtime_with(RuntimeConfig {
        max_instances: 8,
        request_timeout_ms: 20_000,
        fuel: Some(50_000_000),
        ..RuntimeConfig::default()
    });
    rt.deploy(
        meta("spin", "0.1.0", 1),
        &prepare_wat(&rt, &handler_wat("(loop $l (br $l))")).unwrap(),
    );
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let c = client();
    let r = get(&c, server.addr, "spin", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body.contains("the guest trapped"), "{}", r.body);
    assert!(r.body.contains("fuel"), "{}", r.body);
    let r = get(&c, server.addr, "hello", "/").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    server.stop().await.unwrap();
}

/// A body whose declared length is over the app's limit is refused with 413 before any
/// instance exists. (A body without a declared length is cut at the limit by the stream
/// the guest reads: it sees an `HTTP-request-body-size` error; hello never reads it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_is_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = small_runtime();
    let limits = crate::runtime::Limits {
        max_body_bytes: 64,
        ..crate::runtime::Limits::agent(rt.config())
    };
    rt.deploy_with(
        meta("hello", "1.0.0", 1),
        &compile(&rt, HELLO_V1).await,
        limits,
        None,
    );
    let server = TestServer::start(rt.clone()).await;
    let raw = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(DEADLINE, s.read_to_string(&mut out)).await;
        out
    };
    let big = "x".repeat(100);
    let resp = raw(format!(
        "POST / HTTP/1.1\r\nHost: hello\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{big}"
    ))
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("over this app's limit of 64 bytes"), "{resp}");
    let small = raw(
        "POST / HTTP/1.1\r\nHost: hello\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789"
            .to_string(),
    )
    .await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    let snap = rt.metrics().release("hello", "1.0.0").snapshot();
    assert_eq!(snap.too_large, 1);
    server.stop().await.unwrap();
}

/// Retiring a release: a request in flight when it is swapped out finishes on it, and the
/// release (the `Deployed` and the pre-instantiated component it holds) is dropped when that
/// request ends, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_out_release_is_freed_when_its_last_request_ends() {
    let rt = rt_with_timeout(400);
    rt.deploy(
        meta("hello", "0.1.0", 1),
        &prepare_wat(&rt, &handler_wat("(loop $l (br $l))")).unwrap(),
    );
    let server = TestServer::start(rt.clone()).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(async move { get(&client(), addr, "hello", "/").await });
    until(|| rt.instances_in_use() == 1).await;
    let old = rt.deploy(meta("hello", "1.0.0", 2), &compile(&rt, HELLO_V1).await);
    let old = Arc::downgrade(&old.expect("0.1.0 was deployed"));
    assert!(
        old.upgrade().is_some(),
        "the request in flight holds the old release"
    );
    let r = get(&client(), addr, "hello", "/").await.unwrap();
    assert_eq!(
        r.header("x-hello-version"),
        Some("1.0.0"),
        "new requests see the new one"
    );
    let r = in_flight.await.unwrap().unwrap();
    assert!(
        r.body.contains("version 0.1.0"),
        "it finished on the old release: {}",
        r.body
    );
    until(|| old.upgrade().is_none()).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let rt = rt_with_timeout(500);
    rt.deploy(
        meta("spin", "0.1.0", 1),
        &prepare_wat(&rt, &handler_wat("(loop $l (br $l))")).unwrap(),
    );
    let server = TestServer::start(rt.clone()).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(async move { get(&client(), addr, "spin", "/").await });
    until(|| rt.instances_in_use() == 1).await;
    server.stop().await.unwrap();
    // The request that was running when shutdown began got its response.
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.body.contains("did not respond within 500ms"),
        "{}",
        r.body
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// Without a Host header (and no authority in the URI) nothing can be routed: 400, even with one
/// app deployed; the request is counted but is not a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_host_is_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = small_runtime();
    rt.deploy(meta("hello", "1.0.0", 1), &compile(&rt, HELLO_V1).await);
    let server = TestServer::start(rt.clone()).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_string(&mut out)).await;
    assert!(
        out.starts_with("HTTP/1.0 400") || out.starts_with("HTTP/1.1 400"),
        "{out}"
    );
    assert!(
        out.ends_with("the request has no Host header; the agent routes requests by host name\n"),
        "{out}"
    );
    let stats = rt.stats();
    assert_eq!((stats.requests, stats.not_found), (1, 0));
    server.stop().await.unwrap();
}
