//! Agent configuration: a TOML file, with command-line flags that override it.
//!
//! Each section deserialises straight into the config of the component that reads it
//! (`[runtime]` → [`RuntimeConfig`], `[trial]` → [`TrialConfig`], `[mesh]` → [`MeshConfig`],
//! applied to the protocol's `NodeConfig`, whose defaults it takes). Every knob has one name
//! and one default, and [`AgentConfig::validate`] is the one place that checks values, with
//! errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fleetcast_protocol::trust::Admission;
use serde::{Deserialize, Serialize};

use crate::runtime::RuntimeConfig;
use crate::runtime::trial::TrialConfig;
use crate::supervisor::ActivationConfig;

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
    /// The fleet root (`root.json`: a signed root, JSON): the anchor of trust. Newer versions
    /// arrive over the mesh and are kept in the store; this file is read at every start (a
    /// newer one is applied as an update, an older one ignored). Either this or `trusted_keys`.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// This agent's node certificate (JSON, written by `fleetcast node enroll`), presented to
    /// peers when it connects. Needed under `admission = "enrolled"`.
    #[serde(default)]
    pub node_cert: Option<PathBuf>,
    /// Who may connect: `enrolled` (nodes with a certificate, operators with a release key;
    /// the default with a root) or `open` (anyone; the only choice with `trusted_keys`).
    #[serde(default)]
    pub admission: Option<Admission>,
    /// Publisher public key files (`fleetcast keygen` writes them): the implicit root of a lab
    /// fleet (any one key signs heads, admission is open). Either this or `root`.
    #[serde(default)]
    pub trusted_keys: Vec<PathBuf>,
    /// Bootstrap contacts: agents to join the mesh through (a handful of random ones is best;
    /// the mesh finds the rest). Kept for good: re-joined when this agent is alone.
    #[serde(default)]
    pub contacts: Vec<SocketAddr>,
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
    /// The activation pipeline (`[activation]`): compile concurrency, releases kept compiled.
    #[serde(default)]
    pub activation: ActivationConfig,
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

/// The protocol's defaults are the only ones: this section only renames them for the file.
impl Default for MeshConfig {
    fn default() -> Self {
        let node = fleetcast_protocol::NodeConfig::new(
            fleetcast_protocol::NodeId([0; 32]),
            fleetcast_protocol::TrustPolicy {
                fleet: String::new(),
                keys: Vec::new(),
            },
        );
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        MeshConfig {
            active_size: node.membership.active_size,
            passive_size: node.membership.passive_size,
            join_contacts: node.membership.join_contacts,
            shuffle_ms: ms(node.membership.shuffle_interval),
            anti_entropy_ms: ms(node.anti_entropy_interval),
            chunk_timeout_ms: ms(node.swarm.chunk_timeout),
        }
    }
}

/// The shortest period a `[mesh]` timer may have.
const MIN_MESH_MS: u64 = 100;

impl MeshConfig {
    /// Applies this section (checked by [`AgentConfig::validate`]) to a node config.
    pub fn apply(&self, c: &mut fleetcast_protocol::NodeConfig) {
        use std::time::Duration;
        c.membership.active_size = self.active_size;
        c.membership.passive_size = self.passive_size;
        c.membership.join_contacts = self.join_contacts;
        c.membership.shuffle_interval = Duration::from_millis(self.shuffle_ms);
        c.anti_entropy_interval = Duration::from_millis(self.anti_entropy_ms);
        c.swarm.chunk_timeout = Duration::from_millis(self.chunk_timeout_ms);
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("mesh.active_size", self.active_size),
            ("mesh.join_contacts", self.join_contacts),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        for (key, v) in [
            ("mesh.shuffle_ms", self.shuffle_ms),
            ("mesh.anti_entropy_ms", self.anti_entropy_ms),
            ("mesh.chunk_timeout_ms", self.chunk_timeout_ms),
        ] {
            if v < MIN_MESH_MS {
                return invalid(key, format!("must be at least {MIN_MESH_MS}, not {v}"));
            }
        }
        Ok(())
    }
}

/// A config that cannot be used. Nothing was started: fix the file or flag and start again.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a valid agent config: {error}", path.display())]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    /// `key` is the config key (`section.key`); the matching flag overrides it.
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    /// A `[runtime]` value; the message starts with its key.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::EngineError),
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn invalid<T>(key: &'static str, problem: impl Into<String>) -> Result<T> {
    Err(ConfigError::Invalid {
        key,
        problem: problem.into(),
    })
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
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut cfg: AgentConfig = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error: Box::new(error),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.data_dir = base.join(&cfg.data_dir);
        for p in [&mut cfg.root, &mut cfg.node_cert].into_iter().flatten() {
            *p = base.join(&*p);
        }
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
            root: None,
            node_cert: None,
            admission: None,
            trusted_keys: Vec::new(),
            contacts: Vec::new(),
            advertise: None,
            mesh: MeshConfig::default(),
            log_format: default_log_format(),
            runtime: RuntimeConfig::default(),
            activation: ActivationConfig::default(),
            trial: TrialConfig::default(),
            admin: AdminConfig::default(),
            routes: Vec::new(),
        }
    }

    /// Who may connect: the configured `admission`, else `enrolled` with a root and `open`
    /// with only `trusted_keys`.
    pub fn admission(&self) -> Admission {
        self.admission.unwrap_or(if self.root.is_some() {
            Admission::Enrolled
        } else {
            Admission::Open
        })
    }

    /// Checks every value that can be checked before binding anything: the one place where
    /// the config is validated.
    pub fn validate(&self) -> Result<()> {
        match (&self.root, self.trusted_keys.is_empty()) {
            (None, true) => {
                return invalid(
                    "root",
                    "no fleet root: add root = \"root.json\" to the config or pass --root root.json (create it with `fleetcast fleet init`); a lab fleet may use trusted_keys = [\"ops.pub\"] / --trusted-key ops.pub instead (create keys with `fleetcast keygen`)",
                );
            }
            (Some(_), false) => {
                return invalid(
                    "root",
                    "both root and trusted_keys are set: a fleet with a root takes its release keys from it; remove trusted_keys (or --trusted-key)",
                );
            }
            _ => {}
        }
        if self.root.is_none() && self.admission == Some(Admission::Enrolled) {
            return invalid(
                "admission",
                "admission = \"enrolled\" needs a fleet root: configure root = \"root.json\" (--root); with only trusted_keys (a lab setting) admission is open",
            );
        }
        if self.root.is_none() && self.node_cert.is_some() {
            return invalid(
                "node_cert",
                "a node certificate is checked against the fleet root: configure root = \"root.json\" (--root) too, or remove node_cert",
            );
        }
        if self.fleet.is_empty() || self.fleet.len() > fleetcast_protocol::head::MAX_FLEET_LEN {
            return invalid("fleet", "fleet name must be 1-64 characters");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return invalid(
                "log_format",
                format!("must be \"text\" or \"json\", not {:?}", self.log_format),
            );
        }
        self.mesh.validate()?;
        self.runtime.validate()?;
        for (key, v) in [
            (
                "activation.compile_concurrency",
                self.activation.compile_concurrency,
            ),
            (
                "activation.cached_releases",
                self.activation.cached_releases,
            ),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if !(0.0..=1.0).contains(&self.trial.max_error_rate) {
            return invalid(
                "trial.max_error_rate",
                format!("must be between 0 and 1, not {}", self.trial.max_error_rate),
            );
        }
        for r in &self.routes {
            if r.host.is_none() && r.path_prefix.is_none() {
                return invalid(
                    "routes",
                    format!(
                        "route to app {:?} has neither host nor path_prefix; give at least one",
                        r.app
                    ),
                );
            }
            if r.path_prefix.as_ref().is_some_and(|p| !p.starts_with('/')) {
                return invalid(
                    "routes.path_prefix",
                    format!("{:?} must start with '/'", r.path_prefix),
                );
            }
            if fleetcast_protocol::AppName::new(&r.app).is_err() {
                return invalid("routes.app", format!("{:?} is not a valid app name", r.app));
            }
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
            "fleet = \"prod\"\nlisten = \"127.0.0.1:7401\"\nhttp = \"127.0.0.1:8401\"\ndata_dir = \"data\"\ntrusted_keys = [\"ops.pub\"]\ncontacts = [\"127.0.0.1:7402\"]\n[runtime]\nmax_instances = 16\n",
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
        assert_eq!(c.contacts.len(), 2);
        assert!(c.root.is_some() && c.node_cert.is_some() && c.trusted_keys.is_empty());
        assert_eq!(c.admission(), Admission::Enrolled);
        c.validate().unwrap();
        assert_eq!(c.mesh, MeshConfig::default());
        assert_eq!(c.runtime, RuntimeConfig::default());
        assert_eq!(c.trial, TrialConfig::default());
        assert_eq!(c.activation, ActivationConfig::default());
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
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("root: "), "{err}");
        assert!(
            err.contains("--root") && err.contains("--trusted-key"),
            "{err}"
        );
    }

    #[test]
    fn root_node_cert_and_admission() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "data_dir = \"d\"\nroot = \"root.json\"\nnode_cert = \"node.cert\"\n",
        )
        .unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.root, Some(dir.path().join("root.json")));
        assert_eq!(c.node_cert, Some(dir.path().join("node.cert")));
        assert_eq!(
            c.admission(),
            Admission::Enrolled,
            "enrolled by default with a root"
        );
        c.validate().unwrap();
        std::fs::write(
            &p,
            "data_dir = \"d\"\nroot = \"r.json\"\nadmission = \"open\"\n",
        )
        .unwrap();
        assert_eq!(AgentConfig::load(&p).unwrap().admission(), Admission::Open);
        std::fs::write(
            &p,
            "data_dir = \"d\"\nroot = \"r.json\"\nadmission = \"all\"\n",
        )
        .unwrap();
        let err = format!("{:#}", AgentConfig::load(&p).unwrap_err());
        assert!(
            err.contains("admission") || err.contains("unknown variant"),
            "{err}"
        );

        let lab = || {
            let mut c = AgentConfig::with_data_dir("d".into());
            c.trusted_keys = vec!["ops.pub".into()];
            c
        };
        assert_eq!(
            lab().admission(),
            Admission::Open,
            "open with only trusted_keys"
        );
        let mut c = lab();
        c.admission = Some(Admission::Enrolled);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("admission: ") && err.contains("configure root"),
            "{err}"
        );
        let mut c = lab();
        c.root = Some("root.json".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("root: "), "{err}");
        assert!(
            err.contains("root") && err.contains("trusted_keys"),
            "{err}"
        );
        let mut c = lab();
        c.node_cert = Some("node.cert".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("node_cert: "), "{err}");
    }

    #[test]
    fn each_invalid_value_is_named_by_its_key() {
        let ok = || {
            let mut c = AgentConfig::with_data_dir("d".into());
            c.trusted_keys = vec!["ops.pub".into()];
            c
        };
        ok().validate().unwrap();
        type Breaks = Box<dyn Fn(&mut AgentConfig)>;
        let cases: Vec<(&str, Breaks)> = vec![
            ("fleet", Box::new(|c| c.fleet.clear())),
            ("log_format", Box::new(|c| c.log_format = "xml".into())),
            ("mesh.active_size", Box::new(|c| c.mesh.active_size = 0)),
            ("mesh.join_contacts", Box::new(|c| c.mesh.join_contacts = 0)),
            ("mesh.shuffle_ms", Box::new(|c| c.mesh.shuffle_ms = 5)),
            (
                "mesh.anti_entropy_ms",
                Box::new(|c| c.mesh.anti_entropy_ms = 0),
            ),
            (
                "mesh.chunk_timeout_ms",
                Box::new(|c| c.mesh.chunk_timeout_ms = 99),
            ),
            (
                "trial.max_error_rate",
                Box::new(|c| c.trial.max_error_rate = 1.5),
            ),
            (
                "activation.cached_releases",
                Box::new(|c| c.activation.cached_releases = 0),
            ),
            (
                "activation.compile_concurrency",
                Box::new(|c| c.activation.compile_concurrency = 0),
            ),
        ];
        for (key, break_it) in cases {
            let mut c = ok();
            break_it(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{key}: {err}"
            );
            assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        }
        let mut c = ok();
        c.runtime.max_memory_mib = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("runtime.max_memory_mib"), "{err}");
    }

    #[test]
    fn mesh_defaults_are_the_protocols() {
        let mut node = fleetcast_protocol::NodeConfig::new(
            fleetcast_protocol::NodeId([1; 32]),
            fleetcast_protocol::TrustPolicy {
                fleet: "f".into(),
                keys: vec![],
            },
        );
        let before = format!("{node:?}");
        MeshConfig::default().apply(&mut node);
        assert_eq!(format!("{node:?}"), before);
    }
}
