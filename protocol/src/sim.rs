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
//! verify against the fleet's trust policy, the content must be exactly the signed release's
//! bytes, and the node's seq for the app must grow (across crashes too: records persist); every
//! head a node accepts must be newer than what it accepted since it started and than what its
//! disk holds.
//!
//! Faults can be injected per node ([`Faults`]): a lying node corrupts every chunk it serves, a
//! silent one never answers chunk requests.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::head::{SignedHead, TrustPolicy};
use crate::node::{ActivationError, AppRecord, Event, Input, Node, NodeConfig, Output};
use crate::release::{AppName, Digest};
use crate::rng::Rng;
use crate::swarm::bits_full;
use crate::wire::{BroadcastMsg, ContentMsg, Message, NodeId, Payload, Tally, TallyMsg};

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
    Timer,
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
    /// The highest seq accepted per app since the node (re)started, for the seq check.
    accepted_seq: BTreeMap<AppName, u64>,
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
    /// Chunk messages sent and the total time they waited in upload queues.
    pub chunks_sent: u64,
    pub queue_wait: Duration,
}

/// The simulated publisher: holds content, serves chunks, collects the tallies it is sent.
#[derive(Debug, Default)]
pub struct Publisher {
    pub content: BTreeMap<Digest, Payload>,
    pub tallies: BTreeMap<(AppName, u64), Tally>,
    upload_free: Option<Instant>,
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
    trust: Option<TrustPolicy>,
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
            events: Vec::new(),
            disconnects: Vec::new(),
            record_events: true,
            side: BTreeMap::new(),
            links: BTreeMap::new(),
            next_conn: 1,
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next: 0,
            trust: None,
            chunk_sizes: BTreeMap::new(),
        }
    }

    /// Adds and starts node `id` with `cfg` (its contacts are in `cfg.membership.contacts`).
    pub fn add(&mut self, id: Id, mut cfg: NodeConfig) {
        cfg.membership.advertise = Some(addr_of(id));
        self.trust.get_or_insert_with(|| cfg.trust.clone());
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
                accepted_seq: BTreeMap::new(),
                upload_free: self.now,
                timer_at: None,
                conns: BTreeSet::new(),
            },
        );
        self.drain(id);
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

    fn latency(&self, a: Id, b: Id) -> Duration {
        let (lo, hi) = self.cfg.latency;
        if hi <= lo {
            return lo;
        }
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        let mut r = Rng::new(self.cfg.seed ^ x.wrapping_mul(0x9E37_79B9) ^ y.rotate_left(32));
        lo + (hi - lo).mul_f64(r.unit())
    }

    fn reachable(&self, a: Id, b: Id) -> bool {
        let side = |x: Id| self.side.get(&x).copied().unwrap_or(0);
        self.side.is_empty() || side(a) == side(b)
    }

    fn schedule(&mut self, at: Instant, to: Id, d: Delivery) {
        let k = self.next;
        self.next += 1;
        self.queue.push(Reverse((at, k, to)));
        self.payloads.insert(k, d);
    }

    /// Message size on the wire: a chunk is its data plus a fixed envelope, anything else its
    /// postcard encoding plus a frame header ([`crate::wire::encoded_len`]: no framing, no
    /// copy).
    fn size_of(msg: &Message) -> usize {
        match msg {
            Message::Content(ContentMsg::Chunk { data, .. }) => data.len() + 48,
            m => crate::wire::encoded_len(m) + 8,
        }
    }

    /// Sends `msg` from `from` over `conn`, through `from`'s upload link.
    fn transmit(&mut self, from: Id, conn: Conn, msg: Message) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        if !link.up {
            return;
        }
        let to = link.other(from);
        let size = Self::size_of(&msg);
        let now = self.now;
        let serialise = self.cfg.upload_bps.map_or(Duration::ZERO, |bps| {
            Duration::from_secs_f64(size as f64 * 8.0 / bps as f64)
        });
        let free = if from == PUBLISHER {
            self.publisher.upload_free.get_or_insert(now)
        } else {
            &mut self
                .nodes
                .get_mut(&from)
                .expect("sender exists")
                .upload_free
        };
        // Chunk data queues behind chunk data; small control messages go ahead of queued chunks
        // (the shell sends them on higher-priority streams) and only delay the chunks behind
        // them by their own serialisation time.
        let depart = if msg.is_payload() {
            let d = (*free).max(now) + serialise;
            *free = d;
            self.traffic.queue_wait += d - serialise - now;
            self.traffic.chunks_sent += 1;
            d
        } else {
            *free = (*free).max(now) + serialise;
            now + serialise
        };
        let lat = self.latency(from, to);
        let mut at = depart + lat;
        if self.cfg.loss > 0.0 {
            let packets = size.div_ceil(1200) as i32;
            let p_any = 1.0 - (1.0 - self.cfg.loss).powi(packets);
            if self.rng.chance(p_any) {
                at += lat * 2 + Duration::from_millis(5);
            }
        }
        if msg.is_payload() {
            if from == PUBLISHER {
                self.traffic.publisher_egress += size as u64 - 48;
            }
        } else {
            self.traffic.control += size as u64;
        }
        self.traffic.messages += 1;
        self.schedule(at, to, Delivery::Msg { conn, msg });
    }

    fn dial(&mut self, from: Id, addr: SocketAddr) {
        let target = id_of(addr).filter(|t| {
            *t != from && self.nodes.get(t).is_some_and(|n| n.alive()) && self.reachable(from, *t)
        });
        let Some(to) = target else {
            let at = self.now + self.cfg.dial_timeout;
            self.schedule(at, from, Delivery::DialFailed(addr));
            return;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links.insert(
            conn,
            Link {
                a: from,
                b: to,
                up: true,
            },
        );
        self.nodes
            .get_mut(&from)
            .expect("dialer")
            .conns
            .insert(conn);
        self.nodes.get_mut(&to).expect("target").conns.insert(conn);
        let lat = self.latency(from, to);
        let at = self.now;
        self.schedule(
            at + lat,
            to,
            Delivery::Up {
                conn,
                peer: from,
                outbound: false,
            },
        );
        self.schedule(
            at + lat * 2,
            from,
            Delivery::Up {
                conn,
                peer: to,
                outbound: true,
            },
        );
    }

    /// Breaks `conn`: both live ends learn of it after `after`.
    fn break_link(&mut self, conn: Conn, after: Duration) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if !link.up {
            return;
        }
        link.up = false;
        let (a, b) = (link.a, link.b);
        let at = self.now + after;
        for x in [a, b] {
            if x != PUBLISHER {
                self.schedule(at, x, Delivery::Down { conn });
            }
        }
    }

    /// The publisher connects to `entry` and pushes `head`, holding `content`.
    pub fn publish(&mut self, entry: Id, head: SignedHead, content: Vec<u8>) {
        let digest = head.head.release.digest;
        let n = head.head.release.chunks.len() as u32;
        self.publisher
            .content
            .insert(digest, Payload(content.into()));
        self.chunk_sizes
            .insert(digest, head.head.release.chunk_size as usize);
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links.insert(
            conn,
            Link {
                a: PUBLISHER,
                b: entry,
                up: true,
            },
        );
        self.nodes
            .get_mut(&entry)
            .expect("entry")
            .conns
            .insert(conn);
        let lat = self.latency(PUBLISHER, entry);
        let at = self.now + lat;
        self.schedule(
            at,
            entry,
            Delivery::Up {
                conn,
                peer: PUBLISHER,
                outbound: false,
            },
        );
        self.now += lat; // the push follows the handshake
        let push = BroadcastMsg::Head(Box::new(head));
        self.transmit(PUBLISHER, conn, push.into());
        let have = ContentMsg::Have {
            digest,
            bits: bits_full(n),
            want: false,
        };
        self.transmit(PUBLISHER, conn, have.into());
        self.now -= lat;
    }

    /// Crashes `id`: its memory is lost, its disk kept; peers notice after `detect_after`.
    pub fn crash(&mut self, id: Id) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.node = None;
        n.timer_at = None;
        n.accepted_seq.clear();
        let conns: Vec<Conn> = std::mem::take(&mut n.conns).into_iter().collect();
        let detect = self.cfg.detect_after;
        for c in conns {
            self.break_link(c, detect);
        }
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: Id) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.node.is_some() {
            return;
        }
        let mut cfg = n.cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(0x1234_5678);
        n.cfg.seed = cfg.seed;
        let records: Vec<AppRecord> = n.disk.records.values().cloned().collect();
        n.node = Some(Node::new(now, cfg, records, n.disk.blobs.iter().copied()));
        n.upload_free = now;
        self.drain(id);
    }

    /// Splits the nodes: `side(id)` picks each node's side. Connections across break.
    pub fn partition(&mut self, side: impl Fn(Id) -> u8) {
        self.side = self.nodes.keys().map(|i| (*i, side(*i))).collect();
        let cross: Vec<Conn> = self
            .links
            .iter()
            .filter(|(_, l)| l.up && l.a != PUBLISHER && !self.reachable(l.a, l.b))
            .map(|(c, _)| *c)
            .collect();
        let detect = self.cfg.detect_after;
        for c in cross {
            self.break_link(c, detect);
        }
    }

    pub fn heal(&mut self) {
        self.side.clear();
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
            Delivery::Timer => {
                if n.timer_at.is_none_or(|t| t > now) {
                    return;
                }
                n.timer_at = None;
                Input::Timeout
            }
        };
        node.handle(now, input);
        self.drain(id);
    }

    fn publisher_receive(&mut self, conn: Conn, msg: Message) {
        match msg {
            Message::Content(ContentMsg::GetChunk { digest, index }) => {
                let reply = match self.publisher.content.get(&digest) {
                    Some(c) => {
                        let cs = self.chunk_size_of(&digest);
                        let start = (index as usize * cs).min(c.len());
                        let end = (start + cs).min(c.len());
                        ContentMsg::Chunk {
                            digest,
                            index,
                            data: Payload(c.0.slice(start..end)),
                        }
                    }
                    None => ContentMsg::NoChunk { digest, index },
                };
                self.transmit(PUBLISHER, conn, reply.into());
            }
            Message::Tally(TallyMsg::Subtree(t)) => {
                if let Some(app) = t.app.clone() {
                    let e = self.publisher.tallies.entry((app, t.seq)).or_default();
                    if e.version < t.version || e.app.is_none() {
                        *e = t;
                    }
                }
            }
            _ => {}
        }
    }

    fn chunk_size_of(&self, digest: &Digest) -> usize {
        self.chunk_sizes.get(digest).copied().unwrap_or(1)
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
                Output::ServeChunk { to, digest, index } => {
                    let msg = match self.publisher.content.get(&digest).cloned() {
                        Some(c) if self.nodes[&id].disk.blobs.contains(&digest) => {
                            let cs = self.chunk_size_of(&digest);
                            let start = (index as usize * cs).min(c.len());
                            let end = (start + cs).min(c.len());
                            ContentMsg::Chunk {
                                digest,
                                index,
                                data: Payload(c.0.slice(start..end)),
                            }
                        }
                        _ => ContentMsg::NoChunk { digest, index },
                    };
                    self.send_from(id, to, msg.into());
                }
                Output::Activate(a) => self.activate(id, *a),
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
                            // Seq never decreases: each accepted head is newer than anything
                            // this incarnation accepted and than what its disk holds.
                            let floor = n
                                .accepted_seq
                                .get(app)
                                .copied()
                                .max(n.disk.records.get(app).map(|r| r.head.head.seq));
                            assert!(
                                floor.is_none_or(|f| f < *seq),
                                "safety (seed {}): node {id} accepted {app} seq {seq} after {floor:?}",
                                self.cfg.seed
                            );
                            n.accepted_seq.insert(app.clone(), *seq);
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

    /// A node's message on its way out, through its injected faults.
    fn send_from(&mut self, id: Id, conn: Conn, msg: Message) {
        let n = self.nodes.get_mut(&id).expect("sender exists");
        let msg = match msg {
            Message::Content(ContentMsg::Chunk { .. } | ContentMsg::NoChunk { .. })
                if n.faults.silent_chunks =>
            {
                n.requests_ignored += 1;
                return;
            }
            Message::Content(ContentMsg::Chunk {
                digest,
                index,
                data,
            }) => {
                n.chunks_served += 1;
                let data = if n.faults.corrupt_chunks {
                    let mut bad = data.to_vec();
                    if let Some(b) = bad.first_mut() {
                        *b ^= 0xff;
                    }
                    Payload::from(bad)
                } else {
                    data
                };
                ContentMsg::Chunk {
                    digest,
                    index,
                    data,
                }
                .into()
            }
            m => m,
        };
        self.transmit(id, conn, msg);
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

    fn activate(&mut self, id: Id, a: crate::node::Activation) {
        let h = &a.head.head;
        let trust = self.trust.clone().expect("a node was added");
        assert!(
            a.head.verify(&trust).is_ok(),
            "safety (seed {}): node {id} asked to activate a head that does not verify",
            self.cfg.seed
        );
        let canonical = self.publisher.content.get(&h.release.digest).cloned();
        let n = self.nodes.get_mut(&id).expect("node exists");
        let content_ok = match &a.content {
            Some(c) => canonical.as_ref().is_some_and(|k| k[..] == c[..]),
            None => n.disk.blobs.contains(&h.release.digest),
        };
        assert!(
            content_ok,
            "safety (seed {}): node {id} asked to activate content that is not the signed release",
            self.cfg.seed
        );
        let refused = || ActivationError::Refused {
            stage: "compile".into(),
            reason: "not a component".into(),
        };
        let result = match (a.content.as_deref(), canonical.as_ref()) {
            (Some(c), _) if !(self.accepts)(c) => Err(refused()),
            (None, Some(c)) if !(self.accepts)(c) => Err(refused()),
            _ => {
                if let Some(r) = n.disk.records.get(&h.app) {
                    assert!(
                        r.head.head.seq < h.seq,
                        "safety (seed {}): node {id} seq went backwards for {}",
                        self.cfg.seed,
                        h.app
                    );
                }
                n.disk.records.insert(h.app.clone(), a.record.clone());
                n.disk.blobs.insert(h.release.digest);
                Ok(())
            }
        };
        let d = Delivery::Activated(h.app.clone(), h.seq, result);
        let at = self.now + self.cfg.activate_delay;
        self.schedule(at, id, d);
    }
}
