//! `fleetcast`: the operator CLI. All logic lives in the library; this parses flags and maps
//! the outcome to the documented exit codes: 0 done, 1 refused by the fleet, 2 usage, 3
//! unreachable, 4 timed out, 5 a staged rollout halted by a gate (and rolled back), 6 a staged
//! rollout taken over by another head (paused, aborted) ([`fleetcast::ErrorKind::code`]).

use std::process::ExitCode;

use clap::Parser;
use fleetcast::{Cli, CliError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A usage error a script asked JSON for still ends with an error event on stdout.
            if e.use_stderr() && std::env::args().any(|a| a == "--json") {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                let message = first.strip_prefix("error: ").unwrap_or(first);
                println!("{}", fleetcast::error_line(&CliError::usage(message)));
            }
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    fleetcast_net::logging::init("text");
    let json = cli.json();
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(cli.execute()),
        Err(e) => Err(CliError::unreachable(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!("{}", fleetcast::error_line(&e));
            }
            eprintln!("fleetcast: {e}");
            ExitCode::from(e.code())
        }
    }
}
