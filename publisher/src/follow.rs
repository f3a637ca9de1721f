//! Following a head across the fleet: the fleet's tallies (counted up the broadcast tree to the
//! peer agent) for live progress, the census (an echo wave that counts every live agent) for
//! "N of M". This module decides, from the values seen so far, whether the goal is reached,
//! whether the fleet refused, and what to say; the IO loop lives in `commands::publish`.
//! Pure: no clock (whether the tally has been still long enough is an argument), no IO.

use std::collections::BTreeSet;
use std::time::Duration;

use fleetcast_protocol::wire::{Census, Tally};
use fleetcast_protocol::{AppName, NodeId};
use semver::Version;

use crate::error::CliError;
use crate::table::plural;
use crate::target::secs;

/// Missing agents named in a message before "and N more".
pub const MISSING_SHOWN: usize = 5;

/// The head followed and what is known of it so far.
#[derive(Clone, Debug)]
pub struct Follow {
    pub app: AppName,
    pub version: Version,
    pub seq: u64,
    /// `--expect N`: done once N agents run it (else: once every live agent does).
    pub expect: Option<u32>,
    /// The latest fleet tally for the head.
    pub tally: Tally,
    /// The latest census.
    pub census: Option<Census>,
    /// Why there is no census (the agent did not answer one): decisions fall back to the tally.
    pub census_error: Option<String>,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    /// The goal is reached.
    Done,
    /// Every agent is accounted for and some failed or rejected the head (exit 1).
    Refused(CliError),
}

impl Follow {
    pub fn new(app: AppName, version: Version, seq: u64, expect: Option<u32>) -> Follow {
        Follow {
            app,
            version,
            seq,
            expect,
            tally: Tally::default(),
            census: None,
            census_error: None,
        }
    }

    /// Takes `t` if it is a newer count of this head; says whether the numbers changed.
    pub fn on_tally(&mut self, t: Tally) -> bool {
        // Frames travel on separate streams and may arrive out of order: only a count newer
        // than the one held counts.
        if t.app.as_ref() != Some(&self.app) || t.seq != self.seq || t.version < self.tally.version
        {
            return false;
        }
        let moved = (t.active, t.failed, t.rejected)
            != (self.tally.active, self.tally.failed, self.tally.rejected);
        self.tally = t;
        moved
    }

    /// Takes a census. An incomplete one (neighbours that did not answer, or an agent that
    /// answered with itself alone under its rate cap) does not replace a complete one.
    pub fn on_census(&mut self, c: Census) {
        if c.unanswered > 0 && self.census.as_ref().is_some_and(|h| h.unanswered == 0) {
            return;
        }
        self.census = Some(c);
        self.census_error = None;
    }

    /// The census did not come: without one yet, decisions fall back to the tally.
    pub fn on_census_failed(&mut self, why: String) {
        if self.census.is_none() {
            self.census_error = Some(why);
        }
    }

    /// Whether the census is known not to work (no point in asking again).
    pub fn census_unavailable(&self) -> bool {
        self.census.is_none() && self.census_error.is_some()
    }

    /// Agents known to run the head: the census's live count, or the tally's if higher (an
    /// agent may have activated since the census), never more than a complete census counted.
    pub fn running(&self) -> u32 {
        match (&self.census, self.fleet_size()) {
            (Some(c), Some(m)) => c.focus_active.max(self.tally.active).min(m),
            (Some(c), None) => c.focus_active.max(self.tally.active),
            (None, _) => self.tally.active,
        }
    }

    /// The live fleet's size, when a complete census counted it: never fewer than the agents
    /// that have reported on the head since (a census taken before an agent joined is stale).
    pub fn fleet_size(&self) -> Option<u32> {
        let reported = self.tally.total().min(u32::MAX as u64) as u32;
        self.census
            .as_ref()
            .filter(|c| c.unanswered == 0)
            .map(|c| c.agents.max(reported))
    }

    fn failures(&self) -> u32 {
        self.tally.failed + self.tally.rejected
    }

    /// Whether the goal is reached, or the fleet refused. `settled`: the tally has not moved for
    /// a while (only used without a census).
    pub fn verdict(&self, settled: bool) -> Verdict {
        let reached = match (self.expect, &self.census) {
            (Some(n), _) => self.tally.active >= n || self.running() >= n,
            (None, Some(c)) => c.unanswered == 0 && c.agents > 0 && c.focus_active >= c.agents,
            (None, None) => false,
        };
        if reached {
            return Verdict::Done;
        }
        let accounted = match &self.census {
            Some(c) => c.unanswered == 0 && self.tally.total() >= c.agents as u64,
            None => self.census_unavailable() && settled,
        };
        if self.failures() > 0 && accounted {
            return Verdict::Refused(CliError::refused(self.failed_line()));
        }
        if self.expect.is_none() && self.census_unavailable() && settled {
            return Verdict::Done;
        }
        Verdict::Wait
    }

    /// "3 of 3 agents run hello 2.0.0" (or what the tally alone says).
    pub fn summary(&self) -> String {
        let (app, v) = (&self.app, &self.version);
        match &self.census {
            Some(c) if c.unanswered == 0 => {
                let m = self.fleet_size().unwrap_or(c.agents);
                format!("{} of {m} agents run {app} {v}", self.running())
            }
            Some(c) => format!(
                "{} run {app} {v}; the census counted {} ({} did not answer in time: their agents are not counted)",
                plural(self.running(), "agent"),
                plural(c.agents, "agent"),
                plural(c.unanswered, "neighbour")
            ),
            None => {
                let why = self.census_error.as_deref().unwrap_or("no census taken");
                format!(
                    "{} report {app} {v} active by the fleet's tally (how many agents the fleet has is unknown: {why})",
                    plural(self.tally.active, "agent")
                )
            }
        }
    }

    /// The agents that failed or rejected the head, as "node: reason", from the tally's samples
    /// and the census's missing list (each node once).
    pub fn failed_agents(&self) -> Vec<String> {
        let mut seen: BTreeSet<NodeId> = BTreeSet::new();
        let mut out = Vec::new();
        for r in &self.tally.samples {
            if seen.insert(r.node) {
                out.push(format!("{}: {}", r.node.short(), r.outcome));
            }
        }
        for m in self.census.iter().flat_map(|c| &c.missing) {
            let failed = ["failed", "rejected", "reverted"]
                .iter()
                .any(|w| m.why.starts_with(w));
            if failed && seen.insert(m.node) {
                out.push(format!("{}: {}", m.node.short(), m.why));
            }
        }
        out
    }

    /// Exit 1's line: the summary and who failed.
    pub fn failed_line(&self) -> String {
        let agents = self.failed_agents();
        let n = self.failures();
        let mut s = format!(
            "{}; {} failed or rejected it",
            self.summary(),
            plural(n, "agent")
        );
        if !agents.is_empty() {
            s.push_str(": ");
            s.push_str(&bounded(&agents, n as usize));
        }
        s
    }

    /// The agents the census saw not running the head, with what they do instead.
    pub fn missing_line(&self) -> Option<String> {
        let c = self.census.as_ref()?;
        let not_running = c.agents.saturating_sub(self.running()) as usize;
        if not_running == 0 {
            return None;
        }
        let named: Vec<String> = c
            .missing
            .iter()
            .map(|m| {
                let addr = m.addr.map(|a| format!(" ({a})")).unwrap_or_default();
                format!("{}{addr}: {}", m.node.short(), m.why)
            })
            .collect();
        if named.is_empty() {
            return Some(format!(
                "{not_running} not running it (the census named none)"
            ));
        }
        Some(format!("missing: {}", bounded(&named, not_running)))
    }

    /// The error when `--timeout` ran out: exit 1 if some agents failed, else exit 4.
    pub fn timed_out(&self, timeout: Duration) -> CliError {
        if self.failures() > 0 {
            return CliError::refused(format!("{} within {}", self.failed_line(), secs(timeout)));
        }
        let (app, v) = (&self.app, &self.version);
        let head = match (self.expect, &self.census) {
            (Some(n), _) => format!(
                "only {} of the {n} expected agents run {app} {v} after {}",
                self.running(),
                secs(timeout)
            ),
            (None, Some(_)) => format!("{} after {}", self.summary(), secs(timeout)),
            (None, None) => format!("{} after {}", self.summary(), secs(timeout)),
        };
        let missing = self
            .missing_line()
            .map(|m| format!("; {m}"))
            .unwrap_or_default();
        CliError::timeout(format!(
            "{head}{missing}; raise --timeout, or see `fleetcast status` on a missing agent"
        ))
    }

    /// The one line after a push without `--wait`, once the peer runs the head and one census
    /// was taken (or failed).
    pub fn first_line(&self) -> String {
        let (app, v) = (&self.app, &self.version);
        let head = format!("{app} {v} active on the peer agent");
        let Some(c) = &self.census else {
            let why = self.census_error.as_deref().unwrap_or("no census taken");
            return format!(
                "{head}; how many agents run it is unknown: {why} (--wait follows the agents' reports)"
            );
        };
        let running = self.running();
        if c.unanswered > 0 {
            return format!(
                "{head}; {} run it so far; the census counted {} ({} did not answer in time) (--wait follows the agents)",
                plural(running, "agent"),
                plural(c.agents, "agent"),
                plural(c.unanswered, "neighbour")
            );
        }
        if running >= c.agents {
            return format!("{head}; {running} of {} agents run it", c.agents);
        }
        let failed = self.failed_agents();
        let rest = if failed.is_empty() {
            "the rest are fetching".to_string()
        } else {
            format!(
                "the rest are fetching, or failed ({})",
                bounded(&failed, failed.len())
            )
        };
        format!(
            "{head}; {running} of {} agents so far ({rest}; --wait follows them)",
            c.agents
        )
    }
}

/// At most [`MISSING_SHOWN`] of `items`, then "and N more" up to `total`.
fn bounded(items: &[String], total: usize) -> String {
    let shown: Vec<&str> = items
        .iter()
        .take(MISSING_SHOWN)
        .map(|s| s.as_str())
        .collect();
    let more = total.saturating_sub(shown.len());
    let mut s = shown.join(", ");
    if more > 0 {
        s.push_str(&format!(", and {more} more"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcast_protocol::Digest;
    use fleetcast_protocol::wire::{Missing, Outcome, Report};

    fn follow(expect: Option<u32>) -> Follow {
        Follow::new(
            AppName::new("hello").unwrap(),
            "2.0.0".parse().unwrap(),
            5,
            expect,
        )
    }

    fn tally(version: u64, active: u32, failed: u32, samples: Vec<Report>) -> Tally {
        Tally {
            app: Some(AppName::new("hello").unwrap()),
            seq: 5,
            active,
            failed,
            rejected: 0,
            samples,
            version,
            ..Tally::default()
        }
    }

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn census(agents: u32, active: u32, missing: Vec<Missing>) -> Census {
        Census {
            agents,
            unanswered: 0,
            entries: vec![],
            focus_active: active,
            missing,
        }
    }

    fn missing(i: u8, why: &str) -> Missing {
        Missing {
            node: node(i),
            addr: Some(format!("127.0.0.1:74{i:02}").parse().unwrap()),
            seq: 4,
            why: why.into(),
        }
    }

    fn failed_report(i: u8) -> Report {
        Report {
            node: node(i),
            app: AppName::new("hello").unwrap(),
            seq: 5,
            version: "2.0.0".parse().unwrap(),
            digest: Digest([0; 32]),
            outcome: Outcome::Failed("smoke check failed".into()),
        }
    }

    #[test]
    fn done_when_every_live_agent_runs_it() {
        let mut f = follow(None);
        assert_eq!(f.verdict(true), Verdict::Wait, "nothing known yet");
        assert!(f.on_tally(tally(1, 1, 0, vec![])));
        f.on_census(census(
            3,
            1,
            vec![missing(2, "fetching seq 5 (3 of 9 chunks)")],
        ));
        assert_eq!(f.verdict(false), Verdict::Wait);
        assert!(f.on_tally(tally(2, 3, 0, vec![])));
        // The tally alone does not say the fleet has 3 agents; the census does.
        f.on_census(census(3, 3, vec![]));
        assert_eq!(f.verdict(false), Verdict::Done);
        assert_eq!(f.summary(), "3 of 3 agents run hello 2.0.0");
        // A subtree that did not answer: not all of the fleet is counted.
        let mut g = follow(None);
        g.on_census(Census {
            unanswered: 1,
            ..census(3, 3, vec![])
        });
        assert_eq!(g.verdict(false), Verdict::Wait);
        // An incomplete count (an agent answering with itself alone under its rate cap) does
        // not replace a complete one.
        f.on_census(Census {
            unanswered: 3,
            ..census(1, 1, vec![])
        });
        assert_eq!(f.summary(), "3 of 3 agents run hello 2.0.0");
        // Without a complete one, an incomplete count says what it is, and the tally's number
        // is not cut down to it.
        let mut h = follow(Some(4));
        h.on_tally(tally(1, 4, 0, vec![]));
        h.on_census(Census {
            unanswered: 2,
            ..census(1, 1, vec![])
        });
        assert_eq!(h.verdict(false), Verdict::Done);
        assert_eq!(h.fleet_size(), None);
        assert_eq!(
            h.summary(),
            "4 agents run hello 2.0.0; the census counted 1 agent (2 neighbours did not answer in time: their agents are not counted)"
        );
    }

    #[test]
    fn tallies_out_of_order_or_for_another_head_are_ignored() {
        let mut f = follow(None);
        assert!(f.on_tally(tally(5, 2, 0, vec![])));
        assert!(!f.on_tally(tally(4, 1, 0, vec![])), "older");
        assert_eq!(f.tally.active, 2);
        let mut other = tally(9, 7, 0, vec![]);
        other.seq = 4;
        assert!(!f.on_tally(other));
        assert!(!f.on_tally(tally(6, 2, 0, vec![])), "same numbers");
    }

    #[test]
    fn expect_decides_when_given() {
        let mut f = follow(Some(3));
        f.on_census(census(2, 2, vec![]));
        assert_eq!(
            f.verdict(true),
            Verdict::Wait,
            "every live agent runs it, but 3 were expected"
        );
        f.on_tally(tally(1, 3, 0, vec![]));
        assert_eq!(f.verdict(false), Verdict::Done);
        let e = follow(Some(3)).timed_out(Duration::from_secs(60));
        assert_eq!(e.code(), 4);
        assert!(
            e.message
                .starts_with("only 0 of the 3 expected agents run hello 2.0.0 after 60s"),
            "{e}"
        );
    }

    #[test]
    fn failures_are_exit_1_once_every_agent_is_accounted_for() {
        let mut f = follow(None);
        f.on_tally(tally(1, 2, 1, vec![failed_report(3)]));
        f.on_census(census(
            4,
            2,
            vec![
                missing(3, "failed: smoke check failed"),
                missing(4, "fetching"),
            ],
        ));
        assert_eq!(f.verdict(true), Verdict::Wait, "agent 4 is still fetching");
        f.on_tally(tally(2, 3, 1, vec![failed_report(3)]));
        match f.verdict(false) {
            Verdict::Refused(e) => {
                assert_eq!(e.code(), 1);
                assert!(e.message.contains("1 agent failed or rejected it"), "{e}");
                assert!(
                    e.message
                        .contains(&format!("{}: failed: smoke check failed", node(3).short())),
                    "{e}"
                );
                assert_eq!(e.message.matches(&node(3).short()).count(), 1, "once: {e}");
            }
            v => panic!("{v:?}"),
        }
        // At the timeout, known failures make it exit 1 rather than 4.
        let mut g = follow(None);
        g.on_tally(tally(1, 1, 1, vec![failed_report(3)]));
        assert_eq!(g.timed_out(Duration::from_secs(5)).code(), 1);
    }

    #[test]
    fn a_timeout_names_a_bounded_sample_of_the_missing() {
        let mut f = follow(None);
        f.on_tally(tally(1, 2, 0, vec![]));
        let many: Vec<Missing> = (10..18)
            .map(|i| missing(i, "fetching seq 5 (3 of 9 chunks)"))
            .collect();
        f.on_census(census(12, 2, many));
        let e = f.timed_out(Duration::from_secs(60));
        assert_eq!(e.code(), 4);
        assert!(
            e.message.starts_with(&format!(
                "2 of 12 agents run hello 2.0.0 after 60s; missing: {} (127.0.0.1:7410): fetching seq 5 (3 of 9 chunks), ",
                node(10).short()
            )),
            "{e}"
        );
        assert!(
            e.message.contains(", and 5 more;"),
            "10 missing, 5 named: {e}"
        );
    }

    #[test]
    fn without_a_census_the_tally_decides_once_still() {
        let mut f = follow(None);
        f.on_tally(tally(1, 3, 0, vec![]));
        f.on_census_failed("the agent did not answer the census within 2s".into());
        assert!(f.census_unavailable());
        assert_eq!(f.verdict(false), Verdict::Wait);
        assert_eq!(f.verdict(true), Verdict::Done);
        assert!(
            f.summary()
                .starts_with("3 agents report hello 2.0.0 active"),
            "{}",
            f.summary()
        );
        assert!(
            f.summary().contains("did not answer the census"),
            "{}",
            f.summary()
        );
        f.on_tally(tally(2, 3, 1, vec![failed_report(4)]));
        assert!(matches!(f.verdict(true), Verdict::Refused(_)));
        // --expect keeps waiting on the tally.
        let mut g = follow(Some(4));
        g.on_tally(tally(1, 3, 0, vec![]));
        g.on_census_failed("no answer".into());
        assert_eq!(g.verdict(true), Verdict::Wait);
    }

    #[test]
    fn the_first_line_says_n_of_m_or_that_the_count_is_unknown() {
        let mut f = follow(None);
        f.on_census(census(3, 1, vec![missing(2, "fetching")]));
        assert_eq!(
            f.first_line(),
            "hello 2.0.0 active on the peer agent; 1 of 3 agents so far (the rest are fetching; --wait follows them)"
        );
        f.on_census(census(3, 3, vec![]));
        assert_eq!(
            f.first_line(),
            "hello 2.0.0 active on the peer agent; 3 of 3 agents run it"
        );
        let mut g = follow(None);
        g.on_census_failed(
            "the agent did not answer the census within 2s: it may run an older fleetcast-agent"
                .into(),
        );
        assert!(
            g.first_line()
                .contains("how many agents run it is unknown: the agent did not answer the census"),
            "{}",
            g.first_line()
        );
        assert!(!g.first_line().contains("agent(s)"));
    }
}
