//! `fleetcast demo`: a local fleet of real `fleetcast-agent` processes on loopback, walked
//! through release, swap under load, rollback and an offline restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::publish::PushArgs;
use super::release::ReleaseCmd;
use super::rollback::Rollback;
use crate::http_get;

const HELLO_V1: &[u8] = include_bytes!("../../../tests/guests/hello-v1.wasm");
const HELLO_V2: &[u8] = include_bytes!("../../../tests/guests/hello-v2.wasm");

/// Run a local demo fleet and walk the whole story; cleans up and exits 0.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  cargo build --workspace && target/debug/fleetcast demo")]
pub struct Demo {
    /// Number of agents (at least 2).
    #[arg(long, default_value_t = 5)]
    pub agents: usize,
    /// The fleetcast-agent binary; default: next to this executable.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Keep the demo directory (keys, stores, agent logs) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

struct Agent {
    name: String,
    child: Child,
    quic: SocketAddr,
    http: SocketAddr,
}

fn step(msg: &str) {
    println!("\n== {msg}");
}

async fn spawn_agent(bin: &Path, dir: &Path, name: &str, contacts: &[SocketAddr]) -> Result<Agent> {
    let data_dir = dir.join(name);
    // Each agent's log goes to <demo dir>/<name>.log (kept with --keep; the level is
    // FLEETCAST_DEMO_LOG, default warn).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .with_context(|| format!("cannot create {name}.log"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--fleet")
        .arg("demo")
        .arg("--trusted-key")
        .arg(dir.join("ops.pub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .env(
            "RUST_LOG",
            std::env::var("FLEETCAST_DEMO_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true);
    for p in contacts {
        cmd.arg("--contact").arg(p.to_string());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("fleetcast-agent ready") {
                return anyhow::Ok(line);
            }
        }
        bail!("{name} exited before it was ready")
    })
    .await
    .with_context(|| format!("{name} did not start within 60 s"))??;
    let field = |k: &str| -> Result<SocketAddr> {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .context("ready line lacks an address")?
            .parse()
            .context("bad address in ready line")
    };
    let (quic, http) = (field("quic=")?, field("http=")?);
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Agent {
        name: name.to_string(),
        child,
        quic,
        http,
    })
}

/// Agent `i` (1-based) joins through the agent before it and one about half way back, so the
/// demo fleet is a small mesh rather than a chain.
fn demo_contacts(earlier: &[Agent], i: usize) -> Vec<SocketAddr> {
    let mut c: Vec<SocketAddr> = Vec::new();
    for j in [i.saturating_sub(1), i / 2] {
        if j >= 1
            && let Some(a) = earlier.get(j - 1)
            && !c.contains(&a.quic)
        {
            c.push(a.quic);
        }
    }
    c
}

async fn show_all(agents: &[Agent], want: &str) -> Result<()> {
    for a in agents {
        let r = http_get::get(a.http, "hello", "/").await?;
        let v = r.version_header.unwrap_or_default();
        println!(
            "   {} (http {}): {} {}",
            a.name,
            a.http,
            r.status,
            r.body.trim()
        );
        if r.status != 200 || v != want {
            bail!("{} serves {v:?}, expected {want}", a.name);
        }
    }
    Ok(())
}

impl Demo {
    pub async fn execute(self) -> Result<()> {
        if self.agents < 2 {
            bail!("--agents must be at least 2");
        }
        let bin = match &self.agent_bin {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("fleetcast-agent"),
        };
        if !bin.exists() {
            bail!(
                "{} not found: build both binaries with `cargo build --workspace` or pass --agent-bin",
                bin.display()
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("fleetcast-demo-")
            .tempdir()?;
        let dir = tmp.path().to_path_buf();
        println!(
            "fleetcast demo: a local fleet of {} agents in {}",
            self.agents,
            dir.display()
        );
        let result = self.walk(&bin, &dir).await;
        if self.keep {
            let kept = tmp.keep();
            println!("\nkept {}", kept.display());
        }
        match &result {
            Ok(()) => {
                println!("\ndemo finished: every step checked; agents stopped and cleaned up.")
            }
            Err(e) => println!("\ndemo failed: {e:#}"),
        }
        result
    }

    async fn walk(&self, bin: &Path, dir: &Path) -> Result<()> {
        step("1. keys: fleetcast keygen --out ops.key");
        fleetcast_net::keys::generate(&dir.join("ops.key"))?;
        std::fs::write(dir.join("hello-v1.wasm"), HELLO_V1)?;
        std::fs::write(dir.join("hello-v2.wasm"), HELLO_V2)?;
        println!("   wrote ops.key and ops.pub; every agent trusts ops.pub");

        step(
            "2. start agents: each joins the mesh through two earlier agents (its contacts); only agent1 hears from the publisher",
        );
        let mut agents: Vec<Agent> = Vec::new();
        let mut contacts: Vec<Vec<SocketAddr>> = Vec::new();
        for i in 1..=self.agents {
            let peers = demo_contacts(&agents, i);
            let a = spawn_agent(bin, dir, &format!("agent{i}"), &peers).await?;
            println!(
                "   {} quic {} http {} contacts {:?}",
                a.name, a.quic, a.http, peers
            );
            agents.push(a);
            contacts.push(peers);
        }
        let n = agents.len();
        let push = PushArgs {
            key: dir.join("ops.key"),
            peer: agents[0].quic,
            fleet: None,
            wait: true,
            expect: Some(n),
            timeout: 60,
        };

        step("3. fleetcast release hello-v1.wasm --app hello --version 1.0.0 --wait");
        let t = Instant::now();
        ReleaseCmd {
            file: dir.join("hello-v1.wasm"),
            app: "hello".into(),
            version: "1.0.0".into(),
            push: push.clone(),
            chunk_size: fleetcast_protocol::DEFAULT_CHUNK_SIZE,
            policy: Default::default(),
        }
        .execute()
        .await?;
        println!(
            "   all {n} agents active in {:?}; real HTTP requests with Host: hello:",
            t.elapsed()
        );
        show_all(&agents, "1.0.0").await?;

        step("4. release 2.0.0 while a client streams requests at every agent");
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed, v2_seen) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut load = Vec::new();
        for a in &agents {
            let (addr, stop, ok, failed, v2) = (
                a.http,
                stop.clone(),
                ok.clone(),
                failed.clone(),
                v2_seen.clone(),
            );
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match http_get::get(addr, "hello", "/").await {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if r.version_header.as_deref() == Some("2.0.0") {
                                v2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let t = Instant::now();
        ReleaseCmd {
            file: dir.join("hello-v2.wasm"),
            app: "hello".into(),
            version: "2.0.0".into(),
            push: push.clone(),
            chunk_size: fleetcast_protocol::DEFAULT_CHUNK_SIZE,
            policy: Default::default(),
        }
        .execute()
        .await?;
        let swap = t.elapsed();
        // Keep the load on until a few hundred requests have seen 2.0.0.
        let until = Instant::now() + Duration::from_secs(10);
        while v2_seen.load(Ordering::Relaxed) < 200 && Instant::now() < until {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for l in load {
            l.await?;
        }
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        println!("   fleet on 2.0.0 in {swap:?}; {ok} requests during the swap, {failed} failed");
        if failed > 0 {
            bail!("{failed} requests failed during the swap");
        }
        show_all(&agents, "2.0.0").await?;

        step("5. fleetcast rollback --app hello   (back to 1.0.0, from every agent's cache)");
        let t = Instant::now();
        Rollback {
            app: "hello".into(),
            to: None,
            push: push.clone(),
        }
        .execute()
        .await?;
        println!("   rolled back in {:?}:", t.elapsed());
        show_all(&agents, "1.0.0").await?;

        step("6. fleetcast rollback --app hello --to 2.0.0");
        Rollback {
            app: "hello".into(),
            to: Some("2.0.0".into()),
            push: push.clone(),
        }
        .execute()
        .await?;
        show_all(&agents, "2.0.0").await?;

        step(&format!(
            "7. stop {} and restart it with no contacts: it serves from its cache at once",
            agents[n - 1].name
        ));
        let mut last = agents.pop().context("agents")?;
        last.child.kill().await?;
        let t = Instant::now();
        let mut offline = spawn_agent(bin, dir, &last.name, &[]).await?;
        let r = http_get::get(offline.http, "hello", "/").await?;
        println!(
            "   {} back up and answering in {:?} with no network: {} {}",
            offline.name,
            t.elapsed(),
            r.status,
            r.body.trim()
        );
        if r.version_header.as_deref() != Some("2.0.0") {
            bail!(
                "restarted agent serves {:?}, expected 2.0.0",
                r.version_header
            );
        }

        step(&format!(
            "8. while {} is down, roll the fleet back to 1.0.0; then restart it with its contacts: it catches up by anti-entropy, no new release",
            offline.name
        ));
        offline.child.kill().await?;
        let mut rest = push.clone();
        rest.expect = Some(n - 1);
        Rollback {
            app: "hello".into(),
            to: Some("1.0.0".into()),
            push: rest,
        }
        .execute()
        .await?;
        let t = Instant::now();
        let back = spawn_agent(bin, dir, &offline.name, &contacts[n - 1]).await?;
        let first = http_get::get(back.http, "hello", "/").await?;
        println!(
            "   {} restarted: first answer (from cache) {} {}",
            back.name,
            first.status,
            first.version_header.unwrap_or_default()
        );
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http_get::get(back.http, "hello", "/").await?;
            if r.version_header.as_deref() == Some("1.0.0") {
                println!(
                    "   {} caught up to 1.0.0 {:?} after restart (summary exchange with a neighbour, then the head)",
                    back.name,
                    t.elapsed()
                );
                break;
            }
            if Instant::now() > until {
                bail!("{} did not catch up to 1.0.0 within 30 s", back.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        agents.push(back);
        show_all(&agents, "1.0.0").await?;

        step("9. fleetcast status --peer agent1   (where the releases entered the mesh)");
        let mut s =
            crate::session::Session::connect(agents[0].quic, Duration::from_secs(10)).await?;
        print!(
            "{}",
            super::status::render(&s.status(Duration::from_secs(10)).await?)
        );
        drop(s);

        let far = &agents[n - 1];
        step(&format!(
            "10. fleetcast status --peer {}   (any agent knows the fleet's count: it comes down the tree once settled)",
            far.name
        ));
        let mut s = crate::session::Session::connect(far.quic, Duration::from_secs(10)).await?;
        let until = Instant::now() + Duration::from_secs(15);
        let st = loop {
            let st = s.status(Duration::from_secs(10)).await?;
            let counted = st.fleet_tallies.iter().any(|t| {
                t.app.as_ref().is_some_and(|a| a.as_str() == "hello") && t.active as usize == n
            });
            if counted {
                break st;
            }
            if Instant::now() > until {
                bail!(
                    "{} did not learn the fleet's count of {n} within 15 s: {:?}",
                    far.name,
                    st.fleet_tallies
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        print!("{}", super::status::render(&st));
        drop(s);

        for a in &mut agents {
            let _ = a.child.kill().await;
        }
        Ok(())
    }
}
