//! `fleetcast`: the operator CLI. All logic lives in the library; this only parses flags.

use std::process::ExitCode;

use clap::Parser;
use fleetcast::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    fleetcast_net::logging::init("text");
    match tokio::runtime::Runtime::new() {
        Ok(rt) => match rt.block_on(cli.execute()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fleetcast: {e:#}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("fleetcast: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
