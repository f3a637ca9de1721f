//! Agent configuration: a TOML file, with command-line flags that override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeConfig;
use crate::runtime::trial::TrialConfig;

/// Everything `fleetcast-agent run` needs. See `deploy/agent.example.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Fleet name; heads for another fleet are refused.
    #[serde(default = "default_fleet")]
    pub fleet: String,
    /// QUIC listen address for the mesh.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// HTTP listen address for the apps.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// Where the node identity and the sled store live.
    pub data_dir: PathBuf,
    /// Publisher public key files (`fleetcast keygen` writes them). At least one.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Bootstrap contacts: agents to join the mesh through (a handful of random ones is best;
    /// the mesh finds the rest). Kept for good: re-joined when this agent is alone.
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// The address other agents should dial this one at, when it differs from the address its
    /// connections come from (NAT, a wildcard listen address behind a load balancer).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Mesh tuning (`[mesh]`).
    #[serde(default)]
    pub mesh: MeshConfig,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Trial of a freshly swapped release (`[trial]`).
    #[serde(default)]
    pub trial: TrialConfig,
    /// The local admin endpoint (`[admin]`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Routes tried before the Host's first label (`[[routes]]`).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[admin]` section: the local admin endpoint (`/status`, `/metrics`, local rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens; localhost by default (it has no authentication). Absent: no endpoint.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(default_admin()),
        }
    }
}

/// One `[[routes]]` entry: requests whose Host is `host` (exact, port ignored, any case) and/or
/// whose path starts with `path_prefix` go to `app`. The first matching entry wins; with none,
/// the app is the Host's first label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub app: String,
}

/// `[mesh]` section: membership and gossip tuning. The defaults suit fleets of a few to tens of
/// thousands of agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Connections kept per agent (HyParView active view).
    pub active_size: usize,
    /// Known-but-unconnected agents kept for repair (passive view).
    pub passive_size: usize,
    /// Contacts a new agent sends its join to.
    pub join_contacts: usize,
    /// Membership shuffle period, milliseconds.
    pub shuffle_ms: u64,
    /// Anti-entropy period (summary exchange with a random neighbour), milliseconds.
    pub anti_entropy_ms: u64,
    /// A chunk request not answered within this time goes to another peer, milliseconds.
    pub chunk_timeout_ms: u64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            active_size: 10,
            passive_size: 36,
            join_contacts: 3,
            shuffle_ms: 10_000,
            anti_entropy_ms: 10_000,
            chunk_timeout_ms: 10_000,
        }
    }
}

impl MeshConfig {
    /// Applies this section to a node config.
    pub fn apply(&self, c: &mut fleetcast_protocol::NodeConfig) {
        use std::time::Duration;
        c.membership.active_size = self.active_size.max(1);
        c.membership.passive_size = self.passive_size;
        c.membership.join_contacts = self.join_contacts.max(1);
        c.membership.shuffle_interval = Duration::from_millis(self.shuffle_ms.max(100));
        c.anti_entropy_interval = Duration::from_millis(self.anti_entropy_ms.max(100));
        c.swarm.chunk_timeout = Duration::from_millis(self.chunk_timeout_ms.max(100));
    }
}

fn default_fleet() -> String {
    "default".into()
}
fn default_listen() -> SocketAddr {
    "0.0.0.0:7401".parse().expect("valid")
}
fn default_http() -> SocketAddr {
    "0.0.0.0:8401".parse().expect("valid")
}
/// The admin endpoint's default address.
pub fn default_admin() -> SocketAddr {
    "127.0.0.1:9401".parse().expect("valid")
}
fn default_log_format() -> String {
    "text".into()
}

impl AgentConfig {
    /// Parses a config file; relative paths inside it are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg: AgentConfig = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid agent config", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data_dir = base.join(&cfg.data_dir);
        for k in &mut cfg.trusted_keys {
            *k = base.join(&*k);
        }
        Ok(cfg)
    }

    /// A config with defaults and the given data directory (for flags-only use and tests).
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        AgentConfig {
            fleet: default_fleet(),
            listen: default_listen(),
            http: default_http(),
            data_dir,
            trusted_keys: Vec::new(),
            peers: Vec::new(),
            advertise: None,
            mesh: MeshConfig::default(),
            log_format: default_log_format(),
            runtime: RuntimeConfig::default(),
            trial: TrialConfig::default(),
            admin: AdminConfig::default(),
            routes: Vec::new(),
        }
    }

    /// Checks what can be checked before binding anything.
    pub fn validate(&self) -> Result<()> {
        if self.trusted_keys.is_empty() {
            bail!(
                "no trusted publisher keys: add trusted_keys = [\"ops.pub\"] to the config or pass --trusted-key ops.pub (create keys with `fleetcast keygen`)"
            );
        }
        if self.fleet.is_empty() || self.fleet.len() > fleetcast_protocol::head::MAX_FLEET_LEN {
            bail!("fleet name must be 1-64 characters");
        }
        if !(0.0..=1.0).contains(&self.trial.max_error_rate) {
            bail!(
                "trial.max_error_rate must be between 0 and 1, not {}",
                self.trial.max_error_rate
            );
        }
        for r in &self.routes {
            if r.host.is_none() && r.path_prefix.is_none() {
                bail!(
                    "route to app {:?} has neither host nor path_prefix; give at least one",
                    r.app
                );
            }
            if r.path_prefix.as_ref().is_some_and(|p| !p.starts_with('/')) {
                bail!("route path_prefix {:?} must start with '/'", r.path_prefix);
            }
            if fleetcast_protocol::AppName::new(&r.app).is_err() {
                bail!("route app {:?} is not a valid app name", r.app);
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!(
                "log_format must be \"text\" or \"json\", not {:?}",
                self.log_format
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("edge1.toml");
        std::fs::write(
            &p,
            "fleet = \"prod\"\nlisten = \"127.0.0.1:7401\"\nhttp = \"127.0.0.1:8401\"\ndata_dir = \"data\"\ntrusted_keys = [\"ops.pub\"]\npeers = [\"127.0.0.1:7402\"]\n[runtime]\nmax_instances = 16\n",
        )
        .unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.fleet, "prod");
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.trusted_keys, vec![dir.path().join("ops.pub")]);
        assert_eq!(c.runtime.max_instances, 16);
        c.validate().unwrap();
    }

    #[test]
    fn the_shipped_example_config_parses_with_its_mesh_section() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.mesh, MeshConfig::default());
        assert_eq!(c.runtime, RuntimeConfig::default());
        assert_eq!(c.trial, TrialConfig::default());
        assert_eq!(c.admin, AdminConfig::default());
        assert!(c.routes.is_empty());
        let mut node = fleetcast_protocol::NodeConfig::new(
            fleetcast_protocol::NodeId([1; 32]),
            fleetcast_protocol::TrustPolicy {
                fleet: c.fleet.clone(),
                keys: vec![],
            },
        );
        let mesh = MeshConfig {
            active_size: 9,
            anti_entropy_ms: 2500,
            ..c.mesh.clone()
        };
        mesh.apply(&mut node);
        assert_eq!(node.membership.active_size, 9);
        assert_eq!(node.anti_entropy_interval.as_millis(), 2500);
    }

    #[test]
    fn unknown_keys_and_missing_trust_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "data_dir = \"d\"\ntrusted_key = [\"x\"]\n").unwrap();
        let err = format!("{:#}", AgentConfig::load(&p).unwrap_err());
        assert!(err.contains("unknown field"), "{err}");
        let c = AgentConfig::with_data_dir("d".into());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--trusted-key")
        );
    }
}
