//! The supervisor's decisions, without IO: per app, what serves, what is on trial, what is
//! being activated, and what each event does to that. No tokio, sled or wasmtime here: time
//! comes in as an argument ([`Now`]), and every handler returns the [`Effect`]s the actor
//! ([`super::actor`]) carries out, in order.
//!
//! Method grammar: `activate`, `cancel`, `compiled`, `persisted`, `smoked`, `judge_trials`,
//! `rolled_back`, `restore`, `clean_stop`, `serving_lost`, and for staged rollouts
//! (`staged.rs`) `prefetch`, `prefetched`, `recorded` and `start_prefetch` are inputs; `poll_timeout`,
//! `rollback_target` and the getters only read. An input whose effects ask for a result
//! (`StartCompile` → [`Lifecycle::compiled`], `PersistRecord` → [`Lifecycle::persisted`],
//! `StartSmoke` → [`Lifecycle::smoked`], a `Swap` that cannot load → [`Lifecycle::serving_lost`])
//! gets it back as another input.
//!
//! **Invariant (crash safety).** Every state the effects persist says what a restart serves:
//! the record is written with the serving state that names its release *activating*, the swap
//! is followed by "on trial" (or the commit), and [`Lifecycle::restore`] decides from that
//! alone (see [`plan_restore`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use fleetcast_protocol::node::{Activation, Input, Prefetch};
use fleetcast_protocol::{ActivationError, AppName, AppRecord, Digest, Release};

use crate::runtime::trial::{TrialCounters, TrialPolicy, Verdict};
use crate::store::{ReleaseRef, ServingState, Stage};
use crate::supervisor::error::RollbackError;
pub use crate::supervisor::types::{NodeInput, Now, failure};

mod model;
mod staged;
mod start;
#[cfg(test)]
mod tests;

pub use self::model::{
    Activating, AppLife, Counter, Effect, LifecycleConfig, Prefetching, Serving, StepOutcome,
    SwapTo, Trial, Write,
};
pub use self::start::{RestorePlan, plan_restore};

/// Every app's lifecycle.
#[derive(Debug)]
pub struct Lifecycle {
    cfg: LifecycleConfig,
    apps: BTreeMap<AppName, AppLife>,
    /// Prefetches waiting for their turn (at most one per app), oldest first.
    queued: VecDeque<Box<Prefetch>>,
    /// The prefetch running.
    prefetching: Option<Prefetching>,
}

impl Lifecycle {
    pub fn new(cfg: LifecycleConfig) -> Self {
        Lifecycle {
            cfg,
            apps: BTreeMap::new(),
            queued: VecDeque::new(),
            prefetching: None,
        }
    }

    pub fn app(&self, app: &AppName) -> Option<&AppLife> {
        self.apps.get(app)
    }

    pub fn apps(&self) -> impl Iterator<Item = (&AppName, &AppLife)> {
        self.apps.iter()
    }

    pub fn config(&self) -> &LifecycleConfig {
        &self.cfg
    }

    /// When the next trial window ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.apps
            .values()
            .filter_map(|a| a.trial.as_ref())
            .filter(|t| t.policy.secs != 0)
            .map(|t| t.started + t.policy.window())
            .min()
    }

    /// The node asks to activate a verified head.
    pub fn activate(&mut self, act: Box<Activation>) -> Vec<Effect> {
        let h = &act.head.head;
        let (app, seq) = (h.app.clone(), h.seq);
        let mut fx = self.unstage(&app, &h.release.digest);
        if self.already_serves(&act) {
            fx.extend(self.persist_same(act));
            return fx;
        }
        let life = self.apps.entry(app.clone()).or_default();
        let new = Activating {
            seq,
            cancelled: false,
        };
        if let Some(old) = life.activation.replace(new) {
            // The node sends one activation per app at a time; be safe anyway.
            fx.push(Effect::CancelCompile { app, seq: old.seq });
        }
        fx.push(Effect::StartCompile(act));
        fx
    }

    /// A newer head waits behind the activation of `seq`.
    pub fn cancel(&mut self, app: &AppName, seq: u64) -> Vec<Effect> {
        if let Some(fx) = self.cancel_prefetch(app, seq) {
            return fx;
        }
        match self
            .apps
            .get_mut(app)
            .and_then(|a| a.activation.as_mut())
            .filter(|r| r.seq == seq && !r.cancelled)
        {
            Some(r) => {
                tracing::info!(%app, seq, "a newer head arrived: cancelling this activation");
                r.cancelled = true;
                vec![Effect::CancelCompile {
                    app: app.clone(),
                    seq,
                }]
            }
            None => Vec::new(),
        }
    }

    /// Whether the result of `act` is still wanted.
    fn current(&self, act: &Activation) -> bool {
        let h = &act.head.head;
        self.apps
            .get(&h.app)
            .and_then(|a| a.activation)
            .is_some_and(|r| r.seq == h.seq && !r.cancelled)
    }

    /// Steps 1–2 ended.
    pub fn compiled(&mut self, now: Now, act: &Activation, outcome: StepOutcome) -> Vec<Effect> {
        match outcome {
            StepOutcome::Failed(reason) => self.refuse(now, act, Stage::Compile, reason),
            StepOutcome::Cancelled => self.cancelled(act),
            StepOutcome::Done if !self.current(act) => self.cancelled(act),
            StepOutcome::Done => {
                let h = &act.head.head;
                let life = self.apps.get_mut(&h.app).expect("current");
                life.state.activating = Some(ReleaseRef {
                    seq: h.seq,
                    release: h.release.clone(),
                });
                vec![Effect::PersistRecord {
                    record: Box::new(act.record.clone()),
                    state: Box::new(life.state.clone()),
                }]
            }
        }
    }

    /// Step 3 ended (`Err`: why the write failed).
    pub fn persisted(
        &mut self,
        now: Now,
        act: &Activation,
        result: Result<(), String>,
    ) -> Vec<Effect> {
        match result {
            Err(reason) => self.refuse(now, act, Stage::Persist, reason),
            Ok(()) => vec![Effect::StartSmoke {
                app: act.head.head.app.clone(),
                seq: act.head.head.seq,
            }],
        }
    }

    /// Step 4 ended: swap (step 5) and start the trial (step 6), or refuse.
    pub fn smoked(&mut self, now: Now, act: &Activation, outcome: StepOutcome) -> Vec<Effect> {
        match outcome {
            StepOutcome::Failed(reason) => self.refuse(now, act, Stage::Smoke, reason),
            StepOutcome::Cancelled => self.cancelled(act),
            StepOutcome::Done if !self.current(act) => self.cancelled(act),
            StepOutcome::Done => self.swap(now, act),
        }
    }

    fn cancelled(&mut self, act: &Activation) -> Vec<Effect> {
        let h = &act.head.head;
        if let Some(life) = self.apps.get_mut(&h.app)
            && life.activation.is_some_and(|r| r.seq == h.seq)
        {
            life.activation = None;
        }
        // A record already written stays `activating` (a restart counts it failed) until the
        // next head's record replaces it.
        vec![Effect::Notify(Input::Activated {
            app: h.app.clone(),
            seq: h.seq,
            result: Err(ActivationError::Cancelled),
        })]
    }

    fn refuse(&mut self, now: Now, act: &Activation, stage: Stage, reason: String) -> Vec<Effect> {
        let h = &act.head.head;
        let (app, seq, release) = (&h.app, h.seq, &h.release);
        let life = self.apps.entry(app.clone()).or_default();
        if life.activation.is_some_and(|r| r.seq == seq) {
            life.activation = None;
        }
        if life.state.activating.as_ref().is_some_and(|a| a.seq == seq) {
            life.state.activating = None;
        }
        tracing::warn!(
            %app, seq, version = %release.version, digest = %release.digest.short(),
            %stage, %reason, "release refused; the serving release keeps serving"
        );
        // The record may already hold its seq: the serving state says why it does not serve.
        life.state.failure = Some(failure(now, seq, release, stage, reason.clone()));
        vec![
            Effect::Count {
                app: app.clone(),
                counter: Counter::Refused,
            },
            Effect::PersistState {
                app: app.clone(),
                state: Box::new(life.state.clone()),
                write: Write::Refusal,
            },
            Effect::Notify(Input::Activated {
                app: app.clone(),
                seq,
                result: Err(ActivationError::Refused {
                    stage: stage.to_string(),
                    reason,
                }),
            }),
        ]
    }

    /// Step 5: the swap, then the trial or, without one, the commit.
    fn swap(&mut self, now: Now, act: &Activation) -> Vec<Effect> {
        let h = &act.head.head;
        let (app, seq, release) = (&h.app, h.seq, &h.release);
        let policy = TrialPolicy::resolve(&self.cfg.trial, &release.policy);
        let counting = (!policy.is_none()).then(|| Arc::new(TrialCounters::default()));
        let life = self.apps.get_mut(app).expect("current");
        life.activation = None;
        // Keep the committed release at hand while the new one is on trial.
        let committed = life.state.committed.as_ref().map(|c| c.release.digest);
        let keep_old = life.fallback.is_none()
            && life
                .serving
                .as_ref()
                .is_some_and(|s| Some(s.release.release.digest) == committed && !s.counting);
        if keep_old {
            life.fallback = life.serving.as_ref().map(|s| s.release.clone());
        }
        let this = ReleaseRef {
            seq,
            release: release.clone(),
        };
        let mut fx = vec![
            Effect::Swap {
                app: app.clone(),
                to: SwapTo::Activated {
                    seq,
                    counting: counting.clone(),
                },
                keep_old,
            },
            Effect::Count {
                app: app.clone(),
                counter: Counter::Swap,
            },
        ];
        life.serving = Some(Serving {
            release: this.clone(),
            counting: counting.is_some(),
        });
        life.record = Some(act.record.clone());
        let st = &mut life.state;
        st.trial = Some(this);
        st.activating = None;
        st.failure = None;
        st.trial_clean_stop = false;
        st.local_override = None;
        remember_cached(&mut st.cached, release);
        fx.push(Effect::Notify(Input::Activated {
            app: app.clone(),
            seq,
            result: Ok(()),
        }));
        match counting {
            None => fx.extend(self.commit(app)),
            Some(counters) => {
                life.trial = Some(Trial {
                    seq,
                    release: release.clone(),
                    counters,
                    policy,
                    started: now.at,
                });
                // The new cached list and the cleared override go with "on trial".
                fx.push(Effect::PersistState {
                    app: app.clone(),
                    state: Box::new(life.state.clone()),
                    write: Write::Trial,
                });
            }
        }
        fx
    }

    /// Something was counted, or a trial window ended: pass or fail the trials due.
    pub fn judge_trials(&mut self, now: Now) -> Vec<Effect> {
        let due: Vec<(AppName, Verdict)> = self
            .apps
            .iter()
            .filter_map(|(name, a)| {
                let t = a.trial.as_ref()?;
                let elapsed = now.at.saturating_duration_since(t.started);
                Some((name.clone(), t.counters.verdict(&t.policy, elapsed)))
            })
            .collect();
        let mut fx = Vec::new();
        for (app, verdict) in due {
            match verdict {
                Verdict::Continue => {}
                Verdict::Pass => fx.extend(self.commit(&app)),
                Verdict::Fail(reason) => fx.extend(self.revert(now, &app, reason)),
            }
        }
        fx
    }

    /// Step 7: the release on trial becomes the committed one.
    fn commit(&mut self, app: &AppName) -> Vec<Effect> {
        let Some(life) = self.apps.get_mut(app) else {
            return Vec::new();
        };
        let Some(current) = life.state.trial.take() else {
            return Vec::new();
        };
        let mut fx = Vec::new();
        let count = life.trial.take().map(|t| t.counters.count());
        if life.fallback.take().is_some() {
            // The old release's memory goes with its last request.
            fx.push(Effect::DropFallback { app: app.clone() });
        }
        tracing::info!(
            %app, seq = current.seq, version = %current.release.version,
            digest = %current.release.digest.short(), trial = ?count, "committed"
        );
        life.state.committed = Some(current);
        // Serving on, without trial counting.
        if let Some(s) = life.serving.as_mut().filter(|s| s.counting) {
            s.counting = false;
            fx.push(Effect::EndTrial { app: app.clone() });
        }
        let dropped = trim_cached(&mut life.state.cached, self.cfg.cached_releases);
        fx.push(Effect::PersistState {
            app: app.clone(),
            state: Box::new(life.state.clone()),
            write: Write::Commit,
        });
        for r in dropped {
            if !self.keeps(&r.digest) {
                fx.push(Effect::DropArtifact { digest: r.digest });
                fx.push(Effect::ForgetMetrics {
                    app: app.clone(),
                    release: r,
                });
            }
        }
        fx
    }

    /// Whether some app keeps `digest` compiled (cached, or staged for a later wave).
    fn keeps(&self, digest: &Digest) -> bool {
        self.apps.values().any(|a| {
            a.state.cached.iter().any(|c| c.digest == *digest)
                || a.staged.as_ref().is_some_and(|s| s.digest == *digest)
        })
    }

    /// The release on trial failed: back to the committed release, by this agent alone.
    fn revert(&mut self, now: Now, app: &AppName, reason: String) -> Vec<Effect> {
        let Some(life) = self.apps.get_mut(app) else {
            return Vec::new();
        };
        let Some(t) = life.trial.take() else {
            return Vec::new();
        };
        life.state.trial = None;
        let (back, swap) = match (life.fallback.take(), &life.state.committed) {
            (Some(f), _) => (Some(f), Some(SwapTo::Fallback)),
            (None, Some(c)) => (Some(c.clone()), Some(SwapTo::Committed(c.clone()))),
            (None, None) => (None, None),
        };
        let mut fx = vec![match swap {
            Some(to) => Effect::Swap {
                app: app.clone(),
                to,
                keep_old: false,
            },
            None => Effect::Undeploy { app: app.clone() },
        }];
        tracing::warn!(
            %app, seq = t.seq, version = %t.release.version, digest = %t.release.digest.short(),
            to = %back.as_ref().map_or("nothing".to_string(), |b| b.release.version.to_string()),
            %reason, "trial failed: reverted"
        );
        life.serving = back.map(|release| Serving {
            release,
            counting: false,
        });
        // Not a rollback target any more (a rollback never picks a release that failed here).
        life.state.cached.retain(|r| r.digest != t.release.digest);
        fx.push(Effect::Count {
            app: app.clone(),
            counter: Counter::Revert,
        });
        let failed = failure(now, t.seq, &t.release, Stage::Trial, reason.clone());
        life.state.failure = Some(failed);
        fx.push(Effect::PersistState {
            app: app.clone(),
            state: Box::new(life.state.clone()),
            write: Write::Revert,
        });
        fx.push(Effect::Notify(Input::Reverted {
            app: app.clone(),
            seq: t.seq,
            reason: format!("trial: {reason}"),
            serving: life.state.committed.as_ref().map(|c| c.release.clone()),
        }));
        if !self.keeps(&t.release.digest) {
            fx.push(Effect::DropArtifact {
                digest: t.release.digest,
            });
        }
        fx
    }

    /// A `Swap` could not load its release: nothing serves (the slot was emptied).
    pub fn serving_lost(&mut self, app: &AppName) {
        if let Some(life) = self.apps.get_mut(app) {
            life.serving = None;
            life.trial = None;
        }
    }

    /// The cached release an operator's local rollback serves (`to`: a version; default the
    /// newest cached release that is neither serving nor the last one that failed here).
    pub fn rollback_target(&self, app: &str, to: Option<&str>) -> Result<Release, RollbackError> {
        let life = AppName::new(app).ok().and_then(|n| self.apps.get(&n));
        let Some(life) = life else {
            let known: Vec<&str> = self.apps.keys().map(AppName::as_str).collect();
            return Err(RollbackError::NoSuchApp {
                app: app.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        let cached = &life.state.cached;
        let list = || {
            cached
                .iter()
                .map(|r| r.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = match to {
            Some(v) => cached.iter().find(|r| r.version.to_string() == v),
            None => {
                let serving = life.serving.as_ref().map(|s| s.release.release.digest);
                let failed = life.state.failure.as_ref().map(|f| f.digest.as_str());
                cached.iter().find(|r| {
                    Some(r.digest) != serving && Some(r.digest.to_hex().as_str()) != failed
                })
            }
        };
        found.cloned().ok_or_else(|| match to {
            Some(v) => RollbackError::NotCached {
                version: v.to_string(),
                app: app.to_string(),
                cached: list(),
            },
            None => RollbackError::NothingElseCached {
                app: app.to_string(),
                cached: list(),
            },
        })
    }

    /// An operator's local rollback loaded `target` (from [`Lifecycle::rollback_target`]):
    /// it serves as an override until the next head activates.
    pub fn rolled_back(&mut self, target: Release) -> Vec<Effect> {
        let app = target.app.clone();
        let life = self.apps.entry(app.clone()).or_default();
        let r = ReleaseRef {
            seq: 0,
            release: target.clone(),
        };
        let mut fx = vec![Effect::Swap {
            app: app.clone(),
            to: SwapTo::RolledBack(r.clone()),
            keep_old: false,
        }];
        life.serving = Some(Serving {
            release: r.clone(),
            counting: false,
        });
        life.trial = None;
        if life.fallback.take().is_some() {
            fx.push(Effect::DropFallback { app: app.clone() });
        }
        life.state.trial = None;
        life.state.local_override = Some(r);
        remember_cached(&mut life.state.cached, &target);
        fx.push(Effect::Count {
            app: app.clone(),
            counter: Counter::LocalRollback,
        });
        fx.push(Effect::PersistState {
            app: app.clone(),
            state: Box::new(life.state.clone()),
            write: Write::LocalRollback,
        });
        fx.push(Effect::Notify(Input::LocalOverride {
            app,
            release: Some(target),
        }));
        fx
    }

    /// At start: the app's verified record and its stored serving state (see
    /// [`plan_restore`]).
    pub fn restore(
        &mut self,
        now: Now,
        record: AppRecord,
        stored: Option<ServingState>,
    ) -> Vec<Effect> {
        let app = record.head.head.app.clone();
        let plan = plan_restore(now, &record, stored);
        let mut fx = Vec::new();
        if plan.changed {
            fx.push(Effect::PersistState {
                app: app.clone(),
                state: Box::new(plan.state.clone()),
                write: Write::Restart,
            });
        }
        let mut life = AppLife {
            state: plan.state,
            record: Some(record),
            ..AppLife::default()
        };
        if let Some(target) = plan.serve {
            let resumed = plan.resume.filter(|t| t.seq == target.seq);
            let counting = resumed.as_ref().map(|_| Arc::new(TrialCounters::default()));
            if let (Some(t), Some(counters)) = (&resumed, &counting) {
                life.trial = Some(Trial {
                    seq: t.seq,
                    release: t.release.clone(),
                    counters: counters.clone(),
                    policy: TrialPolicy::resolve(&self.cfg.trial, &t.release.policy),
                    started: now.at,
                });
            }
            life.serving = Some(Serving {
                release: target.clone(),
                counting: counting.is_some(),
            });
            fx.push(Effect::Swap {
                app: app.clone(),
                to: SwapTo::Restored {
                    release: target,
                    counting,
                },
                keep_old: false,
            });
        }
        fx.extend(plan.inputs.into_iter().map(Effect::Notify));
        self.apps.insert(app, life);
        fx
    }

    /// The agent stops cleanly: trials in progress resume after the restart (a clean stop is
    /// not a failure). Activations in progress are dropped.
    pub fn clean_stop(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.queued.clear();
        if let Some(p) = self.prefetching.as_mut() {
            p.cancelled = true;
            fx.push(Effect::CancelPrefetch {
                app: p.app.clone(),
                seq: p.seq,
            });
        }
        for (app, life) in &mut self.apps {
            if let Some(r) = life.activation.take() {
                fx.push(Effect::CancelCompile {
                    app: app.clone(),
                    seq: r.seq,
                });
            }
            if life.trial.is_some() && life.state.trial.is_some() {
                life.state.trial_clean_stop = true;
                fx.push(Effect::PersistState {
                    app: app.clone(),
                    state: Box::new(life.state.clone()),
                    write: Write::CleanStop,
                });
            }
        }
        fx
    }
}

/// Puts `release` first in the cached list (once per version: a version names one set of
/// bytes, but two versions may share bytes, and each stays reachable by its version).
fn remember_cached(cached: &mut Vec<Release>, release: &Release) {
    cached.retain(|r| r.version != release.version);
    cached.insert(0, release.clone());
}

/// Keeps the cached releases of the newest `k` distinct contents (an artifact is per digest,
/// so versions that share bytes share one slot), and at most `2k` versions in all; returns
/// the ones dropped.
fn trim_cached(cached: &mut Vec<Release>, k: usize) -> Vec<Release> {
    let k = k.max(1);
    let mut digests: Vec<Digest> = Vec::new();
    let mut keep = 0;
    for r in cached.iter() {
        if !digests.contains(&r.digest) {
            if digests.len() == k {
                break;
            }
            digests.push(r.digest);
        }
        if keep == 2 * k {
            break;
        }
        keep += 1;
    }
    cached.split_off(keep)
}
