//! A test fleet: in-process agents (real quinn, sled, wasmtime) on loopback, each with its own
//! temporary data directory, and a publisher key they trust.

#![allow(dead_code)]

pub mod cli;
pub mod mesh;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetcast::commands::publish::{PushArgs, PushOutcome};
use fleetcast::commands::release::ReleaseCmd;
use fleetcast::commands::rollback::Rollback;
use fleetcast::http_get;
use fleetcast_agent::agent::{AgentHandle, start};
use fleetcast_agent::config::AgentConfig;

pub fn guest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests")
        .join(name)
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub agents: Vec<Option<AgentHandle>>,
}

impl Fleet {
    /// Starts `n` agents; agent `i` keeps connections to the agents listed in `peers(i)`
    /// (indices of agents started before it).
    pub async fn start(n: usize, peers: impl Fn(usize) -> Vec<usize>) -> Fleet {
        Fleet::start_with(n, peers, |_| {}).await
    }

    /// [`Fleet::start`], with `tweak` applied to every agent's config.
    pub async fn start_with(
        n: usize,
        peers: impl Fn(usize) -> Vec<usize>,
        tweak: impl Fn(&mut AgentConfig),
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        fleetcast_net::keys::generate(&dir.path().join("ops.key")).unwrap();
        let mut fleet = Fleet {
            dir,
            agents: Vec::new(),
        };
        for i in 0..n {
            let addrs: Vec<SocketAddr> = peers(i)
                .iter()
                .map(|j| fleet.agent(*j).quic_addr())
                .collect();
            let mut cfg = fleet.config(i, addrs);
            tweak(&mut cfg);
            let a = start(cfg).await.unwrap();
            fleet.agents.push(Some(a));
        }
        fleet
    }

    pub fn config(&self, i: usize, peers: Vec<SocketAddr>) -> AgentConfig {
        let mut cfg = AgentConfig::with_data_dir(self.dir.path().join(format!("agent{i}")));
        cfg.fleet = "test".into();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.http = "127.0.0.1:0".parse().unwrap();
        cfg.trusted_keys = vec![self.dir.path().join("ops.pub")];
        cfg.contacts = peers;
        cfg.runtime.max_instances = 32;
        cfg.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        cfg
    }

    pub fn agent(&self, i: usize) -> &AgentHandle {
        self.agents[i].as_ref().expect("agent is running")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("ops.key")
    }

    pub fn push_args(&self, expect: usize) -> PushArgs {
        PushArgs {
            key: self.key(),
            peer: self.agent(0).quic_addr(),
            fleet: None,
            wait: true,
            expect: Some(expect),
            timeout: 60,
        }
    }

    pub async fn release(&self, file: &str, version: &str) -> anyhow::Result<PushOutcome> {
        self.release_with(file, version, self.push_args(self.running()))
            .await
    }

    pub async fn release_with(
        &self,
        file: &str,
        version: &str,
        push: PushArgs,
    ) -> anyhow::Result<PushOutcome> {
        ReleaseCmd {
            file: guest(file),
            app: "hello".into(),
            version: version.into(),
            push,
            chunk_size: 16 * 1024,
            policy: Default::default(),
        }
        .execute()
        .await
    }

    pub async fn rollback(&self, to: Option<&str>) -> anyhow::Result<PushOutcome> {
        Rollback {
            app: "hello".into(),
            to: to.map(String::from),
            push: self.push_args(self.running()),
        }
        .execute()
        .await
    }

    pub fn running(&self) -> usize {
        self.agents.iter().filter(|a| a.is_some()).count()
    }

    /// The `x-hello-version` every running agent serves for Host: hello.
    pub async fn versions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in self.agents.iter().flatten() {
            out.push(serves(a).await);
        }
        out
    }
}

/// What `a` answers for `GET /` with `Host: hello`: the version header, or the status.
pub async fn serves(a: &AgentHandle) -> String {
    match http_get::get(a.http_addr(), "hello", "/").await {
        Ok(r) if r.status == 200 => r
            .version_header
            .unwrap_or_else(|| "no version header".into()),
        Ok(r) => format!("status {}", r.status),
        Err(e) => format!("error {e}"),
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Waits (up to [`TIMEOUT`]) until every running agent serves `version` of hello.
pub async fn until_every_agent_serves(fleet: &Fleet, version: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let v = fleet.versions().await;
        if v.iter().all(|s| s == version) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every agent serves {version} within {TIMEOUT:?}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
