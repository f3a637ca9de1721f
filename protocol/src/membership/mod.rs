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
use crate::wire::{MembershipMsg, NodeId, PeerInfo};

mod links;
mod messages;
#[cfg(test)]
mod tests;
mod views;

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
    /// Nodes the fleet root revokes, with the reason: never dialled, taken into a view or
    /// kept connected.
    revoked: BTreeMap<NodeId, String>,
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
            revoked: BTreeMap::new(),
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
        self.banned.iter().any(|b| b.node == node) || self.revoked.contains_key(&node)
    }

    /// The fleet root revokes `node`: it leaves the passive view, every link to it is closed
    /// with `reason`, and it is never taken back (a link it opens later is closed at once).
    /// Returns false if it was revoked already.
    pub fn revoke(&mut self, node: NodeId, reason: String) -> bool {
        if self.revoked.contains_key(&node) {
            return false;
        }
        self.passive.retain(|i| i.node != node);
        let links: Vec<P> = self
            .links
            .iter()
            .filter(|(_, l)| l.node == node)
            .map(|(p, _)| *p)
            .collect();
        for p in links {
            self.out.push_back(MOut::Disconnect(p, reason.clone()));
        }
        self.revoked.insert(node, reason);
        true
    }

    /// Whether link `p` runs to a revoked node (its close is under way).
    pub fn is_revoked_link(&self, p: P) -> bool {
        self.links
            .get(&p)
            .is_some_and(|l| self.revoked.contains_key(&l.node))
    }

    /// Whether the passive view holds `node` (tests).
    pub fn in_passive(&self, node: NodeId) -> bool {
        self.passive.iter().any(|i| i.node == node)
    }
}
