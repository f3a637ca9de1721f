//! Staged rollouts: the signed plan a head carries, which nodes a wave includes, the health
//! counts agents add up the tally tree, and the gates that judge a wave from those counts.
//!
//! A [`Plan`] rides on a [`Head`](crate::head::Head) and is signed with it: the waves
//! (cumulative fractions of the fleet, in basis points), the wave now open, the gates and
//! whether the rollout is paused. Every node decides by itself whether a wave includes it
//! ([`includes`]): a BLAKE3 hash of (release digest, node id) mapped to a bucket in
//! `0..10_000`, below the wave's fraction. No list of nodes is sent, the answer is the same
//! on every machine and across partitions, and each release picks other canaries.
//!
//! Advancing a wave is a new head (higher seq, same release, `wave + 1`); halting is a signed
//! rollback to the release before. The rollout's whole state is in the newest signed head, so
//! a driver that dies leaves the fleet where it is, and any holder of the release keys can go
//! on from there ([`Driver`]).
//!
//! Health ([`Health`]) is counted per release on each agent (requests, 5xx, traps, timeouts,
//! a latency histogram with fixed buckets) and summed up the tally tree like the other counts,
//! so the gates compare the new release against the one it replaced on the same agents with no
//! central metrics system.
//!
//! **Invariants:** the last wave of a valid plan is [`FULL`] and [`includes`] is true for every
//! node at [`FULL`] (buckets are `< FULL`); a larger fraction includes every node a smaller one
//! does; [`Health::add`] is associative and commutative (plain sums), so the order in which
//! subtrees are merged does not change the fleet's numbers; nothing here reads a clock.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::release::Digest;
use crate::wire::{NodeId, Tally};

/// A whole fleet, in basis points (100% = 10,000).
pub const FULL: u16 = 10_000;
/// Most waves a plan may have.
pub const MAX_WAVES: usize = 16;
/// Domain separation for the wave bucket hash.
const BUCKET_DOMAIN: &[u8] = b"fleetcast/wave/v1\0";

/// Upper bounds of the latency histogram's buckets, in milliseconds; the last bucket
/// (`LATENCY_BUCKETS_MS.len()`) counts everything slower. Fixed, so histograms add up.
pub const LATENCY_BUCKETS_MS: [u32; 11] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000];
/// Buckets in a [`Health::latency`] histogram.
pub const LATENCY_SLOTS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// The signed plan of a staged rollout. See the module docs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Cumulative fractions of the fleet, in basis points: strictly increasing, the last is
    /// [`FULL`]. `[100, 1000, 5000, 10000]` is 1%, 10%, 50%, 100%.
    pub waves: Vec<u16>,
    /// The wave now open (index into `waves`).
    pub wave: u8,
    /// What the driver judges each wave by.
    pub gates: Gates,
    /// A paused rollout is not advanced or halted by a driver until a head resumes it.
    pub paused: bool,
}

/// What a wave must show before the next one opens. Signed with the plan, so a driver on
/// another machine (`fleetcast rollout resume`) judges by the same rules.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Gates {
    /// How long a wave runs, once every node in it has settled (active or failed), before the
    /// next opens. Milliseconds.
    pub bake_ms: u64,
    /// Most agents that may fail the release (activation, trial, or a prefetch that does not
    /// compile) before the rollout halts.
    pub max_failed: u32,
    /// Most the new release's 5xx rate may exceed the old one's on the same agents, in basis
    /// points of requests (`+1%` = 100). `None`: not judged.
    pub max_error_rate_bp: Option<u32>,
    /// Most the new release's p99 latency may exceed the old one's, in percent (`+50%` = 50).
    /// `None`: not judged.
    pub max_p99_increase_pct: Option<u32>,
    /// Requests the new release must have served in the wave before the rate and latency gates
    /// judge it, and before the wave may pass (fewer: the wave holds; a 1% rate needs about a
    /// hundred requests to mean anything). 0: judge whatever there is, and pass a wave that
    /// served nothing (a fleet without traffic).
    pub min_requests: u64,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            bake_ms: 60_000,
            max_failed: 0,
            max_error_rate_bp: Some(100),
            max_p99_increase_pct: None,
            min_requests: 100,
        }
    }
}

/// Why a plan is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a rollout needs at least one wave")]
    NoWaves,
    #[error("a rollout has at most {MAX_WAVES} waves, this one has {0}")]
    TooManyWaves(usize),
    #[error(
        "waves must grow: wave {index} ({}) is not above the one before it ({})",
        pct(*.this), pct(*.before)
    )]
    NotIncreasing {
        index: usize,
        this: u16,
        before: u16,
    },
    #[error("wave {index} is 0%: every wave must include someone")]
    EmptyWave { index: usize },
    #[error("the last wave is {}, it must be 100% so that every node gets the release", pct(*.0))]
    NotFull(u16),
    #[error("wave {wave} does not exist: the plan has {waves} waves")]
    NoSuchWave { wave: u8, waves: usize },
}

impl Plan {
    /// A plan at its first wave.
    pub fn new(waves: Vec<u16>, gates: Gates) -> Result<Plan, PlanError> {
        let plan = Plan {
            waves,
            wave: 0,
            gates,
            paused: false,
        };
        plan.check()?;
        Ok(plan)
    }

    /// Checks the plan is well formed (see [`PlanError`]).
    pub fn check(&self) -> Result<(), PlanError> {
        let w = &self.waves;
        if w.is_empty() {
            return Err(PlanError::NoWaves);
        }
        if w.len() > MAX_WAVES {
            return Err(PlanError::TooManyWaves(w.len()));
        }
        if w[0] == 0 {
            return Err(PlanError::EmptyWave { index: 0 });
        }
        for i in 1..w.len() {
            if w[i] <= w[i - 1] {
                return Err(PlanError::NotIncreasing {
                    index: i,
                    this: w[i],
                    before: w[i - 1],
                });
            }
        }
        let last = *w.last().expect("not empty");
        if last != FULL {
            return Err(PlanError::NotFull(last));
        }
        if usize::from(self.wave) >= w.len() {
            return Err(PlanError::NoSuchWave {
                wave: self.wave,
                waves: w.len(),
            });
        }
        Ok(())
    }

    /// The fraction the open wave includes, in basis points.
    pub fn fraction(&self) -> u16 {
        self.waves
            .get(usize::from(self.wave))
            .copied()
            .unwrap_or(FULL)
    }

    /// Whether the open wave is the last (the whole fleet).
    pub fn is_last(&self) -> bool {
        usize::from(self.wave) + 1 >= self.waves.len()
    }

    /// The plan with the next wave open (`None` at the last wave).
    pub fn advanced(&self) -> Option<Plan> {
        if self.is_last() {
            return None;
        }
        Some(Plan {
            wave: self.wave + 1,
            paused: false,
            ..self.clone()
        })
    }

    /// "wave 2 of 4 (10%)".
    pub fn describe(&self) -> String {
        format!(
            "wave {} of {} ({})",
            self.wave + 1,
            self.waves.len(),
            pct(self.fraction())
        )
    }
}

/// The bucket of `node` for the release `digest`: uniform in `0..FULL`, different per release.
pub fn bucket(digest: &Digest, node: &NodeId) -> u16 {
    let mut h = blake3::Hasher::new();
    h.update(BUCKET_DOMAIN);
    h.update(&digest.0);
    h.update(&node.0);
    let b = h.finalize();
    let x = u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"));
    // Multiply-shift maps a uniform u64 onto 0..FULL with no modulo bias worth the name
    // (below 2^-50) and never reaches FULL.
    ((u128::from(x) * u128::from(FULL)) >> 64) as u16
}

/// Whether the wave at `fraction` (basis points) includes `node` for release `digest`. At
/// [`FULL`] every node is included.
pub fn includes(digest: &Digest, node: &NodeId, fraction: u16) -> bool {
    bucket(digest, node) < fraction
}

/// Parses "1%,10%,50%,100%" (or "0.5%", or plain numbers as percent) into basis points.
pub fn parse_waves(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .map(|w| parse_pct(w.trim()).map_err(|e| format!("wave {w:?}: {e}")))
        .collect()
}

/// "12.5%" or "12.5" as basis points (1250), at most 100%.
pub fn parse_pct(s: &str) -> Result<u16, String> {
    let n = s.strip_suffix('%').unwrap_or(s).trim();
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let bad = || format!("{s:?} is not a percentage like 10% or 0.5%");
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 2 {
        return Err(format!(
            "{s:?} has more than two decimals: 0.01% is the finest step"
        ));
    }
    let int: u32 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let bp = int.saturating_mul(100).saturating_add(frac);
    if bp > u32::from(FULL) {
        return Err(format!("{s:?} is above 100%"));
    }
    Ok(bp as u16)
}

/// Basis points as a percentage for people: "1%", "0.5%", "100%".
pub fn pct(bp: u16) -> String {
    let (i, f) = (bp / 100, bp % 100);
    match f {
        0 => format!("{i}%"),
        f if f % 10 == 0 => format!("{i}.{}%", f / 10),
        f => format!("{i}.{f:02}%"),
    }
}

/// Requests served by one release on some agents: counts and a latency histogram, all plain
/// sums (mergeable by addition in any order).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Health {
    pub requests: u64,
    /// Responses with a 5xx status, traps and timeouts included.
    pub errors: u64,
    pub traps: u64,
    pub timeouts: u64,
    /// Requests per latency bucket ([`LATENCY_BUCKETS_MS`], then slower).
    pub latency: [u64; LATENCY_SLOTS],
}

impl Health {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Health) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.traps = self.traps.saturating_add(other.traps);
        self.timeouts = self.timeouts.saturating_add(other.timeouts);
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a = a.saturating_add(b);
        }
    }

    /// The counts since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Health) -> Health {
        let mut latency = [0; LATENCY_SLOTS];
        for (i, l) in latency.iter_mut().enumerate() {
            *l = self.latency[i].saturating_sub(earlier.latency[i]);
        }
        Health {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            traps: self.traps.saturating_sub(earlier.traps),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            latency,
        }
    }

    /// Records one request of `latency` (`error`: a 5xx, trap or timeout).
    pub fn record(&mut self, latency: Duration, error: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.latency[latency_slot(latency)] += 1;
    }

    /// The 5xx rate in basis points of requests (0 with no requests).
    pub fn error_rate_bp(&self) -> u32 {
        if self.requests == 0 {
            return 0;
        }
        (u128::from(self.errors) * 10_000 / u128::from(self.requests)) as u32
    }

    /// The p99 latency as the upper bound of its bucket, in ms (`None` with no requests;
    /// `u32::MAX` when it is in the last, open bucket).
    pub fn p99_ms(&self) -> Option<u32> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest bucket by which at least 99% of requests are counted.
        let need = total - total / 100;
        let mut seen = 0u64;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= need {
                return Some(LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u32::MAX));
            }
        }
        Some(u32::MAX)
    }
}

/// The histogram slot of `latency`.
pub fn latency_slot(latency: Duration) -> usize {
    let ms = latency.as_micros();
    LATENCY_BUCKETS_MS
        .iter()
        .position(|b| ms <= u128::from(*b) * 1000)
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Which gate stopped a rollout.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Gate {
    Failed,
    ErrorRate,
    Latency,
}

impl Gate {
    /// A fixed name (`--json`, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Gate::Failed => "failed",
            Gate::ErrorRate => "error-rate",
            Gate::Latency => "latency",
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the gates say of a wave's counts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// Not yet: `why` names what the next wave waits for.
    Hold { why: String },
    /// The wave passed: open the next one (or, at the last wave, the rollout is done).
    Pass,
    /// A gate failed: halt and roll back. `why` says by how much.
    Halt { gate: Gate, why: String },
}

/// Judges the open wave from the fleet's `tally` of its head. `settled_for`: how long the wave
/// has been settled (see [`Driver`]), `None` while it is not. A failure halts at once; the
/// rate and latency gates judge as soon as the new release served `min_requests` (at least
/// one); the next wave waits for the wave to settle, `min_requests`, and the bake.
pub fn judge(plan: &Plan, tally: &Tally, settled_for: Option<Duration>) -> Verdict {
    let g = &plan.gates;
    if tally.failed > g.max_failed {
        return Verdict::Halt {
            gate: Gate::Failed,
            why: format!(
                "{} agent(s) failed the release, more than --max-failed {}",
                tally.failed, g.max_failed
            ),
        };
    }
    let (new, old) = (&tally.health_new, &tally.health_old);
    let judged = new.requests >= g.min_requests.max(1);
    if let Some(max) = g.max_error_rate_bp
        && judged
    {
        let (n, o) = (new.error_rate_bp(), old.error_rate_bp());
        if n > o.saturating_add(max) {
            return Verdict::Halt {
                gate: Gate::ErrorRate,
                why: format!(
                    "5xx rate {} on the new release against {} on the old, more than \
                     --max-error-rate +{}",
                    pct_u32(n),
                    pct_u32(o),
                    pct_u32(max)
                ),
            };
        }
    }
    if let Some(max) = g.max_p99_increase_pct
        && judged
        && let (Some(n), Some(o)) = (new.p99_ms(), old.p99_ms())
    {
        let limit = u64::from(o) * (100 + u64::from(max)) / 100;
        if u64::from(n) > limit {
            return Verdict::Halt {
                gate: Gate::Latency,
                why: format!(
                    "p99 {} on the new release against {} on the old, more than \
                     --max-p99-increase +{max}%",
                    ms(n),
                    ms(o)
                ),
            };
        }
    }
    if settled_for.is_none() {
        return Verdict::Hold {
            why: format!(
                "{} of {} agent(s) in the wave active, {} pending",
                tally.active, tally.in_wave, tally.pending
            ),
        };
    }
    if new.requests < g.min_requests {
        return Verdict::Hold {
            why: format!(
                "{} of --min-requests {} request(s) served by the new release",
                new.requests, g.min_requests
            ),
        };
    }
    let bake = Duration::from_millis(g.bake_ms);
    match settled_for {
        Some(d) if d >= bake => Verdict::Pass,
        Some(d) => Verdict::Hold {
            why: format!("baking: {} of {}", duration(d), duration(bake)),
        },
        None => Verdict::Hold {
            why: format!(
                "{} of {} agent(s) in the wave active, {} pending",
                tally.active, tally.in_wave, tally.pending
            ),
        },
    }
}

/// A duration for people: "750ms", "12s", "2m30s".
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A latency bound for people: "20 ms", "> 2 s".
pub fn ms(v: u32) -> String {
    match v {
        u32::MAX => format!("> {} ms", LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]),
        v => format!("≤ {v} ms"),
    }
}

fn pct_u32(bp: u32) -> String {
    pct(bp.min(u32::from(u16::MAX)) as u16)
}

/// How long the fleet's count must stay the same before a driver takes it as the fleet when it
/// is below the census it started from (nodes went down, or a count was lost under churn).
pub const COUNT_STILL_MS: u64 = 5_000;

/// Whether the wave of `tally`'s head has settled: it includes someone, none of them is still
/// fetching or activating, and at least `expect` nodes counted themselves.
pub fn settled(tally: &Tally, expect: u32) -> bool {
    tally.in_wave > 0 && tally.pending == 0 && tally.nodes >= expect
}

/// What a driver should do next.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Step {
    /// Nothing yet.
    Wait,
    /// Sign and push a head of the same release with this plan (the next wave).
    Advance(Plan),
    /// The last wave passed: the rollout is done.
    Done,
    /// Sign and push a rollback to the release before: a gate failed.
    Halt { gate: Gate, why: String },
}

/// Drives one rollout from the fleet's counts: when the open wave has settled ([`settled`]), it bakes; the
/// gates are judged on every count; when they pass it asks for the next wave, when one fails
/// for a halt. Sans-IO: the caller feeds time and counts and signs what it is told to. Resuming
/// (after a crash, from another machine) is a new `Driver` over the newest head's plan.
#[derive(Clone, Debug)]
pub struct Driver {
    plan: Plan,
    /// Nodes the fleet is expected to have (0: do not wait for a count).
    expect: u32,
    /// The fleet's count last seen, and since when (ms) it has not changed: a count still for
    /// [`COUNT_STILL_MS`] is taken as the fleet (some of `expect` are down, or their counts
    /// were lost on the way).
    nodes_seen: (u32, u64),
    /// When (caller's clock, ms) the open wave was seen settled, since when it bakes.
    settled_at: Option<u64>,
    last: Verdict,
}

impl Driver {
    /// `expect`: how many nodes the fleet has (a census); a wave is settled only once that
    /// many nodes counted themselves for its head (0: do not wait).
    pub fn new(plan: Plan, expect: u32) -> Driver {
        Driver {
            plan,
            expect,
            nodes_seen: (0, 0),
            settled_at: None,
            last: Verdict::Hold {
                why: "no counts yet".into(),
            },
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The verdict on the last counts.
    pub fn verdict(&self) -> &Verdict {
        &self.last
    }

    /// The fleet's count of the open wave's head, at `now_ms` (the caller's monotonic clock).
    pub fn on_tally(&mut self, now_ms: u64, tally: &Tally) -> Step {
        if self.nodes_seen.0 != tally.nodes {
            self.nodes_seen = (tally.nodes, now_ms);
        }
        let still = now_ms.saturating_sub(self.nodes_seen.1) >= COUNT_STILL_MS;
        let expect = if still { 0 } else { self.expect };
        let settled = settled(tally, expect);
        if !settled {
            self.settled_at = None;
        } else if self.settled_at.is_none() {
            self.settled_at = Some(now_ms);
        }
        let for_ = self
            .settled_at
            .map(|t| Duration::from_millis(now_ms.saturating_sub(t)));
        self.last = judge(&self.plan, tally, for_);
        let counted = self.expect > 0 && (tally.nodes >= self.expect || still && tally.nodes > 0);
        if counted && tally.in_wave == 0 && tally.failed == 0 && tally.pending == 0 {
            // The whole fleet counted itself and the wave includes none of it (1% of a small
            // fleet): there is nothing to bake.
            self.last = Verdict::Pass;
        }
        if self.plan.paused {
            return Step::Wait;
        }
        match &self.last {
            Verdict::Hold { .. } => Step::Wait,
            Verdict::Halt { gate, why } => Step::Halt {
                gate: *gate,
                why: why.clone(),
            },
            Verdict::Pass => match self.plan.advanced() {
                Some(next) => Step::Advance(next),
                None => Step::Done,
            },
        }
    }

    /// The head of `plan` (the next wave) was pushed: judge it from now on.
    pub fn advanced(&mut self, plan: Plan) {
        self.plan = plan;
        self.nodes_seen = (0, 0);
        self.settled_at = None;
        self.last = Verdict::Hold {
            why: "the new wave has not reported yet".into(),
        };
    }
}

#[cfg(test)]
mod tests;
