//! Staged rollouts over the simulator: a simulated operator ([`Operator`]) reads the fleet's
//! tally at the publisher, runs a [`Driver`] from it and signs what it is told (a head for the
//! next wave, or a rollback), and five scenarios measure what the issue asks: a good release
//! through its waves ([`run_good`]), one that fails its trial on some nodes ([`run_bad_trial`]),
//! one that answers 5xx ([`run_bad_errors`]), an operator that dies mid-rollout and a resume
//! ([`run_resume`]), a canary partitioned before the halt ([`run_partitioned_canary`]).
//!
//! Every scenario starts from a settled fleet running release 1 (seq 1) with requests flowing
//! ([`Workload`]), then rolls out release 2 (seq 2 on). "Ever ran it" is read from the
//! simulated runtime ([`SimNode::ran`](crate::sim::SimNode::ran)): the nodes that swapped the
//! release in at any time.

use std::time::{Duration, Instant};

use crate::head::{Head, HeadKind, SignedHead};
use crate::release::{AppName, Digest, Release};
use crate::rollout::{Driver, FULL, Gate, Gates, Plan, Step, includes};
use crate::sim::{Behaviour, Id, Sim, Workload, node_id};
use crate::wire::Tally;

use super::{Scenario, content, converged, fleet, publisher_key};

mod figures;
pub use figures::{GoodFigures, HaltFigures, PartitionFigures, ResumeFigures, WaveFigure};

/// How often the simulated operator reads the tally.
pub const TICK: Duration = Duration::from_millis(100);

/// The rollout knobs the scenarios share.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// Cumulative waves, basis points.
    pub waves: Vec<u16>,
    /// The gates of every wave (the scenarios' default: the CLI's, with a 3 s bake).
    pub gates: Gates,
    /// Requests per node per second.
    pub rps: u32,
    /// How long a trial runs before a failing release is reverted.
    pub trial: Duration,
    /// Loading a stored, compiled release and swapping it in.
    pub swap: Duration,
    /// Size of release 1 (the one in force before the rollout; its size shows in no figure).
    pub old_size: usize,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            waves: vec![100, 1000, 5000, FULL],
            gates: Gates {
                bake_ms: 3_000,
                ..Gates::default()
            },
            rps: 100,
            trial: Duration::from_secs(1),
            swap: Duration::from_millis(5),
            old_size: 256 * 1024,
        }
    }
}

impl Rollout {
    pub fn plan(&self) -> Plan {
        Plan::new(self.waves.clone(), self.gates.clone())
            .expect("the scenario's waves are well formed")
    }
}

/// The app every scenario rolls out.
pub fn shop() -> AppName {
    AppName::new("shop").expect("valid")
}

/// Release `minor` of "shop" (version 1.`minor`.0) over `body`.
pub fn release(minor: u64, body: &[u8], chunk: u32) -> Release {
    let version = format!("1.{minor}.0").parse().expect("valid version");
    Release::build(shop(), version, body, chunk).expect("valid release")
}

/// A head of "shop" at `seq`, signed by the scenarios' publisher key.
pub fn head(
    seq: u64,
    release: &Release,
    kind: HeadKind,
    plan: Option<Plan>,
    at_ms: u64,
) -> SignedHead {
    Head {
        fleet: "sim".into(),
        app: shop(),
        seq,
        release: release.clone(),
        kind,
        issued_at_ms: at_ms,
        epoch: 0,
        plan,
    }
    .sign(&publisher_key())
}

/// A head the operator pushed.
#[derive(Clone, Debug)]
pub struct Push {
    pub at: Instant,
    pub seq: u64,
    /// The wave it opens (`None`: the rollback).
    pub wave: Option<u8>,
}

/// The simulated operator: `fleetcast release --waves ...` (and `rollout resume`). See the
/// module docs.
#[derive(Debug)]
pub struct Operator {
    pub entry: Id,
    pub release: Release,
    body: Vec<u8>,
    pub previous: Release,
    prev_body: Vec<u8>,
    /// The newest head's seq and plan.
    pub seq: u64,
    pub plan: Option<Plan>,
    /// `None`: the operator's process is gone (or it finished).
    pub driver: Option<Driver>,
    pub pushes: Vec<Push>,
    /// `Done` or `Halt`, once reached.
    pub outcome: Option<Step>,
    /// The tally the last step was judged on.
    pub last: Option<Tally>,
}

impl Operator {
    /// Pushes the first wave of `release` (at `seq`) at `entry`; `expect`: the fleet's size.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        sim: &mut Sim,
        entry: Id,
        release: Release,
        body: Vec<u8>,
        previous: (Release, Vec<u8>),
        seq: u64,
        plan: Plan,
        expect: u32,
    ) -> Operator {
        let mut op = Operator {
            entry,
            release,
            body,
            previous: previous.0,
            prev_body: previous.1,
            seq: seq - 1,
            plan: None,
            driver: Some(Driver::new(plan.clone(), expect)),
            pushes: Vec::new(),
            outcome: None,
            last: None,
        };
        op.push(sim, Some(plan));
        op
    }

    fn now_ms(sim: &Sim) -> u64 {
        sim.now.saturating_duration_since(sim.start).as_millis() as u64
    }

    fn push(&mut self, sim: &mut Sim, plan: Option<Plan>) {
        self.seq += 1;
        let at = Self::now_ms(sim) + 1;
        let (h, body) = match &plan {
            Some(p) => (
                head(
                    self.seq,
                    &self.release,
                    HeadKind::Release,
                    Some(p.clone()),
                    at,
                ),
                self.body.clone(),
            ),
            None => (
                head(self.seq, &self.previous, HeadKind::Rollback, None, at),
                self.prev_body.clone(),
            ),
        };
        self.pushes.push(Push {
            at: sim.now,
            seq: self.seq,
            wave: plan.as_ref().map(|p| p.wave),
        });
        self.plan = plan;
        sim.publish(self.entry, h, body);
    }

    /// Reads the newest head's tally and acts on the driver's step.
    pub fn poll(&mut self, sim: &mut Sim) {
        if self.outcome.is_some() {
            return;
        }
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let Some(t) = sim.publisher.tallies.get(&(shop(), self.seq)).cloned() else {
            return;
        };
        let step = driver.on_tally(Self::now_ms(sim), &t);
        self.last = Some(t);
        match step {
            Step::Wait => {}
            Step::Advance(plan) => {
                driver.advanced(plan.clone());
                self.push(sim, Some(plan));
            }
            Step::Done => self.outcome = Some(Step::Done),
            Step::Halt { .. } => {
                self.outcome = Some(step);
                self.push(sim, None);
            }
        }
    }

    /// The operator's process dies: nothing drives the rollout.
    pub fn crash(&mut self) {
        self.driver = None;
    }

    /// `fleetcast rollout resume`: a new driver over the newest head's plan.
    pub fn resume(&mut self, expect: u32) {
        let plan = self.plan.clone().expect("a staged head to resume");
        self.driver = Some(Driver::new(plan, expect));
    }

    /// The gate that halted the rollout, and why.
    pub fn halted(&self) -> Option<(Gate, String)> {
        match &self.outcome {
            Some(Step::Halt { gate, why }) => Some((*gate, why.clone())),
            _ => None,
        }
    }

    pub fn done(&self) -> bool {
        matches!(self.outcome, Some(Step::Done))
    }

    /// The rollback's push.
    pub fn rollback(&self) -> Option<&Push> {
        self.pushes.iter().find(|p| p.wave.is_none())
    }

    /// The wave open when the rollout halted.
    pub fn halted_at_wave(&self) -> Option<u8> {
        self.rollback()?;
        self.pushes.iter().rev().find_map(|p| p.wave)
    }
}

/// Drives `op` every [`TICK`] until `stop` (checked each tick), its outcome, or `deadline`.
/// Returns whether `stop` held.
pub fn drive(
    sim: &mut Sim,
    op: &mut Operator,
    deadline: Instant,
    mut stop: impl FnMut(&Sim, &Operator) -> bool,
) -> bool {
    while sim.now < deadline {
        if stop(sim, op) {
            return true;
        }
        if op.outcome.is_some() {
            return false;
        }
        let next = (sim.now + TICK).min(deadline);
        sim.run_until(next, |_| false);
        op.poll(sim);
    }
    stop(sim, op)
}

/// The release serving "shop" on node `id`.
pub fn running(sim: &Sim, id: Id) -> Option<Digest> {
    sim.nodes[&id].runs.get(&shop()).map(|r| r.release.digest)
}

/// Nodes that ever ran release `digest`.
pub fn ever_ran(sim: &Sim, digest: &Digest) -> usize {
    sim.nodes
        .values()
        .filter(|n| n.ran.contains_key(digest))
        .count()
}

/// Whether every live node runs `digest` under a record of `seq` or later.
pub fn all_on(sim: &Sim, digest: &Digest, seq: u64) -> bool {
    let app = shop();
    sim.nodes
        .iter()
        .filter(|(_, n)| n.alive())
        .all(|(id, n)| running(sim, *id) == Some(*digest) && n.seq(&app).is_some_and(|s| s >= seq))
}

/// Live nodes in the wave at `fraction` for `digest`.
pub fn in_wave(sim: &Sim, digest: &Digest, fraction: u16) -> Vec<Id> {
    sim.live()
        .into_iter()
        .filter(|id| includes(digest, &node_id(*id), fraction))
        .collect()
}

/// The last time a live node in `ids` activated `seq`, after `t0` (`None`: one has not).
fn last_activation(sim: &Sim, ids: &[Id], seq: u64, t0: Instant) -> Option<Duration> {
    let key = (shop(), seq);
    let mut worst = t0;
    for id in ids {
        worst = worst.max(*sim.nodes[id].activated_at.get(&key)?);
    }
    Some(worst - t0)
}

/// A settled fleet of `sc.nodes` running release 1 (seq 1) with requests flowing, and release
/// 1 with its bytes.
pub fn fleet_on_release_1(sc: &Scenario, ro: &Rollout) -> (Sim, (Release, Vec<u8>)) {
    let mut sim = fleet(
        sc.nodes,
        sc.contacts,
        sc.active_size,
        sc.net.clone(),
        Duration::from_secs(30),
    );
    sim.record_events = false;
    let body = content(1, ro.old_size);
    let r1 = release(0, &body, sc.chunk_size);
    sim.publish(0, head(1, &r1, HeadKind::Release, None, 1), body.clone());
    let app = shop();
    let end = sim.now + sc.deadline;
    // Checked once a tick: the whole-fleet check is O(N).
    while sim.now < end && !converged(&sim, &app, 1) {
        let next = sim.now + TICK;
        sim.run_until(next, |_| false);
    }
    assert!(
        converged(&sim, &app, 1),
        "seed {}: release 1 reached every node",
        sc.net.seed
    );
    sim.set_workload(Workload {
        rps: ro.rps,
        trial: ro.trial,
        swap: Some(ro.swap),
        ..Workload::default()
    });
    // Release 1 serves a while, so the old counts are there to compare with.
    sim.run(Duration::from_secs(3));
    (sim, (r1, body))
}

/// Release 2 of `sc.size` bytes behaving as `b`, registered with the workload.
fn release_2(sim: &mut Sim, sc: &Scenario, b: Behaviour) -> (Release, Vec<u8>) {
    let body = content(2, sc.size);
    let r2 = release(1, &body, sc.chunk_size);
    sim.workload.releases.insert(r2.digest, b);
    (r2, body)
}

/// (1) A good release through the waves: every live node ends on it. Then a release without
/// waves on the same fleet, for comparison with the last wave.
pub fn run_good(sc: &Scenario, ro: &Rollout) -> GoodFigures {
    let (mut sim, r1) = fleet_on_release_1(sc, ro);
    let (r2, body) = release_2(&mut sim, sc, Behaviour::default());
    let expect = sim.live().len() as u32;
    sim.traffic = Default::default();
    let t0 = sim.now;
    let mut op = Operator::start(&mut sim, 0, r2.clone(), body, r1, 2, ro.plan(), expect);
    drive(&mut sim, &mut op, t0 + sc.deadline * 4, |_, _| false);
    let done_at = op.done().then_some(sim.now);
    let last = op.seq;
    // Wait for the last wave to be active everywhere (Done only needs the counts).
    let live = sim.live();
    let end = sim.now + sc.deadline;
    while sim.now < end && last_activation(&sim, &live, last, t0).is_none() {
        let next = sim.now + TICK;
        sim.run_until(next, |_| false);
    }
    let waves = op
        .pushes
        .iter()
        .filter_map(|p| {
            let w = p.wave?;
            let fraction = ro.waves[usize::from(w)];
            let ids = in_wave(&sim, &r2.digest, fraction);
            Some(WaveFigure {
                fraction,
                in_wave: ids.len(),
                head_to_active: last_activation(&sim, &ids, p.seq, p.at),
            })
        })
        .collect::<Vec<_>>();
    let payload_per_node = sim.traffic.payload as f64 / sc.nodes as f64;
    let control_per_node = sim.traffic.control as f64 / sc.nodes as f64;
    let all_active = live
        .iter()
        .filter(|id| running(&sim, **id) == Some(r2.digest))
        .count();
    // The same fleet, a release with no waves: everyone fetches and swaps at once.
    let body3 = content(3, sc.size);
    let r3 = release(2, &body3, sc.chunk_size);
    let seq3 = last + 1;
    sim.run(Duration::from_secs(2));
    let at = Operator::now_ms(&sim) + 1;
    let t3 = sim.now;
    sim.publish(0, head(seq3, &r3, HeadKind::Release, None, at), body3);
    let app = shop();
    let end = sim.now + sc.deadline;
    while sim.now < end && !converged(&sim, &app, seq3) {
        let next = sim.now + TICK;
        sim.run_until(next, |_| false);
    }
    let plain = last_activation(&sim, &sim.live(), seq3, t3);
    GoodFigures {
        seed: sc.net.seed,
        nodes: sc.nodes,
        live: live.len(),
        all_active,
        done: op.done(),
        rollout: done_at.map(|t| t - t0),
        last_wave: waves.last().and_then(|w| w.head_to_active),
        waves,
        plain_release: plain,
        payload_per_node,
        control_per_node,
        size: sc.size,
    }
}

/// (2) A release whose trial fails on `fail_bp` of the nodes, or (3) one that answers 5xx on
/// `error_bp` of its requests without trapping: the rollout halts, the fleet rolls back.
pub fn run_bad(sc: &Scenario, ro: &Rollout, bad: Behaviour) -> HaltFigures {
    let (mut sim, r1) = fleet_on_release_1(sc, ro);
    let old = r1.0.digest;
    let (r2, body) = release_2(&mut sim, sc, bad);
    let expect = sim.live().len() as u32;
    let first = in_wave(&sim, &r2.digest, ro.waves[0]);
    let t0 = sim.now;
    let mut op = Operator::start(&mut sim, 0, r2.clone(), body, r1, 2, ro.plan(), expect);
    drive(&mut sim, &mut op, t0 + sc.deadline * 4, |_, _| false);
    let halt_at = op.rollback().map(|p| p.at);
    let mut reverted_at = None;
    if let Some(rb) = op.rollback().map(|p| p.seq) {
        let end = sim.now + sc.deadline;
        while sim.now < end && !all_on(&sim, &old, rb) {
            let next = sim.now + TICK;
            sim.run_until(next, |_| false);
        }
        reverted_at = all_on(&sim, &old, rb).then_some(sim.now);
        // Longer than an anti-entropy period: nobody takes the bad release again.
        sim.run(Duration::from_secs(10));
        assert!(
            all_on(&sim, &old, rb),
            "seed {}: the fleet stays rolled back",
            sc.net.seed
        );
    }
    let first_failure = sim
        .nodes
        .values()
        .filter_map(|n| n.reverted.get(&r2.digest))
        .min()
        .copied();
    let ran = ever_ran(&sim, &r2.digest);
    let last = op.last.clone().unwrap_or_default();
    HaltFigures {
        seed: sc.net.seed,
        nodes: sc.nodes,
        first_wave: ro.waves[0],
        in_first_wave: first.len(),
        failing_in_first_wave: first
            .iter()
            .filter(|id| sim.workload.fails_trial(sc.net.seed, &r2.digest, **id))
            .count(),
        halted: op.halted(),
        halted_at_wave: op.halted_at_wave(),
        failed_at_halt: last.failed,
        error_rate_new_bp: last.health_new.error_rate_bp(),
        error_rate_old_bp: last.health_old.error_rate_bp(),
        ever_ran: ran,
        head_to_halt: halt_at.map(|t| t - t0),
        failure_to_halt: halt_at
            .zip(first_failure)
            .map(|(h, f)| h.saturating_duration_since(f)),
        failure_to_reverted: reverted_at
            .zip(first_failure)
            .map(|(r, f)| r.saturating_duration_since(f)),
        halt_to_reverted: reverted_at.zip(halt_at).map(|(r, h)| r - h),
    }
}

/// (2): the trial fails on 20% of the nodes.
pub fn run_bad_trial(sc: &Scenario, ro: &Rollout) -> HaltFigures {
    let bad = Behaviour {
        trial_fail_bp: 2000,
        ..Behaviour::default()
    };
    run_bad(sc, ro, bad)
}

/// (3): half the requests answer 5xx, nothing traps.
pub fn run_bad_errors(sc: &Scenario, ro: &Rollout) -> HaltFigures {
    let bad = Behaviour {
        error_bp: 5000,
        ..Behaviour::default()
    };
    run_bad(sc, ro, bad)
}

mod recovery;
pub use recovery::{run_partitioned_canary, run_resume};
