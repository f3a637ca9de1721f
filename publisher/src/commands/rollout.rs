//! `fleetcast rollout status|pause|resume|abort`: a staged rollout as the signed heads hold it,
//! from any machine. `status` needs no keys; `pause`, `resume` and `abort` sign a new head
//! (seq + 1) with the release threshold of `--key`s: paused, unpaused (then this process
//! drives it as `release --waves` does), or a rollback to the release before.

use std::time::Duration;

use fleetcast_protocol::rollout::{self, Plan, Verdict};
use fleetcast_protocol::wire::{NodeStatus, Outcome, Position, Tally};
use fleetcast_protocol::{AppName, AppStatus, HeadKind};
use tokio::time::Instant;

use super::drive::{self, Drive};
use super::publish::{SignArgs, app_name, next_position, open_as};
use crate::error::{CliError, Result};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};
use crate::rollout::{self as view, Newest};
use crate::session::{STATUS_TIMEOUT, Session};
use crate::signing::{self, IdentityArgs};
use crate::target::{Target, TargetArgs, secs};

/// Staged rollouts: see where one is, pause it, resume it, or abort it (roll back).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "A staged rollout (`fleetcast release --waves`) lives in its signed heads: these commands work from any machine. pause/resume/abort sign a new head with the release threshold of --key.\n\nExamples:\n  fleetcast rollout status --app shop --peer 127.0.0.1:7401\n  fleetcast rollout pause --app shop --key ops.key --peer 127.0.0.1:7401\n  fleetcast rollout resume --app shop --key ops.key --peer 127.0.0.1:7401\n  fleetcast rollout abort --app shop --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key --peer 127.0.0.1:7401"
)]
pub struct Rollout {
    #[command(subcommand)]
    pub cmd: RolloutCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum RolloutCmd {
    /// The app's newest head on the agent: its wave, the fleet's counts, the gates and what
    /// they say. Needs no keys.
    Status(StatusCmd),
    /// Sign a head at the same wave, paused: agents stay where they are, and a driver that
    /// sees it stops (exit 6). `rollout resume` goes on.
    Pause(Control),
    /// Sign a head unpaused, then drive the rollout from its wave as `release --waves` does
    /// (exit 0 at 100%, 5 halted by a gate): after a pause, or when the driving process died.
    Resume(Control),
    /// Sign a rollback to the release before the rollout; exit 0 once the canaries are back
    /// (4 if not within --timeout).
    Abort(Control),
}

/// The app's newest head on the agent: its wave, the fleet's counts, the gates and what they
/// say. Needs no keys.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The verdict has no bake clock here: it says whether the wave has settled (every agent in it active or failed, the fleet counted) and whether the gates pass; the driver opens the next wave after the bake.\n\nExamples:\n  fleetcast rollout status --app shop --peer 127.0.0.1:7401\n  fleetcast rollout status --app shop --peer edge-1.example.com:7401 --json"
)]
pub struct StatusCmd {
    /// App name.
    #[arg(long)]
    pub app: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// The flags of `rollout pause|resume|abort` (each signs a new head at seq + 1).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  fleetcast rollout pause --app shop --key ops.key --peer 127.0.0.1:7401\n  fleetcast rollout resume --app shop --key ops.key --peer 127.0.0.1:7401 --timeout 120\n  fleetcast rollout abort --app shop --key ops.key --peer 127.0.0.1:7401"
)]
pub struct Control {
    /// App name.
    #[arg(long)]
    pub app: String,
    #[command(flatten)]
    pub sign: SignArgs,
    /// Fleet name; defaults to the --fleet directory's root, else the peer agent's fleet.
    #[arg(long = "fleet-name", id = "fleet_name", value_name = "NAME")]
    pub fleet_name: Option<String>,
    /// Give up after this many seconds (exit 4): for `pause`, until the peer took the head;
    /// for `abort`, until the canaries are back; for `resume`, per wave beyond its bake.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

impl Rollout {
    pub fn json(&self) -> bool {
        match &self.cmd {
            RolloutCmd::Status(c) => c.out.json,
            RolloutCmd::Pause(c) | RolloutCmd::Resume(c) | RolloutCmd::Abort(c) => c.out.json,
        }
    }

    pub async fn execute(self) -> Result<()> {
        match self.cmd {
            RolloutCmd::Status(c) => c.execute().await,
            RolloutCmd::Pause(c) => c.execute(Action::Pause).await,
            RolloutCmd::Resume(c) => c.execute(Action::Resume).await,
            RolloutCmd::Abort(c) => c.execute(Action::Abort).await,
        }
    }
}

/// The fleet's count of the head at `seq` as the agent of `st` has it: the fleet's totals
/// (`true`) when it has them, else its own subtree's (`false`).
pub fn tally_of(st: &NodeStatus, app: &AppName, seq: u64) -> Option<(Tally, bool)> {
    let of = |ts: &[Tally]| {
        ts.iter()
            .filter(|t| t.app.as_ref() == Some(app) && t.seq == seq)
            .max_by_key(|t| t.version)
            .cloned()
    };
    of(&st.fleet_tallies)
        .map(|t| (t, true))
        .or_else(|| of(&st.tallies).map(|t| (t, false)))
}

/// What `rollout status` says of a plan's count: `judge` with no bake clock (a settled wave
/// is judged as baked).
pub fn judge_now(plan: &Plan, t: &Tally, expect: u32) -> (bool, Verdict) {
    let settled = rollout::settled(t, expect);
    let bake = Duration::from_millis(plan.gates.bake_ms);
    (settled, rollout::judge(plan, t, settled.then_some(bake)))
}

/// The words of `rollout status`'s verdict.
pub fn status_words(plan: &Plan, settled: bool, v: &Verdict) -> String {
    if plan.paused {
        return "paused (fleetcast rollout resume continues)".into();
    }
    match v {
        Verdict::Pass if plan.is_last() => "settled at 100%: the rollout is complete".into(),
        Verdict::Pass => format!(
            "settled, the gates pass: a driver opens wave {} after the bake of {}",
            plan.wave + 2,
            secs(Duration::from_millis(plan.gates.bake_ms))
        ),
        Verdict::Hold { why } if settled => format!("settled; holding: {why}"),
        Verdict::Hold { why } => format!("not settled: {why}"),
        Verdict::Halt { gate, why } => {
            format!("the {gate} gate fails: {why} (a driver halts and rolls back)")
        }
    }
}

/// The app's status on the agent, or a usage error naming the agent.
fn app_of<'a>(st: &'a NodeStatus, app: &AppName, peer: &str) -> Result<&'a AppStatus> {
    st.apps.iter().find(|a| a.app == *app).ok_or_else(|| {
        CliError::usage(format!(
            "the agent at {peer} has no app {app}: release it first with `fleetcast release`"
        ))
    })
}

impl StatusCmd {
    pub async fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        let app = app_name(&self.app)?;
        let target = Target::from_args(&self.target).await?;
        let key = self.identity.read()?;
        let mut s = Session::connect_as(&target, key.as_ref()).await?;
        let st = s.status(STATUS_TIMEOUT).await?;
        let a = app_of(&st, &app, &target.label)?;
        let n = view::newest(a);
        let census = match super::status::census(&mut s, &st).await? {
            Ok(c) => Some(c.agents),
            Err(_) => None,
        };
        let counted = tally_of(&st, &app, n.pos.seq);
        let (text, ev) = render(a, &n, counted.as_ref(), census);
        out.emit(Event::RolloutStatus(Box::new(ev)));
        out.print(&text);
        Ok(())
    }
}

/// `rollout status`'s text and JSON object.
pub fn render(
    a: &AppStatus,
    n: &Newest,
    counted: Option<&(Tally, bool)>,
    census: Option<u32>,
) -> (String, json::RolloutStatus) {
    let mut o = String::new();
    let head = format!("{} {} at {} ({})", a.app, n.release.version, n.pos, n.kind);
    let expect = census.unwrap_or(0);
    let mut verdict = None;
    let mut settled = false;
    match &n.plan {
        None => {
            o.push_str(&format!(
                "{head}: not a staged rollout (its head has no plan: every agent takes it at once)\n"
            ));
        }
        Some(p) => {
            let paused = if p.paused { ", paused" } else { "" };
            o.push_str(&format!("{head}: {}{paused}\n", p.describe()));
            let waves: Vec<String> = p.waves.iter().map(|w| rollout::pct(*w)).collect();
            o.push_str(&format!("  waves: {}\n", waves.join(", ")));
            o.push_str(&format!("  gates: {}\n", view::gates_line(&p.gates)));
            match counted {
                Some((t, fleet)) => {
                    let (s, v) = judge_now(p, t, expect);
                    settled = s;
                    let words = status_words(p, s, &v);
                    o.push_str(&format!("  {}\n", view::wave_line(p, t, census, &words)));
                    if !fleet {
                        o.push_str("  (the agent's own subtree's count: the fleet's totals have not reached it yet; ask the agent the release was pushed to)\n");
                    }
                    verdict = Some(view::verdict_json(p, &v));
                }
                None => o.push_str("  no count of this head on the agent yet\n"),
            }
        }
    }
    if !n.in_force {
        o.push_str(&format!(
            "  this agent is outside the wave: it serves {} and holds {} prefetched\n",
            a.serving.as_ref().unwrap_or(&a.active).version,
            n.release.version
        ));
    }
    let t = counted.map(|(t, _)| t);
    let ev = json::RolloutStatus {
        app: a.app.to_string(),
        seq: n.pos.seq,
        epoch: n.pos.epoch,
        kind: n.kind.to_string(),
        release: (&n.release).into(),
        plan: n.plan.as_ref().map(view::plan_json),
        here: n.in_force,
        counts: t.map(|t| view::counts_json(t, census)),
        health_new: t.map(|t| view::health_json(&t.health_new)),
        health_old: t.map(|t| view::health_json(&t.health_old)),
        counted: counted.map(|(_, f)| if *f { "fleet" } else { "subtree" }.to_string()),
        settled,
        verdict,
    };
    (o, ev)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
}

impl Control {
    pub async fn execute(self, action: Action) -> Result<()> {
        let out = Out::new(self.out.json);
        let app = app_name(&self.app)?;
        let signers = self.sign.signers()?;
        let fleet = self
            .fleet_name
            .clone()
            .or_else(|| signers.root.as_ref().map(|r| r.root.fleet.clone()));
        let target = Target::from_args(&self.target).await?;
        let mut opened = open_as(&target, Some(&signers.keys[0]), fleet, &app).await?;
        let a = app_of(&opened.status, &app, &target.label)?.clone();
        let n = view::newest(&a);
        let Some(plan) = n.plan.clone() else {
            return Err(CliError::usage(format!(
                "{app}'s newest head ({} {} at {}) is not a staged rollout: nothing to {}; `fleetcast rollback` moves an app to another release",
                n.kind,
                n.release.version,
                n.pos,
                match action {
                    Action::Pause => "pause",
                    Action::Resume => "resume",
                    Action::Abort => "abort",
                }
            )));
        };
        let trust = opened.status.trust.clone();
        let epoch = signing::epoch_for(signers.root.as_ref(), Some(&trust))?;
        let timeout = Duration::from_secs(self.timeout);
        if action == Action::Abort && view::halt_target(Some(&a), &n.release).is_none() {
            return Err(CliError::usage(format!(
                "{app} {} is the app's first release: there is no release to roll back to; `fleetcast rollout pause --app {app}` stops it at its wave",
                n.release.version
            )));
        }
        let census = match action {
            Action::Pause => None,
            _ => drive::count_fleet(&mut opened.session, &opened.status, &out).await?,
        };
        let last = tally_of(&opened.status, &app, n.pos.seq)
            .map(|(t, _)| t)
            .unwrap_or_default();
        let pos = next_position(&opened, &app, &signers)?;
        let mut d = Drive {
            session: opened.session,
            fleet: opened.fleet,
            app: app.clone(),
            release: n.release.clone(),
            pos: opened.held,
            epoch,
            signers: &signers,
            trust,
            before: Some(a.clone()),
            census,
            timeout,
            out: &out,
        };
        match action {
            Action::Abort => {
                d.halt(
                    None,
                    "by the operator (fleetcast rollout abort)",
                    &plan,
                    &last,
                )
                .await
            }
            Action::Pause if plan.paused => {
                out.say(format!(
                    "{app} {} is already paused at {} (seq {}): nothing to do",
                    n.release.version,
                    plan.describe(),
                    n.pos.seq
                ));
                out.emit(Event::Done(done(&d, "already-paused", &last)));
                Ok(())
            }
            Action::Pause | Action::Resume => {
                let next = Plan {
                    paused: action == Action::Pause,
                    ..plan
                };
                let sh = drive::sign(
                    &d.fleet,
                    &d.release,
                    HeadKind::Release,
                    pos,
                    Some(next.clone()),
                    &signers,
                    &d.trust,
                )?;
                d.push(&sh, None, None)?;
                if action == Action::Resume {
                    return d.run(next).await.map(|_| ());
                }
                let outcome = peer_took(&mut d.session, &app, pos, timeout).await?;
                out.say(format!(
                    "paused {app} {} at {} (seq {}; the peer agent: {outcome}): agents stay where they are, a driver that sees it stops (exit 6); `fleetcast rollout resume --app {app}` goes on",
                    d.release.version,
                    next.describe(),
                    pos.seq
                ));
                out.emit(Event::Done(done(&d, "paused", &last)));
                Ok(())
            }
        }
    }
}

fn done(d: &Drive<'_>, result: &str, t: &Tally) -> json::Done {
    json::Done {
        result: result.into(),
        kind: HeadKind::Release.to_string(),
        app: d.app.to_string(),
        seq: d.pos.seq,
        release: (&d.release).into(),
        active: t.active,
        agents: (t.nodes > 0).then_some(t.nodes),
        failed: t.failed,
        rejected: t.rejected,
        chunks_served: 0,
        bytes_served: 0,
    }
}

/// Waits until the peer agent holds the head at `pos` (its status says so; a rejection it
/// reports is exit 1, nothing within `within` exit 4). Returns what it does with it.
async fn peer_took(
    s: &mut Session,
    app: &AppName,
    pos: Position,
    within: Duration,
) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let st = s.status(STATUS_TIMEOUT).await?;
        if let Some(r) = st
            .reports
            .iter()
            .find(|r| r.node == st.node && r.app == *app && r.seq == pos.seq)
            && let Outcome::Rejected(why) = &r.outcome
        {
            return Err(CliError::refused(format!(
                "the peer agent {} rejected the head at seq {}: {why}",
                r.node.short(),
                pos.seq
            )));
        }
        if crate::position::held(&st, app) >= pos {
            let here = st
                .apps
                .iter()
                .find(|a| a.app == *app)
                .map(view::newest)
                .filter(|n| n.pos == pos)
                .map(|n| {
                    if n.in_force {
                        "runs it"
                    } else {
                        "holds it staged"
                    }
                })
                .unwrap_or("accepted it");
            return Ok(here.to_string());
        }
        if Instant::now() >= deadline {
            return Err(CliError::timeout(format!(
                "the peer agent did not take the head at seq {} within {}: check `fleetcast rollout status --app {app}`",
                pos.seq,
                secs(within)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcast_protocol::rollout::Gates;

    fn plan(wave: u8) -> Plan {
        let gates = Gates {
            min_requests: 0,
            ..Gates::default()
        };
        Plan {
            wave,
            ..Plan::new(vec![5000, 10_000], gates).unwrap()
        }
    }

    #[test]
    fn status_judges_without_a_bake_clock() {
        let t = Tally {
            nodes: 4,
            in_wave: 2,
            active: 2,
            ..Tally::default()
        };
        let (settled, v) = judge_now(&plan(0), &t, 4);
        assert!(settled);
        assert_eq!(v, Verdict::Pass);
        assert!(
            status_words(&plan(0), settled, &v).starts_with(
                "settled, the gates pass: a driver opens wave 2 after the bake of 60s"
            ),
        );
        let (settled, v) = judge_now(&plan(1), &t, 4);
        assert_eq!(
            status_words(&plan(1), settled, &v),
            "settled at 100%: the rollout is complete"
        );
        // Fewer agents counted than the census: not settled.
        let (settled, v) = judge_now(&plan(0), &t, 5);
        assert!(!settled);
        assert!(
            status_words(&plan(0), settled, &v).starts_with("not settled: "),
            "{v:?}"
        );
        let failed = Tally { failed: 1, ..t };
        let (_, v) = judge_now(&plan(0), &failed, 4);
        assert!(
            status_words(&plan(0), true, &v)
                .starts_with("the failed gate fails: 1 agent(s) failed")
        );
    }
}
