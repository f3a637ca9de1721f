//! `fleetcast-agent`: the edge daemon. All logic lives in the library; this only parses flags.

use std::process::ExitCode;

use clap::Parser;
use fleetcast_agent::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetcast-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
