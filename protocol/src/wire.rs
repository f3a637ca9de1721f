//! Wire messages: the one versioned message enum every fleetcast peer speaks.
//!
//! **API Boundary.** These are the only serde types that cross the network. Each message travels
//! as one frame (`u32` big-endian length, then the postcard encoding) on its own QUIC stream; a
//! frame larger than [`MAX_FRAME`] or one that does not decode gets the sending peer
//! disconnected with the reason. Nothing decoded here is trusted: heads are verified by
//! [`crate::head`], chunks against the signed chunk map, and reports are informational only.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::head::{HeadKind, SignedHead};
use crate::release::{AppName, Digest, MAX_CHUNK_SIZE, Release};

/// QUIC ALPN for protocol version 1.
pub const ALPN: &[u8] = b"fleetcast/1";

/// Largest frame payload: one maximal chunk plus headroom for the envelope.
pub const MAX_FRAME: usize = MAX_CHUNK_SIZE as usize + 64 * 1024;

/// Longest reason string carried in a report.
pub const MAX_REASON: usize = 1024;

/// A node's identity on the mesh: its ed25519 transport key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// First 8 hex characters.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for NodeId {
    type Err = String;
    /// Parses the 64-character hex form produced by `Display`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|e| format!("invalid node id {s:?}: expected 64 hex characters ({e})"))?;
        Ok(NodeId(out))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Everything peers say to each other.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Sent on connect: the seq this node holds per app, so the other side can push what is
    /// missing (a restarted or partitioned node catches up without a new release).
    Summary { heads: Vec<(AppName, u64)> },
    /// A signed head, pushed to a peer.
    Head(Box<SignedHead>),
    /// Ask for one chunk of the content with `digest`.
    GetChunk { digest: Digest, index: u32 },
    /// One chunk; the receiver verifies it against the signed chunk map before use.
    Chunk {
        digest: Digest,
        index: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The peer does not hold that chunk.
    NoChunk { digest: Digest, index: u32 },
    /// What a node did with a head; flows back toward the head's source.
    Report(Report),
    /// Ask for the node's status.
    StatusRequest,
    /// The node's status.
    Status(Box<NodeStatus>),
}

impl Message {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Summary { .. } => "summary",
            Message::Head(_) => "head",
            Message::GetChunk { .. } => "get-chunk",
            Message::Chunk { .. } => "chunk",
            Message::NoChunk { .. } => "no-chunk",
            Message::Report(_) => "report",
            Message::StatusRequest => "status-request",
            Message::Status(_) => "status",
        }
    }
}

/// What one node did with one head.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Report {
    pub node: NodeId,
    pub app: AppName,
    pub seq: u64,
    pub version: semver::Version,
    pub digest: Digest,
    pub outcome: Outcome,
}

/// The outcome of a head on a node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// The release is active and serving.
    Active,
    /// The head was refused (verification or seq rules); nothing changed on the node.
    Rejected(String),
    /// The head verified but the release could not be activated (e.g. not a component); the
    /// previous release keeps serving.
    Failed(String),
    /// The head was older than (or equal to) what the node holds; only the sender hears this.
    Stale { current: u64 },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Active => f.write_str("active"),
            Outcome::Rejected(r) => write!(f, "rejected: {r}"),
            Outcome::Failed(r) => write!(f, "failed: {r}"),
            Outcome::Stale { current } => write!(f, "stale: the node already holds seq {current}"),
        }
    }
}

/// A node's view of itself and of the reports it has heard.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub fleet: String,
    pub apps: Vec<AppStatus>,
    /// Latest report heard per (node, app), including this node's own.
    pub reports: Vec<Report>,
    /// Number of connected peers.
    pub peers: u32,
}

/// One app on one node.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: AppName,
    /// The highest seq accepted and activated.
    pub seq: u64,
    pub kind: HeadKind,
    pub active: Release,
    /// The head that made `active` current (so a publisher can see exactly what was signed).
    pub issued_at_ms: u64,
    /// Past activations, oldest first (bounded).
    pub history: Vec<HistoryEntry>,
    /// Why the most recent head for this app was not activated, if it was not.
    pub last_error: Option<String>,
}

/// One activation in an app's history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub kind: HeadKind,
    pub release: Release,
    pub issued_at_ms: u64,
}

/// Encoding and decoding errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("frame does not decode as a fleetcast/1 message: {0}")]
    Undecodable(String),
}

/// Encodes a message as a frame payload.
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_stdvec(msg).map_err(|e| WireError::Undecodable(e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            max: MAX_FRAME,
        });
    }
    Ok(bytes)
}

/// Decodes a frame payload. Trailing bytes are an error: a frame is exactly one message.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            max: MAX_FRAME,
        });
    }
    match postcard::take_from_bytes::<Message>(bytes) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(WireError::Undecodable(format!(
            "{} trailing bytes after the message",
            rest.len()
        ))),
        Err(e) => Err(WireError::Undecodable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::tests::{head, key};

    #[test]
    fn messages_round_trip() {
        let sh = head("a", 3, &[1u8; 10_000]).sign(&key(1));
        let msgs = [
            Message::Summary {
                heads: vec![(AppName::new("a").unwrap(), 3)],
            },
            Message::Head(Box::new(sh.clone())),
            Message::GetChunk {
                digest: sh.head.release.digest,
                index: 2,
            },
            Message::Chunk {
                digest: sh.head.release.digest,
                index: 0,
                data: vec![9; 4096],
            },
            Message::StatusRequest,
        ];
        for m in msgs {
            assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let big = Message::Chunk {
            digest: Digest([0; 32]),
            index: 0,
            data: vec![0; MAX_FRAME],
        };
        assert!(matches!(encode(&big), Err(WireError::TooLarge { .. })));
        let err = decode(&vec![0u8; MAX_FRAME + 1]).unwrap_err();
        assert!(err.to_string().contains("exceeds the maximum"), "{err}");
        // A maximal chunk fits.
        let max_chunk = Message::Chunk {
            digest: Digest([0; 32]),
            index: u32::MAX,
            data: vec![0; MAX_CHUNK_SIZE as usize],
        };
        assert!(encode(&max_chunk).is_ok());
    }

    #[test]
    fn garbage_and_trailing_bytes_do_not_decode() {
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff]),
            Err(WireError::Undecodable(_))
        ));
        let mut bytes = encode(&Message::StatusRequest).unwrap();
        bytes.push(0);
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        // Truncated frames never decode.
        let full = encode(&Message::Head(Box::new(head("a", 1, b"x").sign(&key(1))))).unwrap();
        for n in 0..full.len() {
            assert!(decode(&full[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }
}
