//! Node certificates: "node N belongs to fleet F until T", signed by the root's `nodes` role.
//!
//! An agent presents its certificate when it connects (the TLS handshake proves it holds the
//! key of the node id the certificate names) and checks the peer's; see
//! [`super::Trust::admit`].

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::head::{HeadSignature, PublicKey};
use crate::wire::NodeId;

/// Domain separation for node certificate signatures.
pub const CERT_DOMAIN: &[u8] = b"fleetcast/node-cert/v1\0";

/// What a certificate states.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeCert {
    pub fleet: String,
    pub node: NodeId,
    /// Unix ms.
    pub issued_ms: u64,
    /// Unix ms.
    pub expires_ms: u64,
}

/// A certificate with its signatures (by keys of the `nodes` role).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedNodeCert {
    pub cert: NodeCert,
    pub signatures: Vec<HeadSignature>,
}

impl NodeCert {
    /// The exact bytes a certificate signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = CERT_DOMAIN.to_vec();
        out.extend(postcard::to_stdvec(self).expect("a certificate always encodes"));
        out
    }

    pub fn sign(self, key: &SigningKey) -> SignedNodeCert {
        let mut s = SignedNodeCert {
            cert: self,
            signatures: Vec::new(),
        };
        s.add_signature(key);
        s
    }
}

impl SignedNodeCert {
    pub fn add_signature(&mut self, key: &SigningKey) {
        let pk = PublicKey::from(&key.verifying_key());
        self.signatures.retain(|s| s.key != pk);
        let sig = key.sign(&self.cert.signing_bytes());
        self.signatures.push(HeadSignature { key: pk, sig });
    }
}
