//! The mesh over real QUIC on this machine: N agents in one process (each its own quinn
//! endpoint on loopback, sled store, verification and activation path), a 1 MiB release pushed
//! into one agent; time until the publisher's tally counts all N active. Against it, in the
//! same run, a raw quinn bulk copy of the same N·S bytes (no protocol, no verification, no
//! store). Then a rollback, and optionally the same release over emulated WAN links.
//!
//! Run: `cargo bench --workspace --bench mesh_quic`
//! Env: FLEETCAST_BENCH_AGENTS (default 1000); FLEETCAST_BENCH_SENDERS, the baseline's sender
//! endpoints (default 64: see below); FLEETCAST_BENCH_WAN=0 skips the emulated-WAN run;
//! FLEETCAST_SEED fixes the mesh's random choices (printed either way).
//!
//! The baseline's senders: the mesh's upload is spread over every agent, so a baseline with a
//! single sender endpoint would serialise the whole copy on one endpoint's driver task and
//! flatter the mesh. 64 senders, each serving N/64 receivers on its own endpoint, keep both
//! cores busy; the bench also prints the copy with N senders (one per receiver, the most
//! parallel) so the choice can be judged.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use common::guest;
use common::mesh::{APP, Mesh, MeshOptions, seed_from_env};
use fleetcast::commands::publish::{PushOutcome, open, push};
use fleetcast_net::LinkModel;
use fleetcast_protocol::{AppName, HeadKind, Release};
use fleetcast_tests::raw_quinn_bulk_copy;

const SIZE: usize = 1024 * 1024;
const CHUNK: u32 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(600);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Signs and pushes `file` as `version` into agent `entry`; returns the time from the push to
/// the publisher's tally counting `expect` agents active (connecting, reading the status and
/// signing are not counted).
async fn release(
    mesh: &Mesh,
    entry: usize,
    file: &str,
    version: &str,
    expect: usize,
) -> Result<(Phase, PushOutcome)> {
    let wasm = std::fs::read(guest(file))?;
    anyhow::ensure!(wasm.len() == SIZE, "{file} is not 1 MiB");
    let app = AppName::new(APP)?;
    let release = Release::build(app.clone(), version.parse()?, &wasm, CHUNK)?;
    let args = mesh.push_args(entry, Some(expect), TIMEOUT);
    let mut opened = open(&args, &app).await?;
    opened.session.serve(release.clone(), wasm);
    let (wall, cpu, out) = timed(push(&args, opened, release, HeadKind::Release)).await;
    Ok((Phase { wall, cpu }, out?))
}

/// Pushes a rollback to the release active before the current one; same timing as [`release`].
async fn rollback(mesh: &Mesh, entry: usize, expect: usize) -> Result<(Phase, PushOutcome)> {
    let app = AppName::new(APP)?;
    let args = mesh.push_args(entry, Some(expect), TIMEOUT);
    let opened = open(&args, &app).await?;
    let current = opened.current.clone().context("no app to roll back")?;
    let target = current
        .history
        .iter()
        .rev()
        .find(|h| h.release.digest != current.active.digest)
        .map(|h| h.release.clone())
        .ok_or_else(|| anyhow!("nothing to roll back to"))?;
    let (wall, cpu, out) = timed(push(&args, opened, target, HeadKind::Rollback)).await;
    Ok((Phase { wall, cpu }, out?))
}

/// CPU time this process has used (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) close with ')'.
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Resident memory of this process, from /proc/self/status.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let kb: u64 = s
                .lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.2} GiB", kb as f64 / 1048576.0))
        })
        .unwrap_or_else(|| "?".into())
}

/// Wall time and CPU time of `f`.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, Duration, T) {
    let (t, c) = (Instant::now(), cpu_time());
    let out = f.await;
    (t.elapsed(), cpu_time().saturating_sub(c), out)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB RAM", kb as f64 / 1048576.0)
        });
    format!("{cpu}, {cores} cores{mem}, Linux {kernel}")
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown date".into(), |s| s.trim().to_string())
}

/// Wall time and the process's CPU time (both cores) of one phase.
#[derive(Clone, Copy)]
struct Phase {
    wall: Duration,
    cpu: Duration,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>8.2?}  (CPU {:>6.1?})", self.wall, self.cpu)
    }
}

struct Run {
    overlay: Duration,
    release: Phase,
    release2: Phase,
    rollback: Phase,
    chunks_served: u64,
}

async fn mesh_run(n: usize, opts: MeshOptions) -> Result<Run> {
    let t = Instant::now();
    let mut mesh = Mesh::start(n, opts).await?;
    println!(
        "  started {n} agents in {:.1?} (RSS {})",
        t.elapsed(),
        rss()
    );
    let overlay = mesh.wait_overlay(2, TIMEOUT).await?;
    println!("  overlay formed in {overlay:.1?} (RSS {})", rss());
    let (release1, out) = release(&mesh, 0, "hello-1mib-v1.wasm", "1.0.0", n).await?;
    anyhow::ensure!(out.active() >= n, "tally {:?}", out.tally);
    let chunks_served = out.chunks_served;
    println!(
        "  v1 active everywhere in {:.1?} (RSS {})",
        release1.wall,
        rss()
    );
    let entry = mesh.sample(1)[0];
    let (release2, out) = release(&mesh, entry, "hello-1mib-v2.wasm", "2.0.0", n).await?;
    anyhow::ensure!(out.active() >= n, "tally {:?}", out.tally);
    println!(
        "  v2 active everywhere in {:.1?} (RSS {})",
        release2.wall,
        rss()
    );
    let entry = mesh.sample(1)[0];
    let (rolled, out) = rollback(&mesh, entry, n).await?;
    anyhow::ensure!(out.active() >= n, "tally {:?}", out.tally);
    let behind = mesh.behind(3, "1.0.0").await?;
    anyhow::ensure!(
        behind.is_empty(),
        "{} agents behind: {behind:?}",
        behind.len()
    );
    // Wait until every agent has stopped, so that the next phase runs on a quiet process.
    let all: Vec<usize> = (0..n).collect();
    mesh.stop(&all).await;
    Ok(Run {
        overlay,
        release: release1,
        release2,
        rollback: rolled,
        chunks_served,
    })
}

fn main() -> Result<()> {
    let n = env("FLEETCAST_BENCH_AGENTS", 1000);
    let senders = env("FLEETCAST_BENCH_SENDERS", 64).clamp(1, n);
    let wan = env("FLEETCAST_BENCH_WAN", 1) != 0;
    let seed = seed_from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bytes = n * SIZE;
    rt.block_on(async {
        println!("mesh over real QUIC: {n} agents, 1 MiB release in {} chunks", SIZE / CHUNK as usize);
        // The baselines first, while the process runs nothing else.
        let (_, cpu, wall) = timed(raw_quinn_bulk_copy(n, SIZE, senders)).await;
        let base = Phase { wall: wall?, cpu };
        let (_, cpu, wall) = timed(raw_quinn_bulk_copy(n, SIZE, n)).await;
        let base_n = Phase { wall: wall?, cpu };
        println!("  raw quinn bulk copies done: {senders} senders {:.2?}, {n} senders {:.2?}", base.wall, base_n.wall);

        let lan = mesh_run(n, MeshOptions::new(seed)).await?;

        let wan_run = if wan {
            let link = LinkModel {
                delay: Duration::from_millis(5),
                rate_bps: Some(100_000_000),
                ..LinkModel::default()
            };
            println!("  emulated WAN: 5 ms one-way delay, 100 Mb/s upload per agent");
            let mut opts = MeshOptions::new(seed);
            opts.link = Some(link);
            Some(mesh_run(n, opts).await?)
        } else {
            None
        };

        let gib = bytes as f64 / (1u64 << 30) as f64;
        let rate = |p: Phase| bytes as f64 / p.wall.as_secs_f64() / 1e6;
        println!();
        println!("command: cargo bench --workspace --bench mesh_quic   (FLEETCAST_BENCH_AGENTS={n}, FLEETCAST_BENCH_SENDERS={senders}, seed {seed})");
        println!("machine: {}", machine());
        println!("date:    {}", date());
        println!("N = {n} agents, S = 1 MiB, N·S = {gib:.2} GiB, chunks of {} KiB", CHUNK / 1024);
        println!("loopback, no link emulation:");
        println!("  overlay formed (all agents ≥2 neighbours, connected)  {:>8.2?}", lan.overlay);
        println!("  release v1: push -> 100% active (publisher's tally)  {}  {:.0} MB/s of N·S; publisher served {} chunks", lan.release, rate(lan.release), lan.chunks_served);
        println!("  release v2: push -> 100% active                      {}  {:.0} MB/s", lan.release2, rate(lan.release2));
        println!("  rollback:   push -> 100% active                      {}", lan.rollback);
        println!("  raw quinn bulk copy of N·S, {senders:>4} sender endpoints   {base}  {:.0} MB/s", rate(base));
        println!("  raw quinn bulk copy of N·S, {n:>4} sender endpoints   {base_n}  {:.0} MB/s", rate(base_n));
        let ratio = |p: Phase| p.wall.as_secs_f64() / base.wall.as_secs_f64();
        println!("  ratio release v1 / raw copy ({senders} senders)              {:>8.2}x  (goal <= 2x)", ratio(lan.release));
        println!("  ratio release v2 / raw copy ({senders} senders)              {:>8.2}x", ratio(lan.release2));
        if let Some(w) = wan_run {
            println!("emulated WAN (every agent: 5 ms one-way egress delay, 100 Mb/s upload cap):");
            println!("  overlay formed                                       {:>8.2?}", w.overlay);
            println!("  release v1: push -> 100% active                      {}", w.release);
            println!("  release v2: push -> 100% active                      {}", w.release2);
            println!("  rollback:   push -> 100% active                      {}", w.rollback);
        }
        Ok(())
    })
}
