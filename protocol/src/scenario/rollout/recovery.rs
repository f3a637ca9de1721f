//! Scenarios (4) and (5): an operator that dies mid-rollout and a resume, and a canary
//! partitioned before the halt.

use std::time::{Duration, Instant};

use crate::release::Digest;
use crate::rollout::includes;
use crate::sim::{Behaviour, Id, Sim, addr_of, node_id};

use super::super::{Scenario, node_config};
use super::{
    Operator, PartitionFigures, ResumeFigures, Rollout, TICK, all_on, drive, ever_ran,
    fleet_on_release_1, release_2, running, shop,
};

/// Runs `sim` a tick at a time until `done` (checked each tick) or `limit`; returns whether
/// it held.
fn run_until_tick(sim: &mut Sim, limit: Duration, done: impl Fn(&Sim) -> bool) -> bool {
    let end = sim.now + limit;
    while sim.now < end && !done(sim) {
        let next = sim.now + TICK;
        sim.run_until(next, |_| false);
    }
    done(sim)
}

/// The seq of the head node `id` holds staged for "shop" (its wave leaves it out).
pub fn staged_seq(sim: &Sim, id: Id) -> Option<u64> {
    let node = sim.nodes[&id].node.as_ref()?;
    node.staged(&shop()).map(|h| h.head.seq)
}

/// The first id from `from` on whose wave membership at `fraction` for `digest` is `inside`.
fn first_id(from: Id, digest: &Digest, fraction: u16, inside: bool) -> Id {
    (from..)
        .find(|i| *i != 0 && includes(digest, &node_id(*i), fraction) == inside)
        .expect("some id")
}

/// Live nodes not where wave `fraction` puts them: in it and not running `new`, or out of it
/// and running `new`. `either`: nodes that joined with no release of the app, which may run
/// either (the old one if a neighbour handed them its head first, else the wave's: they had
/// nothing to keep serving).
fn misplaced(sim: &Sim, new: &Digest, fraction: u16, either: &[Id]) -> usize {
    sim.live()
        .into_iter()
        .filter(|id| !either.contains(id))
        .filter(|id| includes(new, &node_id(*id), fraction) != (running(sim, *id) == Some(*new)))
        .count()
}

/// How long the fleet is watched with no operator, in (4).
pub const STATIC_FOR: Duration = Duration::from_secs(20);

/// (4) The operator's process dies right after it pushed wave 2: the fleet stays there (a node
/// that restarts follows wave 2 by its bucket; one that joins with no release of the app runs
/// the old release if a neighbour handed it that head first, else the wave's, having nothing
/// else to serve); then a new driver over the newest head's
/// plan completes the rollout.
pub fn run_resume(sc: &Scenario, ro: &Rollout) -> ResumeFigures {
    let (mut sim, r1) = fleet_on_release_1(sc, ro);
    let old = r1.0.digest;
    let (r2, body) = release_2(&mut sim, sc, Behaviour::default());
    let new = r2.digest;
    let (w1, w2) = (ro.waves[0], ro.waves[1]);
    // Down from before the rollout, back while wave 2 is open: one in wave 2 (not in wave 1),
    // one outside it.
    let restart_in = (1..sc.nodes)
        .find(|i| includes(&new, &node_id(*i), w2) && !includes(&new, &node_id(*i), w1))
        .expect("a node in wave 2 only");
    let restart_out = first_id(1, &new, w2, false);
    sim.crash(restart_in);
    sim.crash(restart_out);
    let expect = sim.live().len() as u32;
    let t0 = sim.now;
    let mut op = Operator::start(&mut sim, 0, r2.clone(), body, r1, 2, ro.plan(), expect);
    let pushed = drive(&mut sim, &mut op, t0 + sc.deadline * 2, |_, op| {
        op.pushes.iter().any(|p| p.wave == Some(1))
    });
    op.crash();
    let wave2_seq = op.seq;
    let settled = run_until_tick(&mut sim, sc.deadline, |s| misplaced(s, &new, w2, &[]) == 0);
    // Mid-rollout: the two crashed nodes restart, two new ones join.
    sim.restart(restart_in);
    sim.restart(restart_out);
    let join_in = first_id(sc.nodes, &new, w2, true);
    let join_out = first_id(sc.nodes, &new, w2, false);
    let live = sim.live();
    for j in [join_in, join_out] {
        let mut cfg = node_config(j, sc.active_size);
        let picks = (0..5).map(|_| live[sim.rng().below(live.len())]);
        cfg.membership.contacts = picks.collect::<Vec<_>>().into_iter().map(addr_of).collect();
        sim.add(j, cfg);
    }
    let followed = |s: &Sim| {
        running(s, restart_in) == Some(new)
            && running(s, restart_out) == Some(old)
            && staged_seq(s, restart_out) == Some(wave2_seq)
            && running(s, join_in) == Some(new)
            // Joined empty: the old release with the wave staged if a neighbour handed it the
            // old head first, else the wave's release (it had nothing to keep serving).
            && (running(s, join_out) == Some(new)
                || running(s, join_out) == Some(old) && staged_seq(s, join_out) == Some(wave2_seq))
    };
    let t_back = sim.now;
    let follow = run_until_tick(&mut sim, sc.deadline, followed).then(|| sim.now - t_back);
    let show = |s: &Sim, id: Id, what: &str| {
        let on = match running(s, id) {
            Some(d) if d == new => "the new release",
            Some(d) if d == old => "the old release",
            Some(_) => "another release",
            None => "nothing",
        };
        let staged =
            staged_seq(s, id).map_or("nothing staged".into(), |q| format!("seq {q} staged"));
        format!("{what} {id}: runs {on}, {staged}")
    };
    let followers = vec![
        show(&sim, restart_in, "restarted, in wave 2,"),
        show(&sim, restart_out, "restarted, outside wave 2,"),
        show(&sim, join_in, "joined, in wave 2,"),
        show(&sim, join_out, "joined, outside wave 2,"),
    ];
    // No operator: the fleet stays at wave 2.
    let mut worst = 0;
    let mut checks = 0;
    let t_static = sim.now;
    while sim.now < t_static + STATIC_FOR {
        sim.run(Duration::from_secs(1));
        worst = worst.max(misplaced(&sim, &new, w2, &[join_out]));
        let newest = sim
            .live()
            .iter()
            .filter_map(|id| sim.nodes[id].seq(&shop()))
            .max();
        worst += usize::from(newest.is_some_and(|s| s > wave2_seq));
        checks += 1;
    }
    let in_wave2 = super::in_wave(&sim, &new, w2).len();
    // `fleetcast rollout resume`: a new driver over the newest head's plan.
    let expect = sim.live().len() as u32;
    op.resume(expect);
    let t_resume = sim.now;
    drive(&mut sim, &mut op, t_resume + sc.deadline * 4, |_, _| false);
    let done_at = op.done().then_some(sim.now);
    let verdict = op.driver.as_ref().map(|d| format!("{:?}", d.verdict()));
    let counts = op.last.as_ref().map(|t| {
        format!(
            "seq {}: {} nodes, {} in the wave, {} active, {} pending, {} prefetched, {} failed",
            t.seq, t.nodes, t.in_wave, t.active, t.pending, t.prefetched, t.failed
        )
    });
    let last = op.seq;
    run_until_tick(&mut sim, sc.deadline, |s| all_on(s, &new, last));
    let live = sim.live();
    ResumeFigures {
        seed: sc.net.seed,
        nodes: sc.nodes,
        live: live.len(),
        wave: w2,
        pushed_wave_2: pushed,
        wave_2_settled: settled,
        in_wave_2: in_wave2,
        restarted_and_joined_followed: follow,
        followers,
        static_for: STATIC_FOR,
        static_checks: checks,
        misplaced_worst: worst,
        resumed_from_wave: 1,
        resume_to_done: done_at.map(|t| t - t_resume),
        all_active: live
            .iter()
            .filter(|id| running(&sim, **id) == Some(new))
            .count(),
        done: op.done(),
        last_verdict: verdict.unwrap_or_default(),
        last_counts: counts.unwrap_or_default(),
        expect,
    }
}

/// (5) A release that answers 5xx: a canary (in the first wave, not the entry) is partitioned
/// the moment it swaps the release in, before the halt; the fleet rolls back without it; after
/// the heal it hears of the rollback (anti-entropy) and goes back to the old release.
pub fn run_partitioned_canary(sc: &Scenario, ro: &Rollout) -> PartitionFigures {
    let (mut sim, r1) = fleet_on_release_1(sc, ro);
    let old = r1.0.digest;
    let bad = Behaviour {
        error_bp: 5000,
        ..Behaviour::default()
    };
    let (r2, body) = release_2(&mut sim, sc, bad);
    let new = r2.digest;
    let canary = super::in_wave(&sim, &new, ro.waves[0])
        .into_iter()
        .find(|i| *i != 0)
        .expect("a canary besides the entry");
    let expect = sim.live().len() as u32;
    let t0 = sim.now;
    let mut op = Operator::start(&mut sim, 0, r2.clone(), body, r1, 2, ro.plan(), expect);
    let mut partitioned_at: Option<Instant> = None;
    while sim.now < t0 + sc.deadline * 2 && op.outcome.is_none() {
        let next = sim.now + TICK;
        let watch = partitioned_at.is_none();
        sim.run_until(next, |s| watch && s.nodes[&canary].ran.contains_key(&new));
        if partitioned_at.is_none() && sim.nodes[&canary].ran.contains_key(&new) {
            sim.partition(|i| u8::from(i == canary));
            partitioned_at = Some(sim.now);
        }
        op.poll(&mut sim);
    }
    let halt_at = op.rollback().map(|p| p.at);
    let rb = op.rollback().map_or(u64::MAX, |p| p.seq);
    let others = |s: &Sim| {
        s.nodes
            .iter()
            .filter(|(i, n)| n.alive() && **i != canary)
            .all(|(i, n)| running(s, *i) == Some(old) && n.seq(&shop()).is_some_and(|q| q >= rb))
    };
    let others_back = run_until_tick(&mut sim, sc.deadline, others);
    // Longer than two anti-entropy periods: the canary, cut off, still runs the release.
    sim.run(Duration::from_secs(12));
    let canary_on_new_before_heal = running(&sim, canary) == Some(new);
    sim.heal();
    let t_heal = sim.now;
    let back = run_until_tick(&mut sim, sc.deadline, |s| {
        running(s, canary) == Some(old) && s.nodes[&canary].seq(&shop()).is_some_and(|q| q >= rb)
    });
    PartitionFigures {
        seed: sc.net.seed,
        nodes: sc.nodes,
        canary,
        partitioned_before_halt: partitioned_at.zip(halt_at).is_some_and(|(p, h)| p <= h),
        halted: op.halted(),
        partition_to_halt: partitioned_at
            .zip(halt_at)
            .map(|(p, h)| h.saturating_duration_since(p)),
        others_rolled_back: others_back,
        canary_on_new_before_heal,
        heal_to_reverted: back.then(|| sim.now - t_heal),
        all_back: all_on(&sim, &old, rb),
        ever_ran: ever_ran(&sim, &new),
    }
}
