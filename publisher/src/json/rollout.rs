//! The `--json` objects of staged rollouts (`release --waves`, `fleetcast rollout ...`).

use serde::Serialize;

use super::ReleaseRef;

/// A staged rollout's plan as signed on its head.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PlanJson {
    /// The cumulative waves, as percentages ("1%", "10%", ..., "100%").
    pub waves: Vec<String>,
    /// The wave open, from 1.
    pub wave: u32,
    /// Its share of the fleet ("10%").
    pub fraction: String,
    pub paused: bool,
    pub gates: GatesJson,
}

/// The gates of a plan: the flags of `release --waves`, as signed.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct GatesJson {
    pub bake_ms: u64,
    pub max_failed: u32,
    /// Basis points above the old release's 5xx rate (100 = +1%); null: not judged.
    pub max_error_rate_bp: Option<u32>,
    /// Percent above the old release's p99; null: not judged.
    pub max_p99_increase_pct: Option<u32>,
    pub min_requests: u64,
}

/// Requests served by one release on the agents of the wave.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HealthJson {
    pub requests: u64,
    /// 5xx, traps and timeouts included.
    pub errors: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub error_rate_bp: u32,
    /// The upper bound of the p99's latency bucket, ms; null with no requests; 4294967295 when
    /// slower than the last bucket.
    pub p99_ms: Option<u32>,
}

/// The fleet's count of a staged head.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct WaveCounts {
    /// Agents that hold the head and counted themselves: the fleet's size as the head knows it.
    pub nodes: u32,
    /// Agents the wave includes.
    pub in_wave: u32,
    pub active: u32,
    pub failed: u32,
    pub rejected: u32,
    /// In the wave, still fetching or activating.
    pub pending: u32,
    /// Outside the wave, the release fetched and compiled, ready to swap.
    pub prefetched: u32,
    /// The census's count of the live fleet before the rollout (null: no census answered).
    pub census: Option<u32>,
}

/// What the gates say: `state` is `hold` (with `why`), `pass`, `halt` (with `gate` and
/// `why`) or `paused`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct VerdictJson {
    pub state: String,
    /// `failed`, `error-rate` or `latency` (with `halt`).
    pub gate: Option<String>,
    pub why: Option<String>,
}

/// `release --waves`, `rollout resume`: the open wave's numbers changed, or its verdict did.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Rollout {
    pub app: String,
    pub seq: u64,
    pub release: ReleaseRef,
    pub plan: PlanJson,
    pub counts: WaveCounts,
    pub health_new: HealthJson,
    pub health_old: HealthJson,
    pub verdict: VerdictJson,
}

/// `fleetcast rollout status`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RolloutStatus {
    pub app: String,
    /// The app's newest head on the agent (the head in force, or a staged one, whichever is
    /// newer).
    pub seq: u64,
    pub epoch: u64,
    /// `release` or `rollback`.
    pub kind: String,
    pub release: ReleaseRef,
    /// The newest head's plan; null: not a staged rollout (the whole fleet at once, or a
    /// rollback).
    pub plan: Option<PlanJson>,
    /// Whether this agent runs the newest head's release (false: it is outside the wave).
    pub here: bool,
    /// The fleet's count of the newest head (null: the agent has none yet).
    pub counts: Option<WaveCounts>,
    pub health_new: Option<HealthJson>,
    pub health_old: Option<HealthJson>,
    /// Whether the count is the fleet's (`fleet`) or only this agent's subtree (`subtree`).
    pub counted: Option<String>,
    /// Every agent in the wave active or failed, and the fleet counted.
    pub settled: bool,
    pub verdict: Option<VerdictJson>,
}

/// A gate halted a staged rollout (the `error` event with code 5 follows).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Halted {
    pub app: String,
    /// `failed`, `error-rate` or `latency`; null for an operator's `rollout abort`.
    pub gate: Option<String>,
    pub why: String,
    /// The wave it stopped at, from 1.
    pub wave: u32,
    /// The rollback head pushed (null: no release to go back to; a paused head was pushed).
    pub rollback_seq: Option<u64>,
    pub rolled_back_to: Option<ReleaseRef>,
    /// Agents the rollback head's count shows active (back on the old release).
    pub back: u32,
    /// Whether every agent counted is back (within --timeout).
    pub complete: bool,
}
