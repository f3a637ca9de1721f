//! Wire messages: the one versioned message enum every fleetcast peer speaks, nested per
//! layer ([`MembershipMsg`], [`BroadcastMsg`], [`ContentMsg`], [`TallyMsg`], [`CensusMsg`], and
//! the status messages for clients), so each layer handles its own enum and no layer lists
//! another's.
//!
//! **API Boundary.** These are the only serde types that cross the network. The transport crate
//! (`fleetcast-net`, its `codec`) owns the framing, the frame bound and the protocol version
//! (ALPN): each message travels as the postcard encoding of one [`Message`] in its own frame.
//! Nothing decoded is trusted: heads are verified by [`crate::head`], chunks against the signed
//! chunk map, and reports are informational only.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::head::{HeadKind, SignedHead};
use crate::release::{AppName, Digest, Release};
use crate::rollout::Plan;
use crate::trust::TrustStatus;

mod trust;
pub use trust::{Position, TrustMsg};
mod tally;
pub use tally::{MAX_TALLY_SAMPLES, Tally};
mod census;
pub use census::{
    Census, CensusEntry, CensusMsg, Focus, MAX_CENSUS_ENTRIES, MAX_CENSUS_SAMPLES, MAX_CENSUS_WHY,
    Missing, ServeState,
};

/// Longest reason string carried in a report.
pub const MAX_REASON: usize = 1024;

/// A node's identity on the mesh: its ed25519 transport key.
/// 64 hex characters in human-readable formats (JSON), 32 bytes in postcard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hexser::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::hexser::deserialize(d).map(NodeId)
    }
}

impl NodeId {
    /// First 8 hex characters.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A string that is not a node id ([`NodeId`]'s `FromStr`): operator input, nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid node id {input:?}: expected 64 hex characters ({source})")]
pub struct ParseNodeIdError {
    /// The text that was given.
    pub input: String,
    pub source: hex::FromHexError,
}

impl std::str::FromStr for NodeId {
    type Err = ParseNodeIdError;
    /// Parses the 64-character hex form produced by `Display`.
    fn from_str(s: &str) -> Result<Self, ParseNodeIdError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|source| ParseNodeIdError {
            input: s.to_string(),
            source,
        })?;
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

/// Where a node can be dialled: its identity and a socket address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node: NodeId,
    pub addr: SocketAddr,
}

/// Chunk bytes: a cheaply cloneable shared buffer (a chunk is verified once and then served
/// to many peers without copying). Serialised as a plain byte string.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub bytes::Bytes);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(v.into())
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buf = serde_bytes::ByteBuf::deserialize(d)?;
        Ok(Payload(buf.into_vec().into()))
    }
}

/// A lazy announcement (Plumtree IHAVE): "I hold this head; I got it `round` hops from where
/// it entered the mesh".
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Announce {
    pub app: AppName,
    pub seq: u64,
    pub id: Digest,
    pub round: u16,
    /// The epoch of the head (heads are ordered by (epoch, seq)).
    pub epoch: u64,
}

impl Announce {
    /// Where the announced head sits in its app's order.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

/// Largest number of peers carried in one membership message.
pub const MAX_PEERS_PER_MESSAGE: usize = 64;
/// Everything peers say to each other: one enum per layer, each handled by that layer alone.
///
/// Membership (HyParView): [`MembershipMsg`]. Broadcast of heads (Plumtree) and anti-entropy:
/// [`BroadcastMsg`]. Content (swarming): [`ContentMsg`]. Fleet counts: [`TallyMsg`]. Counting
/// the live fleet on demand: [`CensusMsg`]. Status for clients and publishers: `Report`,
/// `StatusRequest`, `Status`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum Message {
    Membership(MembershipMsg),
    Broadcast(BroadcastMsg),
    Content(ContentMsg),
    Tally(TallyMsg),
    /// What one node did with a head (sent to the sender of a head that was refused or stale,
    /// and to the publisher that pushed it).
    Report(Report),
    /// Ask for the node's status.
    StatusRequest,
    /// The node's status.
    Status(Box<NodeStatus>),
    /// Counting the live fleet (an echo wave over the active view).
    Census(CensusMsg),
    /// The fleet root's chain of versions.
    Trust(TrustMsg),
}

/// Membership (HyParView) messages: joins, neighbour requests, passive-view shuffles.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum MembershipMsg {
    /// Ask to join the mesh through the receiver. `addr` is where the sender can be dialled
    /// (when absent, the address the connection came from).
    Join { addr: Option<SocketAddr> },
    /// A join travelling a random walk.
    ForwardJoin { peer: PeerInfo, ttl: u8 },
    /// Ask the receiver to take the sender into its active view.
    Neighbor {
        high_priority: bool,
        addr: Option<SocketAddr>,
    },
    /// The answer to `Neighbor`.
    NeighborReply { accepted: bool },
    /// Passive-view exchange.
    Shuffle { peers: Vec<PeerInfo> },
    /// The answer to `Shuffle`.
    ShuffleReply { peers: Vec<PeerInfo> },
}

/// Broadcast of heads (Plumtree) and anti-entropy.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum BroadcastMsg {
    /// A signed head pushed directly (by a publisher, or as an anti-entropy repair). The
    /// receiver broadcasts it on as if it had entered the mesh there.
    Head(Box<SignedHead>),
    /// A signed head pushed along the broadcast tree; `round` is the sender's hop count from
    /// where the head entered the mesh.
    Gossip { head: Box<SignedHead>, round: u16 },
    /// Lazy announcements of heads the sender holds.
    IHave(Vec<Announce>),
    /// "Send me that head, and keep pushing to me eagerly."
    Graft { app: AppName, seq: u64, id: Digest },
    /// "Stop pushing heads to me eagerly; announcements are enough."
    Prune,
    /// Anti-entropy: the position (epoch, seq) this node holds per app and the version of
    /// the fleet root it holds. Sent on connect and periodically to a random neighbour; the
    /// receiver pushes the heads the sender lacks (and the roots after `root`, or asks for
    /// the ones it lacks), and answers with its own summary (with `reply` set, which is never
    /// answered) when the sender holds something newer.
    Summary {
        heads: Vec<(AppName, Position)>,
        reply: bool,
        /// The sender's fleet root version (0: no root).
        root: u64,
    },
}

/// Content (swarming) messages: chunk bitmaps, requests and chunks.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum ContentMsg {
    /// Which chunks of `digest` the sender holds (a bitmap, bit i = chunk i). `want`: the
    /// sender is fetching it and asks to hear of chunks as the receiver gets them.
    Have {
        digest: Digest,
        #[serde(with = "serde_bytes")]
        bits: Vec<u8>,
        want: bool,
    },
    /// The sender has just verified chunk `index` of `digest`.
    HaveChunk { digest: Digest, index: u32 },
    /// Ask for one chunk of the content with `digest`.
    GetChunk { digest: Digest, index: u32 },
    /// One chunk; the receiver verifies it against the signed chunk map before use.
    Chunk {
        digest: Digest,
        index: u32,
        data: Payload,
    },
    /// The peer does not hold that chunk.
    NoChunk { digest: Digest, index: u32 },
}

/// Fleet counts.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum TallyMsg {
    /// The sender's subtree totals for one head; flows up the broadcast tree.
    Subtree(Tally),
    /// The whole fleet's totals for one head, as counted where the head entered the mesh;
    /// flows down the broadcast tree once the count has settled (and to a neighbour in an
    /// anti-entropy exchange), so every node can say how many agents run which seq. `version`
    /// increases with each count the root sends for the head; older ones are ignored.
    Fleet { tally: Tally, version: u32 },
}

impl From<MembershipMsg> for Message {
    fn from(m: MembershipMsg) -> Self {
        Message::Membership(m)
    }
}

impl From<BroadcastMsg> for Message {
    fn from(m: BroadcastMsg) -> Self {
        Message::Broadcast(m)
    }
}

impl From<ContentMsg> for Message {
    fn from(m: ContentMsg) -> Self {
        Message::Content(m)
    }
}

impl From<CensusMsg> for Message {
    fn from(m: CensusMsg) -> Self {
        Message::Census(m)
    }
}

impl From<TallyMsg> for Message {
    fn from(m: TallyMsg) -> Self {
        Message::Tally(m)
    }
}

impl Message {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Membership(m) => match m {
                MembershipMsg::Join { .. } => "join",
                MembershipMsg::ForwardJoin { .. } => "forward-join",
                MembershipMsg::Neighbor { .. } => "neighbor",
                MembershipMsg::NeighborReply { .. } => "neighbor-reply",
                MembershipMsg::Shuffle { .. } => "shuffle",
                MembershipMsg::ShuffleReply { .. } => "shuffle-reply",
            },
            Message::Broadcast(m) => match m {
                BroadcastMsg::Head(_) => "head",
                BroadcastMsg::Gossip { .. } => "gossip",
                BroadcastMsg::IHave(_) => "ihave",
                BroadcastMsg::Graft { .. } => "graft",
                BroadcastMsg::Prune => "prune",
                BroadcastMsg::Summary { .. } => "summary",
            },
            Message::Content(m) => match m {
                ContentMsg::Have { .. } => "have",
                ContentMsg::HaveChunk { .. } => "have-chunk",
                ContentMsg::GetChunk { .. } => "get-chunk",
                ContentMsg::Chunk { .. } => "chunk",
                ContentMsg::NoChunk { .. } => "no-chunk",
            },
            Message::Tally(m) => match m {
                TallyMsg::Subtree(_) => "tally",
                TallyMsg::Fleet { .. } => "fleet-tally",
            },
            Message::Report(_) => "report",
            Message::StatusRequest => "status-request",
            Message::Status(_) => "status",
            Message::Census(m) => match m {
                CensusMsg::Query { .. } => "census-query",
                CensusMsg::Reply { .. } => "census-reply",
            },
            Message::Trust(m) => match m {
                TrustMsg::Roots(_) => "roots",
                TrustMsg::Want { .. } => "roots-want",
            },
        }
    }

    /// Whether this message carries release content (for traffic accounting).
    pub fn is_payload(&self) -> bool {
        matches!(self, Message::Content(ContentMsg::Chunk { .. }))
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
    /// The head's wave leaves this node out: the release is stored and compiled, ready to
    /// swap; the release before keeps serving.
    Prefetched,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Active => f.write_str("active"),
            Outcome::Rejected(r) => write!(f, "rejected: {r}"),
            Outcome::Failed(r) => write!(f, "failed: {r}"),
            Outcome::Stale { current } => write!(f, "stale: the node already holds seq {current}"),
            Outcome::Prefetched => f.write_str("prefetched (outside the wave)"),
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
    /// Open links: QUIC connections of any role (neighbours, probes, joins in progress and
    /// clients such as a publisher or a status query).
    pub links: u32,
    /// Membership: the active view (the connections kept), and the size of the passive view.
    pub active_view: Vec<PeerInfo>,
    pub passive_view: u32,
    /// This node's subtree totals per head it holds (the whole fleet, at the node a release
    /// entered the mesh through).
    pub tallies: Vec<Tally>,
    /// The whole fleet's totals per head, as last counted where the head entered the mesh and
    /// sent down the broadcast tree once the count settled (absent until then).
    pub fleet_tallies: Vec<Tally>,
    /// The highest position (epoch, seq) this node has accepted per app: activated, still
    /// fetching, or verified but failed to activate. A publisher signs above it (the same seq
    /// twice is a conflict).
    pub seqs: Vec<(AppName, Position)>,
    /// The fleet root this node holds: version, epoch, expiry.
    pub trust: TrustStatus,
    /// What the node's runtime says of each app (trial, limits, since when it serves). The
    /// protocol does not know it: the agent's shell fills it in before the status is sent.
    pub runtime: Vec<AppRuntime>,
    /// The node's wall clock when it answered (unix ms; 0 when unknown), so a reader can turn
    /// `since_ms` and `issued_at_ms` into ages without trusting its own clock to agree.
    pub now_ms: u64,
}

/// What an agent's runtime says of one app: filled by the agent, not by the protocol.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AppRuntime {
    pub app: AppName,
    /// `committed`, `trial`, `reverted`, `local-override`, `activating` or `none`.
    pub state: String,
    /// The release in the app's slot (what answers requests), if any, and since when (unix ms).
    pub serving: Option<RuntimeRelease>,
    pub since_ms: u64,
    /// The last release that passed its trial.
    pub committed: Option<RuntimeRelease>,
    /// The trial in progress.
    pub trial: Option<TrialProgress>,
    /// The limits the serving release runs under (the agent's, tightened by the release).
    pub limits: Option<RuntimeLimits>,
    /// Releases kept compiled, newest first (a rollback among them never compiles).
    pub cached: Vec<RuntimeRelease>,
}

/// A release as the runtime names it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RuntimeRelease {
    pub version: semver::Version,
    pub digest: Digest,
    /// The seq of the head it came with (0 when not known).
    pub seq: u64,
}

/// A trial in progress: it passes after `requests` requests or `secs` seconds, whichever first.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TrialProgress {
    pub version: semver::Version,
    pub seq: u64,
    pub elapsed_ms: u64,
    pub requests: u64,
    pub secs: u64,
    /// Requests seen so far, and how many of them failed (trap, timeout or 5xx).
    pub seen: u64,
    pub failed: u64,
}

/// The limits one release runs under on one agent.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RuntimeLimits {
    pub max_memory_mib: u64,
    pub request_timeout_ms: u64,
    pub max_concurrent: u32,
    pub max_body_bytes: u64,
    pub fuel: Option<u64>,
    pub health_path: Option<String>,
}

/// One app on one node.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: AppName,
    /// The highest seq accepted and activated (within `epoch`).
    pub seq: u64,
    /// The epoch of the head in force.
    pub epoch: u64,
    pub kind: HeadKind,
    pub active: Release,
    /// The head that made `active` current (so a publisher can see exactly what was signed).
    pub issued_at_ms: u64,
    /// Past activations, oldest first (bounded).
    pub history: Vec<HistoryEntry>,
    /// Why the most recent head for this app was not activated, or was reverted, if so.
    pub last_error: Option<String>,
    /// The release actually serving when it is not `active` (the node reverted to its last
    /// good release, or an operator overrode it locally); `None` when `active` serves.
    pub serving: Option<Release>,
    /// `serving` was chosen by an operator on the node (`fleetcast-agent rollback`).
    pub local_override: bool,
    /// The rollout plan of the head in force, if it is a staged release.
    pub plan: Option<Plan>,
    /// A newer head whose wave leaves this node out: its release is prefetched here, `active`
    /// keeps serving.
    pub staged: Option<Staged>,
}

/// A head held but not run here: its wave leaves this node out ([`AppStatus::staged`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Staged {
    pub seq: u64,
    pub epoch: u64,
    pub kind: HeadKind,
    pub release: Release,
    pub plan: Option<Plan>,
    pub issued_at_ms: u64,
}

/// One activation in an app's history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub kind: HeadKind,
    pub release: Release,
    pub issued_at_ms: u64,
}

/// The size of `msg`'s postcard encoding, computed without encoding it (the simulator's
/// message sizes; the transport's frame is exactly this encoding).
pub fn encoded_len(msg: &Message) -> usize {
    postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .expect("every message serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::tests::{head, key};

    #[test]
    fn messages_round_trip() {
        let sh = head("a", 3, &[1u8; 10_000]).sign(&key(1));
        let msgs = [
            BroadcastMsg::Summary {
                heads: vec![(AppName::new("a").unwrap(), Position { epoch: 2, seq: 3 })],
                reply: false,
                root: 4,
            }
            .into(),
            BroadcastMsg::Gossip {
                head: Box::new(sh.clone()),
                round: 7,
            }
            .into(),
            MembershipMsg::ForwardJoin {
                peer: PeerInfo {
                    node: NodeId([3; 32]),
                    addr: "127.0.0.1:9".parse().unwrap(),
                },
                ttl: 6,
            }
            .into(),
            ContentMsg::Have {
                digest: sh.head.release.digest,
                bits: vec![0b101],
                want: true,
            }
            .into(),
            BroadcastMsg::Head(Box::new(sh.clone())).into(),
            ContentMsg::GetChunk {
                digest: sh.head.release.digest,
                index: 2,
            }
            .into(),
            ContentMsg::Chunk {
                digest: sh.head.release.digest,
                index: 0,
                data: vec![9; 4096].into(),
            }
            .into(),
            TallyMsg::Fleet {
                tally: Tally::default(),
                version: 2,
            }
            .into(),
            Message::StatusRequest,
            CensusMsg::Query {
                id: 7,
                budget_ms: 5_000,
                focus: Some(Focus {
                    app: AppName::new("a").unwrap(),
                    seq: 3,
                }),
            }
            .into(),
            CensusMsg::Reply {
                id: 7,
                count: Some(Census {
                    agents: 3,
                    entries: vec![census_entry(ServeState::Active, 3)],
                    ..Census::default()
                }),
            }
            .into(),
        ];
        for m in msgs {
            let bytes = postcard::to_stdvec(&m).unwrap();
            assert_eq!(encoded_len(&m), bytes.len(), "{}", m.kind());
            assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), m);
        }
    }

    fn census_entry(state: ServeState, agents: u32) -> CensusEntry {
        CensusEntry {
            app: AppName::new("a").unwrap(),
            seq: 3,
            version: "1.2.3".parse().unwrap(),
            digest: Digest::of(b"a"),
            state,
            agents,
        }
    }

    #[test]
    fn census_counts_add_up_and_entries_merge_by_key() {
        let mut total = Census {
            agents: 2,
            entries: vec![census_entry(ServeState::Active, 2)],
            ..Census::default()
        };
        let child = Census {
            agents: 5,
            unanswered: 1,
            entries: vec![
                census_entry(ServeState::Active, 3),
                census_entry(ServeState::Reverted, 2),
            ],
            focus_active: 3,
            missing: vec![],
        };
        total.add(&child);
        assert_eq!(
            (total.agents, total.unanswered, total.focus_active),
            (7, 1, 3)
        );
        assert_eq!(
            total.entries,
            vec![
                census_entry(ServeState::Active, 5),
                census_entry(ServeState::Reverted, 2)
            ],
            "same key summed, another state apart"
        );
        let saturated = Census {
            agents: u32::MAX,
            ..Census::default()
        };
        total.add(&saturated);
        assert_eq!(total.agents, u32::MAX);
    }

    #[test]
    fn messages_are_nested_per_layer_and_named_for_logs() {
        let prune: Message = BroadcastMsg::Prune.into();
        assert_eq!(prune.kind(), "prune");
        assert_eq!(
            Message::from(TallyMsg::Subtree(Tally::default())).kind(),
            "tally"
        );
        assert!(!prune.is_payload());
        // The layer's tag comes first on the wire: an older, flat message does not decode as
        // the same thing.
        let bytes = postcard::to_stdvec(&prune).unwrap();
        assert_eq!(
            bytes,
            vec![1, 4],
            "broadcast is variant 1, prune its variant 4"
        );
    }

    #[test]
    fn node_ids_parse_from_their_display_form_only() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        let err = "zz".parse::<NodeId>().unwrap_err();
        assert_eq!(err.input, "zz");
        assert!(
            err.to_string()
                .starts_with("invalid node id \"zz\": expected 64 hex characters ("),
            "{err}"
        );
    }
}
