//! Staged rollouts on the CLI's side (pure): the flags of `release --waves` and the plan they
//! sign, the app's newest head and the release a halt goes back to (from an agent's status),
//! and the live view's line and `--json` objects. The decisions of a rollout are
//! [`fleetcast_protocol::rollout`]'s ([`Driver`](fleetcast_protocol::rollout::Driver)); the IO
//! loop that feeds it lives in `commands::drive`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use fleetcast_protocol::rollout::{self, Gates, Health, Plan, Verdict};
use fleetcast_protocol::wire::{AppStatus, Position, Tally};
use fleetcast_protocol::{HeadKind, Release};

use crate::error::{CliError, Result};
use crate::json;

/// A duration on the command line: `500ms`, `60s`, `2m`, `1h` (a bare number is seconds).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?} is not a duration like 500ms, 60s, 2m or 1h");
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(bad());
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        let ms = match unit {
            "ms" => 1.0,
            "" | "s" => 1000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(bad()),
        };
        let total = v * ms;
        if !total.is_finite() || total > 7.0 * 24.0 * 3_600_000.0 {
            return Err(format!("{s:?} is longer than a week"));
        }
        Ok(Dur(Duration::from_millis(total.round() as u64)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 || !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if !ms.is_multiple_of(60_000) || ms < 60_000 * 2 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{}m", ms / 60_000)
        }
    }
}

/// `--max-error-rate`: how far the new release's 5xx rate may exceed the old one's, `+1%`
/// (basis points inside), or `off`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RateLimit(pub Option<u32>);

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if matches!(s, "off" | "none") {
            return Ok(RateLimit(None));
        }
        let Some(v) = s.strip_prefix('+') else {
            return Err(format!(
                "{s:?}: write it as +1% (how far the new release's 5xx rate may exceed the old release's on the same agents), or off"
            ));
        };
        rollout::parse_pct(v).map(|bp| RateLimit(Some(u32::from(bp))))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(bp) => write!(
                f,
                "+{}",
                rollout::pct(bp.min(u32::from(rollout::FULL)) as u16)
            ),
        }
    }
}

/// `--max-p99-increase`: how much slower (in percent) the new release's p99 may be than the
/// old one's, `+50%`, or `off`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IncreaseLimit(pub Option<u32>);

impl FromStr for IncreaseLimit {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if matches!(s, "off" | "none") {
            return Ok(IncreaseLimit(None));
        }
        let bad = || {
            format!(
                "{s:?}: write it as +50% (how much the new release's p99 latency may exceed the old release's, in whole percent), or off"
            )
        };
        let v = s.strip_prefix('+').ok_or_else(bad)?;
        let v = v.strip_suffix('%').unwrap_or(v);
        v.parse::<u32>()
            .map(|p| IncreaseLimit(Some(p)))
            .map_err(|_| bad())
    }
}

impl fmt::Display for IncreaseLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(p) => write!(f, "+{p}%"),
        }
    }
}

fn default_bake() -> Dur {
    Dur(Duration::from_millis(Gates::default().bake_ms))
}

fn default_rate() -> RateLimit {
    RateLimit(Gates::default().max_error_rate_bp)
}

fn default_p99() -> IncreaseLimit {
    IncreaseLimit(Gates::default().max_p99_increase_pct)
}

/// `release --waves` and its gates (signed with the head, so any driver judges by them).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Staged rollout (the plan is signed with the head)")]
pub struct WaveArgs {
    /// Release in waves: cumulative shares of the fleet, the last 100% (e.g. 1%,10%,50%,100%).
    /// Each agent knows by itself whether a wave includes it (a hash of the release and its
    /// node id); agents outside the wave fetch and compile the release meanwhile. This process
    /// opens the next wave once the gates pass, and halts and rolls back when one fails
    /// (exit 5). Without --waves: every agent at once.
    #[arg(long, value_name = "PCT,PCT,...")]
    pub waves: Option<String>,
    /// How long each wave runs, once every agent in it is active or failed, before the next
    /// opens (500ms, 60s, 2m).
    #[arg(long, value_name = "DURATION", default_value_t = default_bake(), requires = "waves")]
    pub bake: Dur,
    /// Most agents that may fail the release (activation, trial, or a prefetch that does not
    /// compile) before the rollout halts.
    #[arg(long, value_name = "N", default_value_t = Gates::default().max_failed, requires = "waves")]
    pub max_failed: u32,
    /// Most the new release's 5xx rate may exceed the old release's on the same agents: "+"
    /// means above the old release (+1% halts at 1.5% against 0.4%). `off`: not judged.
    #[arg(long, value_name = "+PCT", default_value_t = default_rate(), requires = "waves")]
    pub max_error_rate: RateLimit,
    /// Most the new release's p99 latency may exceed the old release's, in percent ("+": above
    /// the old release; +50% halts at 30 ms against 20 ms). `off`: not judged.
    #[arg(long, value_name = "+PCT", default_value_t = default_p99(), requires = "waves")]
    pub max_p99_increase: IncreaseLimit,
    /// Requests the new release must have served in the wave before the 5xx and latency gates
    /// judge it, and before the next wave opens (0: judge whatever there is).
    #[arg(long, value_name = "N", default_value_t = Gates::default().min_requests, requires = "waves")]
    pub min_requests: u64,
}

impl Default for WaveArgs {
    fn default() -> Self {
        WaveArgs {
            waves: None,
            bake: default_bake(),
            max_failed: Gates::default().max_failed,
            max_error_rate: default_rate(),
            max_p99_increase: default_p99(),
            min_requests: Gates::default().min_requests,
        }
    }
}

impl WaveArgs {
    /// The gates of the flags.
    pub fn gates(&self) -> Gates {
        Gates {
            bake_ms: self.bake.0.as_millis().min(u128::from(u64::MAX)) as u64,
            max_failed: self.max_failed,
            max_error_rate_bp: self.max_error_rate.0,
            max_p99_increase_pct: self.max_p99_increase.0,
            min_requests: self.min_requests,
        }
    }

    /// The plan at its first wave, or `None` without `--waves`.
    pub fn plan(&self) -> Result<Option<Plan>> {
        let Some(w) = &self.waves else {
            return Ok(None);
        };
        let waves =
            rollout::parse_waves(w).map_err(|e| CliError::usage(format!("--waves {w:?}: {e}")))?;
        Plan::new(waves, self.gates())
            .map(Some)
            .map_err(|e| CliError::usage(format!("--waves {w:?}: {e}")))
    }
}

/// An app's newest head as one agent holds it: the head in force, or a newer staged one (its
/// wave leaves the agent out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Newest {
    pub pos: Position,
    pub kind: HeadKind,
    pub release: Release,
    pub plan: Option<Plan>,
    pub issued_at_ms: u64,
    /// Whether it is the head in force on the agent (false: staged there).
    pub in_force: bool,
}

/// The newest of `a`'s head in force and its staged head, by position (epoch, seq).
pub fn newest(a: &AppStatus) -> Newest {
    let active = Newest {
        pos: Position {
            epoch: a.epoch,
            seq: a.seq,
        },
        kind: a.kind,
        release: a.active.clone(),
        plan: a.plan.clone(),
        issued_at_ms: a.issued_at_ms,
        in_force: true,
    };
    match &a.staged {
        Some(s)
            if Position {
                epoch: s.epoch,
                seq: s.seq,
            } > active.pos =>
        {
            Newest {
                pos: Position {
                    epoch: s.epoch,
                    seq: s.seq,
                },
                kind: s.kind,
                release: s.release.clone(),
                plan: s.plan.clone(),
                issued_at_ms: s.issued_at_ms,
                in_force: false,
            }
        }
        _ => active,
    }
}

/// The release a halt of the rollout of `rolling` goes back to, from the agent's view `a`:
/// the release in force there when the agent is outside the wave (it never took `rolling`),
/// else the most recent release in its history with another digest. `None`: there is none
/// (the app's first release).
pub fn halt_target(a: Option<&AppStatus>, rolling: &Release) -> Option<Release> {
    let a = a?;
    if a.active.digest != rolling.digest {
        return Some(a.active.clone());
    }
    a.history
        .iter()
        .rev()
        .find(|h| h.release.digest != rolling.digest)
        .map(|h| h.release.clone())
}

/// Whether the open wave includes none of the fleet's agents though every one counted itself
/// (`expect`: the census; a 1% wave of a 50-agent fleet often does): it can never settle, so
/// the driver opens the next wave at once. Not knowing the fleet's size (`expect` 0), it
/// cannot tell.
pub fn empty_wave(plan: &Plan, t: &Tally, expect: u32) -> bool {
    !plan.paused
        && !plan.is_last()
        && expect > 0
        && t.nodes >= expect
        && t.in_wave == 0
        && t.failed == 0
}

/// `n` with thousands separated: "1,000".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(h: &Health) -> String {
    let bp = h.error_rate_bp().min(u32::from(rollout::FULL)) as u16;
    rollout::pct(bp)
}

fn p99(h: &Health) -> String {
    h.p99_ms().map(rollout::ms).unwrap_or_else(|| "-".into())
}

/// What holds the next wave, for people: the verdict's words.
pub fn next_words(plan: &Plan, v: &Verdict) -> String {
    if plan.paused {
        return "paused (fleetcast rollout resume continues)".into();
    }
    match v {
        Verdict::Hold { why } => why.clone(),
        Verdict::Pass if plan.is_last() => "passed: the rollout is complete".into(),
        Verdict::Pass => format!(
            "passed: opening wave {} ({})",
            plan.wave + 2,
            rollout::pct(plan.waves[usize::from(plan.wave) + 1])
        ),
        Verdict::Halt { gate, why } => format!("HALT by the {gate} gate: {why}"),
    }
}

/// The live view's line of the open wave: "wave 2/4 10%: 98 of 100 active (in wave), 0
/// failed, 5xx 0.4% new vs 0.3% old, p99 ≤ 20 ms vs ≤ 20 ms; fleet 1,000 agents, 900
/// prefetched; next: baking: 23s of 60s". `census`: the fleet's size counted before the
/// rollout (the larger of it and the head's own count is shown).
pub fn wave_line(plan: &Plan, t: &Tally, census: Option<u32>, next: &str) -> String {
    let (new, old) = (&t.health_new, &t.health_old);
    let health = if new.requests == 0 {
        "no requests served by the new release yet".to_string()
    } else {
        format!(
            "5xx {} new vs {} old, p99 {} vs {}",
            rate(new),
            rate(old),
            p99(new),
            p99(old)
        )
    };
    let fleet = t.nodes.max(census.unwrap_or(0));
    let mut failed = format!("{} failed", t.failed);
    if t.rejected > 0 {
        failed.push_str(&format!(", {} rejected", t.rejected));
    }
    format!(
        "wave {}/{} {}: {} of {} active (in wave), {failed}, {health}; fleet {} agents, {} prefetched; next: {next}",
        plan.wave + 1,
        plan.waves.len(),
        rollout::pct(plan.fraction()),
        group(u64::from(t.active)),
        group(u64::from(t.in_wave)),
        group(u64::from(fleet)),
        group(u64::from(t.prefetched)),
    )
}

/// What is worth a new plain line or `rollout` event: the numbers and the verdict, not the
/// seconds of a bake going by.
pub fn view_key(t: &Tally, plan: &Plan, v: &Verdict) -> String {
    let verdict = match v {
        Verdict::Hold { why } if why.starts_with("baking") => "baking".to_string(),
        Verdict::Hold { why } => why.clone(),
        Verdict::Pass => "pass".into(),
        Verdict::Halt { why, .. } => why.clone(),
    };
    format!(
        "{} {} {} {} {} {} {} {} {:?} {:?} {} {verdict}",
        plan.wave,
        plan.paused,
        t.nodes,
        t.in_wave,
        t.active,
        t.failed,
        t.rejected,
        t.pending,
        t.prefetched,
        (t.health_new.requests, t.health_new.errors),
        t.health_old.requests,
    )
}

pub fn plan_json(p: &Plan) -> json::PlanJson {
    json::PlanJson {
        waves: p.waves.iter().map(|w| rollout::pct(*w)).collect(),
        wave: u32::from(p.wave) + 1,
        fraction: rollout::pct(p.fraction()),
        paused: p.paused,
        gates: json::GatesJson {
            bake_ms: p.gates.bake_ms,
            max_failed: p.gates.max_failed,
            max_error_rate_bp: p.gates.max_error_rate_bp,
            max_p99_increase_pct: p.gates.max_p99_increase_pct,
            min_requests: p.gates.min_requests,
        },
    }
}

pub fn health_json(h: &Health) -> json::HealthJson {
    json::HealthJson {
        requests: h.requests,
        errors: h.errors,
        traps: h.traps,
        timeouts: h.timeouts,
        error_rate_bp: h.error_rate_bp(),
        p99_ms: h.p99_ms(),
    }
}

pub fn counts_json(t: &Tally, census: Option<u32>) -> json::WaveCounts {
    json::WaveCounts {
        nodes: t.nodes,
        in_wave: t.in_wave,
        active: t.active,
        failed: t.failed,
        rejected: t.rejected,
        pending: t.pending,
        prefetched: t.prefetched,
        census,
    }
}

pub fn verdict_json(plan: &Plan, v: &Verdict) -> json::VerdictJson {
    if plan.paused {
        return json::VerdictJson {
            state: "paused".into(),
            gate: None,
            why: None,
        };
    }
    match v {
        Verdict::Hold { why } => json::VerdictJson {
            state: "hold".into(),
            gate: None,
            why: Some(why.clone()),
        },
        Verdict::Pass => json::VerdictJson {
            state: "pass".into(),
            gate: None,
            why: None,
        },
        Verdict::Halt { gate, why } => json::VerdictJson {
            state: "halt".into(),
            gate: Some(gate.name().into()),
            why: Some(why.clone()),
        },
    }
}

/// The gates for people: "bake 60s, --max-failed 0, --max-error-rate +1%, --max-p99-increase
/// off, --min-requests 0".
pub fn gates_line(g: &Gates) -> String {
    format!(
        "bake {}, --max-failed {}, --max-error-rate {}, --max-p99-increase {}, --min-requests {}",
        Dur(Duration::from_millis(g.bake_ms)),
        g.max_failed,
        RateLimit(g.max_error_rate_bp),
        IncreaseLimit(g.max_p99_increase_pct),
        g.min_requests
    )
}

#[cfg(test)]
mod tests;
