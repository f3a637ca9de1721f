//! The serving layer: chunk requests this node answers.
//!
//! Requests wait in a bounded queue for one of [`SERVE_SLOTS`] upload slots; the chunk this
//! node has sent least often goes first, then the oldest request, so a node that alone holds
//! fresh chunks hands out distinct ones before copies (super-seeding) and its neighbours trade
//! the rest among themselves. A slot frees when the receiver acknowledges the chunk
//! (`HaveChunk`) or after [`SERVE_SLOT_TIMEOUT`].
//!
//! **Invariants:** only chunks the content layer holds verified are served (stored content is
//! read by the shell, cut-through chunks come from their transfer); at most
//! [`SERVE_SLOTS`] chunks are unacknowledged and [`MAX_QUEUED_PER_PEER`] requests queued per
//! peer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::release::Digest;
use crate::wire::ContentMsg;

use super::content::Content;
use super::io::{Outbox, Output};

/// Chunks this node has sent and not yet seen acknowledged (the receiver's `HaveChunk`): about
/// one bandwidth-delay product of a WAN link, so the upload stays busy while the choice of
/// what to send next is made late, when it is best informed.
pub(super) const SERVE_SLOTS: usize = 6;
/// A sent chunk not acknowledged by then frees its slot anyway.
pub(super) const SERVE_SLOT_TIMEOUT: Duration = Duration::from_secs(1);
/// Chunk requests queued per peer (beyond that they are refused).
pub(super) const MAX_QUEUED_PER_PEER: usize = 64;

/// A chunk request waiting for an upload slot.
#[derive(Debug, Clone, Copy)]
struct Queued<P> {
    to: P,
    digest: Digest,
    index: u32,
    /// Arrival order, for ties.
    order: u64,
}

/// The upload queue and slots. See the module docs.
#[derive(Debug)]
pub(super) struct ServeQueue<P> {
    queue: Vec<Queued<P>>,
    order: u64,
    /// Chunks sent and not yet acknowledged, with when they were sent.
    serving: BTreeMap<(P, Digest, u32), Instant>,
    /// How often each chunk has been sent by this node.
    served: BTreeMap<(Digest, u32), u32>,
}

impl<P: Peer> ServeQueue<P> {
    pub fn new() -> Self {
        ServeQueue {
            queue: Vec::new(),
            order: 0,
            serving: BTreeMap::new(),
            served: BTreeMap::new(),
        }
    }

    /// `from` asks for chunk `index` of `digest`.
    pub fn on_get_chunk(
        &mut self,
        now: Instant,
        from: P,
        digest: Digest,
        index: u32,
        content: &Content<P>,
        out: &mut Outbox<P>,
    ) {
        let queued = self.queue.iter().filter(|q| q.to == from).count();
        let dup = self
            .queue
            .iter()
            .any(|q| q.to == from && q.digest == digest && q.index == index);
        if !content.can_serve(&digest, index) || queued >= MAX_QUEUED_PER_PEER {
            out.send(from, ContentMsg::NoChunk { digest, index });
            return;
        }
        if !dup {
            self.order += 1;
            self.queue.push(Queued {
                to: from,
                digest,
                index,
                order: self.order,
            });
        }
        self.dispatch(now, content, out);
    }

    /// Sends queued chunks while upload slots are free: the least-served chunk first, then the
    /// oldest request.
    fn dispatch(&mut self, now: Instant, content: &Content<P>, out: &mut Outbox<P>) {
        while self.serving.len() < SERVE_SLOTS && !self.queue.is_empty() {
            let served = &self.served;
            let (k, _) = self
                .queue
                .iter()
                .enumerate()
                .min_by_key(|(_, q)| {
                    let n = served.get(&(q.digest, q.index)).copied().unwrap_or(0);
                    (n, q.order)
                })
                .expect("not empty");
            let q = self.queue.swap_remove(k);
            self.serve_now(now, q.to, q.digest, q.index, content, out);
        }
    }

    fn serve_now(
        &mut self,
        now: Instant,
        to: P,
        digest: Digest,
        index: u32,
        content: &Content<P>,
        out: &mut Outbox<P>,
    ) {
        if content.is_stored(&digest) {
            out.push(Output::ServeChunk { to, digest, index });
        } else {
            // Cut-through: a verified chunk of a transfer in progress can be served already.
            let Some(data) = content.verified(&digest, index).cloned() else {
                out.send(to, ContentMsg::NoChunk { digest, index });
                return;
            };
            let msg = ContentMsg::Chunk {
                digest,
                index,
                data,
            };
            out.send(to, msg);
        }
        *self.served.entry((digest, index)).or_default() += 1;
        self.serving.insert((to, digest, index), now);
    }

    /// `from` holds chunk `index` of `digest` (it acknowledged one this node sent, or
    /// announced it): its slot is free and a queued request for it is moot.
    pub fn ack(
        &mut self,
        now: Instant,
        from: P,
        digest: Digest,
        index: u32,
        content: &Content<P>,
        out: &mut Outbox<P>,
    ) {
        let freed = self.serving.remove(&(from, digest, index)).is_some();
        let before = self.queue.len();
        self.queue
            .retain(|q| !(q.to == from && q.digest == digest && q.index == index));
        if freed || before != self.queue.len() {
            self.dispatch(now, content, out);
        }
    }

    /// Forgets the upload state of a peer that is gone.
    pub fn forget_peer(&mut self, now: Instant, p: P, content: &Content<P>, out: &mut Outbox<P>) {
        self.serving.retain(|(q, _, _), _| *q != p);
        self.queue.retain(|q| q.to != p);
        self.dispatch(now, content, out);
    }

    /// Content this node no longer holds: forget how often its chunks were sent.
    pub fn forget_content(&mut self, digest: &Digest) {
        self.served.retain(|(d, _), _| d != digest);
    }

    /// Frees the slots of chunks never acknowledged.
    pub fn on_timeout(&mut self, now: Instant, content: &Content<P>, out: &mut Outbox<P>) {
        let before = self.serving.len();
        self.serving
            .retain(|_, at| now.saturating_duration_since(*at) < SERVE_SLOT_TIMEOUT);
        if self.serving.len() != before {
            self.dispatch(now, content, out);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.serving
            .values()
            .min()
            .map(|at| *at + SERVE_SLOT_TIMEOUT)
    }
}
