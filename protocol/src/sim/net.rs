//! The simulated network: per-pair latency, upload links, loss as retransmission delay,
//! dials, broken links, crashes, restarts and partitions.
//!
//! **Invariant:** every random draw comes from the simulator's one seeded RNG, in event
//! order, so a run is a pure function of its seed.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::node::{AppRecord, Node};
use crate::rng::Rng;
use crate::wire::{ContentMsg, Message};

use super::{Conn, Delivery, Id, Link, PUBLISHER, Sim, id_of};

impl Sim {
    pub(super) fn latency(&self, a: Id, b: Id) -> Duration {
        let (lo, hi) = self.cfg.latency;
        if hi <= lo {
            return lo;
        }
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        let mut r = Rng::new(self.cfg.seed ^ x.wrapping_mul(0x9E37_79B9) ^ y.rotate_left(32));
        lo + (hi - lo).mul_f64(r.unit())
    }

    pub(super) fn reachable(&self, a: Id, b: Id) -> bool {
        let side = |x: Id| self.side.get(&x).copied().unwrap_or(0);
        self.side.is_empty() || side(a) == side(b)
    }

    pub(super) fn schedule(&mut self, at: Instant, to: Id, d: Delivery) {
        let k = self.next;
        self.next += 1;
        self.queue.push(Reverse((at, k, to)));
        self.payloads.insert(k, d);
    }

    /// Message size on the wire: a chunk is its data plus a fixed envelope, anything else its
    /// postcard encoding plus a frame header ([`crate::wire::encoded_len`]: no framing, no
    /// copy).
    pub(super) fn size_of(msg: &Message) -> usize {
        match msg {
            Message::Content(ContentMsg::Chunk { data, .. }) => data.len() + 48,
            m => crate::wire::encoded_len(m) + 8,
        }
    }

    /// Sends `msg` from `from` over `conn`, through `from`'s upload link.
    pub(super) fn transmit(&mut self, from: Id, conn: Conn, msg: Message) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        if !link.up {
            return;
        }
        let to = link.other(from);
        let size = Self::size_of(&msg);
        let now = self.now;
        let serialise = self.cfg.upload_bps.map_or(Duration::ZERO, |bps| {
            Duration::from_secs_f64(size as f64 * 8.0 / bps as f64)
        });
        let free = if from == PUBLISHER {
            self.publisher.upload_free.get_or_insert(now)
        } else {
            &mut self
                .nodes
                .get_mut(&from)
                .expect("sender exists")
                .upload_free
        };
        // Chunk data queues behind chunk data; small control messages go ahead of queued chunks
        // (the shell sends them on higher-priority streams) and only delay the chunks behind
        // them by their own serialisation time.
        let depart = if msg.is_payload() {
            let d = (*free).max(now) + serialise;
            *free = d;
            self.traffic.queue_wait += d - serialise - now;
            self.traffic.chunks_sent += 1;
            d
        } else {
            *free = (*free).max(now) + serialise;
            now + serialise
        };
        let lat = self.latency(from, to);
        let mut at = depart + lat;
        if self.cfg.loss > 0.0 {
            let packets = size.div_ceil(1200) as i32;
            let p_any = 1.0 - (1.0 - self.cfg.loss).powi(packets);
            if self.rng.chance(p_any) {
                at += lat * 2 + Duration::from_millis(5);
            }
        }
        if msg.is_payload() {
            if from == PUBLISHER {
                self.traffic.publisher_egress += size as u64 - 48;
            }
        } else {
            self.traffic.control += size as u64;
        }
        self.traffic.messages += 1;
        if matches!(msg, Message::Census(_)) {
            self.traffic.census += 1;
        }
        self.schedule(at, to, Delivery::Msg { conn, msg });
    }

    pub(super) fn dial(&mut self, from: Id, addr: SocketAddr) {
        let target = id_of(addr).filter(|t| {
            *t != from && self.nodes.get(t).is_some_and(|n| n.alive()) && self.reachable(from, *t)
        });
        let Some(to) = target else {
            let at = self.now + self.cfg.dial_timeout;
            self.schedule(at, from, Delivery::DialFailed(addr));
            return;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links.insert(
            conn,
            Link {
                a: from,
                b: to,
                up: true,
            },
        );
        self.nodes
            .get_mut(&from)
            .expect("dialer")
            .conns
            .insert(conn);
        self.nodes.get_mut(&to).expect("target").conns.insert(conn);
        let lat = self.latency(from, to);
        let at = self.now;
        self.schedule(
            at + lat,
            to,
            Delivery::Up {
                conn,
                peer: from,
                outbound: false,
            },
        );
        self.schedule(
            at + lat * 2,
            from,
            Delivery::Up {
                conn,
                peer: to,
                outbound: true,
            },
        );
    }

    /// Breaks `conn`: both live ends learn of it after `after`.
    pub(super) fn break_link(&mut self, conn: Conn, after: Duration) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if !link.up {
            return;
        }
        link.up = false;
        let (a, b) = (link.a, link.b);
        let at = self.now + after;
        for x in [a, b] {
            if x != PUBLISHER {
                self.schedule(at, x, Delivery::Down { conn });
            }
        }
    }

    /// Crashes `id`: its memory is lost, its disk kept; peers notice after `detect_after`.
    pub fn crash(&mut self, id: Id) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.node = None;
        n.timer_at = None;
        n.accepted_seq.clear();
        let conns: Vec<Conn> = std::mem::take(&mut n.conns).into_iter().collect();
        let detect = self.cfg.detect_after;
        for c in conns {
            self.break_link(c, detect);
        }
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: Id) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.node.is_some() {
            return;
        }
        let mut cfg = n.cfg.clone();
        cfg.seed = cfg.seed.wrapping_add(0x1234_5678);
        // The trust the node rebuilds from its disk: the anchor, then the chain it adopted.
        let (_, err) = cfg.trust.update(n.disk.roots.iter().cloned());
        assert!(
            err.is_none(),
            "the disk's chain follows the anchor: {err:?}"
        );
        cfg.trust.observe(n.disk.floor_ms);
        n.cfg.seed = cfg.seed;
        let records: Vec<AppRecord> = n.disk.records.values().cloned().collect();
        n.node = Some(Node::new(now, cfg, records, n.disk.blobs.iter().copied()));
        n.upload_free = now;
        n.restarted(now);
        self.drain(id);
        self.arm_health(id);
    }

    /// Splits the nodes: `side(id)` picks each node's side. Connections across break.
    pub fn partition(&mut self, side: impl Fn(Id) -> u8) {
        self.side = self.nodes.keys().map(|i| (*i, side(*i))).collect();
        let cross: Vec<Conn> = self
            .links
            .iter()
            .filter(|(_, l)| l.up && l.a != PUBLISHER && !self.reachable(l.a, l.b))
            .map(|(c, _)| *c)
            .collect();
        let detect = self.cfg.detect_after;
        for c in cross {
            self.break_link(c, detect);
        }
    }

    pub fn heal(&mut self) {
        self.side.clear();
    }
}
