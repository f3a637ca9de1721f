//! Swarming transfer glue: neighbours' `Have` bitmaps, received chunks (verified by the
//! [`Transfer`](crate::swarm::Transfer)), the whole content checked before activation, and
//! issuing requests.

use super::*;

impl<P: Peer> Node<P> {
    pub(super) fn on_have(
        &mut self,
        now: Instant,
        from: P,
        digest: Digest,
        bits: Vec<u8>,
        want: bool,
    ) {
        if let Some(t) = self.transfers.get_mut(&digest) {
            if t.on_have(from, &bits, want) {
                let msg = Message::Have {
                    digest,
                    bits: t.bits(),
                    want: !t.is_complete(),
                };
                self.send(from, msg);
            }
            self.pump(now, digest);
        } else if let Some(&n) = self.blobs.get(&digest) {
            if want {
                let msg = Message::Have {
                    digest,
                    bits: bits_full(n),
                    want: false,
                };
                self.send(from, msg);
            }
        } else if self.early_haves.contains_key(&digest)
            || self.early_haves.len() < MAX_EARLY_DIGESTS
        {
            let mut bits = bits;
            bits.truncate((crate::release::MAX_CHUNKS as usize).div_ceil(8));
            self.early_haves
                .entry(digest)
                .or_default()
                .insert(from, (bits, want));
        }
    }

    pub(super) fn on_chunk(
        &mut self,
        now: Instant,
        from: P,
        digest: Digest,
        index: u32,
        data: Option<Payload>,
    ) {
        let Some(t) = self.transfers.get_mut(&digest) else {
            if data.is_some() {
                // Acknowledge, so the sender's upload slot frees.
                self.send(from, Message::HaveChunk { digest, index });
            }
            return;
        };
        let got = data.is_some();
        let outcome = t.on_chunk(from, index, data);
        if got && !matches!(outcome, ChunkOutcome::Bad(_)) {
            // Acknowledge, so the sender's upload slot frees.
            self.send(from, Message::HaveChunk { digest, index });
        }
        let t = self.transfers.get_mut(&digest).expect("checked above");
        match outcome {
            ChunkOutcome::Ignored | ChunkOutcome::Refused => {}
            ChunkOutcome::Bad(reason) => {
                // Dropped for good: its chunks come from the other holders.
                self.members.ban(from);
                self.out
                    .push_back(Output::Disconnect { peer: from, reason });
            }
            ChunkOutcome::Kept { done } => {
                let tell = t.announce_to(index);
                self.members.keep(now, from);
                for p in tell {
                    self.send(p, Message::HaveChunk { digest, index });
                }
                if done {
                    return self.finish(now, digest);
                }
            }
        }
        self.pump(now, digest);
    }

    pub(super) fn finish(&mut self, now: Instant, digest: Digest) {
        let t = self.transfers.get(&digest).expect("transfer exists");
        let content = t.content().expect("complete");
        let verdict = t.release.verify_content(&content);
        let waiting: Vec<AppName> = self
            .pending
            .iter()
            .filter(|(_, p)| p.stage == Stage::Fetching && p.head.head.release.digest == digest)
            .map(|(a, _)| a.clone())
            .collect();
        for app in waiting {
            let p = self.pending.get_mut(&app).expect("listed above");
            match &verdict {
                Ok(()) => {
                    p.stage = Stage::Activating;
                    let head = p.head.clone();
                    self.emit_activate(head, Some(content.clone()));
                }
                Err(e) => {
                    let reason = format!("content does not match its release: {e}");
                    self.on_activated_err(now, app, reason);
                }
            }
        }
        if verdict.is_err() {
            self.transfers.remove(&digest);
        }
    }

    pub(super) fn pump_all(&mut self, now: Instant) {
        let digests: Vec<Digest> = self.transfers.keys().copied().collect();
        for d in digests {
            self.pump(now, d);
        }
    }

    pub(super) fn pump(&mut self, now: Instant, digest: Digest) {
        let Some(t) = self.transfers.get_mut(&digest) else {
            return;
        };
        let sends = t.pump(now, &self.cfg.swarm, &mut self.rng);
        for (p, msg) in sends {
            self.send(p, msg);
        }
    }

    /// Drops a transfer nobody needs any more: no pending head fetches it, and it is not the
    /// complete content of an app's newest head that could not be activated (that one is kept,
    /// in memory, so neighbours still fetching it can finish and report their own outcome).
    pub(super) fn drop_transfer_if_unused(&mut self, digest: &Digest) {
        let pending = self
            .pending
            .values()
            .any(|p| p.head.head.release.digest == *digest);
        let failed_newest = !self.blobs.contains_key(digest)
            && self.transfers.get(digest).is_some_and(|t| t.is_complete())
            && self
                .heads
                .values()
                .any(|h| h.head.head.release.digest == *digest);
        if !pending && !failed_newest {
            self.transfers.remove(digest);
            if !self.blobs.contains_key(digest) {
                self.served.retain(|(d, _), _| d != digest);
            }
        }
    }
}
