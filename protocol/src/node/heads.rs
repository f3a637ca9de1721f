//! Wiring of a head's life through the layers: acceptance (verify, seq rules, relay),
//! starting its fetch or activation, the whole content checked, and the shell's outcomes
//! (activated, refused, reverted), each reflected in tallies.
//!
//! **Invariants:** a head is verified and its seq checked before any layer sees it, and a
//! refusal changes no state (it is only reported to the sender); a version names one set of
//! bytes (a `Release` head that reuses a version of this node's history with other bytes is
//! refused); content reaches activation only once it verified as a whole.

use std::time::Instant;

use crate::head::{HeadError, SignedHead};
use crate::peer::Peer;
use crate::release::{AppName, Digest, Release};
use crate::rollout::Health;
use crate::wire::{Message, Outcome, Position, Tally, TallyMsg};

use super::activation::{Superseded, truncate};
use super::io::{ActivationError, Event};
use super::{Node, position};

impl<P: Peer> Node<P> {
    /// A head from `from`: `round` is `None` for a direct push (a publisher), else the
    /// sender's hop count.
    pub(super) fn on_head(&mut self, now: Instant, from: P, sh: SignedHead, round: Option<u16>) {
        let app = sh.head.app.clone();
        let seq = sh.head.seq;
        let pos = position(&sh);
        let gossip = round.is_some();
        self.fresh.on_head(from, &app);
        let operator = self.peer_trust.is_operator(from);
        if self.broadcast.is_current(&app, &sh.id()) {
            if operator {
                // An operator pushed the head this node holds back: it is meant for now.
                self.activation.unhold(&app, &mut self.out);
            }
            // A duplicate: the tree does not need this link for heads.
            if let Some(r) = round {
                self.tally.note_offer(&app, from, r);
                self.broadcast.prune(from, &mut self.out);
            }
            return;
        }
        let held = self.held(&app);
        if gossip && pos <= held {
            // Old news travelling a redundant path; not worth a signature check.
            self.broadcast.prune(from, &mut self.out);
            return;
        }
        if let Err(e) = sh.verify(&self.cfg.trust) {
            return self.reject(from, &sh, e);
        }
        // Signed by the fleet's release keys: expiry is never judged before this time again.
        self.cfg.trust.observe(sh.head.issued_at_ms);
        if pos <= held {
            // Verified under the newest root, so its epoch is the newest: an older position
            // held is in the same epoch (a held head of a newer epoch cannot exist).
            let err = if pos == held {
                HeadError::Conflict { app, seq }
            } else {
                HeadError::Stale {
                    app,
                    seq,
                    current: held.seq,
                }
            };
            return self.reject(from, &sh, err);
        }
        if let Some(err) = self.version_reuse(&sh) {
            return self.reject(from, &sh, err);
        }
        let active = self.members.is_active(from);
        let (my_round, prev) = self.broadcast.accept(now, from, &sh, round, active);
        self.tally.on_new_head(now, &sh, my_round, from, round);
        if gossip && self.members.is_probe(from) {
            // A head that only arrived over a probe link: this node's part of the overlay did
            // not have it, so the overlay is split (a healed partition). Bridge it.
            self.members.promote(from);
        }
        self.broadcast.relay(from, &sh, my_round, &mut self.out);
        match self.activation.supersede(&sh, &mut self.out) {
            // The shell reports the activation in flight either way, then `sh` starts.
            Superseded::Queued => return,
            Superseded::Dropped(digest) => self.drop_transfer_if_unused(&digest),
            Superseded::Nothing => {}
        }
        // Before the node has checked with its peers, a head a peer hands it for an app it has
        // no record of waits (it may be old); an operator's push is meant for now.
        let hold = !operator
            && !self.fresh.is_fresh()
            && self.activation.applied(&app) == Position::default();
        self.start(now, Some(from), sh, hold);
        if let Some(prev) = prev {
            // The content of a superseded head that failed to activate is no longer served.
            self.drop_transfer_if_unused(&prev.head.head.release.digest);
        }
        self.check_fresh(now);
    }

    /// Whether the node is fresh-checked now; if it just became so, held heads activate.
    pub(super) fn check_fresh(&mut self, now: Instant) {
        let (b, a) = (&self.broadcast, &self.activation);
        if self.fresh.check(now, |app| b.held(app, a.applied(app))) {
            self.activation.release_held(&mut self.out);
        }
    }

    /// Pending heads of an epoch the newest root closed are not activated.
    pub(super) fn drop_old_epoch(&mut self) {
        let epoch = self.cfg.trust.epoch();
        for d in self.activation.drop_older_epoch(epoch) {
            self.drop_transfer_if_unused(&d);
        }
    }

    /// A version names one set of bytes: a head (release or rollback) whose version this
    /// node's history holds with another digest is refused. A `Rollback` to an older release
    /// carries the same version and digest, and the same bytes may come back under a new
    /// version.
    fn version_reuse(&self, sh: &SignedHead) -> Option<HeadError> {
        let h = &sh.head;
        let (version, carried) = (&h.release.version, h.release.digest);
        let released = self
            .activation
            .released_otherwise(&h.app, version, &carried)?;
        Some(HeadError::VersionReuse {
            app: h.app.clone(),
            version: Box::new(version.clone()),
            released,
            carried,
        })
    }

    /// Refuses `sh` from `from`: the sender hears why; nothing here changes.
    fn reject(&mut self, from: P, sh: &SignedHead, err: HeadError) {
        let reason = err.to_string();
        self.out.event(Event::Rejected {
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            kind: err.kind(),
            reason: reason.clone(),
        });
        match err {
            // Old news is only the sender's business: not counted, not kept in status.
            HeadError::Stale { current, .. } => {
                let report = self.activation.own_report(sh, Outcome::Stale { current });
                self.out.send(from, Message::Report(report));
            }
            _ => {
                let report = self
                    .activation
                    .own_report(sh, Outcome::Rejected(truncate(reason)));
                let tally = Tally {
                    app: Some(sh.head.app.clone()),
                    seq: sh.head.seq,
                    rejected: 1,
                    samples: vec![report.clone()],
                    version: self.tally.next_version(),
                    ..Tally::default()
                };
                self.out.send(from, Message::Report(report));
                self.out.send(from, TallyMsg::Subtree(tally));
            }
        }
    }

    /// An accepted head starts: activated at once from the store, or fetched (announcing to
    /// the neighbours and `from` what this node holds of it).
    /// `hold`: fetched but not activated until the node is fresh-checked.
    pub(super) fn start(&mut self, now: Instant, from: Option<P>, sh: SignedHead, hold: bool) {
        let digest = sh.head.release.digest;
        let cached = self.content.adopt(&sh.head.release);
        self.out.event(Event::Accepted {
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            version: sh.head.release.version.clone(),
            cached,
        });
        let release = sh.head.release.clone();
        // Once a rollout is past its first wave (its canaries passed the gates), a node that
        // holds no release of the app and none staged (it joined mid-rollout) has nothing to keep
        // serving: it runs the wave's release whatever its bucket, rather than serve nothing.
        let empty = self.activation.applied(&sh.head.app) == Position::default()
            && self.activation.staged(&sh.head.app).is_none();
        let past_first = sh.head.plan.as_ref().is_some_and(|p| p.wave > 0);
        let in_wave = sh.head.includes(&self.cfg.node) || empty && past_first;
        let base = self.own_tally(in_wave);
        if sh.head.plan.is_some() {
            // Every node counts itself for a staged head, in its wave or not: the fleet's size.
            let own = Tally {
                pending: u32::from(in_wave),
                ..base.clone()
            };
            self.tally.set_counts(now, &sh.head.app, sh.head.seq, own);
        }
        let (app, seq) = (sh.head.app.clone(), sh.head.seq);
        if sh.head.plan.is_some() && in_wave && self.activation.reverted_from(&app) == Some(digest)
        {
            // A later wave of a release that failed its trial here: it fails here again.
            let reason = format!(
                "{} {} failed its trial on this agent in an earlier wave; not activated again",
                app, sh.head.release.version
            );
            return self.failed_here(now, &sh, reason, true);
        }
        if self
            .activation
            .begin(sh, cached, hold, in_wave, &mut self.out)
        {
            // Outside the wave and already stored: prefetched.
            let own = Tally {
                prefetched: 1,
                ..base
            };
            self.tally.set_counts(now, &app, seq, own);
            return;
        }
        if cached {
            return;
        }
        let members = &self.members;
        let complete = self
            .content
            .begin(&mut self.rng, release, |p| members.node_of(p).is_some());
        if complete {
            // Already verified (for another app, or a head that failed to activate): activate.
            return self.finish(now, digest);
        }
        let mut to: Vec<P> = self.members.active().to_vec();
        if let Some(f) = from
            && !to.contains(&f)
        {
            to.push(f);
        }
        self.content.announce(digest, &to, &mut self.out);
        self.content.pump(now, &mut self.rng, digest, &mut self.out);
    }

    /// Content `digest` is complete: check it as a whole and activate the heads waiting for it.
    pub(super) fn finish(&mut self, now: Instant, digest: Digest) {
        let (content, verdict) = self.content.completed(&digest);
        for app in self.activation.fetching(&digest) {
            match &verdict {
                Ok(()) => self
                    .activation
                    .content_ready(&app, content.clone(), &mut self.out),
                Err(e) => {
                    let reason = format!("content does not match its release: {e}");
                    self.on_activated_err(now, app, reason);
                }
            }
        }
        if verdict.is_err() {
            self.content.remove(&digest);
        }
    }

    pub(super) fn on_activated(
        &mut self,
        now: Instant,
        app: AppName,
        seq: u64,
        result: Result<(), ActivationError>,
    ) {
        if !self.activation.is_activating(&app, seq, false) {
            return;
        }
        if let Err(e) = result {
            return self.on_activated_err(now, app, e.to_string());
        }
        let p = self.activation.take(&app).expect("checked above");
        let rel = &p.head.head.release;
        self.content.stored(rel);
        self.drop_transfer_if_unused(&rel.digest);
        let report = self.activation.activated(&p, &mut self.out);
        let own = Tally {
            active: 1,
            ..self.own_tally(true)
        };
        self.tally
            .set_own(now, &app, seq, own, report, &mut self.out);
        if let Some(next) = p.next {
            self.start(now, None, next, false);
        }
    }

    /// The shell finished prefetching `seq` of `app` (a head whose wave leaves this node out).
    pub(super) fn on_prefetched(
        &mut self,
        now: Instant,
        app: AppName,
        seq: u64,
        result: Result<(), ActivationError>,
    ) {
        if !self.activation.is_activating(&app, seq, true) {
            return;
        }
        match result {
            Ok(()) => {}
            Err(ActivationError::Cancelled) => {
                // A newer head superseded it: nothing failed; the newer head starts.
                let Some(p) = self.activation.take(&app) else {
                    return;
                };
                self.drop_transfer_if_unused(&p.head.head.release.digest);
                if let Some(next) = p.next {
                    self.start(now, None, next, false);
                }
                return;
            }
            Err(e) => {
                let reason = format!("prefetch: {e}");
                return self.on_activated_err(now, app, reason);
            }
        }
        let p = self.activation.take(&app).expect("checked above");
        let rel = &p.head.head.release;
        self.content.stored(rel);
        self.drop_transfer_if_unused(&rel.digest);
        let own = Tally {
            prefetched: 1,
            ..self.own_tally(false)
        };
        self.tally.set_counts(now, &app, seq, own);
        self.activation.stage_head(p.head, &mut self.out);
        if let Some(next) = p.next {
            self.start(now, None, next, false);
        }
    }

    /// Requests served here by `app`'s release `digest` (`new`) and the one before it (`old`):
    /// counted for the head in force when it runs that release.
    pub(super) fn on_health(
        &mut self,
        now: Instant,
        app: &AppName,
        digest: Digest,
        new: Health,
        old: Health,
    ) {
        self.tally.set_health(now, app, digest, new, old);
    }

    /// This node's own count for a head, before its outcome: it holds the head, and whether it
    /// runs it (`in_wave`: its wave includes the node, or the node had no release of the app).
    fn own_tally(&self, in_wave: bool) -> Tally {
        Tally {
            nodes: 1,
            in_wave: u32::from(in_wave),
            ..Tally::default()
        }
    }

    fn on_activated_err(&mut self, now: Instant, app: AppName, reason: String) {
        let Some(p) = self.activation.take(&app) else {
            return;
        };
        self.drop_transfer_if_unused(&p.head.head.release.digest);
        self.failed_here(now, &p.head, reason, !p.prefetch);
        if let Some(next) = p.next {
            self.start(now, None, next, false);
        }
    }

    pub(super) fn on_reverted(
        &mut self,
        now: Instant,
        app: AppName,
        seq: u64,
        reason: String,
        serving: Option<Release>,
    ) {
        if let Some(head) = self.activation.reverted(app, seq, serving) {
            self.failed_here(now, &head, reason, true);
        }
    }

    /// `head` failed on this node: kept for status, counted failed in the tallies.
    /// `in_wave`: it failed running (activation, trial), not prefetching.
    fn failed_here(&mut self, now: Instant, head: &SignedHead, reason: String, in_wave: bool) {
        let report = self.activation.failed(head, reason, &mut self.out);
        let own = Tally {
            failed: 1,
            samples: vec![report.clone()],
            ..self.own_tally(in_wave)
        };
        let (app, seq) = (&head.head.app, head.head.seq);
        self.tally
            .set_own(now, app, seq, own, report, &mut self.out);
    }

    /// Drops a transfer nobody needs any more: no pending head fetches it, and it is not the
    /// complete content of an app's newest head that could not be activated.
    pub(super) fn drop_transfer_if_unused(&mut self, digest: &Digest) {
        let pending = self.activation.needs(digest);
        let newest = self.broadcast.is_newest_content(digest);
        if self.content.drop_if_unused(digest, pending, newest) {
            self.serve.forget_content(digest);
        }
    }
}
