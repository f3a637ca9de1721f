//! The node state machine: what an agent does with heads, chunks and reports.
//!
//! Driven quinn-style: feed it [`Input`]s with [`Node::handle`], then drain [`Node::poll_output`]
//! until it returns `None`, and call `handle(now, Input::Timeout)` at [`Node::poll_timeout`].
//! Time only ever arrives as an argument; the node reads no clock, socket or file.
//!
//! The flow for one head:
//! 1. A head arrives from a peer. Duplicates are dropped quietly; otherwise it is verified
//!    (signature by a trusted key, fleet, release shape) and seq-checked (strictly greater than
//!    the seq held, and than any head already in progress). A refusal changes nothing and is
//!    reported to the sender.
//! 2. If the content is not in the store, a transfer fetches the chunks it lacks from the sender
//!    and the other peers, a bounded number in flight, verifying each against the signed chunk
//!    map. A peer that serves a bad chunk is disconnected; a slow one loses the request after
//!    a deadline and another peer is asked.
//! 3. With the whole content verified (or already stored), the node emits
//!    [`Output::Activate`] with the [`AppRecord`] to persist. The IO shell compiles, persists and
//!    swaps, then feeds back [`Input::Activated`].
//! 4. On success the node relays the head to every other peer and reports `Active` toward the
//!    head's source; reports from further down are forwarded the same way.
//!
//! **Invariants:** the seq held for an app never decreases; nothing reaches `Activate` that is
//! not signed by a trusted key and fully verified; at most one activation per app is in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::head::{HeadError, SignedHead, TrustPolicy};
use crate::release::{AppName, Digest, Release};
use crate::wire::{
    AppStatus, HistoryEntry, MAX_REASON, Message, NodeId, NodeStatus, Outcome, Report,
};

/// A peer handle chosen by the IO shell (a connection id, an index in a simulator…).
pub trait Peer: Copy + Ord + fmt::Debug {}
impl<T: Copy + Ord + fmt::Debug> Peer for T {}

/// Node tuning. [`NodeConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node: NodeId,
    pub trust: TrustPolicy,
    /// A chunk request not answered by then goes to another peer.
    pub chunk_timeout: Duration,
    /// Chunk requests in flight per transfer.
    pub max_inflight_chunks: usize,
    /// When no connected peer has a chunk, ask everyone again after this long.
    pub retry_after: Duration,
    /// History entries kept per app.
    pub history_limit: usize,
    /// Reports about other nodes kept for status.
    pub report_limit: usize,
}

impl NodeConfig {
    pub fn new(node: NodeId, trust: TrustPolicy) -> Self {
        NodeConfig {
            node,
            trust,
            chunk_timeout: Duration::from_secs(10),
            max_inflight_chunks: 8,
            retry_after: Duration::from_secs(1),
            history_limit: 32,
            report_limit: 16_384,
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
    pub fn status(&self, last_error: Option<String>) -> AppStatus {
        let h = &self.head.head;
        AppStatus {
            app: h.app.clone(),
            seq: h.seq,
            kind: h.kind,
            active: h.release.clone(),
            issued_at_ms: h.issued_at_ms,
            history: self.history.clone(),
            last_error,
        }
    }
}

/// Inputs to [`Node::handle`].
#[derive(Debug)]
pub enum Input<P> {
    /// A connection to `P` is up.
    PeerUp(P),
    /// The connection to `P` is gone.
    PeerDown(P),
    /// `P` sent a message.
    Message(P, Message),
    /// The shell finished an [`Output::Activate`]: `Ok` once the record is durable and the
    /// release serves; `Err` with the reason if it could not be activated (nothing was stored).
    Activated {
        app: AppName,
        seq: u64,
        result: Result<(), String>,
    },
    /// The time from [`Node::poll_timeout`] has come.
    Timeout,
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
    /// Close the connection to `peer`, telling it why.
    Disconnect { peer: P, reason: String },
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
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Fetching,
    Activating,
}

#[derive(Debug)]
struct Pending<P> {
    head: SignedHead,
    stage: Stage,
    /// A newer head that arrived while this one was activating.
    next: Option<(SignedHead, P)>,
}

impl<P> Pending<P> {
    fn latest_seq(&self) -> u64 {
        self.next
            .as_ref()
            .map_or(self.head.head.seq, |(h, _)| h.head.seq)
    }
}

#[derive(Debug)]
struct Transfer<P> {
    release: Release,
    chunks: Vec<Option<Vec<u8>>>,
    missing: usize,
    /// Peers to ask, the head's sender first.
    sources: Vec<P>,
    cursor: usize,
    inflight: BTreeMap<u32, (P, Instant)>,
    /// Peers that did not deliver a chunk (no such chunk, or too slow).
    refused: BTreeMap<u32, BTreeSet<P>>,
    retry_at: Option<Instant>,
}

/// The node state machine. See the module docs.
#[derive(Debug)]
pub struct Node<P: Peer> {
    cfg: NodeConfig,
    apps: BTreeMap<AppName, AppRecord>,
    errors: BTreeMap<AppName, String>,
    blobs: BTreeSet<Digest>,
    pending: BTreeMap<AppName, Pending<P>>,
    transfers: BTreeMap<Digest, Transfer<P>>,
    peers: BTreeSet<P>,
    upstream: BTreeMap<(AppName, u64), P>,
    reports: BTreeMap<(NodeId, AppName), Report>,
    out: VecDeque<Output<P>>,
}

impl<P: Peer> Node<P> {
    /// A node that holds `records` (already verified by the caller: disk is untrusted) and the
    /// complete, verified content `blobs`.
    pub fn new(
        cfg: NodeConfig,
        records: impl IntoIterator<Item = AppRecord>,
        blobs: impl IntoIterator<Item = Digest>,
    ) -> Self {
        let mut node = Node {
            apps: records
                .into_iter()
                .map(|r| (r.head.head.app.clone(), r))
                .collect(),
            blobs: blobs.into_iter().collect(),
            cfg,
            errors: BTreeMap::new(),
            pending: BTreeMap::new(),
            transfers: BTreeMap::new(),
            peers: BTreeSet::new(),
            upstream: BTreeMap::new(),
            reports: BTreeMap::new(),
            out: VecDeque::new(),
        };
        let own: Vec<Report> = node
            .apps
            .values()
            .map(|r| node.own_report(&r.head, Outcome::Active))
            .collect();
        for r in own {
            node.reports.insert((r.node, r.app.clone()), r);
        }
        node
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node
    }

    /// The record of `app`, if it has an active release.
    pub fn app(&self, app: &AppName) -> Option<&AppRecord> {
        self.apps.get(app)
    }

    /// The status this node reports.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.cfg.node,
            fleet: self.cfg.trust.fleet.clone(),
            apps: self
                .apps
                .iter()
                .map(|(name, r)| r.status(self.errors.get(name).cloned()))
                .collect(),
            reports: self.reports.values().cloned().collect(),
            peers: self.peers.len() as u32,
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input<P>) {
        match input {
            Input::PeerUp(p) => self.on_peer_up(now, p),
            Input::PeerDown(p) => self.on_peer_down(now, p),
            Input::Message(p, msg) => self.on_message(now, p, msg),
            Input::Activated { app, seq, result } => self.on_activated(now, app, seq, result),
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
            .flat_map(|t| t.inflight.values().map(|(_, d)| *d).chain(t.retry_at))
            .min()
    }

    fn send(&mut self, to: P, msg: Message) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn on_peer_up(&mut self, now: Instant, p: P) {
        if !self.peers.insert(p) {
            return;
        }
        let heads = self
            .apps
            .iter()
            .map(|(a, r)| (a.clone(), r.head.head.seq))
            .collect();
        self.send(p, Message::Summary { heads });
        for t in self.transfers.values_mut() {
            if !t.sources.contains(&p) {
                t.sources.push(p);
            }
        }
        self.pump_all(now);
    }

    fn on_peer_down(&mut self, now: Instant, p: P) {
        self.peers.remove(&p);
        for t in self.transfers.values_mut() {
            t.sources.retain(|s| *s != p);
            t.inflight.retain(|_, (s, _)| *s != p);
        }
        self.pump_all(now);
    }

    fn on_message(&mut self, now: Instant, from: P, msg: Message) {
        match msg {
            Message::Summary { heads } => {
                let theirs: BTreeMap<AppName, u64> = heads.into_iter().collect();
                let newer: Vec<SignedHead> = self
                    .apps
                    .iter()
                    .filter(|(a, r)| theirs.get(*a).is_none_or(|s| *s < r.head.head.seq))
                    .map(|(_, r)| r.head.clone())
                    .collect();
                for h in newer {
                    self.send(from, Message::Head(Box::new(h)));
                }
            }
            Message::Head(sh) => self.on_head(now, from, *sh),
            Message::GetChunk { digest, index } => self.on_get_chunk(from, digest, index),
            Message::Chunk {
                digest,
                index,
                data,
            } => self.on_chunk(now, from, digest, index, Some(data)),
            Message::NoChunk { digest, index } => self.on_chunk(now, from, digest, index, None),
            Message::Report(r) => self.on_report(from, r),
            Message::StatusRequest => {
                let status = self.status();
                self.send(from, Message::Status(Box::new(status)));
            }
            Message::Status(_) => {}
        }
    }

    fn on_head(&mut self, now: Instant, from: P, sh: SignedHead) {
        let app = sh.head.app.clone();
        let seq = sh.head.seq;
        // Quiet duplicates first: the same statement again (relays, anti-entropy).
        let id = sh.id();
        let dup_of = |h: &SignedHead| h.head.seq == seq && h.id() == id;
        if self.apps.get(&app).is_some_and(|r| dup_of(&r.head)) {
            return;
        }
        if let Some(p) = self.pending.get(&app)
            && (dup_of(&p.head) || p.next.as_ref().is_some_and(|(h, _)| dup_of(h)))
        {
            if let Some(t) = self.transfers.get_mut(&sh.head.release.digest)
                && !t.sources.contains(&from)
            {
                t.sources.push(from);
            }
            return;
        }
        if let Err(e) = sh.verify(&self.cfg.trust) {
            return self.reject(from, &sh, e);
        }
        let current = self.apps.get(&app).map_or(0, |r| r.head.head.seq);
        let held = self
            .pending
            .get(&app)
            .map_or(current, |p| p.latest_seq().max(current));
        if seq <= held {
            let err = if seq == held {
                HeadError::Conflict { app, seq }
            } else {
                HeadError::Stale {
                    app,
                    seq,
                    current: held,
                }
            };
            return self.reject(from, &sh, err);
        }
        self.upstream.insert((app.clone(), seq), from);
        if let Some(p) = self.pending.get_mut(&app) {
            if p.stage == Stage::Activating {
                p.next = Some((sh, from));
                return;
            }
            // A newer head supersedes one still fetching.
            let old = self.pending.remove(&app).expect("checked above");
            self.drop_transfer_if_unused(&old.head.head.release.digest);
        }
        self.start(now, from, sh);
    }

    fn start(&mut self, now: Instant, from: P, sh: SignedHead) {
        let app = sh.head.app.clone();
        let digest = sh.head.release.digest;
        let cached = self.blobs.contains(&digest);
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
        let peers = &self.peers;
        let t = self.transfers.entry(digest).or_insert_with(|| {
            let n = release.chunks.len();
            Transfer {
                release,
                chunks: vec![None; n],
                missing: n,
                sources: Vec::new(),
                cursor: 0,
                inflight: BTreeMap::new(),
                refused: BTreeMap::new(),
                retry_at: None,
            }
        });
        // The sender first: it announced the head, so it is the likeliest to hold the content.
        t.sources.retain(|s| *s != from);
        t.sources.insert(0, from);
        for p in peers {
            if !t.sources.contains(p) {
                t.sources.push(*p);
            }
        }
        self.pump(now, digest);
    }

    fn emit_activate(&mut self, head: SignedHead, content: Option<Vec<u8>>) {
        let record =
            AppRecord::advance(self.apps.get(&head.head.app), &head, self.cfg.history_limit);
        self.out.push_back(Output::Activate(Box::new(Activation {
            head,
            content,
            record,
        })));
    }

    fn reject(&mut self, from: P, sh: &SignedHead, err: HeadError) {
        let reason = err.to_string();
        self.event(Event::Rejected {
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            reason: reason.clone(),
        });
        let outcome = match err {
            // Old news is only the sender's business: not forwarded, not kept in status.
            HeadError::Stale { current, .. } => Outcome::Stale { current },
            _ => Outcome::Rejected(truncate(reason)),
        };
        let report = self.own_report(sh, outcome);
        self.send(from, Message::Report(report));
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

    fn on_get_chunk(&mut self, from: P, digest: Digest, index: u32) {
        if self.blobs.contains(&digest) {
            self.out.push_back(Output::ServeChunk {
                to: from,
                digest,
                index,
            });
            return;
        }
        // Cut-through: a verified chunk of a transfer in progress can be served already.
        let data = self
            .transfers
            .get(&digest)
            .and_then(|t| t.chunks.get(index as usize))
            .and_then(|c| c.clone());
        let msg = match data {
            Some(data) => Message::Chunk {
                digest,
                index,
                data,
            },
            None => Message::NoChunk { digest, index },
        };
        self.send(from, msg);
    }

    fn on_chunk(
        &mut self,
        now: Instant,
        from: P,
        digest: Digest,
        index: u32,
        data: Option<Vec<u8>>,
    ) {
        let Some(t) = self.transfers.get_mut(&digest) else {
            return;
        };
        // Only answers to our own requests count: no unsolicited bytes are buffered.
        if t.inflight.get(&index).is_none_or(|(p, _)| *p != from) {
            return;
        }
        t.inflight.remove(&index);
        match data {
            None => {
                t.refused.entry(index).or_default().insert(from);
            }
            Some(data) => {
                if let Err(e) = t.release.verify_chunk(index, &data) {
                    t.sources.retain(|s| *s != from);
                    t.inflight.retain(|_, (s, _)| *s != from);
                    self.out.push_back(Output::Disconnect {
                        peer: from,
                        reason: format!("served a bad chunk of {}: {e}", digest.short()),
                    });
                } else if t.chunks[index as usize].is_none() {
                    t.chunks[index as usize] = Some(data);
                    t.missing -= 1;
                    if t.missing == 0 {
                        return self.finish(now, digest);
                    }
                }
            }
        }
        self.pump(now, digest);
    }

    fn finish(&mut self, now: Instant, digest: Digest) {
        let t = self.transfers.remove(&digest).expect("transfer exists");
        let content: Vec<u8> = t.chunks.into_iter().flatten().flatten().collect();
        let verdict = t.release.verify_content(&content);
        let waiting: Vec<AppName> = self
            .pending
            .iter()
            .filter(|(_, p)| p.stage == Stage::Fetching && p.head.head.release.digest == digest)
            .map(|(a, _)| a.clone())
            .collect();
        for app in waiting {
            let p = self.pending.get_mut(&app).expect("listed above");
            match &verdict {
                Ok(()) => {
                    p.stage = Stage::Activating;
                    let head = p.head.clone();
                    self.emit_activate(head, Some(content.clone()));
                }
                Err(e) => {
                    let seq = p.head.head.seq;
                    self.on_activated_err(
                        now,
                        app,
                        seq,
                        format!("content does not match its release: {e}"),
                    );
                }
            }
        }
    }

    fn on_activated(&mut self, now: Instant, app: AppName, seq: u64, result: Result<(), String>) {
        if self
            .pending
            .get(&app)
            .is_none_or(|p| p.stage != Stage::Activating || p.head.head.seq != seq)
        {
            return;
        }
        match result {
            Ok(()) => {
                let p = self.pending.remove(&app).expect("checked above");
                let record =
                    AppRecord::advance(self.apps.get(&app), &p.head, self.cfg.history_limit);
                self.apps.insert(app.clone(), record);
                self.blobs.insert(p.head.head.release.digest);
                self.errors.remove(&app);
                self.event(Event::Activated {
                    app: app.clone(),
                    seq,
                    version: p.head.head.release.version.clone(),
                });
                let report = self.own_report(&p.head, Outcome::Active);
                self.reports
                    .insert((report.node, app.clone()), report.clone());
                let up = self.upstream.get(&(app.clone(), seq)).copied();
                if let Some(up) = up {
                    self.send(up, Message::Report(report));
                }
                let relay: Vec<P> = self
                    .peers
                    .iter()
                    .copied()
                    .filter(|p| Some(*p) != up)
                    .collect();
                for to in relay {
                    self.send(to, Message::Head(Box::new(p.head.clone())));
                }
                self.upstream.retain(|(a, s), _| *a != app || *s >= seq);
                if let Some((next, from)) = p.next {
                    self.on_head(now, from, next);
                }
            }
            Err(reason) => self.on_activated_err(now, app, seq, reason),
        }
    }

    fn on_activated_err(&mut self, now: Instant, app: AppName, seq: u64, reason: String) {
        let Some(p) = self.pending.remove(&app) else {
            return;
        };
        self.errors.insert(app.clone(), reason.clone());
        self.event(Event::ActivationFailed {
            app: app.clone(),
            seq,
            reason: reason.clone(),
        });
        let report = self.own_report(&p.head, Outcome::Failed(truncate(reason)));
        self.reports
            .insert((report.node, app.clone()), report.clone());
        if let Some(up) = self.upstream.get(&(app.clone(), seq)).copied() {
            self.send(up, Message::Report(report));
        }
        if let Some((next, from)) = p.next {
            // The failed head was never persisted, so its seq is not held: the newer one is
            // checked against what is.
            self.on_head(now, from, next);
        }
    }

    fn on_report(&mut self, from: P, r: Report) {
        if matches!(r.outcome, Outcome::Stale { .. }) {
            return;
        }
        let key = (r.node, r.app.clone());
        if self
            .reports
            .get(&key)
            .is_some_and(|old| old.seq > r.seq || (old.seq == r.seq && old.outcome == r.outcome))
        {
            return;
        }
        if self.reports.len() >= self.cfg.report_limit && !self.reports.contains_key(&key) {
            return;
        }
        self.reports.insert(key, r.clone());
        if let Some(up) = self.upstream.get(&(r.app.clone(), r.seq)).copied()
            && up != from
        {
            self.send(up, Message::Report(r));
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        let digests: Vec<Digest> = self.transfers.keys().copied().collect();
        for d in digests {
            let t = self.transfers.get_mut(&d).expect("listed above");
            let expired: Vec<(u32, P)> = t
                .inflight
                .iter()
                .filter(|(_, (_, at))| *at <= now)
                .map(|(i, (p, _))| (*i, *p))
                .collect();
            for (i, p) in expired {
                t.inflight.remove(&i);
                t.refused.entry(i).or_default().insert(p);
            }
            if t.retry_at.is_some_and(|at| at <= now) {
                t.retry_at = None;
                t.refused.clear();
            }
            self.pump(now, d);
        }
    }

    fn pump_all(&mut self, now: Instant) {
        let digests: Vec<Digest> = self.transfers.keys().copied().collect();
        for d in digests {
            self.pump(now, d);
        }
    }

    /// Issues chunk requests up to the in-flight bound.
    fn pump(&mut self, now: Instant, digest: Digest) {
        let Some(t) = self.transfers.get_mut(&digest) else {
            return;
        };
        let deadline = now + self.cfg.chunk_timeout;
        let mut starved = false;
        for index in 0..t.chunks.len() as u32 {
            if t.inflight.len() >= self.cfg.max_inflight_chunks {
                break;
            }
            if t.chunks[index as usize].is_some() || t.inflight.contains_key(&index) {
                continue;
            }
            let refused = t.refused.get(&index);
            let n = t.sources.len();
            let pick = (0..n)
                .map(|k| t.sources[(t.cursor + k) % n])
                .find(|p| refused.is_none_or(|r| !r.contains(p)));
            let Some(p) = pick else {
                starved = true;
                continue;
            };
            t.cursor = (t.cursor + 1) % n.max(1);
            t.inflight.insert(index, (p, deadline));
            self.out.push_back(Output::Send {
                to: p,
                msg: Message::GetChunk { digest, index },
            });
        }
        if starved && t.retry_at.is_none() {
            t.retry_at = Some(now + self.cfg.retry_after);
        }
    }

    fn drop_transfer_if_unused(&mut self, digest: &Digest) {
        let used = self
            .pending
            .values()
            .any(|p| p.head.head.release.digest == *digest);
        if !used {
            self.transfers.remove(digest);
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

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
