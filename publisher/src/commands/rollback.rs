use fleetcast_protocol::HeadKind;

use super::publish::{
    PushArgs, PushOutcome, SignArgs, already_active, app_name, open_at, push_signed, read_key,
};
use crate::error::{CliError, Result};
use crate::out::{Out, OutArgs};
use crate::plan::{self, Plan};
use crate::signing::Signers;
use crate::target::{LIBRARY_CONNECT_TIMEOUT, Target, TargetArgs};

/// Move an app to another release in its history (back, or forward again), which agents hold
/// in their cache: only the signed head crosses the mesh.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --to: the most recent release in the history whose version differs from the active one. To the active version: nothing to do (exit 0).\n\nExamples:\n  fleetcast rollback --app hello --key ops.key --peer 127.0.0.1:7401            # to the release before the current one\n  fleetcast rollback --app hello --to 2.0.0 --key ops.key --peer 127.0.0.1:7401\n  fleetcast rollback --app shop --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key --peer 127.0.0.1:7401   # a 2-of-3 fleet root"
)]
pub struct RollbackFlags {
    #[command(flatten)]
    pub cmd: Rollback,
    #[command(flatten)]
    pub sign: SignArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

impl RollbackFlags {
    pub async fn execute(self) -> Result<()> {
        let signers = self.sign.signers()?;
        let mut cmd = self.cmd;
        self.sign.apply(&mut cmd.push, &signers);
        let target = Target::from_args(&self.target).await?;
        cmd.run_with(&target, &signers, &Out::new(self.out.json))
            .await
            .map(|_| ())
    }
}

/// The rollback command's own flags (what library callers build).
#[derive(clap::Args, Debug)]
pub struct Rollback {
    /// App name.
    #[arg(long)]
    pub app: String,
    /// Version to go to (back or forward); default: the previous distinct version in the
    /// history.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    #[command(flatten)]
    pub push: PushArgs,
}

impl Rollback {
    /// For library callers: to `push.peer`, human output.
    pub async fn execute(self) -> anyhow::Result<PushOutcome> {
        let target = Target::addr(self.push.peer, LIBRARY_CONNECT_TIMEOUT);
        Ok(self.run(&target, &Out::human()).await?)
    }

    /// Signed by `push.key` alone.
    pub async fn run(self, target: &Target, out: &Out) -> Result<PushOutcome> {
        let signers = Signers {
            keys: vec![read_key(&self.push)?],
            root: None,
        };
        self.run_with(target, &signers, out).await
    }

    /// Signed by every key of `signers` (the first is `push.key`, the QUIC identity).
    pub async fn run_with(
        self,
        target: &Target,
        signers: &Signers,
        out: &Out,
    ) -> Result<PushOutcome> {
        let app = app_name(&self.app)?;
        let to: Option<semver::Version> = self
            .to
            .as_deref()
            .map(|to| {
                to.parse().map_err(|e| {
                    CliError::usage(format!("--to {to:?} is not semver (like 1.4.0): {e}"))
                })
            })
            .transpose()?;
        let opened = open_at(target, &self.push, &app).await?;
        match plan::rollback(&app, opened.current.as_ref(), to.as_ref(), &opened.label)? {
            Plan::AlreadyActive { message, .. } => {
                already_active(&self.push, opened, &message, out).await
            }
            Plan::Push(p) => {
                out.say(&p.message);
                push_signed(&self.push, opened, &p, HeadKind::Rollback, signers, out).await
            }
        }
    }
}
