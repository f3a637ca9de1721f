//! Start: the IO of deciding what each app serves after a restart. The decision is the
//! lifecycle's ([`Lifecycle::restore`], from the persisted serving state alone); this reads the
//! store, re-verifies the heads and loads what serves from the agent's own compiled cache.

use fleetcast_protocol::trust::Trust;
use fleetcast_protocol::{AppRecord, Digest};

use std::sync::Arc;

use crate::runtime::Runtime;
use crate::store::{Store, StoreError};
use crate::supervisor::actor::Shell;
use crate::supervisor::api::SupervisorConfig;
use crate::supervisor::lifecycle::{Effect, Lifecycle, LifecycleConfig, SwapTo};
use crate::supervisor::types::{NodeInput, Now};

/// What [`restore`] found: the records for the node, the inputs that tell the node what the
/// store says beyond them (reverts, overrides), and the apps for the supervisor.
pub struct Restored {
    pub records: Vec<AppRecord>,
    pub blobs: Vec<Digest>,
    pub inputs: Vec<NodeInput>,
    /// Taken by [`crate::supervisor::spawn`].
    pub(in crate::supervisor) apps: Option<(Lifecycle, Shell)>,
}

/// Loads the app records, re-verifies their heads (the disk is untrusted:
/// [`Trust::verify_stored_head`], against the root of each head's own epoch, so a node
/// restarted after a release-key rotation or past the root's expiry keeps serving what it ran)
/// and serves, per app,
/// what the persisted serving state says (a resumed trial, the local override, else the last
/// committed release), from the agent's own compiled cache (compiling from the stored source
/// only if the artifact is missing). Blocking: run it on a blocking thread.
pub fn restore(
    store: &Store,
    runtime: &Arc<Runtime>,
    trust: &Trust,
    cfg: &SupervisorConfig,
) -> Result<Restored, StoreError> {
    let now = Now::read();
    let mut lc = Lifecycle::new(LifecycleConfig {
        trial: cfg.trial.clone(),
        cached_releases: cfg.cached_releases,
    });
    let mut io = Shell::new(store.clone(), runtime.clone());
    let mut states = store.states()?;
    let mut out = Restored {
        records: Vec::new(),
        blobs: store.complete_blobs()?,
        inputs: Vec::new(),
        apps: None,
    };
    for rec in store.records()? {
        let h = &rec.head.head;
        if let Err(e) = trust.verify_stored_head(&rec.head) {
            tracing::error!(app = %h.app, seq = h.seq, "stored head no longer verifies, not serving it: {e}");
            continue;
        }
        let stored = states.remove(h.app.as_str());
        for e in lc.restore(now, rec.clone(), stored) {
            match e {
                Effect::PersistState { app, state, .. } => store.put_state(&app, &state)?,
                Effect::Swap {
                    app,
                    to: SwapTo::Restored { release, counting },
                    ..
                } => match io.load(&release, counting) {
                    Ok(d) => {
                        io.swap_in(&app, d);
                        tracing::info!(%app, version = %release.release.version, seq = release.seq, "serving from cache");
                    }
                    Err(e) => {
                        tracing::error!(%app, seq = release.seq, "cannot serve the cached release: {e}");
                        lc.serving_lost(&app);
                    }
                },
                Effect::Notify(input) => out.inputs.push(input),
                other => tracing::error!("not an effect of a start: {other:?}"),
            }
        }
        // The seq is held either way: it must never go backwards.
        out.records.push(rec);
    }
    out.apps = Some((lc, io));
    Ok(out)
}
