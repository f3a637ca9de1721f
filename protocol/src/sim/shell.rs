//! The simulated shells around the nodes: the publisher (pushes a head, serves chunks,
//! collects tallies, asks for a census and keeps the answer), a node's store reads and
//! activations, and injected faults.
//!
//! **Invariant (safety, checked on every activation):** the head verifies against the node's
//! own trust, the content is exactly the signed release's bytes, and the position (epoch, seq)
//! of the app grows.

use std::time::Duration;

use crate::head::SignedHead;
use crate::node::ActivationError;
use crate::release::Digest;
use crate::swarm::bits_full;
use crate::wire::{BroadcastMsg, CensusMsg, ContentMsg, Focus, Message, Payload, TallyMsg};

use super::{CensusAnswer, Conn, Delivery, Id, Link, PUBLISHER, Sim};

impl Sim {
    /// The publisher connects to `entry` and pushes `head`, holding `content`.
    pub fn publish(&mut self, entry: Id, head: SignedHead, content: Vec<u8>) {
        let digest = head.head.release.digest;
        let n = head.head.release.chunks.len() as u32;
        self.publisher
            .content
            .insert(digest, Payload(content.into()));
        self.chunk_sizes
            .insert(digest, head.head.release.chunk_size as usize);
        let (conn, lat) = self.publisher_link(entry);
        self.now += lat; // the push follows the handshake
        let push = BroadcastMsg::Head(Box::new(head));
        self.transmit(PUBLISHER, conn, push.into());
        let have = ContentMsg::Have {
            digest,
            bits: bits_full(n),
            want: false,
        };
        self.transmit(PUBLISHER, conn, have.into());
        self.now -= lat;
    }

    /// The publisher connects to `entry` and pushes fleet roots (`fleetcast fleet push`): the
    /// node adopts what follows its chain and passes it on.
    pub fn push_roots(&mut self, entry: Id, roots: Vec<crate::trust::SignedRoot>) {
        let (conn, lat) = self.publisher_link(entry);
        self.now += lat; // the push follows the handshake
        let push = crate::wire::TrustMsg::Roots(roots);
        self.transmit(PUBLISHER, conn, Message::Trust(push));
        self.now -= lat;
    }

    /// The publisher connects to `entry` and asks for census `id` with `budget` (and `focus`);
    /// the answer lands in [`Publisher::censuses`](super::Publisher::censuses).
    pub fn census(&mut self, entry: Id, id: u64, budget: Duration, focus: Option<Focus>) {
        let (conn, lat) = self.publisher_link(entry);
        self.now += lat; // the query follows the handshake
        let asked = CensusAnswer {
            asked_at: self.now,
            answered_at: None,
            count: None,
        };
        self.publisher.censuses.insert(id, asked);
        let query = CensusMsg::Query {
            id,
            budget_ms: budget.as_millis().try_into().unwrap_or(u32::MAX),
            focus,
        };
        self.transmit(PUBLISHER, conn, query.into());
        self.now -= lat;
    }

    /// A new client link from the publisher to `entry`, and its one-way latency (the link is
    /// up at `entry` after it).
    fn publisher_link(&mut self, entry: Id) -> (Conn, Duration) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links.insert(
            conn,
            Link {
                a: PUBLISHER,
                b: entry,
                up: true,
            },
        );
        self.nodes
            .get_mut(&entry)
            .expect("entry")
            .conns
            .insert(conn);
        let lat = self.latency(PUBLISHER, entry);
        let at = self.now + lat;
        self.schedule(
            at,
            entry,
            Delivery::Up {
                conn,
                peer: PUBLISHER,
                outbound: false,
            },
        );
        (conn, lat)
    }

    /// Chunk `index` of `digest` from the content the simulation published (every node's
    /// simulated disk shares it), or `NoChunk` when it was never published.
    pub(super) fn chunk_reply(&self, digest: Digest, index: u32) -> ContentMsg {
        match self.publisher.content.get(&digest) {
            Some(c) => {
                let cs = self.chunk_size_of(&digest);
                let start = (index as usize * cs).min(c.len());
                let end = (start + cs).min(c.len());
                ContentMsg::Chunk {
                    digest,
                    index,
                    data: Payload(c.0.slice(start..end)),
                }
            }
            None => ContentMsg::NoChunk { digest, index },
        }
    }

    pub(super) fn publisher_receive(&mut self, conn: Conn, msg: Message) {
        match msg {
            Message::Content(ContentMsg::GetChunk { digest, index }) => {
                let reply = self.chunk_reply(digest, index);
                self.transmit(PUBLISHER, conn, reply.into());
            }
            Message::Census(CensusMsg::Reply { id, count }) => {
                if let Some(a) = self.publisher.censuses.get_mut(&id)
                    && a.answered_at.is_none()
                {
                    a.answered_at = Some(self.now);
                    a.count = count;
                }
            }
            Message::Tally(TallyMsg::Subtree(t)) => {
                if let Some(app) = t.app.clone() {
                    let e = self.publisher.tallies.entry((app, t.seq)).or_default();
                    if e.version < t.version || e.app.is_none() {
                        *e = t;
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn chunk_size_of(&self, digest: &Digest) -> usize {
        self.chunk_sizes.get(digest).copied().unwrap_or(1)
    }

    /// A node's message on its way out, through its injected faults.
    pub(super) fn send_from(&mut self, id: Id, conn: Conn, msg: Message) {
        let n = self.nodes.get_mut(&id).expect("sender exists");
        let msg = match msg {
            Message::Content(ContentMsg::Chunk { .. } | ContentMsg::NoChunk { .. })
                if n.faults.silent_chunks =>
            {
                n.requests_ignored += 1;
                return;
            }
            Message::Content(ContentMsg::Chunk {
                digest,
                index,
                data,
            }) => {
                n.chunks_served += 1;
                let data = if n.faults.corrupt_chunks {
                    let mut bad = data.to_vec();
                    if let Some(b) = bad.first_mut() {
                        *b ^= 0xff;
                    }
                    Payload::from(bad)
                } else {
                    data
                };
                ContentMsg::Chunk {
                    digest,
                    index,
                    data,
                }
                .into()
            }
            m => m,
        };
        self.transmit(id, conn, msg);
    }

    pub(super) fn activate(&mut self, id: Id, a: crate::node::Activation) {
        let h = &a.head.head;
        // Against the node's own trust (its chain as it stands): signed by a threshold of the
        // release role of the head's epoch, and of the newest epoch or one the node held when
        // it took the head in.
        let trust = self.nodes[&id].node.as_ref().expect("live").trust();
        assert!(
            trust.verify_stored_head(&a.head).is_ok(),
            "safety (seed {}): node {id} asked to activate a head that does not verify: {:?}",
            self.cfg.seed,
            trust.verify_stored_head(&a.head)
        );
        let canonical = self.publisher.content.get(&h.release.digest).cloned();
        let n = self.nodes.get_mut(&id).expect("node exists");
        let content_ok = match &a.content {
            Some(c) => canonical.as_ref().is_some_and(|k| k[..] == c[..]),
            None => n.disk.blobs.contains(&h.release.digest),
        };
        assert!(
            content_ok,
            "safety (seed {}): node {id} asked to activate content that is not the signed release",
            self.cfg.seed
        );
        let refused = || ActivationError::Refused {
            stage: "compile".into(),
            reason: "not a component".into(),
        };
        let result = match (a.content.as_deref(), canonical.as_ref()) {
            (Some(c), _) if !(self.accepts)(c) => Err(refused()),
            (None, Some(c)) if !(self.accepts)(c) => Err(refused()),
            _ => {
                if let Some(r) = n.disk.records.get(&h.app) {
                    assert!(
                        r.head.head.order() < h.order(),
                        "safety (seed {}): node {id} seq went backwards for {}",
                        self.cfg.seed,
                        h.app
                    );
                }
                n.disk.records.insert(h.app.clone(), a.record.clone());
                n.disk.blobs.insert(h.release.digest);
                Ok(())
            }
        };
        let stored = a.content.is_none();
        let delay = self.activation_delay(id, &h.app, &h.release.digest, stored);
        let d = Delivery::Activated(h.app.clone(), h.seq, result);
        let at = self.now + delay;
        self.schedule(at, id, d);
    }

    /// A prefetch: the content is checked like an activation's and stored; nothing serves it.
    pub(super) fn prefetch(&mut self, id: Id, p: crate::node::Prefetch) {
        let h = &p.head.head;
        let canonical = self.publisher.content.get(&h.release.digest).cloned();
        let n = self.nodes.get_mut(&id).expect("node exists");
        let content_ok = match &p.content {
            Some(c) => canonical.as_ref().is_some_and(|k| k[..] == c[..]),
            None => n.disk.blobs.contains(&h.release.digest),
        };
        assert!(
            content_ok,
            "safety (seed {}): node {id} asked to prefetch content that is not the signed release",
            self.cfg.seed
        );
        let compiles = match (p.content.as_deref(), canonical.as_ref()) {
            (Some(c), _) => (self.accepts)(c),
            (None, Some(c)) => (self.accepts)(c),
            (None, None) => true,
        };
        let result = if compiles {
            n.disk.blobs.insert(h.release.digest);
            Ok(())
        } else {
            Err(ActivationError::Refused {
                stage: "compile".into(),
                reason: "not a component".into(),
            })
        };
        let d = Delivery::Prefetched(h.app.clone(), h.seq, result);
        let at = self.now + self.cfg.activate_delay;
        self.schedule(at, id, d);
    }
}
