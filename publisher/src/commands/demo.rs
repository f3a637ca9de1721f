//! `fleetcast demo`: a local fleet of real `fleetcast-agent` processes on loopback, walked
//! through the fleet root (init, enrollment, 2-of-3 release signatures), release, swap under
//! load, rollback, an offline restart, a rotation of a release key after which a head
//! signed with the rotated-out key is refused, and a staged release of a bad version that
//! halts itself at its first wave (`demo/staged.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use ed25519_dalek::SigningKey;
use fleetcast_protocol::wire::{Outcome, Position};
use fleetcast_protocol::{Head, HeadKind, NodeId, SignedRoot};

use super::fleet::{next_version, push_chain};
use super::publish::PushArgs;
use super::release::ReleaseCmd;
use super::rollback::Rollback;
use crate::error::{CliError, ErrorKind};
use crate::fleetdir::{self, FleetDir, InitSpec, RotateSpec, now_ms};
use crate::http_get;
use crate::json::{self, Event};
use crate::out::{Out, OutArgs};
use crate::session::News;
use crate::session::{STATUS_TIMEOUT, Session};
use crate::signing::{Signers, read_key, sign_all};
use crate::target::{ConnectArgs, Target};

mod staged;

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
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// With --json the walk-through goes to stderr and stdout gets one summary object.
    #[command(flatten)]
    pub out: OutArgs,
}

/// The agents' log level unless FLEETCAST_DEMO_LOG says otherwise: info, so that the kept logs
/// (`--keep`) show what each agent did.
pub const DEMO_LOG: &str = "info,wasmtime=warn,cranelift=warn,sled=warn,quinn=warn";

struct Agent {
    name: String,
    child: Child,
    quic: SocketAddr,
    http: SocketAddr,
}

fn step(out: &Out, msg: &str) {
    out.say(format!("\n== {msg}"));
}

/// The demo's fleet name (agents run with `--fleet demo`; the root names it too).
const DEMO_FLEET: &str = "demo";

/// `fleetcast-agent id --data-dir DIR`: the node id the agent will have (its identity is
/// created if there is none yet).
async fn agent_id(bin: &Path, data_dir: &Path) -> Result<NodeId> {
    let out = Command::new(bin)
        .arg("id")
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .await
        .with_context(|| format!("cannot run {} id", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} id --data-dir {} failed: {}",
            bin.display(),
            data_dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<NodeId>()
        .map_err(|e| anyhow::anyhow!("fleetcast-agent id printed {text:?}: {e}"))
}

/// Enrolls agent `name`: its id from `fleetcast-agent id`, a certificate signed by the
/// enroll key in `<dir>/<name>/node.cert`.
async fn enroll(bin: &Path, dir: &Path, name: &str, root: &SignedRoot) -> Result<NodeId> {
    let data_dir = dir.join(name);
    let node = agent_id(bin, &data_dir).await?;
    let fleet = FleetDir::new(dir.join("fleet"));
    let key = read_key(&fleet.key_file("enroll"))?;
    let now = now_ms();
    let cert = fleetdir::build_cert(root, node, &key, now, now + 365 * 86_400_000)?;
    let text = serde_json::to_string_pretty(&cert)?;
    fleetdir::write_atomic(&data_dir.join("node.cert"), text.as_bytes(), false)?;
    Ok(node)
}

async fn spawn_agent(bin: &Path, dir: &Path, name: &str, contacts: &[SocketAddr]) -> Result<Agent> {
    let data_dir = dir.join(name);
    // Each agent's log goes to <demo dir>/<name>.log (kept with --keep; the level is
    // FLEETCAST_DEMO_LOG, default info).
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
        .arg(DEMO_FLEET)
        .arg("--root")
        .arg(dir.join("fleet").join("root.json"))
        .arg("--node-cert")
        .arg(data_dir.join("node.cert"))
        .args(["--admission", "enrolled"])
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
            std::env::var("FLEETCAST_DEMO_LOG").unwrap_or_else(|_| DEMO_LOG.into()),
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

async fn show_all(out: &Out, agents: &[Agent], want: &str) -> Result<()> {
    for a in agents {
        let r = http_get::get(a.http, "hello", "/").await?;
        let v = r.version_header.unwrap_or_default();
        out.say(format!(
            "   {} (http {}): {} {}",
            a.name,
            a.http,
            r.status,
            r.body.trim()
        ));
        if r.status != 200 || v != want {
            bail!("{} serves {v:?}, expected {want}", a.name);
        }
    }
    Ok(())
}

impl Demo {
    pub async fn execute(self) -> crate::error::Result<()> {
        let out = if self.out.json {
            Out::human_on_stderr()
        } else {
            Out::human()
        };
        let summary = Out::new(self.out.json);
        let (result, kept) = self.run(&out).await;
        summary.emit(Event::Demo(json::Demo {
            ok: result.is_ok(),
            agents: self.agents,
            kept: kept.map(|k| k.display().to_string()),
            message: result.as_ref().err().map(|e| format!("{e:#}")),
        }));
        result.map_err(|e| match e.downcast_ref::<CliError>() {
            Some(c) => CliError::new(c.kind, format!("demo failed: {c}")),
            None => CliError::new(ErrorKind::Refused, format!("demo failed: {e:#}")),
        })
    }

    /// The walk, and the demo directory if it was kept.
    async fn run(&self, out: &Out) -> (Result<()>, Option<PathBuf>) {
        if self.agents < 2 {
            let e = CliError::usage(format!(
                "--agents {} is too few: the demo needs at least 2",
                self.agents
            ));
            return (Err(e.into()), None);
        }
        let bin = match &self.agent_bin {
            Some(b) => b.clone(),
            None => match std::env::current_exe() {
                Ok(exe) => exe.with_file_name("fleetcast-agent"),
                Err(e) => return (Err(e.into()), None),
            },
        };
        if !bin.exists() {
            let e = CliError::usage(format!(
                "{} not found: build both binaries with `cargo build --workspace` or pass --agent-bin",
                bin.display()
            ));
            return (Err(e.into()), None);
        }
        let tmp = match tempfile::Builder::new().prefix("fleetcast-demo-").tempdir() {
            Ok(t) => t,
            Err(e) => return (Err(e.into()), None),
        };
        let dir = tmp.path().to_path_buf();
        out.say(format!(
            "fleetcast demo: a local fleet of {} agents in {}",
            self.agents,
            dir.display()
        ));
        let mut result = self.walk(out, &bin, &dir).await;
        let kept = self.keep.then(|| tmp.keep());
        if let Some(k) = &kept {
            out.say(format!("\nkept {} (keys, stores, agent logs)", k.display()));
            if result.is_ok() {
                result = check_logs(k, self.agents);
            }
        }
        match &result {
            Ok(()) => {
                out.say("\ndemo finished: every step checked; agents stopped and cleaned up.")
            }
            Err(e) => out.say(format!("\ndemo failed: {e:#}")),
        }
        (result, kept)
    }

    async fn walk(&self, out: &Out, bin: &Path, dir: &Path) -> Result<()> {
        step(
            out,
            "1. the fleet root: fleetcast fleet init --out fleet --root-keys 3 --root-threshold 2 --release-keys 3 --release-threshold 2",
        );
        let fleet = FleetDir::new(dir.join("fleet"));
        let now = now_ms();
        let (root, keys) = fleetdir::build_init(&InitSpec {
            fleet: DEMO_FLEET.into(),
            root_keys: 3,
            root_threshold: 2,
            release_keys: 3,
            release_threshold: 2,
            now_ms: now,
            expires_ms: now + 365 * 86_400_000,
        })?;
        for k in &keys {
            fleet.write_key(k)?;
        }
        fleet.write_root(&root)?;
        std::fs::write(dir.join("hello-v1.wasm"), HELLO_V1)?;
        std::fs::write(dir.join("hello-v2.wasm"), HELLO_V2)?;
        out.say("   wrote fleet/root.json (version 1, epoch 1, signed by 2 of 3 root keys) and fleet/keys/: root-1..3, release-1..3 (a head needs 2), enroll; every agent gets root.json and admits only enrolled nodes and release-key operators");

        step(
            out,
            "2. enroll and start agents: fleetcast node enroll --node $(fleetcast-agent id --data-dir agentN); each joins the mesh through two earlier agents (its contacts); only agent1 hears from the publisher",
        );
        let mut agents: Vec<Agent> = Vec::new();
        let mut nodes: Vec<NodeId> = Vec::new();
        let mut contacts: Vec<Vec<SocketAddr>> = Vec::new();
        for i in 1..=self.agents {
            let name = format!("agent{i}");
            let node = enroll(bin, dir, &name, &root).await?;
            nodes.push(node);
            let peers = demo_contacts(&agents, i);
            let a = spawn_agent(bin, dir, &name, &peers).await?;
            out.say(format!(
                "   {} node {} enrolled (node.cert); quic {} http {} contacts {:?}",
                a.name,
                node.short(),
                a.quic,
                a.http,
                peers
            ));
            agents.push(a);
            contacts.push(peers);
        }
        let n = agents.len();
        let within = self.connect.connect_timeout.0;
        let entry = Target::addr(agents[0].quic, within);
        let release_key = |name: &str| read_key(&fleet.key_file(name));
        let mut signers = Signers {
            keys: vec![release_key("release-1")?, release_key("release-2")?],
            root: Some(root.clone()),
        };
        let push = PushArgs {
            key: fleet.key_file("release-1"),
            peer: agents[0].quic,
            fleet: Some(DEMO_FLEET.into()),
            wait: true,
            expect: Some(n),
            timeout: 60,
        };
        let release = |file: &str, version: &str, push: PushArgs| ReleaseCmd {
            file: dir.join(file),
            app: "hello".into(),
            version: version.into(),
            push,
            chunk_size: fleetcast_protocol::DEFAULT_CHUNK_SIZE,
            policy: Default::default(),
        };

        step(
            out,
            "3. fleetcast release hello-v1.wasm --app hello --version 1.0.0 --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key --wait   (2 of 3 release keys sign)",
        );
        let t = Instant::now();
        release("hello-v1.wasm", "1.0.0", push.clone())
            .run_with(&entry, false, &signers, out)
            .await?;
        out.say(format!(
            "   all {n} agents active in {:?}; real HTTP requests with Host: hello:",
            t.elapsed()
        ));
        show_all(out, &agents, "1.0.0").await?;

        step(
            out,
            "4. release 2.0.0 while a client streams requests at every agent",
        );
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
        release("hello-v2.wasm", "2.0.0", push.clone())
            .run_with(&entry, false, &signers, out)
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
        out.say(format!(
            "   fleet on 2.0.0 in {swap:?}; {ok} requests during the swap, {failed} failed"
        ));
        if failed > 0 {
            bail!("{failed} requests failed during the swap");
        }
        show_all(out, &agents, "2.0.0").await?;

        step(
            out,
            "5. fleetcast rollback --app hello   (back to 1.0.0, from every agent's cache)",
        );
        let rollback = |to: Option<&str>, push: PushArgs| Rollback {
            app: "hello".into(),
            to: to.map(String::from),
            push,
        };
        let t = Instant::now();
        rollback(None, push.clone())
            .run_with(&entry, &signers, out)
            .await?;
        out.say(format!("   rolled back in {:?}:", t.elapsed()));
        show_all(out, &agents, "1.0.0").await?;

        step(
            out,
            "6. fleetcast rollback --app hello --to 2.0.0   (forward again)",
        );
        rollback(Some("2.0.0"), push.clone())
            .run_with(&entry, &signers, out)
            .await?;
        show_all(out, &agents, "2.0.0").await?;

        step(
            out,
            &format!(
                "7. stop {} and restart it with no contacts: it serves from its cache at once",
                agents[n - 1].name
            ),
        );
        let mut last = agents.pop().context("agents")?;
        last.child.kill().await?;
        let t = Instant::now();
        let mut offline = spawn_agent(bin, dir, &last.name, &[]).await?;
        let r = http_get::get(offline.http, "hello", "/").await?;
        out.say(format!(
            "   {} back up and answering in {:?} with no network: {} {}",
            offline.name,
            t.elapsed(),
            r.status,
            r.body.trim()
        ));
        if r.version_header.as_deref() != Some("2.0.0") {
            bail!(
                "restarted agent serves {:?}, expected 2.0.0",
                r.version_header
            );
        }

        step(
            out,
            &format!(
                "8. while {} is down, roll the fleet back to 1.0.0; then restart it with its contacts: it catches up by anti-entropy, no new release",
                offline.name
            ),
        );
        offline.child.kill().await?;
        let mut rest = push.clone();
        rest.expect = Some(n - 1);
        rollback(Some("1.0.0"), rest)
            .run_with(&entry, &signers, out)
            .await?;
        let t = Instant::now();
        let back = spawn_agent(bin, dir, &offline.name, &contacts[n - 1]).await?;
        let first = http_get::get(back.http, "hello", "/").await?;
        out.say(format!(
            "   {} restarted: first answer (from cache) {} {}",
            back.name,
            first.status,
            first.version_header.unwrap_or_default()
        ));
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = http_get::get(back.http, "hello", "/").await?;
            if r.version_header.as_deref() == Some("1.0.0") {
                out.say(format!(
                    "   {} caught up to 1.0.0 {:?} after restart (summary exchange with a neighbour, then the head)",
                    back.name,
                    t.elapsed()
                ));
                break;
            }
            if Instant::now() > until {
                bail!("{} did not catch up to 1.0.0 within 30 s", back.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        agents.push(back);
        show_all(out, &agents, "1.0.0").await?;

        step(
            out,
            "9. release-1 leaks: fleetcast fleet rotate --replace release-1 --root-key fleet/keys/root-1.key --root-key fleet/keys/root-2.key; fleetcast fleet push",
        );
        let old_release_1 = release_key("release-1")?;
        let (next, _) = next_version(
            &fleet,
            &RotateSpec {
                replace: vec!["release-1".into()],
                now_ms: now_ms(),
                ..Default::default()
            },
            &[fleet.key_file("root-1"), fleet.key_file("root-2")],
        )?;
        out.say(format!(
            "   wrote fleet/root.json version {} (epoch {}: the release role changed); the old release-1 key is in fleet/keys/old/",
            next.root.version, next.root.epoch
        ));
        let chain = fleet.load_chain()?;
        // Connected as release-2, which both versions list (the old release-1 would be
        // dropped once the agent adopts the new root).
        let release_2 = release_key("release-2")?;
        let mut s = Session::connect_as(&entry, Some(&release_2)).await?;
        let (_, trust) = push_chain(&mut s, &chain).await?;
        out.say(format!(
            "   agent1 holds root version {} (epoch {}); the mesh spreads it",
            trust.version, trust.epoch
        ));
        wait_for_root(&agents, within, &release_2, next.root.version).await?;
        out.say(format!(
            "   all {n} agents hold root version {}",
            next.root.version
        ));

        step(
            out,
            "10. a head signed with the rotated-out release-1 (and release-2) is refused: the old key no longer counts",
        );
        drop(s);
        let mut s = Session::connect_as(&entry, Some(&release_2)).await?;
        let st = s.status(STATUS_TIMEOUT).await?;
        let app = fleetcast_protocol::AppName::new("hello")?;
        let held = crate::position::held(&st, &app);
        let pos = crate::position::next(&app, held, next.root.epoch)?;
        let a = super::history::find(&st, &app).context("hello on agent1")?;
        let forged = sign_all(
            Head {
                fleet: DEMO_FLEET.into(),
                app: app.clone(),
                seq: pos.seq,
                release: a.active.clone(),
                kind: HeadKind::Rollback,
                issued_at_ms: now_ms(),
                epoch: pos.epoch,
                plan: None,
            },
            &[old_release_1, release_2.clone()],
        );
        s.push_head(&forged)?;
        let reason = refusal(&mut s, &forged, pos).await?;
        out.say(format!("   agent1 refused it: {reason}"));
        drop(s);

        step(
            out,
            "11. the new release-1 and release-2 sign (fleetcast rollback --to 2.0.0 --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key): a new epoch, seq 1",
        );
        signers = Signers {
            keys: vec![release_key("release-1")?, release_2.clone()],
            root: Some(next.clone()),
        };
        rollback(Some("2.0.0"), push.clone())
            .run_with(&entry, &signers, out)
            .await?;
        show_all(out, &agents, "2.0.0").await?;

        step(
            out,
            "12. a staged release of a bad version halts itself: waves, a canary trial that fails, the failed gate, a signed rollback",
        );
        staged::halt_a_bad_release(
            out,
            dir,
            &fleet,
            &agents,
            &nodes,
            agents[0].quic,
            "2.0.0",
            (&release_2, within),
        )
        .await?;

        step(
            out,
            "13. fleetcast status --peer agent1 --key fleet/keys/release-2.key   (where the releases entered the mesh)",
        );
        let mut s = Session::connect_as(&entry, Some(&release_2)).await?;
        let st = s.status(STATUS_TIMEOUT).await?;
        out.print(&status_text(&mut s, &st).await?);
        drop(s);

        let far = &agents[n - 1];
        step(
            out,
            &format!(
                "14. fleetcast status --peer {}   (any agent knows the fleet's count: it comes down the tree once settled)",
                far.name
            ),
        );
        let mut s = Session::connect_as(&Target::addr(far.quic, within), Some(&release_2)).await?;
        let until = Instant::now() + Duration::from_secs(15);
        let st = loop {
            let st = s.status(STATUS_TIMEOUT).await?;
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
        out.print(&status_text(&mut s, &st).await?);
        drop(s);

        for a in &mut agents {
            let _ = a.child.kill().await;
        }
        Ok(())
    }
}

/// Waits (up to 30 s) until every agent holds root `version`.
async fn wait_for_root(
    agents: &[Agent],
    within: Duration,
    key: &SigningKey,
    version: u64,
) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    for a in agents {
        let mut s = Session::connect_as(&Target::addr(a.quic, within), Some(key)).await?;
        loop {
            let st = s.status(STATUS_TIMEOUT).await?;
            if st.trust.version >= version {
                break;
            }
            if Instant::now() > until {
                bail!(
                    "{} still holds root version {} 30 s after version {version} was pushed",
                    a.name,
                    st.trust.version
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The peer's refusal of `head` (its report), or an error if it accepted it.
async fn refusal(
    s: &mut Session,
    head: &fleetcast_protocol::SignedHead,
    pos: Position,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match s.next_news(deadline).await? {
            Some(News::Report(r)) if r.app == head.head.app && r.seq == pos.seq => {
                return match r.outcome {
                    Outcome::Rejected(why) => Ok(why),
                    other => bail!(
                        "agent1 did not refuse the head signed with the rotated-out key: {other}"
                    ),
                };
            }
            Some(_) => continue,
            None => {
                bail!("agent1 did not answer the head signed with the rotated-out key within 10 s")
            }
        }
    }
}

/// What `fleetcast status` prints for `st`, with a census through the same session.
async fn status_text(s: &mut Session, st: &fleetcast_protocol::NodeStatus) -> Result<String> {
    let census = super::status::census(s, st).await?;
    Ok(super::status::render(
        st,
        census.as_ref().map_err(|e| e.as_str()),
    ))
}

/// With `--keep`, each agent's log must say what it did (an empty log means the level hid it).
fn check_logs(dir: &Path, agents: usize) -> Result<()> {
    for i in 1..=agents {
        let log = dir.join(format!("agent{i}.log"));
        let len = std::fs::metadata(&log)
            .with_context(|| format!("cannot read {}", log.display()))?
            .len();
        if len == 0 {
            bail!(
                "{} is empty: the agents log at FLEETCAST_DEMO_LOG (default {DEMO_LOG}); unset it or raise it",
                log.display()
            );
        }
    }
    Ok(())
}
