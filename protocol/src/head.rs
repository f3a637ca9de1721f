//! Signed heads: the only statement that moves an app.
//!
//! A [`Head`] says "in fleet F, app A is at seq N, running release R" and is either a
//! `Release` (a new version) or a `Rollback` (a new, higher seq that points at an older
//! release). So "seq never goes backwards" and "roll back" both hold.
//!
//! Signatures are ed25519 over a canonical encoding: the domain-separation prefix
//! [`HEAD_DOMAIN`] followed by the postcard encoding of the head. Postcard has exactly one
//! encoding for a given value of these types (no maps, no floats), and a verifier re-encodes the
//! decoded head rather than trusting the bytes it received. Verification uses
//! `verify_strict` (rejects small-order keys and malleable signatures).
//!
//! Epoch-0 heads (no fleet root) are signed over the older encoding without the epoch
//! ([`HEAD_DOMAIN_V2`]), so heads stored before epochs existed still verify.
//!
//! **Invariant:** [`SignedHead::verify`] accepts a head only if its release is well formed, it
//! carries the epoch of the agent's newest root, that root has not expired, and at least the
//! release role's threshold of distinct release keys signed it, with no signature by a release
//! key failing ([`crate::trust::Trust::verify_head`]). The
//! seq rule (strictly greater than what the node holds) and the version rule (a `Release` head
//! may not give a version this node has released before other bytes:
//! [`HeadError::VersionReuse`]) are stateful and live in [`crate::node`].

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::release::{AppName, Digest, Release, ReleaseError};
use crate::rollout::{Plan, PlanError};
use crate::trust::{Role, Trust, count_signatures};

/// Domain separation for head signatures: a head signature can never be mistaken for a
/// signature over anything else.
pub const HEAD_DOMAIN: &[u8] = b"fleetcast/head/v3\0";

/// The domain of heads that carry a rollout plan ([`crate::rollout::Plan`]): the whole head,
/// plan included. Heads without a plan keep the v3 (or v2) bytes, so stored heads verify.
pub const HEAD_DOMAIN_V4: &[u8] = b"fleetcast/head/v4\0";

/// The domain of epoch-0 heads (no fleet root: `trusted_keys`), signed as before epochs
/// existed, so heads stored by an older agent still verify.
pub const HEAD_DOMAIN_V2: &[u8] = b"fleetcast/head/v2\0";

/// At most this many signatures ride on one head.
pub const MAX_SIGNATURES: usize = 8;

/// Longest fleet name.
pub const MAX_FLEET_LEN: usize = 64;

/// Whether a head publishes a new release or returns to an older one.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum HeadKind {
    Release,
    Rollback,
}

impl fmt::Display for HeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadKind::Release => "release",
            HeadKind::Rollback => "rollback",
        })
    }
}

/// The signed statement that moves an app to a release.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Head {
    pub fleet: String,
    pub app: AppName,
    /// Strictly increasing per app.
    pub seq: u64,
    pub release: Release,
    pub kind: HeadKind,
    /// Publisher wall clock, milliseconds since the Unix epoch (informational).
    pub issued_at_ms: u64,
    /// The epoch of the fleet root this head is signed under (0: no root). Heads are ordered
    /// by (epoch, seq): a new epoch starts when a root changes the release role.
    pub epoch: u64,
    /// A staged rollout: which wave of the fleet runs the release now (`None`: every node).
    pub plan: Option<Plan>,
}

/// The encoding of a head without a plan (domain v3), as it was before plans.
#[derive(Serialize)]
struct HeadV3<'a> {
    fleet: &'a str,
    app: &'a AppName,
    seq: u64,
    release: &'a Release,
    kind: HeadKind,
    issued_at_ms: u64,
    epoch: u64,
}

/// A head as stores of format 4 hold it (before plans): read by the store's migration.
#[derive(Clone, Debug, Deserialize)]
pub struct HeadV4Stored {
    pub fleet: String,
    pub app: AppName,
    pub seq: u64,
    pub release: Release,
    pub kind: HeadKind,
    pub issued_at_ms: u64,
    pub epoch: u64,
}

/// A signed head as stores of format 4 hold it.
#[derive(Clone, Debug, Deserialize)]
pub struct SignedHeadV4Stored {
    pub head: HeadV4Stored,
    pub signatures: Vec<HeadSignature>,
}

impl From<SignedHeadV4Stored> for SignedHead {
    /// The same statement without a plan: its signing bytes are the format-4 ones.
    fn from(l: SignedHeadV4Stored) -> SignedHead {
        let h = l.head;
        SignedHead {
            head: Head {
                fleet: h.fleet,
                app: h.app,
                seq: h.seq,
                release: h.release,
                kind: h.kind,
                issued_at_ms: h.issued_at_ms,
                epoch: h.epoch,
                plan: None,
            },
            signatures: l.signatures,
        }
    }
}

/// The encoding of an epoch-0 head: the head as it was before epochs (domain v2).
#[derive(Serialize)]
struct HeadV2<'a> {
    fleet: &'a str,
    app: &'a AppName,
    seq: u64,
    release: &'a Release,
    kind: HeadKind,
    issued_at_ms: u64,
}

/// A head as stores of format 3 hold it (before epochs): read by the store's migration.
#[derive(Clone, Debug, Deserialize)]
pub struct LegacyHead {
    pub fleet: String,
    pub app: AppName,
    pub seq: u64,
    pub release: Release,
    pub kind: HeadKind,
    pub issued_at_ms: u64,
}

/// A signed head as stores of format 3 hold it.
#[derive(Clone, Debug, Deserialize)]
pub struct LegacySignedHead {
    pub head: LegacyHead,
    pub signatures: Vec<HeadSignature>,
}

impl From<LegacySignedHead> for SignedHead {
    /// The same statement at epoch 0, whose signing bytes are the legacy ones: the
    /// signatures still verify.
    fn from(l: LegacySignedHead) -> SignedHead {
        let h = l.head;
        SignedHead {
            head: Head {
                fleet: h.fleet,
                app: h.app,
                seq: h.seq,
                release: h.release,
                kind: h.kind,
                issued_at_ms: h.issued_at_ms,
                epoch: 0,
                plan: None,
            },
            signatures: l.signatures,
        }
    }
}

/// An ed25519 public key, kept as raw bytes so that a damaged key is reported as "untrusted"
/// rather than as an undecodable message.
///
/// In human-readable formats (JSON: `root.json`, status) it is 64 hex characters; on the wire
/// and on disk (postcard) the 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hexser::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hexser::deserialize(d).map(PublicKey)
    }
}

impl PublicKey {
    /// First 16 hex characters: enough to tell keys apart in messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl From<&VerifyingKey> for PublicKey {
    fn from(k: &VerifyingKey) -> Self {
        PublicKey(k.to_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// One signature (over a head, a root or a node certificate): the key and the ed25519
/// signature (128 hex characters in JSON).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HeadSignature {
    pub key: PublicKey,
    #[serde(with = "crate::hexser::signature")]
    pub sig: Signature,
}

/// A head with its signatures, as it travels and as it is stored.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedHead {
    pub head: Head,
    pub signatures: Vec<HeadSignature>,
}

/// Who an agent believes: its fleet and its publisher keys.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    pub fleet: String,
    pub keys: Vec<VerifyingKey>,
}

impl Head {
    /// The exact bytes a signature covers: with a plan, [`HEAD_DOMAIN_V4`] + the whole head;
    /// without, [`HEAD_DOMAIN`] + the head without its plan, or for epoch 0 [`HEAD_DOMAIN_V2`]
    /// + the head without its epoch.
    pub fn signing_bytes(&self) -> Vec<u8> {
        if self.plan.is_some() {
            // The plan is signed with the rest, whatever the epoch.
            let mut out = HEAD_DOMAIN_V4.to_vec();
            out.extend(postcard::to_stdvec(self).expect("a head always encodes"));
            return out;
        }
        if self.epoch == 0 {
            let v2 = HeadV2 {
                fleet: &self.fleet,
                app: &self.app,
                seq: self.seq,
                release: &self.release,
                kind: self.kind,
                issued_at_ms: self.issued_at_ms,
            };
            let mut out = HEAD_DOMAIN_V2.to_vec();
            out.extend(postcard::to_stdvec(&v2).expect("a head always encodes"));
            return out;
        }
        let v3 = HeadV3 {
            fleet: &self.fleet,
            app: &self.app,
            seq: self.seq,
            release: &self.release,
            kind: self.kind,
            issued_at_ms: self.issued_at_ms,
            epoch: self.epoch,
        };
        let mut out = HEAD_DOMAIN.to_vec();
        out.extend(postcard::to_stdvec(&v3).expect("a head always encodes"));
        out
    }

    /// Whether the head's wave includes `node` (every node when it has no plan).
    pub fn includes(&self, node: &crate::wire::NodeId) -> bool {
        self.plan
            .as_ref()
            .is_none_or(|p| crate::rollout::includes(&self.release.digest, node, p.fraction()))
    }

    /// Where the head sits in its app's order: (epoch, seq).
    pub fn order(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }

    /// Signs the head with `key`.
    pub fn sign(self, key: &SigningKey) -> SignedHead {
        let mut signed = SignedHead {
            head: self,
            signatures: Vec::new(),
        };
        signed.add_signature(key);
        signed
    }
}

impl SignedHead {
    /// Adds a signature by `key` over the head as it is now.
    pub fn add_signature(&mut self, key: &SigningKey) {
        let sig = key.sign(&self.head.signing_bytes());
        self.signatures.push(HeadSignature {
            key: PublicKey::from(&key.verifying_key()),
            sig,
        });
    }

    /// Identity of the signed statement (digest of the canonical head bytes). Two heads with the
    /// same app and seq but different ids are an equivocation.
    pub fn id(&self) -> Digest {
        Digest::of(&self.head.signing_bytes())
    }

    /// Checks fleet, release shape, epoch and signatures against `trust`'s newest root
    /// ([`Trust::verify_head`]). Does not check seq.
    pub fn verify(&self, trust: &Trust) -> Result<(), HeadError> {
        trust.verify_head(self)
    }

    /// Fleet, app and release shape, and the signature count bound.
    pub(crate) fn check_shape(&self, fleet: &str) -> Result<(), HeadError> {
        let head = &self.head;
        if head.fleet != fleet {
            return Err(HeadError::WrongFleet {
                head: head.fleet.clone(),
                ours: fleet.to_string(),
            });
        }
        if head.release.app != head.app {
            return Err(HeadError::AppMismatch {
                head: head.app.clone(),
                release: head.release.app.clone(),
            });
        }
        head.release.check_shape()?;
        if let Some(plan) = &head.plan {
            plan.check()?;
        }
        if self.signatures.is_empty() {
            return Err(HeadError::Unsigned);
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(HeadError::TooManySignatures(self.signatures.len()));
        }
        Ok(())
    }

    /// Signed by at least `role.threshold` distinct keys of `role`, and no signature by a key
    /// of `role` fails.
    pub(crate) fn check_threshold(&self, role: &Role) -> Result<(), HeadError> {
        let have = count_signatures(role, &self.head.signing_bytes(), &self.signatures)
            .map_err(|key| HeadError::BadSignature { key })?;
        if have >= role.threshold as usize {
            return Ok(());
        }
        if have == 0 {
            return Err(HeadError::Untrusted {
                keys: self.signatures.iter().map(|s| s.key).collect(),
            });
        }
        Err(HeadError::BelowThreshold {
            have,
            need: role.threshold,
        })
    }
}

/// Why a head was not accepted. None of these change the node's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error(
        "head is for fleet {head:?} but this agent is in fleet {ours:?}: publish with --fleet {ours}"
    )]
    WrongFleet { head: String, ours: String },
    #[error("head names app {head} but its release is for app {release}")]
    AppMismatch { head: AppName, release: AppName },
    #[error("head is malformed: {0}")]
    Malformed(#[from] ReleaseError),
    #[error("head carries a malformed rollout plan: {0}")]
    BadPlan(#[from] PlanError),
    #[error("head carries no signature: sign it with `fleetcast release --key`")]
    Unsigned,
    #[error("head carries {0} signatures, more than the {MAX_SIGNATURES} allowed")]
    TooManySignatures(usize),
    #[error("head is signed only by key(s) {} which are not release keys of this agent's fleet root (or trusted_keys): sign with a release key (fleetcast fleet show lists them)", short_keys(.keys))]
    Untrusted { keys: Vec<PublicKey> },
    #[error(
        "head is signed by {have} distinct release key(s) but the fleet root needs {need}: add signatures (fleetcast sign HEAD --key ...) and push it (fleetcast push HEAD)"
    )]
    BelowThreshold { have: usize, need: u32 },
    #[error(
        "head is signed under epoch {epoch} but root version {version} started epoch {current}: its release keys were rotated; sign it again with the current release keys"
    )]
    OldEpoch {
        epoch: u64,
        current: u64,
        version: u64,
    },
    #[error(
        "head is signed under epoch {epoch} but this agent's newest root is version {version} (epoch {current}): it has not got the newer root yet; push it (fleetcast fleet push)"
    )]
    FutureEpoch {
        epoch: u64,
        current: u64,
        version: u64,
    },
    #[error(
        "this agent's fleet root (version {version}) expired at {expires_ms} (unix ms): it keeps serving what runs and accepts no new head until a newer root arrives (fleetcast fleet rotate --expires ..., then fleetcast fleet push)"
    )]
    RootExpired { version: u64, expires_ms: u64 },
    #[error(
        "signature by trusted key {} does not verify: the head or its signature was altered",
        .key.short()
    )]
    BadSignature { key: PublicKey },
    #[error(
        "head seq {seq} for app {app} is not newer than seq {current} held here (in its epoch): it is a replayed or out-of-date head (fleetcast release/rollback sign current seq + 1)"
    )]
    Stale {
        app: AppName,
        seq: u64,
        current: u64,
    },
    #[error(
        "two different heads claim app {app} seq {seq}: two publishers signed the same seq; publish again to get a new seq"
    )]
    Conflict { app: AppName, seq: u64 },
    #[error(
        "{app} {version} is already released with other bytes (digest {}, this head carries {}): a version names one set of bytes; release these bytes as a new version",
        .released.short(),
        .carried.short()
    )]
    VersionReuse {
        app: AppName,
        /// Boxed: it keeps `HeadError` (returned by [`SignedHead::verify`]) small.
        version: Box<semver::Version>,
        /// The digest this node's history holds for `version`.
        released: Digest,
        /// The digest the refused head carries.
        carried: Digest,
    },
}

impl HeadError {
    /// A short, fixed name for the kind of refusal (a metrics label; the message says more).
    pub fn kind(&self) -> &'static str {
        match self {
            HeadError::WrongFleet { .. } => "wrong-fleet",
            HeadError::AppMismatch { .. } | HeadError::Malformed(_) | HeadError::BadPlan(_) => {
                "malformed"
            }
            HeadError::Unsigned | HeadError::TooManySignatures(_) => "unsigned",
            HeadError::Untrusted { .. } => "untrusted",
            HeadError::BelowThreshold { .. } => "threshold",
            HeadError::OldEpoch { .. } => "old-epoch",
            HeadError::FutureEpoch { .. } => "future-epoch",
            HeadError::RootExpired { .. } => "root-expired",
            HeadError::BadSignature { .. } => "bad-signature",
            HeadError::Stale { .. } => "stale",
            HeadError::Conflict { .. } => "conflict",
            HeadError::VersionReuse { .. } => "version-reuse",
        }
    }
}

fn short_keys(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(PublicKey::short)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;

    pub(crate) fn key(seed: u64) -> SigningKey {
        SigningKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    pub(crate) fn head(app: &str, seq: u64, content: &[u8]) -> Head {
        let app = AppName::new(app).unwrap();
        Head {
            fleet: "test".into(),
            app: app.clone(),
            seq,
            release: Release::build(app, "1.0.0".parse().unwrap(), content, 4096).unwrap(),
            kind: HeadKind::Release,
            issued_at_ms: 1,
            epoch: 0,
            plan: None,
        }
    }

    fn trust(keys: &[&SigningKey]) -> Trust {
        TrustPolicy {
            fleet: "test".into(),
            keys: keys.iter().map(|k| k.verifying_key()).collect(),
        }
        .into()
    }

    #[test]
    fn an_epoch_0_head_signs_as_before_epochs_and_later_epochs_do_not() {
        let h = head("a", 1, b"c");
        let bytes = h.signing_bytes();
        assert!(
            bytes.starts_with(HEAD_DOMAIN_V2),
            "epoch 0 keeps the v2 domain"
        );
        // The v2 encoding is the head's fields without the epoch, in order.
        let legacy = LegacyHead {
            fleet: h.fleet.clone(),
            app: h.app.clone(),
            seq: h.seq,
            release: h.release.clone(),
            kind: h.kind,
            issued_at_ms: h.issued_at_ms,
        };
        let decoded: LegacyHead = postcard::from_bytes(&bytes[HEAD_DOMAIN_V2.len()..]).unwrap();
        assert_eq!(decoded.seq, legacy.seq);
        let mut e1 = h.clone();
        e1.epoch = 1;
        assert!(e1.signing_bytes().starts_with(HEAD_DOMAIN));
        assert_ne!(e1.signing_bytes(), bytes);
        // A signature at epoch 0 does not carry over to the same head at epoch 1.
        let k = key(1);
        let mut sh = h.sign(&k);
        sh.verify(&trust(&[&k])).unwrap();
        sh.head.epoch = 1;
        assert!(matches!(
            sh.check_threshold(&crate::trust::Role::new(
                vec![PublicKey::from(&k.verifying_key())],
                1
            )),
            Err(HeadError::BadSignature { .. })
        ));
    }

    /// A plan is signed with the head (domain v4): a relay cannot move a head to another wave
    /// or loosen its gates. Heads without a plan keep their v3 bytes (what format-4 stores
    /// hold), and a malformed plan is refused by name.
    #[test]
    fn a_plan_is_signed_with_the_head_and_heads_without_one_keep_their_bytes() {
        use crate::rollout::{FULL, Gates, Plan};
        let k = key(1);
        let mut h = head("a", 1, b"c");
        h.epoch = 2;
        let v3 = h.signing_bytes();
        assert!(v3.starts_with(HEAD_DOMAIN));
        let stored = HeadV4Stored {
            fleet: h.fleet.clone(),
            app: h.app.clone(),
            seq: h.seq,
            release: h.release.clone(),
            kind: h.kind,
            issued_at_ms: h.issued_at_ms,
            epoch: h.epoch,
        };
        let decoded: HeadV4Stored = postcard::from_bytes(&v3[HEAD_DOMAIN.len()..]).unwrap();
        assert_eq!((decoded.seq, decoded.epoch), (stored.seq, stored.epoch));
        h.epoch = 0;
        h.plan = Some(Plan::new(vec![100, FULL], Gates::default()).unwrap());
        assert!(h.signing_bytes().starts_with(HEAD_DOMAIN_V4));
        let sh = h.clone().sign(&k);
        sh.verify(&trust(&[&k])).unwrap();
        let mut moved = sh.clone();
        moved.head.plan.as_mut().unwrap().wave = 1;
        assert!(matches!(
            moved.verify(&trust(&[&k])),
            Err(HeadError::BadSignature { .. })
        ));
        let mut loosened = sh.clone();
        loosened.head.plan.as_mut().unwrap().gates.max_failed = 99;
        assert!(loosened.verify(&trust(&[&k])).is_err());
        let mut bad = h.clone();
        bad.plan.as_mut().unwrap().waves = vec![100, 5000];
        let err = bad.sign(&k).verify(&trust(&[&k])).unwrap_err();
        assert_eq!(err.kind(), "malformed");
        assert!(err.to_string().contains("must be 100%"), "{err}");
    }

    #[test]
    fn signed_by_trusted_key_verifies() {
        let k = key(1);
        let sh = head("a", 1, b"content").sign(&k);
        sh.verify(&trust(&[&k])).unwrap();
        // Survives the wire.
        let back: SignedHead = postcard::from_bytes(&postcard::to_stdvec(&sh).unwrap()).unwrap();
        back.verify(&trust(&[&k])).unwrap();
        assert_eq!(back.id(), sh.id());
    }

    #[test]
    fn untrusted_key_is_refused_with_the_key_named() {
        let (ours, theirs) = (key(1), key(2));
        let sh = head("a", 1, b"content").sign(&theirs);
        let err = sh.verify(&trust(&[&ours])).unwrap_err();
        assert!(matches!(err, HeadError::Untrusted { .. }));
        let pk = PublicKey::from(&theirs.verifying_key());
        assert!(err.to_string().contains(&pk.short()), "{err}");
        assert!(err.to_string().contains("trusted_keys"), "{err}");
    }

    #[test]
    fn every_tampered_byte_of_the_signed_head_is_refused() {
        let k = key(1);
        let sh = head("a", 7, b"some content").sign(&k);
        let bytes = postcard::to_stdvec(&sh).unwrap();
        let t = trust(&[&k]);
        let mut accepted = 0;
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(tampered) = postcard::from_bytes::<SignedHead>(&b)
                && tampered.verify(&t).is_ok()
            {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 0, "a tampered head was accepted");
    }

    #[test]
    fn wrong_fleet_and_unsigned_and_app_mismatch() {
        let k = key(1);
        let mut h = head("a", 1, b"c");
        h.fleet = "other".into();
        let err = h.sign(&k).verify(&trust(&[&k])).unwrap_err();
        assert!(err.to_string().contains("--fleet test"), "{err}");

        let unsigned = SignedHead {
            head: head("a", 1, b"c"),
            signatures: vec![],
        };
        assert_eq!(unsigned.verify(&trust(&[&k])), Err(HeadError::Unsigned));

        let mut h = head("a", 1, b"c");
        h.app = AppName::new("b").unwrap();
        assert!(matches!(
            h.sign(&k).verify(&trust(&[&k])),
            Err(HeadError::AppMismatch { .. })
        ));
    }

    #[test]
    fn a_bad_signature_by_a_trusted_key_is_refused_even_beside_a_good_one() {
        let (a, b) = (key(1), key(2));
        let mut sh = head("a", 1, b"c").sign(&a);
        sh.add_signature(&b);
        sh.verify(&trust(&[&a, &b])).unwrap();
        sh.signatures[1].sig = sh.signatures[0].sig;
        assert!(matches!(
            sh.verify(&trust(&[&a, &b])),
            Err(HeadError::BadSignature { .. })
        ));
        // The untrusted signer's bad signature does not matter to an agent that trusts only `a`.
        sh.verify(&trust(&[&a])).unwrap();
    }

    #[test]
    fn signature_is_domain_separated() {
        let k = key(1);
        let h = head("a", 1, b"c");
        let raw = postcard::to_stdvec(&h).unwrap();
        let sig = k.sign(&raw); // a signature over the bare encoding, without the domain
        let sh = SignedHead {
            head: h,
            signatures: vec![HeadSignature {
                key: PublicKey::from(&k.verifying_key()),
                sig,
            }],
        };
        assert!(matches!(
            sh.verify(&trust(&[&k])),
            Err(HeadError::BadSignature { .. })
        ));
    }
}
