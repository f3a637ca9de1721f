//! Staged rollouts, the lifecycle's part: prefetching a release whose head's wave leaves this
//! node out (compiled and stored, never swapped in), keeping it compiled while it is the
//! app's staged release, and the head of a new wave of a release that already serves (its
//! record advances, nothing else happens).
//!
//! **Invariants.** A prefetch touches no slot, record or serving state. At most one runs at a
//! time, and only while no activation is in progress (an activation arriving meanwhile runs
//! alongside it, never behind it). Every prefetch handed in is answered with exactly one
//! [`Input::Prefetched`].

use fleetcast_protocol::node::{Activation, Input, Prefetch};
use fleetcast_protocol::{ActivationError, AppName, Digest, Release};

use super::{Effect, Lifecycle, Now, Prefetching, StepOutcome};
use crate::store::{ServingState, Stage};

/// The answer to the prefetch of `seq` of `app`.
fn answer(app: &AppName, seq: u64, result: Result<(), ActivationError>) -> Effect {
    Effect::Notify(Input::Prefetched {
        app: app.clone(),
        seq,
        result,
    })
}

impl Lifecycle {
    /// The node asks to prefetch a head's release (its wave leaves this node out). Queued
    /// behind activations and the prefetch running; a newer one for the same app replaces one
    /// still waiting (which is answered `Cancelled`).
    pub fn prefetch(&mut self, p: Box<Prefetch>) -> Vec<Effect> {
        let app = p.head.head.app.clone();
        let mut fx = Vec::new();
        if let Some(i) = self.queued.iter().position(|q| q.head.head.app == app) {
            let old = self.queued.remove(i).expect("found");
            fx.push(answer(
                &app,
                old.head.head.seq,
                Err(ActivationError::Cancelled),
            ));
        }
        self.queued.push_back(p);
        fx.extend(self.start_prefetch());
        fx
    }

    /// Starts the next prefetch if nothing compiles for an activation and no prefetch runs.
    /// The actor calls it after every input (an activation that ends lets one start).
    pub fn start_prefetch(&mut self) -> Vec<Effect> {
        if self.prefetching.is_some() || self.apps.values().any(|a| a.activation.is_some()) {
            return Vec::new();
        }
        let Some(p) = self.queued.pop_front() else {
            return Vec::new();
        };
        let h = &p.head.head;
        self.prefetching = Some(Prefetching {
            app: h.app.clone(),
            seq: h.seq,
            cancelled: false,
        });
        vec![Effect::StartPrefetch(p)]
    }

    /// The prefetch in progress, if any.
    pub fn prefetching(&self) -> Option<&Prefetching> {
        self.prefetching.as_ref()
    }

    /// Prefetches waiting for their turn.
    pub fn prefetches_queued(&self) -> usize {
        self.queued.len()
    }

    /// A newer head waits behind `seq` of `app`: `Some` if that is a prefetch (stopped at
    /// once while it waits; marked, and stopped by the shell if it has not started compiling,
    /// while it runs).
    pub(super) fn cancel_prefetch(&mut self, app: &AppName, seq: u64) -> Option<Vec<Effect>> {
        if let Some(i) = self
            .queued
            .iter()
            .position(|q| q.head.head.app == *app && q.head.head.seq == seq)
        {
            self.queued.remove(i);
            return Some(vec![answer(app, seq, Err(ActivationError::Cancelled))]);
        }
        let p = self
            .prefetching
            .as_mut()
            .filter(|p| p.app == *app && p.seq == seq)?;
        if p.cancelled {
            return Some(Vec::new());
        }
        p.cancelled = true;
        Some(vec![Effect::CancelPrefetch {
            app: app.clone(),
            seq,
        }])
    }

    /// The prefetch of `seq` of `app` (release `release`) ended. Compiled (even after a
    /// cancel: the work is done and a later wave may want it), the release is the app's
    /// staged one; the staged release it replaces loses its artifact unless kept otherwise.
    pub fn prefetched(
        &mut self,
        app: &AppName,
        seq: u64,
        release: &Release,
        outcome: StepOutcome,
    ) -> Vec<Effect> {
        if self
            .prefetching
            .as_ref()
            .is_none_or(|p| p.app != *app || p.seq != seq)
        {
            tracing::error!(%app, seq, "a prefetch ended that was not in progress");
            return Vec::new();
        }
        self.prefetching = None;
        let mut fx = Vec::new();
        let result = match outcome {
            StepOutcome::Done => {
                tracing::info!(
                    %app, seq, version = %release.version, digest = %release.digest.short(),
                    "prefetched: compiled and stored, ready to swap in when a wave includes this agent"
                );
                fx.extend(self.unstage(app, &release.digest));
                self.apps.entry(app.clone()).or_default().staged = Some(release.clone());
                Ok(())
            }
            StepOutcome::Failed(reason) => {
                tracing::warn!(
                    %app, seq, version = %release.version, digest = %release.digest.short(),
                    %reason, "prefetch refused; the serving release keeps serving"
                );
                Err(ActivationError::Refused {
                    stage: Stage::Compile.to_string(),
                    reason,
                })
            }
            StepOutcome::Cancelled => Err(ActivationError::Cancelled),
        };
        fx.push(answer(app, seq, result));
        fx.extend(self.start_prefetch());
        fx
    }

    /// Another head of `app` moves on (to release `next`): its staged release is no longer
    /// kept for a wave, and its artifact goes unless it is `next` or kept otherwise.
    pub(super) fn unstage(&mut self, app: &AppName, next: &Digest) -> Vec<Effect> {
        let Some(old) = self.apps.get_mut(app).and_then(|a| a.staged.take()) else {
            return Vec::new();
        };
        if old.digest == *next || self.keeps(&old.digest) {
            return Vec::new();
        }
        vec![Effect::DropArtifact { digest: old.digest }]
    }

    /// Whether `act` is a head of the very release that serves for its app, committed (or on
    /// trial) here, with no activation or local override in the way: a new wave of it.
    pub(super) fn already_serves(&self, act: &Activation) -> bool {
        let h = &act.head.head;
        let Some(life) = self.apps.get(&h.app) else {
            return false;
        };
        let Some(s) = &life.serving else {
            return false;
        };
        if life.activation.is_some()
            || life.state.local_override.is_some()
            || s.release.release != h.release
        {
            return false;
        }
        let st = &life.state;
        let committed = st
            .committed
            .as_ref()
            .is_some_and(|c| c.release == h.release);
        let on_trial =
            life.trial.is_some() && st.trial.as_ref().is_some_and(|t| t.release == h.release);
        (committed && !s.counting) || (on_trial && s.counting)
    }

    /// The record of `act` (a release that already serves) is written with the serving state
    /// naming the same release under the new seq.
    pub(super) fn persist_same(&mut self, act: Box<Activation>) -> Vec<Effect> {
        let h = &act.head.head;
        let life = self.apps.get(&h.app).expect("already serves");
        let mut state = life.state.clone();
        for r in [state.committed.as_mut(), state.trial.as_mut()]
            .into_iter()
            .flatten()
        {
            if r.release == h.release {
                r.seq = h.seq;
            }
        }
        vec![Effect::PersistSame {
            act,
            state: Box::new(state),
        }]
    }

    /// An [`Effect::PersistSame`] ended (`Err`: why the write failed, and the release is
    /// refused at `persist` like any other; it keeps serving as the release before).
    pub fn recorded(
        &mut self,
        now: Now,
        act: &Activation,
        state: ServingState,
        result: Result<(), String>,
    ) -> Vec<Effect> {
        if let Err(reason) = result {
            return self.refuse(now, act, Stage::Persist, reason);
        }
        let h = &act.head.head;
        let (app, seq) = (&h.app, h.seq);
        let life = self.apps.get_mut(app).expect("already serves");
        life.state = state;
        life.record = Some(act.record.clone());
        if let Some(s) = life.serving.as_mut() {
            s.release.seq = seq;
        }
        if let Some(t) = life.trial.as_mut() {
            t.seq = seq;
        }
        tracing::info!(
            %app, seq, version = %h.release.version, digest = %h.release.digest.short(),
            "already serving this release: its new head is recorded (no compile, no swap)"
        );
        vec![Effect::Notify(Input::Activated {
            app: app.clone(),
            seq,
            result: Ok(()),
        })]
    }
}
