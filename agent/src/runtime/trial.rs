//! The trial of a freshly swapped release: what its requests did, and the verdict.
//!
//! A release on trial serves real traffic. Every request it handles is counted here by the HTTP
//! front ([`TrialCounters::record`]); the supervisor asks for a [`Verdict`] whenever something
//! was counted and when the window's time is up. A trap or a timeout fails the trial at once; a
//! 5xx rate above the threshold (over at least `min_requests`) fails it; otherwise it passes
//! once `requests` requests completed or `secs` passed, whichever comes first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `[trial]` section of the agent configuration: the defaults of the trial window (a release
/// may set its own window) and the failure thresholds.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrialConfig {
    /// The trial passes after this many requests...
    pub requests: u32,
    /// ...or after this many seconds, whichever comes first. A 0 turns that criterion off;
    /// both 0 commits at once, without a trial.
    pub secs: u32,
    /// The trial fails when more than this share of its requests got a 5xx...
    pub max_error_rate: f64,
    /// ...counted once at least this many requests completed.
    pub min_requests: u32,
    /// Deadline of the smoke check before the swap (instantiation and the health request).
    pub smoke_timeout_ms: u64,
}

impl Default for TrialConfig {
    fn default() -> Self {
        TrialConfig {
            requests: 1_000,
            secs: 30,
            max_error_rate: 0.5,
            min_requests: 10,
            smoke_timeout_ms: 5_000,
        }
    }
}

/// One trial's window (`requests`, `secs`: the `[trial]` keys and the release's
/// `trial_requests`, `trial_secs`) and thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialPolicy {
    pub requests: u64,
    pub secs: u64,
    pub max_error_rate: f64,
    pub min_requests: u64,
}

impl TrialPolicy {
    /// The time criterion as a duration (zero: off).
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.secs)
    }

    /// The agent's thresholds with the window the release asks for (else the agent's).
    pub fn resolve(cfg: &TrialConfig, policy: &fleetcast_protocol::RunPolicy) -> TrialPolicy {
        TrialPolicy {
            requests: u64::from(policy.trial_requests.unwrap_or(cfg.requests)),
            secs: u64::from(policy.trial_secs.unwrap_or(cfg.secs)),
            max_error_rate: cfg.max_error_rate,
            min_requests: u64::from(cfg.min_requests.max(1)),
        }
    }

    /// No trial at all: commit on swap.
    pub fn is_none(&self) -> bool {
        self.requests == 0 && self.secs == 0
    }
}

/// What a release on trial did so far. Shared between the HTTP front and the supervisor.
#[derive(Debug, Default)]
pub struct TrialCounters {
    requests: AtomicU64,
    server_errors: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    /// The first trap or timeout, for the reason.
    first_failure: std::sync::Mutex<Option<String>>,
}

/// How one request ended, as far as the trial cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A response head with this status (from the guest or, for limits, from the agent).
    Status(u16),
    /// The guest trapped (reason).
    Trap(String),
    /// The guest did not answer in time (reason).
    Timeout(String),
}

/// A snapshot of [`TrialCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrialCount {
    pub requests: u64,
    pub server_errors: u64,
    pub traps: u64,
    pub timeouts: u64,
}

/// The verdict on a trial so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Continue,
    Pass,
    Fail(String),
}

impl TrialCounters {
    /// Counts one finished request.
    pub fn record(&self, outcome: &RequestOutcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let failure = match outcome {
            RequestOutcome::Status(s) if *s >= 500 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
            RequestOutcome::Status(_) => None,
            RequestOutcome::Trap(r) => {
                self.traps.fetch_add(1, Ordering::Relaxed);
                Some(r)
            }
            RequestOutcome::Timeout(r) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Some(r)
            }
        };
        if let Some(reason) = failure {
            let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| reason.clone());
        }
    }

    pub fn count(&self) -> TrialCount {
        TrialCount {
            requests: self.requests.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    /// The verdict after `elapsed` on trial.
    pub fn verdict(&self, policy: &TrialPolicy, elapsed: Duration) -> Verdict {
        let c = self.count();
        for (n, what) in [(c.traps, "trapped"), (c.timeouts, "timed out")] {
            if n > 0 {
                let first = self
                    .first_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default();
                return Verdict::Fail(format!(
                    "{what} on {n} of {} requests during its trial ({first})",
                    c.requests
                ));
            }
        }
        if c.requests >= policy.min_requests {
            let rate = c.server_errors as f64 / c.requests as f64;
            if rate > policy.max_error_rate {
                return Verdict::Fail(format!(
                    "{} of {} requests during its trial were 5xx ({:.0}%, over the {:.0}% limit)",
                    c.server_errors,
                    c.requests,
                    rate * 100.0,
                    policy.max_error_rate * 100.0
                ));
            }
        }
        // A zero criterion is off (both zero: no trial at all).
        let enough = policy.requests > 0 && c.requests >= policy.requests;
        if enough || (policy.secs != 0 && elapsed >= policy.window()) {
            return Verdict::Pass;
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TrialPolicy {
        TrialPolicy {
            requests: 20,
            secs: 30,
            max_error_rate: 0.5,
            min_requests: 10,
        }
    }

    #[test]
    fn passes_after_enough_good_requests_or_the_window() {
        let c = TrialCounters::default();
        for _ in 0..19 {
            c.record(&RequestOutcome::Status(200));
        }
        let p = policy();
        assert_eq!(c.verdict(&p, Duration::from_secs(1)), Verdict::Continue);
        assert_eq!(c.verdict(&p, Duration::from_secs(30)), Verdict::Pass);
        c.record(&RequestOutcome::Status(404));
        assert_eq!(c.verdict(&p, Duration::from_secs(1)), Verdict::Pass);
    }

    #[test]
    fn a_trap_or_timeout_fails_at_once_with_its_reason() {
        let c = TrialCounters::default();
        c.record(&RequestOutcome::Status(200));
        c.record(&RequestOutcome::Trap("wasm trap: unreachable".into()));
        c.record(&RequestOutcome::Trap("second".into()));
        match c.verdict(&policy(), Duration::ZERO) {
            Verdict::Fail(r) => {
                assert!(r.contains("trapped on 2 of 3"), "{r}");
                assert!(r.contains("unreachable") && !r.contains("second"), "{r}");
            }
            v => panic!("{v:?}"),
        }
        let c = TrialCounters::default();
        c.record(&RequestOutcome::Timeout("no response within 100ms".into()));
        assert!(
            matches!(c.verdict(&policy(), Duration::ZERO), Verdict::Fail(r) if r.contains("timed out"))
        );
    }

    #[test]
    fn the_error_rate_counts_only_over_the_minimum() {
        let c = TrialCounters::default();
        for _ in 0..9 {
            c.record(&RequestOutcome::Status(503));
        }
        assert_eq!(c.verdict(&policy(), Duration::ZERO), Verdict::Continue);
        c.record(&RequestOutcome::Status(500));
        assert!(
            matches!(c.verdict(&policy(), Duration::ZERO), Verdict::Fail(r) if r.contains("10 of 10"))
        );
        let c = TrialCounters::default();
        for i in 0..10 {
            c.record(&RequestOutcome::Status(if i < 5 { 500 } else { 200 }));
        }
        assert_eq!(
            c.verdict(&policy(), Duration::ZERO),
            Verdict::Continue,
            "50% is not over 50%"
        );
    }

    #[test]
    fn a_zero_window_means_no_trial() {
        let none = TrialPolicy::resolve(
            &TrialConfig {
                requests: 0,
                secs: 0,
                ..TrialConfig::default()
            },
            &fleetcast_protocol::RunPolicy::default(),
        );
        assert!(none.is_none());
        let asked = TrialPolicy::resolve(
            &TrialConfig::default(),
            &fleetcast_protocol::RunPolicy {
                trial_requests: Some(5),
                trial_secs: Some(2),
                ..Default::default()
            },
        );
        assert_eq!((asked.requests, asked.secs), (5, 2));
    }
}
