//! `fleetcast push`: send a head file (signed in turn with `release --sign-only` and `sign`)
//! and serve its component, then follow it like `release` does.

use std::path::PathBuf;

use fleetcast_protocol::HeadKind;

use super::publish::{Opened, PushArgs, open_as, send_head};
use crate::error::{CliError, Result};
use crate::fleetdir::FleetDir;
use crate::headfile::HeadFile;
use crate::out::{Out, OutArgs};
use crate::plan::{self, Direction, Plan, Push as PushPlan};
use crate::signing::{self, IdentityArgs};
use crate::target::{Target, TargetArgs};

/// Push a signed head file to an agent, serve its component, and follow it.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The head's signatures are verified and counted first (against --fleet's root when given, else the agent's threshold); a head short of signatures, or at a position the agent already holds, is not sent (exit 2). Connect with --key (a release key) under an enrolled fleet.\n\nExample:\n  fleetcast push shop-1.0.1.head --peer 127.0.0.1:7401 --key fleet/keys/release-3.key --wait"
)]
pub struct PushFile {
    /// The head file.
    pub file: PathBuf,
    /// The fleet directory, to count the signatures against its root.
    #[arg(long, value_name = "DIR")]
    pub fleet: Option<PathBuf>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Follow the fleet until every live agent runs it (or some fail, or --timeout).
    #[arg(long)]
    pub wait: bool,
    /// Wait until this many agents run it (implies --wait).
    #[arg(long, value_name = "N")]
    pub expect: Option<usize>,
    /// Give up after this many seconds (exit 4).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

impl PushFile {
    pub async fn execute(self) -> Result<()> {
        let out = Out::new(self.out.json);
        let hf = HeadFile::read(&self.file)?;
        signing::check_signatures(&hf.head)?;
        let root = match &self.fleet {
            Some(d) => Some(FleetDir::new(d).load_root()?),
            None => None,
        };
        let content = hf.component_bytes(&self.file)?;
        let h = hf.head.head.clone();
        if h.kind == HeadKind::Release && content.is_none() {
            return Err(CliError::usage(format!(
                "{} names no component: a release head needs its bytes to serve",
                self.file.display()
            )));
        }
        let key = self.identity.read()?;
        let target = Target::from_args(&self.target).await?;
        let mut opened: Opened =
            open_as(&target, key.as_ref(), Some(h.fleet.clone()), &h.app).await?;
        let count = signing::tally(&hf.head, root.as_ref(), Some(&opened.status.trust));
        if !count.complete() {
            return Err(CliError::usage(format!(
                "{} is signed by {}: another holder signs it first (fleetcast sign {} --key ...); nothing was sent",
                self.file.display(),
                count.describe(),
                self.file.display()
            )));
        }
        let pos = fleetcast_protocol::wire::Position {
            epoch: h.epoch,
            seq: h.seq,
        };
        if pos <= opened.held {
            return Err(CliError::usage(format!(
                "the agent already holds {} at {}, not below this head's {pos}: sign a new head (fleetcast release --sign-only)",
                h.app, opened.held
            )));
        }
        if h.epoch < opened.status.trust.epoch {
            return Err(CliError::usage(format!(
                "the head is signed under epoch {} but the agent's root is epoch {}: the release keys were rotated since; sign a new head",
                h.epoch, opened.status.trust.epoch
            )));
        }
        let from = opened.current.as_ref().map(|a| a.active.version.clone());
        let plan = match h.kind {
            HeadKind::Release => {
                match plan::release(opened.current.as_ref(), h.release.clone(), true)? {
                    Plan::Push(p) => *p,
                    Plan::AlreadyActive { .. } => PushPlan {
                        release: h.release.clone(),
                        from: from.clone(),
                        direction: Direction::Release,
                        same_bytes_as: None,
                        message: String::new(),
                    },
                }
            }
            HeadKind::Rollback => PushPlan {
                release: h.release.clone(),
                direction: match &from {
                    Some(f) if h.release.version < *f => Direction::Back,
                    Some(f) if h.release.version > *f => Direction::Forward,
                    _ => Direction::Release,
                },
                from: from.clone(),
                same_bytes_as: None,
                message: String::new(),
            },
        };
        if let Some(bytes) = content {
            opened.session.serve(h.release.clone(), bytes);
        }
        let args = PushArgs {
            key: self.identity.key.clone().unwrap_or_default(),
            peer: opened.session.addr(),
            fleet: Some(h.fleet.clone()),
            wait: self.wait,
            expect: self.expect,
            timeout: self.timeout,
        };
        send_head(&args, opened, &plan, hf.head, &out)
            .await
            .map(|_| ())
    }
}
