//! The node state machine: membership, broadcast of heads, swarming transfer, anti-entropy and
//! fleet tallies, behind one sans-IO interface.
//!
//! Driven quinn-style: feed it [`Input`]s with [`Node::handle`], then drain [`Node::poll_output`]
//! until it returns `None`, and call `handle(now, Input::Timeout)` at [`Node::poll_timeout`].
//! Time only ever arrives as an argument and randomness from the seed in [`NodeConfig`]; the
//! node reads no clock, socket, file or global RNG.
//!
//! The layers:
//! - **Membership** ([`crate::membership`], HyParView): which connections are kept (the active
//!   view) and how they are repaired.
//! - **Broadcast** (Plumtree): a head is pushed eagerly along a spanning tree of the active
//!   view and announced lazily (`IHave`) on the other links. A duplicate prunes the link it came
//!   on out of the tree; an announced head that does not arrive in time is grafted. Heads are
//!   relayed as soon as they verify, before their content arrives, so the head runs ahead of
//!   the bytes.
//! - **Transfer** ([`crate::swarm`]): the content is fetched chunk by chunk from every
//!   neighbour that announces it, verified against the signed chunk map, and served on at once.
//!   Requests this node serves wait in a queue for one of a few upload slots (a slot frees when
//!   the receiver acknowledges the chunk with `HaveChunk`); the least-served chunk goes first,
//!   so a node that alone holds fresh chunks hands out distinct ones before copies.
//! - **Anti-entropy**: on every new neighbour and periodically with a random one, nodes swap a
//!   `Summary` (app → seq) and push the heads the other lacks.
//! - **Tallies**: each node sends its subtree's totals (active / failed / rejected per head) to
//!   the neighbour it got the head from, coalesced per `tally_interval` (a node whose parent is
//!   gone re-parents to a neighbour of lower rank; with none, it announces itself poisoned so
//!   its subtree re-parents elsewhere, then ranks below any neighbour: see `HeadState::rank`);
//!   the node a release entered through (the root) holds the fleet's totals and passes them to
//!   the publisher;
//!   once its count has been still for `FLEET_SETTLE` it sends it down the tree
//!   (`FleetTally`), so every node's status can say how many agents run which seq. Sends are
//!   paced by a token bucket, so a release costs O(N) tally messages.
//!
//! **Invariants:** the seq held for an app never decreases; nothing reaches `Activate` that is
//! not signed by a trusted key and fully verified; at most one activation per app is in flight;
//! a head is relayed only after it verified.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::head::{HeadError, SignedHead, TrustPolicy};
use crate::membership::{MOut, Membership, MembershipConfig};
use crate::release::{AppName, Digest, Release};
use crate::rng::Rng;
use crate::swarm::{ChunkOutcome, SwarmConfig, Transfer, bits_full};
use crate::wire::{
    Announce, AppStatus, HistoryEntry, MAX_REASON, Message, NodeId, NodeStatus, Outcome, Payload,
    Report, Tally,
};

mod activation;
mod broadcast;
mod content;
mod serve;
mod tally;

/// A peer handle chosen by the IO shell (a connection id, an index in a simulator…).
pub trait Peer: Copy + Ord + fmt::Debug {}
impl<T: Copy + Ord + fmt::Debug> Peer for T {}

/// Node tuning. [`NodeConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node: NodeId,
    pub trust: TrustPolicy,
    /// Seed of the node's random choices (peer sampling, chunk order).
    pub seed: u64,
    pub membership: MembershipConfig,
    pub swarm: SwarmConfig,
    /// How long an announced head may take to arrive by eager push before it is grafted.
    pub ihave_timeout: Duration,
    /// How often to run anti-entropy with a random neighbour.
    pub anti_entropy_interval: Duration,
    /// Tallies are sent upstream at most this often.
    pub tally_interval: Duration,
    /// History entries kept per app.
    pub history_limit: usize,
}

impl NodeConfig {
    pub fn new(node: NodeId, trust: TrustPolicy) -> Self {
        let seed = u64::from_le_bytes(node.0[..8].try_into().expect("8 bytes"));
        NodeConfig {
            node,
            trust,
            seed,
            membership: MembershipConfig::default(),
            swarm: SwarmConfig {
                chunk_timeout: Duration::from_secs(10),
                max_inflight: 16,
                per_peer: 4,
                retry_after: Duration::from_secs(1),
            },
            ihave_timeout: Duration::from_millis(400),
            anti_entropy_interval: Duration::from_secs(10),
            tally_interval: Duration::from_millis(25),
            history_limit: 32,
        }
    }
}

/// What the store keeps per app: the head in force and the history that led to it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AppRecord {
    pub head: SignedHead,
    /// Activations, oldest first; the last entry is `head`.
    pub history: Vec<HistoryEntry>,
}

impl AppRecord {
    /// The record after `head` is activated on top of `prev`.
    pub fn advance(prev: Option<&AppRecord>, head: &SignedHead, history_limit: usize) -> Self {
        let mut history = prev.map(|r| r.history.clone()).unwrap_or_default();
        history.push(HistoryEntry {
            seq: head.head.seq,
            kind: head.head.kind,
            release: head.head.release.clone(),
            issued_at_ms: head.head.issued_at_ms,
        });
        let excess = history.len().saturating_sub(history_limit.max(1));
        history.drain(..excess);
        AppRecord {
            head: head.clone(),
            history,
        }
    }

    /// The status view of this record.
    pub fn status(&self, last_error: Option<String>, serving: Option<&Serving>) -> AppStatus {
        let h = &self.head.head;
        AppStatus {
            app: h.app.clone(),
            seq: h.seq,
            kind: h.kind,
            active: h.release.clone(),
            issued_at_ms: h.issued_at_ms,
            history: self.history.clone(),
            last_error,
            serving: serving.and_then(|s| s.release.clone()),
            local_override: serving.is_some_and(|s| s.local_override),
        }
    }
}

/// Inputs to [`Node::handle`].
#[derive(Debug)]
pub enum Input<P> {
    /// A connection to `P` is up: `node` is the peer's authenticated id, `addr` the address
    /// the connection runs to, `outbound` whether this side dialled it.
    PeerUp {
        peer: P,
        node: NodeId,
        addr: SocketAddr,
        outbound: bool,
    },
    /// The connection to `P` is gone.
    PeerDown(P),
    /// An [`Output::Dial`] failed.
    DialFailed(SocketAddr),
    /// `P` sent a message.
    Message(P, Message),
    /// The shell finished an [`Output::Activate`]: `Ok` once the record is durable and the
    /// release serves; `Err` with the reason if it could not be activated (nothing was stored).
    Activated {
        app: AppName,
        seq: u64,
        result: Result<(), String>,
    },
    /// The release of `seq` served, then failed on this node (its trial: traps, timeouts,
    /// errors; or the agent restarted during the trial) and the shell went back to `serving`
    /// (`None`: nothing serves). The seq stays held: the release is not activated again here
    /// unless a newer head arrives. Counted as failed in the fleet's tallies.
    Reverted {
        app: AppName,
        seq: u64,
        reason: String,
        serving: Option<Release>,
    },
    /// An operator on this node made `release` serve in place of the head's (`None`: the
    /// override is over and the head's release serves). Shown in status; not a new head.
    LocalOverride {
        app: AppName,
        release: Option<Release>,
    },
    /// The time from [`Node::poll_timeout`] has come.
    Timeout,
}

/// What serves for an app when it is not the release of the head in force.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Serving {
    pub release: Option<Release>,
    pub local_override: bool,
}

/// Work for the IO shell, drained with [`Node::poll_output`].
#[derive(Debug)]
#[must_use]
pub enum Output<P> {
    /// Send `msg` to `to` (drop it if the peer is gone).
    Send { to: P, msg: Message },
    /// Read chunk `index` of stored content `digest` and send it to `to` as
    /// [`Message::Chunk`] (or [`Message::NoChunk`] if the store no longer has it).
    ServeChunk { to: P, digest: Digest, index: u32 },
    /// Compile `head`'s release (from `content`, or from the store when `None`), persist the
    /// content and `record` durably, swap it in, then feed back [`Input::Activated`].
    Activate(Box<Activation>),
    /// Open a connection to `addr`; report [`Input::PeerUp`] (outbound) or
    /// [`Input::DialFailed`].
    Dial(SocketAddr),
    /// Close the connection to `peer`, telling it why.
    Disconnect { peer: P, reason: String },
    /// A newer head is waiting behind the activation of `seq`: the shell may stop it early
    /// (it still feeds back [`Input::Activated`], `Err` if it stopped it).
    CancelActivation { app: AppName, seq: u64 },
    /// Something worth logging happened.
    Event(Event),
}

/// An activation request.
#[derive(Debug)]
pub struct Activation {
    pub head: SignedHead,
    /// The verified content, when it was just fetched; `None` when it is already stored.
    pub content: Option<Vec<u8>>,
    /// What to persist for the app once the release is compiled.
    pub record: AppRecord,
}

/// Notable happenings, for logs and tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Accepted {
        app: AppName,
        seq: u64,
        version: semver::Version,
        cached: bool,
    },
    Rejected {
        app: AppName,
        seq: u64,
        reason: String,
    },
    Activated {
        app: AppName,
        seq: u64,
        version: semver::Version,
    },
    ActivationFailed {
        app: AppName,
        seq: u64,
        reason: String,
    },
    /// A peer entered or left the active view.
    Neighbor { node: NodeId, up: bool },
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Fetching,
    Activating,
}

#[derive(Debug)]
struct Pending {
    head: SignedHead,
    stage: Stage,
    /// A newer head that arrived while this one was activating.
    next: Option<SignedHead>,
}

/// Broadcast and tally state of the newest head accepted for one app.
#[derive(Debug)]
struct HeadState<P> {
    head: SignedHead,
    id: Digest,
    /// Hops from where the head entered the mesh.
    round: u16,
    /// This node's place in the tally tree: `round` at first, the new parent's rank + 1 after
    /// re-parenting, [`POISONED`] while it has no parent. Tallies only go to a neighbour with a
    /// smaller (rank, node id), so they never loop.
    rank: u16,
    /// When this node last announced itself [`POISONED`] (its parent gone, none below it).
    poisoned_at: Option<Instant>,
    /// Where tallies go: the peer the head came from (re-chosen if it goes away).
    upstream: Option<P>,
    /// Neighbours known to hold the head, with their round.
    offers: BTreeMap<P, u16>,
    own: Option<Tally>,
    children: BTreeMap<P, Tally>,
    dirty: bool,
    /// The whole fleet's totals: counted here at the root (round 0), else as heard from the
    /// root down the tree.
    fleet: Option<Tally>,
    /// At the root: when to send the settled count down the tree.
    fleet_due: Option<Instant>,
    /// The root's number for `fleet` (it counts up with each count the root sends).
    fleet_version: u32,
    /// The head entered the mesh here (pushed by a publisher): this node counts the fleet.
    root: bool,
}

impl<P> HeadState<P> {
    fn seq(&self) -> u64 {
        self.head.head.seq
    }

    fn total(&self) -> Tally {
        let mut t = Tally {
            app: Some(self.head.head.app.clone()),
            seq: self.seq(),
            ..Tally::default()
        };
        if let Some(own) = &self.own {
            t.add(own);
        }
        for c in self.children.values() {
            t.add(c);
        }
        t
    }
}

/// A head announced by `IHave` but not received yet.
#[derive(Debug)]
struct Missing<P> {
    app: AppName,
    seq: u64,
    announcers: VecDeque<P>,
    at: Instant,
}

/// Early `Have`s: announcements for content this node has no transfer for yet.
const MAX_EARLY_DIGESTS: usize = 16;
/// Announcements accepted from one `IHave`.
const MAX_ANNOUNCES: usize = 64;
/// How long the root's count must be still before it is sent down the tree.
const FLEET_SETTLE: Duration = Duration::from_millis(500);
/// Tally sends a node may make back to back before pacing sets in.
const TALLY_BURST: f64 = 4.0;
/// A probed peer that lacks a head held this long is not reached by this node's overlay.
const SPLIT_EVIDENCE: Duration = Duration::from_secs(5);
/// The tally rank of a node that lost its parent and has no neighbour ranked below it: its
/// subtree re-parents elsewhere first (none of them will pick it), then, after
/// [`POISON_HOLD`], it takes any neighbour with a finite rank as its parent.
const POISONED: u16 = u16::MAX;
/// How long a poisoned node waits for its subtree to hear of it before re-parenting upward
/// in rank (long enough for the poison to cross many hops, so it does not adopt a descendant).
const POISON_HOLD: Duration = Duration::from_millis(1000);
/// Apps accepted from one `Summary`.
const MAX_SUMMARY: usize = 1024;
/// Chunks this node has sent and not yet seen acknowledged (the receiver's `HaveChunk`): about
/// one bandwidth-delay product of a WAN link, so the upload stays busy while the choice of
/// what to send next is made late, when it is best informed.
const SERVE_SLOTS: usize = 6;
/// A sent chunk not acknowledged by then frees its slot anyway.
const SERVE_SLOT_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunk requests queued per peer (beyond that they are refused).
const MAX_QUEUED_PER_PEER: usize = 64;

/// A chunk request waiting for an upload slot.
#[derive(Debug, Clone, Copy)]
struct Queued<P> {
    to: P,
    digest: Digest,
    index: u32,
    /// Arrival order, for ties.
    order: u64,
}

/// The node state machine. See the module docs.
#[derive(Debug)]
pub struct Node<P: Peer> {
    cfg: NodeConfig,
    rng: Rng,
    members: Membership<P>,
    apps: BTreeMap<AppName, AppRecord>,
    errors: BTreeMap<AppName, String>,
    /// Apps whose serving release is not their head's (reverted, or a local override).
    overrides: BTreeMap<AppName, Serving>,
    /// Complete, verified content held in the store, with its chunk count.
    blobs: BTreeMap<Digest, u32>,
    pending: BTreeMap<AppName, Pending>,
    transfers: BTreeMap<Digest, Transfer<P>>,
    early_haves: BTreeMap<Digest, BTreeMap<P, (Vec<u8>, bool)>>,
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    heads: BTreeMap<AppName, HeadState<P>>,
    missing: BTreeMap<Digest, Missing<P>>,
    reports: BTreeMap<AppName, Report>,
    next_anti_entropy: Option<Instant>,
    next_tally: Option<Instant>,
    /// When the newest head of each app was accepted (absent: restored at start).
    accepted_at: BTreeMap<AppName, Instant>,
    /// Tally sends are paced by a token bucket: up to [`TALLY_BURST`] go out at once (so the
    /// few changes of a small subtree travel up the tree without delay), then one per
    /// `tally_interval` (so a node sends O(1 + duration / interval) tallies per release).
    tally_tokens: f64,
    /// Version of the last tally sent (see [`Tally::version`]).
    tally_version: u64,
    tally_refilled: Instant,
    /// Chunk requests waiting for an upload slot; served least-served chunk first, so a node
    /// that is the only holder of fresh chunks hands out distinct ones before copies
    /// (super-seeding) and its neighbours trade the rest among themselves.
    serve_queue: Vec<Queued<P>>,
    serve_order: u64,
    /// Chunks sent and not yet acknowledged, with when they were sent.
    serving: BTreeMap<(P, Digest, u32), Instant>,
    /// How often each chunk has been sent by this node.
    served: BTreeMap<(Digest, u32), u32>,
    out: VecDeque<Output<P>>,
}

impl<P: Peer> Node<P> {
    /// A node that holds `records` (already verified by the caller: disk is untrusted) and the
    /// complete, verified content `blobs`. It starts joining the mesh through its contacts.
    pub fn new(
        now: Instant,
        cfg: NodeConfig,
        records: impl IntoIterator<Item = AppRecord>,
        blobs: impl IntoIterator<Item = Digest>,
    ) -> Self {
        let apps: BTreeMap<AppName, AppRecord> = records
            .into_iter()
            .map(|r| (r.head.head.app.clone(), r))
            .collect();
        let held: BTreeSet<Digest> = blobs.into_iter().collect();
        let mut blob_chunks = BTreeMap::new();
        for r in apps.values() {
            let releases = r.history.iter().map(|h| &h.release);
            for rel in releases.chain([&r.head.head.release]) {
                if held.contains(&rel.digest) {
                    blob_chunks.insert(rel.digest, rel.chunks.len() as u32);
                }
            }
        }
        let mut rng = Rng::new(cfg.seed);
        let mut members = Membership::new(cfg.node, cfg.membership.clone());
        members.start(now, &mut rng);
        let ae = cfg.anti_entropy_interval.mul_f64(rng.unit());
        let mut node = Node {
            rng,
            members,
            apps,
            errors: BTreeMap::new(),
            overrides: BTreeMap::new(),
            blobs: blob_chunks,
            pending: BTreeMap::new(),
            transfers: BTreeMap::new(),
            early_haves: BTreeMap::new(),
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            heads: BTreeMap::new(),
            missing: BTreeMap::new(),
            reports: BTreeMap::new(),
            next_anti_entropy: Some(now + ae),
            next_tally: None,
            accepted_at: BTreeMap::new(),
            tally_tokens: TALLY_BURST,
            tally_version: 0,
            tally_refilled: now,
            serve_queue: Vec::new(),
            serve_order: 0,
            serving: BTreeMap::new(),
            served: BTreeMap::new(),
            out: VecDeque::new(),
            cfg,
        };
        let restored: Vec<SignedHead> = node.apps.values().map(|r| r.head.clone()).collect();
        for h in restored {
            let report = node.own_report(&h, Outcome::Active);
            node.reports.insert(h.head.app.clone(), report);
            let mut st = node.head_state(h, 0, None);
            st.own = Some(Tally {
                active: 1,
                ..Tally::default()
            });
            node.heads.insert(st.head.head.app.clone(), st);
        }
        node.drain_members(now);
        node
    }

    fn head_state(&self, head: SignedHead, round: u16, upstream: Option<P>) -> HeadState<P> {
        HeadState {
            id: head.id(),
            head,
            round,
            rank: round,
            poisoned_at: None,
            upstream,
            offers: BTreeMap::new(),
            own: None,
            children: BTreeMap::new(),
            dirty: false,
            fleet: None,
            fleet_due: None,
            fleet_version: 0,
            root: false,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node
    }

    /// The record of `app`, if it has an active release.
    pub fn app(&self, app: &AppName) -> Option<&AppRecord> {
        self.apps.get(app)
    }

    /// Peers in the active view.
    pub fn active_peers(&self) -> &[P] {
        self.members.active()
    }

    /// This node's subtree totals for `app`'s newest head.
    pub fn tally(&self, app: &AppName) -> Option<Tally> {
        self.heads.get(app).map(|h| h.total())
    }

    /// The hop count of the newest head of `app` (0 where it entered the mesh).
    pub fn round(&self, app: &AppName) -> Option<u16> {
        self.heads.get(app).map(|h| h.round)
    }

    /// Bytes of chunks received that were already held (wasted transfer).
    pub fn duplicate_bytes(&self) -> u64 {
        self.transfers.values().map(|t| t.duplicate_bytes).sum()
    }

    /// The status this node reports.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.cfg.node,
            fleet: self.cfg.trust.fleet.clone(),
            apps: self
                .apps
                .iter()
                .map(|(name, r)| r.status(self.errors.get(name).cloned(), self.overrides.get(name)))
                .collect(),
            reports: self.reports.values().cloned().collect(),
            peers: self.members.links() as u32,
            active_view: self.members.active_view(),
            passive_view: self.members.passive_len() as u32,
            tallies: self.heads.values().map(|h| h.total()).collect(),
            fleet_tallies: self
                .heads
                .values()
                .filter_map(|h| h.fleet.clone())
                .collect(),
            seqs: self.seen_seqs(),
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input<P>) {
        match input {
            Input::PeerUp {
                peer,
                node,
                addr,
                outbound,
            } => {
                self.members
                    .peer_up(now, &mut self.rng, peer, node, addr, outbound);
                self.drain_members(now);
            }
            Input::PeerDown(p) => self.on_peer_down(now, p),
            Input::DialFailed(addr) => {
                self.members.dial_failed(now, &mut self.rng, addr);
                self.drain_members(now);
            }
            Input::Message(p, msg) => {
                if let Some(msg) = self.members.on_message(now, &mut self.rng, p, msg) {
                    self.on_message(now, p, msg);
                }
                self.drain_members(now);
            }
            Input::Activated { app, seq, result } => self.on_activated(now, app, seq, result),
            Input::Reverted {
                app,
                seq,
                reason,
                serving,
            } => self.on_reverted(now, app, seq, reason, serving),
            Input::LocalOverride { app, release } => match release {
                Some(release) => {
                    let s = Serving {
                        release: Some(release),
                        local_override: true,
                    };
                    self.overrides.insert(app, s);
                }
                None => {
                    self.overrides.remove(&app);
                }
            },
            Input::Timeout => self.on_timeout(now),
        }
    }

    /// The next piece of work for the shell.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.out.pop_front()
    }

    /// When to feed [`Input::Timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .values()
            .filter_map(|t| t.poll_timeout())
            .chain(self.members.poll_timeout())
            .chain(self.missing.values().map(|m| m.at))
            .chain(self.next_anti_entropy)
            .chain(self.next_tally)
            .chain(self.heads.values().filter_map(|h| h.fleet_due))
            .chain(
                self.serving
                    .values()
                    .min()
                    .map(|at| *at + SERVE_SLOT_TIMEOUT),
            )
            .min()
    }

    fn send(&mut self, to: P, msg: Message) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn drain_members(&mut self, now: Instant) {
        while let Some(o) = self.members.poll() {
            match o {
                MOut::Send(to, msg) => self.send(to, msg),
                MOut::Dial(addr) => self.out.push_back(Output::Dial(addr)),
                MOut::Disconnect(peer, reason) => {
                    self.out.push_back(Output::Disconnect { peer, reason })
                }
                MOut::Up(p) => {
                    self.lazy.remove(&p);
                    self.eager.insert(p);
                    if let Some(node) = self.members.node_of(p) {
                        self.event(Event::Neighbor { node, up: true });
                    }
                    self.send_summary(p, false);
                    // Tell it which heads this node holds, and how far from the root: a node
                    // whose tally parent is gone may re-parent to it.
                    let anns: Vec<Announce> = self
                        .heads
                        .values()
                        .map(|h| Announce {
                            app: h.head.head.app.clone(),
                            seq: h.seq(),
                            id: h.id,
                            round: h.rank,
                        })
                        .collect();
                    if !anns.is_empty() {
                        self.send(p, Message::IHave(anns));
                    }
                    self.announce_wants(p);
                }
                MOut::Down(p) => {
                    self.eager.remove(&p);
                    self.lazy.remove(&p);
                    if let Some(node) = self.members.node_of(p) {
                        self.event(Event::Neighbor { node, up: false });
                    }
                }
                MOut::Probe(p) => self.send_summary(p, false),
                MOut::Replaced { old, new, fresh } => self.rekey(now, old, new, fresh),
            }
        }
    }

    /// Link `old` to a peer was replaced by `new`. When both sides dialled at once, everything
    /// known of `old` moves to `new`, so the broadcast tree and tallies carry on. When the peer
    /// came back (`fresh`: it restarted), what it told before is stale: it is a new eager
    /// neighbour, its old tallies are dropped (it will report again) and it gets our summary.
    fn rekey(&mut self, now: Instant, old: P, new: P, fresh: bool) {
        let was_eager = self.eager.remove(&old);
        let was_lazy = self.lazy.remove(&old);
        if fresh || was_eager {
            self.eager.insert(new);
        } else if was_lazy {
            self.lazy.insert(new);
        }
        let mut dirty = false;
        for h in self.heads.values_mut() {
            let offer = h.offers.remove(&old);
            let child = h.children.remove(&old);
            if fresh {
                if h.upstream == Some(old) {
                    h.upstream = None;
                }
                dirty |= child.is_some() || h.upstream.is_none();
                h.dirty |= child.is_some() || h.upstream.is_none();
                continue;
            }
            if h.upstream == Some(old) {
                h.upstream = Some(new);
            }
            if let Some(r) = offer {
                h.offers.insert(new, r);
            }
            if let Some(t) = child {
                h.children.insert(new, t);
            }
        }
        if dirty {
            self.arm_tally(now);
        }
        for m in self.missing.values_mut() {
            for a in m.announcers.iter_mut() {
                if *a == old {
                    *a = new;
                }
            }
        }
        // Chunk requests in flight on the old link are lost with it; the transfer asks again.
        self.forget_serving(now, old);
        for t in self.transfers.values_mut() {
            t.remove_peer(old);
        }
        self.announce_wants(new);
    }

    /// Tells `to` which chunks of each content still being fetched this node holds, asking to
    /// hear of the chunks it gets (a new or renewed neighbour may serve them).
    fn announce_wants(&mut self, to: P) {
        let haves: Vec<(Digest, Vec<u8>)> = self
            .transfers
            .values()
            .filter(|t| !t.is_complete())
            .map(|t| (t.digest(), t.bits()))
            .collect();
        for (digest, bits) in haves {
            let msg = Message::Have {
                digest,
                bits,
                want: true,
            };
            self.send(to, msg);
        }
    }

    fn seen_seqs(&self) -> Vec<(AppName, u64)> {
        let mut v: BTreeMap<AppName, u64> = self
            .apps
            .iter()
            .map(|(a, r)| (a.clone(), r.head.head.seq))
            .collect();
        for (a, h) in &self.heads {
            let e = v.entry(a.clone()).or_default();
            *e = (*e).max(h.seq());
        }
        v.into_iter().collect()
    }

    fn send_summary(&mut self, to: P, reply: bool) {
        let heads = self.seen_seqs();
        self.send(to, Message::Summary { heads, reply });
    }

    /// The highest seq accepted for `app` (activated, activating or fetching).
    fn held(&self, app: &AppName) -> u64 {
        let a = self.apps.get(app).map_or(0, |r| r.head.head.seq);
        let h = self.heads.get(app).map_or(0, |h| h.seq());
        a.max(h)
    }

    fn on_peer_down(&mut self, now: Instant, p: P) {
        self.members.peer_down(now, &mut self.rng, p);
        self.drain_members(now);
        self.forget_serving(now, p);
        for t in self.transfers.values_mut() {
            t.remove_peer(p);
        }
        for e in self.early_haves.values_mut() {
            e.remove(&p);
        }
        for m in self.missing.values_mut() {
            m.announcers.retain(|q| *q != p);
        }
        let mut dirty = false;
        for h in self.heads.values_mut() {
            h.offers.remove(&p);
            if h.children.remove(&p).is_some() {
                h.dirty = true;
                dirty = true;
            }
            if h.upstream == Some(p) {
                h.upstream = None;
                if h.own.is_some() || !h.children.is_empty() {
                    h.dirty = true;
                    dirty = true;
                }
            }
        }
        if dirty {
            self.arm_tally(now);
        }
        self.pump_all(now);
    }

    fn on_message(&mut self, now: Instant, from: P, msg: Message) {
        match msg {
            Message::Summary { heads, reply } => self.on_summary(now, from, heads, reply),
            Message::Head(sh) => self.on_head(now, from, *sh, None),
            Message::Gossip { head, round } => self.on_head(now, from, *head, Some(round)),
            Message::IHave(anns) => self.on_ihave(now, from, anns),
            Message::Graft { app, id, .. } => {
                if self.members.is_active(from) {
                    self.lazy.remove(&from);
                    self.eager.insert(from);
                }
                if let Some(h) = self.heads.get(&app)
                    && h.id == id
                {
                    let msg = Message::Gossip {
                        head: Box::new(h.head.clone()),
                        round: h.round,
                    };
                    self.send(from, msg);
                }
            }
            Message::Prune => {
                if self.eager.remove(&from) {
                    self.lazy.insert(from);
                }
            }
            Message::Have { digest, bits, want } => self.on_have(now, from, digest, bits, want),
            Message::HaveChunk { digest, index } => {
                self.served_ack(now, from, digest, index);
                if let Some(t) = self.transfers.get_mut(&digest) {
                    t.on_have_chunk(from, index);
                    self.pump(now, digest);
                } else if let Some(e) = self.early_haves.get_mut(&digest)
                    && let Some((bits, _)) = e.get_mut(&from)
                {
                    crate::swarm::bits_set(bits, index.min(crate::release::MAX_CHUNKS));
                }
            }
            Message::GetChunk { digest, index } => self.on_get_chunk(now, from, digest, index),
            Message::Chunk {
                digest,
                index,
                data,
            } => self.on_chunk(now, from, digest, index, Some(data)),
            Message::NoChunk { digest, index } => self.on_chunk(now, from, digest, index, None),
            Message::Tally(t) => self.on_tally(now, from, t),
            Message::FleetTally { tally, version } => self.on_fleet_tally(from, tally, version),
            Message::Report(r) => {
                // A direct answer to a head this node pushed (stale or refused): keep the
                // latest per app for status; it is informational only.
                if !matches!(r.outcome, Outcome::Stale { .. }) && r.node != self.cfg.node {
                    self.reports.entry(r.app.clone()).or_insert(r);
                }
            }
            Message::StatusRequest => {
                let status = self.status();
                self.send(from, Message::Status(Box::new(status)));
            }
            Message::Status(_)
            | Message::Join { .. }
            | Message::ForwardJoin { .. }
            | Message::Neighbor { .. }
            | Message::NeighborReply { .. }
            | Message::Shuffle { .. }
            | Message::ShuffleReply { .. } => {}
        }
    }

    fn start(&mut self, now: Instant, from: Option<P>, sh: SignedHead) {
        let app = sh.head.app.clone();
        let digest = sh.head.release.digest;
        let cached = self.blobs.contains_key(&digest);
        self.event(Event::Accepted {
            app: app.clone(),
            seq: sh.head.seq,
            version: sh.head.release.version.clone(),
            cached,
        });
        if cached {
            self.emit_activate(sh.clone(), None);
            self.pending.insert(
                app,
                Pending {
                    head: sh,
                    stage: Stage::Activating,
                    next: None,
                },
            );
            return;
        }
        let release = sh.head.release.clone();
        self.pending.insert(
            app,
            Pending {
                head: sh,
                stage: Stage::Fetching,
                next: None,
            },
        );
        if !self.transfers.contains_key(&digest) {
            let mut t = Transfer::new(release, &mut self.rng);
            for (p, (bits, want)) in self.early_haves.remove(&digest).unwrap_or_default() {
                if self.members.node_of(p).is_some() {
                    t.on_have(p, &bits, want);
                }
            }
            self.transfers.insert(digest, t);
        }
        let t = &self.transfers[&digest];
        if t.is_complete() {
            // Already verified (for another app, or a head that failed to activate): activate.
            return self.finish(now, digest);
        }
        let bits = t.bits();
        let mut to: Vec<P> = self.members.active().to_vec();
        if let Some(f) = from
            && !to.contains(&f)
        {
            to.push(f);
        }
        for p in to {
            let msg = Message::Have {
                digest,
                bits: bits.clone(),
                want: true,
            };
            self.send(p, msg);
        }
        self.pump(now, digest);
    }

    fn reject(&mut self, from: P, sh: &SignedHead, err: HeadError) {
        let reason = err.to_string();
        self.event(Event::Rejected {
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            reason: reason.clone(),
        });
        match err {
            // Old news is only the sender's business: not counted, not kept in status.
            HeadError::Stale { current, .. } => {
                let report = self.own_report(sh, Outcome::Stale { current });
                self.send(from, Message::Report(report));
            }
            _ => {
                let report = self.own_report(sh, Outcome::Rejected(truncate(reason)));
                let tally = Tally {
                    app: Some(sh.head.app.clone()),
                    seq: sh.head.seq,
                    rejected: 1,
                    samples: vec![report.clone()],
                    version: self.next_tally_version(),
                    ..Tally::default()
                };
                self.send(from, Message::Report(report));
                self.send(from, Message::Tally(tally));
            }
        }
    }

    fn own_report(&self, sh: &SignedHead, outcome: Outcome) -> Report {
        Report {
            node: self.cfg.node,
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            version: sh.head.release.version.clone(),
            digest: sh.head.release.digest,
            outcome,
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.members.on_timeout(now, &mut self.rng);
        self.drain_members(now);
        let before = self.serving.len();
        self.serving
            .retain(|_, at| now.saturating_duration_since(*at) < SERVE_SLOT_TIMEOUT);
        if self.serving.len() != before {
            self.dispatch(now);
        }
        let digests: Vec<Digest> = self.transfers.keys().copied().collect();
        for d in digests {
            let t = self.transfers.get_mut(&d).expect("listed above");
            if t.on_timeout(now) && !t.is_complete() {
                let bits = t.bits();
                for p in self.members.active().to_vec() {
                    let msg = Message::Have {
                        digest: d,
                        bits: bits.clone(),
                        want: true,
                    };
                    self.send(p, msg);
                }
            }
            self.pump(now, d);
        }
        let due: Vec<Digest> = self
            .missing
            .iter()
            .filter(|(_, m)| m.at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let m = self.missing.get_mut(&id).expect("listed above");
            match m.announcers.pop_front() {
                Some(p) => {
                    m.at = now + self.cfg.ihave_timeout;
                    let msg = Message::Graft {
                        app: m.app.clone(),
                        seq: m.seq,
                        id,
                    };
                    if self.members.is_active(p) {
                        self.lazy.remove(&p);
                        self.eager.insert(p);
                    }
                    self.send(p, msg);
                }
                None => {
                    self.missing.remove(&id);
                }
            }
        }
        if self.next_anti_entropy.is_some_and(|t| t <= now) {
            let jitter = 0.75 + self.rng.unit() / 2.0;
            self.next_anti_entropy = Some(now + self.cfg.anti_entropy_interval.mul_f64(jitter));
            if let Some(&p) = self.rng.pick(self.members.active()) {
                self.send_summary(p, false);
            }
        }
        if self.next_tally.is_some_and(|t| t <= now) {
            self.flush_tallies(now);
        }
        let settled: Vec<AppName> = self
            .heads
            .iter()
            .filter(|(_, h)| h.fleet_due.is_some_and(|t| t <= now))
            .map(|(a, _)| a.clone())
            .collect();
        for app in settled {
            let h = self.heads.get_mut(&app).expect("listed above");
            h.fleet_due = None;
            let total = h.total();
            if h.fleet.as_ref() != Some(&total) {
                h.fleet = Some(total.clone());
                h.fleet_version += 1;
                let version = h.fleet_version;
                self.send_fleet_down(None, total, version);
            }
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
