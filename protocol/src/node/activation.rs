//! Activation outcomes: asking the shell to activate a head, and what the shell reports back
//! (activated, refused, reverted after its trial) and how it shows in status and tallies.

use super::*;

impl<P: Peer> Node<P> {
    pub(super) fn emit_activate(&mut self, head: SignedHead, content: Option<Vec<u8>>) {
        let record =
            AppRecord::advance(self.apps.get(&head.head.app), &head, self.cfg.history_limit);
        self.out.push_back(Output::Activate(Box::new(Activation {
            head,
            content,
            record,
        })));
    }

    pub(super) fn on_activated(
        &mut self,
        now: Instant,
        app: AppName,
        seq: u64,
        result: Result<(), String>,
    ) {
        if self
            .pending
            .get(&app)
            .is_none_or(|p| p.stage != Stage::Activating || p.head.head.seq != seq)
        {
            return;
        }
        let reason = result.err();
        let Some(reason) = reason else {
            let p = self.pending.remove(&app).expect("checked above");
            let rel = &p.head.head.release;
            let record = AppRecord::advance(self.apps.get(&app), &p.head, self.cfg.history_limit);
            self.apps.insert(app.clone(), record);
            self.blobs.insert(rel.digest, rel.chunks.len() as u32);
            self.drop_transfer_if_unused(&rel.digest);
            self.errors.remove(&app);
            self.overrides.remove(&app);
            self.event(Event::Activated {
                app: app.clone(),
                seq,
                version: rel.version.clone(),
            });
            let report = self.own_report(&p.head, Outcome::Active);
            self.reports.insert(app.clone(), report.clone());
            let own = Tally {
                active: 1,
                ..Tally::default()
            };
            self.set_own(now, &app, seq, own, report);
            if let Some(next) = p.next {
                self.start(now, None, next);
            }
            return;
        };
        self.on_activated_err(now, app, reason);
    }

    pub(super) fn on_activated_err(&mut self, now: Instant, app: AppName, reason: String) {
        let Some(p) = self.pending.remove(&app) else {
            return;
        };
        self.drop_transfer_if_unused(&p.head.head.release.digest);
        self.failed_here(now, &p.head, reason);
        if let Some(next) = p.next {
            self.start(now, None, next);
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
        let Some(record) = self.apps.get(&app).filter(|r| r.head.head.seq == seq) else {
            return;
        };
        let head = record.head.clone();
        self.overrides.insert(
            app,
            Serving {
                release: serving,
                local_override: false,
            },
        );
        self.failed_here(now, &head, reason);
    }

    /// `head` failed on this node (refused by the runtime, or reverted after its trial): the
    /// reason is kept for status and the node's own outcome in the tallies is a failure.
    pub(super) fn failed_here(&mut self, now: Instant, head: &SignedHead, reason: String) {
        let (app, seq) = (head.head.app.clone(), head.head.seq);
        self.errors.insert(app.clone(), reason.clone());
        self.event(Event::ActivationFailed {
            app: app.clone(),
            seq,
            reason: reason.clone(),
        });
        let report = self.own_report(head, Outcome::Failed(truncate(reason)));
        self.reports.insert(app.clone(), report.clone());
        let own = Tally {
            failed: 1,
            samples: vec![report.clone()],
            ..Tally::default()
        };
        self.set_own(now, &app, seq, own, report);
    }
}
