//! `loadgen`: closed-loop HTTP/1.1 load against one address, for benchmark scripts that compare
//! the agent with `wasmtime serve` under the same client. All logic is in
//! [`fleetcast_tests::load`]; this only parses flags and prints the report.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use fleetcast_tests::load::{self, LoadConfig};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Closed-loop HTTP/1.1 load generator: N keep-alive connections sending GETs back to back",
    after_help = "Prints one summary line (requests, failures by status, req/s, p50/p90/p99/max latency \
                  in µs); with --json, one JSON object instead.\n\nExample:\n  \
                  loadgen --addr 127.0.0.1:8401 --host hello --path / --connections 32 --duration 10 --warmup 2"
)]
struct Cli {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8401")]
    addr: SocketAddr,
    /// Host header of every request.
    #[arg(long, default_value = "hello")]
    host: String,
    /// Request path (origin form, query allowed).
    #[arg(long, default_value = "/")]
    path: String,
    /// Concurrent keep-alive connections, one request in flight each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured duration, in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before the measured duration, in seconds; its requests are not recorded.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Print one line of JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<()> {
    let cfg = LoadConfig {
        addr: cli.addr,
        host: cli.host,
        path: cli.path,
        connections: cli.connections,
        duration: Duration::try_from_secs_f64(cli.duration).context("bad --duration")?,
        warmup: Duration::try_from_secs_f64(cli.warmup).context("bad --warmup")?,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    let report = runtime.block_on(load::run(&cfg))?;
    if cli.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.summary());
    }
    Ok(())
}
