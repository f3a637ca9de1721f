//! `fleetcast history`: an app's heads on one agent, newest first, and which one serves.

use fleetcast_protocol::wire::NodeStatus;
use fleetcast_protocol::{AppName, AppStatus};

use super::publish::app_name;
use crate::error::{CliError, Result};
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};
use crate::session::{STATUS_TIMEOUT, Session};
use crate::table::{Table, age, plural, utc};
use crate::target::{Target, TargetArgs};

/// Show an app's history on an agent: each head (release or rollback) with its seq, version,
/// digest and when it was signed, newest first; `*` marks the release that serves.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Under an enrolled fleet pass --key (a release key).\n\nExample:\n  fleetcast history --app hello --peer 127.0.0.1:7401\n  fleetcast history --app shop --peer 127.0.0.1:7401 --key fleet/keys/release-1.key"
)]
pub struct History {
    /// App name.
    #[arg(long)]
    pub app: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub identity: crate::signing::IdentityArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

impl History {
    pub async fn execute(self) -> Result<()> {
        let app = app_name(&self.app)?;
        let out = Out::new(self.out.json);
        let target = Target::from_args(&self.target).await?;
        let key = self.identity.read()?;
        let mut s = Session::connect_as(&target, key.as_ref()).await?;
        let st = s.status(STATUS_TIMEOUT).await?;
        let Some(a) = st.apps.iter().find(|a| a.app == app) else {
            let known: Vec<String> = st.apps.iter().map(|a| a.app.to_string()).collect();
            return Err(CliError::usage(format!(
                "the agent at {} has no app {app} (it has: {}): check --app",
                target.label,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        out.emit(Event::History(to_json(&st, a)));
        out.print(&render(&st, a));
        Ok(())
    }
}

/// The seq of the history entry that serves: the head in force, unless the agent serves
/// another release (reverted, or a local override): then that release's newest entry (the
/// runtime names its seq when it knows it).
pub fn serving_seq(st: &NodeStatus, a: &AppStatus) -> Option<u64> {
    let Some(r) = &a.serving else {
        return Some(a.seq);
    };
    let runtime_seq = st
        .runtime
        .iter()
        .find(|x| x.app == a.app)
        .and_then(|x| x.serving.as_ref())
        .filter(|s| s.digest == r.digest && s.seq > 0)
        .map(|s| s.seq);
    runtime_seq.or_else(|| {
        a.history
            .iter()
            .rev()
            .find(|h| h.release.digest == r.digest)
            .map(|h| h.seq)
    })
}

/// When a head was signed: its age by the agent's clock (this machine's when the agent does
/// not say; the publisher's clock signed it anyway) and the time.
fn signed(st: &NodeStatus, issued_at_ms: u64) -> String {
    if issued_at_ms == 0 {
        return "-".into();
    }
    let now = if st.now_ms > 0 {
        st.now_ms
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    if now >= issued_at_ms {
        format!("{} ago ({})", age(now - issued_at_ms), utc(issued_at_ms))
    } else {
        utc(issued_at_ms)
    }
}

/// The history table, newest first.
pub fn render(st: &NodeStatus, a: &AppStatus) -> String {
    let serves = serving_seq(st, a);
    let mut t = Table::new(&["", "SEQ", "KIND", "VERSION", "DIGEST", "SIGNED"]);
    for h in a.history.iter().rev() {
        t.row(vec![
            if Some(h.seq) == serves { "*" } else { "" }.into(),
            h.seq.to_string(),
            h.kind.to_string(),
            h.release.version.to_string(),
            h.release.digest.short(),
            signed(st, h.issued_at_ms),
        ]);
    }
    let mut o = format!(
        "{} on agent {} ({} kept, newest first):\n",
        a.app,
        st.node.short(),
        plural(a.history.len() as u64, "head")
    );
    o.push_str(&t.render(""));
    let note = match (&a.serving, a.local_override) {
        (None, _) => "* serves on this agent".to_string(),
        (Some(r), true) => format!(
            "* serves on this agent: {} by a local override (the head in force is seq {}, {})",
            r.version, a.seq, a.active.version
        ),
        (Some(r), false) => format!(
            "* serves on this agent: {} (seq {}, {}, failed here and reverted)",
            r.version, a.seq, a.active.version
        ),
    };
    o.push_str(&note);
    o.push('\n');
    o
}

fn to_json(st: &NodeStatus, a: &AppStatus) -> json::History {
    let serves = serving_seq(st, a);
    json::History {
        node: st.node.to_string(),
        app: a.app.to_string(),
        entries: a
            .history
            .iter()
            .rev()
            .map(|h| json::HistoryEntry {
                seq: h.seq,
                kind: h.kind.to_string(),
                release: (&h.release).into(),
                issued_at_ms: h.issued_at_ms,
                serves: Some(h.seq) == serves,
            })
            .collect(),
    }
}

/// Looks `app` up in `st` (for tests and the demo).
pub fn find<'a>(st: &'a NodeStatus, app: &AppName) -> Option<&'a AppStatus> {
    st.apps.iter().find(|a| a.app == *app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::tests::status;

    #[test]
    fn newest_first_with_a_marker_on_the_one_that_serves() {
        let st = status();
        let a = find(&st, &AppName::new("hello").unwrap()).unwrap();
        let text = render(&st, a);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["SEQ", "KIND", "VERSION", "DIGEST", "SIGNED"]
        );
        assert!(lines[2].starts_with("*  2    release  2.0.0"), "{text}");
        assert!(
            lines[2].ends_with("9m00s ago (2026-12-02 02:37:59 UTC)"),
            "{text}"
        );
        assert!(lines[3].starts_with("   1    release  1.0.0"), "{text}");
        // Reverted: the older release's entry serves.
        let mut st = st.clone();
        st.runtime.clear();
        let one = st.apps[0].history[0].release.clone();
        st.apps[0].serving = Some(one);
        let a = &st.apps[0];
        assert_eq!(serving_seq(&st, a), Some(1));
        let j = to_json(&st, a);
        assert_eq!(
            j.entries
                .iter()
                .map(|e| (e.seq, e.serves))
                .collect::<Vec<_>>(),
            [(2, false), (1, true)]
        );
        assert!(render(&st, a).contains("failed here and reverted"));
    }
}
