use std::path::PathBuf;

use fleetcast_protocol::{DEFAULT_CHUNK_SIZE, HeadKind, Release, RunPolicy};

use super::publish::{
    PushArgs, PushOutcome, already_active, app_name, open_at, push_signed, read_key,
};
use crate::error::{CliError, Result};
use crate::out::{Out, OutArgs};
use crate::plan::{self, Plan};
use crate::target::{LIBRARY_CONNECT_TIMEOUT, Target, TargetArgs};

/// Sign a component as the next release of an app and send it into the mesh.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "A version names one set of bytes: releasing a version again with other bytes is refused (exit 2); the same bytes as an earlier version under a new one are allowed; releasing exactly what is active does nothing (exit 0).\n\nExample:\n  fleetcast release hello.wasm --app hello --version 1.0.0 --key ops.key --peer 127.0.0.1:7401 --wait"
)]
pub struct ReleaseFlags {
    /// Release a version lower than the one the peer agent serves (to go back to a version in
    /// the history, `fleetcast rollback --to V` moves no content).
    #[arg(long, display_order = 1000)]
    pub allow_downgrade: bool,
    #[command(flatten)]
    pub cmd: ReleaseCmd,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

impl ReleaseFlags {
    pub async fn execute(self) -> Result<()> {
        let target = Target::from_args(&self.target).await?;
        self.cmd
            .run(&target, self.allow_downgrade, &Out::new(self.out.json))
            .await
            .map(|_| ())
    }
}

/// The release command's own flags (what library callers build).
#[derive(clap::Args, Debug)]
pub struct ReleaseCmd {
    /// The wasi:http component (.wasm).
    pub file: PathBuf,
    /// App name (a DNS label; agents route by the first label of the Host header).
    #[arg(long)]
    pub app: String,
    /// Version (semver, e.g. 1.4.0).
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub push: PushArgs,
    /// Chunk size in bytes.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// How agents run and judge the release (signed with it). Limits can only tighten what each
/// agent allows.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "How agents run and judge the release (signed with it)")]
pub struct PolicyArgs {
    /// Health path: before swapping, each agent sends one GET there and requires a 2xx.
    #[arg(long)]
    pub health_path: Option<String>,
    /// The trial (traps, timeouts, 5xx rate watched; failure reverts) passes after this many
    /// requests on an agent...
    #[arg(long)]
    pub trial_requests: Option<u32>,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long)]
    pub trial_secs: Option<u32>,
    /// Linear memory per instance, MiB.
    #[arg(long)]
    pub max_memory_mib: Option<u32>,
    /// Deadline per request, milliseconds.
    #[arg(long)]
    pub request_timeout_ms: Option<u32>,
    /// Fuel per request (on agents that meter fuel).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Concurrent requests per agent; more get 503.
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Largest request body, bytes; larger gets 413.
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
}

impl PolicyArgs {
    pub fn policy(&self) -> RunPolicy {
        RunPolicy {
            health_path: self.health_path.clone(),
            trial_requests: self.trial_requests,
            trial_secs: self.trial_secs,
            max_memory_mib: self.max_memory_mib,
            request_timeout_ms: self.request_timeout_ms,
            fuel: self.fuel,
            max_concurrent: self.max_concurrent,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

impl ReleaseCmd {
    /// For library callers: to `push.peer`, human output, no downgrade.
    pub async fn execute(self) -> anyhow::Result<PushOutcome> {
        let target = Target::addr(self.push.peer, LIBRARY_CONNECT_TIMEOUT);
        Ok(self.run(&target, false, &Out::human()).await?)
    }

    /// Checks the file and the version locally and against the peer's history, then signs,
    /// pushes and follows the release.
    pub async fn run(
        self,
        target: &Target,
        allow_downgrade: bool,
        out: &Out,
    ) -> Result<PushOutcome> {
        let app = app_name(&self.app)?;
        let version: semver::Version = self.version.parse().map_err(|e| {
            CliError::usage(format!(
                "--version {:?} is not semver (like 1.4.0): {e}",
                self.version
            ))
        })?;
        let file = self.file.display();
        let wasm = std::fs::read(&self.file)
            .map_err(|e| CliError::usage(format!("cannot read {file}: {e}")))?;
        crate::validate::check_component(&wasm)
            .map_err(|why| CliError::usage(format!("{file} cannot be released: {why}")))?;
        let mut release = Release::build(app.clone(), version, &wasm, self.chunk_size)
            .map_err(|e| CliError::usage(format!("{file} cannot be released: {e}")))?;
        release.policy = self.policy.policy();
        release
            .check_shape()
            .map_err(|e| CliError::usage(format!("{e}; fix the flag")))?;
        let key = read_key(&self.push)?;
        let mut opened = open_at(target, &self.push, &app).await?;
        match plan::release(opened.current.as_ref(), release, allow_downgrade)? {
            Plan::AlreadyActive { message, .. } => {
                already_active(&self.push, opened, &message, out).await
            }
            Plan::Push(p) => {
                out.say(&p.message);
                opened.session.serve(p.release.clone(), wasm);
                push_signed(&self.push, opened, &p, HeadKind::Release, &key, out).await
            }
        }
    }
}
