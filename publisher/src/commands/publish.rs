//! What `release` and `rollback` share: connect, learn the app's state, sign, push, and follow
//! the head across the fleet (the decisions are [`crate::plan`] and [`crate::follow`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleetcast_protocol::wire::{AppStatus, Census, Focus, NodeStatus, Outcome, Position, Tally};
use fleetcast_protocol::{AppName, Head, HeadKind, Release, SignedHead};
use tokio::time::Instant;

use crate::error::{CliError, ErrorKind, Result};
use crate::follow::{Follow, Verdict};
use crate::json::{self, Event};
use crate::out::{Counts, Out, Progress};
use crate::plan::{Direction, Push};
use crate::position;
use crate::session::{News, STATUS_TIMEOUT, Session, census_unanswered};
use crate::signing::{self, Signers};
use crate::target::{LIBRARY_CONNECT_TIMEOUT, Target, secs};

/// Without `--expect` and without a census, `--wait` stops once the fleet's tally has been
/// still this long.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How often `--wait` takes a census.
pub const CENSUS_EVERY: Duration = Duration::from_secs(2);
/// The least time between two census queries on one session: an agent roots at most one
/// census per second per client (a query sooner gets a count of the agent alone).
pub const CENSUS_SPACING: Duration = Duration::from_millis(1100);
/// How long the peer agent may wait for its subtrees before it answers a census.
pub const CENSUS_BUDGET: Duration = Duration::from_millis(1500);

/// Flags common to commands that sign and push a head.
#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// The publisher's secret key (library callers; on the command line `--key`, repeatable,
    /// names the release keys and the first is this field).
    #[arg(skip)]
    pub key: PathBuf,
    /// The agent's QUIC address, for library callers; on the command line `--peer` (which
    /// also takes HOST:PORT) names the agent.
    #[arg(skip = SocketAddr::from(([0, 0, 0, 0], 0)))]
    pub peer: SocketAddr,
    /// Fleet name; defaults to the --fleet directory's root, else the fleet the peer agent is in.
    #[arg(long = "fleet-name", id = "fleet_name", value_name = "NAME")]
    pub fleet: Option<String>,
    /// After the peer is active, follow the fleet until every live agent runs the release (the
    /// census counts them), or some fail (exit 1), or --timeout (exit 4).
    #[arg(long)]
    pub wait: bool,
    /// Wait until this many agents (the peer included) run the release (implies --wait).
    #[arg(long, value_name = "N")]
    pub expect: Option<usize>,
    /// Give up after this many seconds (exit 4). With --waves the deadline is per wave: each
    /// wave gets its --bake plus this to settle and pass (a halt's rollback gets this to
    /// bring the canaries back).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

/// `--key` (repeatable) and `--fleet DIR`: who signs, and the fleet root the CLI goes by.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Signing")]
pub struct SignArgs {
    /// A release key's secret file (repeatable: each adds a distinct signature; a head needs
    /// the root's release threshold of them). The first is also the CLI's QUIC identity, which
    /// an enrolled fleet admits only if it is a release key.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The fleet directory (from `fleetcast fleet init`): its root.json gives the epoch, the
    /// fleet name and the release threshold, checked against the agent's.
    #[arg(long, value_name = "DIR")]
    pub fleet: Option<PathBuf>,
}

impl SignArgs {
    /// Reads the keys and the root (nothing is sent).
    pub fn signers(&self) -> Result<Signers> {
        let keys = signing::read_keys(&self.keys)?;
        let root = match &self.fleet {
            Some(d) => Some(crate::fleetdir::FleetDir::new(d).load_root()?),
            None => None,
        };
        Ok(Signers { keys, root })
    }

    /// Fills the library flags from these: the first key, and the fleet name of the root.
    pub fn apply(&self, push: &mut PushArgs, signers: &Signers) {
        push.key = self.keys[0].clone();
        if push.fleet.is_none()
            && let Some(r) = &signers.root
        {
            push.fleet = Some(r.root.fleet.clone());
        }
    }
}

/// What came of a push.
#[derive(Debug)]
pub struct PushOutcome {
    /// The head pushed; with nothing to do (`pushed` false), the head in force as the peer's
    /// status describes it, without signatures.
    pub head: SignedHead,
    /// Whether a head was pushed (false: the release was already active).
    pub pushed: bool,
    /// The peer agent's own outcome.
    pub peer: Outcome,
    /// The fleet's totals as last counted up the broadcast tree (the peer included).
    pub tally: Tally,
    /// The last census, if the peer agent answered one.
    pub census: Option<Census>,
    /// Agents known to run the release ([`PushOutcome::active`]).
    pub running: u32,
    pub chunks_served: u64,
    pub bytes_served: u64,
}

impl PushOutcome {
    /// Agents known to run the release: the census's count, or the tally's if higher (the
    /// same number the closing "N of M" line and `--expect` go by).
    pub fn active(&self) -> usize {
        self.running as usize
    }
}

/// A session to the peer agent and what it knows of one app.
pub struct Opened {
    pub session: Session,
    pub fleet: String,
    /// The app's active release on the peer, if any.
    pub current: Option<AppStatus>,
    /// The highest position (epoch, seq) the peer has accepted for the app (a release that
    /// failed to activate still holds its seq): the next head is signed above it.
    pub held: Position,
    /// The peer as the operator named it.
    pub label: String,
    /// The peer's whole status.
    pub status: NodeStatus,
}

/// Connects to `args.peer` (library callers) and returns the session and the peer's view of
/// `app`.
pub async fn open(args: &PushArgs, app: &AppName) -> Result<Opened> {
    open_at(&Target::addr(args.peer, LIBRARY_CONNECT_TIMEOUT), args, app).await
}

/// Connects to `target` and returns the session and the peer's view of `app`.
pub async fn open_at(target: &Target, args: &PushArgs, app: &AppName) -> Result<Opened> {
    let key = read_key(args)?;
    open_as(target, Some(&key), args.fleet.clone(), app).await
}

/// [`open_at`] as `identity` (ephemeral without one), for fleet `fleet` (default: the peer's).
pub async fn open_as(
    target: &Target,
    identity: Option<&SigningKey>,
    fleet: Option<String>,
    app: &AppName,
) -> Result<Opened> {
    let mut s = Session::connect_as(target, identity).await?;
    let status = s.status(STATUS_TIMEOUT).await?;
    let fleet = fleet.unwrap_or(status.fleet.clone());
    let held = position::held(&status, app);
    let current = status.apps.iter().find(|a| a.app == *app).cloned();
    Ok(Opened {
        session: s,
        fleet,
        current,
        held,
        label: target.label.clone(),
        status,
    })
}

/// Reads the publisher's secret key (before anything is sent).
pub fn read_key(args: &PushArgs) -> Result<SigningKey> {
    signing::read_key(&args.key)
}

/// Signs `release` as the next seq of the app and pushes it; returns once the peer agent has
/// activated it (and, with --wait, the agents behind it), or fails with the reason it gave.
/// Library callers: human output, the direction read from the peer's view.
pub async fn push(
    args: &PushArgs,
    opened: Opened,
    release: Release,
    kind: HeadKind,
) -> Result<PushOutcome> {
    let key = read_key(args)?;
    let from = opened.current.as_ref().map(|a| a.active.version.clone());
    let direction = match (kind, &from) {
        (HeadKind::Rollback, Some(f)) if release.version < *f => Direction::Back,
        (HeadKind::Rollback, Some(f)) if release.version > *f => Direction::Forward,
        _ => Direction::Release,
    };
    let plan = Push {
        release,
        from,
        direction,
        same_bytes_as: None,
        message: String::new(),
    };
    let signers = Signers {
        keys: vec![key],
        root: None,
    };
    push_signed(args, opened, &plan, kind, &signers, &Out::human()).await
}

/// The head of `plan` at `pos` (not signed).
pub fn build_head(fleet: String, plan: &Push, kind: HeadKind, pos: Position) -> Head {
    Head {
        fleet,
        app: plan.release.app.clone(),
        seq: pos.seq,
        release: plan.release.clone(),
        kind,
        issued_at_ms: crate::fleetdir::now_ms(),
        epoch: pos.epoch,
        plan: None,
    }
}

/// Where the next head of the app goes on the peer of `opened`: above what it holds, under
/// the epoch of the `--fleet` root (checked against the agent's) or the agent's.
pub fn next_position(opened: &Opened, app: &AppName, signers: &Signers) -> Result<Position> {
    let epoch = signing::epoch_for(signers.root.as_ref(), Some(&opened.status.trust))?;
    position::next(app, opened.held, epoch)
}

/// Signs `plan.release` with every key as the next position of the app, pushes it and follows
/// it. A head signed by fewer release keys than the fleet needs is not sent.
pub async fn push_signed(
    args: &PushArgs,
    opened: Opened,
    plan: &Push,
    kind: HeadKind,
    signers: &Signers,
    out: &Out,
) -> Result<PushOutcome> {
    let pos = next_position(&opened, &plan.release.app, signers)?;
    let head = signing::sign_all(
        build_head(opened.fleet.clone(), plan, kind, pos),
        &signers.keys,
    );
    let count = signing::tally(&head, signers.root.as_ref(), Some(&opened.status.trust));
    if !count.complete() {
        return Err(CliError::usage(format!(
            "the head is signed by {} release key(s): give more --key, or sign it in turn (--sign-only --out FILE, then fleetcast sign FILE --key ..., then fleetcast push FILE); nothing was sent",
            count.describe()
        )));
    }
    send_head(args, opened, plan, head, out).await
}

/// Pushes `head` (signed) and follows it.
pub async fn send_head(
    args: &PushArgs,
    opened: Opened,
    plan: &Push,
    head: SignedHead,
    out: &Out,
) -> Result<PushOutcome> {
    let neighbours = opened.status.active_view.len();
    let Opened {
        session: mut s,
        label,
        ..
    } = opened;
    let seq = head.head.seq;
    let kind = head.head.kind;
    s.push_head(&head)?;
    let (app, r) = (&head.head.app, &head.head.release);
    let pos = Position {
        epoch: head.head.epoch,
        seq,
    };
    out.say(format!(
        "signed {kind} {app} {} as {pos} by {} (digest {}, {} bytes); pushed to {} (agent {})",
        r.version,
        crate::table::plural(head.signatures.len() as u64, "key"),
        r.digest.short(),
        r.size,
        s.addr(),
        s.peer().short()
    ));
    out.emit(Event::Pushed(json::Pushed {
        kind: kind.to_string(),
        app: app.to_string(),
        seq,
        epoch: head.head.epoch,
        release: r.into(),
        from_version: plan.from.as_ref().map(|v| v.to_string()),
        direction: plan.direction.name().into(),
        same_bytes_as: plan.same_bytes_as.as_ref().map(|v| v.to_string()),
        peer: s.addr().to_string(),
        peer_node: s.peer().to_string(),
    }));
    let timeout = Duration::from_secs(args.timeout);
    let deadline = Instant::now() + timeout;
    let expect = args.expect.map(|n| n.min(u32::MAX as usize) as u32);
    let wait = args.wait || expect.is_some();
    let mut f = Follow::new(app.clone(), r.version.clone(), seq, expect);
    let focus = Focus {
        app: app.clone(),
        seq,
    };
    let mut progress = wait.then(|| Progress::new(out));
    let mut shown = 0usize;

    // The peer agent's own outcome first.
    let peer_outcome = loop {
        let news = s.next_news(deadline).await?;
        match news {
            None => {
                return Err(CliError::timeout(format!(
                    "no answer from the peer agent within {}: it may still be fetching; check `fleetcast status --peer {label}`",
                    secs(timeout)
                )));
            }
            Some(News::Report(rep)) => {
                if rep.app != *app || rep.seq != seq || rep.node != s.peer() {
                    continue;
                }
                let line = format!("  agent {} (peer): {}", rep.node.short(), rep.outcome);
                match &progress {
                    Some(p) => p.say(line),
                    None => out.say(line),
                }
                out.emit(Event::Peer((&rep).into()));
                if rep.outcome != Outcome::Active {
                    return Err(CliError::refused(format!(
                        "the peer agent {} refused {app} {} (seq {seq}): {}",
                        rep.node.short(),
                        r.version,
                        rep.outcome
                    )));
                }
                break rep.outcome;
            }
            Some(News::Tally(t)) => {
                if f.on_tally(t) {
                    shown = show_samples(&f, shown, progress.as_ref(), out);
                }
            }
            Some(News::Census { .. }) => {}
        }
    };

    if wait {
        let p = progress.as_mut().expect("progress while waiting");
        let until = Until { deadline, timeout };
        follow(&mut s, &mut f, &focus, until, neighbours, p, shown, out).await?;
        p.finish();
        out.say(f.summary());
    } else {
        census_into(&mut s, &mut f, &focus, out).await?;
        out.say(f.first_line());
    }
    let outcome = PushOutcome {
        head,
        pushed: true,
        peer: peer_outcome,
        tally: f.tally.clone(),
        census: f.census.clone(),
        running: f.running(),
        chunks_served: s.chunks_served,
        bytes_served: s.bytes_served,
    };
    out.emit(Event::Done(done("active", &outcome, &f)));
    Ok(outcome)
}

/// Nothing to push: `message` says why. With `--wait`, one census says how many agents run it.
pub async fn already_active(
    args: &PushArgs,
    opened: Opened,
    message: &str,
    out: &Out,
) -> Result<PushOutcome> {
    let Opened {
        session: mut s,
        fleet,
        current,
        status,
        ..
    } = opened;
    let a = current.expect("an active app");
    out.say(message);
    let head = SignedHead {
        head: Head {
            fleet,
            app: a.app.clone(),
            seq: a.seq,
            release: a.active.clone(),
            kind: a.kind,
            issued_at_ms: a.issued_at_ms,
            epoch: a.epoch,
            plan: None,
        },
        signatures: Vec::new(),
    };
    let tally = status
        .fleet_tallies
        .iter()
        .chain(&status.tallies)
        .find(|t| t.app.as_ref() == Some(&a.app) && t.seq == a.seq)
        .cloned()
        .unwrap_or_default();
    let mut f = Follow::new(a.app.clone(), a.active.version.clone(), a.seq, None);
    f.on_tally(tally);
    if args.wait || args.expect.is_some() {
        let focus = Focus {
            app: a.app.clone(),
            seq: a.seq,
        };
        census_into(&mut s, &mut f, &focus, out).await?;
        out.say(f.summary());
    }
    let outcome = PushOutcome {
        head,
        pushed: false,
        peer: Outcome::Active,
        tally: f.tally.clone(),
        census: f.census.clone(),
        running: f.running(),
        chunks_served: 0,
        bytes_served: 0,
    };
    out.emit(Event::Done(done("already-active", &outcome, &f)));
    Ok(outcome)
}

fn done(result: &str, o: &PushOutcome, f: &Follow) -> json::Done {
    let h = &o.head.head;
    json::Done {
        result: result.into(),
        kind: h.kind.to_string(),
        app: h.app.to_string(),
        seq: h.seq,
        release: (&h.release).into(),
        active: f.running(),
        agents: f.fleet_size(),
        failed: f.tally.failed,
        rejected: f.tally.rejected,
        chunks_served: o.chunks_served,
        bytes_served: o.bytes_served,
    }
}

/// One census into `f` (a census nobody answers degrades to "unknown").
async fn census_into(s: &mut Session, f: &mut Follow, focus: &Focus, out: &Out) -> Result<()> {
    match s.census(Some(focus.clone()), CENSUS_BUDGET).await {
        Ok(c) => f.on_census(c),
        Err(e) if e.kind == ErrorKind::Timeout => f.on_census_failed(e.message),
        Err(e) => return Err(e),
    }
    out.emit(Event::Census(census_event(f)));
    Ok(())
}

fn census_event(f: &Follow) -> json::CensusEvent {
    match &f.census {
        Some(c) => {
            let not_running = c.agents.saturating_sub(f.running());
            json::CensusEvent {
                agents: Some(c.agents),
                unanswered: Some(c.unanswered),
                active: Some(f.running()),
                missing: Some(c.missing.iter().map(json::MissingJson::from).collect()),
                more_missing: Some(not_running.saturating_sub(c.missing.len() as u32)),
                error: None,
            }
        }
        None => json::CensusEvent {
            agents: None,
            unanswered: None,
            active: None,
            missing: None,
            more_missing: None,
            error: f.census_error.clone(),
        },
    }
}

/// Prints the tally's samples not shown yet; returns how many are shown now.
fn show_samples(f: &Follow, shown: usize, progress: Option<&Progress>, out: &Out) -> usize {
    for r in f.tally.samples.iter().skip(shown) {
        let line = format!("  agent {}: {}", r.node.short(), r.outcome);
        match progress {
            Some(p) => p.say(line),
            None => out.say(line),
        }
        out.emit(Event::Agent(r.into()));
    }
    f.tally.samples.len().max(shown)
}

/// When `--wait` gives up.
struct Until {
    deadline: Instant,
    timeout: Duration,
}

/// `--wait`: tallies for live progress, a census every [`CENSUS_EVERY`] and when the tally
/// settles, until [`Follow::verdict`] says done or refused, or the deadline.
#[allow(clippy::too_many_arguments)]
async fn follow(
    s: &mut Session,
    f: &mut Follow,
    focus: &Focus,
    Until { deadline, timeout }: Until,
    neighbours: usize,
    progress: &mut Progress,
    mut shown: usize,
    out: &Out,
) -> Result<()> {
    // An answer with the peer alone and every neighbour unanswered is what the peer gives
    // beyond its rate cap for clients: asked again once, after CENSUS_SPACING.
    let alone = |c: &Census| c.agents == 1 && neighbours > 0 && c.unanswered as usize >= neighbours;
    let (mut retry, mut retried) = (false, false);
    let mut last_move = Instant::now();
    // The census in flight (its id and when to give up on it), when the last query went out,
    // and when the last answer came.
    let mut inflight: Option<(u64, Instant)> = None;
    let mut next_census = Instant::now();
    let mut asked_at: Option<Instant> = None;
    let mut census_at: Option<Instant> = None;
    let counts = |f: &Follow, s: &Session| Counts {
        active: f.running(),
        failed: f.tally.failed,
        rejected: f.tally.rejected,
        agents: f.fleet_size(),
        expected: f.expect,
        chunks_served: s.chunks_served,
        bytes_served: s.bytes_served,
    };
    // Once done, one more census if the last one is older than the tally's last move (an agent
    // may have joined since), so the closing "N of M" is current.
    let mut closing_asked = false;
    loop {
        let now = Instant::now();
        let settled = now >= last_move + SETTLE;
        let stale = census_at.is_none_or(|t| t < last_move);
        let closing = stale && !closing_asked && !f.census_unavailable();
        let done = match f.verdict(settled) {
            Verdict::Refused(e) => return Err(e),
            // A census on its way is waited for (until its own deadline), for "N of M".
            Verdict::Done if inflight.is_none() && !retry && !closing => return Ok(()),
            Verdict::Done => true,
            Verdict::Wait => false,
        };
        if now >= deadline {
            return match done {
                true => Ok(()),
                false => Err(f.timed_out(timeout)),
            };
        }
        // A census every CENSUS_EVERY, and one more once the tally settles after it moved.
        let spaced = asked_at.is_none_or(|t| now >= t + CENSUS_SPACING);
        if (!done || retry || closing)
            && inflight.is_none()
            && !f.census_unavailable()
            && spaced
            && (retry || now >= next_census || (stale && settled) || (done && closing))
        {
            retry = false;
            closing_asked |= done;
            let id = s.start_census(Some(focus.clone()), CENSUS_BUDGET)?;
            inflight = Some((id, now + CENSUS_BUDGET + crate::session::CENSUS_MARGIN));
            asked_at = Some(now);
        }
        progress.update(counts(f, s));
        let mut wake = deadline;
        if let Some((_, until)) = inflight {
            wake = wake.min(until);
        } else if let Some(t) = asked_at {
            wake = wake.min((t + CENSUS_SPACING).max(next_census.min(last_move + SETTLE)));
        }
        if !settled {
            wake = wake.min(last_move + SETTLE);
        }
        // Redraw the bytes served now and then.
        wake = wake.min(now + Duration::from_millis(500));
        match s.next_news(wake).await? {
            None => {
                if let Some((_, until)) = inflight
                    && Instant::now() >= until
                {
                    inflight = None;
                    next_census = Instant::now() + CENSUS_EVERY;
                    let had = f.census.is_some();
                    f.on_census_failed(
                        census_unanswered(s.addr(), CENSUS_BUDGET + crate::session::CENSUS_MARGIN)
                            .message,
                    );
                    if !had {
                        out.emit(Event::Census(census_event(f)));
                    }
                }
            }
            Some(News::Tally(t)) => {
                if f.on_tally(t) {
                    last_move = Instant::now();
                    shown = show_samples(f, shown, Some(&*progress), out);
                }
            }
            Some(News::Census { id, count }) => {
                if inflight.is_some_and(|(want, _)| want == id) {
                    inflight = None;
                    next_census = Instant::now() + CENSUS_EVERY;
                    match count {
                        Some(c) if alone(&c) && !retried => {
                            (retry, retried) = (true, true);
                        }
                        Some(c) => {
                            let before = census_event(f);
                            f.on_census(c);
                            census_at = Some(Instant::now());
                            let now_ev = census_event(f);
                            if now_ev != before {
                                out.emit(Event::Census(now_ev));
                            }
                        }
                        // Already counted in this census: nothing new.
                        None => {}
                    }
                }
            }
            Some(News::Report(_)) => {}
        }
    }
}

/// Parses an app name with a message that says what is allowed.
pub fn app_name(s: &str) -> Result<AppName> {
    AppName::new(s).map_err(|e| CliError::usage(format!("--app {s:?}: {e}")))
}
