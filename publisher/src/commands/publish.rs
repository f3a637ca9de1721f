//! What `release` and `rollback` share: connect, learn the seq, sign, push, wait for reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fleetcast_protocol::wire::{AppStatus, NodeId, Outcome};
use fleetcast_protocol::{AppName, Head, HeadKind, Release, SignedHead};
use tokio::time::Instant;

use crate::session::Session;

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
    /// After the peer is active, keep listening for the reports of the agents behind it.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop once this many agents report the release active.
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
    /// Latest outcome per agent that reported.
    pub reports: BTreeMap<NodeId, Outcome>,
    pub chunks_served: u64,
}

impl PushOutcome {
    pub fn active(&self) -> usize {
        self.reports
            .values()
            .filter(|o| **o == Outcome::Active)
            .count()
    }
}

/// Connects and returns the session and the peer's view of `app`.
pub async fn open(args: &PushArgs, app: &AppName) -> Result<(Session, String, Option<AppStatus>)> {
    let mut s = Session::connect(args.peer, Duration::from_secs(10)).await?;
    let status = s.status(Duration::from_secs(10)).await?;
    let fleet = args.fleet.clone().unwrap_or(status.fleet.clone());
    let app_status = status.apps.into_iter().find(|a| a.app == *app);
    Ok((s, fleet, app_status))
}

/// Signs `release` as the next seq of the app and pushes it; returns once the peer agent has
/// activated it (and, with --wait, the agents behind it), or fails with the reason it gave.
pub async fn push(
    args: &PushArgs,
    mut s: Session,
    fleet: String,
    current: Option<&AppStatus>,
    release: Release,
    kind: HeadKind,
) -> Result<PushOutcome> {
    let key = fleetcast_agent::keys::read_secret(&args.key)?;
    let seq = current.map_or(0, |a| a.seq) + 1;
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
    let settle = Duration::from_secs(2);
    let mut reports = BTreeMap::new();
    let mut peer_done = false;
    loop {
        let until = if peer_done && args.expect.is_none() {
            deadline.min(Instant::now() + settle)
        } else {
            deadline
        };
        let Some(rep) = s.next_report(until).await? else {
            if !peer_done {
                bail!(
                    "no answer from the peer agent within {}s: it may still be fetching; check `fleetcast status --peer {}`",
                    args.timeout,
                    args.peer
                );
            }
            break;
        };
        if rep.app != head.head.app || rep.seq != seq {
            continue;
        }
        println!("  agent {}: {}", rep.node.short(), rep.outcome);
        let from_peer = rep.node == s.peer();
        if from_peer && rep.outcome != Outcome::Active {
            bail!(
                "agent {} refused seq {seq}: {}",
                rep.node.short(),
                rep.outcome
            );
        }
        reports.insert(rep.node, rep.outcome);
        peer_done |= from_peer;
        let active = reports.values().filter(|o| **o == Outcome::Active).count();
        if peer_done && (!args.wait || args.expect.is_some_and(|n| active >= n)) {
            break;
        }
    }
    let out = PushOutcome {
        head,
        reports,
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
    println!(
        "{} agent(s) report {} {} active",
        out.active(),
        out.head.head.app,
        out.head.head.release.version
    );
    Ok(out)
}

/// Parses an app name with a message that says what is allowed.
pub fn app_name(s: &str) -> Result<AppName> {
    AppName::new(s).with_context(|| format!("--app {s:?}"))
}
