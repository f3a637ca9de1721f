//! A deterministic simulator for [`Node`]s: no threads, no wall clock, no sockets.
//!
//! Nodes are kept in a `BTreeMap` (fixed iteration order) and everything that happens is an
//! event in a time-ordered queue (ties broken by insertion order), so a run is a pure function
//! of its inputs. Each simulated node has an in-memory "store" of verified content and
//! activates a release instantly unless the content is refused by the simulator's `accepts`
//! predicate (standing in for "is a valid component").
//!
//! Safety is checked on every activation: a node's seq for an app never decreases, and nothing
//! is activated whose content does not match its signed release.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use crate::head::SignedHead;
use crate::node::{Event, Input, Node, NodeConfig, Output};
use crate::release::{AppName, Digest};
use crate::wire::Message;

/// A simulated node id.
pub type Id = usize;

enum Delivery {
    Msg(Id, Message),
    Up(Id),
    Down(Id),
    Activated(AppName, u64, Result<(), String>),
    Timer,
}

/// One simulated node and its in-memory store.
pub struct SimNode {
    pub node: Node<Id>,
    pub store: BTreeMap<Digest, Vec<u8>>,
    /// The (seq, digest) serving per app.
    pub active: BTreeMap<AppName, (u64, Digest)>,
    /// Chunk requests this node answered from its store.
    pub chunks_served: u64,
    timer_at: Option<Instant>,
}

/// The simulator.
pub struct Sim {
    pub now: Instant,
    pub nodes: BTreeMap<Id, SimNode>,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Chunk size of every release in the simulation (the store keeps whole blobs).
    pub chunk_size: usize,
    /// Content the simulated runtime refuses to activate.
    pub accepts: fn(&[u8]) -> bool,
    /// Every event emitted, with the node that emitted it.
    pub events: Vec<(Id, Event)>,
    links: BTreeSet<(Id, Id)>,
    queue: BinaryHeap<Reverse<(Instant, u64, Id)>>,
    payloads: BTreeMap<u64, Delivery>,
    next: u64,
}

impl Sim {
    /// An empty simulation starting at `start`.
    pub fn new(start: Instant) -> Self {
        Sim {
            now: start,
            nodes: BTreeMap::new(),
            latency: Duration::from_millis(10),
            chunk_size: crate::release::DEFAULT_CHUNK_SIZE as usize,
            accepts: |_| true,
            events: Vec::new(),
            links: BTreeSet::new(),
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next: 0,
        }
    }

    /// Adds a node holding `content` in its store.
    pub fn add(&mut self, id: Id, cfg: NodeConfig, content: Vec<Vec<u8>>) {
        let store: BTreeMap<Digest, Vec<u8>> =
            content.into_iter().map(|c| (Digest::of(&c), c)).collect();
        let node = Node::new(cfg, [], store.keys().copied());
        self.nodes.insert(
            id,
            SimNode {
                node,
                store,
                active: BTreeMap::new(),
                chunks_served: 0,
                timer_at: None,
            },
        );
    }

    /// Connects `a` and `b` (both see the other come up after one latency).
    pub fn connect(&mut self, a: Id, b: Id) {
        self.links.insert((a.min(b), a.max(b)));
        self.schedule(self.latency, a, Delivery::Up(b));
        self.schedule(self.latency, b, Delivery::Up(a));
    }

    /// Cuts the link between `a` and `b`.
    pub fn disconnect(&mut self, a: Id, b: Id) {
        if self.links.remove(&(a.min(b), a.max(b))) {
            self.schedule(Duration::ZERO, a, Delivery::Down(b));
            self.schedule(Duration::ZERO, b, Delivery::Down(a));
        }
    }

    /// `from` sends `head` to `to`, as a publisher would.
    pub fn inject(&mut self, from: Id, to: Id, head: SignedHead) {
        self.schedule(
            self.latency,
            to,
            Delivery::Msg(from, Message::Head(Box::new(head))),
        );
    }

    /// Delivers a message as if `from` had sent it to `to`.
    pub fn deliver(&mut self, from: Id, to: Id, msg: Message) {
        self.schedule(self.latency, to, Delivery::Msg(from, msg));
    }

    fn schedule(&mut self, after: Duration, to: Id, d: Delivery) {
        let k = self.next;
        self.next += 1;
        self.queue.push(Reverse((self.now + after, k, to)));
        self.payloads.insert(k, d);
    }

    /// Runs until nothing is left to do or `limit` of simulated time has passed.
    /// Returns the simulated time spent.
    pub fn run(&mut self, limit: Duration) -> Duration {
        let start = self.now;
        while let Some(Reverse((at, k, to))) = self.queue.pop() {
            if at > start + limit {
                self.queue.push(Reverse((at, k, to)));
                break;
            }
            self.now = at;
            let d = self.payloads.remove(&k).expect("payload scheduled");
            self.step(to, d);
        }
        self.now - start
    }

    fn step(&mut self, id: Id, d: Delivery) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let input = match d {
            Delivery::Msg(from, msg) => {
                if !self.links.contains(&(id.min(from), id.max(from))) {
                    return; // the link went down while the message was in flight
                }
                Input::Message(from, msg)
            }
            Delivery::Up(p) => Input::PeerUp(p),
            Delivery::Down(p) => Input::PeerDown(p),
            Delivery::Activated(app, seq, result) => Input::Activated { app, seq, result },
            Delivery::Timer => {
                n.timer_at = None;
                Input::Timeout
            }
        };
        n.node.handle(now, input);
        self.drain(id);
    }

    fn drain(&mut self, id: Id) {
        let now = self.now;
        let accepts = self.accepts;
        let chunk_size = self.chunk_size;
        while let Some(out) = self.nodes.get_mut(&id).and_then(|n| n.node.poll_output()) {
            match out {
                Output::Send { to, msg } => self.schedule(self.latency, to, Delivery::Msg(id, msg)),
                Output::ServeChunk { to, digest, index } => {
                    let n = self.nodes.get_mut(&id).expect("node exists");
                    let msg = match n.store.get(&digest) {
                        Some(c) => {
                            n.chunks_served += 1;
                            let cs = chunk_size;
                            let start = index as usize * cs;
                            let end = (start + cs).min(c.len());
                            Message::Chunk {
                                digest,
                                index,
                                data: c.get(start..end).unwrap_or_default().to_vec(),
                            }
                        }
                        None => Message::NoChunk { digest, index },
                    };
                    self.schedule(self.latency, to, Delivery::Msg(id, msg));
                }
                Output::Activate(a) => {
                    let a = *a;
                    let n = self.nodes.get_mut(&id).expect("node exists");
                    let h = &a.head.head;
                    let content = a
                        .content
                        .or_else(|| n.store.get(&h.release.digest).cloned())
                        .expect("activate from store names stored content");
                    assert!(
                        h.release.verify_content(&content).is_ok(),
                        "safety: node {id} asked to activate unverified content"
                    );
                    let result = if accepts(&content) {
                        if let Some((seq, _)) = n.active.get(&h.app) {
                            assert!(*seq < h.seq, "safety: node {id} seq went backwards");
                        }
                        n.active.insert(h.app.clone(), (h.seq, h.release.digest));
                        n.store.insert(h.release.digest, content);
                        Ok(())
                    } else {
                        Err("not a component".to_string())
                    };
                    let d = Delivery::Activated(h.app.clone(), h.seq, result);
                    self.schedule(Duration::ZERO, id, d);
                }
                Output::Disconnect { peer, .. } => self.disconnect(id, peer),
                Output::Event(e) => self.events.push((id, e)),
            }
        }
        let n = self.nodes.get_mut(&id).expect("node exists");
        if let Some(at) = n.node.poll_timeout()
            && n.timer_at.is_none_or(|t| t > at)
        {
            n.timer_at = Some(at);
            let after = at.saturating_duration_since(now);
            self.schedule(after, id, Delivery::Timer);
        }
    }
}

impl SimNode {
    /// The seq active for `app` on this node.
    pub fn seq(&self, app: &str) -> Option<u64> {
        self.active.get(&AppName::new(app).ok()?).map(|(s, _)| *s)
    }
}
