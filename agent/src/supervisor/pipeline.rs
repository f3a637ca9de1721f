//! The IO of one activation's steps that run off the actor (1–2: compile or load, cache; 4:
//! the smoke check), where compiled releases come from (the compile cache, the agent's
//! artifact cache, else a compile), and the one place a release becomes a [`Deployed`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetcast_protocol::Release;
use fleetcast_protocol::node::Activation;
use http_body_util::Empty;
use tokio::sync::{Notify, Semaphore};

use crate::runtime::CompileError;
use crate::runtime::trial::TrialCounters;
use crate::runtime::{Deployed, DeployedMeta, Limits, Prepared, Runtime};
use crate::store::{ReleaseRef, Store, StoreError};
use crate::supervisor::lifecycle::StepOutcome;
use crate::supervisor::types::Failpoint;

/// Why a release could not be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// `release` (brought by the head of `seq`, 0 for a local override) as a deployable version
/// under its own limits, its requests counted in `counting` while on trial. Not in any slot.
pub fn deployed(
    runtime: &Runtime,
    release: &ReleaseRef,
    prepared: &Prepared,
    counting: Option<Arc<TrialCounters>>,
) -> Arc<Deployed> {
    let r = &release.release;
    let meta = DeployedMeta {
        app: r.app.to_string(),
        version: r.version.to_string(),
        digest: r.digest.to_hex(),
        seq: release.seq,
    };
    let limits = Limits::resolve(runtime.config(), &r.policy);
    runtime.deployed(meta, prepared, limits, counting)
}

/// Lets a compile that waits for its slot be dropped.
#[derive(Default)]
pub struct CancelToken {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.cancelled.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// What steps 1–2 need; they run as their own task.
pub struct CompileCtx {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub slots: Arc<Semaphore>,
    pub cancel: Arc<CancelToken>,
}

/// Steps 1–2 ended.
pub struct Compiled {
    /// Its content dropped.
    pub act: Box<Activation>,
    pub started: Instant,
    pub result: Result<Prepared, StepOutcome>,
}

impl CompileCtx {
    /// Compile (bounded, cancellable while it waits for a slot) or load, and cache.
    pub async fn run(self, mut act: Box<Activation>) -> Compiled {
        let started = Instant::now();
        let content = act.content.take();
        let result = self.steps(&act, content).await;
        Compiled {
            act,
            started,
            result,
        }
    }

    async fn steps(
        &self,
        act: &Activation,
        content: Option<Vec<u8>>,
    ) -> Result<Prepared, StepOutcome> {
        let _permit = tokio::select! {
            p = self.slots.clone().acquire_owned() => {
                p.map_err(|_| StepOutcome::Failed("shutting down".to_string()))?
            }
            () = self.cancel.cancelled() => return Err(StepOutcome::Cancelled),
        };
        let (store, runtime, release) = (
            self.store.clone(),
            self.runtime.clone(),
            act.head.head.release.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let prepared = prepare(&store, &runtime, &release, content.as_deref())?;
            // 2. cache the verified source (the artifact went in with the compile).
            if let Some(content) = &content
                && !store.has_blob(&release.digest)?
            {
                store.put_blob(&release, content)?;
            }
            Failpoint::Cache.hit();
            Ok::<_, PrepareError>(prepared)
        })
        .await
        .map_err(|e| StepOutcome::Failed(format!("the compile task failed: {e}")))?
        .map_err(|e| StepOutcome::Failed(e.to_string()))
    }
}

/// A prefetch: compile (or load) `release` and store its source and its artifact, touching
/// no slot, record or serving state. Stopped if `cancel` fires before the compile starts;
/// once it runs it runs to its end. On the blocking pool, so requests are never held up.
pub async fn prefetch(
    store: Store,
    runtime: Arc<Runtime>,
    release: Release,
    content: Option<Vec<u8>>,
    cancel: Arc<CancelToken>,
) -> StepOutcome {
    let task = tokio::task::spawn_blocking(move || {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        let prepared = prepare(&store, &runtime, &release, content.as_deref())?;
        // From the shared compile cache the artifact may not be in this agent's own store
        // yet: a later activation loads it from there.
        let compat = runtime.compat_hash();
        if !store.has_compiled(&release.digest, &compat)? {
            store.put_compiled(&release.digest, &compat, &prepared.artifact)?;
        }
        if let Some(content) = &content
            && !store.has_blob(&release.digest)?
        {
            store.put_blob(&release, content)?;
        }
        store.flush()?;
        Ok::<_, PrepareError>(true)
    });
    match task.await {
        Ok(Ok(true)) => StepOutcome::Done,
        Ok(Ok(false)) => StepOutcome::Cancelled,
        Ok(Err(e)) => StepOutcome::Failed(e.to_string()),
        Err(e) => StepOutcome::Failed(format!("the prefetch task failed: {e}")),
    }
}

/// Step 4: the smoke check of `deployed` within `deadline` (instantiation and, if the release
/// names one, its health path).
pub async fn smoke(
    runtime: Arc<Runtime>,
    deployed: Arc<Deployed>,
    health_path: Option<String>,
    deadline: Duration,
) -> StepOutcome {
    let check = smoke_check(&runtime, &deployed, health_path.as_deref());
    match tokio::time::timeout(deadline, check).await {
        Ok(Ok(())) => {
            Failpoint::Smoke.hit();
            StepOutcome::Done
        }
        Ok(Err(reason)) => StepOutcome::Failed(reason),
        Err(_) => StepOutcome::Failed(format!(
            "the smoke check did not finish within {deadline:?}"
        )),
    }
}

/// Instantiates the release once under its limits and, if it names a health path, sends it one
/// `GET` that must answer 2xx. Nothing is counted in the release's metrics or trial. `Err`
/// says why it failed, for the operator.
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

/// The compiled release: from the process's shared compile cache when the runtime has one
/// (keyed by the signed release's digest; whatever is built below is built from content
/// verified against it), else from the agent's own artifact cache, else compiled from `content`
/// (just fetched and verified) or from the verified stored blob. Blocking.
pub fn prepare(
    store: &Store,
    runtime: &Runtime,
    release: &Release,
    content: Option<&[u8]>,
) -> Result<Prepared, PrepareError> {
    runtime.prepare_cached(&release.digest.0, || {
        let compat = runtime.compat_hash();
        if let Some(p) = load_cached(store, runtime, release)? {
            return Ok(p);
        }
        let stored;
        let bytes = match content {
            Some(c) => c,
            None => {
                stored = store.read_blob(release)?;
                &stored
            }
        };
        let prepared = runtime.compile(bytes)?;
        Failpoint::Compile.hit();
        store.put_compiled(&release.digest, &compat, &prepared.artifact)?;
        Ok(prepared)
    })
}

/// The release from the agent's own artifact cache, without compiling; `None` if absent.
/// Blocking.
pub fn load_cached(
    store: &Store,
    runtime: &Runtime,
    release: &Release,
) -> Result<Option<Prepared>, StoreError> {
    let compat = runtime.compat_hash();
    let Some(artifact) = store.get_compiled(&release.digest, &compat)? else {
        return Ok(None);
    };
    // SAFETY: the artifact was produced by this agent's own engine (same compatibility hash),
    // stored in its private data directory, and its checksum was verified on read. Compiled
    // code from the network is never loaded: peers only ever send source bytes.
    match unsafe { runtime.load(&artifact) } {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            tracing::warn!(digest = %release.digest.short(), "cached artifact unusable, recompiling: {e}");
            Ok(None)
        }
    }
}
