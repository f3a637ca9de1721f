//! The broadcast layer: Plumtree over the active view, and anti-entropy.
//!
//! A head is pushed eagerly (`Gossip`) along a spanning tree of the active view and announced
//! lazily (`IHave`) on the other links. A duplicate prunes the link it came on out of the tree;
//! an announced head that does not arrive within `ihave_timeout` is grafted from the next
//! announcer. Periodically (and on every new neighbour) a node swaps a `Summary` (app → (epoch, seq))
//! with a random neighbour and pushes the heads the other lacks, so a node that was away
//! catches up without a new release.
//!
//! **Invariants:** a head is relayed only after the node accepted it (verified, newer seq):
//! [`Broadcast::accept`] is the only way in; the eager and lazy sets hold active neighbours
//! only, and never both the same peer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::head::SignedHead;
use crate::membership::Membership;
use crate::peer::Peer;
use crate::release::{AppName, Digest};
use crate::rng::Rng;
use crate::wire::{Announce, BroadcastMsg, Position};

use super::io::Outbox;
use super::{AppRecord, position};

/// Announcements accepted from one `IHave`.
pub(super) const MAX_ANNOUNCES: usize = 64;
/// Apps accepted from one `Summary`.
pub(super) const MAX_SUMMARY: usize = 1024;
/// A probed peer that lacks a head held this long is not reached by this node's overlay.
const SPLIT_EVIDENCE: Duration = Duration::from_secs(5);
/// Announcers kept per missing head.
const MAX_ANNOUNCERS: usize = 16;

/// The newest head accepted for one app, as the broadcast layer knows it.
#[derive(Debug)]
pub(super) struct HeadEntry {
    pub head: SignedHead,
    pub id: Digest,
    /// Hops from where the head entered the mesh.
    pub round: u16,
}

impl HeadEntry {
    /// Where the head sits in its app's order (epoch, seq).
    pub fn pos(&self) -> Position {
        position(&self.head)
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

/// Plumtree and anti-entropy state. See the module docs.
#[derive(Debug)]
pub(super) struct Broadcast<P> {
    ihave_timeout: Duration,
    anti_entropy_interval: Duration,
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    heads: BTreeMap<AppName, HeadEntry>,
    missing: BTreeMap<Digest, Missing<P>>,
    /// When the newest head of each app was accepted (absent: restored at start).
    accepted_at: BTreeMap<AppName, Instant>,
    next_anti_entropy: Option<Instant>,
}

impl<P: Peer> Broadcast<P> {
    /// `first_anti_entropy`: when the first periodic summary goes out (drawn by the caller).
    pub fn new(
        ihave_timeout: Duration,
        anti_entropy_interval: Duration,
        first_anti_entropy: Instant,
    ) -> Self {
        Broadcast {
            ihave_timeout,
            anti_entropy_interval,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            heads: BTreeMap::new(),
            missing: BTreeMap::new(),
            accepted_at: BTreeMap::new(),
            next_anti_entropy: Some(first_anti_entropy),
        }
    }

    /// A head restored from disk at start (round 0, not relayed).
    pub fn restore(&mut self, head: SignedHead) {
        let entry = HeadEntry {
            id: head.id(),
            head,
            round: 0,
        };
        self.heads.insert(entry.head.head.app.clone(), entry);
    }

    pub fn head(&self, app: &AppName) -> Option<&HeadEntry> {
        self.heads.get(app)
    }

    /// Whether `id` is the newest head held for `app`.
    pub fn is_current(&self, app: &AppName, id: &Digest) -> bool {
        self.heads.get(app).is_some_and(|h| h.id == *id)
    }

    /// Whether `digest` is the content of the newest head of some app.
    pub fn is_newest_content(&self, digest: &Digest) -> bool {
        self.heads
            .values()
            .any(|h| h.head.head.release.digest == *digest)
    }

    pub fn eager(&self) -> &BTreeSet<P> {
        &self.eager
    }

    /// The highest position accepted for `app`: the newest head here, or `applied` (the
    /// position of the record in force).
    pub fn held(&self, app: &AppName, applied: Position) -> Position {
        applied.max(
            self.heads
                .get(app)
                .map_or_else(Position::default, |h| h.pos()),
        )
    }

    /// The highest position per app over the records in force and the heads held.
    pub fn seen_seqs(&self, records: &BTreeMap<AppName, AppRecord>) -> Vec<(AppName, Position)> {
        let mut v: BTreeMap<AppName, Position> = records
            .iter()
            .map(|(a, r)| (a.clone(), position(&r.head)))
            .collect();
        for (a, h) in &self.heads {
            let e = v.entry(a.clone()).or_default();
            *e = (*e).max(h.pos());
        }
        v.into_iter().collect()
    }

    /// `p` entered the active view: it is an eager link until a duplicate prunes it.
    pub fn neighbour_up(&mut self, p: P) {
        self.lazy.remove(&p);
        self.eager.insert(p);
    }

    /// `p` left the active view.
    pub fn neighbour_down(&mut self, p: P) {
        self.eager.remove(&p);
        self.lazy.remove(&p);
    }

    /// The connection to `p` is gone: it announces nothing any more.
    pub fn peer_down(&mut self, p: P) {
        for m in self.missing.values_mut() {
            m.announcers.retain(|q| *q != p);
        }
    }

    /// Link `old` was replaced by `new` (see `Membership`'s `Replaced`).
    pub fn rekey(&mut self, old: P, new: P, fresh: bool) {
        let was_eager = self.eager.remove(&old);
        let was_lazy = self.lazy.remove(&old);
        if fresh || was_eager {
            self.eager.insert(new);
        } else if was_lazy {
            self.lazy.insert(new);
        }
        for m in self.missing.values_mut() {
            for a in m.announcers.iter_mut() {
                if *a == old {
                    *a = new;
                }
            }
        }
    }

    fn make_eager(&mut self, p: P, active: bool) {
        if active {
            self.lazy.remove(&p);
            self.eager.insert(p);
        }
    }

    /// A duplicate or redundant head from `from`: the tree does not need this link for heads.
    pub fn prune(&mut self, from: P, out: &mut Outbox<P>) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
            out.send(from, BroadcastMsg::Prune);
        }
    }

    /// `from` pruned its link to this node.
    pub fn on_prune(&mut self, from: P) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
        }
    }

    /// `from` asks for head `id` of `app` and to be pushed to eagerly (`active`: it is in the
    /// active view).
    pub fn on_graft(
        &mut self,
        from: P,
        app: &AppName,
        id: Digest,
        active: bool,
        out: &mut Outbox<P>,
    ) {
        self.make_eager(from, active);
        if let Some(h) = self.heads.get(app)
            && h.id == id
        {
            let msg = BroadcastMsg::Gossip {
                head: Box::new(h.head.clone()),
                round: h.round,
            };
            out.send(from, msg);
        }
    }

    /// Announcements from `from`. Heads not held (and newer than `applied(app)`) are awaited
    /// and grafted if they do not arrive; returns the announcements of heads already held, as
    /// (app, round), for the tally tree.
    pub fn on_ihave(
        &mut self,
        now: Instant,
        from: P,
        anns: Vec<Announce>,
        applied: impl Fn(&AppName) -> Position,
    ) -> Vec<(AppName, u16)> {
        let mut offers = Vec::new();
        for a in anns.into_iter().take(MAX_ANNOUNCES) {
            if self.is_current(&a.app, &a.id) {
                offers.push((a.app, a.round));
                continue;
            }
            if a.position() <= self.held(&a.app, applied(&a.app)) {
                continue;
            }
            let at = now + self.ihave_timeout;
            let m = self.missing.entry(a.id).or_insert_with(|| Missing {
                app: a.app.clone(),
                seq: a.seq,
                announcers: VecDeque::new(),
                at,
            });
            if !m.announcers.contains(&from) && m.announcers.len() < MAX_ANNOUNCERS {
                m.announcers.push_back(from);
            }
        }
        offers
    }

    /// Takes in an accepted head (verified, newer than anything held) from `from`, `round`
    /// hops away (`None`: pushed directly, this node is its root); `active`: `from` is in the
    /// active view. Returns this node's round and the head it replaces.
    pub fn accept(
        &mut self,
        now: Instant,
        from: P,
        sh: &SignedHead,
        round: Option<u16>,
        active: bool,
    ) -> (u16, Option<HeadEntry>) {
        let id = sh.id();
        self.missing.remove(&id);
        let my_round = round.map_or(0, |r| r.saturating_add(1));
        if round.is_some() {
            self.make_eager(from, active);
        }
        let app = sh.head.app.clone();
        let entry = HeadEntry {
            head: sh.clone(),
            id,
            round: my_round,
        };
        let prev = self.heads.insert(app.clone(), entry);
        self.accepted_at.insert(app, now);
        (my_round, prev)
    }

    /// Relays an accepted head at once (the head runs ahead of the content): `Gossip` to the
    /// eager links, `IHave` to the lazy ones, except back to `from`.
    pub fn relay(&self, from: P, sh: &SignedHead, round: u16, out: &mut Outbox<P>) {
        for &p in self.eager.iter().filter(|p| **p != from) {
            let msg = BroadcastMsg::Gossip {
                head: Box::new(sh.clone()),
                round,
            };
            out.send(p, msg);
        }
        let ann = Announce {
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            id: sh.id(),
            round,
            epoch: sh.head.epoch,
        };
        for &p in self.lazy.iter().filter(|p| **p != from) {
            out.send(p, BroadcastMsg::IHave(vec![ann.clone()]));
        }
    }

    /// Whether a probed peer's summary shows the overlay is split: it lacks a head this node
    /// has held for a while.
    pub fn split_evidence(
        &self,
        now: Instant,
        theirs: &BTreeMap<AppName, Position>,
        records: &BTreeMap<AppName, AppRecord>,
    ) -> bool {
        records.iter().any(|(a, r)| {
            theirs.get(a).is_none_or(|s| *s < position(&r.head))
                && self
                    .accepted_at
                    .get(a)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= SPLIT_EVIDENCE)
        })
    }

    /// Pushes to `to` the heads in force here that its summary `theirs` lacks.
    pub fn push_newer(
        &self,
        to: P,
        theirs: &BTreeMap<AppName, Position>,
        records: &BTreeMap<AppName, AppRecord>,
        out: &mut Outbox<P>,
    ) {
        for (a, r) in records {
            let pos = position(&r.head);
            if theirs.get(a).is_some_and(|s| *s >= pos) {
                continue;
            }
            let round = self
                .heads
                .get(a)
                .filter(|h| h.pos() == pos)
                .map_or(0, |h| h.round);
            let msg = BroadcastMsg::Gossip {
                head: Box::new(r.head.clone()),
                round,
            };
            out.send(to, msg);
        }
    }

    /// Grafts heads announced but not arrived in time; returns the neighbour to run the
    /// periodic anti-entropy exchange with, if it is due.
    pub fn on_timeout(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        members: &Membership<P>,
        out: &mut Outbox<P>,
    ) -> Option<P> {
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
                    m.at = now + self.ihave_timeout;
                    let msg = BroadcastMsg::Graft {
                        app: m.app.clone(),
                        seq: m.seq,
                        id,
                    };
                    self.make_eager(p, members.is_active(p));
                    out.send(p, msg);
                }
                None => {
                    self.missing.remove(&id);
                }
            }
        }
        if self.next_anti_entropy.is_some_and(|t| t <= now) {
            let jitter = 0.75 + rng.unit() / 2.0;
            self.next_anti_entropy = Some(now + self.anti_entropy_interval.mul_f64(jitter));
            return rng.pick(members.active()).copied();
        }
        None
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing
            .values()
            .map(|m| m.at)
            .chain(self.next_anti_entropy)
            .min()
    }
}
