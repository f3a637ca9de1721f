//! Whom an agent trusts, and for what: the fleet root, its chain of versions, expiry,
//! release thresholds and admission. Sans-IO: wall-clock time arrives as an argument
//! ([`Trust::set_now`]).
//!
//! - [`root`]: root metadata (`{fleet, version, epoch, expires, roles, revoked}`), its canonical
//!   signing bytes and the TUF step rule ([`root::check_step`]): version N+1 is accepted only
//!   if signed by a threshold of root N's root keys **and** of its own, and only as exactly N+1.
//! - [`cert`]: node certificates, signed by the `nodes` role.
//! - [`Trust`]: the verified chain an agent holds. It only moves forward; heads are checked
//!   against its newest root (threshold of distinct release keys, epoch, expiry); peers are
//!   admitted against it ([`Trust::admit`]).
//!
//! **Invariants:**
//! - The chain is contiguous and every step passed [`root::check_step`]; a failed step leaves
//!   the trusted root at the last valid version.
//! - A head is accepted only under the newest root: signed by `release.threshold` distinct keys
//!   of its release role, carrying its epoch, while the root has not expired.
//! - Time never goes back for expiry: the effective time is the newest of the wall clock and
//!   every time seen in verified signed metadata (roots, heads, certificates).
//! - Without a root (`trusted_keys`, a lab setting) the implicit root has version 0, epoch 0,
//!   one release key suffices, nothing expires, and no signed root can follow it.

pub mod cert;
pub mod root;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::head::{HeadError, PublicKey, SignedHead, TrustPolicy};
use crate::wire::NodeId;

pub use cert::{NodeCert, SignedNodeCert};
pub use root::{Role, Roles, Root, RootError, SignedRoot, check_step, count_signatures};

/// At most this many roots are kept (the oldest go first; a head of an epoch whose root is
/// gone no longer verifies from disk).
pub const MAX_CHAIN: usize = 1024;

/// At most this many roots travel in one message.
pub const MAX_ROOTS_PER_MSG: usize = 32;

/// Ahead of expiry, agents warn for this long (30 days).
pub const EXPIRY_WARNING_MS: u64 = 30 * 24 * 3600 * 1000;

/// Who may connect. `Enrolled` is the default when a root is configured.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admission {
    /// Anyone may connect (heads and chunks are still verified). A lab setting.
    Open,
    /// Only nodes with a valid certificate, and operators holding a release key.
    #[default]
    Enrolled,
}

impl std::fmt::Display for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Admission::Open => "open",
            Admission::Enrolled => "enrolled",
        })
    }
}

/// What the dialler of a connection says it is, sent right after the TLS handshake (whose key
/// proves the node id). Both sides send one.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Hello {
    /// An agent, with its certificate (none in open fleets).
    Node { cert: Option<SignedNodeCert> },
    /// An operator's CLI: its TLS key is a key of the root's release role.
    Operator,
}

/// What an admitted peer may do. Nodes may do everything; operators may push heads and
/// roots, serve chunks, and ask for status and censuses, but never join the overlay or
/// count in tallies.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum PeerRole {
    Node,
    Operator,
}

/// Why a peer was refused at the handshake. The reason travels to the peer in the close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error(
        "node {node} presented no certificate and fleet {fleet} admits enrolled nodes only: enroll it (fleetcast node enroll --node {node}) and set node_cert in its config"
    )]
    NotEnrolled { node: NodeId, fleet: String },
    #[error("node {node}'s certificate is for fleet {cert:?}, not {fleet:?}")]
    CertFleet {
        node: NodeId,
        cert: String,
        fleet: String,
    },
    #[error(
        "the certificate presented by node {node} names node {cert}: a certificate is bound to one node id"
    )]
    CertNode { node: NodeId, cert: NodeId },
    #[error(
        "node {node}'s certificate expired at {expires_ms} (unix ms): enroll it again (fleetcast node enroll)"
    )]
    CertExpired { node: NodeId, expires_ms: u64 },
    #[error(
        "node {node}'s certificate is signed by {have} key(s) of the nodes role of root version {version}, which needs {need}: enroll it again with a current enroll key"
    )]
    CertUntrusted {
        node: NodeId,
        have: usize,
        need: u32,
        version: u64,
    },
    #[error("node {node}'s certificate carries a signature by {} that does not verify", .key.short())]
    CertBadSignature { node: NodeId, key: PublicKey },
    #[error("node {node} is revoked by root version {version} of fleet {fleet}")]
    Revoked {
        node: NodeId,
        fleet: String,
        version: u64,
    },
    #[error(
        "operator key {} is not a release key of root version {version} of fleet {fleet}: pass --key with a release key of this fleet",
        .key.short()
    )]
    NotOperator {
        key: PublicKey,
        fleet: String,
        version: u64,
    },
}

impl AdmitError {
    /// A short, fixed name (a metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            AdmitError::NotEnrolled { .. } => "not-enrolled",
            AdmitError::CertFleet { .. } | AdmitError::CertNode { .. } => "wrong-cert",
            AdmitError::CertExpired { .. } => "cert-expired",
            AdmitError::CertUntrusted { .. } | AdmitError::CertBadSignature { .. } => {
                "cert-untrusted"
            }
            AdmitError::Revoked { .. } => "revoked",
            AdmitError::NotOperator { .. } => "not-operator",
        }
    }
}

/// What status shows of an agent's trust.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct TrustStatus {
    pub fleet: String,
    /// 0: no root (`trusted_keys`, a lab setting).
    pub version: u64,
    pub epoch: u64,
    pub issued_ms: u64,
    /// `u64::MAX`: never.
    pub expires_ms: u64,
    /// The newest root has expired: new heads are refused until a newer root arrives.
    pub expired: bool,
    /// It expires within [`EXPIRY_WARNING_MS`].
    pub expires_soon: bool,
    /// The effective time expiry is judged by (unix ms).
    pub now_ms: u64,
    pub release_keys: u32,
    pub release_threshold: u32,
    pub revoked: u32,
}

/// The verified trust an agent holds. See the module docs.
#[derive(Clone, Debug)]
pub struct Trust {
    /// Verified roots, ascending and contiguous; empty without a root.
    chain: Vec<SignedRoot>,
    /// The implicit root of `trusted_keys` (used when `chain` is empty).
    implicit: Root,
    now_ms: u64,
    floor_ms: u64,
}

impl From<TrustPolicy> for Trust {
    fn from(p: TrustPolicy) -> Trust {
        Trust::legacy(p.fleet, p.keys.iter().map(PublicKey::from).collect())
    }
}

impl Trust {
    /// Trust without a root: any one of `keys` signs heads (the `trusted_keys` lab setting).
    pub fn legacy(fleet: String, keys: Vec<PublicKey>) -> Trust {
        let none = Role::new(Vec::new(), 1);
        Trust {
            chain: Vec::new(),
            implicit: Root {
                fleet,
                version: 0,
                epoch: 0,
                issued_ms: 0,
                expires_ms: u64::MAX,
                roles: Roles {
                    root: none.clone(),
                    release: Role::new(keys, 1),
                    nodes: none,
                },
                revoked: Vec::new(),
            },
            now_ms: 0,
            floor_ms: 0,
        }
    }

    /// Trust anchored at `anchor`, a root the operator gave (a file): well formed and signed
    /// by a threshold of its own root keys. Later versions come through [`Trust::update`].
    pub fn with_root(anchor: SignedRoot) -> Result<Trust, RootError> {
        anchor.check_self_signed()?;
        let floor = anchor.root.issued_ms;
        let mut t = Trust::legacy(anchor.root.fleet.clone(), Vec::new());
        t.chain.push(anchor);
        t.floor_ms = floor;
        Ok(t)
    }

    pub fn fleet(&self) -> &str {
        &self.current().fleet
    }

    /// The newest verified root (the implicit one without a root).
    pub fn current(&self) -> &Root {
        self.chain.last().map_or(&self.implicit, |s| &s.root)
    }

    pub fn version(&self) -> u64 {
        self.current().version
    }

    pub fn epoch(&self) -> u64 {
        self.current().epoch
    }

    /// No root: `trusted_keys`.
    pub fn is_legacy(&self) -> bool {
        self.chain.is_empty()
    }

    /// Every root held, oldest first.
    pub fn chain(&self) -> &[SignedRoot] {
        &self.chain
    }

    /// The roots after version `after`, oldest first, at most [`MAX_ROOTS_PER_MSG`].
    pub fn roots_after(&self, after: u64) -> Vec<SignedRoot> {
        self.chain
            .iter()
            .filter(|s| s.root.version > after)
            .take(MAX_ROOTS_PER_MSG)
            .cloned()
            .collect()
    }

    /// Applies `roots` (any order; older or known versions are skipped) one version at a time.
    /// Returns the roots newly adopted, oldest first, and the error that stopped the walk, if
    /// any: the trusted root is then the last valid version.
    pub fn update(
        &mut self,
        roots: impl IntoIterator<Item = SignedRoot>,
    ) -> (Vec<SignedRoot>, Option<RootError>) {
        let mut roots: Vec<SignedRoot> = roots.into_iter().collect();
        roots.sort_by_key(|s| s.root.version);
        roots.dedup_by(|a, b| a == b);
        let mut adopted = Vec::new();
        for next in roots {
            if next.root.version <= self.version() {
                continue;
            }
            if self.is_legacy() {
                return (adopted, Some(RootError::NoRoot));
            }
            if let Err(e) = check_step(self.current(), &next) {
                return (adopted, Some(e));
            }
            self.observe(next.root.issued_ms);
            self.chain.push(next.clone());
            if self.chain.len() > MAX_CHAIN {
                self.chain.remove(0);
            }
            adopted.push(next);
        }
        (adopted, None)
    }

    /// The wall clock (unix ms), fed by the shell.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// A time seen in verified signed metadata: expiry is never judged before it.
    pub fn observe(&mut self, signed_ms: u64) {
        self.floor_ms = self.floor_ms.max(signed_ms);
    }

    /// The newest time seen in verified signed metadata (persisted by the shell).
    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }

    /// The time expiry is judged by: the wall clock, never before [`Trust::floor_ms`].
    pub fn effective_now(&self) -> u64 {
        self.now_ms.max(self.floor_ms)
    }

    /// The newest root has expired.
    pub fn expired(&self) -> bool {
        self.effective_now() >= self.current().expires_ms
    }

    /// The root of `epoch` (the root whose version is the epoch: it set that release role).
    fn root_of_epoch(&self, epoch: u64) -> Option<&Root> {
        if self.is_legacy() {
            return (epoch == 0).then_some(&self.implicit);
        }
        self.chain
            .iter()
            .find(|s| s.root.version == epoch)
            .map(|s| &s.root)
    }

    /// Checks a head that arrives now: fleet, shape, the newest root not expired, its epoch,
    /// and a threshold of distinct keys of the release role. Does not check seq.
    pub fn verify_head(&self, sh: &SignedHead) -> Result<(), HeadError> {
        let root = self.current();
        sh.check_shape(&root.fleet)?;
        if self.expired() {
            return Err(HeadError::RootExpired {
                version: root.version,
                expires_ms: root.expires_ms,
            });
        }
        let epoch = sh.head.epoch;
        if epoch < root.epoch {
            return Err(HeadError::OldEpoch {
                epoch,
                current: root.epoch,
                version: root.version,
            });
        }
        if epoch > root.epoch {
            return Err(HeadError::FutureEpoch {
                epoch,
                current: root.epoch,
                version: root.version,
            });
        }
        sh.check_threshold(&root.roles.release)
    }

    /// Checks a head read back from disk (untrusted bytes): signed by a threshold of the
    /// release role of its own epoch's root. Expiry and newer epochs do not matter: an agent
    /// keeps serving what it ran (fail-static) until a newer head arrives.
    pub fn verify_stored_head(&self, sh: &SignedHead) -> Result<(), HeadError> {
        let Some(root) = self.root_of_epoch(sh.head.epoch) else {
            return Err(HeadError::FutureEpoch {
                epoch: sh.head.epoch,
                current: self.epoch(),
                version: self.version(),
            });
        };
        sh.check_shape(&root.fleet)?;
        sh.check_threshold(&root.roles.release)
    }

    /// Whether the peer that proved `node` and said `hello` may connect, and as what.
    pub fn admit(
        &self,
        admission: Admission,
        node: NodeId,
        hello: &Hello,
    ) -> Result<PeerRole, AdmitError> {
        let root = self.current();
        if root.is_revoked(&node) {
            return Err(AdmitError::Revoked {
                node,
                fleet: root.fleet.clone(),
                version: root.version,
            });
        }
        match (hello, admission) {
            (Hello::Operator, Admission::Open) => Ok(PeerRole::Operator),
            (Hello::Operator, Admission::Enrolled) => {
                let key = PublicKey(node.0);
                if root.roles.release.contains(&key) {
                    Ok(PeerRole::Operator)
                } else {
                    Err(AdmitError::NotOperator {
                        key,
                        fleet: root.fleet.clone(),
                        version: root.version,
                    })
                }
            }
            (Hello::Node { cert: None }, Admission::Open) => Ok(PeerRole::Node),
            (Hello::Node { cert: Some(c) }, Admission::Open) => {
                // Open fleets take anyone, but a certificate that is there must be good.
                self.check_cert(node, c).map(|()| PeerRole::Node)
            }
            (Hello::Node { cert: None }, Admission::Enrolled) => Err(AdmitError::NotEnrolled {
                node,
                fleet: root.fleet.clone(),
            }),
            (Hello::Node { cert: Some(c) }, Admission::Enrolled) => {
                self.check_cert(node, c).map(|()| PeerRole::Node)
            }
        }
    }

    /// Checks `cert` as node `node`'s: this fleet, this node, not expired, not revoked, signed
    /// by a threshold of the newest root's nodes role.
    pub fn check_cert(&self, node: NodeId, cert: &SignedNodeCert) -> Result<(), AdmitError> {
        let root = self.current();
        let c = &cert.cert;
        if c.fleet != root.fleet {
            return Err(AdmitError::CertFleet {
                node,
                cert: c.fleet.clone(),
                fleet: root.fleet.clone(),
            });
        }
        if c.node != node {
            return Err(AdmitError::CertNode { node, cert: c.node });
        }
        if root.is_revoked(&node) {
            return Err(AdmitError::Revoked {
                node,
                fleet: root.fleet.clone(),
                version: root.version,
            });
        }
        let role = &root.roles.nodes;
        let have = count_signatures(role, &c.signing_bytes(), &cert.signatures)
            .map_err(|key| AdmitError::CertBadSignature { node, key })?;
        if have < role.threshold as usize {
            return Err(AdmitError::CertUntrusted {
                node,
                have,
                need: role.threshold,
                version: root.version,
            });
        }
        if self.effective_now() >= c.expires_ms {
            return Err(AdmitError::CertExpired {
                node,
                expires_ms: c.expires_ms,
            });
        }
        Ok(())
    }

    /// What status shows.
    pub fn status(&self) -> TrustStatus {
        let root = self.current();
        let now = self.effective_now();
        TrustStatus {
            fleet: root.fleet.clone(),
            version: root.version,
            epoch: root.epoch,
            issued_ms: root.issued_ms,
            expires_ms: root.expires_ms,
            expired: self.expired(),
            expires_soon: root.expires_ms.saturating_sub(now) < EXPIRY_WARNING_MS,
            now_ms: now,
            release_keys: root.roles.release.keys.len() as u32,
            release_threshold: root.roles.release.threshold,
            revoked: root.revoked.len() as u32,
        }
    }
}
