//! Who signs a head (pure but for reading key files): one or more release keys (`--key`,
//! repeatable; each a distinct key), the signatures a head already carries (checked before one
//! is added), and how many of them the fleet root's release role counts.
//!
//! Under a fleet root a head needs `release.threshold` distinct release-key signatures. Holders
//! can sign together (`release --key A --key B`) or in turn: `release --sign-only` writes a head
//! file with the first signatures, `fleetcast sign` adds one, `fleetcast push` sends it.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use fleetcast_protocol::trust::{Role, SignedRoot, TrustStatus, count_signatures};
use fleetcast_protocol::{Head, PublicKey, SignedHead};

use crate::error::{CliError, Result};

/// The keys that sign, and the fleet root the CLI goes by (`--fleet DIR`), if given.
#[derive(Clone, Debug)]
pub struct Signers {
    /// Distinct keys, in the order given; the first is also the CLI's QUIC identity.
    pub keys: Vec<SigningKey>,
    pub root: Option<SignedRoot>,
}

/// `--key` on commands that only talk to an agent (status, history, push, fleet push): the
/// identity the CLI connects as.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IdentityArgs {
    /// A release key to connect as: an enrolled fleet admits operators only by a release key
    /// of its root. Default: an ephemeral identity, which open and trusted_keys fleets admit.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl IdentityArgs {
    pub fn read(&self) -> Result<Option<SigningKey>> {
        self.key.as_deref().map(read_key).transpose()
    }
}

/// Reads one secret key file (from `fleetcast keygen` or `fleetcast fleet init`).
pub fn read_key(path: &Path) -> Result<SigningKey> {
    fleetcast_net::keys::read_secret(path).map_err(|e| {
        CliError::usage(format!(
            "{e} (--key names a secret key from `fleetcast keygen` or fleet/keys/*.key)"
        ))
    })
}

/// Reads every `--key`; the same key twice is refused (it would count once).
pub fn read_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>> {
    if paths.is_empty() {
        return Err(CliError::usage(
            "no --key given: pass a release key (--key fleet/keys/release-1.key)",
        ));
    }
    let mut keys: Vec<SigningKey> = Vec::new();
    for p in paths {
        let k = read_key(p)?;
        if let Some(j) = keys
            .iter()
            .position(|o| o.verifying_key() == k.verifying_key())
        {
            return Err(CliError::usage(format!(
                "--key {} is the same key as --key {}: a head needs distinct release keys; give each key once",
                p.display(),
                paths[j].display()
            )));
        }
        keys.push(k);
    }
    Ok(keys)
}

pub fn public(k: &SigningKey) -> PublicKey {
    PublicKey::from(&k.verifying_key())
}

/// Signs `head` with every key (distinct keys: [`read_keys`]).
pub fn sign_all(head: Head, keys: &[SigningKey]) -> SignedHead {
    let mut sh = SignedHead {
        head,
        signatures: Vec::new(),
    };
    for k in keys {
        sh.add_signature(k);
    }
    sh
}

/// Every signature `sh` carries verifies over its head (whatever role its key has): a head
/// whose signatures do not verify was altered, and nobody should add to it.
pub fn check_signatures(sh: &SignedHead) -> Result<()> {
    let message = sh.head.signing_bytes();
    for s in &sh.signatures {
        let ok = VerifyingKey::from_bytes(&s.key.0)
            .map(|k| k.verify_strict(&message, &s.sig).is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(CliError::usage(format!(
                "the signature by key {} does not verify: the head or its signature was altered; sign a fresh head (fleetcast release --sign-only)",
                s.key.short()
            )));
        }
    }
    Ok(())
}

/// Adds a signature by `key` to `sh` after checking the ones it carries; a key that already
/// signed is refused.
pub fn add_signature(sh: &mut SignedHead, key: &SigningKey) -> Result<()> {
    check_signatures(sh)?;
    let pk = public(key);
    if sh.signatures.iter().any(|s| s.key == pk) {
        return Err(CliError::usage(format!(
            "key {} has already signed this head: a second holder signs with another release key",
            pk.short()
        )));
    }
    if sh.signatures.len() >= fleetcast_protocol::head::MAX_SIGNATURES {
        return Err(CliError::usage(format!(
            "the head already carries {} signatures, the most a head may carry",
            sh.signatures.len()
        )));
    }
    sh.add_signature(key);
    Ok(())
}

/// How many signatures the fleet counts and how many it needs: with the root, the distinct
/// release keys among the signatures; without it (only the agent's trust status), every
/// distinct signer, and the threshold the agent reports (1 without a root).
pub fn tally(sh: &SignedHead, root: Option<&SignedRoot>, agent: Option<&TrustStatus>) -> Count {
    match root {
        Some(r) => {
            let role: &Role = &r.root.roles.release;
            let have =
                count_signatures(role, &sh.head.signing_bytes(), &sh.signatures).unwrap_or(0);
            let strangers = sh
                .signatures
                .iter()
                .filter(|s| !role.contains(&s.key))
                .map(|s| s.key)
                .collect();
            Count {
                have,
                need: Some(role.threshold),
                strangers,
            }
        }
        None => {
            let mut keys: Vec<PublicKey> = sh.signatures.iter().map(|s| s.key).collect();
            keys.sort();
            keys.dedup();
            Count {
                have: keys.len(),
                need: agent.map(|t| t.release_threshold.max(1)),
                strangers: Vec::new(),
            }
        }
    }
}

/// Signatures counted against the release role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    pub have: usize,
    /// `None`: not known (no `--fleet` root and no agent asked).
    pub need: Option<u32>,
    /// Signers that are not release keys of the root (they count for nothing).
    pub strangers: Vec<PublicKey>,
}

impl Count {
    pub fn complete(&self) -> bool {
        self.need.is_none_or(|n| self.have >= n as usize)
    }

    /// "2 of 2 needed", "1 of 2 needed", "1 (the threshold is not known: pass --fleet DIR)".
    pub fn describe(&self) -> String {
        let mut s = match self.need {
            Some(n) => format!("{} of {n} needed", self.have),
            None => format!(
                "{} (the threshold is not known here: pass --fleet DIR to check it)",
                self.have
            ),
        };
        if !self.strangers.is_empty() {
            let keys: Vec<String> = self.strangers.iter().map(PublicKey::short).collect();
            s.push_str(&format!(
                "; signed also by {} which is not a release key of this root",
                keys.join(", ")
            ));
        }
        s
    }
}

/// The epoch a new head is signed under: the `--fleet` root's, checked against what the agent
/// holds (the agent must have that very root version), else the agent's.
pub fn epoch_for(root: Option<&SignedRoot>, agent: Option<&TrustStatus>) -> Result<u64> {
    match (root, agent) {
        (Some(r), Some(t)) => {
            let (ours, theirs) = (r.root.version, t.version);
            if theirs < ours {
                Err(CliError::usage(format!(
                    "the agent holds fleet root version {theirs} (epoch {}) but the --fleet directory's root.json is version {ours} (epoch {}): send it the new root first (fleetcast fleet push --fleet DIR --peer ...)",
                    t.epoch, r.root.epoch
                )))
            } else if theirs > ours {
                Err(CliError::usage(format!(
                    "the agent holds fleet root version {theirs} (epoch {}), newer than the --fleet directory's version {ours}: use the fleet directory that made the newest root",
                    t.epoch
                )))
            } else {
                Ok(r.root.epoch)
            }
        }
        (Some(r), None) => Ok(r.root.epoch),
        (None, Some(t)) => Ok(t.epoch),
        (None, None) => Err(CliError::usage(
            "the epoch to sign under is not known: pass --peer (the agent says), --fleet DIR (its root.json says), or --epoch N",
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fleetcast_protocol::{AppName, HeadKind, Release};

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn head(epoch: u64, seq: u64) -> Head {
        let app = AppName::new("shop").unwrap();
        Head {
            fleet: "default".into(),
            app: app.clone(),
            seq,
            release: Release::build(app, "1.0.1".parse().unwrap(), b"bytes", 4096).unwrap(),
            kind: HeadKind::Release,
            issued_at_ms: 1,
            epoch,
            plan: None,
        }
    }

    #[test]
    fn sign_adds_a_distinct_signature_and_refuses_the_same_key_twice() {
        let mut sh = sign_all(head(1, 1), &[key(1)]);
        add_signature(&mut sh, &key(2)).unwrap();
        assert_eq!(sh.signatures.len(), 2);
        assert_ne!(sh.signatures[0].key, sh.signatures[1].key);
        check_signatures(&sh).unwrap();
        let e = add_signature(&mut sh, &key(1)).unwrap_err();
        assert!(e.message.contains("already signed"), "{e}");
        assert_eq!(sh.signatures.len(), 2, "nothing added");
    }

    #[test]
    fn sign_refuses_a_head_whose_signatures_do_not_verify() {
        let mut sh = sign_all(head(1, 1), &[key(1)]);
        sh.head.seq = 2; // altered after signing
        let e = add_signature(&mut sh, &key(2)).unwrap_err();
        assert!(e.message.contains("does not verify"), "{e}");
        assert_eq!(sh.signatures.len(), 1);
        // A forged signature by an unknown key is caught too.
        let mut sh = sign_all(head(1, 1), &[key(1)]);
        let other = sign_all(head(1, 9), &[key(3)]);
        sh.signatures.push(other.signatures[0].clone());
        assert!(add_signature(&mut sh, &key(2)).is_err());
    }

    #[test]
    fn read_keys_refuses_one_key_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.key");
        fleetcast_net::keys::generate(&a).unwrap();
        let b = dir.path().join("b.key");
        std::fs::copy(&a, &b).unwrap();
        let e = read_keys(&[a.clone(), b]).unwrap_err();
        assert!(e.message.contains("same key"), "{e}");
        assert_eq!(read_keys(&[a]).unwrap().len(), 1);
        assert!(read_keys(&[]).is_err());
    }

    #[test]
    fn the_epoch_comes_from_the_root_or_the_agent_and_they_must_agree() {
        let root = crate::fleetdir::tests::init_root();
        let agent = |version, epoch| TrustStatus {
            version,
            epoch,
            ..Default::default()
        };
        assert_eq!(epoch_for(Some(&root), None).unwrap(), 1);
        assert_eq!(epoch_for(None, Some(&agent(3, 2))).unwrap(), 2);
        assert_eq!(epoch_for(Some(&root), Some(&agent(1, 1))).unwrap(), 1);
        let e = epoch_for(Some(&root), Some(&agent(0, 0))).unwrap_err();
        assert!(e.message.contains("fleetcast fleet push"), "{e}");
        let e = epoch_for(Some(&root), Some(&agent(2, 2))).unwrap_err();
        assert!(e.message.contains("newer"), "{e}");
        assert!(epoch_for(None, None).is_err());
    }
}
