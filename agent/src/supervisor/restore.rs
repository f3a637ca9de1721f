//! Start: what each app serves after a restart, decided by the persisted serving state alone;
//! and where compiled releases come from (the compile cache, the agent's artifact cache, else a
//! compile).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use fleetcast_protocol::node::Input;
use fleetcast_protocol::{AppRecord, Release, TrustPolicy};

use super::{App, Trial, failpoint};
use crate::runtime::trial::{TrialConfig, TrialCounters, TrialPolicy};
use crate::runtime::{DeployedMeta, Limits, Prepared, Runtime};
use crate::store::{FailureRecord, ReleaseRef, ServingState, Store};
use fleetcast_net::ConnId;

/// What [`restore`] found: the records for the node, the inputs that tell the node what the
/// store says beyond them (reverts, overrides), and the apps for the supervisor.
pub struct Restored {
    pub records: Vec<AppRecord>,
    pub blobs: Vec<fleetcast_protocol::Digest>,
    pub inputs: Vec<Input<ConnId>>,
    pub(super) apps: BTreeMap<String, App>,
}

/// Loads the app records, re-verifies their heads (the disk is untrusted) and serves, per app,
/// the local override or else the last committed release, from the agent's own compiled cache
/// (compiling from the stored source only if the artifact is missing). A release found on trial
/// is marked failed. Blocking: run it on a blocking thread.
pub fn restore(
    store: &Store,
    runtime: &Runtime,
    trust: &TrustPolicy,
    trial_cfg: &TrialConfig,
) -> Result<Restored> {
    let mut states = store.states()?;
    let mut out = Restored {
        records: Vec::new(),
        blobs: store.complete_blobs()?,
        inputs: Vec::new(),
        apps: BTreeMap::new(),
    };
    for rec in store.records()? {
        let h = &rec.head.head;
        if let Err(e) = rec.head.verify(trust) {
            tracing::error!(app = %h.app, seq = h.seq, "stored head no longer verifies, not serving it: {e}");
            continue;
        }
        let name = h.app.to_string();
        let mut state = states.remove(&name).unwrap_or_else(|| ServingState {
            committed: Some(ReleaseRef {
                seq: h.seq,
                release: h.release.clone(),
            }),
            ..ServingState::default()
        });
        let mut resume = None;
        if (state.trial_clean_stop || state.committed.is_none())
            && let Some(t) = state.trial.clone()
        {
            // A clean stop during the trial, or nothing committed to go back to: serve it
            // again and restart its trial.
            tracing::info!(
                app = %name, seq = t.seq, version = %t.release.version,
                clean_stop = state.trial_clean_stop,
                "resuming the trial interrupted by the last stop"
            );
            resume = Some(t);
            state.trial_clean_stop = false;
        } else if let Some(t) = state.trial.take() {
            let to = restarted_into(&state);
            let reason = format!(
                "the agent stopped while release {} (seq {}) was being activated or on trial; \
                 restarted into {to}",
                t.release.version, t.seq
            );
            tracing::warn!(app = %name, seq = t.seq, version = %t.release.version, "{reason}");
            state.failure = Some(failure(t.seq, &t.release, "restart", reason));
            store.put_state(&name, &state)?;
        }
        // A record whose release neither serves nor failed here: the agent stopped between
        // persisting it and the swap (or before the swap was recorded).
        let accounted = state.committed.as_ref().is_some_and(|c| c.seq == h.seq)
            || resume.as_ref().is_some_and(|t| t.seq == h.seq)
            || state.failure.as_ref().is_some_and(|f| f.seq == h.seq);
        if !accounted {
            let to = restarted_into(&state);
            let reason = format!(
                "the agent stopped while release {} (seq {}) was being activated; restarted into {to}",
                h.release.version, h.seq
            );
            tracing::warn!(app = %name, seq = h.seq, version = %h.release.version, "{reason}");
            state.failure = Some(failure(h.seq, &h.release, "restart", reason));
            store.put_state(&name, &state)?;
        }
        let target = resume
            .clone()
            .or(state.local_override.clone())
            .or(state.committed.clone());
        let mut app = App::default();
        if let Some(target) = &target {
            match prepare(store, runtime, &target.release, None) {
                Ok(p) => {
                    let limits = Limits::resolve(runtime.config(), &target.release.policy);
                    let counters = resume.as_ref().map(|_| Arc::new(TrialCounters::default()));
                    let d = runtime.deployed(meta(&name, target), &p, limits, counters.clone());
                    runtime.swap_in(d.clone());
                    if let (Some(t), Some(counters)) = (&resume, counters) {
                        app.trial = Some(Trial {
                            seq: t.seq,
                            release: t.release.clone(),
                            counters,
                            policy: TrialPolicy::resolve(trial_cfg, &t.release.policy),
                            started: Instant::now(),
                        });
                    }
                    app.serving = Some(d);
                    tracing::info!(app = %name, version = %target.release.version, seq = target.seq, "serving from cache");
                }
                Err(e) => {
                    tracing::error!(app = %name, seq = target.seq, "cannot serve the cached release: {e:#}")
                }
            }
        }
        if let Some(f) = state.failure.as_ref().filter(|f| f.seq == h.seq) {
            out.inputs.push(Input::Reverted {
                app: h.app.clone(),
                seq: h.seq,
                reason: f.reason.clone(),
                serving: state.committed.as_ref().map(|c| c.release.clone()),
            });
        }
        if let Some(o) = &state.local_override {
            out.inputs.push(Input::LocalOverride {
                app: h.app.clone(),
                release: Some(o.release.clone()),
            });
        }
        app.state = state;
        app.record = Some(rec.clone());
        out.apps.insert(name, app);
        // The seq is held either way: it must never go backwards.
        out.records.push(rec);
    }
    Ok(out)
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

pub(super) fn meta(app: &str, r: &ReleaseRef) -> DeployedMeta {
    DeployedMeta {
        app: app.to_string(),
        version: r.release.version.to_string(),
        digest: r.release.digest.to_hex(),
        seq: r.seq,
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

pub(super) fn failure(seq: u64, release: &Release, stage: &str, reason: String) -> FailureRecord {
    FailureRecord {
        seq,
        version: release.version.to_string(),
        digest: release.digest.to_hex(),
        stage: stage.to_string(),
        reason,
        at_ms: now_ms(),
    }
}

/// The compiled release: from the process's shared compile cache when the runtime has one
/// (keyed by the signed release's digest; whatever is built below is built from content
/// verified against it), else from the agent's own artifact cache, else compiled from `content`
/// (just fetched and verified) or from the verified stored blob.
pub fn prepare(
    store: &Store,
    runtime: &Runtime,
    release: &Release,
    content: Option<&[u8]>,
) -> Result<Prepared> {
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
        failpoint("compile");
        store.put_compiled(&release.digest, &compat, &prepared.artifact)?;
        Ok(prepared)
    })
}

/// The release from the agent's own artifact cache, without compiling; `None` if absent.
pub(super) fn load_cached(
    store: &Store,
    runtime: &Runtime,
    release: &Release,
) -> Result<Option<Prepared>> {
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
