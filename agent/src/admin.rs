//! The agent's local admin endpoint (localhost by default; it has no authentication):
//!
//! - `GET /status`: JSON — the node (id, fleet, peers), its trust (the fleet root's version,
//!   epoch, expiry, whether it expired or expires soon, the release threshold) and, per app, the head in force, what
//!   serves and why (committed, on trial, reverted, local override), the trial's counts, the
//!   last failure, the releases kept compiled and the limits in force.
//! - `GET /metrics`: Prometheus text — requests, responses by class, traps, timeouts, overload
//!   and body-limit rejections, latency and instantiation histograms per app and release;
//!   swaps, reverts, local rollbacks and refused releases per app (the runtime's registry);
//!   then the mesh, transport, transfer, head and serving families ([`crate::mesh_metrics`]).
//!   What the node and the supervisor are asked at scrape time (the passive view, what serves
//!   per app) is left out of a scrape when they do not answer within [`SCRAPE_WAIT`]; the rest
//!   is read from atomics and always there.
//! - `POST /apps/{app}/rollback[?to=VERSION]`: a local rollback to a cached release, without
//!   the network (`fleetcast-agent rollback` calls it). JSON answer; 4xx with the reason when
//!   refused.
//!
//! Connections are accepted, served and drained by the shared serve loop ([`crate::serve`]);
//! this module is only the service function.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use fleetcast_net::endpoint::NetCounters;
use fleetcast_protocol::NodeStatus;

use crate::mesh_metrics::{AppServing, MeshMetrics, Scrape};
use crate::runtime::Runtime;
use crate::runtime::metrics::PROMETHEUS_CONTENT_TYPE;
use crate::supervisor::{AppView, SupervisorHandle};

/// What the admin endpoint reads from.
#[derive(Clone)]
pub struct Admin {
    pub supervisor: SupervisorHandle,
    pub runtime: Arc<Runtime>,
    /// The node actor's status requests.
    pub status: mpsc::Sender<oneshot::Sender<NodeStatus>>,
    /// What the node actor counts (heads, chunks served, the node's gauges).
    pub mesh: Arc<MeshMetrics>,
    /// The QUIC endpoint's traffic counters.
    pub net: Arc<NetCounters>,
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub node: String,
    pub fleet: String,
    pub links: u32,
    pub active_view: usize,
    /// The fleet root this agent trusts (version 0: none, `trusted_keys`).
    pub trust: fleetcast_protocol::trust::TrustStatus,
    pub pooling: bool,
    pub instances_in_use: usize,
    pub apps: Vec<AppView>,
}

type Body = Full<Bytes>;

/// How long the admin endpoint lets in-flight requests finish after shutdown.
pub const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a scrape waits for the node actor's and the supervisor's answers before it leaves
/// their values out (well under Prometheus' default scrape timeout of 10 s).
pub const SCRAPE_WAIT: Duration = Duration::from_secs(2);

/// Why the status view could not be built (the admin endpoint answers 503 with the text).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The node actor is gone: the agent is stopping or stopped.
    #[error("the agent is shutting down (the node no longer answers)")]
    NodeStopped,
    /// The supervisor could not answer (its own error, shown as it is).
    #[error(transparent)]
    Supervisor(Box<dyn std::error::Error + Send + Sync>),
}

impl Admin {
    /// Serves `listener` until `shutdown` resolves, then drains for up to
    /// [`ADMIN_DRAIN_TIMEOUT`] (see [`crate::serve::run`]).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let service = move |req| {
            let admin = self.clone();
            async move { admin.handle(req).await }
        };
        crate::serve::run(listener, service, shutdown, ADMIN_DRAIN_TIMEOUT).await
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/status") => match self.status().await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", chain(&e))),
            },
            (&Method::GET, "/metrics") => {
                let mut resp = Response::new(Full::new(Bytes::from(self.metrics().await)));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    http::HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
                );
                resp
            }
            (&Method::POST, p) if p.starts_with("/apps/") && p.ends_with("/rollback") => {
                let app = &p["/apps/".len()..p.len() - "/rollback".len()];
                let to = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("to="))
                    .filter(|v| !v.is_empty())
                    .map(str::to_string);
                match self.supervisor.rollback(app, to).await {
                    Ok(done) => json(StatusCode::OK, &done),
                    Err(reason) => plain(StatusCode::CONFLICT, format!("{reason}\n")),
                }
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "the admin endpoint serves GET /status, GET /metrics and POST /apps/{app}/rollback[?to=VERSION]\n".into(),
            ),
        }
    }

    /// `GET /metrics`: the runtime's families, then the agent's ([`crate::mesh_metrics`]).
    pub async fn metrics(&self) -> String {
        let (node, apps) = tokio::join!(
            tokio::time::timeout(SCRAPE_WAIT, self.node_status()),
            tokio::time::timeout(SCRAPE_WAIT, self.supervisor.status()),
        );
        let passive_peers = answered("the passive view", node).map(|n| n.passive_view);
        let apps = answered("what serves per app", apps)
            .map(|apps| apps.iter().map(AppServing::from).collect());
        let scrape = Scrape {
            mesh: self.mesh.snapshot(),
            net: self.net.snapshot(),
            passive_peers,
            apps,
        };
        let mut out = String::with_capacity(32 * 1024);
        self.runtime
            .metrics()
            .write_prometheus(&mut out)
            .and_then(|()| scrape.write_prometheus(&mut out))
            .expect("formatting into a String does not fail");
        out
    }

    /// The node's status, from the node actor.
    async fn node_status(&self) -> Result<NodeStatus, StatusError> {
        let (tx, rx) = oneshot::channel();
        self.status
            .send(tx)
            .await
            .map_err(|_| StatusError::NodeStopped)?;
        rx.await.map_err(|_| StatusError::NodeStopped)
    }

    /// The status view.
    pub async fn status(&self) -> Result<StatusView, StatusError> {
        let node = self.node_status().await?;
        let apps = self
            .supervisor
            .status()
            .await
            .map_err(|e| StatusError::Supervisor(e.into()))?
            .into_iter()
            .map(|v| {
                let st = node.apps.iter().find(|a| a.app.as_str() == v.app);
                v.with_node(st)
            })
            .collect();
        Ok(StatusView {
            node: node.node.to_string(),
            fleet: node.fleet,
            links: node.links,
            active_view: node.active_view.len(),
            trust: node.trust,
            pooling: self.runtime.is_pooling(),
            instances_in_use: self.runtime.instances_in_use(),
            apps,
        })
    }
}

/// The answer within [`SCRAPE_WAIT`], or `None` after a warning that `what` is left out of
/// this scrape.
fn answered<T, E: std::error::Error>(
    what: &str,
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> Option<T> {
    let e = match r {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => chain(&e),
        Err(_) => format!("no answer within {SCRAPE_WAIT:?}"),
    };
    tracing::warn!("/metrics: {what} left out: {e}");
    None
}

/// `e` and its sources, `: `-separated (what anyhow's `{:#}` shows).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|e| format!("{e}").into_bytes());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
