//! Per-app limits. The agent's `[runtime]` settings are both the defaults and the maxima; a
//! release's [`RunPolicy`] can only tighten them ([`Limits::resolve`]).

use std::time::Duration;

use fleetcast_protocol::RunPolicy;

use super::RuntimeConfig;

/// The limits one release runs under on this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Linear memory per instance.
    pub max_memory_bytes: u64,
    /// Wall-clock deadline per request (to the response head).
    pub request_timeout_ms: u64,
    /// Fuel per request; `None` when the agent does not meter fuel.
    pub fuel: Option<u64>,
    /// Requests executed at once; more are answered 503 at once (no queue).
    pub max_concurrent: u32,
    /// Largest request body; larger is 413.
    pub max_body_bytes: u64,
}

impl Limits {
    /// The agent's own limits: what a release that asks for nothing gets.
    pub fn agent(cfg: &RuntimeConfig) -> Limits {
        Limits {
            max_memory_bytes: cfg.max_memory_mib << 20,
            request_timeout_ms: cfg.request_timeout_ms,
            fuel: cfg.fuel,
            max_concurrent: cfg.max_concurrent.min(cfg.max_instances),
            max_body_bytes: cfg.max_body_bytes,
        }
    }

    /// The agent's limits tightened by what `policy` asks. A release may ask for less than the
    /// agent allows, never more: each value is the smaller of the two. A release's fuel is only
    /// enforced on an agent that meters fuel (`runtime.fuel` set).
    pub fn resolve(cfg: &RuntimeConfig, policy: &RunPolicy) -> Limits {
        let agent = Limits::agent(cfg);
        let min = |a: u64, r: Option<u64>| r.map_or(a, |r| a.min(r.max(1)));
        Limits {
            max_memory_bytes: min(
                agent.max_memory_bytes,
                policy.max_memory_mib.map(|m| u64::from(m) << 20),
            ),
            request_timeout_ms: min(
                agent.request_timeout_ms,
                policy.request_timeout_ms.map(u64::from),
            ),
            fuel: agent.fuel.map(|a| min(a, policy.fuel)),
            max_concurrent: min(
                u64::from(agent.max_concurrent),
                policy.max_concurrent.map(u64::from),
            ) as u32,
            max_body_bytes: min(agent.max_body_bytes, policy.max_body_bytes),
        }
    }

    /// [`Limits::request_timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_can_tighten_but_never_loosen() {
        let cfg = RuntimeConfig {
            max_memory_mib: 64,
            request_timeout_ms: 1_000,
            max_concurrent: 8,
            max_body_bytes: 1 << 20,
            fuel: Some(1_000_000),
            ..RuntimeConfig::default()
        };
        assert_eq!(
            Limits::resolve(&cfg, &RunPolicy::default()),
            Limits::agent(&cfg)
        );
        let tighter = RunPolicy {
            max_memory_mib: Some(16),
            request_timeout_ms: Some(200),
            fuel: Some(10),
            max_concurrent: Some(2),
            max_body_bytes: Some(1024),
            ..RunPolicy::default()
        };
        let l = Limits::resolve(&cfg, &tighter);
        assert_eq!(
            (
                l.max_memory_bytes,
                l.request_timeout_ms,
                l.fuel,
                l.max_concurrent,
                l.max_body_bytes
            ),
            (16 << 20, 200, Some(10), 2, 1024)
        );
        let greedy = RunPolicy {
            max_memory_mib: Some(4096),
            request_timeout_ms: Some(600_000),
            fuel: Some(u64::MAX),
            max_concurrent: Some(10_000),
            max_body_bytes: Some(u64::MAX),
            ..RunPolicy::default()
        };
        assert_eq!(Limits::resolve(&cfg, &greedy), Limits::agent(&cfg));
        // Without fuel metering on the agent, a release's fuel is not enforced.
        let unmetered = RuntimeConfig { fuel: None, ..cfg };
        assert_eq!(Limits::resolve(&unmetered, &tighter).fuel, None);
    }
}
