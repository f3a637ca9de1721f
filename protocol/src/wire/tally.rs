//! The fleet counts (`Message::Tally`): see [`Tally`]. Split from the rest of the wire types
//! only for size; they are part of the same API boundary.

use serde::{Deserialize, Serialize};

use super::Report;
use crate::release::AppName;
use crate::rollout::Health;

/// Largest number of error samples carried in one tally.
pub const MAX_TALLY_SAMPLES: usize = 8;

/// How many nodes of a subtree did what with one head (aggregated up the broadcast tree, so a
/// release costs O(N) status messages in total).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub app: Option<AppName>,
    pub seq: u64,
    /// Nodes running this head's release.
    pub active: u32,
    /// Nodes that verified the head but could not activate the release.
    pub failed: u32,
    /// Nodes that refused the head.
    pub rejected: u32,
    /// A few of the non-active reports, with their reasons (bounded by [`MAX_TALLY_SAMPLES`]).
    pub samples: Vec<Report>,
    /// Nodes that hold the head and counted themselves (in its wave or not): the fleet's size
    /// as this head knows it.
    pub nodes: u32,
    /// Nodes the head's wave includes ([`crate::rollout::includes`]; every node without a plan).
    pub in_wave: u32,
    /// Nodes in the wave still fetching or activating.
    pub pending: u32,
    /// Nodes outside the wave that hold the release fetched, verified and compiled, ready to
    /// swap.
    pub prefetched: u32,
    /// Requests served by the head's release on the nodes in the wave that run it.
    pub health_new: Box<Health>,
    /// Requests served, on those same nodes, by the release it replaced there.
    pub health_old: Box<Health>,
    /// Increases with every tally its sender sends. Messages travel on separate streams and may
    /// arrive out of order: a receiver ignores a tally older than the last one it kept from
    /// the same peer.
    pub version: u64,
}

impl Tally {
    /// Adds `other`'s counts (and samples, up to the bound).
    pub fn add(&mut self, other: &Tally) {
        self.active = self.active.saturating_add(other.active);
        self.failed = self.failed.saturating_add(other.failed);
        self.rejected = self.rejected.saturating_add(other.rejected);
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.in_wave = self.in_wave.saturating_add(other.in_wave);
        self.pending = self.pending.saturating_add(other.pending);
        self.prefetched = self.prefetched.saturating_add(other.prefetched);
        self.health_new.add(&other.health_new);
        self.health_old.add(&other.health_old);
        for s in &other.samples {
            if self.samples.len() >= MAX_TALLY_SAMPLES {
                break;
            }
            self.samples.push(s.clone());
        }
    }

    /// Nodes counted.
    pub fn total(&self) -> u64 {
        self.active as u64 + self.failed as u64 + self.rejected as u64
    }
}
