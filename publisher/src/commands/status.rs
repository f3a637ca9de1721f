use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use fleetcast_protocol::wire::{NodeStatus, Outcome};

use crate::session::Session;

/// Show an agent's apps (active version, seq, digest, history) and the fleet reports it heard.
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
        "agent {} in fleet {:?}, {} peer(s) connected",
        st.node.short(),
        st.fleet,
        st.peers
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
    // Fleet view: how many agents report which seq/version per app.
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
        let _ = writeln!(o, "fleet reports heard by this agent:");
        for ((app, seq, version, outcome), n) in view {
            let _ = writeln!(o, "    {app} seq {seq} ({version}): {n} agent(s) {outcome}");
        }
    }
    o
}
