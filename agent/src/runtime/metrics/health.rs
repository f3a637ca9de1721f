//! A release's health as a staged rollout counts it ([`Health`]: requests, 5xx, traps,
//! timeouts, a latency histogram with the rollout's fixed buckets,
//! [`fleetcast_protocol::rollout::LATENCY_BUCKETS_MS`]), and
//! the per-app marks taken at each swap from which "since it was swapped in" and "what the
//! release it replaced served" are read.
//!
//! **Invariants.** Only requests that say something about the release are counted (load
//! shedding and oversized bodies are not, as for trials); every counted request lands in
//! exactly one latency slot ([`latency_slot`]), so `latency` sums to `requests`. A mark's
//! `old` is frozen at the swap; its `base` is the new release's counts at the swap, so the
//! counts since then never include requests served before it (a release served earlier in
//! this process under the same version starts again from the swap).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetcast_protocol::Digest;
use fleetcast_protocol::rollout::{Health, LATENCY_SLOTS, latency_slot};

use super::ReleaseMetrics;

/// [`Health`] counted with atomics: one relaxed add per field per request, no lock.
#[derive(Debug, Default)]
pub struct HealthCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    latency: [AtomicU64; LATENCY_SLOTS],
}

/// What a request that reached the release did, as [`HealthCounters::record`] counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The client got this status (a 5xx counts as an error).
    Status(u16),
    /// The guest trapped (an error).
    Trap,
    /// The request hit its deadline (an error).
    Timeout,
}

impl HealthCounters {
    /// One request that reached the release, answered after `latency`.
    pub fn record(&self, served: Served, latency: Duration) {
        let relaxed = Ordering::Relaxed;
        self.requests.fetch_add(1, relaxed);
        let error = match served {
            Served::Status(s) => s >= 500,
            Served::Trap => {
                self.traps.fetch_add(1, relaxed);
                true
            }
            Served::Timeout => {
                self.timeouts.fetch_add(1, relaxed);
                true
            }
        };
        if error {
            self.errors.fetch_add(1, relaxed);
        }
        self.latency[latency_slot(latency)].fetch_add(1, relaxed);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> Health {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut latency = [0; LATENCY_SLOTS];
        for (l, c) in latency.iter_mut().zip(&self.latency) {
            *l = load(c);
        }
        Health {
            requests: load(&self.requests),
            errors: load(&self.errors),
            traps: load(&self.traps),
            timeouts: load(&self.timeouts),
            latency,
        }
    }
}

/// Taken when a release goes into an app's slot: which release, its counters, its counts at
/// that moment, and what the release it replaced had served since its own swap.
#[derive(Clone, Debug)]
pub struct SwapMark {
    pub digest: Digest,
    pub metrics: Arc<ReleaseMetrics>,
    /// The new release's counts at the swap.
    pub base: Health,
    /// The replaced release's counts from its swap to this one (zeros: nothing served before,
    /// in this process).
    pub old: Health,
}

impl SwapMark {
    /// The mark after `digest` (counted in `metrics`) replaced what `prev` marked. The same
    /// release put back in its slot (the same counters) keeps its mark.
    pub fn after(prev: Option<&SwapMark>, digest: Digest, metrics: Arc<ReleaseMetrics>) -> Self {
        if let Some(p) = prev.filter(|p| p.digest == digest && Arc::ptr_eq(&p.metrics, &metrics)) {
            return p.clone();
        }
        SwapMark {
            digest,
            base: metrics.health(),
            old: prev.map(SwapMark::since).unwrap_or_default(),
            metrics,
        }
    }

    /// What the marked release served since its swap.
    pub fn since(&self) -> Health {
        self.metrics.health().since(&self.base)
    }
}

/// One app's health as [`crate::runtime::Runtime::health`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppHealth {
    pub app: String,
    /// The release serving.
    pub digest: Digest,
    /// What it served since it was swapped in here.
    pub new: Health,
    /// What the release it replaced served, until the swap.
    pub old: Health,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcast_protocol::rollout::LATENCY_BUCKETS_MS;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requests_count_as_the_rollout_counts_them() {
        let c = HealthCounters::default();
        c.record(Served::Status(200), ms(3));
        c.record(Served::Status(404), Duration::from_micros(900));
        c.record(Served::Status(503), ms(30));
        c.record(Served::Trap, ms(1500));
        c.record(Served::Timeout, ms(5000));
        let h = c.snapshot();
        assert_eq!((h.requests, h.errors, h.traps, h.timeouts), (5, 3, 1, 1));
        // The rollout's own buckets: ≤1, ≤2, ≤5 … ≤2000 ms, then slower.
        assert_eq!(LATENCY_BUCKETS_MS[..3], [1, 2, 5]);
        let mut want = [0u64; LATENCY_SLOTS];
        for d in [
            ms(3),
            Duration::from_micros(900),
            ms(30),
            ms(1500),
            ms(5000),
        ] {
            want[latency_slot(d)] += 1;
        }
        assert_eq!(h.latency, want);
        assert_eq!(
            (h.latency[0], h.latency[2], h.latency[LATENCY_SLOTS - 1]),
            (1, 1, 1)
        );
        assert_eq!(h.latency.iter().sum::<u64>(), h.requests);
        assert_eq!(h.error_rate_bp(), 6000);
    }

    fn served(m: &ReleaseMetrics, n: u64, status: u16) {
        for _ in 0..n {
            m.record_served(Served::Status(status), ms(4));
        }
    }

    #[test]
    fn new_counts_since_the_swap_and_old_is_frozen_at_it() {
        let (d1, d2) = (Digest([1; 32]), Digest([2; 32]));
        let (v1, v2) = (
            Arc::new(ReleaseMetrics::new()),
            Arc::new(ReleaseMetrics::new()),
        );
        // v1 served 10 before it was swapped in (an earlier stint in this process).
        served(&v1, 10, 200);
        let m1 = SwapMark::after(None, d1, v1.clone());
        assert_eq!(m1.old, Health::default(), "nothing served before it");
        served(&v1, 3, 500);
        assert_eq!((m1.since().requests, m1.since().errors), (3, 3));
        // v2, which served 2 earlier, replaces it.
        served(&v2, 2, 200);
        let m2 = SwapMark::after(Some(&m1), d2, v2.clone());
        assert_eq!(
            (m2.old.requests, m2.old.errors),
            (3, 3),
            "v1 since its swap"
        );
        assert_eq!(
            m2.since(),
            Health::default(),
            "v2 since its swap: nothing yet"
        );
        served(&v2, 4, 200);
        served(&v1, 7, 200); // v1's stragglers finish after the swap: not in `old`
        assert_eq!(m2.since().requests, 4);
        assert_eq!(m2.old.requests, 3);
        // The same release put back in its slot keeps its mark.
        let again = SwapMark::after(Some(&m2), d2, v2.clone());
        assert_eq!((again.since().requests, again.old.requests), (4, 3));
        // Going back to v1 (a revert): v1 counts from the revert, v2's 4 are the old.
        let back = SwapMark::after(Some(&again), d1, v1.clone());
        assert_eq!((back.since().requests, back.old.requests), (0, 4));
    }
}
