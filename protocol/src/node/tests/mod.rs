//! Unit tests of the node's layers: two or three [`Node`]s (and a few scripted peers) driven by
//! hand, quinn-proto `Pair` style.
//!
//! [`Net`] owns the nodes, a clock, the connections and one FIFO of deliveries (no latency).
//! It plays every node's shell: `Send` is delivered to the other end, `ServeChunk` reads the
//! content the test registered, `Activate` is recorded (and answered `Ok` when
//! `auto_activate`), a `Disconnect` closes the link and is fed back as `PeerDown`. A *fake*
//! peer ([`Net::fake`]) is an endpoint the test speaks for: what nodes send it lands in
//! [`Net::inbox`]; the publisher fake ([`Net::publish`]) answers chunk requests by itself.
//! Tests drop or reorder by editing [`Net::queue`] or setting [`Net::drop`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::head::HeadKind;
use crate::scenario::{self, signed};
use crate::sim::{addr_of, node_id};
use crate::trust::PeerRole;
use crate::wire::{ContentMsg, Payload, Position};

mod activation;
mod broadcast;
mod census;
mod content;
mod fresh;
mod heads;
mod links;
mod rollout;
mod serve;
mod tally;
mod trust;

pub(super) type Conn = u64;

/// Endpoints from here on are fakes.
const FAKE: usize = 1000;

#[derive(Debug)]
pub(super) enum Ev {
    Up {
        conn: Conn,
        peer: usize,
        outbound: bool,
    },
    Down(Conn),
    Msg(Conn, Message),
    Input(Input<Conn>),
}

/// Changes node `i`'s config before it starts.
pub(super) type Tweak = Box<dyn Fn(usize, &mut NodeConfig)>;

/// Decides whether a message in flight is lost: (from, to, message).
pub(super) type DropRule = Box<dyn FnMut(usize, usize, &Message) -> bool>;

pub(super) struct Net {
    pub now: Instant,
    pub nodes: Vec<Node<Conn>>,
    /// Connection → (dialer, target, up).
    pub conns: BTreeMap<Conn, (usize, usize, bool)>,
    next_conn: Conn,
    pub queue: VecDeque<(usize, Ev)>,
    /// Every message delivered to a node or a fake: (from, to, message).
    pub sent: Vec<(usize, usize, Message)>,
    /// Messages nodes sent to fakes, not yet taken by the test: (fake, conn, message).
    pub inbox: Vec<(usize, Conn, Message)>,
    /// Activation requests: (node, activation).
    pub activations: Vec<(usize, Activation)>,
    /// Prefetch requests: (node, prefetch).
    pub prefetches: Vec<(usize, Prefetch)>,
    /// Other outputs worth checking: disconnects (node, reason), cancels, events.
    pub disconnects: Vec<(usize, String)>,
    pub cancels: Vec<(usize, u64)>,
    /// Roots each node asked to persist: (node, roots, floor_ms).
    pub roots: Vec<(usize, Vec<crate::trust::SignedRoot>, u64)>,
    pub events: Vec<(usize, Event)>,
    /// Content by digest, for the publisher and `ServeChunk`.
    pub content: BTreeMap<Digest, Vec<u8>>,
    /// Answer every `Activate` with `Ok` at once.
    pub auto_activate: bool,
    /// Drops a message in flight when it returns true: (from, to, message).
    pub drop: DropRule,
    /// Fakes that answer chunk requests from `content` (the publisher).
    serving_fakes: BTreeSet<usize>,
    /// Applied to every node's config before it starts (see [`Net::new_with`]).
    pub tweak: Tweak,
    /// What each fake was admitted as (an operator unless said otherwise).
    pub roles: BTreeMap<usize, PeerRole>,
    next_fake: usize,
}

pub(super) fn app() -> AppName {
    AppName::new("shop").unwrap()
}

/// A signed head for `app()` with 8 KiB chunks.
pub(super) fn head(seq: u64, body: &[u8]) -> SignedHead {
    signed("shop", seq, body, 8 * 1024, HeadKind::Release)
}

pub(super) fn chunk_of(body: &[u8], sh: &SignedHead, index: u32) -> Payload {
    let cs = sh.head.release.chunk_size as usize;
    let start = (index as usize * cs).min(body.len());
    let end = (start + cs).min(body.len());
    body[start..end].to_vec().into()
}

impl Net {
    /// `n` nodes; `contacts(i)` are the nodes node `i` joins through (it starts at once).
    pub fn new(n: usize, contacts: impl Fn(usize) -> Vec<usize>) -> Self {
        Net::new_with(n, contacts, |_, _| {})
    }

    /// [`Net::new`] with every node's config changed by `tweak` (also for nodes added later).
    pub fn new_with(
        n: usize,
        contacts: impl Fn(usize) -> Vec<usize>,
        tweak: impl Fn(usize, &mut NodeConfig) + 'static,
    ) -> Self {
        let mut net = Net {
            tweak: Box::new(tweak),
            now: Instant::now(),
            nodes: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            queue: VecDeque::new(),
            sent: Vec::new(),
            inbox: Vec::new(),
            activations: Vec::new(),
            prefetches: Vec::new(),
            disconnects: Vec::new(),
            cancels: Vec::new(),
            roots: Vec::new(),
            events: Vec::new(),
            content: BTreeMap::new(),
            auto_activate: true,
            drop: Box::new(|_, _, _| false),
            serving_fakes: BTreeSet::new(),
            roles: BTreeMap::new(),
            next_fake: FAKE,
        };
        for i in 0..n {
            net.add(i, contacts(i), [], []);
            net.run();
        }
        net
    }

    pub fn config(i: usize, contacts: &[usize]) -> NodeConfig {
        let mut cfg = scenario::node_config(i, 3);
        cfg.membership.contacts = contacts.iter().map(|c| addr_of(*c)).collect();
        cfg.membership.advertise = Some(addr_of(i));
        cfg.membership.join_contacts = contacts.len().max(1);
        cfg.membership.probe_chance = 0.0;
        // One neighbour's summary is enough here; the freshness tests set their own.
        cfg.freshness_peers = 1;
        cfg
    }

    /// Adds node `i` (the next index) holding `records` and `blobs`.
    pub fn add(
        &mut self,
        i: usize,
        contacts: Vec<usize>,
        records: impl IntoIterator<Item = AppRecord>,
        blobs: impl IntoIterator<Item = Digest>,
    ) {
        assert_eq!(i, self.nodes.len());
        let mut cfg = Net::config(i, &contacts);
        (self.tweak)(i, &mut cfg);
        self.nodes.push(Node::new(self.now, cfg, records, blobs));
        self.drain(i);
    }

    fn other(&self, conn: Conn, me: usize) -> usize {
        let (a, b, _) = self.conns[&conn];
        if a == me { b } else { a }
    }

    fn open(&mut self, from: usize, to: usize) -> Conn {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(conn, (from, to, true));
        if to < FAKE {
            self.queue.push_back((
                to,
                Ev::Up {
                    conn,
                    peer: from,
                    outbound: false,
                },
            ));
        }
        if from < FAKE {
            self.queue.push_back((
                from,
                Ev::Up {
                    conn,
                    peer: to,
                    outbound: true,
                },
            ));
        }
        conn
    }

    /// A scripted peer connected to `node` (a client link: not in the overlay). Returns the
    /// fake's endpoint and the connection.
    pub fn fake(&mut self, node: usize) -> (usize, Conn) {
        self.fake_as(node, PeerRole::Operator)
    }

    /// A scripted peer admitted as `role`.
    pub fn fake_as(&mut self, node: usize, role: PeerRole) -> (usize, Conn) {
        let f = self.next_fake;
        self.next_fake += 1;
        self.roles.insert(f, role);
        let conn = self.open(f, node);
        self.run();
        (f, conn)
    }

    /// Another connection from fake `f` to `node` (it dials again).
    pub fn reconnect(&mut self, f: usize, node: usize) -> Conn {
        let conn = self.open(f, node);
        self.run();
        conn
    }

    /// A publisher connects to `entry`, pushes `sh` and announces the whole `body`; it serves
    /// chunk requests. Returns its endpoint and connection.
    pub fn publish(&mut self, entry: usize, sh: &SignedHead, body: &[u8]) -> (usize, Conn) {
        self.content.insert(sh.head.release.digest, body.to_vec());
        let (f, conn) = self.fake(entry);
        self.serving_fakes.insert(f);
        self.say(f, conn, BroadcastMsg::Head(Box::new(sh.clone())));
        let n = sh.head.release.chunk_count();
        let have = ContentMsg::Have {
            digest: sh.head.release.digest,
            bits: crate::swarm::bits_full(n),
            want: false,
        };
        self.say(f, conn, have);
        (f, conn)
    }

    /// Fake `f` sends `msg` over `conn` (delivered in order, after what is queued).
    pub fn say(&mut self, f: usize, conn: Conn, msg: impl Into<Message>) {
        let to = self.other(conn, f);
        let msg = msg.into();
        self.sent.push((f, to, msg.clone()));
        self.queue.push_back((to, Ev::Msg(conn, msg)));
    }

    /// Feeds `input` to node `i` (after what is queued).
    pub fn input(&mut self, i: usize, input: Input<Conn>) {
        self.queue.push_back((i, Ev::Input(input)));
    }

    /// Takes what nodes sent to fake `f`.
    pub fn take(&mut self, f: usize) -> Vec<Message> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inbox)
            .into_iter()
            .partition(|(g, _, _)| *g == f);
        self.inbox = rest;
        mine.into_iter().map(|(_, _, m)| m).collect()
    }

    fn deliver(&mut self, from: usize, conn: Conn, msg: Message) {
        if !self.conns.get(&conn).is_some_and(|c| c.2) {
            return;
        }
        let to = self.other(conn, from);
        if (self.drop)(from, to, &msg) {
            return;
        }
        if to >= FAKE {
            self.sent.push((from, to, msg.clone()));
            if self.serving_fakes.contains(&to)
                && let Message::Content(ContentMsg::GetChunk { digest, index }) = msg
            {
                let reply = self.chunk_reply(digest, index);
                self.say(to, conn, reply);
            } else {
                self.inbox.push((to, conn, msg));
            }
            return;
        }
        self.sent.push((from, to, msg.clone()));
        self.queue.push_back((to, Ev::Msg(conn, msg)));
    }

    fn chunk_reply(&self, digest: Digest, index: u32) -> ContentMsg {
        let Some(body) = self.content.get(&digest) else {
            return ContentMsg::NoChunk { digest, index };
        };
        let sh_chunk = 8 * 1024;
        let start = (index as usize * sh_chunk).min(body.len());
        let end = (start + sh_chunk).min(body.len());
        ContentMsg::Chunk {
            digest,
            index,
            data: body[start..end].to_vec().into(),
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(o) = self.nodes[i].poll_output() {
            match o {
                Output::Send { to, msg } => self.deliver(i, to, msg),
                Output::Status { to, status } => self.deliver(i, to, Message::Status(status)),
                Output::ServeChunk { to, digest, index } => {
                    let reply = self.chunk_reply(digest, index);
                    self.deliver(i, to, reply.into());
                }
                Output::Activate(a) => {
                    if self.auto_activate {
                        let h = &a.head.head;
                        let (app, seq) = (h.app.clone(), h.seq);
                        self.input(
                            i,
                            Input::Activated {
                                app,
                                seq,
                                result: Ok(()),
                            },
                        );
                    }
                    self.activations.push((i, *a));
                }
                Output::Prefetch(p) => {
                    if self.auto_activate {
                        let h = &p.head.head;
                        let (app, seq) = (h.app.clone(), h.seq);
                        self.input(
                            i,
                            Input::Prefetched {
                                app,
                                seq,
                                result: Ok(()),
                            },
                        );
                    }
                    self.prefetches.push((i, *p));
                }
                Output::Dial(addr) => {
                    let j = (0..self.nodes.len()).find(|j| addr_of(*j) == addr);
                    match j {
                        Some(j) => {
                            self.open(i, j);
                        }
                        None => self.input(i, Input::DialFailed(addr)),
                    }
                }
                Output::Disconnect { peer, reason } => {
                    self.disconnects.push((i, reason));
                    if let Some(c) = self.conns.get_mut(&peer)
                        && c.2
                    {
                        c.2 = false;
                        let other = self.other(peer, i);
                        if other < FAKE {
                            self.queue.push_back((other, Ev::Down(peer)));
                        }
                    }
                    self.nodes[i].handle(self.now, Input::PeerDown(peer));
                }
                Output::CancelActivation { seq, .. } => self.cancels.push((i, seq)),
                Output::Roots { roots, floor_ms } => self.roots.push((i, roots, floor_ms)),
                Output::Event(e) => self.events.push((i, e)),
            }
        }
    }

    pub fn step(&mut self) -> bool {
        let Some((i, ev)) = self.queue.pop_front() else {
            return false;
        };
        let input = match ev {
            Ev::Up {
                conn,
                peer,
                outbound,
            } => Input::PeerUp {
                peer: conn,
                node: if peer >= FAKE {
                    NodeId([peer as u8; 32])
                } else {
                    node_id(peer)
                },
                addr: addr_of(peer),
                outbound,
                role: if peer >= FAKE {
                    self.roles[&peer]
                } else {
                    PeerRole::Node
                },
            },
            Ev::Down(conn) => Input::PeerDown(conn),
            Ev::Msg(conn, msg) => {
                if !self.conns[&conn].2 {
                    return true;
                }
                Input::Message(conn, msg)
            }
            Ev::Input(input) => input,
        };
        self.nodes[i].handle(self.now, input);
        self.drain(i);
        true
    }

    pub fn run(&mut self) {
        let mut steps = 0;
        while self.step() {
            steps += 1;
            assert!(steps < 100_000, "no quiet point: the nodes loop");
        }
    }

    /// Moves the clock by `d`, firing every node's timers due on the way (in time order).
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.run();
            let next = (0..self.nodes.len())
                .filter_map(|i| self.nodes[i].poll_timeout().map(|t| (t, i)))
                .min();
            match next {
                Some((t, i)) if t <= end => {
                    self.now = self.now.max(t);
                    self.nodes[i].handle(self.now, Input::Timeout);
                    self.drain(i);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Node `i`'s connection to node (or fake) `j`.
    pub fn conn(&self, i: usize, j: usize) -> Conn {
        *self
            .conns
            .iter()
            .rev()
            .find(|(_, (a, b, up))| *up && ((*a, *b) == (i, j) || (*a, *b) == (j, i)))
            .expect("a connection")
            .0
    }

    /// Messages between anyone matching `f`.
    pub fn count_all(&self, f: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|(_, _, m)| f(m)).count()
    }

    /// Messages from `from` to `to` matching `f`.
    pub fn count(&self, from: usize, to: usize, f: impl Fn(&Message) -> bool) -> usize {
        self.sent
            .iter()
            .filter(|(a, b, m)| *a == from && *b == to && f(m))
            .count()
    }

    pub fn accepted(&self, i: usize, seq: u64) -> bool {
        self.events
            .iter()
            .any(|(n, e)| *n == i && matches!(e, Event::Accepted { seq: s, .. } if *s == seq))
    }

    pub fn seq(&self, i: usize) -> Option<u64> {
        self.nodes[i].app(&app()).map(|r| r.head.head.seq)
    }
}

/// Position `seq` in epoch 0 (no fleet root).
pub(super) fn at(seq: u64) -> Position {
    Position { epoch: 0, seq }
}

pub(super) fn is_gossip(m: &Message) -> bool {
    matches!(m, Message::Broadcast(BroadcastMsg::Gossip { .. }))
}

pub(super) fn is_tally(m: &Message) -> bool {
    matches!(m, Message::Tally(TallyMsg::Subtree(_)))
}
