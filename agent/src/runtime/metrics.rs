//! Runtime metrics for the agent: per-release request counters and latency
//! histograms, per-app lifecycle counters, and their rendering in the
//! Prometheus text exposition format (version 0.0.4).
//!
//! Shape: one [`Metrics`] registry per agent holds, per app, an
//! [`AppMetrics`] (swaps, reverts, local rollbacks, refused releases) and, per
//! release version of that app, a [`ReleaseMetrics`] (requests, responses by
//! status class, traps, timeouts, overload and body-limit rejections, request
//! latency and instantiation time). The request path looks an entry up once
//! ([`Metrics::release`], a read lock on a hit) and keeps the returned `Arc`;
//! every update after that is a relaxed atomic add, with no lock and no
//! allocation. [`Metrics::render_prometheus`] snapshots everything for a
//! scrape. Nothing here measures time: callers pass the [`Duration`]s.
//!
//! Invariants:
//! * **Counters only go up.** No type here exposes a way to decrease or reset
//!   a counter or a histogram; snapshots are read-only copies. (A `u64` of
//!   microseconds wraps only after ~584,000 years of summed latency.)
//! * **Cardinality is bounded by apps × cached releases.** Series exist only
//!   for releases the agent asked for through [`Metrics::release`], and
//!   [`Metrics::forget_release`] drops a release's series when it leaves the
//!   agent's cache. Per-app series live until [`Metrics::forget_app`].
//!   A forgotten release that is looked up again starts from zero, which
//!   Prometheus reads as an ordinary counter reset.
//! * **Every rendered histogram is self-consistent:** buckets are cumulative
//!   and the `+Inf` bucket equals `_count`, even while other threads observe
//!   (a snapshot derives its count from the bucket counts it read).
//!
//! Files: `histogram.rs` (the histogram and its snapshot), `prometheus.rs` (the text format,
//! whose family and sample writers the agent's other families ([`crate::mesh_metrics`]) share),
//! `exposition.rs` (tests only: a parser and checker of the format).

#[cfg(test)]
pub(crate) mod exposition;
mod health;
mod histogram;
mod prometheus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;

pub use self::health::{AppHealth, HealthCounters, Served, SwapMark};
pub use self::histogram::{
    Histogram, HistogramSnapshot, INSTANTIATE_BUCKETS_US, LATENCY_BUCKETS_US,
};
#[cfg(test)]
use self::prometheus::{MicrosAsSeconds, escape_label_value};
pub(crate) use self::prometheus::{header, sample};

/// The `Content-Type` of [`Metrics::render_prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Counters and histograms for one app at one release version.
///
/// Each request that reached the release gets exactly one
/// [`record_response`](Self::record_response) with the status the client got,
/// whoever produced it (guest or agent), plus at most one of
/// [`record_trap`](Self::record_trap), [`record_timeout`](Self::record_timeout),
/// [`record_overloaded`](Self::record_overloaded) or
/// [`record_too_large`](Self::record_too_large) when that is why the agent
/// produced it.
#[derive(Debug)]
pub struct ReleaseMetrics {
    requests: AtomicU64,
    responses_2xx: AtomicU64,
    responses_4xx: AtomicU64,
    responses_5xx: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    overloaded: AtomicU64,
    too_large: AtomicU64,
    /// Request start → response head.
    latency: Histogram,
    /// Time to instantiate the guest.
    instantiate: Histogram,
    /// What a staged rollout judges the release by (requests that say something about it).
    health: HealthCounters,
}

impl Default for ReleaseMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ReleaseMetrics {
    /// Zeroed metrics with [`LATENCY_BUCKETS_US`] and [`INSTANTIATE_BUCKETS_US`].
    pub fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            responses_2xx: AtomicU64::new(0),
            responses_4xx: AtomicU64::new(0),
            responses_5xx: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS_US),
            instantiate: Histogram::new(INSTANTIATE_BUCKETS_US),
            health: HealthCounters::default(),
        }
    }

    /// A request that says something about the release's health (not shed, not refused for
    /// its size) was `served` after `latency`: counted for staged rollouts.
    pub fn record_served(&self, served: Served, latency: Duration) {
        self.health.record(served, latency);
    }

    /// The release's health counts so far (see [`HealthCounters`]).
    pub fn health(&self) -> fleetcast_protocol::rollout::Health {
        self.health.snapshot()
    }

    /// One request finished its response head with `status` after `latency`.
    /// Counts the request, its status class (1xx and 3xx count only as
    /// requests) and the latency.
    pub fn record_response(&self, status: u16, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let class = match status {
            200..=299 => Some(&self.responses_2xx),
            400..=499 => Some(&self.responses_4xx),
            500..=599 => Some(&self.responses_5xx),
            _ => None,
        };
        if let Some(counter) = class {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(latency);
    }

    /// The guest trapped while handling a request.
    pub fn record_trap(&self) {
        self.traps.fetch_add(1, Ordering::Relaxed);
    }

    /// A request hit its deadline.
    pub fn record_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A request got 503 because the app's concurrency limit was reached.
    pub fn record_overloaded(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    /// A request got 413 because its body exceeded the limit.
    pub fn record_too_large(&self) {
        self.too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// The guest took `d` to instantiate.
    pub fn record_instantiate(&self, d: Duration) {
        self.instantiate.observe(d);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> ReleaseMetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReleaseMetricsSnapshot {
            requests: load(&self.requests),
            responses_2xx: load(&self.responses_2xx),
            responses_4xx: load(&self.responses_4xx),
            responses_5xx: load(&self.responses_5xx),
            traps: load(&self.traps),
            timeouts: load(&self.timeouts),
            overloaded: load(&self.overloaded),
            too_large: load(&self.too_large),
            latency: self.latency.snapshot(),
            instantiate: self.instantiate.snapshot(),
        }
    }
}

/// A point-in-time copy of a [`ReleaseMetrics`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseMetricsSnapshot {
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub overloaded: u64,
    pub too_large: u64,
    pub latency: HistogramSnapshot,
    pub instantiate: HistogramSnapshot,
}

/// Lifecycle counters for one app.
#[derive(Debug, Default)]
pub struct AppMetrics {
    swaps: AtomicU64,
    reverts: AtomicU64,
    local_rollbacks: AtomicU64,
    refused: AtomicU64,
}

impl AppMetrics {
    /// A release was swapped in to serve the app.
    pub fn record_swap(&self) {
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// A release failed its trial here and the app went back to its last
    /// good release.
    pub fn record_revert(&self) {
        self.reverts.fetch_add(1, Ordering::Relaxed);
    }

    /// An operator on this agent made another release serve (local override).
    pub fn record_local_rollback(&self) {
        self.local_rollbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// A release was refused before the swap (compile or smoke-test failure).
    pub fn record_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> AppMetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AppMetricsSnapshot {
            swaps: load(&self.swaps),
            reverts: load(&self.reverts),
            local_rollbacks: load(&self.local_rollbacks),
            refused: load(&self.refused),
        }
    }
}

/// A point-in-time copy of an [`AppMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AppMetricsSnapshot {
    pub swaps: u64,
    pub reverts: u64,
    pub local_rollbacks: u64,
    pub refused: u64,
}

#[derive(Debug, Default)]
struct AppEntry {
    app: Arc<AppMetrics>,
    releases: BTreeMap<String, Arc<ReleaseMetrics>>,
}

/// The agent's metrics registry. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    apps: RwLock<BTreeMap<String, AppEntry>>,
    not_found: AtomicU64,
}

impl Metrics {
    /// The metrics of `app` at `version`, created on first use. Callers keep
    /// the `Arc` for as long as they serve that release.
    pub fn release(&self, app: &str, version: &str) -> Arc<ReleaseMetrics> {
        if let Some(found) = self
            .read()
            .get(app)
            .and_then(|entry| entry.releases.get(version))
        {
            return Arc::clone(found);
        }
        let mut apps = self.write();
        let entry = apps.entry(app.to_owned()).or_default();
        Arc::clone(entry.releases.entry(version.to_owned()).or_default())
    }

    /// The lifecycle metrics of `app`, created on first use.
    pub fn app(&self, app: &str) -> Arc<AppMetrics> {
        if let Some(entry) = self.read().get(app) {
            return Arc::clone(&entry.app);
        }
        Arc::clone(&self.write().entry(app.to_owned()).or_default().app)
    }

    /// Drops the series of `app` at `version` (the release left the agent's
    /// cache). Returns whether there were any. Updates through an `Arc` still
    /// held elsewhere are no longer rendered; a later [`Metrics::release`]
    /// for the same pair starts from zero.
    pub fn forget_release(&self, app: &str, version: &str) -> bool {
        self.write()
            .get_mut(app)
            .is_some_and(|entry| entry.releases.remove(version).is_some())
    }

    /// Drops every series of `app`, its own and its releases' (the app was
    /// removed from the agent). Returns whether there were any.
    pub fn forget_app(&self, app: &str) -> bool {
        self.write().remove(app).is_some()
    }

    /// A request named no app that this agent serves.
    pub fn record_not_found(&self) {
        self.not_found.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests so far that named no app.
    pub fn not_found(&self) -> u64 {
        self.not_found.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, AppEntry>> {
        // The maps are only inserted into and removed from, so a panic
        // elsewhere cannot leave them inconsistent: ignore poisoning.
        self.apps.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, AppEntry>> {
        self.apps.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
