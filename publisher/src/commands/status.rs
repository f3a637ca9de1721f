//! `fleetcast status`: an agent's apps and neighbours as tables, the fleet counted by a
//! census, and the fleet's tallies per head.

use std::collections::BTreeMap;
use std::fmt::Write;

use fleetcast_protocol::wire::{AppRuntime, Census, NodeStatus, Outcome, Position, ServeState};
use fleetcast_protocol::{AppName, AppStatus, HeadKind, Tally};

use super::publish::{CENSUS_BUDGET, CENSUS_SPACING};
use crate::error::{ErrorKind, Result};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs, bytes};
use crate::position::active_position;
use crate::session::{STATUS_TIMEOUT, Session};
use crate::table::{Table, age, plural};
use crate::target::{Target, TargetArgs};

/// Show an agent's apps (state, version, seq, trial, limits), its mesh neighbours, how many
/// agents the fleet has (a census through this agent) and what they run.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Under an enrolled fleet the agent admits operators by a release key: pass --key.\n\nExample:\n  fleetcast status --peer 127.0.0.1:7401\n  fleetcast status --peer localhost:7401 --json\n  fleetcast status --peer 127.0.0.1:7401 --key fleet/keys/release-1.key"
)]
pub struct Status {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub identity: crate::signing::IdentityArgs,
    #[command(flatten)]
    pub out: OutArgs,
    /// Same as --json (the old debug output is gone).
    #[arg(long, hide = true)]
    pub raw: bool,
}

impl Status {
    pub async fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json || self.raw);
        let target = Target::from_args(&self.target).await?;
        let key = self.identity.read()?;
        let mut s = Session::connect_as(&target, key.as_ref()).await?;
        let st = s.status(STATUS_TIMEOUT).await?;
        let census = census(&mut s, &st).await?;
        let (c, why) = match &census {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.clone())),
        };
        out.emit(Event::Status(Box::new(json::status(&st, c, why, |a| {
            state(&st, a)
        }))));
        out.print(&render(&st, census.as_ref().map_err(|e| e.as_str())));
        Ok(())
    }
}

/// A census through the agent of `st`, or why there is none. An answer with the agent alone
/// and every neighbour unanswered is what an agent gives a client beyond its rate cap (it roots
/// a few censuses a second): asked again once, a second later.
pub async fn census(
    s: &mut Session,
    st: &NodeStatus,
) -> Result<std::result::Result<Census, String>> {
    let alone = |c: &Census| {
        c.agents == 1 && !st.active_view.is_empty() && c.unanswered as usize >= st.active_view.len()
    };
    let mut tries = 0;
    loop {
        tries += 1;
        match s.census(None, CENSUS_BUDGET).await {
            Ok(c) if alone(&c) && tries == 1 => {
                tokio::time::sleep(CENSUS_SPACING).await;
            }
            Ok(c) => return Ok(Ok(c)),
            Err(e) if e.kind == ErrorKind::Timeout => return Ok(Err(e.message)),
            Err(e) => return Err(e),
        }
    }
}

fn runtime<'a>(st: &'a NodeStatus, app: &AppName) -> Option<&'a AppRuntime> {
    st.runtime.iter().find(|r| r.app == *app)
}

/// The highest position the agent accepted for `app`.
fn accepted(st: &NodeStatus, app: &AppName) -> Position {
    st.seqs
        .iter()
        .filter(|(a, _)| a == app)
        .map(|(_, s)| *s)
        .max()
        .unwrap_or_default()
}

/// The app's state: the runtime's word when the agent gives it, else what the protocol's view
/// shows (`active` when it cannot tell committed from trial).
pub fn state(st: &NodeStatus, a: &AppStatus) -> String {
    if let Some(r) = runtime(st, &a.app)
        && !r.state.is_empty()
        && r.state != "none"
    {
        return r.state.clone();
    }
    if a.local_override {
        "local-override".into()
    } else if a.serving.is_some() {
        "reverted".into()
    } else if accepted(st, &a.app) > active_position(a) && a.last_error.is_none() {
        "activating".into()
    } else {
        "active".into()
    }
}

/// "3 on seq 5 (2.0.0), 1 reverted to 1.0.0": where the census found `app`.
pub fn distribution(c: &Census, app: &AppName) -> Option<String> {
    let mut entries: Vec<_> = c.entries.iter().filter(|e| e.app == *app).collect();
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|x, y| y.seq.cmp(&x.seq).then(x.state.cmp(&y.state)));
    let parts: Vec<String> = entries
        .iter()
        .map(|e| match e.state {
            ServeState::Active => format!("{} on seq {} ({})", e.agents, e.seq, e.version),
            ServeState::Reverted => format!("{} reverted to {}", e.agents, e.version),
            ServeState::Override => format!("{} on {} by a local override", e.agents, e.version),
        })
        .collect();
    Some(parts.join(", "))
}

fn trial_cell(r: Option<&AppRuntime>) -> String {
    let Some(t) = r.and_then(|r| r.trial.as_ref()) else {
        return "-".into();
    };
    let mut s = String::new();
    if t.requests > 0 {
        let _ = write!(s, "{}/{} req, ", t.seen, t.requests);
    }
    let _ = write!(s, "{}s of {}s", t.elapsed_ms / 1000, t.secs);
    if t.failed > 0 {
        let _ = write!(s, ", {} failed", t.failed);
    }
    s
}

fn limits_cell(r: Option<&AppRuntime>) -> String {
    match r.and_then(|r| r.limits.as_ref()) {
        Some(l) => format!(
            "{} MiB, {} ms, {} at once, body {}",
            l.max_memory_mib,
            l.request_timeout_ms,
            l.max_concurrent,
            bytes(l.max_body_bytes)
        ),
        None => "-".into(),
    }
}

fn since_cell(st: &NodeStatus, r: Option<&AppRuntime>) -> String {
    match r {
        Some(r) if r.since_ms > 0 && st.now_ms >= r.since_ms => age(st.now_ms - r.since_ms),
        _ => "-".into(),
    }
}

/// What the agent trusts: its fleet root's version, epoch, expiry and release threshold.
pub fn trust_line(t: &fleetcast_protocol::TrustStatus) -> String {
    if t.version == 0 {
        return "trust: no fleet root (trusted_keys, a lab setting)".into();
    }
    let mut s = format!(
        "trust: root version {}, epoch {}, heads need {} of {} release keys, expires {}",
        t.version,
        t.epoch,
        t.release_threshold,
        t.release_keys,
        crate::table::utc(t.expires_ms)
    );
    if t.expired {
        s.push_str(" (EXPIRED: no new head is accepted; fleetcast fleet rotate --expires 365d, then fleetcast fleet push)");
    } else if t.expires_soon {
        s.push_str(" (soon: fleetcast fleet rotate --expires 365d, then fleetcast fleet push)");
    }
    if t.revoked > 0 {
        s.push_str(&format!(", {} revoked", plural(t.revoked, "node")));
    }
    s
}

/// The human-readable status: the census line, the apps table (and a line per app for what
/// the table cannot say), the neighbours table, and the fleet's tallies.
pub fn render(st: &NodeStatus, census: std::result::Result<&Census, &str>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "agent {} in fleet {:?}", st.node.short(), st.fleet);
    let _ = writeln!(o, "{}", trust_line(&st.trust));
    let _ = match census {
        Ok(c) if c.unanswered == 0 => writeln!(
            o,
            "fleet: {} counted (all answered)",
            plural(c.agents, "agent")
        ),
        Ok(c) => writeln!(
            o,
            "fleet: {} counted; {} did not answer in time (their agents are not counted)",
            plural(c.agents, "agent"),
            plural(c.unanswered, "neighbour")
        ),
        Err(why) => writeln!(o, "fleet: not counted: {why}"),
    };

    let _ = writeln!(o);
    if st.apps.is_empty() {
        let _ = writeln!(o, "no apps yet");
    } else {
        let mut t = Table::new(&[
            "APP", "STATE", "VERSION", "SEQ", "DIGEST", "SINCE", "TRIAL", "LIMITS",
        ]);
        for a in &st.apps {
            let r = runtime(st, &a.app);
            t.row(vec![
                a.app.to_string(),
                state(st, a),
                a.active.version.to_string(),
                a.seq.to_string(),
                a.active.digest.short(),
                since_cell(st, r),
                trial_cell(r),
                limits_cell(r),
            ]);
        }
        o.push_str(&t.render(""));
        for a in &st.apps {
            let app = &a.app;
            if let Ok(c) = census
                && let Some(d) = distribution(c, app)
            {
                let _ = writeln!(o, "  {app}: fleet {d}");
            }
            if let Some(r) = &a.serving {
                let why = if a.local_override {
                    "a local override by an operator on the node"
                } else {
                    "the head's release failed here; reverted"
                };
                let _ = writeln!(
                    o,
                    "  {app}: serving {} (digest {}): {why}",
                    r.version,
                    r.digest.short()
                );
            }
            let held = accepted(st, app);
            let staged = a.staged.as_ref().map(|x| {
                let pos = Position {
                    epoch: x.epoch,
                    seq: x.seq,
                };
                let wave = x.plan.as_ref().map_or_else(String::new, |p| {
                    format!(", {} of its rollout", p.describe())
                });
                let _ = writeln!(
                    o,
                    "  {app}: {} prefetched (seq {}{wave}): the wave leaves this agent out, {} keeps serving",
                    x.release.version, x.seq, a.active.version
                );
                pos
            });
            if held > active_position(a) && staged.is_none_or(|p| p < held) {
                let _ = writeln!(
                    o,
                    "  {app}: {held} accepted, not active here (fetching, activating or failed)"
                );
            }
            if let Some(e) = &a.last_error {
                let _ = writeln!(o, "  {app}: last failure: {e}");
            }
            if a.kind == HeadKind::Rollback {
                let _ = writeln!(o, "  {app}: seq {} is a rollback", a.seq);
            }
        }
    }

    let _ = writeln!(o);
    let neighbours = st.active_view.len() as u32;
    if neighbours == 0 {
        let _ = writeln!(o, "no mesh neighbours");
    } else {
        let mut t = Table::new(&["NODE", "ADDR", "ROLE"]);
        for p in &st.active_view {
            t.row(vec![p.node.short(), p.addr.to_string(), "neighbour".into()]);
        }
        o.push_str(&t.render(""));
    }
    let _ = writeln!(
        o,
        "{}: {}, {} (probes, joins, this CLI); {} known for repair (passive view)",
        plural(st.links, "link"),
        plural(neighbours, "mesh neighbour"),
        plural(st.links.saturating_sub(neighbours), "other"),
        plural(st.passive_view, "more agent")
    );

    // The whole fleet's count (settled at the agent the release entered through and sent down
    // the tree), then this agent's own subtree.
    let version_of = |app: &Option<AppName>, seq: u64| {
        st.apps
            .iter()
            .find(|a| Some(&a.app) == app.as_ref() && a.seq == seq)
            .map(|a| a.active.version.to_string())
            .unwrap_or_else(|| "not active here".into())
    };
    let mut show = |title: &str, tallies: &[Tally]| {
        if tallies.is_empty() {
            return;
        }
        let _ = writeln!(o, "\n{title}");
        let mut t = Table::new(&["APP", "SEQ", "VERSION", "ACTIVE", "FAILED", "REJECTED"]);
        for x in tallies {
            t.row(vec![
                x.app.as_ref().map_or("?".into(), |a| a.to_string()),
                x.seq.to_string(),
                version_of(&x.app, x.seq),
                x.active.to_string(),
                x.failed.to_string(),
                x.rejected.to_string(),
            ]);
        }
        o.push_str(&t.render("  "));
        for x in tallies {
            for r in &x.samples {
                let _ = writeln!(
                    o,
                    "  seq {}: agent {}: {}",
                    x.seq,
                    r.node.short(),
                    r.outcome
                );
            }
        }
    };
    show(
        "fleet counts per head (counted up the broadcast tree where the release entered, once settled):",
        &st.fleet_tallies,
    );
    show("this agent's subtree of the broadcast tree:", &st.tallies);
    // Reports heard directly (this agent's own outcome, refusals by its neighbours).
    let mut view: BTreeMap<(String, u64, String, String), usize> = BTreeMap::new();
    for r in &st.reports {
        let outcome = match &r.outcome {
            Outcome::Active => "active".to_string(),
            o => o.to_string(),
        };
        *view
            .entry((r.app.to_string(), r.seq, r.version.to_string(), outcome))
            .or_default() += 1;
    }
    if !view.is_empty() {
        let _ = writeln!(o, "\nreports heard directly by this agent:");
        for ((app, seq, version, outcome), n) in view {
            let _ = writeln!(
                o,
                "  {app} seq {seq} ({version}): {} {outcome}",
                plural(n as u64, "agent")
            );
        }
    }
    o
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fleetcast_protocol::wire::{
        CensusEntry, HistoryEntry, PeerInfo, RuntimeLimits, RuntimeRelease, TrialProgress,
    };
    use fleetcast_protocol::{NodeId, Release};

    fn rel(app: &str, version: &str, bytes: &[u8]) -> Release {
        Release::build(
            AppName::new(app).unwrap(),
            version.parse().unwrap(),
            bytes,
            4096,
        )
        .unwrap()
    }

    fn app(name: &str, steps: &[(&str, &[u8])]) -> AppStatus {
        let history: Vec<HistoryEntry> = steps
            .iter()
            .enumerate()
            .map(|(i, (v, b))| HistoryEntry {
                seq: i as u64 + 1,
                kind: HeadKind::Release,
                release: rel(name, v, b),
                issued_at_ms: 1_796_179_019_000 + i as u64 * 60_000,
            })
            .collect();
        let last = history.last().unwrap().clone();
        AppStatus {
            app: AppName::new(name).unwrap(),
            seq: last.seq,
            epoch: 0,
            kind: last.kind,
            active: last.release,
            issued_at_ms: last.issued_at_ms,
            history,
            last_error: None,
            serving: None,
            local_override: false,
            plan: None,
            staged: None,
        }
    }

    /// An agent with `hello` on trial at 2.0.0 (with the runtime's view) and `beta` whose
    /// runtime view is missing, two neighbours and five links.
    pub(crate) fn status() -> NodeStatus {
        let hello = app("hello", &[("1.0.0", b"one"), ("2.0.0", b"two")]);
        let beta = app("beta", &[("0.1.0", b"b")]);
        let now = 1_796_179_019_000 + 10 * 60_000;
        NodeStatus {
            node: NodeId([0xab; 32]),
            fleet: "demo".into(),
            runtime: vec![AppRuntime {
                app: hello.app.clone(),
                state: "trial".into(),
                serving: Some(RuntimeRelease {
                    version: "2.0.0".parse().unwrap(),
                    digest: hello.active.digest,
                    seq: 2,
                }),
                since_ms: now - 192_000,
                committed: None,
                trial: Some(TrialProgress {
                    version: "2.0.0".parse().unwrap(),
                    seq: 2,
                    elapsed_ms: 14_200,
                    requests: 200,
                    secs: 60,
                    seen: 120,
                    failed: 0,
                }),
                limits: Some(RuntimeLimits {
                    max_memory_mib: 64,
                    request_timeout_ms: 2000,
                    max_concurrent: 32,
                    max_body_bytes: 1024 * 1024,
                    fuel: None,
                    health_path: Some("/health".into()),
                }),
                cached: vec![],
            }],
            apps: vec![hello, beta],
            reports: vec![],
            links: 5,
            active_view: vec![
                PeerInfo {
                    node: NodeId([0x11; 32]),
                    addr: "127.0.0.1:7402".parse().unwrap(),
                },
                PeerInfo {
                    node: NodeId([0x22; 32]),
                    addr: "127.0.0.1:7403".parse().unwrap(),
                },
            ],
            passive_view: 4,
            tallies: vec![],
            fleet_tallies: vec![Tally {
                app: Some(AppName::new("hello").unwrap()),
                seq: 2,
                active: 3,
                failed: 1,
                rejected: 0,
                samples: vec![],
                version: 7,
                ..Tally::default()
            }],
            seqs: vec![
                (
                    AppName::new("hello").unwrap(),
                    Position { epoch: 0, seq: 2 },
                ),
                (AppName::new("beta").unwrap(), Position { epoch: 0, seq: 1 }),
            ],
            trust: Default::default(),
            now_ms: now,
        }
    }

    fn census() -> Census {
        let hello = AppName::new("hello").unwrap();
        Census {
            agents: 4,
            unanswered: 0,
            entries: vec![
                CensusEntry {
                    app: hello.clone(),
                    seq: 2,
                    version: "1.0.0".parse().unwrap(),
                    digest: rel("hello", "1.0.0", b"one").digest,
                    state: ServeState::Reverted,
                    agents: 1,
                },
                CensusEntry {
                    app: hello,
                    seq: 2,
                    version: "2.0.0".parse().unwrap(),
                    digest: rel("hello", "2.0.0", b"two").digest,
                    state: ServeState::Active,
                    agents: 3,
                },
            ],
            focus_active: 0,
            missing: vec![],
        }
    }

    /// The cell of `row` (the line starting with it) under `header`.
    fn cell<'a>(text: &'a str, header: &str, row: &str) -> &'a str {
        let head = text.lines().find(|l| l.starts_with("APP ")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap();
        let start = head.find(header).unwrap();
        let next = head[start + header.len()..]
            .find(|c: char| c != ' ')
            .map(|i| start + header.len() + i)
            .unwrap_or(line.len());
        line[start..next.min(line.len())].trim()
    }

    #[test]
    fn the_apps_table_has_headers_and_values_in_their_columns() {
        let text = render(&status(), Ok(&census()));
        assert!(
            text.contains("fleet: 4 agents counted (all answered)"),
            "{text}"
        );
        assert!(
            text.contains("trust: no fleet root (trusted_keys, a lab setting)"),
            "{text}"
        );
        let t = fleetcast_protocol::TrustStatus {
            version: 3,
            epoch: 2,
            expires_ms: 1_796_179_019_000,
            expires_soon: true,
            release_keys: 3,
            release_threshold: 2,
            revoked: 1,
            ..Default::default()
        };
        assert_eq!(
            trust_line(&t),
            "trust: root version 3, epoch 2, heads need 2 of 3 release keys, expires 2026-12-02 02:36:59 UTC (soon: fleetcast fleet rotate --expires 365d, then fleetcast fleet push), 1 node revoked"
        );
        assert!(
            text.contains("APP    STATE   VERSION  SEQ  DIGEST        SINCE  TRIAL"),
            "{text}"
        );
        assert_eq!(cell(&text, "STATE", "hello"), "trial");
        assert_eq!(cell(&text, "VERSION", "hello"), "2.0.0");
        assert_eq!(cell(&text, "SEQ", "hello"), "2");
        assert_eq!(cell(&text, "SINCE", "hello"), "3m12s");
        assert_eq!(cell(&text, "TRIAL", "hello"), "120/200 req, 14s of 60s");
        assert_eq!(
            cell(&text, "LIMITS", "hello"),
            "64 MiB, 2000 ms, 32 at once, body 1.0 MiB"
        );
        assert!(
            text.contains("  hello: fleet 3 on seq 2 (2.0.0), 1 reverted to 1.0.0"),
            "{text}"
        );
    }

    /// A head whose wave leaves the agent out shows as prefetched, with its wave, and not as
    /// "accepted, not active here".
    #[test]
    fn a_staged_head_shows_as_prefetched_with_its_wave() {
        use fleetcast_protocol::rollout::{FULL, Gates, Plan};
        let mut st = status();
        let beta = st
            .apps
            .iter_mut()
            .find(|a| a.app.as_str() == "beta")
            .unwrap();
        beta.staged = Some(fleetcast_protocol::wire::Staged {
            seq: 2,
            epoch: 0,
            kind: HeadKind::Release,
            release: rel("beta", "0.2.0", b"b2"),
            plan: Some(Plan::new(vec![100, FULL], Gates::default()).unwrap()),
            issued_at_ms: 0,
        });
        st.seqs
            .push((AppName::new("beta").unwrap(), Position { epoch: 0, seq: 2 }));
        let text = render(&st, Ok(&census()));
        assert!(
            text.contains(
                "beta: 0.2.0 prefetched (seq 2, wave 1 of 2 (1%) of its rollout): the wave leaves this agent out, 0.1.0 keeps serving"
            ),
            "{text}"
        );
        assert!(!text.contains("beta: 0:2 accepted"), "{text}");
        assert!(!text.contains("accepted, not active here"), "{text}");
    }

    #[test]
    fn a_missing_runtime_view_degrades_to_dashes() {
        let text = render(&status(), Ok(&census()));
        assert_eq!(cell(&text, "STATE", "beta"), "active");
        assert_eq!(cell(&text, "VERSION", "beta"), "0.1.0");
        for col in ["SINCE", "TRIAL", "LIMITS"] {
            assert_eq!(cell(&text, col, "beta"), "-", "{col}: {text}");
        }
        // Derived states without the runtime's word.
        let mut st = status();
        st.runtime.clear();
        st.apps[0].serving = Some(rel("hello", "1.0.0", b"one"));
        assert_eq!(state(&st, &st.apps[0]), "reverted");
        st.apps[0].local_override = true;
        assert_eq!(state(&st, &st.apps[0]), "local-override");
        st.seqs = vec![(AppName::new("beta").unwrap(), Position { epoch: 0, seq: 2 })];
        assert_eq!(state(&st, &st.apps[1]), "activating");
    }

    #[test]
    fn neighbours_and_links_are_told_apart() {
        let text = render(
            &status(),
            Err("the agent did not answer the census within 2s"),
        );
        assert!(
            text.contains("fleet: not counted: the agent did not answer the census"),
            "{text}"
        );
        assert!(text.contains("NODE      ADDR            ROLE\n"), "{text}");
        assert!(
            text.contains("11111111  127.0.0.1:7402  neighbour\n"),
            "{text}"
        );
        assert!(
            text.contains("5 links: 2 mesh neighbours, 3 others (probes, joins, this CLI); 4 more agents known for repair (passive view)"),
            "{text}"
        );
        assert!(
            text.contains("  hello  2    2.0.0    3       1       0"),
            "{text}"
        );
        assert!(
            !text.contains("fleet 3 on seq"),
            "no census, no distribution: {text}"
        );
    }
}
