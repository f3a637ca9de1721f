//! Components built by other toolchains serve unchanged: componentize-py and componentize-js
//! emit 13–18 MB `wasi:http/proxy` components that also import `wasi:cli`, `wasi:filesystem` and
//! (Python) `wasi:sockets`, at WASI versions other than the host's 0.2.12. They go through the
//! real `fleetcast release` path to an in-process agent, which must compile, link and serve them.
//! The guests and how they are built: `tests/guests/py-hello/`, `tests/guests/js-hello/`.

mod common;

use std::time::Instant;

use common::{Fleet, guest, serves};
use fleetcast::http_get;

/// Releases `file` as version 1.0.0 to a one-agent fleet and checks that the agent serves the
/// `x-hello-version` header `expect` and the body `body` after compiling the component exactly
/// once.
async fn release_and_serve(file: &str, expect: &str, body: &str) {
    let size = std::fs::metadata(guest(file)).unwrap().len();
    let fleet = Fleet::start(1, |_| vec![]).await;
    // Compiling a 13–18 MB component takes tens of seconds on a small machine: allow more than
    // the default 60 s for the agent to report the release active.
    let push = fleetcast::commands::publish::PushArgs {
        timeout: 600,
        ..fleet.push_args(1)
    };

    let t = Instant::now();
    let out = fleet.release_with(file, "1.0.0", push).await.unwrap();
    let release = t.elapsed();
    assert_eq!(out.peer, fleetcast_protocol::Outcome::Active, "{out:?}");

    let t = Instant::now();
    let first = serves(fleet.agent(0)).await;
    let first_request = t.elapsed();
    assert_eq!(first, expect);
    let t = Instant::now();
    assert_eq!(serves(fleet.agent(0)).await, expect);
    let second_request = t.elapsed();
    let r = http_get::get(fleet.agent(0).http_addr(), "hello", "/any/path?q=1")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.version_header.as_deref(), r.body.as_str()),
        (200, Some(expect), body)
    );

    let stats = fleet.agent(0).runtime_stats();
    assert_eq!(stats.compiles, 1, "{stats:?}");
    println!(
        "{file}: {size} bytes; release (transfer + compile + activation) {release:.2?}, \
         first request {first_request:.2?}, second request {second_request:.2?}; {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn componentize_py_component_serves() {
    release_and_serve("py-hello.wasm", "py-1.0.0", "hello from python\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn componentize_js_component_serves() {
    release_and_serve("js-hello.wasm", "js-1.0.0", "hello from javascript\n").await;
}
