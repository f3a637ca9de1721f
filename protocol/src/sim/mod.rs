//! A deterministic simulator for [`Node`]s: no threads, no wall clock, no sockets.
//!
//! Everything that happens is an event in a time-ordered queue (ties broken by insertion
//! order) and every random choice comes from one seeded RNG, so a run is a pure function of
//! its seed and inputs: a failing seed replays exactly.
//!
//! The network model: each node has an upload link of `upload_bps` (chunks leave one after
//! another, so a node serving many peers serves them in turn; small control messages are sent
//! ahead of queued chunks, as the shell sends them on higher-priority streams); each pair of nodes has a fixed
//! one-way latency drawn from `latency`; a message of `k` packets of ~1,200 bytes that loses
//! any of them (probability `loss` each) arrives one round trip late, as QUIC would retransmit
//! it (the simulator does not model congestion-window backoff). Connections are dialled and
//! fail as the shell's would: a dial to a dead or unreachable node fails after `dial_timeout`;
//! a crash or partition is noticed by the other side after `detect_after` (QUIC's idle
//! timeout); messages on a broken connection are lost.
//!
//! Safety is checked on every step, and a violation panics: on every activation the head must
//! verify against the node's own trust (the chain it holds: a threshold of its epoch's release
//! keys), the content must be exactly the signed release's bytes, and the node's position
//! (epoch, seq) for the app must grow (across crashes too: records persist); every head a node accepts must be newer than what it accepted since it started
//! and than what its disk holds. The roots a node adopts are written to its disk
//! ([`Persisted::roots`]) and a restarted node rebuilds its trust from them.
//!
//! Faults can be injected per node ([`Faults`]): a lying node corrupts every chunk it serves, a
//! silent one never answers chunk requests.
//!
//! Each node's runtime is simulated too ([`Workload`], `workload.rs`): which release serves
//! each app ([`SimNode::runs`], and every release that ever did, [`SimNode::ran`]), requests at
//! a per-node rate with a per-release error share and latency, health fed to the node every
//! second while a rollout's release serves, and trials that fail on a hash share of the nodes
//! (reverted by the shell, [`Input::Reverted`]). Activating from the store is a swap
//! ([`Workload::swap`]); activating the release that already serves answers at once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::node::{ActivationError, AppRecord, Event, Input, Node, NodeConfig, Output, position};
use crate::release::{AppName, Digest};
use crate::rng::Rng;
use crate::wire::{Census, ContentMsg, Message, NodeId, Payload, Position, Tally, TallyMsg};

#[cfg(test)]
mod census_tests;
mod net;
mod shell;
#[cfg(test)]
mod trust_tests;
mod workload;

pub use workload::{Behaviour, Running, Workload};

/// A simulated node id.
pub type Id = usize;
/// A connection handle (shared by both ends).
pub type Conn = u64;

/// The id the simulated publisher uses.
pub const PUBLISHER: Id = usize::MAX;

/// The network model.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// One-way latency of each link, uniform in this range (fixed per pair).
    pub latency: (Duration, Duration),
    /// Upload bandwidth of every node (and of the publisher); `None` = unlimited.
    pub upload_bps: Option<u64>,
    /// Packet loss probability.
    pub loss: f64,
    /// How long a crash or a partition takes to be noticed by the other end of a connection.
    pub detect_after: Duration,
    /// How long a dial to an unreachable node takes to fail.
    pub dial_timeout: Duration,
    /// How long activating a release takes (compile + persist + swap).
    pub activate_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency: (Duration::from_millis(10), Duration::from_millis(10)),
            upload_bps: None,
            loss: 0.0,
            detect_after: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(1),
            activate_delay: Duration::ZERO,
        }
    }
}

enum Delivery {
    Msg {
        conn: Conn,
        msg: Message,
    },
    Up {
        conn: Conn,
        peer: Id,
        outbound: bool,
    },
    Down {
        conn: Conn,
    },
    DialFailed(SocketAddr),
    Activated(AppName, u64, Result<(), ActivationError>),
    Prefetched(AppName, u64, Result<(), ActivationError>),
    Timer,
    /// A health period of the node's runtime ended (the chain's generation).
    Health(u64),
    /// The trial of a release that fails here is over: revert it.
    Trial(AppName, Digest),
}

#[derive(Debug)]
struct Link {
    a: Id,
    b: Id,
    up: bool,
}

impl Link {
    fn other(&self, x: Id) -> Id {
        if self.a == x { self.b } else { self.a }
    }
}

/// What a node keeps across a crash (its sled store, in the agent).
#[derive(Debug, Default, Clone)]
pub struct Persisted {
    pub records: BTreeMap<AppName, AppRecord>,
    pub blobs: BTreeSet<Digest>,
    /// Fleet roots adopted after the anchor in the node's config ([`Output::Roots`]), oldest
    /// first, and the newest signed time seen.
    pub roots: Vec<crate::trust::SignedRoot>,
    pub floor_ms: u64,
}

/// Misbehaviour injected into a simulated node (its protocol logic stays honest; the simulator
/// tampers with what it sends).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Every chunk it serves has a flipped byte (a lying peer).
    pub corrupt_chunks: bool,
    /// It never answers a chunk request (no `Chunk`, no `NoChunk`).
    pub silent_chunks: bool,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// `None` while crashed.
    pub node: Option<Node<Conn>>,
    pub cfg: NodeConfig,
    pub disk: Persisted,
    /// When the node last accepted / activated a head, per (app, seq).
    pub accepted_at: BTreeMap<(AppName, u64), Instant>,
    pub activated_at: BTreeMap<(AppName, u64), Instant>,
    /// Misbehaviour to inject.
    pub faults: Faults,
    /// Chunk answers this node sent (`Chunk` messages, corrupted or not).
    pub chunks_served: u64,
    /// Chunk requests a silent node left unanswered.
    pub requests_ignored: u64,
    /// What serves each app here (the simulated runtime, [`Workload`]); kept across a crash
    /// like the agent's store.
    pub runs: BTreeMap<AppName, Running>,
    /// When each release first served here (ever ran it).
    pub ran: BTreeMap<Digest, Instant>,
    /// When each release's trial first failed here (and the shell reverted it).
    pub reverted: BTreeMap<Digest, Instant>,
    /// Trials that failed here (a release reverted), every time.
    pub trials_failed: u32,
    health_gen: u64,
    /// The highest position accepted per app since the node (re)started, for the seq check.
    accepted_seq: BTreeMap<AppName, Position>,
    upload_free: Instant,
    timer_at: Option<Instant>,
    conns: BTreeSet<Conn>,
}

impl SimNode {
    pub fn alive(&self) -> bool {
        self.node.is_some()
    }

    /// The seq active for `app`.
    pub fn seq(&self, app: &AppName) -> Option<u64> {
        self.disk.records.get(app).map(|r| r.head.head.seq)
    }

    /// The position (epoch, seq) active for `app`.
    pub fn position(&self, app: &AppName) -> Option<Position> {
        self.disk.records.get(app).map(|r| position(&r.head))
    }

    /// The fleet root version the node holds (its disk's when it is down).
    pub fn root_version(&self) -> u64 {
        match &self.node {
            Some(n) => n.trust().version(),
            None => self
                .disk
                .roots
                .last()
                .map_or(self.cfg.trust.version(), |r| r.root.version),
        }
    }
}

/// Traffic counters.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Chunk payload bytes delivered to nodes.
    pub payload: u64,
    /// Everything else, bytes (message encodings).
    pub control: u64,
    pub messages: u64,
    /// Chunk payload bytes sent by the publisher.
    pub publisher_egress: u64,
    /// Tally messages delivered.
    pub tallies: u64,
    /// Census messages sent (queries and replies, the publisher's included).
    pub census: u64,
    /// Chunk messages sent and the total time they waited in upload queues.
    pub chunks_sent: u64,
    pub queue_wait: Duration,
}

/// The simulated publisher: holds content, serves chunks, collects the tallies it is sent and
/// the answers to the censuses it asked for.
#[derive(Debug, Default)]
pub struct Publisher {
    pub content: BTreeMap<Digest, Payload>,
    pub tallies: BTreeMap<(AppName, u64), Tally>,
    /// Censuses asked ([`Sim::census`]) by id.
    pub censuses: BTreeMap<u64, CensusAnswer>,
    upload_free: Option<Instant>,
}

/// A census the publisher asked for.
#[derive(Clone, Debug)]
pub struct CensusAnswer {
    /// When the query left the publisher.
    pub asked_at: Instant,
    /// When the root's reply arrived (`None`: not yet).
    pub answered_at: Option<Instant>,
    /// The fleet's count (`None` also when the root answered that it had counted this id).
    pub count: Option<Census>,
}

/// The simulator.
pub struct Sim {
    pub cfg: SimConfig,
    pub now: Instant,
    pub start: Instant,
    pub nodes: BTreeMap<Id, SimNode>,
    pub publisher: Publisher,
    pub traffic: Traffic,
    /// Content the simulated runtime refuses to activate.
    pub accepts: fn(&[u8]) -> bool,
    /// Requests, health reports and trial faults of the simulated runtime ([`Sim::set_workload`]).
    pub workload: Workload,
    /// Events emitted (only when `record_events`).
    pub events: Vec<(Id, Event)>,
    /// Connections a node closed, with the peer (if a node) and the reason (only when
    /// `record_events`).
    pub disconnects: Vec<(Id, Option<Id>, String)>,
    pub record_events: bool,
    /// Partition side per node (nodes on different sides cannot talk); empty = no partition.
    side: BTreeMap<Id, u8>,
    rng: Rng,
    links: BTreeMap<Conn, Link>,
    next_conn: Conn,
    queue: BinaryHeap<Reverse<(Instant, u64, Id)>>,
    payloads: BTreeMap<u64, Delivery>,
    next: u64,
    chunk_sizes: BTreeMap<Digest, usize>,
}

/// The address of simulated node `id`.
pub fn addr_of(id: Id) -> SocketAddr {
    if id == PUBLISHER {
        return SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 1));
    }
    let b = (id as u32).to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, b[1], b[2], b[3]), 7401))
}

fn id_of(addr: SocketAddr) -> Option<Id> {
    match addr {
        SocketAddr::V4(a) if a.port() == 7401 && a.ip().octets()[0] == 10 => {
            let o = a.ip().octets();
            Some(u32::from_be_bytes([0, o[1], o[2], o[3]]) as Id)
        }
        _ => None,
    }
}

/// A node id for simulated node `id`.
pub fn node_id(id: Id) -> NodeId {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&(id as u64).to_le_bytes());
    b[8] = 0x5a;
    NodeId(b)
}

impl Sim {
    pub fn new(cfg: SimConfig, start: Instant) -> Self {
        Sim {
            rng: Rng::new(cfg.seed),
            cfg,
            now: start,
            start,
            nodes: BTreeMap::new(),
            publisher: Publisher::default(),
            traffic: Traffic::default(),
            accepts: |_| true,
            workload: Workload::default(),
            events: Vec::new(),
            disconnects: Vec::new(),
            record_events: true,
            side: BTreeMap::new(),
            links: BTreeMap::new(),
            next_conn: 1,
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next: 0,
            chunk_sizes: BTreeMap::new(),
        }
    }

    /// Adds and starts node `id` with `cfg` (its contacts are in `cfg.membership.contacts`).
    pub fn add(&mut self, id: Id, mut cfg: NodeConfig) {
        cfg.membership.advertise = Some(addr_of(id));
        let node = Node::new(self.now, cfg.clone(), [], []);
        self.nodes.insert(
            id,
            SimNode {
                node: Some(node),
                cfg,
                disk: Persisted::default(),
                accepted_at: BTreeMap::new(),
                activated_at: BTreeMap::new(),
                faults: Faults::default(),
                chunks_served: 0,
                requests_ignored: 0,
                runs: BTreeMap::new(),
                ran: BTreeMap::new(),
                reverted: BTreeMap::new(),
                trials_failed: 0,
                health_gen: 0,
                accepted_seq: BTreeMap::new(),
                upload_free: self.now,
                timer_at: None,
                conns: BTreeSet::new(),
            },
        );
        self.drain(id);
        self.arm_health(id);
    }

    /// Ids of live nodes.
    pub fn live(&self) -> Vec<Id> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.alive())
            .map(|(i, _)| *i)
            .collect()
    }

    /// Random seeded choice, for scenarios.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Runs until the queue is empty or `limit` of simulated time has passed.
    pub fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        self.run_until(end, |_| false);
    }

    /// Runs until `done(self)` holds (checked after every event), the queue is empty, or
    /// `deadline`. Returns whether `done` held.
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        while let Some(Reverse((at, k, to))) = self.queue.pop() {
            if at > deadline {
                self.queue.push(Reverse((at, k, to)));
                break;
            }
            self.now = at;
            let d = self.payloads.remove(&k).expect("payload scheduled");
            self.step(to, d);
            if done(self) {
                return true;
            }
        }
        self.now = self.now.max(deadline.min(self.now.max(deadline)));
        done(self)
    }

    fn step(&mut self, id: Id, d: Delivery) {
        let now = self.now;
        if id == PUBLISHER {
            if let Delivery::Msg { conn, msg } = d {
                self.publisher_receive(conn, msg);
            }
            return;
        }
        let d = match d {
            Delivery::Health(gen_) => return self.health_tick(id, gen_),
            Delivery::Trial(app, digest) => return self.trial_failed(id, app, digest),
            d => d,
        };
        if let Delivery::Activated(app, seq, Ok(())) = &d
            && self.nodes.get(&id).is_some_and(|n| n.alive())
        {
            self.swapped(id, app, *seq);
        }
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(node) = n.node.as_mut() else {
            return;
        };
        let input = match d {
            Delivery::Msg { conn, msg } => {
                if !self.links.get(&conn).is_some_and(|l| l.up) || !n.conns.contains(&conn) {
                    return; // the connection broke while the message was in flight
                }
                if msg.is_payload() {
                    self.traffic.payload += Self::size_of(&msg) as u64 - 48;
                }
                if matches!(msg, Message::Tally(TallyMsg::Subtree(_))) {
                    self.traffic.tallies += 1;
                }
                Input::Message(conn, msg)
            }
            Delivery::Up {
                conn,
                peer,
                outbound,
            } => {
                if !self.links.get(&conn).is_some_and(|l| l.up) || !n.conns.contains(&conn) {
                    return;
                }
                Input::PeerUp {
                    peer: conn,
                    node: if peer == PUBLISHER {
                        NodeId([0xff; 32])
                    } else {
                        node_id(peer)
                    },
                    addr: addr_of(peer),
                    outbound,
                    role: if peer == PUBLISHER {
                        crate::trust::PeerRole::Operator
                    } else {
                        crate::trust::PeerRole::Node
                    },
                }
            }
            Delivery::Down { conn } => {
                if !n.conns.remove(&conn) {
                    return;
                }
                Input::PeerDown(conn)
            }
            Delivery::DialFailed(addr) => Input::DialFailed(addr),
            Delivery::Activated(app, seq, result) => Input::Activated { app, seq, result },
            Delivery::Prefetched(app, seq, result) => Input::Prefetched { app, seq, result },
            Delivery::Timer => {
                if n.timer_at.is_none_or(|t| t > now) {
                    return;
                }
                n.timer_at = None;
                Input::Timeout
            }
            Delivery::Health(_) | Delivery::Trial(..) => unreachable!("handled above"),
        };
        node.handle(now, input);
        self.drain(id);
    }

    fn drain(&mut self, id: Id) {
        let now = self.now;
        loop {
            let Some(out) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.node.as_mut())
                .and_then(|n| n.poll_output())
            else {
                break;
            };
            match out {
                Output::Send { to, msg } => self.send_from(id, to, msg),
                Output::Status { to, status } => self.send_from(id, to, Message::Status(status)),
                Output::ServeChunk { to, digest, index } => {
                    let msg = if self.nodes[&id].disk.blobs.contains(&digest) {
                        self.chunk_reply(digest, index)
                    } else {
                        ContentMsg::NoChunk { digest, index }
                    };
                    self.send_from(id, to, msg.into());
                }
                Output::Activate(a) => self.activate(id, *a),
                Output::Prefetch(p) => self.prefetch(id, *p),
                Output::Roots { roots, floor_ms } => {
                    // Durable before anything that follows (the agent writes its store).
                    let d = &mut self.nodes.get_mut(&id).expect("exists").disk;
                    d.roots.extend(roots);
                    d.floor_ms = d.floor_ms.max(floor_ms);
                }
                // A simulated compile is not interrupted: it completes and reports as usual.
                Output::CancelActivation { .. } => {}
                Output::Dial(addr) => self.dial(id, addr),
                Output::Disconnect { peer, reason } => {
                    if self.record_events {
                        let other = self.peer_of(id, peer).filter(|o| *o != PUBLISHER);
                        self.disconnects.push((id, other, reason));
                    }
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.conns.remove(&peer);
                    }
                    // This side closes at once; the other side hears after one latency.
                    if let Some(l) = self.links.get(&peer)
                        && l.up
                    {
                        let other = l.other(id);
                        let lat = self.latency(id, other);
                        self.links.get_mut(&peer).expect("exists").up = false;
                        if other != PUBLISHER {
                            self.schedule(now + lat, other, Delivery::Down { conn: peer });
                        }
                    }
                    let n = self.nodes.get_mut(&id).expect("exists");
                    if let Some(node) = n.node.as_mut() {
                        node.handle(now, Input::PeerDown(peer));
                    }
                }
                Output::Event(e) => {
                    let n = self.nodes.get_mut(&id).expect("exists");
                    match &e {
                        Event::Accepted { app, seq, .. } => {
                            // The position never decreases: each accepted head is newer than
                            // anything this incarnation accepted and than what its disk holds.
                            // (The event names the seq; the epoch is the newest head's.)
                            let epoch = n
                                .node
                                .as_ref()
                                .and_then(|node| node.newest_head(app))
                                .filter(|h| h.head.seq == *seq)
                                .map_or(0, |h| h.head.epoch);
                            let pos = Position { epoch, seq: *seq };
                            let floor = n
                                .accepted_seq
                                .get(app)
                                .copied()
                                .max(n.disk.records.get(app).map(|r| position(&r.head)));
                            assert!(
                                floor.is_none_or(|f| f < pos),
                                "safety (seed {}): node {id} accepted {app} {pos} after {floor:?}",
                                self.cfg.seed
                            );
                            n.accepted_seq.insert(app.clone(), pos);
                            n.accepted_at.entry((app.clone(), *seq)).or_insert(now);
                        }
                        Event::Activated { app, seq, .. } => {
                            n.activated_at.entry((app.clone(), *seq)).or_insert(now);
                        }
                        _ => {}
                    }
                    if self.record_events {
                        self.events.push((id, e));
                    }
                }
            }
        }
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(at) = n.node.as_ref().and_then(|n| n.poll_timeout())
            && n.timer_at.is_none_or(|t| t > at)
        {
            n.timer_at = Some(at);
            self.schedule(at.max(now), id, Delivery::Timer);
        }
    }

    /// Feeds `input` to live node `id` now, as its shell would (a trial that failed, an
    /// operator's local override), and processes what it outputs.
    pub fn input(&mut self, id: Id, input: Input<Conn>) {
        let now = self.now;
        if let Some(node) = self.nodes.get_mut(&id).and_then(|n| n.node.as_mut()) {
            node.handle(now, input);
            self.drain(id);
        }
    }

    /// Makes node `from` send `msg` over its connection `conn`, as if its node had (a forged
    /// or replayed message from inside the mesh).
    pub fn inject(&mut self, from: Id, conn: Conn, msg: Message) {
        self.transmit(from, conn, msg);
    }

    /// The node at the other end of `id`'s connection `conn` ([`PUBLISHER`] for the publisher).
    pub fn peer_of(&self, id: Id, conn: Conn) -> Option<Id> {
        self.links.get(&conn).map(|l| l.other(id))
    }

    /// The overlay among live nodes: each live node's active view, as live node ids.
    pub fn overlay(&self) -> BTreeMap<Id, Vec<Id>> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| Some((*id, n.node.as_ref()?)))
            .map(|(id, node)| {
                let peers = node
                    .active_peers()
                    .iter()
                    .filter_map(|c| self.peer_of(id, *c))
                    .filter(|p| self.nodes.get(p).is_some_and(|n| n.alive()))
                    .collect();
                (id, peers)
            })
            .collect()
    }
}
