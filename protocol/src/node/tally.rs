//! Fleet counts: each node's subtree totals go up the broadcast tree (paced by a token bucket,
//! versioned because frames may arrive out of order, re-parented by rank when a parent dies);
//! the root's settled count comes back down (`FleetTally`).

use super::*;

impl<P: Peer> Node<P> {
    pub(super) fn set_own(
        &mut self,
        now: Instant,
        app: &AppName,
        seq: u64,
        t: Tally,
        report: Report,
    ) {
        let Some(h) = self.heads.get_mut(app).filter(|h| h.seq() == seq) else {
            return;
        };
        h.own = Some(t);
        h.dirty = true;
        // The head came straight from a publisher: tell it this node's own outcome at once.
        let direct = (h.round == 0).then_some(h.upstream).flatten();
        self.arm_tally(now);
        if let Some(up) = direct {
            self.send(up, Message::Report(report));
        }
    }

    pub(super) fn on_tally(&mut self, now: Instant, from: P, mut t: Tally) {
        let Some(app) = t.app.clone() else {
            return;
        };
        t.samples.truncate(crate::wire::MAX_TALLY_SAMPLES);
        if let Some(h) = self.heads.get_mut(&app)
            && h.seq() == t.seq
            && h.upstream != Some(from)
            && h.children
                .get(&from)
                .is_none_or(|old| old.version < t.version)
        {
            h.children.insert(from, t);
            h.dirty = true;
            self.arm_tally(now);
        }
    }

    /// A settled fleet count from the root side of the tree: keep it and pass it on down.
    pub(super) fn on_fleet_tally(&mut self, from: P, mut t: Tally, version: u32) {
        let Some(app) = t.app.clone() else {
            return;
        };
        t.samples.truncate(crate::wire::MAX_TALLY_SAMPLES);
        let Some(h) = self.heads.get_mut(&app) else {
            return;
        };
        if h.seq() != t.seq
            || h.root
            || h.fleet.as_ref().is_some_and(|_| h.fleet_version >= version)
        {
            return; // another head, the root's own count, or not newer than the one held
        }
        h.fleet = Some(t.clone());
        h.fleet_version = version;
        self.send_fleet_down(Some(from), t, version);
    }

    pub(super) fn send_fleet_down(&mut self, from: Option<P>, t: Tally, version: u32) {
        let to: Vec<P> = self
            .eager
            .iter()
            .copied()
            .filter(|p| Some(*p) != from)
            .collect();
        for p in to {
            let msg = Message::FleetTally {
                tally: t.clone(),
                version,
            };
            self.send(p, msg);
        }
    }

    pub(super) fn next_tally_version(&mut self) -> u64 {
        self.tally_version += 1;
        self.tally_version
    }

    pub(super) fn arm_tally(&mut self, now: Instant) {
        if self.next_tally.is_none() {
            self.refill_tally_tokens(now);
            let short = (1.0 - self.tally_tokens).max(0.0);
            self.next_tally = Some(now + self.cfg.tally_interval.mul_f64(short));
        }
    }

    pub(super) fn refill_tally_tokens(&mut self, now: Instant) {
        let interval = self.cfg.tally_interval.as_secs_f64().max(1e-6);
        let earned = now
            .saturating_duration_since(self.tally_refilled)
            .as_secs_f64()
            / interval;
        self.tally_tokens = (self.tally_tokens + earned).min(TALLY_BURST);
        self.tally_refilled = now;
    }

    pub(super) fn flush_tallies(&mut self, now: Instant) {
        self.next_tally = None;
        let mut waiting = false;
        let mut sends = Vec::new();
        let mut announce: Vec<(Announce, Vec<P>)> = Vec::new();
        let mut retract: Vec<(P, Tally)> = Vec::new();
        let active: Vec<P> = self.members.active().to_vec();
        for h in self.heads.values_mut() {
            if !h.dirty {
                continue;
            }
            if !h.root {
                let members = &self.members;
                let me = self.cfg.node;
                let key = |p: P, r: u16| Some((r, members.node_of(p)?));
                let below = |h: &HeadState<P>, p: P| {
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
                        let ann = Announce {
                            app: h.head.head.app.clone(),
                            seq: h.seq(),
                            id: h.id,
                            round: rank,
                        };
                        announce.push((ann, active.clone()));
                    }
                }
                if let Some(o) = old
                    && h.upstream != Some(o)
                    && members.node_of(o).is_some()
                {
                    // Take this subtree's count back from the old parent (it is counted via
                    // the new one).
                    retract.push((
                        o,
                        Tally {
                            app: Some(h.head.head.app.clone()),
                            seq: h.seq(),
                            ..Tally::default()
                        },
                    ));
                }
            }
            if h.root {
                // The root: the fleet's count is its own total; send it down once it settles.
                h.fleet_due = Some(now + FLEET_SETTLE);
            }
            match h.upstream {
                Some(u) => {
                    h.dirty = false;
                    sends.push((u, h.total()));
                }
                None => waiting |= h.round > 0,
            }
        }
        for (ann, to) in announce {
            for p in to {
                self.send(p, Message::IHave(vec![ann.clone()]));
            }
        }
        for (o, mut t) in retract {
            t.version = self.next_tally_version();
            self.send(o, Message::Tally(t));
        }
        if !sends.is_empty() {
            self.refill_tally_tokens(now);
            self.tally_tokens = (self.tally_tokens - 1.0).max(0.0);
        }
        for (u, mut t) in sends {
            t.version = self.next_tally_version();
            self.send(u, Message::Tally(t));
        }
        if waiting {
            self.next_tally = Some(now + POISON_HOLD.min(self.cfg.tally_interval * 10));
        }
    }
}
