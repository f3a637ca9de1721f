use anyhow::{Result, anyhow, bail};
use fleetcast_protocol::HeadKind;

use super::publish::{PushArgs, PushOutcome, app_name, open, push};

/// Move an app back to an earlier release, which agents hold in their cache.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  fleetcast rollback --app hello --key ops.key --peer 127.0.0.1:7401            # to the release before the current one\n  fleetcast rollback --app hello --to 2.0.0 --key ops.key --peer 127.0.0.1:7401"
)]
pub struct Rollback {
    /// App name.
    #[arg(long)]
    pub app: String,
    /// Version to go to; default: the release that was active before the current one.
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub push: PushArgs,
}

impl Rollback {
    pub async fn execute(self) -> Result<PushOutcome> {
        let app = app_name(&self.app)?;
        let opened = open(&self.push, &app).await?;
        let Some(current) = opened.current.clone() else {
            bail!(
                "agent at {} has no app {app}: release it first with `fleetcast release`",
                self.push.peer
            );
        };
        let active = &current.active;
        let target = match &self.to {
            Some(to) => {
                let to: semver::Version = to
                    .parse()
                    .map_err(|e| anyhow!("--to {to:?} is not semver (like 1.4.0): {e}"))?;
                if active.version == to {
                    bail!("{app} {to} is already active (seq {})", current.seq);
                }
                current
                    .history
                    .iter()
                    .rev()
                    .find(|h| h.release.version == to)
                    .map(|h| h.release.clone())
                    .ok_or_else(|| {
                        let mut known: Vec<String> =
                            current.history.iter().map(|h| h.release.version.to_string()).collect();
                        known.sort();
                        known.dedup();
                        anyhow!("{app} {to} is not in the agent's history (known: {}): release it instead", known.join(", "))
                    })?
            }
            None => current
                .history
                .iter()
                .rev()
                .find(|h| h.release.digest != active.digest)
                .map(|h| h.release.clone())
                .ok_or_else(|| anyhow!("{app} has no earlier release to roll back to"))?,
        };
        println!(
            "rolling {app} back from {} to {}",
            active.version, target.version
        );
        push(&self.push, opened, target, HeadKind::Rollback).await
    }
}
