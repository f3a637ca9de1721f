//! The agent's trust shell: where the fleet root, the node certificate and the admission
//! policy come from, and how they reach the transport. The rules are the protocol's
//! ([`Trust`]); this is their IO.
//!
//! - [`load_trust`]: at start, the stored root chain (re-verified: the first root as a
//!   self-signed anchor, the rest one step at a time), then the `root` file applied as an
//!   update (the anchor when nothing is stored; older than the stored chain: ignored; not
//!   following it: an error naming the file). Without a root, the `trusted_keys` lab setting.
//! - [`load_node_cert`]: this agent's certificate, checked against the trust it starts with
//!   ([`Trust::check_cert`] with its own node id), so a missing, expired or foreign
//!   certificate is an error at start that says what to do, not a refusal by every peer.
//! - [`FleetAdmission`]: the [`Admit`] policy the transport calls at every handshake and
//!   recheck: a snapshot of the node's trust and the configured [`Admission`], replaced when
//!   the node adopts a newer root, its clock advanced every second; refusals are counted by
//!   reason in [`MeshMetrics`].
//! - [`ExpiryWatch`]: the warning when the root (or this node's certificate) has expired or
//!   expires within [`EXPIRY_WARNING_MS`], logged at start and whenever that changes.
//!
//! **Invariant:** nothing read from disk is trusted as it is: the stored chain is re-verified
//! from its first root, a root file is checked like any root that arrives, and the chain the
//! agent runs with only ever moves forward.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use fleetcast_net::Admit;
use fleetcast_protocol::TrustPolicy;
use fleetcast_protocol::trust::{
    Admission, AdmitError, EXPIRY_WARNING_MS, Hello, PeerRole, RootError, SignedNodeCert,
    SignedRoot, Trust, TrustStatus,
};
use fleetcast_protocol::wire::NodeId;

use crate::config::AgentConfig;
use crate::mesh_metrics::MeshMetrics;
use crate::store::{Store, StoreError};

/// Why the agent's trust could not be set up. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the fleet root {} (config `root`, --root): {error}", path.display())]
    ReadRoot {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is not a fleet root (a signed root as JSON, as `fleetcast fleet init` writes it): {error}",
        path.display()
    )]
    ParseRoot {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("the fleet root {} is not valid: {error}", path.display())]
    BadRoot { path: PathBuf, error: RootError },
    #[error(
        "the fleet root {} (version {version}) does not follow the chain this agent holds (version {held}): {error}; give the current root.json of fleet {fleet:?}, or move the data directory away to trust this file from scratch",
        path.display()
    )]
    DoesNotChain {
        path: PathBuf,
        version: u64,
        held: u64,
        fleet: String,
        error: RootError,
    },
    #[error(
        "the stored fleet root chain does not verify ({error}); move the data directory away (the agent fetches its releases again) and start with root = \"root.json\""
    )]
    StoredChain { error: RootError },
    #[error(
        "the store holds fleet {fleet:?}'s root (version {version}) but the config has no root: set root = \"root.json\" (--root) instead of trusted_keys"
    )]
    StoredWithoutRoot { fleet: String, version: u64 },
    #[error(
        "the config says fleet {config:?} but the fleet root is for fleet {root:?}: remove `fleet` (--fleet) from the config or make it {root:?}"
    )]
    Fleet { config: String, root: String },
    #[error(
        "admission is enrolled but this node has no certificate: enroll it (fleetcast node enroll --node {node} --out node.cert) and set node_cert = \"node.cert\" (--node-cert); `fleetcast-agent id` prints the node id"
    )]
    NoCert { node: NodeId },
    #[error("cannot read the node certificate {} (config `node_cert`, --node-cert): {error}", path.display())]
    ReadCert {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is not a node certificate (JSON, as `fleetcast node enroll` writes it): {error}",
        path.display()
    )]
    ParseCert {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("the node certificate {} cannot be used: {error}", path.display())]
    BadCert { path: PathBuf, error: AdmitError },
    #[error(transparent)]
    Key(#[from] fleetcast_net::keys::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a `root.json`.
pub fn read_root_file(path: &Path) -> Result<SignedRoot, TrustError> {
    let text = std::fs::read(path).map_err(|error| TrustError::ReadRoot {
        path: path.to_path_buf(),
        error,
    })?;
    serde_json::from_slice(&text).map_err(|error| TrustError::ParseRoot {
        path: path.to_path_buf(),
        error,
    })
}

/// The trust the agent starts with, and the roots it adopted from the `root` file that the
/// store does not hold yet (persist them before anything else happens).
#[derive(Debug)]
pub struct Loaded {
    pub trust: Trust,
    pub new_roots: Vec<SignedRoot>,
    /// The stored time floor.
    pub floor_ms: u64,
}

/// See the module docs.
pub fn load_trust(cfg: &AgentConfig, store: &Store) -> Result<Loaded, TrustError> {
    let (stored, floor_ms) = store.roots()?;
    let file = cfg
        .root
        .as_deref()
        .map(|p| read_root_file(p).map(|r| (p, r)))
        .transpose()?;
    let mut new_roots = Vec::new();
    let mut trust = match (stored.split_first(), file) {
        (None, None) => {
            let keys = cfg
                .trusted_keys
                .iter()
                .map(|p| fleetcast_net::keys::read_public(p))
                .collect::<Result<_, _>>()?;
            Trust::from(TrustPolicy {
                fleet: cfg.fleet.clone(),
                keys,
            })
        }
        (None, Some((path, anchor))) => {
            let trust = Trust::with_root(anchor.clone()).map_err(|error| TrustError::BadRoot {
                path: path.to_path_buf(),
                error,
            })?;
            new_roots.push(anchor);
            trust
        }
        (Some((first, rest)), file) => {
            let mut trust = Trust::with_root(first.clone())
                .map_err(|error| TrustError::StoredChain { error })?;
            if let (_, Some(error)) = trust.update(rest.iter().cloned()) {
                // Stored roots were verified before they were stored: this is damage. Keep the
                // valid prefix (fail-static); newer roots arrive again from the mesh.
                tracing::error!(
                    version = trust.version(),
                    "the stored fleet root chain breaks after version {}: {error}; continuing with it",
                    trust.version()
                );
            }
            let Some((path, root)) = file else {
                return Err(TrustError::StoredWithoutRoot {
                    fleet: trust.fleet().to_string(),
                    version: trust.version(),
                });
            };
            let (version, held) = (root.root.version, trust.version());
            if version <= held {
                if version < held {
                    tracing::info!(
                        file = %path.display(),
                        "the fleet root file is version {version}, older than the stored chain (version {held}): ignored"
                    );
                }
            } else {
                let fleet = trust.fleet().to_string();
                let (adopted, error) = trust.update([root]);
                if let Some(error) = error {
                    return Err(TrustError::DoesNotChain {
                        path: path.to_path_buf(),
                        version,
                        held,
                        fleet,
                        error,
                    });
                }
                new_roots = adopted;
            }
            trust
        }
    };
    if !trust.is_legacy() && cfg.fleet != trust.fleet() && cfg.fleet != "default" {
        return Err(TrustError::Fleet {
            config: cfg.fleet.clone(),
            root: trust.fleet().to_string(),
        });
    }
    trust.observe(floor_ms);
    trust.set_now(crate::supervisor::unix_ms());
    Ok(Loaded {
        trust,
        new_roots,
        floor_ms,
    })
}

/// This agent's node certificate, checked against `trust` for `node`. `None`: no `node_cert`
/// configured, under open admission.
pub fn load_node_cert(
    cfg: &AgentConfig,
    trust: &Trust,
    node: NodeId,
) -> Result<Option<SignedNodeCert>, TrustError> {
    let Some(path) = cfg.node_cert.as_deref() else {
        return match cfg.admission() {
            Admission::Enrolled => Err(TrustError::NoCert { node }),
            Admission::Open => Ok(None),
        };
    };
    let text = std::fs::read(path).map_err(|error| TrustError::ReadCert {
        path: path.to_path_buf(),
        error,
    })?;
    let cert: SignedNodeCert =
        serde_json::from_slice(&text).map_err(|error| TrustError::ParseCert {
            path: path.to_path_buf(),
            error,
        })?;
    trust
        .check_cert(node, &cert)
        .map_err(|error| TrustError::BadCert {
            path: path.to_path_buf(),
            error,
        })?;
    Ok(Some(cert))
}

/// The admission policy the transport judges peers by. See the module docs.
#[derive(Debug)]
pub struct FleetAdmission {
    state: RwLock<Snapshot>,
    metrics: Arc<MeshMetrics>,
}

#[derive(Debug)]
struct Snapshot {
    trust: Trust,
    admission: Admission,
}

impl FleetAdmission {
    pub fn new(trust: Trust, admission: Admission, metrics: Arc<MeshMetrics>) -> Arc<Self> {
        Arc::new(FleetAdmission {
            state: RwLock::new(Snapshot { trust, admission }),
            metrics,
        })
    }

    /// The node adopted newer roots: judge by `trust` from now on (then recheck the links).
    pub fn set_trust(&self, trust: Trust) {
        self.write().trust = trust;
    }

    /// The wall clock (unix ms), for certificate expiry.
    pub fn set_now(&self, unix_ms: u64) {
        self.write().trust.set_now(unix_ms);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Admit for FleetAdmission {
    fn admit(&self, node: NodeId, hello: &Hello) -> Result<PeerRole, String> {
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        s.trust.admit(s.admission, node, hello).map_err(|e| {
            self.metrics.admission_refused(e.kind());
            e.to_string()
        })
    }
}

/// What [`ExpiryWatch`] last warned about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Warned {
    #[default]
    Fine,
    Soon,
    Expired,
}

fn warned(expired: bool, soon: bool) -> Warned {
    if expired {
        Warned::Expired
    } else if soon {
        Warned::Soon
    } else {
        Warned::Fine
    }
}

/// Logs (warn) when the root or this node's certificate has expired or expires within
/// [`EXPIRY_WARNING_MS`]: at the first check, and whenever that changes.
#[derive(Debug, Default)]
pub struct ExpiryWatch {
    root: Option<(u64, Warned)>,
    cert: Option<Warned>,
}

impl ExpiryWatch {
    /// Checks `t` (and this node's certificate expiry, unix ms); returns whether it warned.
    pub fn check(&mut self, t: &TrustStatus, cert_expires_ms: Option<u64>) -> bool {
        let mut said = false;
        let root = warned(t.expired, t.expires_soon && t.version > 0);
        if self.root != Some((t.version, root)) {
            let first = self.root.is_none();
            self.root = Some((t.version, root));
            let days = t.expires_ms.saturating_sub(t.now_ms) / (24 * 3600 * 1000);
            match root {
                Warned::Expired => {
                    said = true;
                    tracing::warn!(
                        version = t.version,
                        expires_ms = t.expires_ms,
                        "the fleet root (version {}) has EXPIRED: this agent keeps serving what runs but accepts no new head until a newer root arrives (sign one and push it: fleetcast fleet push)",
                        t.version
                    );
                }
                Warned::Soon => {
                    said = true;
                    tracing::warn!(
                        version = t.version,
                        expires_ms = t.expires_ms,
                        "the fleet root (version {}) expires in {days} days: sign and push a new root version before then (fleetcast fleet push)",
                        t.version
                    );
                }
                Warned::Fine if !first => tracing::info!(
                    version = t.version,
                    "fleet root version {} in force, expires in {days} days",
                    t.version
                ),
                Warned::Fine => {}
            }
        }
        if let Some(expires) = cert_expires_ms {
            let now = t.now_ms;
            let cert = warned(
                now >= expires,
                expires.saturating_sub(now) < EXPIRY_WARNING_MS,
            );
            if self.cert != Some(cert) {
                self.cert = Some(cert);
                let days = expires.saturating_sub(now) / (24 * 3600 * 1000);
                match cert {
                    Warned::Expired => {
                        said = true;
                        tracing::warn!(
                            expires_ms = expires,
                            "this node's certificate has EXPIRED: enrolled peers refuse it; enroll it again (fleetcast node enroll) and restart with the new node_cert"
                        );
                    }
                    Warned::Soon => {
                        said = true;
                        tracing::warn!(
                            expires_ms = expires,
                            "this node's certificate expires in {days} days: enroll it again (fleetcast node enroll) and restart with the new node_cert"
                        );
                    }
                    Warned::Fine => {}
                }
            }
        }
        said
    }
}

#[cfg(test)]
mod tests;
