use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use fleetcast_protocol::{DEFAULT_CHUNK_SIZE, HeadKind, Release, RunPolicy};

use super::publish::{PushArgs, PushOutcome, app_name, open, push};

/// Sign a component as the next release of an app and send it into the mesh.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  fleetcast release hello.wasm --app hello --version 1.0.0 --key ops.key --peer 127.0.0.1:7401 --wait"
)]
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
    pub async fn execute(self) -> Result<PushOutcome> {
        let app = app_name(&self.app)?;
        let version: semver::Version = self.version.parse().map_err(|e| {
            anyhow!(
                "--version {:?} is not semver (like 1.4.0): {e}",
                self.version
            )
        })?;
        let wasm = std::fs::read(&self.file)
            .with_context(|| format!("cannot read {}", self.file.display()))?;
        crate::validate::check_component(&wasm)
            .map_err(|why| anyhow!("{} cannot be released: {why}", self.file.display()))?;
        let mut release = Release::build(app.clone(), version, &wasm, self.chunk_size)?;
        release.policy = self.policy.policy();
        release
            .check_shape()
            .map_err(|e| anyhow!("{e}; fix the flag"))?;
        let mut opened = open(&self.push, &app).await?;
        opened.session.serve(release.clone(), wasm);
        push(&self.push, opened, release, HeadKind::Release).await
    }
}
