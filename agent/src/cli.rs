//! The `fleetcast-agent` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::AgentConfig;

#[derive(Parser, Debug)]
#[command(
    name = "fleetcast-agent",
    version,
    about = "fleetcast edge agent: receives signed releases over the QUIC mesh and serves them with wasmtime",
    after_help = "Example:\n  fleetcast-agent run --config /etc/fleetcast/agent.toml"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent.
    #[command(
        after_help = "Example:\n  fleetcast-agent run --config /etc/fleetcast/agent.toml\n  fleetcast-agent run --data-dir ./edge1 --trusted-key ops.pub --listen 127.0.0.1:7401 --http 127.0.0.1:8401 --peer 127.0.0.1:7402"
    )]
    Run(RunArgs),
}

/// Flags override the config file.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Agent config file (TOML); see deploy/agent.example.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Fleet name.
    #[arg(long)]
    pub fleet: Option<String>,
    /// QUIC listen address for the mesh.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address for the apps.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Data directory (node identity and sled store).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A trusted publisher public key file (repeatable; replaces the config's list).
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<PathBuf>,
    /// A bootstrap contact to join the mesh through (repeatable; replaces the config's list).
    #[arg(long = "peer")]
    pub peers: Vec<SocketAddr>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

impl RunArgs {
    /// The effective config: the file (if any) with the flags applied on top.
    pub fn config(&self) -> Result<AgentConfig> {
        let mut cfg = match (&self.config, &self.data_dir) {
            (Some(path), _) => AgentConfig::load(path)?,
            (None, Some(dir)) => AgentConfig::with_data_dir(dir.clone()),
            (None, None) => {
                anyhow::bail!("pass --config FILE or at least --data-dir DIR (see --help)")
            }
        };
        if let Some(v) = &self.fleet {
            cfg.fleet = v.clone();
        }
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = self.http {
            cfg.http = v;
        }
        if let Some(v) = &self.data_dir {
            cfg.data_dir = v.clone();
        }
        if !self.trusted_keys.is_empty() {
            cfg.trusted_keys = self.trusted_keys.clone();
        }
        if !self.peers.is_empty() {
            cfg.peers = self.peers.clone();
        }
        if let Some(v) = &self.log_format {
            cfg.log_format = v.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

impl Cli {
    pub fn execute(self) -> Result<()> {
        match self.command {
            Command::Run(args) => {
                let cfg = args.config()?;
                crate::logging::init(&cfg.log_format);
                let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
                rt.block_on(async move {
                    let agent = crate::agent::start(cfg).await?;
                    // One machine-readable line for supervisors and `fleetcast demo`.
                    println!(
                        "fleetcast-agent ready node={} quic={} http={}",
                        agent.node_id(),
                        agent.quic_addr(),
                        agent.http_addr()
                    );
                    shutdown_signal().await;
                    tracing::info!("shutting down");
                    agent.shutdown().await;
                    Ok(())
                })
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
