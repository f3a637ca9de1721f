use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use fleetcast_protocol::wire::{NodeStatus, Outcome};

use crate::session::Session;

/// Show an agent's apps (active version, seq, digest, history), its mesh neighbours and the
/// fleet totals counted up the broadcast tree.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  fleetcast status --peer 127.0.0.1:7401")]
pub struct Status {
    /// An agent's QUIC address.
    #[arg(long)]
    pub peer: SocketAddr,
    /// Print JSON-like debug output instead of the table.
    #[arg(long)]
    pub raw: bool,
}

impl Status {
    pub async fn execute(self) -> Result<()> {
        let mut s = Session::connect(self.peer, Duration::from_secs(10)).await?;
        let st = s.status(Duration::from_secs(10)).await?;
        if self.raw {
            println!("{st:#?}");
        } else {
            print!("{}", render(&st));
        }
        Ok(())
    }
}

/// The human-readable status table.
pub fn render(st: &NodeStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "agent {} in fleet {:?}: {} link(s) (neighbours, probes and clients such as this one), {} mesh neighbour(s) ({}), {} more known for repair",
        st.node.short(),
        st.fleet,
        st.links,
        st.active_view.len(),
        st.active_view
            .iter()
            .map(|p| format!("{}@{}", p.node.short(), p.addr))
            .collect::<Vec<_>>()
            .join(", "),
        st.passive_view
    );
    if st.apps.is_empty() {
        let _ = writeln!(o, "no apps yet");
    }
    for a in &st.apps {
        let _ = writeln!(
            o,
            "app {:<16} version {:<10} seq {:<4} {:<8} digest {}",
            a.app.as_str(),
            a.active.version.to_string(),
            a.seq,
            a.kind.to_string(),
            a.active.digest.short()
        );
        if let Some(r) = &a.serving {
            let why = if a.local_override {
                "local override by an operator on the node"
            } else {
                "the head's release failed here; reverted"
            };
            let _ = writeln!(
                o,
                "    serving {} (digest {}): {why}",
                r.version,
                r.digest.short()
            );
        }
        if let Some(e) = &a.last_error {
            let _ = writeln!(o, "    last failure: {e}");
        }
        let hist: Vec<String> = a
            .history
            .iter()
            .map(|h| {
                format!(
                    "{}:{}{}",
                    h.seq,
                    h.release.version,
                    if h.kind == fleetcast_protocol::HeadKind::Rollback {
                        "(rollback)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let _ = writeln!(o, "    history {}", hist.join(" -> "));
    }
    // The whole fleet's count (settled at the agent the release entered through and sent down
    // the tree), then this agent's own subtree.
    let version_of = |app: &str, seq: u64| {
        st.apps
            .iter()
            .find(|a| a.app.as_str() == app && a.seq == seq)
            .map(|a| a.active.version.to_string())
            .unwrap_or_else(|| "not active here".into())
    };
    let mut show = |title: &str, tallies: &[fleetcast_protocol::Tally]| {
        if tallies.is_empty() {
            return;
        }
        let _ = writeln!(o, "{title}");
        for t in tallies {
            let app = t.app.as_ref().map_or("?", |a| a.as_str());
            let _ = writeln!(
                o,
                "    {app} seq {} ({}): {} active, {} failed, {} rejected",
                t.seq,
                version_of(app, t.seq),
                t.active,
                t.failed,
                t.rejected
            );
            for r in &t.samples {
                let _ = writeln!(o, "        agent {}: {}", r.node.short(), r.outcome);
            }
        }
    };
    show(
        "fleet (counted up the broadcast tree where the release entered, once settled):",
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
        let _ = writeln!(o, "reports heard directly by this agent:");
        for ((app, seq, version, outcome), n) in view {
            let _ = writeln!(o, "    {app} seq {seq} ({version}): {n} agent(s) {outcome}");
        }
    }
    o
}
