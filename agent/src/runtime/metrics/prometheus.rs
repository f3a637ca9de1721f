//! The Prometheus text exposition format (0.0.4) of a [`Metrics`] registry: one family per
//! counter and histogram, series sorted by app then version, label values escaped, histogram
//! buckets cumulative with `+Inf` equal to `_count`, seconds written as exact decimals.

use std::fmt;
use std::sync::Arc;

use super::{
    AppMetrics, AppMetricsSnapshot, HistogramSnapshot, Metrics, ReleaseMetrics,
    ReleaseMetricsSnapshot,
};

impl Metrics {
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
}

/// `# HELP` and `# TYPE` of one family. `help` must hold no `\` or newline.
pub(crate) fn header<W: fmt::Write>(
    out: &mut W,
    name: &str,
    kind: &str,
    help: &str,
) -> fmt::Result {
    debug_assert!(!help.contains(['\\', '\n']));
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// One sample line: `name{labels,extra} value`, or `name value` without labels.
pub(crate) fn sample<W: fmt::Write>(
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
pub(super) fn escape_label_value<W: fmt::Write>(out: &mut W, value: &str) -> fmt::Result {
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
pub(super) struct MicrosAsSeconds(pub(super) u64);

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
