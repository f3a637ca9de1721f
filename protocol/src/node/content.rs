//! The content layer: the swarming transfers in progress and the content held.
//!
//! Neighbours' `Have` bitmaps (kept early, bounded, for content this node has no head for
//! yet), chunk requests issued by each [`Transfer`] (rarest first, bounded in flight),
//! received chunks verified against the signed chunk map, and the whole content checked
//! before it is handed to activation.
//!
//! **Invariants:** nothing unverified is kept, announced or served: a chunk is verified by its
//! transfer before anything else sees it, and a peer that served a bad one is reported back
//! to be banned; a transfer is dropped only when no pending head needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::peer::Peer;
use crate::release::{Digest, MAX_CHUNKS, Release, ReleaseError};
use crate::rng::Rng;
use crate::swarm::{ChunkOutcome, SwarmConfig, Transfer, bits_full, bits_set};
use crate::wire::{ContentMsg, Payload};

use super::io::{Outbox, Output};

/// Early `Have`s: announcements for content this node has no transfer for yet.
pub(super) const MAX_EARLY_DIGESTS: usize = 16;

/// What a received chunk means to the node beyond the transfer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// Nothing more (ignored, refused, or not asked for).
    Nothing,
    /// It did not verify: the sender was disconnected; ban it.
    Bad,
    /// Verified and kept (the sender is in use).
    Kept,
    /// Verified and kept, and it was the last one missing: the content is complete.
    Complete,
}

/// Transfers and stored content. See the module docs.
#[derive(Debug)]
pub(super) struct Content<P: Peer> {
    swarm: SwarmConfig,
    transfers: BTreeMap<Digest, Transfer<P>>,
    early_haves: BTreeMap<Digest, BTreeMap<P, (Vec<u8>, bool)>>,
    /// Complete, verified content held in the store, with its chunk count.
    blobs: BTreeMap<Digest, u32>,
    /// Content the store holds that no record names (a release prefetched before a restart):
    /// its chunk count is known once a head names it ([`Content::adopt`]).
    loose: BTreeSet<Digest>,
}

impl<P: Peer> Content<P> {
    pub fn new(swarm: SwarmConfig, blobs: BTreeMap<Digest, u32>, loose: BTreeSet<Digest>) -> Self {
        Content {
            swarm,
            transfers: BTreeMap::new(),
            early_haves: BTreeMap::new(),
            blobs,
            loose,
        }
    }

    /// Whether the store holds `release`'s content (stored, or held loose since the start:
    /// then it is stored from now on).
    pub fn adopt(&mut self, release: &Release) -> bool {
        if self.loose.remove(&release.digest) {
            self.stored(release);
        }
        self.is_stored(&release.digest)
    }

    /// Whether `digest` is stored complete.
    pub fn is_stored(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    /// The content of `release` is now in the store.
    pub fn stored(&mut self, release: &Release) {
        self.blobs
            .insert(release.digest, release.chunks.len() as u32);
    }

    /// Whether chunk `index` of `digest` can be served from here (stored, or verified in a
    /// transfer in progress: cut-through).
    pub fn can_serve(&self, digest: &Digest, index: u32) -> bool {
        self.blobs.get(digest).is_some_and(|n| index < *n) || self.verified(digest, index).is_some()
    }

    /// A verified chunk of a transfer in progress.
    pub fn verified(&self, digest: &Digest, index: u32) -> Option<&Payload> {
        self.transfers.get(digest).and_then(|t| t.chunk(index))
    }

    /// Chunks of `digest` verified so far and its chunk count, while it is being fetched.
    pub fn progress(&self, digest: &Digest) -> Option<(u32, u32)> {
        self.transfers.get(digest).map(|t| t.progress())
    }

    /// Transfers still fetching chunks.
    pub fn fetching(&self) -> usize {
        self.transfers.values().filter(|t| !t.is_complete()).count()
    }

    pub fn duplicate_bytes(&self) -> u64 {
        self.transfers.values().map(|t| t.duplicate_bytes).sum()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_have(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        from: P,
        digest: Digest,
        bits: Vec<u8>,
        want: bool,
        out: &mut Outbox<P>,
    ) {
        if let Some(t) = self.transfers.get_mut(&digest) {
            if t.on_have(from, &bits, want) {
                let msg = ContentMsg::Have {
                    digest,
                    bits: t.bits(),
                    want: !t.is_complete(),
                };
                out.send(from, msg);
            }
            self.pump(now, rng, digest, out);
        } else if let Some(&n) = self.blobs.get(&digest) {
            if want {
                let msg = ContentMsg::Have {
                    digest,
                    bits: bits_full(n),
                    want: false,
                };
                out.send(from, msg);
            }
        } else if self.early_haves.contains_key(&digest)
            || self.early_haves.len() < MAX_EARLY_DIGESTS
        {
            let mut bits = bits;
            bits.truncate((MAX_CHUNKS as usize).div_ceil(8));
            self.early_haves
                .entry(digest)
                .or_default()
                .insert(from, (bits, want));
        }
    }

    /// `from` verified chunk `index` of `digest`.
    pub fn on_have_chunk(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        from: P,
        digest: Digest,
        index: u32,
        out: &mut Outbox<P>,
    ) {
        if let Some(t) = self.transfers.get_mut(&digest) {
            t.on_have_chunk(from, index);
            self.pump(now, rng, digest, out);
        } else if let Some(e) = self.early_haves.get_mut(&digest)
            && let Some((bits, _)) = e.get_mut(&from)
        {
            bits_set(bits, index.min(MAX_CHUNKS));
        }
    }

    /// A chunk (`None`: a refusal) from `from`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_chunk(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        from: P,
        digest: Digest,
        index: u32,
        data: Option<Payload>,
        out: &mut Outbox<P>,
    ) -> Received {
        let Some(t) = self.transfers.get_mut(&digest) else {
            if data.is_some() {
                // Acknowledge, so the sender's upload slot frees.
                out.send(from, ContentMsg::HaveChunk { digest, index });
            }
            return Received::Nothing;
        };
        let got = data.is_some();
        let outcome = t.on_chunk(from, index, data);
        if got && !matches!(outcome, ChunkOutcome::Bad(_)) {
            // Acknowledge, so the sender's upload slot frees.
            out.send(from, ContentMsg::HaveChunk { digest, index });
        }
        let received = match outcome {
            ChunkOutcome::Ignored | ChunkOutcome::Refused => Received::Nothing,
            ChunkOutcome::Bad(reason) => {
                // Dropped for good: its chunks come from the other holders.
                out.push(Output::Disconnect { peer: from, reason });
                Received::Bad
            }
            ChunkOutcome::Kept { done } => {
                for p in t.announce_to(index) {
                    out.send(p, ContentMsg::HaveChunk { digest, index });
                }
                if done {
                    return Received::Complete;
                }
                Received::Kept
            }
        };
        self.pump(now, rng, digest, out);
        received
    }

    /// Starts fetching `release` unless a transfer for it exists, taking in the early `Have`s
    /// of the peers `linked` still holds. Returns whether the content is already complete
    /// (verified for another app, or for a head that failed to activate).
    pub fn begin(&mut self, rng: &mut Rng, release: Release, linked: impl Fn(P) -> bool) -> bool {
        let digest = release.digest;
        if !self.transfers.contains_key(&digest) {
            let mut t = Transfer::new(release, rng);
            for (p, (bits, want)) in self.early_haves.remove(&digest).unwrap_or_default() {
                if linked(p) {
                    t.on_have(p, &bits, want);
                }
            }
            self.transfers.insert(digest, t);
        }
        self.transfers[&digest].is_complete()
    }

    /// Tells each of `to` which chunks of `digest` this node holds, asking to hear of more.
    pub fn announce(&self, digest: Digest, to: &[P], out: &mut Outbox<P>) {
        let Some(t) = self.transfers.get(&digest) else {
            return;
        };
        let bits = t.bits();
        for &p in to {
            let msg = ContentMsg::Have {
                digest,
                bits: bits.clone(),
                want: true,
            };
            out.send(p, msg);
        }
    }

    /// Tells `to` which chunks of each content still being fetched this node holds, asking to
    /// hear of the chunks it gets (a new or renewed neighbour may serve them).
    pub fn announce_wants(&self, to: P, out: &mut Outbox<P>) {
        for t in self.transfers.values().filter(|t| !t.is_complete()) {
            let msg = ContentMsg::Have {
                digest: t.digest(),
                bits: t.bits(),
                want: true,
            };
            out.send(to, msg);
        }
    }

    /// The whole content of a complete transfer, with its verdict against the release.
    pub fn completed(&self, digest: &Digest) -> (Vec<u8>, Result<(), ReleaseError>) {
        let t = self.transfers.get(digest).expect("transfer exists");
        let content = t.content().expect("complete");
        let verdict = t.release.verify_content(&content);
        (content, verdict)
    }

    /// Drops the transfer of `digest` (its content did not verify).
    pub fn remove(&mut self, digest: &Digest) {
        self.transfers.remove(digest);
    }

    /// Drops a transfer nobody needs any more: `pending` is whether a pending head fetches
    /// it; `newest` whether it is the content of an app's newest head, which is kept (in
    /// memory) once complete if it could not be activated, so neighbours still fetching it
    /// can finish and report their own outcome. Returns whether content that is not stored
    /// was let go (so its chunks are no longer served from here).
    pub fn drop_if_unused(&mut self, digest: &Digest, pending: bool, newest: bool) -> bool {
        let failed_newest = !self.blobs.contains_key(digest)
            && self.transfers.get(digest).is_some_and(|t| t.is_complete())
            && newest;
        if pending || failed_newest {
            return false;
        }
        self.transfers.remove(digest);
        !self.blobs.contains_key(digest)
    }

    pub fn pump(&mut self, now: Instant, rng: &mut Rng, digest: Digest, out: &mut Outbox<P>) {
        let Some(t) = self.transfers.get_mut(&digest) else {
            return;
        };
        for (p, msg) in t.pump(now, &self.swarm, rng) {
            out.send(p, msg);
        }
    }

    /// The connection to `p` is gone (or replaced): its announcements and requests go.
    pub fn peer_down(&mut self, p: P) {
        for t in self.transfers.values_mut() {
            t.remove_peer(p);
        }
        for e in self.early_haves.values_mut() {
            e.remove(&p);
        }
    }

    /// Link `old` was replaced: chunk requests in flight on it are lost with it (the transfer
    /// asks again).
    pub fn rekey(&mut self, old: P) {
        for t in self.transfers.values_mut() {
            t.remove_peer(old);
        }
    }

    /// Issues requests for every transfer (after the set of peers changed).
    pub fn pump_all(&mut self, now: Instant, rng: &mut Rng, out: &mut Outbox<P>) {
        let digests: Vec<Digest> = self.transfers.keys().copied().collect();
        for d in digests {
            self.pump(now, rng, d, out);
        }
    }

    /// Expires late requests and re-asks the `active` neighbours where nobody had a chunk.
    pub fn on_timeout(&mut self, now: Instant, rng: &mut Rng, active: &[P], out: &mut Outbox<P>) {
        let digests: Vec<Digest> = self.transfers.keys().copied().collect();
        for d in digests {
            let t = self.transfers.get_mut(&d).expect("listed above");
            if t.on_timeout(now) && !t.is_complete() {
                self.announce(d, active, out);
            }
            self.pump(now, rng, d, out);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .values()
            .filter_map(|t| t.poll_timeout())
            .min()
    }
}
