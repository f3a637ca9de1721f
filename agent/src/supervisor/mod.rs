//! The activation pipeline and what each app serves: one actor that owns, per app, the release
//! serving, the one on trial, the last committed one, the last failure, a local override and
//! the releases kept compiled.
//!
//! Pipeline of one activation (the protocol node asks with [`Command::Activate`]):
//!
//! 1. **compile** — on a blocking thread, at most `compile_concurrency` at once; a release
//!    already compiled by this agent is loaded from its artifact cache instead. A compile still
//!    waiting for its turn is dropped when a newer head arrives ([`Command::Cancel`]); one
//!    already running runs to its end and its result is dropped.
//! 2. **cache** — the verified source and the compiled artifact are stored.
//! 3. **persist** — the signed record (the seq is held from now on, across restarts) and the
//!    serving state naming the release *activating*, in one transaction, flushed.
//! 4. **smoke** — one instantiation under the release's limits, and, if the release names a
//!    health path, one synthetic `GET` there that must answer 2xx before the deadline.
//! 5. **swap** — one atomic store into the app's slot. Requests in flight finish on the old
//!    release, whose memory goes when the last of them ends. The serving state then says *on
//!    trial* (written, flushed).
//! 6. **trial** — the release serves real traffic; a trap, a timeout or too many 5xx revert to
//!    the last committed release at once, by this agent alone (no network needed).
//! 7. **commit** — once the trial passes it becomes the committed release; compiled artifacts
//!    beyond the newest `cached_releases` of the app are dropped.
//!
//! Staged rollouts ([`Command::Prefetch`]): a head whose wave leaves this node out has its
//! release compiled (or loaded) and its source and artifact stored, one prefetch at a time and
//! only while no activation is in progress, on the blocking pool, touching no slot, record or
//! serving state; the release stays compiled (never trimmed) while it is the app's staged one,
//! so the next wave's activation is a load, a smoke check and a swap. The head of a new wave
//! of the release that already serves here only writes its record (no compile, no swap).
//!
//! Layout: [`lifecycle`] decides (no IO: every transition above, local rollback, restore at
//! start, cancellation); `actor` carries out its effects; `pipeline` is the IO of steps 1–2
//! and 4; `restore` reads the store at start; [`view`] is what `/status` shows.
//!
//! **Invariant (crash safety).** What a restart serves is decided by the persisted
//! [`ServingState`](crate::store::ServingState) alone: a local override, else the committed
//! release. A release found *on trial* after a crash counts as failed (reason `restart`) and
//! the committed release serves (after a clean stop, or with no committed release to go back
//! to, its trial resumes). A release found *activating* (steps 3–5) failed, `restart`. A crash
//! before step 3 leaves no trace but the cached source and artifact.
//!
//! Failpoints: with `FLEETCAST_FAILPOINT=<step>` in its environment the agent aborts right
//! after that step (`compile`, `cache`, `persist`, `smoke`, `swap`, `trial`, `commit`), for the
//! crash tests.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

mod actor;
mod api;
mod error;
pub mod lifecycle;
mod pipeline;
mod restore;
mod types;
pub mod view;

pub(crate) use self::actor::off_the_reactor;
pub use self::api::{ActivationConfig, Command, SupervisorConfig, SupervisorHandle};
pub use self::error::{RollbackError, Stopped};
pub use self::pipeline::{PrepareError, prepare, smoke_check};
pub use self::restore::{Restored, restore};
pub use self::types::{NodeInput, Now, unix_ms};
pub use self::view::{
    ActivationTiming, AppView, CachedView, ReleaseView, RollbackDone, StagedView, TrialView,
};

use crate::runtime::Runtime;
use crate::store::Store;

/// Starts the supervisor for the apps [`restore`] found (once per [`Restored`]). Results for
/// the protocol node go to `node`. It stops when `stop` turns true, after the tasks in
/// progress ended.
pub fn spawn(
    restored: &mut Restored,
    store: Store,
    runtime: Arc<Runtime>,
    cfg: SupervisorConfig,
    node: mpsc::UnboundedSender<NodeInput>,
    stop: watch::Receiver<bool>,
) -> (SupervisorHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (lc, io) = restored.apps.take().unwrap_or_else(|| {
        let cfg = lifecycle::LifecycleConfig {
            trial: cfg.trial.clone(),
            cached_releases: cfg.cached_releases,
        };
        (
            lifecycle::Lifecycle::new(cfg),
            actor::Shell::new(store, runtime),
        )
    });
    let actor = actor::Actor::new(lc, io, cfg, node, rx);
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(actor.run(stop), span));
    (SupervisorHandle { tx }, task)
}
