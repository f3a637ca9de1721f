//! Membership: HyParView over the shell's connections (sans-IO).
//!
//! Every connection is a *link*. A link is a **client** (a publisher, a status query: it may
//! push heads and fetch chunks but is not part of the overlay) until the peer joins the
//! overlay through it, when it enters the small **active view** (the connections this node
//! keeps and gossips on). A larger **passive view** of dialable peers (node id + address)
//! is kept for repair: when an active peer fails, a passive one is dialled to replace it.
//!
//! - Join: a new node dials several bootstrap contacts (spreading joins over many contacts
//!   mixes the overlay well) and sends `Join`; each contact takes it into its active view and
//!   starts `ForwardJoin` random walks (length `arwl`) from every other active peer; the walk's
//!   end takes the newcomer into its active view, and the node at `prwl` into its passive view.
//! - Neighbor: asks to be taken into an active view; a high-priority request (the asker has no
//!   active peer left) is always accepted, evicting a random active peer if the view is full.
//! - Shuffle: periodically swaps a sample of active and passive entries with a random active
//!   peer, keeping passive views fresh.
//! - Probe: periodically (and whenever the active view is short) one passive peer or bootstrap
//!   contact is dialled even if the view is full, for an anti-entropy exchange. That is how two
//!   halves of a healed partition find each other again: when the exchange shows the overlay
//!   is split (a head arrived only over the probe, or the peer lacks a head held for a while),
//!   the node asks the probed peer into its active view, bridging the halves; otherwise an
//!   idle probe link closes after a linger time.
//! - Ban: a peer that served bad data (a chunk that does not match the signed chunk map) is
//!   disconnected and never taken into either view again (a bounded list of banned nodes).
//!
//! Two links to the same node (simultaneous dials, a peer that restarted) are resolved the
//! same way on both sides: the link dialled by the smaller node id wins.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::rng::Rng;
use crate::wire::{MAX_PEERS_PER_MESSAGE, MembershipMsg, NodeId, PeerInfo};

/// HyParView tuning.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Active view size (connections kept and gossiped on).
    pub active_size: usize,
    /// Passive view size.
    pub passive_size: usize,
    /// Active random walk length of a join.
    pub arwl: u8,
    /// Passive random walk length: the walk's node at this ttl adds the newcomer to its passive view.
    pub prwl: u8,
    /// How often to shuffle and probe.
    pub shuffle_interval: Duration,
    /// Active and passive entries sent in a shuffle.
    pub shuffle_active: usize,
    pub shuffle_passive: usize,
    /// Bootstrap contacts to send `Join` to at start.
    pub join_contacts: usize,
    /// Chance per shuffle tick of probing a passive peer or contact even when the view is full.
    pub probe_chance: f64,
    /// An idle probe link closes after this long.
    pub probe_linger: Duration,
    /// Where this node can be dialled, if not the address its connections come from.
    pub advertise: Option<SocketAddr>,
    /// Bootstrap contacts (kept for good: re-joined when the node is alone, probed after).
    pub contacts: Vec<SocketAddr>,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            active_size: 10,
            passive_size: 36,
            arwl: 6,
            prwl: 3,
            shuffle_interval: Duration::from_secs(10),
            shuffle_active: 3,
            shuffle_passive: 4,
            join_contacts: 3,
            probe_chance: 0.2,
            probe_linger: Duration::from_secs(15),
            advertise: None,
            contacts: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Join,
    Neighbor { high: bool },
    Probe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Not part of the overlay (yet): a publisher, a status query, an inbound link before `Join`.
    Client,
    /// We asked to become neighbours and wait for the answer.
    Asking,
    Active,
    /// A probe: kept until `expires` unless it becomes active.
    Probe {
        expires: Instant,
    },
}

#[derive(Clone, Debug)]
struct Link {
    node: NodeId,
    /// Where the peer can be dialled: advertised, else observed.
    addr: SocketAddr,
    outbound: bool,
    role: Role,
    /// When the link came up.
    since: Instant,
}

/// What the membership layer asks of the node.
#[derive(Debug, PartialEq)]
pub enum MOut<P> {
    Send(P, MembershipMsg),
    Dial(SocketAddr),
    Disconnect(P, String),
    /// `P` entered the active view.
    Up(P),
    /// `P` left the active view.
    Down(P),
    /// A probe link is up: run an anti-entropy exchange over it.
    Probe(P),
    /// The link `old` to a node was replaced by the newer link `new` to the same node. With
    /// `fresh` the peer came back (it restarted or lost the old link): treat it as a new
    /// neighbour. Otherwise both sides dialled at once: what was known of `old` belongs to `new`.
    Replaced {
        old: P,
        new: P,
        fresh: bool,
    },
}

/// HyParView state. See the module docs.
#[derive(Debug)]
pub struct Membership<P: Peer> {
    cfg: MembershipConfig,
    me: NodeId,
    links: BTreeMap<P, Link>,
    active: Vec<P>,
    passive: Vec<PeerInfo>,
    dialing: BTreeMap<SocketAddr, (Intent, Instant)>,
    /// Nodes that declined, evicted or dropped this one recently: not asked again until then.
    cooling: BTreeMap<NodeId, Instant>,
    /// Nodes dropped for serving bad data (oldest first, bounded): never taken back.
    banned: VecDeque<PeerInfo>,
    next_shuffle: Option<Instant>,
    next_join: Option<Instant>,
    join_backoff: Duration,
    out: VecDeque<MOut<P>>,
}

const DIAL_GRACE: Duration = Duration::from_secs(15);
/// Nodes remembered as banned.
const MAX_BANNED: usize = 64;
/// Two links to one node that came up within this time of each other were dialled at once.
const SIMULTANEOUS_DIAL: Duration = Duration::from_secs(5);

impl<P: Peer> Membership<P> {
    pub fn new(me: NodeId, cfg: MembershipConfig) -> Self {
        Membership {
            cfg,
            me,
            links: BTreeMap::new(),
            active: Vec::new(),
            passive: Vec::new(),
            dialing: BTreeMap::new(),
            cooling: BTreeMap::new(),
            banned: VecDeque::new(),
            next_shuffle: None,
            next_join: None,
            join_backoff: Duration::from_secs(1),
            out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// Starts joining through the bootstrap contacts.
    pub fn start(&mut self, now: Instant, rng: &mut Rng) {
        self.join(now, rng);
        let jitter = self.cfg.shuffle_interval.mul_f64(rng.unit());
        self.next_shuffle = Some(now + jitter);
    }

    fn join(&mut self, now: Instant, rng: &mut Rng) {
        let contacts = rng.sample(&self.cfg.contacts, self.cfg.join_contacts.max(1));
        for addr in contacts {
            self.dial(now, addr, Intent::Join);
        }
        self.next_join = (!self.cfg.contacts.is_empty()).then(|| now + self.join_backoff);
        self.join_backoff = (self.join_backoff * 2).min(Duration::from_secs(30));
    }

    fn dial(&mut self, now: Instant, addr: SocketAddr, intent: Intent) {
        if self.dialing.contains_key(&addr) || self.links.values().any(|l| l.addr == addr) {
            return;
        }
        self.dialing.insert(addr, (intent, now + DIAL_GRACE));
        self.out.push_back(MOut::Dial(addr));
    }

    pub fn poll(&mut self) -> Option<MOut<P>> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let probes = self.links.values().filter_map(|l| match l.role {
            Role::Probe { expires } => Some(expires),
            _ => None,
        });
        let dials = self.dialing.values().map(|(_, at)| *at);
        self.next_shuffle
            .into_iter()
            .chain(self.next_join)
            .chain(probes)
            .chain(dials)
            .min()
    }

    pub fn is_active(&self, p: P) -> bool {
        self.links.get(&p).is_some_and(|l| l.role == Role::Active)
    }

    pub fn active(&self) -> &[P] {
        &self.active
    }

    /// Whether `p` is a probe link this node dialled.
    pub fn is_probe(&self, p: P) -> bool {
        self.links
            .get(&p)
            .is_some_and(|l| matches!(l.role, Role::Probe { .. }))
    }

    /// Turns probe link `p` into an active one (a high-priority `Neighbor` request, which the
    /// peer always accepts): the probe found the other side of a split overlay.
    pub fn promote(&mut self, p: P) {
        if !self.is_probe(p) {
            return;
        }
        self.set_role(p, Role::Asking);
        let msg = MembershipMsg::Neighbor {
            high_priority: true,
            addr: self.cfg.advertise,
        };
        self.out.push_back(MOut::Send(p, msg));
    }

    pub fn node_of(&self, p: P) -> Option<NodeId> {
        self.links.get(&p).map(|l| l.node)
    }

    pub fn active_view(&self) -> Vec<PeerInfo> {
        self.active
            .iter()
            .filter_map(|p| self.links.get(p))
            .map(|l| PeerInfo {
                node: l.node,
                addr: l.addr,
            })
            .collect()
    }

    pub fn passive_len(&self) -> usize {
        self.passive.len()
    }

    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Keeps a probe link open for another linger period (it is in use).
    pub fn keep(&mut self, now: Instant, p: P) {
        let linger = self.cfg.probe_linger;
        if let Some(l) = self.links.get_mut(&p)
            && let Role::Probe { expires } = &mut l.role
        {
            *expires = (*expires).max(now + linger);
        }
    }

    /// `p` served bad data: remember its node so it is never taken into a view again (the
    /// caller disconnects it).
    pub fn ban(&mut self, p: P) {
        let Some(l) = self.links.get(&p) else {
            return;
        };
        let info = PeerInfo {
            node: l.node,
            addr: l.addr,
        };
        self.passive.retain(|i| i.node != info.node);
        if !self.is_banned(info.node) {
            if self.banned.len() >= MAX_BANNED {
                self.banned.pop_front();
            }
            self.banned.push_back(info);
        }
    }

    fn is_banned(&self, node: NodeId) -> bool {
        self.banned.iter().any(|b| b.node == node)
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
        if self.is_banned(node) {
            let reason = "dropped earlier for serving bad data".to_string();
            self.out.push_back(MOut::Disconnect(p, reason));
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
    fn take_in(&mut self, now: Instant, peer: PeerInfo) {
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

    fn shuffle(&mut self, rng: &mut Rng) {
        let Some(&q) = rng.pick(&self.active) else {
            return;
        };
        let mut peers = rng.sample(&self.active_view(), self.cfg.shuffle_active);
        peers.extend(rng.sample(&self.passive, self.cfg.shuffle_passive));
        peers.retain(|i| Some(i.node) != self.node_of(q));
        self.out
            .push_back(MOut::Send(q, MembershipMsg::Shuffle { peers }));
    }

    fn probe(&mut self, now: Instant, rng: &mut Rng) {
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
    fn refill(&mut self, now: Instant, rng: &mut Rng) {
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

    fn cool_down(&mut self, now: Instant, node: NodeId) {
        if self.cooling.len() >= self.cfg.passive_size.max(8) * 2 {
            self.cooling.retain(|_, until| *until > now);
        }
        self.cooling.insert(node, now + self.cfg.shuffle_interval);
    }

    fn set_role(&mut self, p: P, role: Role) {
        if let Some(l) = self.links.get_mut(&p) {
            l.role = role;
        }
    }

    fn add_active(&mut self, rng: &mut Rng, p: P) {
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

    fn add_passive(&mut self, rng: &mut Rng, info: PeerInfo) {
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

    fn integrate(&mut self, rng: &mut Rng, peers: &[PeerInfo]) {
        for info in peers {
            self.add_passive(rng, *info);
        }
    }
}
