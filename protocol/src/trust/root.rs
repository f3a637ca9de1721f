//! Root metadata: who the fleet trusts for what, signed by a threshold of root keys.
//!
//! A [`Root`] names the fleet, its `version` (1, 2, 3… one step at a time), when it was issued
//! and when it expires, and three roles, each a set of ed25519 keys and a threshold:
//! - `root`: signs the next root (root keys are kept offline);
//! - `release`: signs heads (a head needs `release.threshold` distinct release keys);
//! - `nodes`: signs node certificates (enrollment).
//!
//! plus the node ids it revokes. `epoch` is the version of the root that last changed the
//! release role: heads are ordered by (epoch, seq), so rotating a leaked release key starts a
//! new epoch and every head of the old one is refused, however high its seq.
//!
//! Signatures cover [`ROOT_DOMAIN`] followed by the postcard encoding of the root (one encoding
//! per value: no maps, no floats), and are counted once per distinct key.

use std::collections::BTreeSet;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::head::{HeadSignature, MAX_FLEET_LEN, PublicKey};
use crate::wire::NodeId;

/// Domain separation for root signatures.
pub const ROOT_DOMAIN: &[u8] = b"fleetcast/root/v1\0";

/// At most this many keys per role.
pub const MAX_ROLE_KEYS: usize = 16;

/// At most this many signatures on one root (old and new root keys together).
pub const MAX_ROOT_SIGNATURES: usize = 2 * MAX_ROLE_KEYS;

/// At most this many revoked node ids in one root.
pub const MAX_REVOKED: usize = 4096;

/// A set of keys and how many of them must sign.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Role {
    pub keys: Vec<PublicKey>,
    pub threshold: u32,
}

impl Role {
    pub fn new(keys: Vec<PublicKey>, threshold: u32) -> Role {
        Role { keys, threshold }
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    fn check(&self, name: &'static str) -> Result<(), RootError> {
        let distinct: BTreeSet<_> = self.keys.iter().collect();
        if self.keys.is_empty() || self.keys.len() > MAX_ROLE_KEYS {
            return Err(RootError::Shape(format!(
                "role {name} has {} keys; it needs 1 to {MAX_ROLE_KEYS}",
                self.keys.len()
            )));
        }
        if distinct.len() != self.keys.len() {
            return Err(RootError::Shape(format!("role {name} lists a key twice")));
        }
        if self.threshold == 0 || self.threshold as usize > self.keys.len() {
            return Err(RootError::Shape(format!(
                "role {name} has threshold {} but {} keys; it needs 1 to {}",
                self.threshold,
                self.keys.len(),
                self.keys.len()
            )));
        }
        for k in &self.keys {
            if VerifyingKey::from_bytes(&k.0).is_err() {
                return Err(RootError::Shape(format!(
                    "role {name} lists {} which is not an ed25519 public key",
                    k.short()
                )));
            }
        }
        Ok(())
    }
}

/// The three roles of a fleet.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Roles {
    pub root: Role,
    pub release: Role,
    pub nodes: Role,
}

/// The fleet's root metadata. See the module docs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Root {
    pub fleet: String,
    pub version: u64,
    /// The version of the root that last changed the release role (heads carry it).
    pub epoch: u64,
    /// Unix ms.
    pub issued_ms: u64,
    /// Unix ms. Past it, agents keep serving what runs but accept no new head.
    pub expires_ms: u64,
    pub roles: Roles,
    /// Node ids cut off from the fleet, whatever their certificates say.
    pub revoked: Vec<NodeId>,
}

/// A root with its signatures, as it travels, as it is stored and as `root.json` holds it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedRoot {
    pub root: Root,
    pub signatures: Vec<HeadSignature>,
}

/// Why a root (or a step of the chain) was not accepted. The trusted root stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error("root metadata is malformed: {0}")]
    Shape(String),
    #[error(
        "this agent has no fleet root (it trusts trusted_keys, a lab setting), so no signed root can follow: configure root = \"root.json\" in its config"
    )]
    NoRoot,
    #[error("root is for fleet {root:?} but this agent is in fleet {ours:?}")]
    WrongFleet { root: String, ours: String },
    #[error(
        "root version {got} does not follow version {current}: roots are applied one version at a time (push the whole chain: fleetcast fleet push)"
    )]
    NotNext { current: u64, got: u64 },
    #[error(
        "root version {version} is signed by {have} of the {which} root keys it needs {need} of{}",
        if *.which == "previous" { ": a new root must be signed by a threshold of the current root keys (--root-key)" } else { ": a new root must also be signed by a threshold of its own root keys" }
    )]
    Threshold {
        version: u64,
        which: &'static str,
        have: usize,
        need: u32,
    },
    #[error("signature by key {} on root version {version} does not verify: the root or its signature was altered", .key.short())]
    BadSignature { version: u64, key: PublicKey },
    #[error(
        "root version {version} has epoch {got}, expected {want}: the epoch is the version of the root that last changed the release role"
    )]
    Epoch { version: u64, got: u64, want: u64 },
    #[error(
        "root version {version} carries {count} signatures, more than the {MAX_ROOT_SIGNATURES} allowed"
    )]
    TooManySignatures { version: u64, count: usize },
}

impl Root {
    /// The exact bytes a root signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = ROOT_DOMAIN.to_vec();
        out.extend(postcard::to_stdvec(self).expect("a root always encodes"));
        out
    }

    /// Checks everything that does not need another root: name, roles, bounds, expiry after
    /// issue, epoch not after version.
    pub fn check_shape(&self) -> Result<(), RootError> {
        if self.fleet.is_empty() || self.fleet.len() > MAX_FLEET_LEN {
            return Err(RootError::Shape(format!(
                "fleet name has {} bytes; it needs 1 to {MAX_FLEET_LEN}",
                self.fleet.len()
            )));
        }
        if self.version == 0 {
            return Err(RootError::Shape("root version 0 is reserved".into()));
        }
        if self.epoch == 0 || self.epoch > self.version {
            return Err(RootError::Shape(format!(
                "epoch {} of root version {} must be between 1 and the version",
                self.epoch, self.version
            )));
        }
        if self.expires_ms <= self.issued_ms {
            return Err(RootError::Shape("root expires before it was issued".into()));
        }
        self.roles.root.check("root")?;
        self.roles.release.check("release")?;
        self.roles.nodes.check("nodes")?;
        if self.revoked.len() > MAX_REVOKED {
            return Err(RootError::Shape(format!(
                "root revokes {} nodes, more than the {MAX_REVOKED} allowed",
                self.revoked.len()
            )));
        }
        Ok(())
    }

    /// Signs the root with `key` (more signatures: [`SignedRoot::add_signature`]).
    pub fn sign(self, key: &SigningKey) -> SignedRoot {
        let mut s = SignedRoot {
            root: self,
            signatures: Vec::new(),
        };
        s.add_signature(key);
        s
    }

    /// The root that follows this one: version + 1, the same roles, issued at `now_ms`; the
    /// caller changes what it means to change, then [`Root::fix_epoch`].
    pub fn next(&self, now_ms: u64, expires_ms: u64) -> Root {
        Root {
            version: self.version + 1,
            issued_ms: now_ms,
            expires_ms,
            ..self.clone()
        }
    }

    /// Sets `epoch` as [`check_step`] wants it after `prev`: this version if the release role
    /// changed, else `prev`'s epoch.
    pub fn fix_epoch(&mut self, prev: &Root) {
        self.epoch = if self.roles.release == prev.roles.release {
            prev.epoch
        } else {
            self.version
        };
    }

    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.revoked.contains(node)
    }
}

impl SignedRoot {
    /// Adds a signature by `key` (a signature by a key already present is replaced).
    pub fn add_signature(&mut self, key: &SigningKey) {
        let pk = PublicKey::from(&key.verifying_key());
        self.signatures.retain(|s| s.key != pk);
        let sig = key.sign(&self.root.signing_bytes());
        self.signatures.push(HeadSignature { key: pk, sig });
    }

    /// A first root, trusted because the operator gave it: well formed and signed by a
    /// threshold of its own root keys.
    pub fn check_self_signed(&self) -> Result<(), RootError> {
        self.root.check_shape()?;
        self.check_count()?;
        let v = self.root.version;
        let message = self.root.signing_bytes();
        let have = count_signatures(&self.root.roles.root, &message, &self.signatures)
            .map_err(|key| RootError::BadSignature { version: v, key })?;
        if have < self.root.roles.root.threshold as usize {
            return Err(RootError::Threshold {
                version: v,
                which: "its own",
                have,
                need: self.root.roles.root.threshold,
            });
        }
        Ok(())
    }

    fn check_count(&self) -> Result<(), RootError> {
        if self.signatures.len() > MAX_ROOT_SIGNATURES {
            return Err(RootError::TooManySignatures {
                version: self.root.version,
                count: self.signatures.len(),
            });
        }
        Ok(())
    }
}

/// Whether `next` may follow `current`: the same fleet; exactly version + 1; signed by a
/// threshold of `current`'s root keys **and** of `next`'s own; the epoch rule. The TUF root
/// update rule.
pub fn check_step(current: &Root, next: &SignedRoot) -> Result<(), RootError> {
    let n = &next.root;
    if n.fleet != current.fleet {
        return Err(RootError::WrongFleet {
            root: n.fleet.clone(),
            ours: current.fleet.clone(),
        });
    }
    if n.version != current.version + 1 {
        return Err(RootError::NotNext {
            current: current.version,
            got: n.version,
        });
    }
    n.check_shape()?;
    next.check_count()?;
    let message = n.signing_bytes();
    let bad = |key| RootError::BadSignature {
        version: n.version,
        key,
    };
    let old = count_signatures(&current.roles.root, &message, &next.signatures).map_err(bad)?;
    if old < current.roles.root.threshold as usize {
        return Err(RootError::Threshold {
            version: n.version,
            which: "previous",
            have: old,
            need: current.roles.root.threshold,
        });
    }
    let new = count_signatures(&n.roles.root, &message, &next.signatures).map_err(bad)?;
    if new < n.roles.root.threshold as usize {
        return Err(RootError::Threshold {
            version: n.version,
            which: "its own",
            have: new,
            need: n.roles.root.threshold,
        });
    }
    let want = if n.roles.release == current.roles.release {
        current.epoch
    } else {
        n.version
    };
    if n.epoch != want {
        return Err(RootError::Epoch {
            version: n.version,
            got: n.epoch,
            want,
        });
    }
    Ok(())
}

/// How many distinct keys of `role` signed `message` (`verify_strict`). Signatures by keys
/// outside the role are ignored; a signature by a role key that does not verify is an error
/// (`Err(key)`): the statement or its signature was altered.
pub fn count_signatures(
    role: &Role,
    message: &[u8],
    signatures: &[HeadSignature],
) -> Result<usize, PublicKey> {
    let mut counted = BTreeSet::new();
    for s in signatures {
        if !role.contains(&s.key) {
            continue;
        }
        let key = VerifyingKey::from_bytes(&s.key.0).map_err(|_| s.key)?;
        key.verify_strict(message, &s.sig).map_err(|_| s.key)?;
        counted.insert(s.key);
    }
    Ok(counted.len())
}
