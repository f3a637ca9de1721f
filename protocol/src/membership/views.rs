//! Keeping the views: periodic shuffles and probes, refilling the active view from the passive
//! one, cool-downs, evictions, and the bounded passive view.
//!
//! **Invariants:** the active view never exceeds `active_size` (a newcomer evicts a random
//! member) nor the passive view `passive_size`; a banned node, or this node, is never taken
//! into either; a node that declined, evicted or dropped this one is not asked again within
//! `shuffle_interval`.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::rng::Rng;
use crate::wire::{MembershipMsg, NodeId, PeerInfo};

use super::{Intent, MOut, Membership, Role};

impl<P: Peer> Membership<P> {
    pub fn on_timeout(&mut self, now: Instant, rng: &mut Rng) {
        self.dialing.retain(|_, (_, at)| *at > now);
        self.cooling.retain(|_, until| *until > now);
        let expired: Vec<P> = self
            .links
            .iter()
            .filter(|(_, l)| matches!(l.role, Role::Probe { expires } if expires <= now))
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.set_role(p, Role::Client);
            self.out
                .push_back(MOut::Disconnect(p, "probe finished".into()));
        }
        if self.next_join.is_some_and(|t| t <= now) {
            self.next_join = None;
            if self.active.is_empty() {
                self.join(now, rng);
            } else {
                self.join_backoff = Duration::from_secs(1);
            }
        }
        if self.next_shuffle.is_some_and(|t| t <= now) {
            let jitter = 0.75 + rng.unit() / 2.0;
            self.next_shuffle = Some(now + self.cfg.shuffle_interval.mul_f64(jitter));
            self.shuffle(rng);
            if self.active.len() < self.cfg.active_size || rng.chance(self.cfg.probe_chance) {
                self.probe(now, rng);
            }
            self.refill(now, rng);
        }
    }

    pub(super) fn shuffle(&mut self, rng: &mut Rng) {
        let Some(&q) = rng.pick(&self.active) else {
            return;
        };
        let mut peers = rng.sample(&self.active_view(), self.cfg.shuffle_active);
        peers.extend(rng.sample(&self.passive, self.cfg.shuffle_passive));
        peers.retain(|i| Some(i.node) != self.node_of(q));
        self.out
            .push_back(MOut::Send(q, MembershipMsg::Shuffle { peers }));
    }

    pub(super) fn probe(&mut self, now: Instant, rng: &mut Rng) {
        let mut candidates: Vec<SocketAddr> = self.passive.iter().map(|i| i.addr).collect();
        candidates.extend(self.cfg.contacts.iter().copied());
        candidates.retain(|a| {
            !self.dialing.contains_key(a)
                && !self.links.values().any(|l| l.addr == *a)
                && Some(*a) != self.cfg.advertise
                && !self.banned.iter().any(|b| b.addr == *a)
        });
        if let Some(addr) = rng.pick(&candidates) {
            self.dial(now, *addr, Intent::Probe);
        }
    }

    /// Dials passive peers while the active view (counting requests in flight) is short.
    pub(super) fn refill(&mut self, now: Instant, rng: &mut Rng) {
        let asking = self
            .dialing
            .values()
            .filter(|(i, _)| matches!(i, Intent::Neighbor { .. } | Intent::Join))
            .count()
            + self
                .links
                .values()
                .filter(|l| l.role == Role::Asking)
                .count();
        let mut want = self
            .cfg
            .active_size
            .saturating_sub(self.active.len() + asking);
        let mut candidates: Vec<PeerInfo> = self
            .passive
            .iter()
            .filter(|i| {
                !self.dialing.contains_key(&i.addr)
                    && !self.links.values().any(|l| l.node == i.node)
                    && self.cooling.get(&i.node).is_none_or(|until| *until <= now)
            })
            .copied()
            .collect();
        rng.shuffle(&mut candidates);
        let high = self.active.is_empty();
        for info in candidates {
            if want == 0 {
                break;
            }
            self.dial(now, info.addr, Intent::Neighbor { high });
            want -= 1;
        }
        if self.active.is_empty() && asking == 0 && self.next_join.is_none() {
            self.join(now, rng);
        }
    }

    pub(super) fn cool_down(&mut self, now: Instant, node: NodeId) {
        if self.cooling.len() >= self.cfg.passive_size.max(8) * 2 {
            self.cooling.retain(|_, until| *until > now);
        }
        self.cooling.insert(node, now + self.cfg.shuffle_interval);
    }

    pub(super) fn set_role(&mut self, p: P, role: Role) {
        if let Some(l) = self.links.get_mut(&p) {
            l.role = role;
        }
    }

    pub(super) fn add_active(&mut self, rng: &mut Rng, p: P) {
        let Some(link) = self.links.get(&p) else {
            return;
        };
        if link.role == Role::Active || self.active.contains(&p) {
            return;
        }
        let node = link.node;
        if self.active.len() >= self.cfg.active_size {
            let i = rng.below(self.active.len());
            let q = self.active.remove(i);
            if let Some(l) = self.links.get_mut(&q) {
                l.role = Role::Client;
                let info = PeerInfo {
                    node: l.node,
                    addr: l.addr,
                };
                self.out.push_back(MOut::Down(q));
                self.out.push_back(MOut::Disconnect(
                    q,
                    "evicted from a full active view".into(),
                ));
                self.add_passive(rng, info);
            }
        }
        self.passive.retain(|i| i.node != node);
        self.set_role(p, Role::Active);
        self.active.push(p);
        self.out.push_back(MOut::Up(p));
    }

    pub(super) fn add_passive(&mut self, rng: &mut Rng, info: PeerInfo) {
        if info.node == self.me
            || self.is_banned(info.node)
            || self.passive.iter().any(|i| i.node == info.node)
            || self
                .links
                .values()
                .any(|l| l.node == info.node && l.role == Role::Active)
        {
            return;
        }
        if self.passive.len() >= self.cfg.passive_size {
            let i = rng.below(self.passive.len());
            self.passive.swap_remove(i);
        }
        self.passive.push(info);
    }

    pub(super) fn integrate(&mut self, rng: &mut Rng, peers: &[PeerInfo]) {
        for info in peers {
            self.add_passive(rng, *info);
        }
    }
}
