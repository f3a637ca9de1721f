//! What the supervisor shows: the per-app view of `/status` and the answer to a local rollback.

use serde::Serialize;

use crate::runtime::Limits;
use crate::runtime::trial::TrialCount;
use crate::store::FailureRecord;

/// What a local rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackDone {
    pub app: String,
    pub from: Option<String>,
    pub to: String,
    pub digest: String,
    /// Command received → the new release serving (load from cache + swap).
    pub serving_after_us: u64,
    /// Command received → the override durable.
    pub durable_after_us: u64,
}

/// One app, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub app: String,
    /// The highest seq this agent holds for the app (its signed head in force).
    pub seq: u64,
    /// The release of that head.
    pub head_version: Option<String>,
    /// `committed`, `trial`, `reverted`, `local-override`, `activating`, `none`.
    pub state: &'static str,
    pub serving: Option<ReleaseView>,
    pub committed: Option<ReleaseView>,
    pub trial: Option<TrialView>,
    pub activating: Option<u64>,
    pub local_override: Option<ReleaseView>,
    pub last_failure: Option<FailureRecord>,
    /// Releases kept compiled, newest first.
    pub cached: Vec<CachedView>,
    pub limits: Option<Limits>,
    /// Step timings of the last activation that reached the swap.
    pub last_activation: Option<ActivationTiming>,
}

/// Where the time of one activation went, microseconds from its start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ActivationTiming {
    /// Compiled (or loaded from the artifact cache) and stored.
    pub compiled_us: u64,
    /// Record and "on trial" durable.
    pub persist_us: u64,
    /// The smoke check.
    pub smoke_us: u64,
    /// The atomic swap itself.
    pub swap_us: u64,
    /// Compiled → serving: persist + smoke + swap.
    pub compiled_to_serving_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    pub version: String,
    pub digest: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialView {
    pub version: String,
    pub seq: u64,
    pub elapsed_ms: u64,
    pub window_ms: u64,
    pub window_requests: u64,
    pub count: TrialCount,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedView {
    pub version: String,
    pub digest: String,
    pub compiled: bool,
}
