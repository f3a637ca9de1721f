//! fleetcast: the operator CLI as a library (one module per command, like `wasmtime`'s CLI).
//!
//! The publisher is a thin IO shell too: it signs heads with the operator's key, pushes them to
//! one agent over QUIC, serves the release's chunks to whoever asks, and prints the reports
//! that flow back up the mesh.

pub mod commands;
pub mod http_get;
pub mod session;
pub mod validate;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fleetcast",
    version,
    about = "Ship signed WebAssembly components to a fleet of edge agents",
    after_help = "Example:\n  fleetcast keygen --out ops.key\n  fleetcast release hello.wasm --app hello --version 1.0.0 --key ops.key --peer 127.0.0.1:7401\n  fleetcast rollback --app hello --key ops.key --peer 127.0.0.1:7401\n  fleetcast status --peer 127.0.0.1:7401\n  fleetcast demo"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Keygen(commands::keygen::Keygen),
    Release(commands::release::ReleaseCmd),
    Rollback(commands::rollback::Rollback),
    Status(commands::status::Status),
    Demo(commands::demo::Demo),
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Keygen(c) => c.execute(),
            Command::Release(c) => c.execute().await.map(|_| ()),
            Command::Rollback(c) => c.execute().await.map(|_| ()),
            Command::Status(c) => c.execute().await,
            Command::Demo(c) => c.execute().await,
        }
    }
}
