//! What a start serves, decided from the persisted state alone.

use fleetcast_protocol::node::Input;
use fleetcast_protocol::{AppName, AppRecord};

use crate::store::{ReleaseRef, ServingState, Stage};
use crate::supervisor::types::{NodeInput, Now, failure};

/// What [`plan_restore`] decided for one app.
#[derive(Debug)]
pub struct RestorePlan {
    /// The serving state from now on.
    pub state: ServingState,
    /// It differs from what is stored: write it.
    pub changed: bool,
    /// What serves (a resumed trial, else the local override, else the committed release).
    pub serve: Option<ReleaseRef>,
    /// The release whose trial starts again.
    pub resume: Option<ReleaseRef>,
    /// What the node is told beyond the record (a failure of its release, an override).
    pub inputs: Vec<NodeInput>,
}

/// Per app, from its verified record and its stored serving state (`None`: a record without
/// one, whose release is then taken as committed):
///
/// - a release on trial resumes its trial after a clean stop, or when nothing is committed to
///   go back to; otherwise it failed (`restart`);
/// - a release *activating* (its record was written, it never swapped in) failed
///   (`restart`);
/// - a record whose release the state does not account for at all (neither committed, on
///   trial nor failed) failed too (`restart`): the store's writes never leave one, but the
///   seq must be held and the release must not serve regardless;
/// - what serves is the resumed trial, else the local override, else the committed release.
pub fn plan_restore(now: Now, rec: &AppRecord, stored: Option<ServingState>) -> RestorePlan {
    let h = &rec.head.head;
    let app = &h.app;
    let mut state = stored.unwrap_or_else(|| ServingState {
        committed: Some(ReleaseRef {
            seq: h.seq,
            release: h.release.clone(),
        }),
        ..ServingState::default()
    });
    // A record without a serving state (written before there was one) is not rewritten.
    let mut changed = false;
    let mut resume = None;
    if (state.trial_clean_stop || state.committed.is_none())
        && let Some(t) = state.trial.clone()
    {
        tracing::info!(
            %app, seq = t.seq, version = %t.release.version, clean_stop = state.trial_clean_stop,
            "resuming the trial interrupted by the last stop"
        );
        resume = Some(t);
        state.trial_clean_stop = false;
    } else if let Some(t) = state.trial.take() {
        fail_restart(app, now, &mut state, &t, "being activated or on trial");
        changed = true;
    }
    let activating = state.activating.take();
    changed |= activating.is_some();
    let accounted = |state: &ServingState| {
        state.committed.as_ref().is_some_and(|c| c.seq == h.seq)
            || resume.as_ref().is_some_and(|t: &ReleaseRef| t.seq == h.seq)
            || state.failure.as_ref().is_some_and(|f| f.seq == h.seq)
    };
    let stopped = match activating {
        Some(a) => Some(a),
        None if !accounted(&state) => Some(ReleaseRef {
            seq: h.seq,
            release: h.release.clone(),
        }),
        None => None,
    };
    if let Some(a) = stopped {
        fail_restart(app, now, &mut state, &a, "being activated");
        changed = true;
    }
    let serve = resume
        .clone()
        .or(state.local_override.clone())
        .or(state.committed.clone());
    let mut inputs = Vec::new();
    if let Some(f) = state.failure.as_ref().filter(|f| f.seq == h.seq) {
        inputs.push(Input::Reverted {
            app: app.clone(),
            seq: h.seq,
            reason: f.reason.clone(),
            serving: state.committed.as_ref().map(|c| c.release.clone()),
        });
    }
    if let Some(o) = &state.local_override {
        inputs.push(Input::LocalOverride {
            app: app.clone(),
            release: Some(o.release.clone()),
        });
    }
    RestorePlan {
        state,
        changed,
        serve,
        resume,
        inputs,
    }
}

/// The version a restart serves (for the reason of a failure found at start).
fn restarted_into(state: &ServingState) -> String {
    state
        .local_override
        .as_ref()
        .or(state.committed.as_ref())
        .map(|c| c.release.version.to_string())
        .unwrap_or_else(|| "nothing".into())
}

/// Records that the agent stopped while `r` was `doing` (it counts as failed, stage `restart`).
fn fail_restart(app: &AppName, now: Now, state: &mut ServingState, r: &ReleaseRef, doing: &str) {
    let reason = format!(
        "the agent stopped while release {} (seq {}) was {doing}; restarted into {}",
        r.release.version,
        r.seq,
        restarted_into(state)
    );
    tracing::warn!(%app, seq = r.seq, version = %r.release.version, "{reason}");
    state.failure = Some(failure(now, r.seq, &r.release, Stage::Restart, reason));
}
