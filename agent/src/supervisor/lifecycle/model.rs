//! The lifecycle's vocabulary: its configuration, the per-app state it keeps, the results it
//! is fed and the effects it returns.

use std::sync::Arc;
use std::time::Instant;

use fleetcast_protocol::node::{Activation, Prefetch};
use fleetcast_protocol::{AppName, AppRecord, Digest, Release};

use crate::runtime::trial::{TrialConfig, TrialCounters, TrialPolicy};
use crate::store::{ReleaseRef, ServingState};
use crate::supervisor::types::NodeInput;

/// What the decisions depend on.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    pub trial: TrialConfig,
    /// Compiled releases kept per app (the newest served).
    pub cached_releases: usize,
}

/// Which state a [`Effect::PersistState`] writes: names the failpoint that follows it and the
/// log line if it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A release refused before its swap.
    Refusal,
    /// The release swapped in, on trial (failpoint `trial`).
    Trial,
    /// The trial passed (failpoint `commit`).
    Commit,
    Revert,
    /// What a start found (a release that stopped on trial or activating).
    Restart,
    LocalRollback,
    /// A clean stop during a trial: it resumes after the restart.
    CleanStop,
}

/// What goes into an app's slot.
#[derive(Clone, Debug)]
pub enum SwapTo {
    /// The release of activation `seq`, smoke-checked; requests counted in `counting` while on
    /// trial.
    Activated {
        seq: u64,
        counting: Option<Arc<TrialCounters>>,
    },
    /// The committed release the last swap kept in memory.
    Fallback,
    /// The committed release, loaded from the cache (no fallback was kept).
    Committed(ReleaseRef),
    /// At start: this release, from the cache; counted when its trial resumes.
    Restored {
        release: ReleaseRef,
        counting: Option<Arc<TrialCounters>>,
    },
    /// The release a local rollback loaded.
    RolledBack(ReleaseRef),
}

/// A counter of the app's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Refused,
    Swap,
    Revert,
    LocalRollback,
}

/// What the actor does for the lifecycle, in order.
#[derive(Debug)]
#[must_use]
pub enum Effect {
    /// Steps 1–2 (compile or load, cache), off the actor; the result comes back through
    /// `Lifecycle::compiled`.
    StartCompile(Box<Activation>),
    /// Drop the compile of `seq` if it still waits for a slot (a running one runs on).
    CancelCompile {
        app: AppName,
        seq: u64,
    },
    /// Step 3: the record and the serving state in one transaction, flushed; the result
    /// comes back through `Lifecycle::persisted`.
    PersistRecord {
        record: Box<AppRecord>,
        state: Box<ServingState>,
    },
    /// Step 4, off the actor; the result comes back through `Lifecycle::smoked`.
    StartSmoke {
        app: AppName,
        seq: u64,
    },
    /// Put a release in the slot; with `keep_old`, keep what it replaces as the fallback.
    Swap {
        app: AppName,
        to: SwapTo,
        keep_old: bool,
    },
    /// Empty the slot.
    Undeploy {
        app: AppName,
    },
    /// The serving release's requests are no longer counted for a trial.
    EndTrial {
        app: AppName,
    },
    /// Forget the fallback kept in memory.
    DropFallback {
        app: AppName,
    },
    /// Write the serving state, flushed.
    PersistState {
        app: AppName,
        state: Box<ServingState>,
        write: Write,
    },
    /// Remove the compiled artifact (no app keeps the release any more).
    DropArtifact {
        digest: Digest,
    },
    /// Drop the release's metrics series.
    ForgetMetrics {
        app: AppName,
        release: Release,
    },
    Count {
        app: AppName,
        counter: Counter,
    },
    Notify(NodeInput),
    /// Compile (or load) a release whose head's wave leaves this node out and store its
    /// source and artifact, off the actor, touching no slot, record or serving state; the
    /// result comes back through `Lifecycle::prefetched`.
    StartPrefetch(Box<Prefetch>),
    /// Stop the prefetch of `seq` if it has not started compiling (a running one runs on).
    CancelPrefetch {
        app: AppName,
        seq: u64,
    },
    /// The head of a release that already serves (a new wave of it): its record and `state`
    /// (the same release, under the new seq) in one transaction, flushed; the result comes
    /// back through `Lifecycle::recorded`. No compile, smoke check, swap or trial.
    PersistSame {
        act: Box<Activation>,
        state: Box<ServingState>,
    },
}

/// What serves for an app, as far as the lifecycle knows.
#[derive(Clone, Debug, PartialEq)]
pub struct Serving {
    pub release: ReleaseRef,
    /// Its requests are counted for a trial.
    pub counting: bool,
}

/// A release on trial.
#[derive(Debug)]
pub struct Trial {
    pub seq: u64,
    pub release: Release,
    pub counters: Arc<TrialCounters>,
    pub policy: TrialPolicy,
    pub started: Instant,
}

/// The activation in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activating {
    pub seq: u64,
    /// A newer head arrived: the result is dropped.
    pub cancelled: bool,
}

/// One app.
#[derive(Debug, Default)]
pub struct AppLife {
    /// What is persisted.
    pub state: ServingState,
    /// The record in force.
    pub record: Option<AppRecord>,
    pub serving: Option<Serving>,
    /// The committed release, kept in memory while another is on trial (a revert is a swap).
    pub fallback: Option<ReleaseRef>,
    pub trial: Option<Trial>,
    pub activation: Option<Activating>,
    /// A release prefetched for a head whose wave leaves this node out: kept compiled (never
    /// trimmed) until another head of the app supersedes it. In memory only.
    pub staged: Option<Release>,
}

/// The prefetch in progress (one at a time, across apps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefetching {
    pub app: AppName,
    pub seq: u64,
    /// A newer head arrived: stopped if it has not started compiling.
    pub cancelled: bool,
}

/// The result of a step that ran off the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    Failed(String),
    /// Dropped before it ran (a newer head, or the agent stopping).
    Cancelled,
}
