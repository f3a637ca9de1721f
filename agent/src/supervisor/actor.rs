//! The supervisor's actor: it owns the [`Lifecycle`] and only shuttles. Commands, pipeline
//! results, trial events and the trial timer become lifecycle inputs; the [`Effect`]s that come
//! back become store writes, slot swaps, tasks, metrics and inputs for the node, carried out in
//! order. The failpoints of the crash tests sit right after the IO they name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcast_protocol::node::{Activation, Input};
use fleetcast_protocol::{AppName, Release};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::runtime::trial::TrialCounters;
use crate::runtime::{Deployed, Prepared, Runtime};
use crate::store::{ReleaseRef, Store, StoreError};
use crate::supervisor::api::{Command, SupervisorConfig};
use crate::supervisor::error::RollbackError;
use crate::supervisor::lifecycle::{Counter, Effect, Lifecycle, StepOutcome, SwapTo, Write};
use crate::supervisor::pipeline::{
    self as pipe, CancelToken, CompileCtx, Compiled, PrepareError, deployed, load_cached, prepare,
    smoke,
};
use crate::supervisor::types::{Failpoint, NodeInput, Now};
use crate::supervisor::view::{self, ActivationTiming, AppView, RollbackDone};

/// The IO half of the supervisor: the store, the runtime and, per app, what its slot holds.
pub struct Shell {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub slots: BTreeMap<AppName, Slots>,
}

/// One app's deployed releases.
#[derive(Default)]
pub struct Slots {
    /// What serves (also in the runtime's slot).
    pub serving: Option<Arc<Deployed>>,
    /// The committed release, kept while another one is on trial.
    pub fallback: Option<Arc<Deployed>>,
    /// What a local rollback loaded, until its swap.
    pub rolled_back: Option<Arc<Deployed>>,
    /// Step timings of the last activation that reached the swap.
    pub last_activation: Option<ActivationTiming>,
    /// When `serving` went into the slot (unix ms).
    pub since_ms: u64,
}

impl Shell {
    pub fn new(store: Store, runtime: Arc<Runtime>) -> Self {
        Shell {
            store,
            runtime,
            slots: BTreeMap::new(),
        }
    }

    fn slot(&mut self, app: &AppName) -> &mut Slots {
        self.slots.entry(app.clone()).or_default()
    }

    /// `release` from the cache (compiling from the stored source if its artifact is gone).
    pub fn load(
        &self,
        release: &ReleaseRef,
        counting: Option<Arc<TrialCounters>>,
    ) -> Result<Arc<Deployed>, PrepareError> {
        let p = prepare(&self.store, &self.runtime, &release.release, None)?;
        Ok(deployed(&self.runtime, release, &p, counting))
    }

    /// Puts `d` in its slot; returns what it replaced.
    pub fn swap_in(&mut self, app: &AppName, d: Arc<Deployed>) -> Option<Arc<Deployed>> {
        let old = self.runtime.swap_in(d.clone());
        let slot = self.slot(app);
        slot.serving = Some(d);
        slot.since_ms = crate::supervisor::types::unix_ms();
        old
    }
}

/// An activation between its compile and its swap.
struct Pending {
    act: Box<Activation>,
    prepared: Prepared,
    deployed: Option<Arc<Deployed>>,
    started: Instant,
    compiled_in: Duration,
    persist_in: Duration,
    smoke_started: Instant,
    smoke_in: Duration,
}

/// A task that ran off the actor.
enum Done {
    Compiled(Compiled),
    Smoked {
        app: AppName,
        seq: u64,
        outcome: StepOutcome,
    },
    Prefetched {
        release: Release,
        seq: u64,
        outcome: StepOutcome,
    },
}

/// What carrying out one effect produced, for a caller that waits on it.
enum Applied {
    Nothing,
    Swapped(Option<Arc<Deployed>>),
    PersistFailed(StoreError),
}

pub struct Actor {
    pub lc: Lifecycle,
    pub io: Shell,
    pub cfg: SupervisorConfig,
    pub node: mpsc::UnboundedSender<NodeInput>,
    pub rx: mpsc::UnboundedReceiver<Command>,
    compile_slots: Arc<Semaphore>,
    cancels: BTreeMap<AppName, (u64, Arc<CancelToken>)>,
    /// The prefetch running (one at a time): its app, seq and cancel token.
    prefetch_cancel: Option<(AppName, u64, Arc<CancelToken>)>,
    pending: BTreeMap<(AppName, u64), Pending>,
    tasks: JoinSet<Done>,
}

impl Actor {
    pub fn new(
        lc: Lifecycle,
        io: Shell,
        cfg: SupervisorConfig,
        node: mpsc::UnboundedSender<NodeInput>,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Actor {
            compile_slots: Arc::new(Semaphore::new(cfg.compile_concurrency)),
            lc,
            io,
            cfg,
            node,
            rx,
            cancels: BTreeMap::new(),
            prefetch_cancel: None,
            pending: BTreeMap::new(),
            tasks: JoinSet::new(),
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let events = self.io.runtime.trial_events().clone();
        loop {
            let deadline = self.lc.poll_timeout().map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = async { let _ = stop.wait_for(|s| *s).await; } => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(Done::Compiled(c)) => self.compiled(c),
                    Ok(Done::Smoked { app, seq, outcome }) => self.smoked(app, seq, outcome),
                    Ok(Done::Prefetched { release, seq, outcome }) => {
                        self.prefetch_cancel = None;
                        let fx = self.lc.prefetched(&release.app, seq, &release, outcome);
                        self.apply(fx);
                    }
                    Err(e) => tracing::error!("an activation pipeline panicked: {e}"),
                },
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                () = events.notified() => self.judge(),
                () = timer => self.judge(),
            }
            // An activation that ended may let a prefetch start.
            let fx = self.lc.start_prefetch();
            self.apply(fx);
        }
        // Tasks hold the store; let them end (compiles cannot be interrupted), drop their
        // results, then persist what a clean stop means for the trials in progress.
        let (cancels, writes): (Vec<_>, Vec<_>) = self
            .lc
            .clean_stop()
            .into_iter()
            .partition(|e| matches!(e, Effect::CancelCompile { .. }));
        self.apply(cancels);
        while self.tasks.join_next().await.is_some() {}
        self.apply(writes);
        tracing::debug!("supervisor stopped");
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Activate(act) => {
                let fx = self.lc.activate(act);
                self.apply(fx);
            }
            Command::Prefetch(p) => {
                let fx = self.lc.prefetch(p);
                self.apply(fx);
            }
            Command::Cancel { app, seq } => {
                let fx = self.lc.cancel(&app, seq);
                self.apply(fx);
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

    fn judge(&mut self) {
        let fx = self.lc.judge_trials(Now::read());
        self.apply(fx);
    }

    fn compiled(&mut self, c: Compiled) {
        let now = Now::read();
        let (app, seq) = (c.act.head.head.app.clone(), c.act.head.head.seq);
        if self.cancels.get(&app).is_some_and(|(s, _)| *s == seq) {
            self.cancels.remove(&app);
        }
        let fx = match c.result {
            Err(outcome) => self.lc.compiled(now, &c.act, outcome),
            Ok(prepared) => {
                let p = Pending {
                    act: c.act,
                    prepared,
                    deployed: None,
                    started: c.started,
                    compiled_in: c.started.elapsed(),
                    persist_in: Duration::ZERO,
                    smoke_started: c.started,
                    smoke_in: Duration::ZERO,
                };
                let key = (app, seq);
                self.pending.insert(key.clone(), p);
                self.lc
                    .compiled(now, &self.pending[&key].act, StepOutcome::Done)
            }
        };
        self.apply(fx);
    }

    fn smoked(&mut self, app: AppName, seq: u64, outcome: StepOutcome) {
        let Some(p) = self.pending.get_mut(&(app, seq)) else {
            return;
        };
        p.smoke_in = p.smoke_started.elapsed();
        let fx = self.lc.smoked(Now::read(), &p.act, outcome);
        self.apply(fx);
    }

    fn apply(&mut self, fx: Vec<Effect>) {
        for e in fx {
            self.apply_one(e);
        }
    }

    fn apply_one(&mut self, e: Effect) -> Applied {
        match e {
            Effect::StartCompile(act) => {
                let h = &act.head.head;
                let cancel = Arc::new(CancelToken::default());
                self.cancels.insert(h.app.clone(), (h.seq, cancel.clone()));
                let ctx = CompileCtx {
                    store: self.io.store.clone(),
                    runtime: self.io.runtime.clone(),
                    slots: self.compile_slots.clone(),
                    cancel,
                };
                self.tasks
                    .spawn(async move { Done::Compiled(ctx.run(act).await) });
            }
            Effect::CancelCompile { app, seq } => {
                if let Some((_, token)) = self.cancels.get(&app).filter(|(s, _)| *s == seq) {
                    token.cancel();
                }
            }
            Effect::PersistRecord { record, state } => {
                let key = (record.head.head.app.clone(), record.head.head.seq);
                let started = Instant::now();
                let result = off_the_reactor(|| self.io.store.commit(&record, &state));
                if result.is_ok() {
                    Failpoint::Persist.hit();
                }
                let Some(p) = self.pending.get_mut(&key) else {
                    tracing::error!(app = %key.0, seq = key.1, "persisted an activation not in progress");
                    return Applied::Nothing;
                };
                p.persist_in = started.elapsed();
                let fx = self
                    .lc
                    .persisted(Now::read(), &p.act, result.map_err(|e| e.to_string()));
                self.apply(fx);
            }
            Effect::StartSmoke { app, seq } => {
                let Some(p) = self.pending.get_mut(&(app.clone(), seq)) else {
                    tracing::error!(%app, seq, "smoke check of an activation not in progress");
                    return Applied::Nothing;
                };
                let release = ReleaseRef {
                    seq,
                    release: p.act.head.head.release.clone(),
                };
                let d = deployed(&self.io.runtime, &release, &p.prepared, None);
                p.deployed = Some(d.clone());
                p.smoke_started = Instant::now();
                let runtime = self.io.runtime.clone();
                let health = release.release.policy.health_path.clone();
                let deadline = Duration::from_millis(self.cfg.trial.smoke_timeout_ms);
                self.tasks.spawn(async move {
                    let outcome = smoke(runtime, d, health, deadline).await;
                    Done::Smoked { app, seq, outcome }
                });
            }
            Effect::Swap { app, to, keep_old } => return self.swap(app, to, keep_old),
            Effect::Undeploy { app } => {
                self.io.runtime.undeploy(app.as_str());
                self.io.slot(&app).serving = None;
            }
            Effect::EndTrial { app } => {
                if let Some(d) = &self.io.slot(&app).serving {
                    d.trial.store(None);
                }
            }
            Effect::DropFallback { app } => self.io.slot(&app).fallback = None,
            Effect::PersistState { app, state, write } => {
                let result = off_the_reactor(|| self.io.store.put_state(&app, &state));
                if let Err(e) = &result {
                    tracing::error!(%app, "cannot persist {}: {e}", what(write));
                }
                match write {
                    Write::Trial => Failpoint::Trial.hit(),
                    Write::Commit => Failpoint::Commit.hit(),
                    _ => {}
                }
                if let Err(e) = result {
                    return Applied::PersistFailed(e);
                }
            }
            Effect::DropArtifact { digest } => {
                let compat = self.io.runtime.compat_hash();
                if let Err(e) = self.io.store.remove_compiled(&digest, &compat) {
                    tracing::warn!("cannot drop a cached artifact: {e}");
                }
            }
            Effect::ForgetMetrics { app, release } => {
                self.io
                    .runtime
                    .metrics()
                    .forget_release(app.as_str(), &release.version.to_string());
            }
            Effect::Count { app, counter } => {
                let m = self.io.runtime.metrics().app(app.as_str());
                match counter {
                    Counter::Refused => m.record_refused(),
                    Counter::Swap => m.record_swap(),
                    Counter::Revert => m.record_revert(),
                    Counter::LocalRollback => m.record_local_rollback(),
                }
            }
            Effect::StartPrefetch(p) => {
                let h = &p.head.head;
                let (release, seq) = (h.release.clone(), h.seq);
                let cancel = Arc::new(CancelToken::default());
                self.prefetch_cancel = Some((release.app.clone(), seq, cancel.clone()));
                let (store, runtime) = (self.io.store.clone(), self.io.runtime.clone());
                let content = p.content;
                self.tasks.spawn(async move {
                    let outcome =
                        pipe::prefetch(store, runtime, release.clone(), content, cancel).await;
                    Done::Prefetched {
                        release,
                        seq,
                        outcome,
                    }
                });
            }
            Effect::CancelPrefetch { app, seq } => {
                if let Some((_, _, token)) = self
                    .prefetch_cancel
                    .as_ref()
                    .filter(|(a, s, _)| *a == app && *s == seq)
                {
                    token.cancel();
                }
            }
            Effect::PersistSame { act, state } => {
                let result = off_the_reactor(|| self.io.store.commit(&act.record, &state));
                if result.is_ok() {
                    Failpoint::Persist.hit();
                }
                let fx =
                    self.lc
                        .recorded(Now::read(), &act, *state, result.map_err(|e| e.to_string()));
                self.apply(fx);
            }
            Effect::Notify(input) => {
                if let Input::Activated { app, seq, .. } = &input {
                    // The activation is over, whichever way.
                    self.pending.remove(&(app.clone(), *seq));
                }
                let _ = self.node.send(input);
            }
        }
        Applied::Nothing
    }

    fn swap(&mut self, app: AppName, to: SwapTo, keep_old: bool) -> Applied {
        let d = match to {
            SwapTo::Activated { seq, counting } => {
                return self.swap_activated(app, seq, counting, keep_old);
            }
            SwapTo::Fallback => self.io.slot(&app).fallback.take(),
            SwapTo::RolledBack(_) => self.io.slot(&app).rolled_back.take(),
            SwapTo::Committed(r) => match self.io.load(&r, None) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(%app, "cannot load the committed release: {e}");
                    None
                }
            },
            SwapTo::Restored { release, counting } => match self.io.load(&release, counting) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(%app, seq = release.seq, "cannot serve the cached release: {e}");
                    None
                }
            },
        };
        match d {
            Some(d) => {
                let old = self.io.swap_in(&app, d);
                if keep_old {
                    self.io.slot(&app).fallback = old.clone();
                }
                Applied::Swapped(old)
            }
            None => {
                self.io.runtime.undeploy(app.as_str());
                self.io.slot(&app).serving = None;
                self.lc.serving_lost(&app);
                Applied::Swapped(None)
            }
        }
    }

    /// Step 5 of an activation.
    fn swap_activated(
        &mut self,
        app: AppName,
        seq: u64,
        counting: Option<Arc<TrialCounters>>,
        keep_old: bool,
    ) -> Applied {
        let Some(p) = self.pending.remove(&(app.clone(), seq)) else {
            tracing::error!(%app, seq, "swap of an activation not in progress");
            return Applied::Nothing;
        };
        let Some(d) = p.deployed else {
            tracing::error!(%app, seq, "swap of an activation not smoke-checked");
            return Applied::Nothing;
        };
        let on_trial = counting.is_some();
        if let Some(c) = counting {
            d.trial.store(Some(c));
        }
        let swap_started = Instant::now();
        let old = self.io.swap_in(&app, d);
        let swap_in = swap_started.elapsed();
        Failpoint::Swap.hit();
        let slot = self.io.slot(&app);
        slot.last_activation = Some(ActivationTiming {
            compiled_us: p.compiled_in.as_micros() as u64,
            persist_us: p.persist_in.as_micros() as u64,
            smoke_us: p.smoke_in.as_micros() as u64,
            swap_us: swap_in.as_micros() as u64,
            compiled_to_serving_us: (p.persist_in + p.smoke_in + swap_in).as_micros() as u64,
        });
        if keep_old {
            slot.fallback = old.clone();
        }
        let h = &p.act.head.head;
        tracing::info!(
            %app, seq, kind = %h.kind, version = %h.release.version,
            digest = %h.release.digest.short(),
            from = old.as_ref().map_or("nothing", |d| d.meta.version.as_str()),
            compiled_in = ?p.compiled_in, smoke_in = ?p.smoke_in, ?swap_in,
            total = ?p.started.elapsed(), trial = on_trial, "swapped"
        );
        Applied::Swapped(old)
    }

    async fn local_rollback(
        &mut self,
        app: &str,
        to: Option<String>,
    ) -> Result<RollbackDone, RollbackError> {
        let started = Instant::now();
        let target = self.lc.rollback_target(app, to.as_deref())?;
        let prepared = load_for_rollback(&self.io, target.clone()).await?;
        let r = ReleaseRef {
            seq: 0,
            release: target.clone(),
        };
        let d = deployed(&self.io.runtime, &r, &prepared, None);
        self.io.slot(&target.app).rolled_back = Some(d);
        let (mut from, mut serving_after) = (None, Duration::ZERO);
        for e in self.lc.rolled_back(target.clone()) {
            let is_notify = matches!(e, Effect::Notify(_));
            if is_notify {
                tracing::warn!(
                    app = %target.app, from = from.as_deref().unwrap_or("nothing"),
                    to = %target.version, digest = %target.digest.short(), ?serving_after,
                    "local rollback by an operator: override in force until the next head"
                );
            }
            match self.apply_one(e) {
                Applied::Swapped(old) => {
                    serving_after = started.elapsed();
                    from = old.map(|o| o.meta.version.clone());
                }
                Applied::PersistFailed(e) => return Err(RollbackError::NotPersisted(e)),
                Applied::Nothing => {}
            }
        }
        Ok(RollbackDone {
            app: target.app.to_string(),
            from,
            to: target.version.to_string(),
            digest: target.digest.to_hex(),
            serving_after_us: serving_after.as_micros() as u64,
            durable_after_us: started.elapsed().as_micros() as u64,
        })
    }

    fn status(&self) -> Vec<AppView> {
        let now = Instant::now();
        let compat = self.io.runtime.compat_hash();
        let compiled = |r: &Release| {
            self.io
                .store
                .has_compiled(&r.digest, &compat)
                .unwrap_or(false)
        };
        self.lc
            .apps()
            .map(|(name, life)| {
                let slot = self.io.slots.get(name);
                let serving = slot.and_then(|s| s.serving.as_deref());
                let timing = slot.and_then(|s| s.last_activation);
                let mut v = view::app_view(name, life, serving, timing, now, compiled);
                v.since_ms = slot.filter(|s| s.serving.is_some()).map(|s| s.since_ms);
                v
            })
            .collect()
    }
}

/// A local rollback never compiles: the release from the agent's own artifact cache.
async fn load_for_rollback(io: &Shell, target: Release) -> Result<Prepared, RollbackError> {
    let (store, runtime) = (io.store.clone(), io.runtime.clone());
    tokio::task::spawn_blocking(move || {
        runtime.prepare_cached(&target.digest.0, || {
            load_cached(&store, &runtime, &target)?.ok_or_else(|| RollbackError::NotCompiled {
                version: target.version.to_string(),
                app: target.app.to_string(),
            })
        })
    })
    .await
    .map_err(|e| RollbackError::Load(e.to_string()))?
}

/// What a serving-state write was, for its error log.
fn what(write: Write) -> &'static str {
    match write {
        Write::Refusal | Write::Trial => "the serving state",
        Write::Commit => "the commit",
        Write::Revert => "the revert",
        Write::Restart => "what the start found",
        Write::LocalRollback => "the local rollback",
        Write::CleanStop => "the trial at shutdown",
    }
}

/// Runs a durable store write (a sled transaction and its flush: milliseconds) from the actor
/// without stalling the other tasks of this worker thread: the actor waits for it, so every
/// state write stays in order, but on a multi-threaded runtime the worker's other tasks move
/// to another thread meanwhile (`block_in_place`). Elsewhere it simply runs.
pub(crate) fn off_the_reactor<R>(write: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(write),
        _ => write(),
    }
}
