//! The activation pipeline and what each app serves: one actor that owns, per app, the release
//! serving, the one on trial, the last committed one, the last failure, a local override and
//! the releases kept compiled.
//!
//! Pipeline of one activation (the protocol node asks with [`Command::Activate`]):
//!
//! 1. **compile** — on a blocking thread, at most `runtime.compile_concurrency` at once; a
//!    release already compiled by this agent is loaded from its artifact cache instead. A
//!    compile still waiting for its turn is dropped when a newer head arrives
//!    ([`Command::Cancel`]); one already running runs to its end and its result is dropped.
//! 2. **cache** — the verified source and the compiled artifact are stored.
//! 3. **persist** — the signed record (the seq is held from now on, across restarts) and the
//!    release as *on trial*, in one transaction, flushed.
//! 4. **smoke** — one instantiation under the release's limits, and, if the release names a
//!    health path, one synthetic `GET` there that must answer 2xx before the deadline.
//! 5. **swap** — one atomic store into the app's slot. Requests in flight finish on the old
//!    release, whose memory goes when the last of them ends.
//! 6. **trial** — the release serves real traffic; a trap, a timeout or too many 5xx revert to
//!    the last committed release at once, by this agent alone (no network needed).
//! 7. **commit** — once the trial passes it becomes the committed release; compiled artifacts
//!    beyond the newest `runtime.cached_releases` of the app are dropped.
//!
//! **Invariant (crash safety).** What a restart serves is decided by the persisted
//! [`ServingState`] alone: a local override, else the committed release. A release found *on
//! trial* after a crash counts as failed (reason `restart`) and the committed release serves
//! (after a clean stop, or with no committed release to go back to, its trial resumes). A
//! record the state does not account for is a release the agent stopped activating (steps
//! 3–5): failed, `restart`. A crash before step 3 leaves no trace but the cached artifact.
//!
//! Failpoints: with `FLEETCAST_FAILPOINT=<step>` in its environment the agent aborts right
//! after that step (`compile`, `cache`, `persist`, `smoke`, `swap`, `trial`, `commit`), for the
//! crash tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use fleetcast_protocol::node::{Activation, Input};
use fleetcast_protocol::{AppName, AppRecord, Release};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

mod pipeline;
mod restore;
mod view;

pub use self::pipeline::smoke_check;
use self::pipeline::{Finished, PipelineCtx};
pub use self::restore::{Restored, prepare, restore};
use self::restore::{failure, load_cached, meta};
pub use self::view::{ActivationTiming, AppView, CachedView, ReleaseView, RollbackDone, TrialView};

use crate::runtime::trial::{TrialConfig, TrialCounters, TrialPolicy, Verdict};
use crate::runtime::{Deployed, Limits, Runtime};
use crate::store::{ReleaseRef, ServingState, Store};
use fleetcast_net::ConnId;

/// Aborts the process when `FLEETCAST_FAILPOINT` names `step` (crash tests).
pub fn failpoint(step: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("FLEETCAST_FAILPOINT").ok());
    if point.as_deref() == Some(step) {
        eprintln!("fleetcast-agent: failpoint {step:?} reached, aborting");
        std::process::abort();
    }
}

/// Work for the supervisor.
#[derive(Debug)]
pub enum Command {
    /// Run the pipeline for a verified head (from the protocol node).
    Activate(Box<Activation>),
    /// A newer head waits behind the activation of `seq`.
    Cancel { app: AppName, seq: u64 },
    /// An operator's local rollback: serve a cached release of `app` (`to`: a version; default
    /// the newest cached release that is neither serving nor the last one that failed here).
    Rollback {
        app: String,
        to: Option<String>,
        reply: oneshot::Sender<Result<RollbackDone, String>>,
    },
    /// The per-app view for `/status`.
    Status {
        reply: oneshot::Sender<Vec<AppView>>,
    },
}

/// Handle to the supervisor actor. Cheap to clone.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl SupervisorHandle {
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }

    /// A local rollback; `Err` says why it was refused.
    pub async fn rollback(&self, app: &str, to: Option<String>) -> Result<RollbackDone, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Rollback {
            app: app.to_string(),
            to,
            reply,
        });
        rx.await
            .map_err(|_| "the agent is shutting down".to_string())?
    }

    pub async fn status(&self) -> Result<Vec<AppView>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply });
        rx.await.context("the agent is shutting down")
    }
}

/// Per-app state owned by the actor.
#[derive(Default)]
pub(super) struct App {
    state: ServingState,
    record: Option<AppRecord>,
    /// What serves now (also in the runtime's slot).
    serving: Option<Arc<Deployed>>,
    /// The committed release, kept in memory while another one is on trial, so a revert is a
    /// swap.
    fallback: Option<Arc<Deployed>>,
    trial: Option<Trial>,
    activation: Option<Running>,
    last_activation: Option<ActivationTiming>,
}

pub(super) struct Trial {
    seq: u64,
    release: Release,
    counters: Arc<TrialCounters>,
    policy: TrialPolicy,
    started: Instant,
}

pub(super) struct Running {
    seq: u64,
    cancel: Arc<CancelToken>,
}

#[derive(Default)]
pub(super) struct CancelToken {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Settings of the supervisor.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    pub trial: TrialConfig,
}

/// Starts the supervisor for the apps [`restore`] found. Results for the protocol node go to
/// `node`. It stops when `stop` turns true, after the pipelines in progress ended.
pub fn spawn(
    restored: &mut Restored,
    store: Store,
    runtime: Arc<Runtime>,
    cfg: SupervisorConfig,
    node: mpsc::UnboundedSender<Input<ConnId>>,
    stop: watch::Receiver<bool>,
) -> (SupervisorHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let compile_slots = Arc::new(Semaphore::new(runtime.config().compile_concurrency));
    let sup = Supervisor {
        apps: std::mem::take(&mut restored.apps),
        store,
        runtime,
        cfg,
        compile_slots,
        node,
        rx,
        pipelines: JoinSet::new(),
    };
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(sup.run(stop), span));
    (SupervisorHandle { tx }, task)
}

struct Supervisor {
    apps: BTreeMap<String, App>,
    store: Store,
    runtime: Arc<Runtime>,
    cfg: SupervisorConfig,
    compile_slots: Arc<Semaphore>,
    node: mpsc::UnboundedSender<Input<ConnId>>,
    rx: mpsc::UnboundedReceiver<Command>,
    pipelines: JoinSet<Finished>,
}

impl Supervisor {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let events = self.runtime.trial_events().clone();
        loop {
            let deadline = self
                .apps
                .values()
                .filter_map(|a| a.trial.as_ref())
                .filter(|t| !t.policy.window.is_zero())
                .map(|t| t.started + t.policy.window)
                .min()
                .map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = async { let _ = stop.wait_for(|s| *s).await; } => break,
                Some(done) = self.pipelines.join_next(), if !self.pipelines.is_empty() => {
                    match done {
                        Ok(done) => self.finish(done),
                        Err(e) => tracing::error!("an activation pipeline panicked: {e}"),
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                () = events.notified() => self.judge_trials(),
                () = timer => self.judge_trials(),
            }
        }
        // Pipelines hold the store; let them end (compiles cannot be interrupted).
        for app in self.apps.values() {
            if let Some(r) = &app.activation {
                r.cancel.cancel();
            }
        }
        while self.pipelines.join_next().await.is_some() {}
        // A clean stop is not a failure: trials in progress resume after the restart.
        for (name, app) in &mut self.apps {
            if app.trial.is_some() && app.state.trial.is_some() {
                app.state.trial_clean_stop = true;
                if let Err(e) = self.store.put_state(name, &app.state) {
                    tracing::error!(app = %name, "cannot persist the trial at shutdown: {e:#}");
                }
            }
        }
        tracing::debug!("supervisor stopped");
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Activate(act) => self.activate(act),
            Command::Cancel { app, seq } => {
                if let Some(r) = self
                    .apps
                    .get(app.as_str())
                    .and_then(|a| a.activation.as_ref())
                    .filter(|r| r.seq == seq)
                {
                    tracing::info!(%app, seq, "a newer head arrived: cancelling this activation");
                    r.cancel.cancel();
                }
            }
            Command::Rollback { app, to, reply } => {
                let result = self.local_rollback(&app, to).await;
                let _ = reply.send(result);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn activate(&mut self, act: Box<Activation>) {
        let h = &act.head.head;
        let (name, seq) = (h.app.to_string(), h.seq);
        let cancel = Arc::new(CancelToken::default());
        let app = self.apps.entry(name.clone()).or_default();
        if let Some(old) = app.activation.replace(Running {
            seq,
            cancel: cancel.clone(),
        }) {
            // The node sends one activation per app at a time; be safe anyway.
            old.cancel.cancel();
        }
        let ctx = PipelineCtx {
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            compile_slots: self.compile_slots.clone(),
            trial: self.cfg.trial.clone(),
            cancel,
        };
        self.pipelines.spawn(ctx.run(act));
    }

    /// A pipeline ended: swap, or report why not.
    fn finish(&mut self, done: Finished) {
        let Finished {
            app: app_name,
            seq,
            act,
            started,
            result,
        } = done;
        let name = app_name.to_string();
        let release = act.head.head.release.clone();
        let app = self.apps.entry(name.clone()).or_default();
        if app.activation.as_ref().is_some_and(|r| r.seq == seq) {
            app.activation = None;
        }
        let ready = match result {
            Ok(ready) => ready,
            Err((stage, reason)) => {
                let cancelled = stage == "cancelled";
                if !cancelled {
                    self.runtime.metrics().app(&name).record_refused();
                    tracing::warn!(
                        app = %name, seq, version = %release.version, digest = %release.digest.short(),
                        stage, %reason, "release refused; the serving release keeps serving"
                    );
                }
                // The record may already hold its seq: the serving state says why it does not
                // serve.
                if !cancelled {
                    app.state.failure = Some(failure(seq, &release, stage, reason.clone()));
                    if let Err(e) = self.store.put_state(&name, &app.state) {
                        tracing::error!(app = %name, "cannot persist the serving state: {e:#}");
                    }
                }
                let _ = self.node.send(Input::Activated {
                    app: app_name,
                    seq,
                    result: Err(format!("{stage}: {reason}")),
                });
                return;
            }
        };
        // Step 5: swap.
        let swap_started = Instant::now();
        let old = self.runtime.swap_in(ready.deployed.clone());
        let swap_in = swap_started.elapsed();
        failpoint("swap");
        app.last_activation = Some(ActivationTiming {
            compiled_us: ready.compiled_in.as_micros() as u64,
            persist_us: ready.persist_in.as_micros() as u64,
            smoke_us: ready.smoke_in.as_micros() as u64,
            swap_us: swap_in.as_micros() as u64,
            compiled_to_serving_us: (ready.persist_in + ready.smoke_in + swap_in).as_micros()
                as u64,
        });
        self.runtime.metrics().app(&name).record_swap();
        let from = old.as_ref().map(|d| d.meta.version.clone());
        // Keep the committed release at hand while the new one is on trial.
        let committed_digest = app
            .state
            .committed
            .as_ref()
            .map(|c| c.release.digest.to_hex());
        if app.fallback.is_none()
            && let Some(old) = &old
            && Some(&old.meta.digest) == committed_digest.as_ref()
            && old.trial.load().is_none()
        {
            app.fallback = Some(old.clone());
        }
        app.serving = Some(ready.deployed.clone());
        app.record = Some(act.record.clone());
        app.state.trial = Some(ReleaseRef {
            seq,
            release: release.clone(),
        });
        app.state.failure = None;
        app.state.trial_clean_stop = false;
        app.state.local_override = None;
        remember_cached(&mut app.state.cached, &release);
        tracing::info!(
            app = %name, seq, kind = %act.head.head.kind, version = %release.version,
            digest = %release.digest.short(), from = from.as_deref().unwrap_or("nothing"),
            compiled_in = ?ready.compiled_in, smoke_in = ?ready.smoke_in, ?swap_in,
            total = ?started.elapsed(),
            trial = !ready.trial.is_none(), "swapped"
        );
        let _ = self.node.send(Input::Activated {
            app: app_name,
            seq,
            result: Ok(()),
        });
        if ready.trial.is_none() {
            self.commit(&name);
        } else {
            app.trial = Some(Trial {
                seq,
                release,
                counters: ready.counters,
                policy: ready.trial,
                started: Instant::now(),
            });
            // Persist the new cached list and cleared override along with "on trial".
            if let Err(e) = self.store.put_state(&name, &app.state) {
                tracing::error!(app = %name, "cannot persist the serving state: {e:#}");
            }
            failpoint("trial");
        }
    }

    fn judge_trials(&mut self) {
        let names: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.trial.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(t) = self.apps.get(&name).and_then(|a| a.trial.as_ref()) else {
                continue;
            };
            match t.counters.verdict(&t.policy, t.started.elapsed()) {
                Verdict::Continue => {}
                Verdict::Pass => self.commit(&name),
                Verdict::Fail(reason) => self.revert(&name, reason),
            }
        }
    }

    /// Step 7: the release serving becomes the committed one.
    fn commit(&mut self, name: &str) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        let Some(current) = app.state.trial.take() else {
            return;
        };
        let count = app.trial.take().map(|t| t.counters.count());
        app.fallback = None; // the old release's memory goes with its last request
        let committed = current.clone();
        app.state.committed = Some(current);
        // Serving on, without trial counting.
        if let Some(d) = &app.serving {
            d.trial.store(None);
        }
        let dropped = trim_cached(&mut app.state.cached, self.runtime.config().cached_releases);
        if let Err(e) = self.store.put_state(name, &app.state) {
            tracing::error!(app = %name, "cannot persist the commit: {e:#}");
        }
        failpoint("commit");
        let compat = self.runtime.compat_hash();
        for r in dropped {
            let used_elsewhere = self
                .apps
                .values()
                .any(|a| a.state.cached.iter().any(|c| c.digest == r.digest));
            if !used_elsewhere {
                if let Err(e) = self.store.remove_compiled(&r.digest, &compat) {
                    tracing::warn!("cannot drop a cached artifact: {e:#}");
                }
                self.runtime
                    .metrics()
                    .forget_release(name, &r.version.to_string());
            }
        }
        tracing::info!(
            app = %name, seq = committed.seq, version = %committed.release.version,
            digest = %committed.release.digest.short(), trial = ?count, "committed"
        );
    }

    /// The release on trial failed: back to the committed release, by this agent alone.
    fn revert(&mut self, name: &str, reason: String) {
        let Some(app) = self.apps.get_mut(name) else {
            return;
        };
        let Some(t) = app.trial.take() else {
            return;
        };
        app.state.trial = None;
        let back = match app.fallback.take() {
            Some(d) => Some(d),
            None => app.state.committed.as_ref().and_then(|c| {
                match prepare(&self.store, &self.runtime, &c.release, None) {
                    Ok(p) => {
                        let limits = Limits::resolve(self.runtime.config(), &c.release.policy);
                        Some(self.runtime.deployed(meta(name, c), &p, limits, None))
                    }
                    Err(e) => {
                        tracing::error!(app = %name, "cannot load the committed release: {e:#}");
                        None
                    }
                }
            }),
        };
        let to = back.as_ref().map(|d| d.meta.version.clone());
        match &back {
            Some(d) => {
                self.runtime.swap_in(d.clone());
            }
            None => {
                self.runtime.undeploy(name);
            }
        }
        app.serving = back;
        // Not a rollback target any more (a rollback never picks a release that failed here).
        app.state.cached.retain(|r| r.digest != t.release.digest);
        self.runtime.metrics().app(name).record_revert();
        app.state.failure = Some(failure(t.seq, &t.release, "trial", reason.clone()));
        if let Err(e) = self.store.put_state(name, &app.state) {
            tracing::error!(app = %name, "cannot persist the revert: {e:#}");
        }
        tracing::warn!(
            app = %name, seq = t.seq, version = %t.release.version,
            digest = %t.release.digest.short(), to = to.as_deref().unwrap_or("nothing"),
            %reason, "trial failed: reverted"
        );
        if let Ok(app_name) = AppName::new(name) {
            let _ = self.node.send(Input::Reverted {
                app: app_name,
                seq: t.seq,
                reason: format!("trial: {reason}"),
                serving: app.state.committed.as_ref().map(|c| c.release.clone()),
            });
        }
        let used = self
            .apps
            .values()
            .any(|a| a.state.cached.iter().any(|c| c.digest == t.release.digest));
        if !used
            && let Err(e) = self
                .store
                .remove_compiled(&t.release.digest, &self.runtime.compat_hash())
        {
            tracing::warn!("cannot drop the failed release's artifact: {e:#}");
        }
    }

    async fn local_rollback(
        &mut self,
        name: &str,
        to: Option<String>,
    ) -> Result<RollbackDone, String> {
        let started = Instant::now();
        let Some(app) = self.apps.get(name) else {
            let known: Vec<&str> = self.apps.keys().map(String::as_str).collect();
            return Err(format!(
                "no app named {name:?} on this agent (apps: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        };
        let serving_digest = app.serving.as_ref().map(|d| d.meta.digest.clone());
        let list = || {
            app.state
                .cached
                .iter()
                .map(|r| r.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let target = match &to {
            Some(v) => app
                .state
                .cached
                .iter()
                .find(|r| r.version.to_string() == *v)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "version {v} of {name} is not in this agent's cache (cached: {})",
                        list()
                    )
                })?,
            // The newest cached release that is not serving and did not just fail here.
            None => app
                .state
                .cached
                .iter()
                .find(|r| {
                    let d = Some(r.digest.to_hex());
                    d != serving_digest && d != app.state.failure.as_ref().map(|f| f.digest.clone())
                })
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "no cached release of {name} other than the one serving and the one \
                         that failed (cached: {}); name one with --to",
                        list()
                    )
                })?,
        };
        let (store, runtime, rel) = (self.store.clone(), self.runtime.clone(), target.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            runtime.prepare_cached(&rel.digest.0, || {
                load_cached(&store, &runtime, &rel)?.ok_or_else(|| {
                    anyhow!(
                        "release {} of {} is not compiled in this agent's cache; a local \
                         rollback never compiles: publish a rollback with `fleetcast rollback`",
                        rel.version,
                        rel.app
                    )
                })
            })
        })
        .await
        .map_err(|e| format!("loading the release failed: {e}"))?
        .map_err(|e| format!("{e:#}"))?;
        let r = ReleaseRef {
            seq: 0,
            release: target.clone(),
        };
        let limits = Limits::resolve(self.runtime.config(), &target.policy);
        let d = self
            .runtime
            .deployed(meta(name, &r), &prepared, limits, None);
        let old = self.runtime.swap_in(d.clone());
        let serving_after = started.elapsed();
        let app = self.apps.get_mut(name).expect("checked above");
        app.serving = Some(d);
        app.trial = None;
        app.fallback = None;
        app.state.trial = None;
        app.state.local_override = Some(r);
        remember_cached(&mut app.state.cached, &target);
        self.runtime.metrics().app(name).record_local_rollback();
        self.store
            .put_state(name, &app.state)
            .map_err(|e| format!("the rollback serves but could not be persisted: {e:#}"))?;
        let durable_after = started.elapsed();
        let from = old.map(|o| o.meta.version.clone());
        tracing::warn!(
            app = %name, from = from.as_deref().unwrap_or("nothing"), to = %target.version,
            digest = %target.digest.short(), ?serving_after, "local rollback by an operator: override in force until the next head"
        );
        if let Ok(app_name) = AppName::new(name) {
            let _ = self.node.send(Input::LocalOverride {
                app: app_name,
                release: Some(target.clone()),
            });
        }
        Ok(RollbackDone {
            app: name.to_string(),
            from,
            to: target.version.to_string(),
            digest: target.digest.to_hex(),
            serving_after_us: serving_after.as_micros() as u64,
            durable_after_us: durable_after.as_micros() as u64,
        })
    }

    fn status(&self) -> Vec<AppView> {
        let compat = self.runtime.compat_hash();
        self.apps
            .iter()
            .map(|(name, a)| {
                let view = |r: &ReleaseRef| ReleaseView {
                    version: r.release.version.to_string(),
                    digest: r.release.digest.to_hex(),
                    seq: r.seq,
                };
                let serving = a.serving.as_ref().map(|d| ReleaseView {
                    version: d.meta.version.clone(),
                    digest: d.meta.digest.clone(),
                    seq: d.meta.seq,
                });
                let trial = a.trial.as_ref().map(|t| TrialView {
                    version: t.release.version.to_string(),
                    seq: t.seq,
                    elapsed_ms: t.started.elapsed().as_millis() as u64,
                    window_ms: t.policy.window.as_millis() as u64,
                    window_requests: t.policy.requests,
                    count: t.counters.count(),
                });
                let head = a.record.as_ref().map(|r| &r.head.head);
                let seq = head.map(|h| h.seq).unwrap_or_default();
                let state = if a.state.local_override.is_some() {
                    "local-override"
                } else if a.trial.is_some() {
                    "trial"
                } else if a.state.failure.as_ref().is_some_and(|f| f.seq == seq) {
                    "reverted"
                } else if a.activation.is_some() {
                    "activating"
                } else if a.serving.is_some() {
                    "committed"
                } else {
                    "none"
                };
                AppView {
                    app: name.clone(),
                    seq,
                    head_version: head.map(|h| h.release.version.to_string()),
                    state,
                    serving,
                    committed: a.state.committed.as_ref().map(view),
                    trial,
                    activating: a.activation.as_ref().map(|r| r.seq),
                    local_override: a.state.local_override.as_ref().map(view),
                    last_failure: a.state.failure.clone(),
                    cached: a
                        .state
                        .cached
                        .iter()
                        .map(|r| CachedView {
                            version: r.version.to_string(),
                            digest: r.digest.to_hex(),
                            compiled: self.store.has_compiled(&r.digest, &compat).unwrap_or(false),
                        })
                        .collect(),
                    limits: a.serving.as_ref().map(|d| d.limits),
                    last_activation: a.last_activation,
                }
            })
            .collect()
    }
}

/// Puts `release` first in the cached list (once).
fn remember_cached(cached: &mut Vec<Release>, release: &Release) {
    cached.retain(|r| r.digest != release.digest);
    cached.insert(0, release.clone());
}

/// Keeps the newest `k` cached releases; returns the ones dropped.
fn trim_cached(cached: &mut Vec<Release>, k: usize) -> Vec<Release> {
    if cached.len() > k {
        cached.split_off(k.max(1))
    } else {
        Vec::new()
    }
}
