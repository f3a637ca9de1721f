//! The trust layer: what each link was admitted as, the fleet root versions neighbours hold,
//! and the fleet root chain travelling the mesh.
//!
//! A node adopts roots that follow its chain ([`crate::trust::Trust::update`]), asks the shell
//! to persist them first ([`Output::Roots`], with the time floor), pushes the new versions to
//! its other neighbours and closes every link to a node the new root revokes. Anti-entropy
//! summaries carry the sender's root version: a node that sees a newer one asks for what it
//! lacks (`Want`), a node that sees an older one pushes the versions after it, a batch at a
//! time ([`crate::trust::MAX_ROOTS_PER_MSG`]), asking again while the sender is still ahead.
//!
//! **Invariants:** the chain only moves forward and every step verified; `Output::Roots` comes
//! before any output that depends on the new root; a revoked node has no link and is never
//! taken back; an operator link never reaches membership or tallies.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::peer::Peer;
use crate::trust::{AdmitError, PeerRole, SignedRoot};
use crate::wire::{Message, TrustMsg};

use super::Node;
use super::io::{Event, Output};

/// Per link: its role and the newest root version it is known to hold.
#[derive(Debug)]
pub(super) struct PeerTrust<P> {
    roles: BTreeMap<P, PeerRole>,
    versions: BTreeMap<P, u64>,
}

impl<P: Peer> PeerTrust<P> {
    pub fn new() -> Self {
        PeerTrust {
            roles: BTreeMap::new(),
            versions: BTreeMap::new(),
        }
    }

    pub fn up(&mut self, p: P, role: PeerRole) {
        self.roles.insert(p, role);
        self.versions.remove(&p);
    }

    pub fn down(&mut self, p: P) {
        self.roles.remove(&p);
        self.versions.remove(&p);
    }

    /// What `p` was admitted as (a link the node has not heard of counts as a node).
    pub fn role(&self, p: P) -> PeerRole {
        self.roles.get(&p).copied().unwrap_or(PeerRole::Node)
    }

    pub fn is_operator(&self, p: P) -> bool {
        self.role(p) == PeerRole::Operator
    }

    /// `p` holds at least root `version`.
    fn saw(&mut self, p: P, version: u64) {
        let v = self.versions.entry(p).or_default();
        *v = (*v).max(version);
    }

    fn version(&self, p: P) -> u64 {
        self.versions.get(&p).copied().unwrap_or(0)
    }
}

impl<P: Peer> Node<P> {
    /// A trust message from `from`: a `Want` is answered with the versions it lacks; roots
    /// are adopted as far as they follow the chain.
    pub(super) fn on_trust(&mut self, now: Instant, from: P, msg: TrustMsg) {
        match msg {
            TrustMsg::Want { after } => {
                self.peer_trust.saw(from, after);
                let roots = self.cfg.trust.roots_after(after);
                if !roots.is_empty() {
                    self.out.send(from, Message::Trust(TrustMsg::Roots(roots)));
                }
            }
            TrustMsg::Roots(roots) => self.on_roots(now, from, roots),
        }
    }

    fn on_roots(&mut self, now: Instant, from: P, roots: Vec<SignedRoot>) {
        let ours = self.cfg.trust.version();
        if let Some(top) = roots.iter().map(|r| r.root.version).max() {
            self.peer_trust.saw(from, top);
        }
        let first = roots
            .iter()
            .map(|r| r.root.version)
            .filter(|v| *v > ours)
            .min();
        if first.is_some_and(|v| v > ours + 1) && !self.cfg.trust.is_legacy() {
            // A gap: the sender is further ahead than this batch; ask for what follows ours.
            self.out
                .send(from, Message::Trust(TrustMsg::Want { after: ours }));
            return;
        }
        let (adopted, err) = self.cfg.trust.update(roots);
        if let Some(e) = err {
            self.out.event(Event::RootRefused {
                reason: e.to_string(),
            });
        }
        if adopted.is_empty() {
            return;
        }
        self.adopted(now, Some(from), adopted);
        let ours = self.cfg.trust.version();
        if self.peer_trust.version(from) > ours {
            // The chain is longer than one message: ask for the next batch.
            self.out
                .send(from, Message::Trust(TrustMsg::Want { after: ours }));
        }
    }

    /// Roots were adopted (from `from`, or pushed by the shell): persist them first, log them,
    /// pass them on, and apply what they say (revocations, the new epoch).
    fn adopted(&mut self, now: Instant, from: Option<P>, adopted: Vec<SignedRoot>) {
        let floor_ms = self.cfg.trust.floor_ms();
        for r in &adopted {
            self.out.event(Event::RootAdopted {
                version: r.root.version,
                epoch: r.root.epoch,
            });
        }
        self.out.push(Output::Roots {
            roots: adopted.clone(),
            floor_ms,
        });
        let top = adopted.last().map_or(0, |r| r.root.version);
        for &p in self.members.active() {
            if Some(p) != from && self.peer_trust.version(p) < top {
                self.out
                    .send(p, Message::Trust(TrustMsg::Roots(adopted.clone())));
            }
        }
        self.apply_revocations();
        self.drop_old_epoch();
        self.drain_members(now);
    }

    /// Closes every link to a node the newest root revokes and forgets it in membership.
    pub(super) fn apply_revocations(&mut self) {
        let root = self.cfg.trust.current();
        for node in root.revoked.clone() {
            let reason = AdmitError::Revoked {
                node,
                fleet: root.fleet.clone(),
                version: root.version,
            }
            .to_string();
            self.members.revoke(node, reason);
        }
    }

    /// A neighbour's summary said it holds root `theirs`: ask for what it holds newer, or push
    /// it what it lacks.
    pub(super) fn on_summary_root(&mut self, from: P, theirs: u64) {
        self.peer_trust.saw(from, theirs);
        let ours = self.cfg.trust.version();
        if theirs > ours && !self.cfg.trust.is_legacy() {
            self.out
                .send(from, Message::Trust(TrustMsg::Want { after: ours }));
        } else if theirs < ours && theirs > 0 {
            // (0: the peer has no root, trusted_keys; no signed root can follow it.)
            let roots = self.cfg.trust.roots_after(theirs);
            if !roots.is_empty() {
                self.out.send(from, Message::Trust(TrustMsg::Roots(roots)));
            }
        }
    }
}
