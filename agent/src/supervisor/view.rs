//! What the supervisor shows: the per-app view of `/status` and the answer to a local rollback.

use std::time::Instant;

use fleetcast_protocol::wire::{AppRuntime, RuntimeLimits, RuntimeRelease, TrialProgress};
use fleetcast_protocol::{AppName, Digest, Release};
use serde::Serialize;

use crate::runtime::trial::TrialCount;
use crate::runtime::{Deployed, Limits};
use crate::store::{FailureRecord, ReleaseRef};
use crate::supervisor::lifecycle::AppLife;

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
    /// When `serving` went into the app's slot (unix ms).
    pub since_ms: Option<u64>,
    /// The serving release's health path, if it names one.
    pub health_path: Option<String>,
    /// A release held for a later wave of a staged rollout (its wave leaves this agent out).
    pub staged: Option<StagedView>,
    /// The rollout wave of the head in force ("wave 2 of 4 (10%)"), from the node.
    pub wave: Option<String>,
    /// One line for people: what serves, and what is staged.
    pub summary: String,
}

/// A release staged for a later wave: fetched, verified and (`prefetched`) compiled here, so a
/// promotion is a load and a swap.
#[derive(Debug, Clone, Serialize)]
pub struct StagedView {
    pub version: String,
    pub digest: String,
    /// This agent compiled it (its artifact is in the cache).
    pub prefetched: bool,
    /// The staged head (from the node).
    pub seq: Option<u64>,
    /// Its wave: "wave 1 of 4 (1%)" (from the node).
    pub wave: Option<String>,
}

impl AppView {
    /// Fills in what the node knows of the app's rollout (`st`: its status of the app), then
    /// the summary line.
    pub fn with_node(mut self, st: Option<&fleetcast_protocol::wire::AppStatus>) -> Self {
        if let Some(st) = st {
            self.wave = st.plan.as_ref().map(|p| p.describe());
            if let Some(s) = &st.staged {
                let v = self.staged.get_or_insert_with(|| StagedView {
                    version: s.release.version.to_string(),
                    digest: s.release.digest.to_hex(),
                    prefetched: false,
                    seq: None,
                    wave: None,
                });
                v.seq = Some(s.seq);
                v.wave = s.plan.as_ref().map(|p| p.describe());
            }
        }
        self.summary = summary(&self);
        self
    }
}

/// "shop: serving 1.4.0 (seq 7); 1.5.0 prefetched, seq 9, wave 1 of 4 (1%) leaves this agent
/// out".
pub fn summary(v: &AppView) -> String {
    let mut line = match &v.serving {
        Some(s) => format!("{}: serving {} (seq {})", v.app, s.version, s.seq),
        None => format!("{}: nothing serves", v.app),
    };
    match v.state {
        "trial" => line.push_str(", on trial"),
        "local-override" => line.push_str(", local override"),
        "reverted" => line.push_str(&format!(", seq {} reverted here", v.seq)),
        "activating" => line.push_str(&format!(", activating seq {}", v.seq)),
        _ => {}
    }
    if let Some(w) = &v.wave {
        line.push_str(&format!(", {w}"));
    }
    if let Some(s) = &v.staged {
        let how = if s.prefetched { "prefetched" } else { "stored" };
        line.push_str(&format!("; {} {how}", s.version));
        if let Some(seq) = s.seq {
            line.push_str(&format!(", seq {seq}"));
        }
        if let Some(w) = &s.wave {
            line.push_str(&format!(", {w} leaves this agent out"));
        }
    }
    line
}

impl AppView {
    /// The runtime's part of the wire status ([`fleetcast_protocol::NodeStatus::runtime`]).
    pub fn to_wire(&self) -> Option<AppRuntime> {
        let release = |r: &ReleaseView| {
            Some(RuntimeRelease {
                version: r.version.parse().ok()?,
                digest: Digest::from_hex(&r.digest)?,
                seq: r.seq,
            })
        };
        Some(AppRuntime {
            app: AppName::new(&self.app).ok()?,
            state: self.state.to_string(),
            serving: self.serving.as_ref().and_then(release),
            since_ms: self.since_ms.unwrap_or_default(),
            committed: self.committed.as_ref().and_then(release),
            trial: self.trial.as_ref().and_then(|t| {
                Some(TrialProgress {
                    version: t.version.parse().ok()?,
                    seq: t.seq,
                    elapsed_ms: t.elapsed_ms,
                    requests: t.requests,
                    secs: t.secs,
                    seen: t.count.requests,
                    failed: t.count.server_errors + t.count.traps + t.count.timeouts,
                })
            }),
            limits: self.limits.map(|l| RuntimeLimits {
                max_memory_mib: l.max_memory_bytes >> 20,
                request_timeout_ms: l.request_timeout_ms,
                max_concurrent: l.max_concurrent,
                max_body_bytes: l.max_body_bytes,
                fuel: l.fuel,
                health_path: self.health_path.clone(),
            }),
            cached: self
                .cached
                .iter()
                .filter_map(|c| {
                    Some(RuntimeRelease {
                        version: c.version.parse().ok()?,
                        digest: Digest::from_hex(&c.digest)?,
                        seq: 0,
                    })
                })
                .collect(),
        })
    }
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
    /// The window: `requests` requests or `secs` seconds, whichever first (0: off).
    pub requests: u64,
    pub secs: u64,
    pub count: TrialCount,
}

#[derive(Debug, Clone, Serialize)]
pub struct CachedView {
    pub version: String,
    pub digest: String,
    pub compiled: bool,
}

impl From<&ReleaseRef> for ReleaseView {
    fn from(r: &ReleaseRef) -> Self {
        ReleaseView {
            version: r.release.version.to_string(),
            digest: r.release.digest.to_hex(),
            seq: r.seq,
        }
    }
}

/// The `/status` view of one app: its lifecycle, what its slot holds (`serving`), the timings
/// of its last activation, at `now`; `compiled` says whether a release's artifact is cached.
pub fn app_view(
    app: &AppName,
    life: &AppLife,
    serving: Option<&Deployed>,
    last_activation: Option<ActivationTiming>,
    now: Instant,
    compiled: impl Fn(&Release) -> bool,
) -> AppView {
    let st = &life.state;
    let head = life.record.as_ref().map(|r| &r.head.head);
    let seq = head.map(|h| h.seq).unwrap_or_default();
    let state = if st.local_override.is_some() {
        "local-override"
    } else if life.trial.is_some() {
        "trial"
    } else if st.failure.as_ref().is_some_and(|f| f.seq == seq) {
        "reverted"
    } else if life.activation.is_some() {
        "activating"
    } else if life.serving.is_some() {
        "committed"
    } else {
        "none"
    };
    AppView {
        app: app.to_string(),
        seq,
        head_version: head.map(|h| h.release.version.to_string()),
        state,
        serving: life.serving.as_ref().map(|s| ReleaseView::from(&s.release)),
        committed: st.committed.as_ref().map(ReleaseView::from),
        trial: life.trial.as_ref().map(|t| TrialView {
            version: t.release.version.to_string(),
            seq: t.seq,
            elapsed_ms: now.saturating_duration_since(t.started).as_millis() as u64,
            requests: t.policy.requests,
            secs: t.policy.secs,
            count: t.counters.count(),
        }),
        activating: life.activation.map(|r| r.seq),
        local_override: st.local_override.as_ref().map(ReleaseView::from),
        last_failure: st.failure.clone(),
        cached: st
            .cached
            .iter()
            .map(|r| CachedView {
                version: r.version.to_string(),
                digest: r.digest.to_hex(),
                compiled: compiled(r),
            })
            .collect(),
        limits: serving.map(|d| d.limits),
        last_activation,
        since_ms: None,
        health_path: life
            .serving
            .as_ref()
            .and_then(|s| s.release.release.policy.health_path.clone()),
        staged: life.staged.as_ref().map(|r| StagedView {
            version: r.version.to_string(),
            digest: r.digest.to_hex(),
            prefetched: compiled(r),
            seq: None,
            wave: None,
        }),
        wave: None,
        summary: String::new(),
    }
}
