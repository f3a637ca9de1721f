//! Fixed-bucket latency histograms updated with atomics only, their snapshots and quantiles,
//! and the bucket bounds the agent uses. Nothing here measures time: callers pass durations.

use std::sync::atomic::{AtomicU64, Ordering};
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
