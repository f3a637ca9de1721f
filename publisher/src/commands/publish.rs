//! What `release` and `rollback` share: connect, learn the seq, sign, push, wait for reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fleetcast_protocol::wire::{AppStatus, Outcome, Tally};
use fleetcast_protocol::{AppName, Head, HeadKind, Release, SignedHead};
use tokio::time::Instant;

use crate::session::{News, Session};

/// Flags common to commands that sign and push a head.
#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// The publisher's secret key (from `fleetcast keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// An agent's QUIC address to inject the head at.
    #[arg(long)]
    pub peer: SocketAddr,
    /// Fleet name; defaults to the fleet the peer agent is in.
    #[arg(long)]
    pub fleet: Option<String>,
    /// After the peer is active, keep listening to the fleet's totals (counted up the broadcast
    /// tree) until they stop changing.
    #[arg(long)]
    pub wait: bool,
    /// Wait until this many agents (the peer included) run the release.
    #[arg(long)]
    pub expect: Option<usize>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// What came of a push.
#[derive(Debug)]
pub struct PushOutcome {
    pub head: SignedHead,
    /// The peer agent's own outcome.
    pub peer: Outcome,
    /// The fleet's totals as last counted up the broadcast tree (the peer included).
    pub tally: Tally,
    pub chunks_served: u64,
}

impl PushOutcome {
    /// Agents counted as running the release.
    pub fn active(&self) -> usize {
        self.tally.active as usize
    }
}

/// Connects and returns the session and the peer's view of `app`.
pub async fn open(args: &PushArgs, app: &AppName) -> Result<Opened> {
    let mut s = Session::connect(args.peer, Duration::from_secs(10)).await?;
    let status = s.status(Duration::from_secs(10)).await?;
    let fleet = args.fleet.clone().unwrap_or(status.fleet.clone());
    let accepted = status
        .seqs
        .iter()
        .filter(|(a, _)| a == app)
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0);
    let app_status = status.apps.into_iter().find(|a| a.app == *app);
    let seq = accepted.max(app_status.as_ref().map_or(0, |a| a.seq));
    Ok(Opened {
        session: s,
        fleet,
        current: app_status,
        seq,
    })
}

/// A session to the peer agent and what it knows of one app.
pub struct Opened {
    pub session: Session,
    pub fleet: String,
    /// The app's active release on the peer, if any.
    pub current: Option<AppStatus>,
    /// The highest seq the peer has accepted for the app (a release that failed to activate
    /// still holds its seq): the next head is signed one above it.
    pub seq: u64,
}

/// Signs `release` as the next seq of the app and pushes it; returns once the peer agent has
/// activated it (and, with --wait, the agents behind it), or fails with the reason it gave.
pub async fn push(
    args: &PushArgs,
    opened: Opened,
    release: Release,
    kind: HeadKind,
) -> Result<PushOutcome> {
    let Opened {
        session: mut s,
        fleet,
        seq: held,
        ..
    } = opened;
    let key = fleetcast_net::keys::read_secret(&args.key)?;
    let seq = held + 1;
    let head = Head {
        fleet,
        app: release.app.clone(),
        seq,
        release,
        kind,
        issued_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
    .sign(&key);
    s.push_head(&head)?;
    let r = &head.head.release;
    println!(
        "signed {} {} {} as seq {seq} (digest {}, {} bytes); pushed to {} ({})",
        kind,
        head.head.app,
        r.version,
        r.digest.short(),
        r.size,
        args.peer,
        s.peer().short()
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // Without --expect, --wait stops once the count has been still for this long.
    let settle = Duration::from_secs(2);
    let mut peer: Option<Outcome> = None;
    let mut tally = Tally::default();
    let mut shown = 0u64;
    loop {
        let until = match (&peer, args.wait, args.expect) {
            (Some(_), true, None) => deadline.min(Instant::now() + settle),
            _ => deadline,
        };
        let Some(news) = s.next_news(until).await? else {
            if peer.is_none() {
                bail!(
                    "no answer from the peer agent within {}s: it may still be fetching; check `fleetcast status --peer {}`",
                    args.timeout,
                    args.peer
                );
            }
            break;
        };
        match news {
            News::Report(rep) => {
                if rep.app != head.head.app || rep.seq != seq || rep.node != s.peer() {
                    continue;
                }
                println!("  agent {} (peer): {}", rep.node.short(), rep.outcome);
                if rep.outcome != Outcome::Active {
                    bail!(
                        "agent {} refused seq {seq}: {}",
                        rep.node.short(),
                        rep.outcome
                    );
                }
                peer = Some(rep.outcome);
            }
            News::Tally(t) => {
                // Frames travel on separate streams and may arrive out of order: only a count
                // newer than the one held counts.
                if t.app.as_ref() != Some(&head.head.app)
                    || t.seq != seq
                    || t.version < tally.version
                {
                    continue;
                }
                for r in t
                    .samples
                    .iter()
                    .skip(shown.min(t.samples.len() as u64) as usize)
                {
                    println!("  agent {}: {}", r.node.short(), r.outcome);
                }
                shown = t.samples.len() as u64;
                if t != tally {
                    println!(
                        "  fleet: {} active, {} failed, {} rejected",
                        t.active, t.failed, t.rejected
                    );
                }
                tally = t;
            }
        }
        if peer.is_none() {
            continue;
        }
        let enough = args.expect.is_some_and(|n| tally.active as usize >= n);
        if !args.wait && args.expect.is_none() || enough {
            break;
        }
    }
    let out = PushOutcome {
        head,
        peer: peer.expect("loop ends with the peer's outcome"),
        tally,
        chunks_served: s.chunks_served,
    };
    if let Some(n) = args.expect
        && out.active() < n
    {
        bail!(
            "only {} of the {n} expected agents reported the release active before the timeout",
            out.active()
        );
    }
    let (app, version) = (&out.head.head.app, &out.head.head.release.version);
    if out.tally.active == 0 {
        println!(
            "the peer agent runs {app} {version}; the fleet's count has not arrived yet (use --wait)"
        );
    } else {
        println!("{} agent(s) report {app} {version} active", out.active());
    }
    Ok(out)
}

/// Parses an app name with a message that says what is allowed.
pub fn app_name(s: &str) -> Result<AppName> {
    AppName::new(s).with_context(|| format!("--app {s:?}"))
}
