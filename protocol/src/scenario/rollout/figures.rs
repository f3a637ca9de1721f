//! What the rollout scenarios measured, printed for BENCHMARKS.md.

use std::fmt;
use std::time::Duration;

use crate::rollout::{Gate, pct};

fn ms(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    })
}

fn share(n: usize, of: usize) -> String {
    format!("{:.2}%", n as f64 * 100.0 / of.max(1) as f64)
}

fn gate(g: &Option<(Gate, String)>) -> String {
    g.as_ref().map_or("none (not halted)".into(), |(g, why)| {
        format!("{g} ({why})")
    })
}

/// One wave of a rollout.
#[derive(Clone, Debug)]
pub struct WaveFigure {
    /// Its cumulative fraction, basis points.
    pub fraction: u16,
    /// Live nodes it includes.
    pub in_wave: usize,
    /// Its head pushed → every live node it includes active on it.
    pub head_to_active: Option<Duration>,
}

/// (1) A good release through its waves.
#[derive(Clone, Debug)]
pub struct GoodFigures {
    pub seed: u64,
    pub nodes: usize,
    pub live: usize,
    /// Live nodes running the release at the end.
    pub all_active: usize,
    /// The driver said Done.
    pub done: bool,
    /// First head → Done.
    pub rollout: Option<Duration>,
    pub waves: Vec<WaveFigure>,
    /// The last wave's head → every live node active (a head broadcast plus a swap).
    pub last_wave: Option<Duration>,
    /// Then, on the same fleet, a release with no waves: publish → every live node active.
    pub plain_release: Option<Duration>,
    /// Chunk payload and control bytes per node over the whole rollout.
    pub payload_per_node: f64,
    pub control_per_node: f64,
    pub size: usize,
}

impl fmt::Display for GoodFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} · {} nodes, {} live, {} active on the release at the end (driver done: {})",
            self.seed, self.nodes, self.live, self.all_active, self.done
        )?;
        for w in &self.waves {
            writeln!(
                f,
                "  wave {:>5}: {:>6} nodes, head → all active {}",
                pct(w.fraction),
                w.in_wave,
                ms(w.head_to_active)
            )?;
        }
        writeln!(f, "  first head → done:        {}", ms(self.rollout))?;
        writeln!(
            f,
            "  last wave head → 100%:    {}  (prefetched: a head broadcast plus a swap)",
            ms(self.last_wave)
        )?;
        writeln!(
            f,
            "  release without waves:    {}  (same fleet, publish → 100%, fetch + swap)",
            ms(self.plain_release)
        )?;
        writeln!(
            f,
            "  bytes per node:           {:.2} MiB payload ({:.2}× S), {:.0} KiB control, whole rollout",
            self.payload_per_node / 1_048_576.0,
            self.payload_per_node / self.size.max(1) as f64,
            self.control_per_node / 1024.0
        )
    }
}

/// (2) and (3): a bad release halted and rolled back.
#[derive(Clone, Debug)]
pub struct HaltFigures {
    pub seed: u64,
    pub nodes: usize,
    pub first_wave: u16,
    /// Nodes the first wave includes, and of them the ones whose trial fails.
    pub in_first_wave: usize,
    pub failing_in_first_wave: usize,
    /// The gate that halted, and why.
    pub halted: Option<(Gate, String)>,
    /// The wave open when it halted (index).
    pub halted_at_wave: Option<u8>,
    /// The counts the halt was judged on.
    pub failed_at_halt: u32,
    pub error_rate_new_bp: u32,
    pub error_rate_old_bp: u32,
    /// Nodes that ever ran the release.
    pub ever_ran: usize,
    /// First head → the rollback pushed.
    pub head_to_halt: Option<Duration>,
    /// First trial failure (the shell reverted) → the rollback pushed / every live node back
    /// on the old release under the rollback.
    pub failure_to_halt: Option<Duration>,
    pub failure_to_reverted: Option<Duration>,
    /// Rollback pushed → every live node back on the old release.
    pub halt_to_reverted: Option<Duration>,
}

impl HaltFigures {
    /// Share of the fleet that ever ran the release.
    pub fn ever_ran_share(&self) -> f64 {
        self.ever_ran as f64 / self.nodes.max(1) as f64
    }
}

impl fmt::Display for HaltFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} · {} nodes; first wave {}: {} nodes ({} of them fail the trial)",
            self.seed,
            self.nodes,
            pct(self.first_wave),
            self.in_first_wave,
            self.failing_in_first_wave
        )?;
        writeln!(f, "  halted by gate:           {}", gate(&self.halted))?;
        writeln!(
            f,
            "  halted at wave:           {}",
            self.halted_at_wave
                .map_or("-".into(), |w| format!("{} (the first is 1)", w + 1))
        )?;
        writeln!(
            f,
            "  counts at the halt:       {} failed, 5xx {} new against {} old",
            self.failed_at_halt,
            pct(self.error_rate_new_bp.min(10_000) as u16),
            pct(self.error_rate_old_bp.min(10_000) as u16)
        )?;
        writeln!(
            f,
            "  ever ran it:              {} nodes, {} of the fleet (goal with a 1% first wave: ≤ 1.5%)",
            self.ever_ran,
            share(self.ever_ran, self.nodes)
        )?;
        writeln!(f, "  first head → halt head:   {}", ms(self.head_to_halt))?;
        writeln!(
            f,
            "  first failure → halt:     {}",
            ms(self.failure_to_halt)
        )?;
        writeln!(
            f,
            "  first failure → all back: {}",
            ms(self.failure_to_reverted)
        )?;
        writeln!(
            f,
            "  halt → all back:          {}",
            ms(self.halt_to_reverted)
        )
    }
}

/// (4) The operator dies at wave 2; a resume completes.
#[derive(Clone, Debug)]
pub struct ResumeFigures {
    pub seed: u64,
    pub nodes: usize,
    pub live: usize,
    /// Wave 2's fraction.
    pub wave: u16,
    pub pushed_wave_2: bool,
    /// Every live node where wave 2 puts it, before the restarts and joins.
    pub wave_2_settled: bool,
    pub in_wave_2: usize,
    /// Two restarted nodes and two joined ones (one in wave 2, one out each) followed wave 2:
    /// how long after they came up.
    pub restarted_and_joined_followed: Option<Duration>,
    /// What each of them ran then.
    pub followers: Vec<String>,
    pub static_for: Duration,
    pub static_checks: usize,
    /// Most nodes not where wave 2 puts them at any check with no operator (0: fail-static).
    pub misplaced_worst: usize,
    pub resumed_from_wave: u8,
    /// Resume → Done.
    pub resume_to_done: Option<Duration>,
    pub all_active: usize,
    pub done: bool,
    /// The resumed driver's last verdict and the counts it judged (publisher's tally), and
    /// the fleet size it expected.
    pub last_verdict: String,
    pub last_counts: String,
    pub expect: u32,
}

impl fmt::Display for ResumeFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} · {} nodes; the operator dies after pushing wave 2 ({}: {} nodes)",
            self.seed,
            self.nodes,
            pct(self.wave),
            self.in_wave_2
        )?;
        writeln!(
            f,
            "  restarts and joins mid-rollout follow wave 2: {}",
            ms(self.restarted_and_joined_followed)
        )?;
        for w in &self.followers {
            writeln!(f, "    {w}")?;
        }
        writeln!(
            f,
            "  no operator for {} s: {} checks, at most {} node(s) off wave 2 (fail-static)",
            self.static_for.as_secs(),
            self.static_checks,
            self.misplaced_worst
        )?;
        writeln!(
            f,
            "  resume (a new driver over the newest head) → done: {}",
            ms(self.resume_to_done)
        )?;
        writeln!(
            f,
            "  at the end: {} of {} live nodes active (driver done: {})",
            self.all_active, self.live, self.done
        )?;
        if !self.done {
            writeln!(
                f,
                "  the resumed driver (expecting {} nodes) last said {}, on {}",
                self.expect, self.last_verdict, self.last_counts
            )?;
        }
        Ok(())
    }
}

/// (5) A canary partitioned before the halt.
#[derive(Clone, Debug)]
pub struct PartitionFigures {
    pub seed: u64,
    pub nodes: usize,
    pub canary: usize,
    /// It was cut off before the rollback was pushed.
    pub partitioned_before_halt: bool,
    pub halted: Option<(Gate, String)>,
    pub partition_to_halt: Option<Duration>,
    /// Every other live node went back to the old release.
    pub others_rolled_back: bool,
    /// Still on the release after the others were back (it could not hear).
    pub canary_on_new_before_heal: bool,
    /// Heal → the canary back on the old release under the rollback.
    pub heal_to_reverted: Option<Duration>,
    /// Every live node on the old release at the end.
    pub all_back: bool,
    pub ever_ran: usize,
}

impl fmt::Display for PartitionFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} · {} nodes; canary {} cut off as it swapped the release in (before the halt: {})",
            self.seed, self.nodes, self.canary, self.partitioned_before_halt
        )?;
        writeln!(f, "  halted by gate:           {}", gate(&self.halted))?;
        writeln!(
            f,
            "  partition → halt head:    {}",
            ms(self.partition_to_halt)
        )?;
        writeln!(
            f,
            "  others rolled back: {}; canary still on the release before the heal: {}",
            self.others_rolled_back, self.canary_on_new_before_heal
        )?;
        writeln!(
            f,
            "  heal → canary rolled back: {}",
            ms(self.heal_to_reverted)
        )?;
        writeln!(
            f,
            "  every node on the old release: {}; ever ran it: {} nodes ({})",
            self.all_back,
            self.ever_ran,
            share(self.ever_ran, self.nodes)
        )
    }
}
