//! Plumtree broadcast of heads and anti-entropy: accepting a head (verify, seq rules), relaying
//! it eagerly or announcing it lazily, pruning duplicate links, grafting late announcements,
//! and the periodic `Summary` exchange that lets a node that was away catch up.

use super::*;

impl<P: Peer> Node<P> {
    pub(super) fn on_summary(
        &mut self,
        now: Instant,
        from: P,
        heads: Vec<(AppName, u64)>,
        reply: bool,
    ) {
        let theirs: BTreeMap<AppName, u64> = heads.into_iter().take(MAX_SUMMARY).collect();
        // A probed node that still lacks a head this node has held for a while is not reached
        // by the overlay's broadcast: the overlay is split (a healed partition). Bridge it.
        let split = self.apps.iter().any(|(a, r)| {
            theirs.get(a).is_none_or(|s| *s < r.head.head.seq)
                && self
                    .accepted_at
                    .get(a)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= SPLIT_EVIDENCE)
        });
        if split {
            self.members.promote(from);
        }
        let newer: Vec<(SignedHead, u16)> = self
            .apps
            .iter()
            .filter(|(a, r)| theirs.get(*a).is_none_or(|s| *s < r.head.head.seq))
            .map(|(a, r)| {
                let round = self
                    .heads
                    .get(a)
                    .filter(|h| h.seq() == r.head.head.seq)
                    .map_or(0, |h| h.round);
                (r.head.clone(), round)
            })
            .collect();
        for (h, round) in newer {
            self.send(
                from,
                Message::Gossip {
                    head: Box::new(h),
                    round,
                },
            );
        }
        if !reply && theirs.iter().any(|(a, s)| *s > self.held(a)) {
            self.send_summary(from, true);
        }
        // The fleet count for heads both hold: a node the count did not reach down the tree
        // (it joined or came back after the count settled) learns it here.
        let counts: Vec<(Tally, u32)> = self
            .heads
            .values()
            .filter(|h| theirs.get(&h.head.head.app) == Some(&h.seq()))
            .filter_map(|h| Some((h.fleet.clone()?, h.fleet_version)))
            .collect();
        for (tally, version) in counts {
            self.send(from, Message::FleetTally { tally, version });
        }
    }

    pub(super) fn on_ihave(&mut self, now: Instant, from: P, anns: Vec<Announce>) {
        for a in anns.into_iter().take(MAX_ANNOUNCES) {
            if let Some(h) = self.heads.get_mut(&a.app)
                && h.id == a.id
            {
                let old = h.offers.insert(from, a.round);
                // A new rank from the tally parent, or a neighbour a parentless node may take:
                // look at the tally tree again.
                if old != Some(a.round)
                    && !h.root
                    && (h.upstream == Some(from) || h.upstream.is_none())
                    && (h.own.is_some() || !h.children.is_empty())
                {
                    h.dirty = true;
                    self.arm_tally(now);
                }
                continue;
            }
            if a.seq <= self.held(&a.app) {
                continue;
            }
            let at = now + self.cfg.ihave_timeout;
            let m = self.missing.entry(a.id).or_insert_with(|| Missing {
                app: a.app.clone(),
                seq: a.seq,
                announcers: VecDeque::new(),
                at,
            });
            if !m.announcers.contains(&from) && m.announcers.len() < 16 {
                m.announcers.push_back(from);
            }
        }
    }

    /// A head from `from`: `round` is `None` for a direct push (a publisher), else the
    /// sender's hop count.
    pub(super) fn on_head(&mut self, now: Instant, from: P, sh: SignedHead, round: Option<u16>) {
        let app = sh.head.app.clone();
        let seq = sh.head.seq;
        let id = sh.id();
        let gossip = round.is_some();
        if let Some(h) = self.heads.get_mut(&app)
            && h.id == id
        {
            // A duplicate: the tree does not need this link for heads.
            if let Some(r) = round {
                h.offers.insert(from, r);
                self.prune(from);
            }
            return;
        }
        let held = self.held(&app);
        if gossip && seq <= held {
            // Old news travelling a redundant path; not worth a signature check.
            self.prune(from);
            return;
        }
        if let Err(e) = sh.verify(&self.cfg.trust) {
            return self.reject(from, &sh, e);
        }
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
        self.missing.remove(&id);
        let my_round = round.map_or(0, |r| r.saturating_add(1));
        if gossip && self.members.is_active(from) {
            self.lazy.remove(&from);
            self.eager.insert(from);
        }
        let mut st = self.head_state(sh.clone(), my_round, Some(from));
        st.root = !gossip;
        if let Some(r) = round {
            st.offers.insert(from, r);
        }
        let prev = self.heads.insert(app.clone(), st);
        self.accepted_at.insert(app.clone(), now);
        // A new head starts a new burst of tallies: its first counts travel up the tree at
        // once (a rollback is reported in the time its head takes to cross the mesh), and
        // pacing only sets in for the changes after them.
        self.tally_tokens = TALLY_BURST;
        self.tally_refilled = now;
        if self.next_tally.is_some() {
            self.next_tally = Some(now); // a send held back by pacing goes now
        }
        if gossip && self.members.is_probe(from) {
            // A head that only arrived over a probe link: this node's part of the overlay did
            // not have it, so the overlay is split (a healed partition). Bridge it.
            self.members.promote(from);
        }
        // Relay at once: the head runs ahead of the content.
        let eager: Vec<P> = self.eager.iter().copied().filter(|p| *p != from).collect();
        for p in eager {
            let msg = Message::Gossip {
                head: Box::new(sh.clone()),
                round: my_round,
            };
            self.send(p, msg);
        }
        let ann = Announce {
            app: app.clone(),
            seq,
            id,
            round: my_round,
        };
        let lazy: Vec<P> = self.lazy.iter().copied().filter(|p| *p != from).collect();
        for p in lazy {
            self.send(p, Message::IHave(vec![ann.clone()]));
        }
        if let Some(p) = self.pending.get_mut(&app) {
            if p.stage == Stage::Activating {
                // The shell may stop that activation early (a compile still queued or running
                // is wasted work now); it reports the outcome either way, then `sh` starts.
                if p.next.is_none() {
                    self.out.push_back(Output::CancelActivation {
                        app: app.clone(),
                        seq: p.head.head.seq,
                    });
                }
                p.next = Some(sh);
                return;
            }
            // A newer head supersedes one still fetching.
            let old = self.pending.remove(&app).expect("checked above");
            self.drop_transfer_if_unused(&old.head.head.release.digest);
        }
        self.start(now, Some(from), sh);
        if let Some(prev) = prev {
            // The content of a superseded head that failed to activate is no longer served.
            self.drop_transfer_if_unused(&prev.head.head.release.digest);
        }
    }

    pub(super) fn prune(&mut self, from: P) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
            self.send(from, Message::Prune);
        }
    }
}
