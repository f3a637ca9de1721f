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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;

/// Bucket upper bounds (µs) for request latency: 50 µs … 30 s.
pub const LATENCY_BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Bucket upper bounds (µs) for component instantiation: 5 µs … 50 ms.
pub const INSTANTIATE_BUCKETS_US: &[u64] = &[
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000,
];

/// The `Content-Type` of [`Metrics::render_prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A fixed-bucket histogram of durations, updated with atomics only.
///
/// An observation is taken in whole microseconds, rounded up, and lands in
/// the first bucket whose upper bound is `>=` it (Prometheus `le`
/// semantics), or in the final `+Inf` bucket. Rounding up means an
/// observation is never counted under a bound it exceeds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `bounds.len() + 1` counts; the last is the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Histogram {
    /// A histogram with the given bucket upper bounds in microseconds.
    ///
    /// # Panics
    /// If `bounds` is not strictly increasing.
    pub fn new(bounds: &'static [u64]) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must be strictly increasing"
        );
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    /// The bucket upper bounds (µs), without the implicit `+Inf`.
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = ceil_micros(d);
        let bucket = self.bounds.partition_point(|&bound| bound < us);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A copy of the current state. Taken without a lock, so under concurrent
    /// observation it may include an observation in the buckets but not yet
    /// in `sum_us` (or the reverse); `count` is always the total of `counts`.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            count: counts.iter().sum(),
            counts,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// `d` in whole microseconds, rounded up, saturating at `u64::MAX`.
fn ceil_micros(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000)).unwrap_or(u64::MAX)
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in microseconds (without `+Inf`).
    pub bounds: &'static [u64],
    /// Per-bucket counts, not cumulative: `bounds.len() + 1` entries, the last
    /// one being the `+Inf` bucket.
    pub counts: Vec<u64>,
    /// Sum of all observations in microseconds.
    pub sum_us: u64,
    /// Number of observations (the total of `counts`).
    pub count: u64,
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding the `q`-th observation (the
    /// observation of rank `ceil(q × count)`, at least the first), or `None`
    /// if there are no observations or `q` is not within `0.0..=1.0`.
    ///
    /// When that observation is in the `+Inf` bucket the result is
    /// [`Duration::MAX`]: all that is known is that it exceeds the last bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        // `q × total` is an exact integer more often than f64 says (0.07 × 100
        // is 7.000000000000001): shave a few ulps before rounding up.
        let exact = q * total as f64;
        let rank = ((exact - exact * 4.0 * f64::EPSILON).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(
                    self.bounds
                        .get(i)
                        .map_or(Duration::MAX, |&us| Duration::from_micros(us)),
                );
            }
        }
        None
    }
}

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
        }
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

    /// All metrics in the Prometheus text exposition format 0.0.4 (serve it
    /// with [`PROMETHEUS_CONTENT_TYPE`]). Series are sorted by app, then
    /// version.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.write_prometheus(&mut out)
            .expect("formatting into a String does not fail");
        out
    }

    /// [`Metrics::render_prometheus`] into any writer.
    pub fn write_prometheus<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        // Clone the Arcs under the read lock; read the atomics after it is gone.
        type Entry = (String, Arc<AppMetrics>, Vec<(String, Arc<ReleaseMetrics>)>);
        let entries: Vec<Entry> = self
            .read()
            .iter()
            .map(|(name, entry)| {
                let releases = entry
                    .releases
                    .iter()
                    .map(|(version, m)| (version.clone(), Arc::clone(m)))
                    .collect();
                (name.clone(), Arc::clone(&entry.app), releases)
            })
            .collect();
        let apps: Vec<(&str, AppMetricsSnapshot)> = entries
            .iter()
            .map(|(name, m, _)| (name.as_str(), m.snapshot()))
            .collect();
        // (app, version, snapshot), sorted by app then version.
        let releases: Vec<(&str, &str, ReleaseMetricsSnapshot)> = entries
            .iter()
            .flat_map(|(name, _, releases)| {
                releases
                    .iter()
                    .map(move |(version, m)| (name.as_str(), version.as_str(), m.snapshot()))
            })
            .collect();

        type ReleaseCounter = (
            &'static str,
            &'static str,
            fn(&ReleaseMetricsSnapshot) -> u64,
        );
        let release_counters: [ReleaseCounter; 6] = [
            (
                "fleetcast_requests_total",
                "Requests that reached an app release.",
                |s| s.requests,
            ),
            (
                "fleetcast_responses_total",
                "Responses sent for an app release (by the guest or the agent), by status class.",
                |_| 0, // rendered per class below
            ),
            (
                "fleetcast_traps_total",
                "Requests during which the guest trapped.",
                |s| s.traps,
            ),
            (
                "fleetcast_timeouts_total",
                "Requests that hit their deadline.",
                |s| s.timeouts,
            ),
            (
                "fleetcast_overloaded_total",
                "Requests refused with 503 because the app's concurrency limit was reached.",
                |s| s.overloaded,
            ),
            (
                "fleetcast_request_body_too_large_total",
                "Requests refused with 413 because the body exceeded the limit.",
                |s| s.too_large,
            ),
        ];
        for (name, help, value) in release_counters {
            header(out, name, "counter", help)?;
            for (app, version, s) in &releases {
                let labels = [("app", *app), ("version", *version)];
                if name == "fleetcast_responses_total" {
                    for (class, n) in [
                        ("2xx", s.responses_2xx),
                        ("4xx", s.responses_4xx),
                        ("5xx", s.responses_5xx),
                    ] {
                        sample(out, name, &labels, &[("class", class)], n)?;
                    }
                } else {
                    sample(out, name, &labels, &[], value(s))?;
                }
            }
        }

        type ReleaseHistogram = (
            &'static str,
            &'static str,
            fn(&ReleaseMetricsSnapshot) -> &HistogramSnapshot,
        );
        let histograms: [ReleaseHistogram; 2] = [
            (
                "fleetcast_request_duration_seconds",
                "Time from the start of a request to its response head.",
                |s| &s.latency,
            ),
            (
                "fleetcast_instantiation_duration_seconds",
                "Time to instantiate the guest component.",
                |s| &s.instantiate,
            ),
        ];
        for (name, help, histogram) in histograms {
            header(out, name, "histogram", help)?;
            for (app, version, s) in &releases {
                let labels = [("app", *app), ("version", *version)];
                write_histogram(out, name, &labels, histogram(s))?;
            }
        }

        type AppCounter = (&'static str, &'static str, fn(&AppMetricsSnapshot) -> u64);
        let app_counters: [AppCounter; 4] = [
            (
                "fleetcast_swaps_total",
                "Releases swapped in to serve an app.",
                |s| s.swaps,
            ),
            (
                "fleetcast_reverts_total",
                "Releases that failed their trial on this agent and were reverted.",
                |s| s.reverts,
            ),
            (
                "fleetcast_local_rollbacks_total",
                "Releases made to serve by an operator on this agent (local override).",
                |s| s.local_rollbacks,
            ),
            (
                "fleetcast_releases_refused_total",
                "Releases refused before the swap (compile or smoke-test failure).",
                |s| s.refused,
            ),
        ];
        for (name, help, value) in app_counters {
            header(out, name, "counter", help)?;
            for (app, s) in &apps {
                sample(out, name, &[("app", *app)], &[], value(s))?;
            }
        }

        let name = "fleetcast_not_found_total";
        header(
            out,
            name,
            "counter",
            "Requests that named no app served here.",
        )?;
        sample(out, name, &[], &[], self.not_found())
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

/// `# HELP` and `# TYPE` of one family. `help` must hold no `\` or newline.
fn header<W: fmt::Write>(out: &mut W, name: &str, kind: &str, help: &str) -> fmt::Result {
    debug_assert!(!help.contains(['\\', '\n']));
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// One sample line: `name{labels,extra} value`, or `name value` without labels.
fn sample<W: fmt::Write>(
    out: &mut W,
    name: &str,
    labels: &[(&str, &str)],
    extra: &[(&str, &str)],
    value: impl fmt::Display,
) -> fmt::Result {
    out.write_str(name)?;
    let mut pairs = labels.iter().chain(extra).peekable();
    if pairs.peek().is_some() {
        out.write_char('{')?;
        for (i, (label, value)) in pairs.enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            write!(out, "{label}=\"")?;
            escape_label_value(out, value)?;
            out.write_char('"')?;
        }
        out.write_char('}')?;
    }
    writeln!(out, " {value}")
}

/// The `_bucket` (cumulative), `_sum` (seconds) and `_count` lines of one
/// histogram series. `_count` is the `+Inf` bucket by construction.
fn write_histogram<W: fmt::Write>(
    out: &mut W,
    name: &str,
    labels: &[(&str, &str)],
    h: &HistogramSnapshot,
) -> fmt::Result {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, &n) in h.counts.iter().enumerate() {
        cumulative += n;
        let le = h
            .bounds
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |&us| MicrosAsSeconds(us).to_string());
        sample(out, &bucket, labels, &[("le", &le)], cumulative)?;
    }
    sample(
        out,
        &format!("{name}_sum"),
        labels,
        &[],
        MicrosAsSeconds(h.sum_us),
    )?;
    sample(out, &format!("{name}_count"), labels, &[], cumulative)
}

/// Writes a label value escaped per the text format: `\` → `\\`, `"` → `\"`,
/// newline → `\n`.
fn escape_label_value<W: fmt::Write>(out: &mut W, value: &str) -> fmt::Result {
    for c in value.chars() {
        match c {
            '\\' => out.write_str("\\\\")?,
            '"' => out.write_str("\\\"")?,
            '\n' => out.write_str("\\n")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Microseconds displayed as exact decimal seconds, without float rounding:
/// `50` → `0.00005`, `2_500_000` → `2.5`, `1_000_000` → `1`.
struct MicrosAsSeconds(u64);

impl fmt::Display for MicrosAsSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if micros == 0 {
            return write!(f, "{secs}");
        }
        let frac = format!("{micros:06}");
        write!(f, "{secs}.{}", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests;
