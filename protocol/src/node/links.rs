//! Wiring of the membership layer into the node: what a neighbour coming, going or being
//! replaced means to broadcast, content, serving and tallies, and the anti-entropy
//! `Summary` exchange that runs over every new link.
//!
//! **Invariant:** membership decides which links exist; the other layers only follow its
//! outputs here (they never add or drop a link themselves, except that content reports a peer
//! to ban and broadcast a probe link to promote).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::membership::MOut;
use crate::peer::Peer;
use crate::release::AppName;
use crate::wire::{BroadcastMsg, Position};

use super::Node;
use super::broadcast::MAX_SUMMARY;
use super::io::{Event, Output};

impl<P: Peer> Node<P> {
    /// Maps what membership asks for onto outputs and the other layers.
    pub(super) fn drain_members(&mut self, now: Instant) {
        while let Some(o) = self.members.poll() {
            match o {
                MOut::Send(to, msg) => self.out.send(to, msg),
                MOut::Dial(addr) => self.out.push(Output::Dial(addr)),
                MOut::Disconnect(peer, reason) => {
                    self.out.push(Output::Disconnect { peer, reason })
                }
                MOut::Up(p) => {
                    self.broadcast.neighbour_up(p);
                    if let Some(node) = self.members.node_of(p) {
                        self.out.event(Event::Neighbor { node, up: true });
                    }
                    self.send_summary(p, false);
                    // Tell it which heads this node holds, and how far from the root: a node
                    // whose tally parent is gone may re-parent to it.
                    let anns = self.tally.announces();
                    if !anns.is_empty() {
                        self.out.send(p, BroadcastMsg::IHave(anns));
                    }
                    self.content.announce_wants(p, &mut self.out);
                }
                MOut::Down(p) => {
                    self.broadcast.neighbour_down(p);
                    if let Some(node) = self.members.node_of(p) {
                        self.out.event(Event::Neighbor { node, up: false });
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
        self.broadcast.rekey(old, new, fresh);
        self.tally.rekey(now, old, new, fresh);
        // Chunk requests in flight on the old link are lost with it; the transfer asks again.
        self.serve
            .forget_peer(now, old, &self.content, &mut self.out);
        self.content.rekey(old);
        self.content.announce_wants(new, &mut self.out);
        self.census.rekey(old, new, fresh, &mut self.out);
    }

    pub(super) fn on_peer_down(&mut self, now: Instant, p: P) {
        self.members.peer_down(now, &mut self.rng, p);
        self.drain_members(now);
        self.serve.forget_peer(now, p, &self.content, &mut self.out);
        self.content.peer_down(p);
        self.broadcast.peer_down(p);
        self.tally.peer_down(now, p);
        self.census.peer_down(p, &mut self.out);
        self.content.pump_all(now, &mut self.rng, &mut self.out);
    }

    /// The highest position accepted for `app` (activated, activating or fetching).
    pub(super) fn held(&self, app: &AppName) -> Position {
        self.broadcast.held(app, self.activation.applied(app))
    }

    pub(super) fn send_summary(&mut self, to: P, reply: bool) {
        let heads = self.broadcast.seen_seqs(self.activation.records());
        let root = self.cfg.trust.version();
        self.out
            .send(to, BroadcastMsg::Summary { heads, reply, root });
    }

    /// A neighbour's summary: bridge a split overlay, push it the heads it lacks, ask back for
    /// what it holds newer, and tell it the fleet counts of heads both hold.
    pub(super) fn on_summary(
        &mut self,
        now: Instant,
        from: P,
        heads: Vec<(AppName, Position)>,
        reply: bool,
        root: u64,
    ) {
        self.on_summary_root(from, root);
        let theirs: BTreeMap<AppName, Position> = heads.into_iter().take(MAX_SUMMARY).collect();
        if !self.peer_trust.is_operator(from) {
            let (b, a) = (&self.broadcast, &self.activation);
            self.fresh
                .on_summary(from, &theirs, |app| b.held(app, a.applied(app)));
        }
        let records = self.activation.records();
        // A probed node that still lacks a head this node has held for a while is not reached
        // by the overlay's broadcast: the overlay is split (a healed partition). Bridge it.
        if self.broadcast.split_evidence(now, &theirs, records) {
            self.members.promote(from);
        }
        self.broadcast
            .push_newer(from, &theirs, records, &mut self.out);
        if !reply && theirs.iter().any(|(a, s)| *s > self.held(a)) {
            self.send_summary(from, true);
        }
        self.tally.send_counts(from, &theirs, &mut self.out);
        self.check_fresh(now);
    }
}
