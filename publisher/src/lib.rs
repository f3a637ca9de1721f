//! fleetcast: the operator CLI as a library (one module per command, like `wasmtime`'s CLI).
//!
//! The publisher is a thin IO shell too: it signs heads with the operator's key, pushes them to
//! one agent over QUIC, serves the release's chunks to whoever asks, and follows the counts
//! that flow back up the mesh. What it decides is pure and tested without a network: which
//! head to sign ([`plan`]), when a release has reached the fleet ([`follow`]), what a status
//! looks like ([`commands::status::render`]). Every failure is a [`CliError`] whose kind is
//! the documented exit code; `--json` output follows the one schema in [`json`].

pub mod commands;
pub mod error;
pub mod fleetdir;
pub mod follow;
pub mod headfile;
pub mod http_get;
pub mod json;
pub mod out;
pub mod plan;
pub mod position;
pub mod rollout;
pub mod session;
pub mod signing;
pub mod table;
pub mod target;
pub mod validate;

use clap::{Parser, Subcommand};

pub use error::{CliError, ErrorKind};

#[derive(Parser, Debug)]
#[command(
    name = "fleetcast",
    version,
    about = "Ship signed WebAssembly components to a fleet of edge agents",
    after_help = "Exit codes: 0 done, 1 refused by the fleet, 2 usage (nothing sent), 3 unreachable, 4 timed out, 5 a staged rollout halted by a gate (rolled back), 6 a staged rollout taken over (someone paused, aborted or replaced it; this driver stopped).\n\nExample:\n  fleetcast keygen --out ops.key\n  fleetcast release hello.wasm --app hello --version 1.0.0 --key ops.key --peer 127.0.0.1:7401\n  fleetcast rollback --app hello --key ops.key --peer 127.0.0.1:7401\n  fleetcast status --peer 127.0.0.1:7401\n  fleetcast history --app hello --peer 127.0.0.1:7401\n  fleetcast release shop.wasm --app shop --version 1.5.0 --key ops.key --peer 127.0.0.1:7401 --waves 1%,10%,50%,100% --bake 60s\n  fleetcast rollout status --app shop --peer 127.0.0.1:7401\n  fleetcast demo\n\nWith a fleet root (keys and trust):\n  fleetcast fleet init --out fleet --root-keys 3 --root-threshold 2 --release-keys 3 --release-threshold 2\n  fleetcast node enroll --fleet fleet --node $(fleetcast-agent id --data-dir edge1) --out edge1/node.cert\n  fleetcast release app.wasm --app shop --version 1.0.0 --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key --peer 127.0.0.1:7401\n  fleetcast fleet rotate --fleet fleet --replace release-1 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key\n  fleetcast fleet push --fleet fleet --peer 127.0.0.1:7401 --key fleet/keys/release-2.key"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Keygen(commands::keygen::Keygen),
    Release(Box<commands::release::ReleaseFlags>),
    Rollback(commands::rollback::RollbackFlags),
    Rollout(commands::rollout::Rollout),
    Status(commands::status::Status),
    History(commands::history::History),
    Fleet(commands::fleet::Fleet),
    Node(commands::node::Node),
    Sign(commands::sign::Sign),
    Push(commands::push::PushFile),
    Demo(commands::demo::Demo),
}

impl Cli {
    /// Whether the command prints JSON (errors then go to stdout as an `error` event too).
    pub fn json(&self) -> bool {
        match &self.command {
            Command::Keygen(c) => c.format.json,
            Command::Release(c) => c.out.json,
            Command::Rollback(c) => c.out.json,
            Command::Rollout(c) => c.json(),
            Command::Status(c) => c.out.json || c.raw,
            Command::History(c) => c.out.json,
            Command::Fleet(c) => c.json(),
            Command::Node(c) => c.json(),
            Command::Sign(c) => c.format.json,
            Command::Push(c) => c.out.json,
            Command::Demo(c) => c.out.json,
        }
    }

    /// Runs the command, then waits for the connections it closed to say so to their agents.
    pub async fn execute(self) -> Result<(), CliError> {
        let r = self.run().await;
        session::flush_closed().await;
        r
    }

    async fn run(self) -> Result<(), CliError> {
        match self.command {
            Command::Keygen(c) => c.execute(),
            Command::Release(c) => c.execute().await,
            Command::Rollback(c) => c.execute().await,
            Command::Rollout(c) => c.execute().await,
            Command::Status(c) => c.execute().await,
            Command::History(c) => c.execute().await,
            Command::Fleet(c) => c.execute().await,
            Command::Node(c) => c.execute(),
            Command::Sign(c) => c.execute(),
            Command::Push(c) => c.execute().await,
            Command::Demo(c) => c.execute().await,
        }
    }
}

/// The `--json` line for a failure.
pub fn error_line(e: &CliError) -> String {
    json::line(&json::Event::Error(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_parses_its_flags_and_has_examples() {
        Cli::command().debug_assert();
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("fleetcast"),
                "{} has no example",
                sub.get_name()
            );
        }
        let cli = Cli::try_parse_from([
            "fleetcast",
            "release",
            "a.wasm",
            "--app",
            "shop",
            "--version",
            "1.0.0",
            "--key",
            "r1.key",
            "--key",
            "r2.key",
            "--fleet",
            "fleet",
            "--sign-only",
            "--out",
            "h.head",
            "--seq",
            "3",
        ])
        .unwrap();
        let Command::Release(r) = cli.command else {
            panic!("release")
        };
        assert_eq!(r.sign.keys.len(), 2);
        assert_eq!(r.offline.seq, Some(3));
        assert!(r.target.peer.is_none());
        // --seq only with --sign-only; --sign-only needs --out.
        for bad in [
            &[
                "fleetcast",
                "release",
                "a.wasm",
                "--app",
                "a",
                "--version",
                "1.0.0",
                "--key",
                "k",
                "--seq",
                "3",
            ][..],
            &[
                "fleetcast",
                "release",
                "a.wasm",
                "--app",
                "a",
                "--version",
                "1.0.0",
                "--key",
                "k",
                "--sign-only",
            ][..],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
