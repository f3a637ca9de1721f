//! One activation's steps 1–4 (compile, cache, persist, smoke check), as its own task; the
//! supervisor does the swap and what follows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcast_protocol::AppName;
use fleetcast_protocol::node::Activation;
use http_body_util::Empty;
use tokio::sync::Semaphore;

use super::{CancelToken, failpoint, prepare};
use crate::runtime::trial::{TrialConfig, TrialCounters, TrialPolicy};
use crate::runtime::{Deployed, DeployedMeta, Limits, Runtime};
use crate::store::Store;

/// How a pipeline ended.
pub(super) struct Finished {
    pub(super) app: AppName,
    pub(super) seq: u64,
    pub(super) act: Box<Activation>,
    pub(super) started: Instant,
    pub(super) result: Result<Ready, (&'static str, String)>,
}

/// A release through steps 1–4, ready to swap.
pub(super) struct Ready {
    pub(super) deployed: Arc<Deployed>,
    pub(super) trial: TrialPolicy,
    pub(super) counters: Arc<TrialCounters>,
    pub(super) compiled_in: Duration,
    pub(super) persist_in: Duration,
    pub(super) smoke_in: Duration,
}

/// What one pipeline needs; it runs as its own task.
pub(super) struct PipelineCtx {
    pub(super) store: Store,
    pub(super) runtime: Arc<Runtime>,
    pub(super) compile_slots: Arc<Semaphore>,
    pub(super) trial: TrialConfig,
    pub(super) cancel: Arc<CancelToken>,
}

impl PipelineCtx {
    pub(super) async fn run(self, act: Box<Activation>) -> Finished {
        let started = Instant::now();
        let app = act.head.head.app.clone();
        let seq = act.head.head.seq;
        let result = self.steps(&act, started).await;
        Finished {
            app,
            seq,
            act,
            started,
            result,
        }
    }

    async fn steps(
        &self,
        act: &Activation,
        started: Instant,
    ) -> Result<Ready, (&'static str, String)> {
        let cancelled = || ("cancelled", "a newer head arrived".to_string());
        // 1. compile (bounded, cancellable while waiting).
        let permit = tokio::select! {
            p = self.compile_slots.clone().acquire_owned() => p.map_err(|_| ("compile", "shutting down".to_string()))?,
            () = self.cancel.cancelled() => return Err(cancelled()),
        };
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        let (head, content) = (act.head.clone(), act.content.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            let release = &head.head.release;
            let prepared = prepare(&store, &runtime, release, content.as_deref())?;
            // 2. cache the verified source (the artifact went in with the compile).
            if let Some(content) = &content
                && !store.has_blob(&release.digest)?
            {
                store.put_blob(release, content)?;
            }
            failpoint("cache");
            anyhow::Ok(prepared)
        })
        .await
        .map_err(|e| ("compile", format!("the compile task failed: {e}")))?
        .map_err(|e| ("compile", format!("{e:#}")))?;
        drop(permit);
        let compiled_in = started.elapsed();
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        // 3. persist the record and "on trial".
        let persist_started = Instant::now();
        let (store, record) = (self.store.clone(), act.record.clone());
        tokio::task::spawn_blocking(move || store.commit(&record))
            .await
            .map_err(|e| ("persist", format!("the store task failed: {e}")))?
            .map_err(|e| ("persist", format!("{e:#}")))?;
        let persist_in = persist_started.elapsed();
        failpoint("persist");
        // 4. smoke check.
        let release = &act.head.head.release;
        let limits = Limits::resolve(self.runtime.config(), &release.policy);
        let counters = Arc::new(TrialCounters::default());
        let trial = TrialPolicy::resolve(&self.trial, &release.policy);
        let meta = DeployedMeta {
            app: release.app.to_string(),
            version: release.version.to_string(),
            digest: release.digest.to_hex(),
            seq: act.head.head.seq,
        };
        let deployed = self.runtime.deployed(meta, &prepared, limits, None);
        let smoke_started = Instant::now();
        let smoke = Duration::from_millis(self.trial.smoke_timeout_ms);
        let health = release.policy.health_path.as_deref();
        match tokio::time::timeout(smoke, smoke_check(&self.runtime, &deployed, health)).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(("smoke", reason)),
            Err(_) => {
                return Err((
                    "smoke",
                    format!("the smoke check did not finish within {smoke:?}"),
                ));
            }
        }
        let smoke_in = smoke_started.elapsed();
        failpoint("smoke");
        if self.cancel.is_cancelled() {
            return Err(cancelled());
        }
        if !trial.is_none() {
            deployed.trial.store(Some(counters.clone()));
        }
        Ok(Ready {
            deployed,
            trial,
            counters,
            compiled_in,
            persist_in,
            smoke_in,
        })
    }
}

/// Instantiates the release once under its limits and, if it names a health path, sends it one
/// `GET` that must answer 2xx. Nothing is counted in the release's metrics or trial.
pub async fn smoke_check(
    runtime: &Runtime,
    deployed: &Arc<Deployed>,
    health_path: Option<&str>,
) -> Result<(), String> {
    let mut store = runtime.new_store(&deployed.limits);
    let instantiate = deployed.pre().instantiate_async(&mut store);
    match tokio::time::timeout(deployed.limits.timeout(), instantiate).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            let memory = store
                .data()
                .memory_denied()
                .map(|b| {
                    format!(
                        " (it tried to grow its memory to {} MiB, over its limit)",
                        b >> 20
                    )
                })
                .unwrap_or_default();
            return Err(format!("instantiating the component failed{memory}: {e:#}"));
        }
        Err(_) => {
            return Err(format!(
                "instantiating the component did not finish within {:?}",
                deployed.limits.timeout()
            ));
        }
    }
    drop(store);
    // The health request, if the release names a path.
    let Some(path) = health_path else {
        return Ok(());
    };
    let req = http::Request::get(format!("http://{}{path}", deployed.meta.app))
        .header(http::header::HOST, deployed.meta.app.as_str())
        .header(http::header::USER_AGENT, "fleetcast-agent smoke check")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("health path {path:?} is not a valid request target: {e}"))?;
    match crate::runtime::invoke::invoke(runtime, deployed, req).await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!(
            "its health check GET {path} answered {} (a 2xx is required)",
            resp.status()
        )),
        Err(f) => Err(format!("its health check GET {path} failed: {}", f.reason)),
    }
}
