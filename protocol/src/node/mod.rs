//! The node state machine: membership, broadcast of heads, swarming transfer, anti-entropy and
//! fleet tallies, behind one sans-IO interface.
//!
//! Driven quinn-style: feed it [`Input`]s with [`Node::handle`], then drain [`Node::poll_output`]
//! until it returns `None`, and call `handle(now, Input::Timeout)` at [`Node::poll_timeout`].
//! Time only ever arrives as an argument and randomness from the seed in [`NodeConfig`]; the
//! node reads no clock, socket, file or global RNG.
//!
//! `Node` only composes; each concern is a layer with its own state and timers, and a layer
//! never writes another's state (where one affects another, the `Node` wires it: see
//! `links.rs` and `heads.rs`):
//! - **Membership** ([`crate::membership`], HyParView): which connections are kept (the active
//!   view) and how they are repaired; `links.rs` maps its outputs onto the other layers.
//! - **Broadcast** (`broadcast.rs`, Plumtree + anti-entropy): a head is pushed eagerly along a
//!   spanning tree of the active view and announced lazily (`IHave`) on the other links; heads
//!   are relayed as soon as they verify, before their content arrives, so the head runs ahead
//!   of the bytes. Periodic `Summary` exchanges repair what the tree missed.
//! - **Content** (`content.rs`, over [`crate::swarm`]): the content is fetched chunk by chunk
//!   from every neighbour that announces it, verified against the signed chunk map.
//! - **Serving** (`serve.rs`): requests this node serves wait for one of a few upload slots,
//!   least-served chunk first.
//! - **Tallies** (`tally.rs`): subtree totals up the tree, the settled fleet count down.
//! - **Activation** (`activation.rs`): records in force, the head each app moves to, and the
//!   shell's outcomes.
//! - **Census** (`census.rs`): counting the live fleet on demand, an echo wave over the active
//!   view, with each node's own contribution drawn from activation, broadcast and content.
//! - **Trust** (`trust.rs`): the role of each link (node or operator), the fleet root chain
//!   through the mesh (pushed on adoption, repaired by the root version in summaries),
//!   revocation (links closed, membership forgets the node).
//! - **Freshness** (`fresh.rs`): a node that starts without a record of an app holds back the
//!   activation of a head a peer hands it until it has heard its neighbours' summaries.
//!
//! **Invariants:** the position (epoch, seq) held for an app never decreases; nothing reaches
//! `Activate` that is not signed by a threshold of the release keys of the newest root's epoch
//! and fully verified; at most one activation per app is in flight; a head is relayed only
//! after it verified; expiry is never judged before the newest verified signed time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::head::SignedHead;
use crate::membership::{Membership, MembershipConfig};
use crate::release::{AppName, Digest};
use crate::rng::Rng;
use crate::swarm::SwarmConfig;
use crate::trust::{PeerRole, Trust};
use crate::wire::{
    AppStatus, BroadcastMsg, CensusMsg, ContentMsg, HistoryEntry, Message, NodeId, NodeStatus,
    Position, Tally, TallyMsg,
};

mod activation;
mod broadcast;
mod census;
mod content;
mod fresh;
mod heads;
mod io;
mod links;
mod serve;
mod tally;
#[cfg(test)]
mod tests;
mod trust;

pub use crate::peer::Peer;
pub use io::{Activation, ActivationError, Event, Input, Output, Prefetch, Serving};

use activation::Activations;
use broadcast::Broadcast;
use census::{Censuses, Local};
use content::{Content, Received};
use fresh::Freshness;
use io::Outbox;
use serve::ServeQueue;
use tally::Tallies;
use trust::PeerTrust;

/// Node tuning. [`NodeConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node: NodeId,
    /// The verified fleet root chain (or `trusted_keys`) the node starts with.
    pub trust: Trust,
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
    /// A node that started without a record of an app activates a head a peer handed it only
    /// once it heard the anti-entropy summaries of this many distinct neighbours…
    pub freshness_peers: usize,
    /// …or of at least one once this long has passed since start.
    pub freshness_timeout: Duration,
}

impl NodeConfig {
    pub fn new(node: NodeId, trust: impl Into<Trust>) -> Self {
        let trust = trust.into();
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
            freshness_peers: 2,
            freshness_timeout: Duration::from_secs(3),
        }
    }
}

/// Where `sh` sits in its app's order: (epoch, seq).
pub(crate) fn position(sh: &SignedHead) -> Position {
    Position {
        epoch: sh.head.epoch,
        seq: sh.head.seq,
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
            epoch: h.epoch,
            kind: h.kind,
            active: h.release.clone(),
            issued_at_ms: h.issued_at_ms,
            history: self.history.clone(),
            last_error,
            serving: serving.and_then(|s| s.release.clone()),
            local_override: serving.is_some_and(|s| s.local_override),
            plan: h.plan.clone(),
            staged: None,
        }
    }
}

/// The node state machine: the layers, the RNG they draw from, and the one output queue.
/// See the module docs.
#[derive(Debug)]
pub struct Node<P: Peer> {
    cfg: NodeConfig,
    rng: Rng,
    members: Membership<P>,
    broadcast: Broadcast<P>,
    tally: Tallies<P>,
    content: Content<P>,
    serve: ServeQueue<P>,
    activation: Activations,
    census: Censuses<P>,
    peer_trust: PeerTrust<P>,
    fresh: Freshness<P>,
    out: Outbox<P>,
}

impl<P: Peer> Node<P> {
    /// A node that holds `records` (already verified by the caller: disk is untrusted) and the
    /// complete, verified content `blobs`. It starts joining the mesh through its contacts.
    pub fn new(
        now: Instant,
        mut cfg: NodeConfig,
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
        let loose: BTreeSet<Digest> = held
            .into_iter()
            .filter(|d| !blob_chunks.contains_key(d))
            .collect();
        let mut rng = Rng::new(cfg.seed);
        let mut members = Membership::new(cfg.node, cfg.membership.clone());
        members.start(now, &mut rng);
        let ae = cfg.anti_entropy_interval.mul_f64(rng.unit());
        let mut broadcast = Broadcast::new(cfg.ihave_timeout, cfg.anti_entropy_interval, now + ae);
        let mut tally = Tallies::new(cfg.node, cfg.tally_interval, now);
        for r in apps.values() {
            broadcast.restore(r.head.clone());
            tally.restore(&r.head);
            // Verified by the caller: its signed time is a floor for expiry.
            cfg.trust.observe(r.head.head.issued_at_ms);
        }
        let fresh = Freshness::new(now, cfg.freshness_peers, cfg.freshness_timeout);
        let mut node = Node {
            rng,
            members,
            broadcast,
            tally,
            content: Content::new(cfg.swarm, blob_chunks, loose),
            serve: ServeQueue::new(),
            activation: Activations::new(cfg.node, cfg.history_limit, apps),
            census: Censuses::new(now),
            peer_trust: PeerTrust::new(),
            fresh,
            out: Outbox::default(),
            cfg,
        };
        node.apply_revocations();
        node.drain_members(now);
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node
    }

    /// The record of `app`, if it has an active release.
    pub fn app(&self, app: &AppName) -> Option<&AppRecord> {
        self.activation.records().get(app)
    }

    /// Peers in the active view.
    pub fn active_peers(&self) -> &[P] {
        self.members.active()
    }

    /// This node's subtree totals for `app`'s newest head.
    pub fn tally(&self, app: &AppName) -> Option<Tally> {
        self.tally.total(app)
    }

    /// The newest head accepted for `app` (activated, activating, fetching or failed).
    pub fn newest_head(&self, app: &AppName) -> Option<&SignedHead> {
        self.broadcast.head(app).map(|h| &h.head)
    }

    /// The newest head of `app` whose wave leaves this node out (its release prefetched, the
    /// record in force serving), if any.
    pub fn staged(&self, app: &AppName) -> Option<&SignedHead> {
        self.activation.staged(app)
    }

    /// The highest position (epoch, seq) accepted for `app`.
    pub fn position(&self, app: &AppName) -> Position {
        self.held(app)
    }

    /// Whether the passive view (the nodes membership may dial) holds `node`.
    pub fn in_passive_view(&self, node: NodeId) -> bool {
        self.members.in_passive(node)
    }

    /// Whether the node has checked with its peers that nothing newer exists (see
    /// [`NodeConfig::freshness_peers`]).
    pub fn is_fresh(&self) -> bool {
        self.fresh.is_fresh()
    }

    /// The hop count of the newest head of `app` (0 where it entered the mesh).
    pub fn round(&self, app: &AppName) -> Option<u16> {
        self.broadcast.head(app).map(|h| h.round)
    }

    /// Bytes of chunks received that were already held (wasted transfer).
    pub fn duplicate_bytes(&self) -> u64 {
        self.content.duplicate_bytes()
    }

    /// Censuses in progress on this node (a gauge for the shell's metrics).
    pub fn censuses_in_progress(&self) -> usize {
        self.census.in_progress()
    }

    /// Content transfers still fetching chunks (a gauge for the shell's metrics).
    pub fn transfers_in_progress(&self) -> usize {
        self.content.fetching()
    }

    /// The status this node reports.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.cfg.node,
            fleet: self.cfg.trust.fleet().to_string(),
            apps: self.activation.app_statuses(),
            reports: self.activation.reports(),
            links: self.members.links() as u32,
            active_view: self.members.active_view(),
            passive_view: self.members.passive_len() as u32,
            tallies: self.tally.totals(),
            fleet_tallies: self.tally.fleet_totals(),
            seqs: self.broadcast.seen_seqs(self.activation.records()),
            trust: self.cfg.trust.status(),
            runtime: Vec::new(),
            now_ms: 0,
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
                role,
            } => {
                self.peer_trust.up(peer, role);
                match role {
                    PeerRole::Operator => self.members.operator_up(now, peer, node, addr),
                    PeerRole::Node => {
                        self.members
                            .peer_up(now, &mut self.rng, peer, node, addr, outbound)
                    }
                }
                self.drain_members(now);
            }
            Input::PeerDown(p) => {
                self.on_peer_down(now, p);
                self.peer_trust.down(p);
            }
            Input::DialFailed(addr) => {
                self.members.dial_failed(now, &mut self.rng, addr);
                self.drain_members(now);
            }
            Input::Message(p, msg) => {
                // A message from a peer that is not (or no longer) a link is dropped, and so is
                // one from a revoked node whose link is closing.
                if self.members.is_linked(p) && !self.members.is_revoked_link(p) {
                    self.on_message(now, p, msg);
                }
                self.drain_members(now);
            }
            Input::Activated { app, seq, result } => self.on_activated(now, app, seq, result),
            Input::Prefetched { app, seq, result } => self.on_prefetched(now, app, seq, result),
            Input::Health {
                app,
                digest,
                new,
                old,
            } => self.on_health(now, &app, digest, new, old),
            Input::Reverted {
                app,
                seq,
                reason,
                serving,
            } => self.on_reverted(now, app, seq, reason, serving),
            Input::LocalOverride { app, release } => self.activation.local_override(app, release),
            Input::Timeout => self.on_timeout(now),
            Input::Clock { unix_ms } => self.cfg.trust.set_now(unix_ms),
        }
    }

    /// The next piece of work for the shell.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.out.pop()
    }

    /// When to feed [`Input::Timeout`] next: the earliest timer of any layer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.content
            .poll_timeout()
            .into_iter()
            .chain(self.members.poll_timeout())
            .chain(self.broadcast.poll_timeout())
            .chain(self.tally.poll_timeout())
            .chain(self.serve.poll_timeout())
            .chain(self.census.poll_timeout())
            .chain(self.fresh.poll_timeout())
            .min()
    }

    /// Every layer's timers, in a fixed order: membership, serving slots, transfers, grafts
    /// and anti-entropy, tallies, censuses.
    fn on_timeout(&mut self, now: Instant) {
        self.members.on_timeout(now, &mut self.rng);
        self.drain_members(now);
        self.serve.on_timeout(now, &self.content, &mut self.out);
        let active = self.members.active();
        self.content
            .on_timeout(now, &mut self.rng, active, &mut self.out);
        let ae = self
            .broadcast
            .on_timeout(now, &mut self.rng, &self.members, &mut self.out);
        if let Some(p) = ae {
            self.send_summary(p, false);
        }
        let eager = self.broadcast.eager();
        self.tally
            .on_timeout(now, &self.members, eager, &mut self.out);
        self.census.on_timeout(now, &mut self.out);
        self.check_fresh(now);
    }

    /// A message from link `from`, to the layer it is for.
    fn on_message(&mut self, now: Instant, from: P, msg: Message) {
        let operator = self.peer_trust.is_operator(from);
        match msg {
            // An operator never joins the overlay, and only enrolled nodes count in tallies.
            Message::Membership(_) | Message::Tally(_) if operator => {}
            Message::Membership(m) => self.members.on_message(now, &mut self.rng, from, m),
            Message::Broadcast(m) => self.on_broadcast(now, from, m),
            Message::Content(m) => self.on_content(now, from, m),
            Message::Tally(TallyMsg::Subtree(t)) => self.tally.on_tally(now, from, t),
            Message::Tally(TallyMsg::Fleet { tally, version }) => {
                let eager = self.broadcast.eager();
                let out = &mut self.out;
                self.tally.on_fleet_tally(from, tally, version, eager, out);
            }
            Message::Report(r) => self.activation.on_report(r),
            Message::StatusRequest => {
                let status = Box::new(self.status());
                self.out.push(Output::Status { to: from, status });
            }
            Message::Status(_) => {}
            Message::Census(m) => self.on_census(now, from, m),
            Message::Trust(m) => self.on_trust(now, from, m),
        }
    }

    /// The trust this node holds (its newest root, the time floor).
    pub fn trust(&self) -> &Trust {
        &self.cfg.trust
    }

    /// A census message: the census layer runs the wave; this node's own contribution comes
    /// from activation (records, what serves, failures, pending heads), broadcast (seqs held)
    /// and content (fetch progress), read only.
    fn on_census(&mut self, now: Instant, from: P, msg: CensusMsg) {
        let (id, budget_ms, focus) = match msg {
            CensusMsg::Reply { id, count } => {
                return self.census.on_reply(from, id, count, &mut self.out);
            }
            CensusMsg::Query {
                id,
                budget_ms,
                focus,
            } => (id, budget_ms, focus),
        };
        let (acts, broadcast, content) = (&self.activation, &self.broadcast, &self.content);
        let local = Local {
            me: self.cfg.node,
            addr: self.members.config().advertise,
            activation: acts,
            held: |a: &AppName| broadcast.held(a, acts.applied(a)).seq,
            progress: |d: &Digest| content.progress(d),
        };
        let client = !self.members.is_active(from);
        let neighbours = self.members.active();
        let own = |f: Option<&crate::wire::Focus>| census::own(&local, f);
        self.census.on_query(
            now,
            from,
            id,
            budget_ms,
            focus,
            client,
            neighbours,
            own,
            &mut self.out,
        );
    }

    fn on_broadcast(&mut self, now: Instant, from: P, msg: BroadcastMsg) {
        match msg {
            BroadcastMsg::Summary { heads, reply, root } => {
                self.on_summary(now, from, heads, reply, root)
            }
            BroadcastMsg::Head(sh) => self.on_head(now, from, *sh, None),
            BroadcastMsg::Gossip { head, round } => self.on_head(now, from, *head, Some(round)),
            BroadcastMsg::IHave(anns) => {
                let acts = &self.activation;
                let offers = self
                    .broadcast
                    .on_ihave(now, from, anns, |a| acts.applied(a));
                for (app, round) in offers {
                    self.tally.on_offer(now, &app, from, round);
                }
            }
            BroadcastMsg::Graft { app, id, .. } => {
                let active = self.members.is_active(from);
                self.broadcast
                    .on_graft(from, &app, id, active, &mut self.out);
            }
            BroadcastMsg::Prune => self.broadcast.on_prune(from),
        }
    }

    fn on_content(&mut self, now: Instant, from: P, msg: ContentMsg) {
        let out = &mut self.out;
        match msg {
            ContentMsg::Have { digest, bits, want } => {
                self.content
                    .on_have(now, &mut self.rng, from, digest, bits, want, out)
            }
            ContentMsg::HaveChunk { digest, index } => {
                self.serve.ack(now, from, digest, index, &self.content, out);
                self.content
                    .on_have_chunk(now, &mut self.rng, from, digest, index, out);
            }
            ContentMsg::GetChunk { digest, index } => {
                self.serve
                    .on_get_chunk(now, from, digest, index, &self.content, out)
            }
            ContentMsg::Chunk {
                digest,
                index,
                data,
            } => self.on_chunk(now, from, digest, index, Some(data)),
            ContentMsg::NoChunk { digest, index } => self.on_chunk(now, from, digest, index, None),
        }
    }

    /// A chunk (`None`: a refusal) from `from`: the content layer verifies it; the sender of
    /// a bad one is banned, of a good one kept; complete content goes to activation.
    fn on_chunk(
        &mut self,
        now: Instant,
        from: P,
        digest: Digest,
        index: u32,
        data: Option<crate::wire::Payload>,
    ) {
        let got =
            self.content
                .on_chunk(now, &mut self.rng, from, digest, index, data, &mut self.out);
        match got {
            Received::Nothing => {}
            Received::Bad => self.members.ban(from),
            Received::Kept => self.members.keep(now, from),
            Received::Complete => {
                self.members.keep(now, from);
                self.finish(now, digest);
            }
        }
    }
}
