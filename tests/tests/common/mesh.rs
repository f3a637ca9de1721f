//! A large fleet in one process: hundreds or thousands of agents, each with its own quinn
//! endpoint on loopback, its own sled store and the daemon's activation path, sharing one
//! wasmtime engine and a compile cache keyed by digest (so each release compiles once per
//! process). Each agent bootstraps from a few random earlier agents, as a real fleet would.
//!
//! Everything random comes from [`MeshOptions::seed`], printed by [`Mesh::start`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fleetcast::commands::publish::{PushArgs, PushOutcome};
use fleetcast::commands::release::ReleaseCmd;
use fleetcast::commands::rollback::Rollback;
use fleetcast_agent::agent::{AgentHandle, Shared, start_with};
use fleetcast_agent::config::{AgentConfig, MeshConfig};
use fleetcast_agent::runtime::{CompileCache, RuntimeConfig, RuntimeEngine};
use fleetcast_agent::store::StoreOptions;
use fleetcast_net::LinkModel;
use fleetcast_protocol::wire::{NodeId, NodeStatus};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::guest;

/// The app every mesh release is for.
pub const APP: &str = "hello";

/// How a [`Mesh`] is built.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Seed of the contact choices, the link models' seeds and the checks' samples.
    pub seed: u64,
    /// Bootstrap contacts per agent (random earlier agents).
    pub contacts: usize,
    /// Keep each agent's data directory when it stops (to restart it from its store);
    /// otherwise the sled store is temporary (deleted when the agent stops).
    pub persistent: bool,
    /// Emulated egress link of every agent, if any (each agent gets its own seed).
    pub link: Option<LinkModel>,
    /// Agents started at once while the mesh is being built.
    pub start_batch: usize,
    pub mesh: MeshConfig,
}

impl MeshOptions {
    pub fn new(seed: u64) -> Self {
        MeshOptions {
            seed,
            contacts: 3,
            persistent: false,
            link: None,
            start_batch: 50,
            mesh: MeshConfig::default(),
        }
    }
}

/// A seed from `FLEETCAST_SEED` if set, else a random one.
pub fn seed_from_env() -> u64 {
    std::env::var("FLEETCAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub opts: MeshOptions,
    pub engine: Arc<RuntimeEngine>,
    pub cache: Arc<CompileCache>,
    pub agents: Vec<Option<AgentHandle>>,
    /// The bootstrap contacts each agent was started with (kept for restarts).
    pub contacts: Vec<Vec<SocketAddr>>,
    /// Each agent's QUIC address (a restarted agent listens on it again).
    pub addrs: Vec<SocketAddr>,
    rng: StdRng,
}

impl Mesh {
    /// Starts `n` agents. Agent `i` bootstraps from `opts.contacts` random agents among those
    /// started before its batch (agent 0 from none).
    pub async fn start(n: usize, opts: MeshOptions) -> Result<Mesh> {
        println!(
            "mesh: {n} agents, seed {} (set FLEETCAST_SEED to replay the same choices)",
            opts.seed
        );
        let dir = tempfile::tempdir()?;
        fleetcast_net::keys::generate(&dir.path().join("ops.key"))?;
        let runtime = RuntimeConfig {
            // One engine for the process: a small pool is plenty for the few requests the
            // checks make, and keeps the address-space reservation small.
            pooling: false,
            max_instances: 16,
            ..RuntimeConfig::default()
        };
        let mut mesh = Mesh {
            dir,
            engine: RuntimeEngine::new(&runtime)?,
            cache: CompileCache::new(),
            agents: Vec::with_capacity(n),
            contacts: Vec::with_capacity(n),
            addrs: Vec::with_capacity(n),
            rng: StdRng::seed_from_u64(opts.seed),
            opts,
        };
        let batch = mesh.opts.start_batch.max(1);
        while mesh.agents.len() < n {
            let first = mesh.agents.len();
            // The first few agents start one by one so that later ones have contacts.
            let size = if first <= mesh.opts.contacts {
                1
            } else {
                batch.min(n - first).min(first)
            };
            let mut set = tokio::task::JoinSet::new();
            for i in first..first + size {
                let contacts = mesh.pick_contacts(first);
                let (cfg, shared) = mesh.config(i, contacts.clone(), None);
                mesh.contacts.push(contacts);
                set.spawn(async move { (i, start_with(cfg, shared).await) });
            }
            let mut started = BTreeMap::new();
            while let Some(joined) = set.join_next().await {
                let (i, agent) = joined.context("agent start panicked")?;
                started.insert(i, agent.with_context(|| format!("starting agent {i}"))?);
            }
            for a in started.into_values() {
                mesh.addrs.push(a.quic_addr());
                mesh.agents.push(Some(a));
            }
        }
        Ok(mesh)
    }

    /// Up to `opts.contacts` distinct addresses among agents `0..below`.
    fn pick_contacts(&mut self, below: usize) -> Vec<SocketAddr> {
        let mut idx: Vec<usize> = (0..below).collect();
        idx.shuffle(&mut self.rng);
        idx.into_iter()
            .filter_map(|j| self.agents[j].as_ref().map(|a| a.quic_addr()))
            .take(self.opts.contacts)
            .collect()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent{i}"))
    }

    fn config(
        &mut self,
        i: usize,
        peers: Vec<SocketAddr>,
        listen: Option<SocketAddr>,
    ) -> (AgentConfig, Shared) {
        let mut cfg = AgentConfig::with_data_dir(self.data_dir(i));
        cfg.fleet = "mesh".into();
        cfg.listen = listen.unwrap_or_else(|| "127.0.0.1:0".parse().expect("valid"));
        cfg.http = "127.0.0.1:0".parse().expect("valid");
        cfg.trusted_keys = vec![self.dir.path().join("ops.pub")];
        cfg.contacts = peers;
        cfg.mesh = self.opts.mesh.clone();
        cfg.admin.listen = None;
        let link = self.opts.link.clone().map(|mut l| {
            l.seed = self.rng.r#gen();
            l
        });
        let shared = Shared {
            engine: Some(self.engine.clone()),
            compile_cache: Some(self.cache.clone()),
            store: StoreOptions {
                flush_every_ms: None,
                temporary: !self.opts.persistent,
                // Served chunks are read back from the OS page cache rather than kept twice.
                cache_bytes: 4 * 1024 * 1024,
            },
            link,
        };
        (cfg, shared)
    }

    pub fn agent(&self, i: usize) -> &AgentHandle {
        self.agents[i].as_ref().expect("agent is running")
    }

    pub fn running(&self) -> usize {
        self.agents.iter().flatten().count()
    }

    /// Stops the agents `which` at once: their handles are dropped together, then this waits
    /// until their stores are closed (so that they can be restarted in this process).
    pub async fn stop(&mut self, which: &[usize]) {
        let mut set = tokio::task::JoinSet::new();
        for &i in which {
            if let Some(a) = self.agents[i].take() {
                set.spawn(a.shutdown());
            }
        }
        while set.join_next().await.is_some() {}
    }

    /// Restarts agent `i` from its data directory, on its QUIC address, with the contacts it
    /// first had. The old endpoint's socket closes once its connections have drained, so a
    /// bind that fails is retried until `within` has passed.
    pub async fn restart(&mut self, i: usize, within: Duration) -> Result<()> {
        assert!(self.agents[i].is_none(), "agent {i} is running");
        let deadline = Instant::now() + within;
        let contacts = self.contacts[i].clone();
        let a = loop {
            let (cfg, shared) = self.config(i, contacts.clone(), Some(self.addrs[i]));
            match start_with(cfg, shared).await {
                Ok(a) => break a,
                Err(e) if Instant::now() < deadline && format!("{e:#}").contains("QUIC") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e).context(format!("restarting agent {i}")));
                }
            }
        };
        self.agents[i] = Some(a);
        Ok(())
    }

    /// Every running agent's status, by index.
    pub async fn statuses(&self) -> Result<Vec<(usize, NodeStatus)>> {
        let mut out = Vec::with_capacity(self.agents.len());
        for (i, a) in self.agents.iter().enumerate() {
            if let Some(a) = a {
                out.push((i, a.status().await?));
            }
        }
        Ok(out)
    }

    /// Waits until every running agent has at least `min_active` neighbours and the active
    /// views form one connected overlay. Returns how long it took.
    pub async fn wait_overlay(&self, min_active: usize, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            let st = self.statuses().await?;
            let (short, components) = overlay_shape(&st, min_active);
            if short == 0 && components == 1 {
                return Ok(start.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the overlay did not form within {within:?}: {short} agents have fewer than {min_active} neighbours, {components} connected components"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every running agent runs `version` at `seq`. Returns how long it took.
    pub async fn wait_active(&self, seq: u64, version: &str, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            let behind = self.behind(seq, version).await?;
            if behind.is_empty() {
                return Ok(start.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {} agents do not run {APP} {version} (seq {seq}) after {within:?}: {}",
                    behind.len(),
                    self.running(),
                    behind
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The running agents whose status does not show `version` active at `seq`, each with
    /// what it shows instead.
    pub async fn behind(&self, seq: u64, version: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (i, st) in self.statuses().await? {
            let app = st.apps.iter().find(|a| a.app.as_str() == APP);
            match app {
                Some(a) if a.seq == seq && a.active.version.to_string() == version => {}
                Some(a) => out.push(format!(
                    "agent {i}: {} at seq {} (error: {:?})",
                    a.active.version, a.seq, a.last_error
                )),
                None => out.push(format!("agent {i}: no {APP}")),
            }
        }
        Ok(out)
    }

    /// `k` distinct random running agents.
    pub fn sample(&mut self, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.agents.len())
            .filter(|i| self.agents[*i].is_some())
            .collect();
        idx.shuffle(&mut self.rng);
        idx.truncate(k);
        idx
    }

    pub fn push_args(&self, entry: usize, expect: Option<usize>, timeout: Duration) -> PushArgs {
        PushArgs {
            key: self.dir.path().join("ops.key"),
            peer: self.agent(entry).quic_addr(),
            fleet: None,
            wait: true,
            expect,
            timeout: timeout.as_secs().max(1),
        }
    }

    /// Releases `file` (a guest) as `version` through the publisher's library, into `push.peer`.
    pub async fn release(
        &self,
        file: &str,
        version: &str,
        push: PushArgs,
        chunk_size: u32,
    ) -> Result<PushOutcome> {
        release_cmd(file, version, push, chunk_size).execute().await
    }

    /// Rolls back to the release active before the current one (or to `to`).
    pub async fn rollback(&self, to: Option<&str>, push: PushArgs) -> Result<PushOutcome> {
        Rollback {
            app: APP.into(),
            to: to.map(String::from),
            push,
        }
        .execute()
        .await
    }
}

/// The publisher's `release` command for guest `file` as `version` of [`APP`].
pub fn release_cmd(file: &str, version: &str, push: PushArgs, chunk_size: u32) -> ReleaseCmd {
    ReleaseCmd {
        file: guest(file),
        app: APP.into(),
        version: version.into(),
        push,
        chunk_size,
        policy: Default::default(),
    }
}

/// (agents with fewer than `min_active` neighbours, connected components of the overlay).
pub fn overlay_shape(statuses: &[(usize, NodeStatus)], min_active: usize) -> (usize, usize) {
    let nodes: BTreeSet<NodeId> = statuses.iter().map(|(_, s)| s.node).collect();
    let mut edges: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    let mut short = 0;
    for (_, s) in statuses {
        if s.active_view.len() < min_active {
            short += 1;
        }
        for p in &s.active_view {
            if nodes.contains(&p.node) {
                edges.entry(s.node).or_default().insert(p.node);
                edges.entry(p.node).or_default().insert(s.node);
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut components = 0;
    for n in &nodes {
        if !seen.insert(*n) {
            continue;
        }
        components += 1;
        let mut queue = VecDeque::from([*n]);
        while let Some(x) = queue.pop_front() {
            for y in edges.get(&x).into_iter().flatten() {
                if seen.insert(*y) {
                    queue.push_back(*y);
                }
            }
        }
    }
    (short, components)
}
