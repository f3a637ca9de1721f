//! Membership messages: `Join` and its `ForwardJoin` random walks, neighbour requests and
//! their answers (with the cool-down after a decline), and passive-view shuffles.
//!
//! **Invariant:** a message from a peer that is not a link changes nothing; a high-priority
//! neighbour request (the asker has nobody left) is always accepted.
use std::time::Instant;

use crate::peer::Peer;
use crate::rng::Rng;
use crate::wire::{MAX_PEERS_PER_MESSAGE, MembershipMsg, PeerInfo};

use super::{Intent, MOut, Membership, Role};

impl<P: Peer> Membership<P> {
    /// Whether `p` is a link this layer knows (a message from any other peer is dropped).
    pub fn is_linked(&self, p: P) -> bool {
        self.links.contains_key(&p)
    }

    /// Handles a membership message from `p` (dropped unless `p` is a link).
    pub fn on_message(&mut self, now: Instant, rng: &mut Rng, p: P, msg: MembershipMsg) {
        let Some(link) = self.links.get(&p).cloned() else {
            return;
        };
        match msg {
            MembershipMsg::Join { addr } => {
                let addr = addr.unwrap_or(link.addr);
                self.links.get_mut(&p).expect("exists").addr = addr;
                self.add_active(rng, p);
                let info = PeerInfo {
                    node: link.node,
                    addr,
                };
                let ttl = self.cfg.arwl;
                for q in self.active.clone() {
                    if q != p {
                        let msg = MembershipMsg::ForwardJoin { peer: info, ttl };
                        self.out.push_back(MOut::Send(q, msg));
                    }
                }
            }
            MembershipMsg::ForwardJoin { peer, ttl } => {
                if peer.node == self.me {
                    return;
                }
                if ttl == 0 || self.active.len() <= 1 {
                    self.take_in(now, peer);
                    return;
                }
                if ttl == self.cfg.prwl {
                    self.add_passive(rng, peer);
                }
                let others: Vec<P> = self.active.iter().copied().filter(|q| *q != p).collect();
                match rng.pick(&others) {
                    Some(q) => {
                        let msg = MembershipMsg::ForwardJoin { peer, ttl: ttl - 1 };
                        self.out.push_back(MOut::Send(*q, msg));
                    }
                    None => self.take_in(now, peer),
                }
            }
            MembershipMsg::Neighbor {
                high_priority,
                addr,
            } => {
                if let Some(addr) = addr {
                    self.links.get_mut(&p).expect("exists").addr = addr;
                }
                let accepted = link.role == Role::Active
                    || high_priority
                    || self.active.len() < self.cfg.active_size;
                if accepted {
                    self.add_active(rng, p);
                }
                self.out
                    .push_back(MOut::Send(p, MembershipMsg::NeighborReply { accepted }));
            }
            MembershipMsg::NeighborReply { accepted } => {
                if accepted {
                    self.add_active(rng, p);
                } else if link.role == Role::Asking {
                    // Ask others first: without a cool-down, a full peer that stays in the
                    // passive view would be asked again at once, in a loop.
                    self.cool_down(now, link.node);
                    self.out
                        .push_back(MOut::Disconnect(p, "neighbour request declined".into()));
                }
            }
            MembershipMsg::Shuffle { peers } => {
                let n = peers.len().min(MAX_PEERS_PER_MESSAGE);
                let reply = rng.sample(&self.passive, n);
                self.out
                    .push_back(MOut::Send(p, MembershipMsg::ShuffleReply { peers: reply }));
                self.integrate(rng, &peers[..n]);
            }
            MembershipMsg::ShuffleReply { peers } => {
                let n = peers.len().min(MAX_PEERS_PER_MESSAGE);
                self.integrate(rng, &peers[..n]);
            }
        }
    }

    /// A walk ended here: take `peer` into the active view.
    pub(super) fn take_in(&mut self, now: Instant, peer: PeerInfo) {
        if self.is_banned(peer.node) {
            return;
        }
        if let Some((q, l)) = self.links.iter().find(|(_, l)| l.node == peer.node) {
            if matches!(l.role, Role::Active | Role::Asking) {
                return; // already a neighbour, or being asked
            }
            let q = *q;
            let msg = MembershipMsg::Neighbor {
                high_priority: true,
                addr: self.cfg.advertise,
            };
            self.set_role(q, Role::Asking);
            self.out.push_back(MOut::Send(q, msg));
            return;
        }
        self.dial(now, peer.addr, Intent::Neighbor { high: true });
    }
}
