//! Swarming transfer of one release's content (sans-IO).
//!
//! Neighbours announce which chunks they hold (`Have` bitmaps, then `HaveChunk` as they verify
//! more); a node fetching the content asks for the chunks it lacks from several of them at
//! once, rarest first (ties broken by a per-node random order so neighbours fetch different
//! chunks and can trade), with a bound on requests in flight per peer and in total. Every chunk
//! is verified against the signed chunk map before it is kept, announced or served, and is
//! served as soon as it is verified (cut-through), so a release streams down the mesh.
//! A peer that serves a bad chunk is dropped (the node disconnects it); a request not answered
//! by its deadline goes elsewhere, and a peer that misses three deadlines is abandoned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::peer::Peer;
use crate::release::{Digest, Release};
use crate::rng::Rng;
use crate::wire::{ContentMsg, Payload};

/// A chunk bitmap (bit `i` of byte `i / 8`, least significant first).
pub fn bits_get(bits: &[u8], i: u32) -> bool {
    bits.get(i as usize / 8)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

pub fn bits_set(bits: &mut Vec<u8>, i: u32) {
    let byte = i as usize / 8;
    if bits.len() <= byte {
        bits.resize(byte + 1, 0);
    }
    bits[byte] |= 1 << (i % 8);
}

/// A bitmap with the first `n` bits set.
pub fn bits_full(n: u32) -> Vec<u8> {
    let mut v = vec![0xff; n as usize / 8];
    if !n.is_multiple_of(8) {
        v.push((1u8 << (n % 8)) - 1);
    }
    v
}

/// Transfer tuning.
#[derive(Clone, Copy, Debug)]
pub struct SwarmConfig {
    /// A chunk request not answered by then goes to another peer.
    pub chunk_timeout: Duration,
    /// Chunk requests in flight per transfer.
    pub max_inflight: usize,
    /// Chunk requests in flight per peer.
    pub per_peer: u32,
    /// When no neighbour announces a missing chunk, ask them again after this long.
    pub retry_after: Duration,
}

#[derive(Debug, Default)]
struct PeerHas {
    bits: Vec<u8>,
    inflight: u32,
    strikes: u32,
}

/// What became of a received chunk.
#[derive(Debug, PartialEq)]
pub enum ChunkOutcome {
    /// Not asked for, or already held: dropped.
    Ignored,
    /// Verified and kept; `done` when it was the last one missing.
    Kept { done: bool },
    /// Did not verify: drop the peer.
    Bad(String),
    /// The peer does not have it after all.
    Refused,
}

/// One content transfer. See the module docs.
#[derive(Debug)]
pub struct Transfer<P: Peer> {
    pub release: Release,
    chunks: Vec<Option<Payload>>,
    missing: usize,
    peers: BTreeMap<P, PeerHas>,
    inflight: BTreeMap<u32, (P, Instant)>,
    /// Requests past their deadline: a late answer is still welcome.
    late: BTreeSet<(u32, P)>,
    refused: BTreeSet<(u32, P)>,
    /// Peers fetching this content that want to hear of each chunk we verify.
    interested: BTreeSet<P>,
    /// Chunk order for ties in rarity, random per node.
    order: Vec<u32>,
    retry_at: Option<Instant>,
    /// Bytes received that were not needed (already held when they arrived).
    pub duplicate_bytes: u64,
}

impl<P: Peer> Transfer<P> {
    pub fn new(release: Release, rng: &mut Rng) -> Self {
        let n = release.chunks.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        Transfer {
            release,
            chunks: vec![None; n],
            missing: n,
            peers: BTreeMap::new(),
            inflight: BTreeMap::new(),
            late: BTreeSet::new(),
            refused: BTreeSet::new(),
            interested: BTreeSet::new(),
            order,
            retry_at: None,
            duplicate_bytes: 0,
        }
    }

    pub fn digest(&self) -> Digest {
        self.release.digest
    }

    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Chunks verified so far, and the chunk count.
    pub fn progress(&self) -> (u32, u32) {
        let n = self.chunks.len();
        ((n - self.missing) as u32, n as u32)
    }

    /// The bitmap of verified chunks held.
    pub fn bits(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, c) in self.chunks.iter().enumerate() {
            if c.is_some() {
                bits_set(&mut b, i as u32);
            }
        }
        b
    }

    /// A verified chunk, for serving (cut-through).
    pub fn chunk(&self, index: u32) -> Option<&Payload> {
        self.chunks.get(index as usize)?.as_ref()
    }

    /// The whole content, once complete.
    pub fn content(&self) -> Option<Vec<u8>> {
        self.is_complete().then(|| {
            let mut v = Vec::with_capacity(self.release.size as usize);
            for c in self.chunks.iter().flatten() {
                v.extend_from_slice(c);
            }
            v
        })
    }

    /// `p` holds the chunks in `bits` (merged with what it announced before). Returns whether
    /// `p` was not yet known as interested and `want` is set (the caller then answers with our
    /// own bitmap).
    pub fn on_have(&mut self, p: P, bits: &[u8], want: bool) -> bool {
        let n = self.chunks.len();
        let e = self.peers.entry(p).or_default();
        for (i, b) in bits.iter().enumerate().take(n.div_ceil(8)) {
            if e.bits.len() <= i {
                e.bits.resize(i + 1, 0);
            }
            e.bits[i] |= b;
        }
        let full = (0..n as u32).all(|i| bits_get(&e.bits, i));
        if want && !full {
            self.interested.insert(p)
        } else {
            self.interested.remove(&p);
            false
        }
    }

    pub fn on_have_chunk(&mut self, p: P, index: u32) {
        if (index as usize) < self.chunks.len() {
            let e = self.peers.entry(p).or_default();
            bits_set(&mut e.bits, index);
            let n = self.chunks.len() as u32;
            if (0..n).all(|i| bits_get(&e.bits, i)) {
                self.interested.remove(&p);
            }
        }
    }

    /// Peers to tell about a newly verified chunk `index`.
    pub fn announce_to(&self, index: u32) -> Vec<P> {
        self.interested
            .iter()
            .copied()
            .filter(|p| self.peers.get(p).is_none_or(|h| !bits_get(&h.bits, index)))
            .collect()
    }

    pub fn remove_peer(&mut self, p: P) {
        if let Some(h) = self.peers.remove(&p)
            && h.inflight > 0
        {
            self.inflight.retain(|_, (q, _)| *q != p);
        }
        self.interested.remove(&p);
        self.late.retain(|(_, q)| *q != p);
    }

    pub fn on_chunk(&mut self, p: P, index: u32, data: Option<Payload>) -> ChunkOutcome {
        let asked = if self.inflight.get(&index).is_some_and(|(q, _)| *q == p) {
            self.inflight.remove(&index);
            if let Some(h) = self.peers.get_mut(&p) {
                h.inflight = h.inflight.saturating_sub(1);
            }
            true
        } else {
            self.late.remove(&(index, p))
        };
        if !asked {
            return ChunkOutcome::Ignored;
        }
        let Some(data) = data else {
            self.refused.insert((index, p));
            return ChunkOutcome::Refused;
        };
        if let Err(e) = self.release.verify_chunk(index, &data) {
            self.remove_peer(p);
            return ChunkOutcome::Bad(format!(
                "served a bad chunk of {}: {e}",
                self.release.digest.short()
            ));
        }
        if let Some(h) = self.peers.get_mut(&p) {
            bits_set(&mut h.bits, index);
            h.strikes = 0;
        }
        let slot = &mut self.chunks[index as usize];
        if slot.is_some() {
            self.duplicate_bytes += data.len() as u64;
            return ChunkOutcome::Ignored;
        }
        *slot = Some(data);
        self.missing -= 1;
        // A late answer made a re-request of the same chunk redundant; let it finish anyway.
        ChunkOutcome::Kept {
            done: self.missing == 0,
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.inflight
            .values()
            .map(|(_, at)| *at)
            .chain(self.retry_at)
            .min()
    }

    /// Expires late requests. Returns whether a retry is due (the caller re-announces interest).
    pub fn on_timeout(&mut self, now: Instant) -> bool {
        let expired: Vec<(u32, P)> = self
            .inflight
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(i, (p, _))| (*i, *p))
            .collect();
        for (i, p) in expired {
            self.inflight.remove(&i);
            self.refused.insert((i, p));
            self.late.insert((i, p));
            if let Some(h) = self.peers.get_mut(&p) {
                h.inflight = h.inflight.saturating_sub(1);
                h.strikes += 1;
            }
        }
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.refused.clear();
            return true;
        }
        false
    }

    /// Issues chunk requests up to the bounds, rarest chunk first, each to the least loaded
    /// peer that announced it.
    pub fn pump(&mut self, now: Instant, cfg: &SwarmConfig, rng: &mut Rng) -> Vec<(P, ContentMsg)> {
        let mut sends = Vec::new();
        if self.missing == 0 || self.inflight.len() >= cfg.max_inflight {
            return sends;
        }
        let usable = |h: &PeerHas| h.strikes < 3 && h.inflight < cfg.per_peer;
        // (rarity, order position, index)
        let mut wanted: Vec<(usize, usize, u32)> = Vec::new();
        let mut starved = false;
        for (pos, &i) in self.order.iter().enumerate() {
            if self.chunks[i as usize].is_some() || self.inflight.contains_key(&i) {
                continue;
            }
            let holders = self
                .peers
                .iter()
                .filter(|(p, h)| bits_get(&h.bits, i) && !self.refused.contains(&(i, **p)))
                .count();
            if holders == 0 {
                starved = true;
                continue;
            }
            wanted.push((holders, pos, i));
        }
        wanted.sort_unstable();
        let deadline = now + cfg.chunk_timeout;
        let digest = self.release.digest;
        for (_, _, i) in wanted {
            if self.inflight.len() >= cfg.max_inflight {
                break;
            }
            let mut best: Vec<(u32, P)> = self
                .peers
                .iter()
                .filter(|(p, h)| {
                    usable(h) && bits_get(&h.bits, i) && !self.refused.contains(&(i, **p))
                })
                .map(|(p, h)| (h.inflight, *p))
                .collect();
            let Some(min) = best.iter().map(|(n, _)| *n).min() else {
                continue;
            };
            best.retain(|(n, _)| *n == min);
            let (_, p) = best[rng.below(best.len())];
            self.peers.get_mut(&p).expect("listed").inflight += 1;
            self.inflight.insert(i, (p, deadline));
            sends.push((p, ContentMsg::GetChunk { digest, index: i }));
        }
        if starved && self.retry_at.is_none() {
            self.retry_at = Some(now + cfg.retry_after);
        }
        sends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps() {
        let mut b = Vec::new();
        bits_set(&mut b, 0);
        bits_set(&mut b, 9);
        assert!(bits_get(&b, 0) && bits_get(&b, 9) && !bits_get(&b, 1) && !bits_get(&b, 100));
        let f = bits_full(10);
        assert!((0..10).all(|i| bits_get(&f, i)) && !bits_get(&f, 10));
        assert_eq!(bits_full(16), vec![0xff, 0xff]);
    }
}
