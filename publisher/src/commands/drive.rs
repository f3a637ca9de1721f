//! Driving a staged rollout from this process (`release --waves`, `rollout resume`): the IO
//! loop around [`fleetcast_protocol::rollout::Driver`]. It reads the fleet's tallies of the
//! open wave's head from the session, feeds them and the time to the driver, and does what the
//! driver says: sign and push the next wave's head, stop at 100%, or halt (a signed rollback
//! to the release before, then wait for the canaries to be back). It also watches the peer's
//! status for a newer head (someone paused, aborted or replaced the rollout): then it stops.
//!
//! Every decision is in the signed heads: if this process dies, the fleet stays at its wave,
//! and `fleetcast rollout resume` goes on from any machine with the keys.

use std::time::Duration;

use fleetcast_protocol::rollout::{self, Driver, Gate, Plan, Step};
use fleetcast_protocol::wire::{NodeStatus, Outcome, Position, Tally};
use fleetcast_protocol::{AppName, AppStatus, Head, HeadKind, Release, SignedHead, TrustStatus};
use tokio::time::Instant;

use crate::error::{CliError, ErrorKind, Result};
use crate::json::{self, Event};
use crate::out::{Live, Out};
use crate::rollout as view;
use crate::session::{News, STATUS_TIMEOUT, Session};
use crate::signing::{self, Signers};
use crate::table::plural;
use crate::target::secs;

/// How often the driver asks the peer for its status (to see a newer head: a pause, an abort).
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How often the live view is redrawn (and the bake clock fed to the driver) without news.
const TICK: Duration = Duration::from_millis(250);

/// A staged rollout this process drives over one session.
pub struct Drive<'a> {
    pub session: Session,
    pub fleet: String,
    pub app: AppName,
    /// The release rolled out.
    pub release: Release,
    /// The position of the newest head pushed (the open wave's), or the peer's before any.
    pub pos: Position,
    /// The epoch new heads are signed under (the root's).
    pub epoch: u64,
    pub signers: &'a Signers,
    /// The peer's trust status (how many signatures a head needs).
    pub trust: TrustStatus,
    /// The peer's view of the app before this process pushed anything (what a halt goes
    /// back to).
    pub before: Option<AppStatus>,
    /// The fleet's size by a census before the rollout (`None`: the census failed).
    pub census: Option<u32>,
    /// `--timeout`: each wave gets its bake plus this to settle and pass.
    pub timeout: Duration,
    pub out: &'a Out,
}

/// How a rollout ended (when it did not fail).
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The last wave passed.
    Promoted,
    /// `rollout abort`: rolled back, the canaries are back.
    Aborted,
}

/// Signs a head of `app` at `pos` with every key, refusing (nothing sent) one with fewer
/// signatures than the fleet needs.
pub fn sign(
    fleet: &str,
    release: &Release,
    kind: HeadKind,
    pos: Position,
    plan: Option<Plan>,
    signers: &Signers,
    trust: &TrustStatus,
) -> Result<SignedHead> {
    let head = Head {
        fleet: fleet.to_string(),
        app: release.app.clone(),
        seq: pos.seq,
        release: release.clone(),
        kind,
        issued_at_ms: crate::fleetdir::now_ms(),
        epoch: pos.epoch,
        plan,
    };
    let sh = signing::sign_all(head, &signers.keys);
    let count = signing::tally(&sh, signers.root.as_ref(), Some(trust));
    if !count.complete() {
        return Err(CliError::usage(format!(
            "the head is signed by {} release key(s): a staged rollout signs a head per wave, so give the release threshold of --key (nothing was sent)",
            count.describe()
        )));
    }
    Ok(sh)
}

/// What a head is, for the line that says it was pushed.
fn head_words(h: &Head) -> String {
    match (&h.plan, h.kind) {
        (Some(p), _) if p.paused => format!(
            "{} of {} {}, paused",
            p.describe(),
            h.app,
            h.release.version
        ),
        (Some(p), _) => format!("{} of {} {}", p.describe(), h.app, h.release.version),
        (None, HeadKind::Rollback) => format!("rollback of {} to {}", h.app, h.release.version),
        (None, _) => format!("{} {}", h.app, h.release.version),
    }
}

impl Drive<'_> {
    /// Pushes `sh` over the session and says so (a line and a `pushed` event).
    pub fn push(
        &mut self,
        sh: &SignedHead,
        from: Option<&Release>,
        live: Option<&Live>,
    ) -> Result<()> {
        self.session.push_head(sh)?;
        let h = &sh.head;
        self.pos = Position {
            epoch: h.epoch,
            seq: h.seq,
        };
        let line = format!(
            "signed {} as {} by {}; pushed to {} (agent {})",
            head_words(h),
            self.pos,
            plural(sh.signatures.len() as u64, "key"),
            self.session.addr(),
            self.session.peer().short()
        );
        match live {
            Some(l) => l.say(line),
            None => self.out.say(line),
        }
        let direction = match from {
            Some(f) if h.release.version < f.version => "back",
            Some(f) if h.release.version > f.version && h.kind == HeadKind::Rollback => "forward",
            _ => "release",
        };
        self.out.emit(Event::Pushed(json::Pushed {
            kind: h.kind.to_string(),
            app: h.app.to_string(),
            seq: h.seq,
            epoch: h.epoch,
            release: (&h.release).into(),
            from_version: from.map(|f| f.version.to_string()),
            direction: direction.into(),
            same_bytes_as: None,
            peer: self.session.addr().to_string(),
            peer_node: self.session.peer().to_string(),
        }));
        Ok(())
    }

    /// The next position of the app (seq + 1 in the same epoch).
    fn next_pos(&self) -> Result<Position> {
        crate::position::next(&self.app, self.pos, self.epoch)
    }

    /// Drives `plan` (whose head is pushed, at `self.pos`) to 100%, or halts.
    pub async fn run(&mut self, plan: Plan) -> Result<Ended> {
        let expect = self.census.unwrap_or(0);
        self.out
            .say(format!("gates: {}", view::gates_line(&plan.gates)));
        let mut driver = Driver::new(plan, expect);
        let mut live = Live::new(self.out);
        let start = Instant::now();
        let mut tally = Tally::default();
        let mut wave_deadline = Instant::now() + self.wave_budget(driver.plan());
        let mut next_status = Instant::now() + STATUS_EVERY;
        loop {
            let now = Instant::now();
            let now_ms = now.duration_since(start).as_millis() as u64;
            let mut step = driver.on_tally(now_ms, &tally);
            if view::empty_wave(driver.plan(), &tally, expect)
                && let Some(next) = driver.plan().advanced()
            {
                live.say(format!(
                    "{} includes none of the {} agents: opening the next wave",
                    driver.plan().describe(),
                    tally.nodes
                ));
                step = Step::Advance(next);
            }
            self.show(&mut live, driver.plan(), &tally, driver.verdict());
            match step {
                Step::Wait => {}
                Step::Advance(next) => {
                    live.end_wave();
                    let pos = self.next_pos()?;
                    let sh = sign(
                        &self.fleet,
                        &self.release,
                        HeadKind::Release,
                        pos,
                        Some(next.clone()),
                        self.signers,
                        &self.trust,
                    )?;
                    self.push(&sh, None, Some(&live))?;
                    driver.advanced(next);
                    tally = Tally::default();
                    wave_deadline = Instant::now() + self.wave_budget(driver.plan());
                    continue;
                }
                Step::Done => {
                    live.finish();
                    let fleet = tally.nodes.max(expect);
                    self.out.say(format!(
                        "promoted to 100%: {} of {} agents run {} {} (seq {})",
                        tally.active, fleet, self.app, self.release.version, self.pos.seq
                    ));
                    self.out.emit(Event::Done(self.done(
                        "promoted",
                        HeadKind::Release,
                        &self.release.clone(),
                        &tally,
                        fleet,
                    )));
                    return Ok(Ended::Promoted);
                }
                Step::Halt { gate, why } => {
                    live.finish();
                    let wave = driver.plan().clone();
                    return self
                        .halt(Some(gate), &why, &wave, &tally)
                        .await
                        .map(|_| Ended::Aborted);
                }
            }
            if now >= wave_deadline {
                live.finish();
                let p = driver.plan();
                let why = match driver.verdict() {
                    rollout::Verdict::Hold { why } => why.clone(),
                    other => format!("{other:?}"),
                };
                return Err(CliError::timeout(format!(
                    "{} of {} {} did not pass within {} (its bake {} and --timeout {}): {why}; the fleet stays at this wave: `fleetcast rollout resume --app {}` goes on, `fleetcast rollout abort --app {}` rolls back",
                    p.describe(),
                    self.app,
                    self.release.version,
                    secs(self.wave_budget(p)),
                    secs(Duration::from_millis(p.gates.bake_ms)),
                    secs(self.timeout),
                    self.app,
                    self.app
                )));
            }
            if now >= next_status {
                if let Err(e) = self.check_superseded(driver.plan()).await {
                    live.finish();
                    return Err(e);
                }
                next_status = Instant::now() + STATUS_EVERY;
            }
            let wake = (Instant::now() + TICK).min(wave_deadline).min(next_status);
            match self.session.next_news(wake).await? {
                Some(News::Tally(t)) => {
                    if t.app.as_ref() == Some(&self.app)
                        && t.seq == self.pos.seq
                        && t.version >= tally.version
                    {
                        tally = t;
                    }
                }
                Some(News::Report(r)) => {
                    if r.node == self.session.peer()
                        && r.app == self.app
                        && r.seq == self.pos.seq
                        && let Outcome::Rejected(why) = &r.outcome
                    {
                        live.finish();
                        return Err(CliError::refused(format!(
                            "the peer agent {} rejected {} (seq {}): {why}",
                            r.node.short(),
                            head_words_of(&self.app, &self.release),
                            r.seq
                        )));
                    }
                }
                Some(News::Census { .. }) | None => {}
            }
        }
    }

    /// Each wave's deadline: its bake, plus `--timeout` to settle and pass.
    fn wave_budget(&self, p: &Plan) -> Duration {
        Duration::from_millis(p.gates.bake_ms) + self.timeout
    }

    fn show(&self, live: &mut Live, plan: &Plan, t: &Tally, v: &rollout::Verdict) {
        let line = view::wave_line(plan, t, self.census, &view::next_words(plan, v));
        let key = view::view_key(t, plan, v);
        if live.show(&line, &key) {
            self.out.emit(Event::Rollout(Box::new(json::Rollout {
                app: self.app.to_string(),
                seq: self.pos.seq,
                release: (&self.release).into(),
                plan: view::plan_json(plan),
                counts: view::counts_json(t, self.census),
                health_new: view::health_json(&t.health_new),
                health_old: view::health_json(&t.health_old),
                verdict: view::verdict_json(plan, v),
            })));
        }
    }

    /// Fails with [`ErrorKind::Superseded`] when the peer holds a newer head of the app than
    /// the one this process pushed last.
    async fn check_superseded(&mut self, plan: &Plan) -> Result<()> {
        let st = self.session.status(STATUS_TIMEOUT).await?;
        let held = crate::position::held(&st, &self.app);
        if held <= self.pos {
            return Ok(());
        }
        let newer = st
            .apps
            .iter()
            .find(|a| a.app == self.app)
            .map(view::newest)
            .filter(|n| n.pos > self.pos);
        let what = match &newer {
            Some(n) => match &n.plan {
                Some(p) if p.paused => format!(
                    "someone paused the rollout ({} {}, {}): this driver stops and the fleet stays at that wave; `fleetcast rollout resume --app {}` goes on",
                    n.pos,
                    n.release.version,
                    p.describe(),
                    self.app
                ),
                Some(p) => format!(
                    "another driver pushed {} of {} {} at {}: this one stops",
                    p.describe(),
                    self.app,
                    n.release.version,
                    n.pos
                ),
                None => format!(
                    "a {} head of {} {} was pushed at {}: this driver stops (the rollout is over)",
                    n.kind, self.app, n.release.version, n.pos
                ),
            },
            None => format!(
                "the peer agent holds a newer head of {} at {held}: this driver stops",
                self.app
            ),
        };
        Err(CliError::superseded(format!(
            "{what} (this driver was at {})",
            plan.describe()
        )))
    }

    fn done(&self, result: &str, kind: HeadKind, r: &Release, t: &Tally, fleet: u32) -> json::Done {
        json::Done {
            result: result.into(),
            kind: kind.to_string(),
            app: self.app.to_string(),
            seq: self.pos.seq,
            release: r.into(),
            active: t.active,
            agents: (fleet > 0).then_some(fleet),
            failed: t.failed,
            rejected: t.rejected,
            chunks_served: self.session.chunks_served,
            bytes_served: self.session.bytes_served,
        }
    }

    /// Halts the rollout at `wave` (`gate`: which gate; `None`: an operator's abort): a signed
    /// rollback to the release before, then waits (up to `--timeout`) until the rollback
    /// head's count shows the canaries back. With no release before, a paused head leaves
    /// the fleet at its wave. A gate's halt fails with [`ErrorKind::Halted`] (exit 5); an abort
    /// returns `Ok` once the canaries are back.
    pub async fn halt(
        &mut self,
        gate: Option<Gate>,
        why: &str,
        wave: &Plan,
        last: &Tally,
    ) -> Result<()> {
        let by = match gate {
            Some(g) => format!("halted by the {g} gate at {}: {why}", wave.describe()),
            None => format!("aborted at {}: {why}", wave.describe()),
        };
        self.out.say(&by);
        let Some(target) = view::halt_target(self.before.as_ref(), &self.release) else {
            let paused = Plan {
                paused: true,
                ..wave.clone()
            };
            let pos = self.next_pos()?;
            let sh = sign(
                &self.fleet,
                &self.release,
                HeadKind::Release,
                pos,
                Some(paused),
                self.signers,
                &self.trust,
            )?;
            self.push(&sh, None, None)?;
            self.out.emit(Event::Halted(json::Halted {
                app: self.app.to_string(),
                gate: gate.map(|g| g.name().into()),
                why: why.into(),
                wave: u32::from(wave.wave) + 1,
                rollback_seq: None,
                rolled_back_to: None,
                back: 0,
                complete: false,
            }));
            let msg = format!(
                "{by}; {} {} is the app's first release, so there is nothing to roll back to: the fleet stays at {}, paused (seq {}); release a fixed version, or `fleetcast rollout resume --app {}`",
                self.app,
                self.release.version,
                wave.describe(),
                self.pos.seq,
                self.app
            );
            return Err(CliError::new(
                if gate.is_some() {
                    ErrorKind::Halted
                } else {
                    ErrorKind::Refused
                },
                msg,
            ));
        };
        let pos = self.next_pos()?;
        let sh = sign(
            &self.fleet,
            &target,
            HeadKind::Rollback,
            pos,
            None,
            self.signers,
            &self.trust,
        )?;
        let rolling = self.release.clone();
        self.push(&sh, Some(&rolling), None)?;
        // Every agent the staged head counted (or the census) is to be back.
        let want = last.nodes.max(self.census.unwrap_or(0)).max(1);
        let back = self.wait_back(want).await?;
        let complete = back.active >= want;
        self.out.emit(Event::Halted(json::Halted {
            app: self.app.to_string(),
            gate: gate.map(|g| g.name().into()),
            why: why.into(),
            wave: u32::from(wave.wave) + 1,
            rollback_seq: Some(self.pos.seq),
            rolled_back_to: Some((&target).into()),
            back: back.active,
            complete,
        }));
        let state = if complete {
            format!(
                "{} of {want} agents back on {} {} (seq {})",
                back.active, self.app, target.version, self.pos.seq
            )
        } else {
            format!(
                "only {} of {want} agents confirmed back on {} {} (seq {}) within {}: see `fleetcast rollout status --app {}`",
                back.active,
                self.app,
                target.version,
                self.pos.seq,
                secs(self.timeout),
                self.app
            )
        };
        match gate {
            Some(_) => Err(CliError::halted(format!("{by}; rolled back: {state}"))),
            None if complete => {
                self.out.say(format!("rolled back: {state}"));
                self.out.emit(Event::Done(self.done(
                    "aborted",
                    HeadKind::Rollback,
                    &target,
                    &back,
                    want,
                )));
                Ok(())
            }
            None => Err(CliError::timeout(format!(
                "{by}; rollback pushed, but {state}"
            ))),
        }
    }

    /// The rollback head's fleet count once `want` agents are active on it, or the last one
    /// at `--timeout`.
    async fn wait_back(&mut self, want: u32) -> Result<Tally> {
        let deadline = Instant::now() + self.timeout;
        let mut t = Tally::default();
        while t.active < want {
            match self.session.next_news(deadline).await? {
                None => break,
                Some(News::Tally(n)) => {
                    if n.app.as_ref() == Some(&self.app)
                        && n.seq == self.pos.seq
                        && n.version >= t.version
                    {
                        let moved = (n.active, n.failed) != (t.active, t.failed);
                        t = n;
                        if moved {
                            self.out.say(format!(
                                "  rollback: {} of {want} agents back, {} failed",
                                t.active, t.failed
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        }
        Ok(t)
    }
}

/// Counts the fleet through the peer (a census) before a rollout: each wave waits until that
/// many agents counted themselves for its head. `None` (and said) when the census failed.
pub async fn count_fleet(s: &mut Session, st: &NodeStatus, out: &Out) -> Result<Option<u32>> {
    match super::status::census(s, st).await? {
        Ok(c) if c.unanswered > 0 => {
            out.say(format!(
                "the census counted {} ({} did not answer in time): each wave waits until at least that many count themselves",
                plural(c.agents, "agent"),
                plural(c.unanswered, "neighbour")
            ));
            Ok(Some(c.agents))
        }
        Ok(c) => {
            out.say(format!(
                "the fleet has {} (census)",
                plural(c.agents, "agent")
            ));
            Ok(Some(c.agents))
        }
        Err(why) => {
            out.say(format!(
                "the fleet's size is not known ({why}): each wave settles on the agents that report, not on a count of the fleet"
            ));
            Ok(None)
        }
    }
}

fn head_words_of(app: &AppName, r: &Release) -> String {
    format!("{app} {}", r.version)
}
