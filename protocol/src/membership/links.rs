//! Membership links: connections coming up (with the intent they were dialled for) and going
//! down, failed dials, and two links to one node.
//!
//! **Invariant:** one link per node: of two links to the same node, the one dialled by the
//! smaller node id wins on both sides when they were dialled at once (within
//! `SIMULTANEOUS_DIAL`); otherwise the newer link wins (the peer came back) and the stale one
//! is closed.
use std::net::SocketAddr;
use std::time::Instant;

use crate::peer::Peer;
use crate::rng::Rng;
use crate::wire::{MembershipMsg, NodeId, PeerInfo};

use super::{Intent, Link, MOut, Membership, Role, SIMULTANEOUS_DIAL};

impl<P: Peer> Membership<P> {
    /// A new link to a revoked or banned node is closed at once, with the reason: true if so.
    fn refuse_link(&mut self, p: P, node: NodeId) -> bool {
        let reason = match self.revoked.get(&node) {
            Some(reason) => reason.clone(),
            None if self.is_banned(node) => "dropped earlier for serving bad data".to_string(),
            None => return false,
        };
        self.out.push_back(MOut::Disconnect(p, reason));
        true
    }

    /// An operator's link (a CLI): a client, never part of the overlay, and never a duplicate
    /// of another link (one operator key may run several commands at once).
    pub fn operator_up(&mut self, now: Instant, p: P, node: NodeId, addr: SocketAddr) {
        if self.refuse_link(p, node) {
            return;
        }
        self.links.insert(
            p,
            Link {
                node,
                addr,
                outbound: false,
                role: Role::Client,
                since: now,
            },
        );
    }

    pub fn peer_up(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        p: P,
        node: NodeId,
        addr: SocketAddr,
        outbound: bool,
    ) {
        let intent = if outbound {
            self.dialing.remove(&addr).map(|(i, _)| i)
        } else {
            None
        };
        if self.refuse_link(p, node) {
            return;
        }
        // Two links to one node. If the old one is young, both sides dialled at once: the link
        // dialled by the smaller id wins, on both sides. Otherwise the peer dialled again
        // because it lost the old link (it restarted, or its side timed out first): the new
        // link wins, and the old one, likely dead, is closed rather than waited out.
        let dup = self
            .links
            .iter()
            .find(|(_, l)| l.node == node)
            .map(|(q, l)| (*q, l.outbound, l.since));
        if let Some((q, q_out, q_since)) = dup {
            let dialer = |out: bool| if out { self.me } else { node };
            let simultaneous = now.saturating_duration_since(q_since) < SIMULTANEOUS_DIAL;
            if simultaneous
                && dialer(outbound) >= dialer(q_out)
                && dialer(outbound) != dialer(q_out)
            {
                self.out
                    .push_back(MOut::Disconnect(p, "duplicate connection".into()));
                return;
            }
            // The new link wins; it inherits the old one's role (and its advertised address
            // unless the peer came back from elsewhere).
            let old = self.links.remove(&q).expect("found above");
            self.links.insert(
                p,
                Link {
                    node,
                    addr: if simultaneous { old.addr } else { addr },
                    outbound,
                    role: old.role,
                    since: now,
                },
            );
            if old.role == Role::Active {
                let i = self.active.iter().position(|a| *a == q).expect("active");
                self.active[i] = p;
            }
            self.out.push_back(MOut::Replaced {
                old: q,
                new: p,
                fresh: !simultaneous,
            });
            self.out
                .push_back(MOut::Disconnect(q, "duplicate connection".into()));
            if old.role == Role::Active && !simultaneous {
                // The peer came back: it may have missed heads while it was away.
                self.out.push_back(MOut::Probe(p));
            }
            return;
        }
        self.links.insert(
            p,
            Link {
                node,
                addr,
                outbound,
                role: Role::Client,
                since: now,
            },
        );
        let advertise = self.cfg.advertise;
        match intent {
            Some(Intent::Join) => {
                self.add_active(rng, p);
                self.out
                    .push_back(MOut::Send(p, MembershipMsg::Join { addr: advertise }));
            }
            Some(Intent::Neighbor { high }) => {
                if self.active.len() >= self.cfg.active_size && !high {
                    self.out
                        .push_back(MOut::Disconnect(p, "active view filled meanwhile".into()));
                    return;
                }
                self.set_role(p, Role::Asking);
                let msg = MembershipMsg::Neighbor {
                    high_priority: high,
                    addr: advertise,
                };
                self.out.push_back(MOut::Send(p, msg));
            }
            Some(Intent::Probe) => {
                let expires = now + self.cfg.probe_linger;
                self.set_role(p, Role::Probe { expires });
                self.out.push_back(MOut::Probe(p));
                if self.active.len() < self.cfg.active_size {
                    let msg = MembershipMsg::Neighbor {
                        high_priority: self.active.is_empty(),
                        addr: advertise,
                    };
                    self.out.push_back(MOut::Send(p, msg));
                }
            }
            None => {}
        }
    }

    pub fn peer_down(&mut self, now: Instant, rng: &mut Rng, p: P) {
        let Some(link) = self.links.remove(&p) else {
            return;
        };
        if matches!(link.role, Role::Active | Role::Asking) {
            // It may have left on purpose (evicted us, declined): do not ask it again at once.
            self.cool_down(now, link.node);
        }
        if link.role == Role::Active {
            self.active.retain(|a| *a != p);
            self.out.push_back(MOut::Down(p));
            // It may have left on purpose (evicted us); if it is dead, a dial will tell.
            self.add_passive(
                rng,
                PeerInfo {
                    node: link.node,
                    addr: link.addr,
                },
            );
            self.refill(now, rng);
        } else if link.role == Role::Asking {
            self.refill(now, rng);
        }
    }

    pub fn dial_failed(&mut self, now: Instant, rng: &mut Rng, addr: SocketAddr) {
        if self.dialing.remove(&addr).is_none() {
            return;
        }
        self.passive.retain(|i| i.addr != addr);
        self.refill(now, rng);
    }
}
