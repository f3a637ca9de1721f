use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use fleetcast_protocol::{DEFAULT_CHUNK_SIZE, HeadKind, Release};

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
        let release = Release::build(app.clone(), version, &wasm, self.chunk_size)?;
        let mut opened = open(&self.push, &app).await?;
        opened.session.serve(release.clone(), wasm);
        push(&self.push, opened, release, HeadKind::Release).await
    }
}
