//! The agent's HTTP front for the apps: each request is routed to an app ([`crate::routes`])
//! and run in a fresh guest instance of that app's active release
//! ([`crate::runtime::invoke::serve`]); connections are accepted, served (HTTP/1.1 and h2) and
//! drained by the shared serve loop ([`crate::serve`]).
//!
//! Invariant kept here: **a swap never fails a request.** A request resolves its app to one
//! `Arc<Deployed>` exactly once, before anything else, and then runs entirely on it;
//! [`crate::runtime::Runtime::deploy`] only changes what later requests resolve to. Errors are
//! reported per request (400 without a host, 404 unknown app, 500 guest trap/timeout, 503 over
//! the concurrency limit, 413 body too large) and never take the listener or other connections
//! down.
//!
//! Each request runs through [`crate::runtime::invoke::serve`]: the app's concurrency gate (503
//! beyond it, no queue), body limit (413), a fresh instance under the release's limits,
//! metrics, and trial counting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use crate::routes::Routes;
use crate::routes::Unrouted;
use crate::runtime::Runtime;
use crate::runtime::invoke::text;
pub use crate::serve::DEFAULT_DRAIN_TIMEOUT;

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish for up to [`DEFAULT_DRAIN_TIMEOUT`] and aborts the rest. Routing by Host only.
pub async fn serve(listener: TcpListener, rt: Arc<Runtime>, shutdown: impl Future<Output = ()>) {
    serve_with_drain(
        listener,
        rt,
        Routes::default(),
        shutdown,
        DEFAULT_DRAIN_TIMEOUT,
    )
    .await
}

/// [`serve`] with a route table.
pub async fn serve_routes(
    listener: TcpListener,
    rt: Arc<Runtime>,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_drain(listener, rt, routes, shutdown, DEFAULT_DRAIN_TIMEOUT).await
}

/// [`serve_routes`] with an explicit drain timeout; connections still open when it expires are
/// aborted.
pub async fn serve_with_drain(
    listener: TcpListener,
    rt: Arc<Runtime>,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let routes = Arc::new(routes);
    let service = move |req| {
        let (rt, routes) = (rt.clone(), routes.clone());
        async move { handle(&rt, &routes, req).await }
    };
    crate::serve::run(listener, service, shutdown, drain).await
}

/// Handles one request end to end; always produces a response.
pub async fn handle(
    rt: &Runtime,
    routes: &Routes,
    req: Request<Incoming>,
) -> Response<HyperOutgoingBody> {
    rt.count_request();
    let deployed = match routes.resolve(&req, rt) {
        Ok(deployed) => deployed,
        Err(unrouted) => {
            let status = match unrouted {
                Unrouted::NoHost => StatusCode::BAD_REQUEST,
                Unrouted::NotFound { .. } => {
                    rt.count_not_found();
                    rt.metrics().record_not_found();
                    StatusCode::NOT_FOUND
                }
            };
            return text(status, format!("{unrouted}\n"));
        }
    };
    crate::runtime::invoke::serve(rt, &deployed, req).await
}

#[cfg(test)]
mod tests;
