//! Serving chunks: requests wait in a bounded queue for one of `SERVE_SLOTS` upload slots; the
//! chunk this node has sent least often goes first, then the oldest request. A slot frees when
//! the receiver acknowledges the chunk (`HaveChunk`) or after `SERVE_SLOT_TIMEOUT`.

use super::*;

impl<P: Peer> Node<P> {
    /// Whether chunk `index` of `digest` can be served from here (stored, or verified in a
    /// transfer in progress: cut-through).
    pub(super) fn can_serve(&self, digest: &Digest, index: u32) -> bool {
        self.blobs.get(digest).is_some_and(|n| index < *n)
            || self
                .transfers
                .get(digest)
                .is_some_and(|t| t.chunk(index).is_some())
    }

    pub(super) fn on_get_chunk(&mut self, now: Instant, from: P, digest: Digest, index: u32) {
        let queued = self.serve_queue.iter().filter(|q| q.to == from).count();
        let dup = self
            .serve_queue
            .iter()
            .any(|q| q.to == from && q.digest == digest && q.index == index);
        if !self.can_serve(&digest, index) || queued >= MAX_QUEUED_PER_PEER {
            self.send(from, Message::NoChunk { digest, index });
            return;
        }
        if !dup {
            self.serve_order += 1;
            self.serve_queue.push(Queued {
                to: from,
                digest,
                index,
                order: self.serve_order,
            });
        }
        self.dispatch(now);
    }

    /// Sends queued chunks while upload slots are free: the least-served chunk first, then the
    /// oldest request.
    pub(super) fn dispatch(&mut self, now: Instant) {
        while self.serving.len() < SERVE_SLOTS && !self.serve_queue.is_empty() {
            let served = &self.served;
            let (k, _) = self
                .serve_queue
                .iter()
                .enumerate()
                .min_by_key(|(_, q)| {
                    let n = served.get(&(q.digest, q.index)).copied().unwrap_or(0);
                    (n, q.order)
                })
                .expect("not empty");
            let q = self.serve_queue.swap_remove(k);
            self.serve_now(now, q.to, q.digest, q.index);
        }
    }

    pub(super) fn serve_now(&mut self, now: Instant, to: P, digest: Digest, index: u32) {
        if self.blobs.contains_key(&digest) {
            self.out.push_back(Output::ServeChunk { to, digest, index });
        } else {
            // Cut-through: a verified chunk of a transfer in progress can be served already.
            let data = self
                .transfers
                .get(&digest)
                .and_then(|t| t.chunk(index))
                .cloned();
            let Some(data) = data else {
                self.send(to, Message::NoChunk { digest, index });
                return;
            };
            self.send(
                to,
                Message::Chunk {
                    digest,
                    index,
                    data,
                },
            );
        }
        *self.served.entry((digest, index)).or_default() += 1;
        self.serving.insert((to, digest, index), now);
    }

    /// `from` holds chunk `index` of `digest` (it acknowledged one this node sent, or
    /// announced it): its slot is free and a queued request for it is moot.
    pub(super) fn served_ack(&mut self, now: Instant, from: P, digest: Digest, index: u32) {
        let freed = self.serving.remove(&(from, digest, index)).is_some();
        let before = self.serve_queue.len();
        self.serve_queue
            .retain(|q| !(q.to == from && q.digest == digest && q.index == index));
        if freed || before != self.serve_queue.len() {
            self.dispatch(now);
        }
    }

    /// Forgets the upload state of a peer that is gone.
    pub(super) fn forget_serving(&mut self, now: Instant, p: P) {
        self.serving.retain(|(q, _, _), _| *q != p);
        self.serve_queue.retain(|q| q.to != p);
        self.dispatch(now);
    }
}
