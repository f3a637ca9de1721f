//! The demo's staged release: a bad version (it traps on `/crash`, which every agent gets
//! asked) goes out in waves with `fleetcast release --waves`, run as the operator runs it; its
//! canaries fail their trial, the `failed` gate halts the rollout at its first wave and rolls
//! it back, and the agents outside that wave never serve it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fleetcast_protocol::rollout::{bucket, pct};
use fleetcast_protocol::{Digest, NodeId};

use super::{Agent, show_all};
use ed25519_dalek::SigningKey;

use crate::fleetdir::FleetDir;
use crate::http_get;
use crate::out::Out;
use crate::session::{STATUS_TIMEOUT, Session};
use crate::target::Target;

/// The fault guest: `hello`, except that a request to `/crash…` traps.
pub(super) const FAULT_CRASH: &[u8] = include_bytes!("../../../../tests/guests/fault-crash.wasm");

/// A first wave that includes exactly `k` of `nodes` for release `digest`: its fraction, and
/// the indices it includes.
fn first_wave(nodes: &[NodeId], digest: &Digest, k: usize) -> (String, Vec<usize>) {
    let mut b: Vec<(u16, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (bucket(digest, n), i))
        .collect();
    b.sort();
    let k = k.min(b.len());
    let cut = b[k - 1].0 + 1;
    (pct(cut), b[..k].iter().map(|(_, i)| *i).collect())
}

/// Runs the staged release of the bad version against `entry` and checks that it halted,
/// rolled back to `serving`, and that only the canaries ever ran it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn halt_a_bad_release(
    out: &Out,
    dir: &Path,
    fleet: &FleetDir,
    agents: &[Agent],
    nodes: &[NodeId],
    entry: SocketAddr,
    serving: &str,
    operator: (&SigningKey, Duration),
) -> Result<()> {
    let file = dir.join("hello-crash.wasm");
    std::fs::write(&file, FAULT_CRASH)?;
    let (wave, canaries) = first_wave(nodes, &Digest::of(FAULT_CRASH), 2);
    let names: Vec<&str> = canaries.iter().map(|i| agents[*i].name.as_str()).collect();
    let waves = format!("{wave},100%");
    out.say(format!(
        "   fleetcast release hello-crash.wasm --app hello --version 3.0.0 --waves {waves} --bake 3s --max-failed 0 --fleet fleet --key fleet/keys/release-1.key --key fleet/keys/release-2.key --peer agent1"
    ));
    out.say(format!(
        "   (the first wave, {wave}, is a hash of the release and each node id: it includes {}; every agent gets /crash requests, which 3.0.0 answers with a trap)",
        names.join(" and ")
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let addrs: Vec<SocketAddr> = agents.iter().map(|a| a.http).collect();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for a in &addrs {
                    let _ = http_get::get(*a, "hello", "/crash").await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let exe = std::env::current_exe().context("the fleetcast binary's own path")?;
    let run = tokio::process::Command::new(exe)
        .arg("release")
        .arg(&file)
        .args(["--app", "hello", "--version", "3.0.0", "--waves", &waves])
        .args(["--bake", "3s", "--max-failed", "0"])
        .args(["--trial-requests", "100000", "--trial-secs", "120"])
        .arg("--fleet")
        .arg(&fleet.path)
        .arg("--key")
        .arg(fleet.key_file("release-1"))
        .arg("--key")
        .arg(fleet.key_file("release-2"))
        .args(["--peer", &entry.to_string(), "--timeout", "60"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running fleetcast release --waves")?;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    for line in String::from_utf8_lossy(&run.stdout).lines() {
        out.say(format!("   | {line}"));
    }
    for line in String::from_utf8_lossy(&run.stderr).lines() {
        out.say(format!("   | {line}"));
    }
    let code = run.status.code();
    if code != Some(5) {
        bail!("the staged release of the bad version exited {code:?}, expected 5 (halted)");
    }
    out.say(format!(
        "   exit 5: halted by a gate and rolled back ({} /crash requests sent meanwhile)",
        sent.load(Ordering::Relaxed)
    ));
    show_all(out, agents, serving).await?;
    // Who ever ran 3.0.0: each agent's history of activations.
    let (key, within) = operator;
    let mut ran = Vec::new();
    for a in agents {
        let mut s = Session::connect_as(&Target::addr(a.quic, within), Some(key)).await?;
        let st = s.status(STATUS_TIMEOUT).await?;
        let hello = st.apps.iter().find(|x| x.app.as_str() == "hello");
        if hello.is_some_and(|x| {
            x.history
                .iter()
                .any(|h| h.release.version.to_string() == "3.0.0")
        }) {
            ran.push(a.name.as_str());
        }
    }
    out.say(format!(
        "   ran 3.0.0 at any time: {} (of the first wave: {}); the other {} agents never served it",
        ran.join(", "),
        names.join(", "),
        agents.len() - ran.len()
    ));
    // A canary still activating when the halt arrived never swapped it in.
    if ran.is_empty() || ran.iter().any(|r| !names.contains(r)) {
        bail!("3.0.0 ran on {ran:?}, expected some of the first wave {names:?} and no one else");
    }
    Ok(())
}
