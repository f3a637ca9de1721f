//! The tally layer: fleet counts up the broadcast tree and the settled count back down.
//!
//! Each node sends its subtree's totals (active / failed / rejected per head; for a staged
//! head also nodes, in wave, pending, prefetched and the health of the new and old release) to
//! its tally parent: the neighbour it got the head from at first; a node whose parent is gone re-parents
//! to a neighbour of lower rank, and with none it announces itself [`POISONED`] so its subtree
//! re-parents elsewhere, then ranks below any neighbour. The node a release entered through
//! (the root) holds the fleet's totals; once they have been still for [`FLEET_SETTLE`] (or
//! [`FLEET_MAX_WAIT`] after they first changed, while health keeps them moving) it sends them
//! down the tree (`FleetTally`, versioned). Sends are paced by a token bucket
//! (up to [`TALLY_BURST`] at once, then one per `tally_interval`), so a release costs O(N)
//! tally messages.
//!
//! **Invariants:** tallies only go to a neighbour of smaller (rank, node id), so they never
//! loop; every tally this node sends carries a larger version than the last (frames may
//! arrive out of order); counts are informational, nothing here decides what runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::head::SignedHead;
use crate::membership::Membership;
use crate::peer::Peer;
use crate::release::{AppName, Digest};
use crate::rollout::Health;
use crate::wire::{
    Announce, BroadcastMsg, MAX_TALLY_SAMPLES, Message, NodeId, Position, Report, Tally, TallyMsg,
};

use super::io::Outbox;

/// How long the root's count must be still before it is sent down the tree.
pub(super) const FLEET_SETTLE: Duration = Duration::from_millis(500);
/// How long after the last wave's bake its health still counts (then tallies stop changing
/// with every request: a finished rollout costs no messages).
pub(super) const HEALTH_AFTER_BAKE: Duration = Duration::from_secs(60);

/// Whether health reports count for a head (see [`HeadTally::health_until`]).
#[derive(Debug, Clone, Copy)]
enum HealthWindow {
    Open,
    Until(Instant),
    Closed,
}

/// Longest the root holds back a changing fleet count before sending it down the tree.
pub(super) const FLEET_MAX_WAIT: Duration = Duration::from_secs(2);
/// Tally sends a node may make back to back before pacing sets in.
pub(super) const TALLY_BURST: f64 = 4.0;
/// The tally rank of a node that lost its parent and has no neighbour ranked below it: its
/// subtree re-parents elsewhere first (none of them will pick it), then, after
/// [`POISON_HOLD`], it takes any neighbour with a finite rank as its parent.
pub(super) const POISONED: u16 = u16::MAX;
/// How long a poisoned node waits for its subtree to hear of it before re-parenting upward
/// in rank (long enough for the poison to cross many hops, so it does not adopt a descendant).
pub(super) const POISON_HOLD: Duration = Duration::from_millis(1000);

/// Tally state of the newest head accepted for one app.
#[derive(Debug)]
pub(super) struct HeadTally<P> {
    app: AppName,
    seq: u64,
    epoch: u64,
    id: Digest,
    /// The head's release: health reports for it count here.
    digest: Digest,
    /// Until when health reports count: while a staged head's wave is open (any wave but the
    /// last: the driver advances or halts it), and for the last wave its bake and
    /// [`HEALTH_AFTER_BAKE`] after this node accepted it; never for a head without a plan.
    health_until: HealthWindow,
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
    /// Neighbours known to hold the head, with their round (or rank).
    offers: BTreeMap<P, u16>,
    own: Option<Tally>,
    children: BTreeMap<P, Tally>,
    dirty: bool,
    /// The whole fleet's totals: counted here at the root (round 0), else as heard from the
    /// root down the tree.
    fleet: Option<Tally>,
    /// At the root: when to send the settled count down the tree.
    fleet_due: Option<Instant>,
    /// At the root: when the count first changed since it was last sent down (it goes down
    /// at most [`FLEET_MAX_WAIT`] after that, even while it keeps changing).
    fleet_changed: Option<Instant>,
    /// The root's number for `fleet` (it counts up with each count the root sends).
    fleet_version: u32,
    /// The head entered the mesh here (pushed by a publisher): this node counts the fleet.
    root: bool,
}

impl<P> HeadTally<P> {
    fn new(head: &SignedHead, round: u16, upstream: Option<P>) -> Self {
        HeadTally {
            app: head.head.app.clone(),
            seq: head.head.seq,
            epoch: head.head.epoch,
            id: head.id(),
            digest: head.head.release.digest,
            health_until: match &head.head.plan {
                None => HealthWindow::Closed,
                Some(p) if p.is_last() => HealthWindow::Closed,
                Some(_) => HealthWindow::Open,
            },
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
            fleet_changed: None,
            fleet_version: 0,
            root: false,
        }
    }

    fn total(&self) -> Tally {
        let mut t = Tally {
            app: Some(self.app.clone()),
            seq: self.seq,
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

    /// Whether this node has anything to count for the head.
    fn counts(&self) -> bool {
        self.own.is_some() || !self.children.is_empty()
    }
}

/// Fleet counts of every app's newest head. See the module docs.
#[derive(Debug)]
pub(super) struct Tallies<P> {
    me: NodeId,
    interval: Duration,
    heads: BTreeMap<AppName, HeadTally<P>>,
    next_tally: Option<Instant>,
    /// The token bucket pacing tally sends (see the module docs).
    tokens: f64,
    refilled: Instant,
    /// Version of the last tally sent (see [`Tally::version`]).
    version: u64,
}

impl<P: Peer> Tallies<P> {
    pub fn new(me: NodeId, interval: Duration, now: Instant) -> Self {
        Tallies {
            me,
            interval,
            heads: BTreeMap::new(),
            next_tally: None,
            tokens: TALLY_BURST,
            refilled: now,
            version: 0,
        }
    }

    /// A head restored from disk at start: this node runs it.
    pub fn restore(&mut self, head: &SignedHead) {
        let mut st = HeadTally::new(head, 0, None);
        st.own = Some(Tally {
            active: 1,
            nodes: 1,
            in_wave: 1,
            ..Tally::default()
        });
        self.heads.insert(st.app.clone(), st);
    }

    /// A newly accepted head from `from` (`offer`: its round, when it came by gossip; `root`:
    /// pushed directly, this node counts the fleet). A new head starts a new burst of
    /// tallies: its first counts travel up the tree at once (a rollback is reported in the
    /// time its head takes to cross the mesh), and pacing only sets in after them.
    pub fn on_new_head(
        &mut self,
        now: Instant,
        head: &SignedHead,
        round: u16,
        from: P,
        offer: Option<u16>,
    ) {
        let mut st = HeadTally::new(head, round, Some(from));
        st.root = offer.is_none();
        if let Some(p) = head.head.plan.as_ref().filter(|p| p.is_last()) {
            let bake = Duration::from_millis(p.gates.bake_ms);
            st.health_until = HealthWindow::Until(now + bake + HEALTH_AFTER_BAKE);
        }
        if let Some(r) = offer {
            st.offers.insert(from, r);
        }
        self.heads.insert(st.app.clone(), st);
        self.tokens = TALLY_BURST;
        self.refilled = now;
        if self.next_tally.is_some() {
            self.next_tally = Some(now); // a send held back by pacing goes now
        }
    }

    /// `from` holds the head of `app` at `round` (it sent it again).
    pub fn note_offer(&mut self, app: &AppName, from: P, round: u16) {
        if let Some(h) = self.heads.get_mut(app) {
            h.offers.insert(from, round);
        }
    }

    /// `from` announced the head of `app` at `round` (its rank): a new rank from the tally
    /// parent, or a neighbour a parentless node may take, means looking at the tree again.
    pub fn on_offer(&mut self, now: Instant, app: &AppName, from: P, round: u16) {
        let Some(h) = self.heads.get_mut(app) else {
            return;
        };
        let old = h.offers.insert(from, round);
        if old != Some(round)
            && !h.root
            && (h.upstream == Some(from) || h.upstream.is_none())
            && h.counts()
        {
            h.dirty = true;
            self.arm(now);
        }
    }

    /// This node's own outcome for `seq` of `app`. A head that came straight from a
    /// publisher: the publisher hears `report` at once.
    pub fn set_own(
        &mut self,
        now: Instant,
        app: &AppName,
        seq: u64,
        t: Tally,
        report: Report,
        out: &mut Outbox<P>,
    ) {
        let Some(h) = self.heads.get_mut(app).filter(|h| h.seq == seq) else {
            return;
        };
        let mut t = t;
        if let Some(old) = &h.own {
            t.health_new = old.health_new.clone();
            t.health_old = old.health_old.clone();
        }
        h.own = Some(t);
        h.dirty = true;
        let direct = (h.round == 0).then_some(h.upstream).flatten();
        self.arm(now);
        if let Some(up) = direct {
            out.send(up, Message::Report(report));
        }
    }

    /// This node's own counts for `seq` of `app` changed (no report: nothing the publisher
    /// waits for). The health counted so far is kept.
    pub fn set_counts(&mut self, now: Instant, app: &AppName, seq: u64, mut t: Tally) {
        let Some(h) = self.heads.get_mut(app).filter(|h| h.seq == seq) else {
            return;
        };
        if let Some(old) = &h.own {
            t.health_new = old.health_new.clone();
            t.health_old = old.health_old.clone();
        }
        if h.own.as_ref() != Some(&t) {
            h.own = Some(t);
            h.dirty = true;
            self.arm(now);
        }
    }

    /// Requests served here by release `digest` of `app` since it serves (`new`) and by the
    /// release before it (`old`): counted for `app`'s head when that is its release and this
    /// node runs it.
    pub fn set_health(
        &mut self,
        now: Instant,
        app: &AppName,
        digest: Digest,
        new: Health,
        old: Health,
    ) {
        let Some(h) = self.heads.get_mut(app).filter(|h| h.digest == digest) else {
            return;
        };
        let open = match h.health_until {
            HealthWindow::Open => true,
            HealthWindow::Until(t) => now < t,
            HealthWindow::Closed => false,
        };
        if !open {
            return;
        }
        let Some(own) = h.own.as_mut().filter(|o| o.active == 1) else {
            return;
        };
        if *own.health_new != new || *own.health_old != old {
            *own.health_new = new;
            *own.health_old = old;
            h.dirty = true;
            self.arm(now);
        }
    }

    /// A subtree count from `from`.
    pub fn on_tally(&mut self, now: Instant, from: P, mut t: Tally) {
        let Some(app) = t.app.clone() else {
            return;
        };
        t.samples.truncate(MAX_TALLY_SAMPLES);
        if let Some(h) = self.heads.get_mut(&app)
            && h.seq == t.seq
            && h.upstream != Some(from)
            && h.children
                .get(&from)
                .is_none_or(|old| old.version < t.version)
        {
            h.children.insert(from, t);
            h.dirty = true;
            self.arm(now);
        }
    }

    /// A settled fleet count from the root side of the tree: keep it and pass it on down
    /// (to the `eager` links but `from`).
    pub fn on_fleet_tally(
        &mut self,
        from: P,
        mut t: Tally,
        version: u32,
        eager: &BTreeSet<P>,
        out: &mut Outbox<P>,
    ) {
        let Some(app) = t.app.clone() else {
            return;
        };
        t.samples.truncate(MAX_TALLY_SAMPLES);
        let Some(h) = self.heads.get_mut(&app) else {
            return;
        };
        if h.seq != t.seq || h.root || h.fleet.as_ref().is_some_and(|_| h.fleet_version >= version)
        {
            return; // another head, the root's own count, or not newer than the one held
        }
        h.fleet = Some(t.clone());
        h.fleet_version = version;
        send_fleet_down(Some(from), t, version, eager, out);
    }

    /// The fleet counts of the heads `theirs` (a neighbour's summary) says it holds too: a
    /// node the count did not reach down the tree learns it here.
    pub fn send_counts(&self, to: P, theirs: &BTreeMap<AppName, Position>, out: &mut Outbox<P>) {
        for h in self.heads.values() {
            let pos = Position {
                epoch: h.epoch,
                seq: h.seq,
            };
            if theirs.get(&h.app) != Some(&pos) {
                continue;
            }
            if let Some(tally) = h.fleet.clone() {
                let version = h.fleet_version;
                out.send(to, TallyMsg::Fleet { tally, version });
            }
        }
    }

    /// The heads held, with this node's rank, for a new neighbour (a node whose tally parent
    /// is gone may re-parent to it).
    pub fn announces(&self) -> Vec<Announce> {
        self.heads
            .values()
            .map(|h| Announce {
                app: h.app.clone(),
                seq: h.seq,
                id: h.id,
                round: h.rank,
                epoch: h.epoch,
            })
            .collect()
    }

    /// A new version for a tally this node sends.
    pub fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// The connection to `p` is gone: its count and its offers go; a node it was the parent
    /// of looks for another.
    pub fn peer_down(&mut self, now: Instant, p: P) {
        let mut dirty = false;
        for h in self.heads.values_mut() {
            h.offers.remove(&p);
            if h.children.remove(&p).is_some() {
                h.dirty = true;
                dirty = true;
            }
            if h.upstream == Some(p) {
                h.upstream = None;
                if h.counts() {
                    h.dirty = true;
                    dirty = true;
                }
            }
        }
        if dirty {
            self.arm(now);
        }
    }

    /// Link `old` was replaced by `new`: carried over after simultaneous dials; dropped when
    /// the peer came back (`fresh`: it will report again).
    pub fn rekey(&mut self, now: Instant, old: P, new: P, fresh: bool) {
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
            self.arm(now);
        }
    }

    fn arm(&mut self, now: Instant) {
        if self.next_tally.is_none() {
            self.refill(now);
            let short = (1.0 - self.tokens).max(0.0);
            self.next_tally = Some(now + self.interval.mul_f64(short));
        }
    }

    fn refill(&mut self, now: Instant) {
        let interval = self.interval.as_secs_f64().max(1e-6);
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() / interval;
        self.tokens = (self.tokens + earned).min(TALLY_BURST);
        self.refilled = now;
    }

    /// Sends what changed up the tree (re-parenting first where needed), and at the root,
    /// sends the settled fleet count down the `eager` links.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        members: &Membership<P>,
        eager: &BTreeSet<P>,
        out: &mut Outbox<P>,
    ) {
        if self.next_tally.is_some_and(|t| t <= now) {
            self.flush(now, members, out);
        }
        for h in self.heads.values_mut() {
            if h.fleet_due.is_none_or(|t| t > now) {
                continue;
            }
            h.fleet_due = None;
            h.fleet_changed = None;
            let total = h.total();
            if h.fleet.as_ref() != Some(&total) {
                h.fleet = Some(total.clone());
                h.fleet_version += 1;
                send_fleet_down(None, total, h.fleet_version, eager, out);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tally
            .into_iter()
            .chain(self.heads.values().filter_map(|h| h.fleet_due))
            .min()
    }

    fn flush(&mut self, now: Instant, members: &Membership<P>, out: &mut Outbox<P>) {
        self.next_tally = None;
        let mut waiting = false;
        let mut sends = Vec::new();
        let mut announce: Vec<Announce> = Vec::new();
        let mut retract: Vec<(P, Tally)> = Vec::new();
        let me = self.me;
        let key = |p: P, r: u16| Some((r, members.node_of(p)?));
        for h in self.heads.values_mut() {
            if !h.dirty {
                continue;
            }
            if !h.root {
                let below = |h: &HeadTally<P>, p: P| {
                    h.offers
                        .get(&p)
                        .and_then(|r| key(p, *r))
                        .is_some_and(|k| k < (h.rank, me) && k.0 != POISONED)
                };
                let old = h.upstream;
                if h.upstream.is_none_or(|u| !below(h, u)) {
                    // Re-parent to the neighbour ranked lowest below this node: ranks only
                    // fall towards the root, so tallies never loop.
                    h.upstream = h
                        .offers
                        .iter()
                        .filter_map(|(p, r)| Some((key(*p, *r)?, *p)))
                        .filter(|(k, _)| *k < (h.rank, me) && k.0 != POISONED)
                        .min()
                        .map(|(_, p)| p);
                }
                if h.upstream.is_none() {
                    let mut new_rank = None;
                    match h.poisoned_at {
                        None => {
                            // Tell the neighbours (the subtree first of all) that the path up
                            // through this node is gone, so they re-parent elsewhere.
                            h.poisoned_at = Some(now);
                            new_rank = Some(POISONED);
                        }
                        Some(at) if now.saturating_duration_since(at) >= POISON_HOLD => {
                            // Its subtree has heard: take the lowest-ranked neighbour that
                            // still has a path, and rank below it.
                            let best = h
                                .offers
                                .iter()
                                .filter_map(|(p, r)| Some((key(*p, *r)?, *p)))
                                .filter(|(k, _)| k.0 < POISONED - 1)
                                .min();
                            if let Some(((r, _), p)) = best {
                                h.upstream = Some(p);
                                h.poisoned_at = None;
                                new_rank = Some(r + 1);
                            }
                        }
                        Some(_) => {}
                    }
                    if let Some(rank) = new_rank
                        && rank != h.rank
                    {
                        h.rank = rank;
                        announce.push(Announce {
                            app: h.app.clone(),
                            seq: h.seq,
                            id: h.id,
                            round: rank,
                            epoch: h.epoch,
                        });
                    }
                }
                if let Some(o) = old
                    && h.upstream != Some(o)
                    && members.node_of(o).is_some()
                {
                    // Take this subtree's count back from the old parent (it is counted via
                    // the new one).
                    let t = Tally {
                        app: Some(h.app.clone()),
                        seq: h.seq,
                        ..Tally::default()
                    };
                    retract.push((o, t));
                }
            }
            if h.root {
                // The root: the fleet's count is its own total; send it down once it settles.
                // Once still for FLEET_SETTLE; while health keeps it moving (a rollout's wave
                // serving), at least every FLEET_MAX_WAIT, so every agent's status stays live.
                let changed = *h.fleet_changed.get_or_insert(now);
                h.fleet_due = Some((now + FLEET_SETTLE).min(changed + FLEET_MAX_WAIT));
            }
            match h.upstream {
                Some(u) => {
                    h.dirty = false;
                    sends.push((u, h.total()));
                }
                None => waiting |= h.round > 0,
            }
        }
        for ann in announce {
            for &p in members.active() {
                out.send(p, BroadcastMsg::IHave(vec![ann.clone()]));
            }
        }
        for (o, mut t) in retract {
            t.version = self.next_version();
            out.send(o, TallyMsg::Subtree(t));
        }
        if !sends.is_empty() {
            self.refill(now);
            self.tokens = (self.tokens - 1.0).max(0.0);
        }
        for (u, mut t) in sends {
            t.version = self.next_version();
            out.send(u, TallyMsg::Subtree(t));
        }
        if waiting {
            self.next_tally = Some(now + POISON_HOLD.min(self.interval * 10));
        }
    }

    /// This node's subtree totals for `app`'s newest head.
    pub fn total(&self, app: &AppName) -> Option<Tally> {
        self.heads.get(app).map(|h| h.total())
    }

    /// Subtree totals of every head held.
    pub fn totals(&self) -> Vec<Tally> {
        self.heads.values().map(|h| h.total()).collect()
    }

    /// Fleet totals heard (or counted, at the root) of every head held.
    pub fn fleet_totals(&self) -> Vec<Tally> {
        self.heads
            .values()
            .filter_map(|h| h.fleet.clone())
            .collect()
    }
}

fn send_fleet_down<P: Peer>(
    from: Option<P>,
    t: Tally,
    version: u32,
    eager: &BTreeSet<P>,
    out: &mut Outbox<P>,
) {
    for &p in eager.iter().filter(|p| Some(**p) != from) {
        let msg = TallyMsg::Fleet {
            tally: t.clone(),
            version,
        };
        out.send(p, msg);
    }
}
