//! Running one request on one deployed release, the way `wasmtime serve` does: a fresh store
//! under the release's limits, instantiation from the `ProxyPre`, the guest in its own task
//! (it may keep streaming the body after the response head), and a wait for the response
//! head until the release's deadline.
//!
//! Admission is never a queue: a request that finds its app at `max_concurrent`, or every
//! instance slot of the agent taken, gets a 503 at once. A body over the limit gets a 413,
//! before any instance exists when the length is declared.
//!
//! Used by the HTTP front ([`serve`], which also counts metrics and trial outcomes) and by the
//! smoke check before a swap ([`invoke`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use tokio::sync::oneshot;

use crate::runtime::metrics::Served;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::trial::RequestOutcome;
use super::{Deployed, Runtime};

/// Why a request got no response from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The app's concurrency limit or the agent's instance slots: 503.
    Overloaded,
    /// The request body is over the limit: 413.
    TooLarge,
    /// The guest trapped (including running out of fuel or memory): 500.
    Trap,
    /// No response head within the deadline: 500.
    Timeout,
    /// The guest returned an error or no response: 500.
    Internal,
}

/// A request the guest did not answer, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub reason: String,
}

impl Failure {
    fn new(kind: FailureKind, reason: String) -> Self {
        Failure { kind, reason }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            FailureKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Runs `req` on `deployed` and returns the guest's response head (its body may still be
/// streaming), or why there is none. Counts nothing.
pub async fn invoke<B>(
    rt: &Runtime,
    deployed: &Arc<Deployed>,
    req: Request<B>,
) -> Result<Response<HyperOutgoingBody>, Failure>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = deployed.limits;
    let max_body = limits.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Err(Failure::new(
            FailureKind::TooLarge,
            format!("the request body is over this app's limit of {max_body} bytes"),
        ));
    }
    let Ok(app_permit) = deployed.concurrency.clone().try_acquire_owned() else {
        return Err(Failure::new(
            FailureKind::Overloaded,
            format!(
                "the app is at its limit of {} concurrent requests; retry later",
                limits.max_concurrent
            ),
        ));
    };
    let Some(instance_permit) = rt.try_acquire_instance() else {
        return Err(Failure::new(
            FailureKind::Overloaded,
            format!(
                "all {} instance slots of this agent are busy; retry later",
                rt.config().max_instances
            ),
        ));
    };
    let timeout = limits.timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut store = rt.new_store(&limits);
    let (tx, rx) = oneshot::channel();
    let req = req.map(move |body| {
        Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX)).map_err(move |e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ErrorCode::HttpRequestBodySize(Some(max_body))
            } else {
                ErrorCode::HttpProtocolError
            }
        })
    });
    let (req, out) = {
        let mut http = store.data_mut().http();
        let req = http.new_incoming_request(Scheme::Http, req).map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                format!("could not pass the request to the guest: {e:#}"),
            )
        })?;
        let out = http.new_response_outparam(tx).map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                format!("could not create the response slot: {e:#}"),
            )
        })?;
        (req, out)
    };
    let pre = deployed.pre().clone();
    let metrics = deployed.metrics.clone();
    let task = tokio::spawn(async move {
        // Both slots are held as long as the store lives.
        let _permits = (app_permit, instance_permit);
        let started = Instant::now();
        let proxy = pre.instantiate_async(&mut store).await;
        metrics.record_instantiate(started.elapsed());
        let result = match proxy {
            Ok(proxy) => {
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            }
            Err(e) => Err(e),
        };
        (result, store.data().memory_denied())
    });
    let memory_note = |denied: Option<usize>| match denied {
        Some(bytes) => format!(
            " after it tried to grow its memory to {} MiB, over its limit of {} MiB",
            bytes >> 20,
            limits.max_memory_bytes >> 20
        ),
        None => String::new(),
    };
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(resp))) => {
            // The guest may still be streaming the body; report a late failure.
            let meta = deployed.meta.clone();
            tokio::spawn(async move {
                if let Ok((Err(e), _)) = task.await {
                    tracing::warn!(
                        app = %meta.app, version = %meta.version,
                        "guest failed after sending the response head: {e:#}"
                    );
                }
            });
            Ok(resp)
        }
        Ok(Ok(Err(code))) => Err(Failure::new(
            FailureKind::Internal,
            format!("the guest responded with error {code:?}"),
        )),
        // The outparam was dropped unset: the guest task is over, ask it why.
        Ok(Err(_)) => Err(match task.await {
            Ok((Ok(()), _)) => Failure::new(
                FailureKind::Internal,
                "the guest returned without setting a response".to_string(),
            ),
            Ok((Err(e), _)) if is_interrupt(&e) => Failure::new(
                FailureKind::Timeout,
                format!("the guest did not respond within {timeout:?} (interrupted while running)"),
            ),
            Ok((Err(e), denied)) => Failure::new(
                FailureKind::Trap,
                format!("the guest trapped{}: {e:#}", memory_note(denied)),
            ),
            Err(e) => Failure::new(FailureKind::Internal, format!("the guest task failed: {e}")),
        }),
        Err(_) => {
            task.abort();
            Err(Failure::new(
                FailureKind::Timeout,
                format!("the guest did not respond within {timeout:?}"),
            ))
        }
    }
}

/// Runs `req` on `deployed` ([`invoke`]) and always produces a response: the guest's, or a
/// plain-text error naming app, version and reason. Counts the release's metrics and, while it
/// is on trial, the trial's outcome.
pub async fn serve<B>(
    rt: &Runtime,
    deployed: &Arc<Deployed>,
    req: Request<B>,
) -> Response<HyperOutgoingBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let result = invoke(rt, deployed, req).await;
    let metrics = &deployed.metrics;
    // Load shedding and oversized bodies say nothing about the release's health.
    let mut judged = true;
    let (resp, outcome) = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (resp, RequestOutcome::Status(status))
        }
        Err(failure) => {
            let meta = &deployed.meta;
            let outcome = match failure.kind {
                FailureKind::Overloaded => {
                    metrics.record_overloaded();
                    judged = false;
                    None
                }
                FailureKind::TooLarge => {
                    metrics.record_too_large();
                    judged = false;
                    None
                }
                FailureKind::Trap => {
                    metrics.record_trap();
                    Some(RequestOutcome::Trap(failure.reason.clone()))
                }
                FailureKind::Timeout => {
                    metrics.record_timeout();
                    Some(RequestOutcome::Timeout(failure.reason.clone()))
                }
                FailureKind::Internal => None,
            };
            if failure.kind != FailureKind::Overloaded && failure.kind != FailureKind::TooLarge {
                tracing::error!(
                    app = %meta.app, version = %meta.version, seq = meta.seq,
                    reason = %failure.reason, "request failed"
                );
            }
            let status = failure.status();
            let resp = text(
                status,
                format!(
                    "app {:?} version {} failed to handle the request: {}\n",
                    meta.app, meta.version, failure.reason
                ),
            );
            (
                resp,
                outcome.unwrap_or(RequestOutcome::Status(status.as_u16())),
            )
        }
    };
    let status = resp.status().as_u16();
    let latency = started.elapsed();
    metrics.record_response(status, latency);
    if judged {
        let served = match &outcome {
            RequestOutcome::Trap(_) => Served::Trap,
            RequestOutcome::Timeout(_) => Served::Timeout,
            _ => Served::Status(status),
        };
        metrics.record_served(served, latency);
    }
    if status >= 500 {
        rt.count_error();
    }
    if judged && let Some(trial) = deployed.trial.load().as_ref() {
        trial.record(&outcome);
        rt.trial_events().notify_one();
    }
    resp
}

fn is_interrupt(e: &wasmtime::Error) -> bool {
    matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(body))
        .map_err(Into::into)
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
