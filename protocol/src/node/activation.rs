//! The activation layer: the records in force per app, the head being fetched or activated
//! per app, and what the shell reports back (activated, refused, reverted after its trial,
//! overridden locally), as it shows in status and reports.
//!
//! **Invariants:** at most one activation per app is in flight (a newer head waits behind it,
//! and the shell is asked once to cancel it); an app's record only advances on
//! [`Input::Activated`](super::Input::Activated) `Ok` for the head being activated, so the seq
//! in force never decreases; a failure keeps the seq held.

use std::collections::BTreeMap;

use crate::head::SignedHead;
use crate::release::{AppName, Digest, Release};
use crate::wire::{AppStatus, MAX_REASON, NodeId, Outcome, Position, Report, Staged};

use super::io::{Activation, Event, Outbox, Output, Prefetch, Serving};
use super::{AppRecord, position};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Stage {
    Fetching,
    /// Content ready, activation held back until the node is fresh-checked (`fresh.rs`).
    Held,
    Activating,
}

/// The head an app is moving to.
#[derive(Debug)]
pub(super) struct Pending {
    pub head: SignedHead,
    pub stage: Stage,
    /// A newer head that arrived while this one was activating.
    pub next: Option<SignedHead>,
    /// Not activated until the node is fresh-checked.
    pub hold: bool,
    /// The head's wave leaves this node out: its release is prefetched (stored and compiled),
    /// not swapped in. `Stage::Activating` is then the shell's prefetch in flight.
    pub prefetch: bool,
    /// The verified content, kept while held.
    content: Option<Vec<u8>>,
}

/// What became of a pending head when a newer one arrived.
#[derive(Debug)]
pub(super) enum Superseded {
    /// Nothing was pending: start the new head.
    Nothing,
    /// The pending head was still fetching and is dropped (its content digest): start the
    /// new head.
    Dropped(Digest),
    /// The pending head is activating: the new one waits behind it.
    Queued,
}

/// Records and activations per app. See the module docs.
#[derive(Debug)]
pub(super) struct Activations {
    me: NodeId,
    history_limit: usize,
    apps: BTreeMap<AppName, AppRecord>,
    errors: BTreeMap<AppName, String>,
    /// Apps whose serving release is not their head's (reverted, or a local override).
    overrides: BTreeMap<AppName, Serving>,
    pending: BTreeMap<AppName, Pending>,
    /// The latest report per app: this node's own outcome, or a direct answer heard.
    reports: BTreeMap<AppName, Report>,
    /// Per app, the newest head whose wave leaves this node out, its release prefetched: it
    /// holds the app's seq, the record in force keeps serving. Not persisted (anti-entropy
    /// hands it over again after a restart).
    staged: BTreeMap<AppName, SignedHead>,
}

impl Activations {
    /// The records restored from disk; each counts as active here.
    pub fn new(me: NodeId, history_limit: usize, apps: BTreeMap<AppName, AppRecord>) -> Self {
        let mut a = Activations {
            me,
            history_limit,
            apps,
            errors: BTreeMap::new(),
            overrides: BTreeMap::new(),
            pending: BTreeMap::new(),
            reports: BTreeMap::new(),
            staged: BTreeMap::new(),
        };
        let restored: Vec<SignedHead> = a.apps.values().map(|r| r.head.clone()).collect();
        for h in restored {
            let report = a.own_report(&h, Outcome::Active);
            a.reports.insert(h.head.app.clone(), report);
        }
        a
    }

    pub fn records(&self) -> &BTreeMap<AppName, AppRecord> {
        &self.apps
    }

    /// What serves `app` when it is not its head's release (reverted, or a local override).
    pub fn serving(&self, app: &AppName) -> Option<&Serving> {
        self.overrides.get(app)
    }

    /// The release this node reverted from after its trial (the record in force, replaced by
    /// the release before), if that is what happened to `app` last.
    pub fn reverted_from(&self, app: &AppName) -> Option<Digest> {
        self.overrides.get(app).filter(|s| !s.local_override)?;
        self.apps.get(app).map(|r| r.head.head.release.digest)
    }

    /// Why `app`'s most recent head was not activated, or was reverted.
    pub fn last_error(&self, app: &AppName) -> Option<&str> {
        self.errors.get(app).map(String::as_str)
    }

    /// The newest head of `app` whose wave leaves this node out, its release prefetched.
    pub fn staged(&self, app: &AppName) -> Option<&SignedHead> {
        self.staged.get(app)
    }

    /// The head `app` is moving to (fetching or activating), if any.
    pub fn pending(&self, app: &AppName) -> Option<&Pending> {
        self.pending.get(app)
    }

    /// The position of `app`'s record in force (0, 0: none).
    pub fn applied(&self, app: &AppName) -> Position {
        self.apps
            .get(app)
            .map_or_else(Position::default, |r| position(&r.head))
    }

    /// A digest other than `digest` that `app`'s record history (or its head in force) holds
    /// for `version`, if any.
    pub fn released_otherwise(
        &self,
        app: &AppName,
        version: &semver::Version,
        digest: &Digest,
    ) -> Option<Digest> {
        let r = self.apps.get(app)?;
        let releases = r.history.iter().map(|e| &e.release);
        releases
            .chain([&r.head.head.release])
            .find(|rel| rel.version == *version && rel.digest != *digest)
            .map(|rel| rel.digest)
    }

    /// What this node did with `sh`.
    pub fn own_report(&self, sh: &SignedHead, outcome: Outcome) -> Report {
        Report {
            node: self.me,
            app: sh.head.app.clone(),
            seq: sh.head.seq,
            version: sh.head.release.version.clone(),
            digest: sh.head.release.digest,
            outcome,
        }
    }

    /// Whether a pending head needs content `digest`.
    pub fn needs(&self, digest: &Digest) -> bool {
        self.pending
            .values()
            .any(|p| p.head.head.release.digest == *digest)
    }

    /// A newer head `sh` for its app arrived: see [`Superseded`]. Asks the shell (once) to
    /// cancel an activation in flight: a compile still queued or running is wasted work now.
    pub fn supersede<P>(&mut self, sh: &SignedHead, out: &mut Outbox<P>) -> Superseded {
        let app = sh.head.app.clone();
        let Some(p) = self.pending.get_mut(&app) else {
            return Superseded::Nothing;
        };
        if p.stage == Stage::Activating {
            if p.next.is_none() {
                out.push(Output::CancelActivation {
                    app,
                    seq: p.head.head.seq,
                });
            }
            p.next = Some(sh.clone());
            return Superseded::Queued;
        }
        let old = self.pending.remove(&app).expect("checked above");
        Superseded::Dropped(old.head.head.release.digest)
    }

    /// `sh` starts: fetching its content, or (`cached`) activating it from the store at once.
    /// `hold`: not activated until [`Activations::release_held`]. `in_wave: false`: the head's
    /// wave leaves this node out, so its release is prefetched instead of activated; when it
    /// is `cached` already there is nothing to do and it is staged at once (returns `true`).
    pub fn begin<P>(
        &mut self,
        sh: SignedHead,
        cached: bool,
        hold: bool,
        in_wave: bool,
        out: &mut Outbox<P>,
    ) -> bool {
        let app = sh.head.app.clone();
        // A newer head starts: an older staged one is superseded.
        self.staged.remove(&app);
        if !in_wave {
            if cached {
                self.stage_head(sh, out);
                return true;
            }
            let p = Pending {
                head: sh,
                stage: Stage::Fetching,
                next: None,
                hold: false,
                prefetch: true,
                content: None,
            };
            self.pending.insert(app, p);
            return false;
        }
        let stage = match (cached, hold) {
            (true, false) => {
                self.emit_activate(sh.clone(), None, out);
                Stage::Activating
            }
            (true, true) => Stage::Held,
            (false, _) => Stage::Fetching,
        };
        let p = Pending {
            head: sh,
            stage,
            next: None,
            hold,
            prefetch: false,
            content: None,
        };
        self.pending.insert(app, p);
        false
    }

    /// `sh`'s release is prefetched here: it holds the app's seq, the record keeps serving.
    pub fn stage_head<P>(&mut self, sh: SignedHead, out: &mut Outbox<P>) {
        let h = &sh.head;
        out.event(Event::Prefetched {
            app: h.app.clone(),
            seq: h.seq,
            version: h.release.version.clone(),
        });
        let report = self.own_report(&sh, Outcome::Prefetched);
        self.reports.insert(h.app.clone(), report);
        self.staged.insert(h.app.clone(), sh);
    }

    /// The node is fresh-checked: every held head activates (those still fetching will once
    /// their content is ready).
    pub fn release_held<P>(&mut self, out: &mut Outbox<P>) {
        let apps: Vec<AppName> = self.pending.keys().cloned().collect();
        for app in apps {
            self.unhold(&app, out);
        }
    }

    /// `app`'s pending head is held no longer (an operator pushed it, or the node is
    /// fresh-checked): activate it if its content is ready.
    pub fn unhold<P>(&mut self, app: &AppName, out: &mut Outbox<P>) {
        let Some(p) = self.pending.get_mut(app).filter(|p| p.hold) else {
            return;
        };
        p.hold = false;
        if p.stage == Stage::Held {
            p.stage = Stage::Activating;
            let (head, content) = (p.head.clone(), p.content.take());
            self.emit_activate(head, content, out);
        }
    }

    /// Pending heads signed under an epoch older than `epoch` (their release keys were
    /// rotated) that have not started activating are dropped. Returns their content digests.
    pub fn drop_older_epoch(&mut self, epoch: u64) -> Vec<Digest> {
        let old: Vec<AppName> = self
            .pending
            .iter()
            .filter(|(_, p)| p.head.head.epoch < epoch && p.stage != Stage::Activating)
            .map(|(a, _)| a.clone())
            .collect();
        old.into_iter()
            .filter_map(|a| self.pending.remove(&a))
            .map(|p| p.head.head.release.digest)
            .collect()
    }

    /// Apps whose pending head waits for content `digest`.
    pub fn fetching(&self, digest: &Digest) -> Vec<AppName> {
        self.pending
            .iter()
            .filter(|(_, p)| p.stage == Stage::Fetching && p.head.head.release.digest == *digest)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The content of `app`'s pending head arrived and verified: activate it.
    pub fn content_ready<P>(&mut self, app: &AppName, content: Vec<u8>, out: &mut Outbox<P>) {
        let p = self.pending.get_mut(app).expect("fetching");
        if p.prefetch {
            p.stage = Stage::Activating;
            let head = p.head.clone();
            out.push(Output::Prefetch(Box::new(Prefetch {
                head,
                content: Some(content),
            })));
            return;
        }
        if p.hold {
            p.stage = Stage::Held;
            p.content = Some(content);
            return;
        }
        p.stage = Stage::Activating;
        let head = p.head.clone();
        self.emit_activate(head, Some(content), out);
    }

    fn emit_activate<P>(
        &mut self,
        head: SignedHead,
        content: Option<Vec<u8>>,
        out: &mut Outbox<P>,
    ) {
        let record = AppRecord::advance(self.apps.get(&head.head.app), &head, self.history_limit);
        out.push(Output::Activate(Box::new(Activation {
            head,
            content,
            record,
        })));
    }

    /// Whether `seq` of `app` is the activation in flight (`prefetch`: the prefetch).
    pub fn is_activating(&self, app: &AppName, seq: u64, prefetch: bool) -> bool {
        self.pending.get(app).is_some_and(|p| {
            p.stage == Stage::Activating && p.head.head.seq == seq && p.prefetch == prefetch
        })
    }

    /// Takes the pending head of `app` out (its activation ended, or failed).
    pub fn take(&mut self, app: &AppName) -> Option<Pending> {
        self.pending.remove(app)
    }

    /// The pending head `p` is active here now. Returns this node's report.
    pub fn activated<P>(&mut self, p: &Pending, out: &mut Outbox<P>) -> Report {
        let app = p.head.head.app.clone();
        let rel = &p.head.head.release;
        let record = AppRecord::advance(self.apps.get(&app), &p.head, self.history_limit);
        self.apps.insert(app.clone(), record);
        self.errors.remove(&app);
        self.overrides.remove(&app);
        out.event(Event::Activated {
            app: app.clone(),
            seq: p.head.head.seq,
            version: rel.version.clone(),
        });
        let report = self.own_report(&p.head, Outcome::Active);
        self.reports.insert(app, report.clone());
        report
    }

    /// `head` failed on this node (refused by the runtime, or reverted after its trial): the
    /// reason is kept for status. Returns this node's report (a failure).
    pub fn failed<P>(&mut self, head: &SignedHead, reason: String, out: &mut Outbox<P>) -> Report {
        let (app, seq) = (head.head.app.clone(), head.head.seq);
        self.errors.insert(app.clone(), reason.clone());
        out.event(Event::ActivationFailed {
            app: app.clone(),
            seq,
            reason: reason.clone(),
        });
        let report = self.own_report(head, Outcome::Failed(truncate(reason)));
        self.reports.insert(app, report.clone());
        report
    }

    /// The release of `seq` was reverted after it served; `serving` serves instead. Returns
    /// its head if `seq` is the record in force.
    pub fn reverted(
        &mut self,
        app: AppName,
        seq: u64,
        serving: Option<Release>,
    ) -> Option<SignedHead> {
        let record = self.apps.get(&app).filter(|r| r.head.head.seq == seq)?;
        let head = record.head.clone();
        let s = Serving {
            release: serving,
            local_override: false,
        };
        self.overrides.insert(app, s);
        Some(head)
    }

    /// An operator's local override (`None`: it is over).
    pub fn local_override(&mut self, app: AppName, release: Option<Release>) {
        match release {
            Some(release) => {
                let s = Serving {
                    release: Some(release),
                    local_override: true,
                };
                self.overrides.insert(app, s);
            }
            None => {
                self.overrides.remove(&app);
            }
        }
    }

    /// A direct answer to a head this node pushed (stale or refused): keep the latest per app
    /// for status; it is informational only.
    pub fn on_report(&mut self, r: Report) {
        if !matches!(r.outcome, Outcome::Stale { .. }) && r.node != self.me {
            self.reports.entry(r.app.clone()).or_insert(r);
        }
    }

    pub fn app_statuses(&self) -> Vec<AppStatus> {
        self.apps
            .iter()
            .map(|(name, r)| {
                let mut st = r.status(self.errors.get(name).cloned(), self.overrides.get(name));
                st.staged = self.staged.get(name).map(|sh| {
                    let h = &sh.head;
                    Staged {
                        seq: h.seq,
                        epoch: h.epoch,
                        kind: h.kind,
                        release: h.release.clone(),
                        plan: h.plan.clone(),
                        issued_at_ms: h.issued_at_ms,
                    }
                });
                st
            })
            .collect()
    }

    pub fn reports(&self) -> Vec<Report> {
        self.reports.values().cloned().collect()
    }
}

/// `s` cut to [`MAX_REASON`] bytes (on a character boundary).
pub(super) fn truncate(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
