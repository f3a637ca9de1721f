//! The census messages and counts (`Message::Census`): see [`CensusMsg`]. Split from the rest
//! of the wire types only for size; they are part of the same API boundary.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::release::{AppName, Digest};

/// Largest number of per-release entries in one census.
pub const MAX_CENSUS_ENTRIES: usize = 64;
/// Largest number of missing agents named in one census.
pub const MAX_CENSUS_SAMPLES: usize = 16;

/// Longest `why` kept in a census sample ([`Missing::why`]), bytes.
pub const MAX_CENSUS_WHY: usize = 200;

/// The census: an echo wave over the active view that counts every live agent.
///
/// A client sends `Query` to any agent, which becomes the root: it forwards the query to all
/// its neighbours; each agent takes the first sender as its parent, forwards to its other
/// neighbours, and answers its parent once each of them answered (or its budget ran out) with
/// the sum of its subtree. An agent that already joined this census answers `Reply { count:
/// None }` at once, except to a neighbour it forwarded the query to itself and still waits
/// for: two queries that cross on a link answer each other, so neither side replies. Counts
/// are informational (not signed), like tallies. `node::census` has the rules (budget per hop,
/// bounds, the client rate cap).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum CensusMsg {
    Query {
        /// Chosen by the client (at random: two censuses with one id are one census); a node
        /// keeps a bounded number of censuses in progress.
        id: u64,
        /// How long the receiver may wait for its subtree before it answers (each hop passes
        /// on less).
        budget_ms: u32,
        /// The release the client asks about: agents not running it are sampled as missing.
        focus: Option<Focus>,
    },
    Reply {
        id: u64,
        /// The sender's subtree; `None` when it had already been counted in this census.
        count: Option<Census>,
    },
}

/// The head a census asks about.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Focus {
    pub app: AppName,
    pub seq: u64,
}

/// A subtree's count.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Census {
    /// Agents counted (each once).
    pub agents: u32,
    /// Neighbours whose subtrees may be missing: they did not answer within the budget, went
    /// down while awaited, or were not asked (the budget was spent, the node was busy with
    /// other censuses, or the client asked too often). 0 means every agent reachable from the
    /// root was counted.
    pub unanswered: u32,
    /// Agents per (app, what they serve), bounded by [`MAX_CENSUS_ENTRIES`]; agents beyond the
    /// bound are still in `agents`. An agent where nothing serves an app (no record of it, or
    /// its only release reverted) has no entry for that app.
    pub entries: Vec<CensusEntry>,
    /// With a focus: how many run it, and a few of those that do not (bounded by
    /// [`MAX_CENSUS_SAMPLES`]).
    pub focus_active: u32,
    pub missing: Vec<Missing>,
}

impl Census {
    /// Adds `other`'s counts (a child's subtree): `agents`, `unanswered` and `focus_active` are
    /// summed; entries are merged by (app, seq, version, digest, state), summing their agents,
    /// up to [`MAX_CENSUS_ENTRIES`] (an entry beyond the bound is dropped; its agents are still
    /// in `agents`); missing samples are kept up to [`MAX_CENSUS_SAMPLES`], each `why` cut to
    /// [`MAX_CENSUS_WHY`]. Only the first [`MAX_CENSUS_ENTRIES`] entries and
    /// [`MAX_CENSUS_SAMPLES`] samples of `other` are read (an honest sender has no more).
    pub fn add(&mut self, other: &Census) {
        self.agents = self.agents.saturating_add(other.agents);
        self.unanswered = self.unanswered.saturating_add(other.unanswered);
        self.focus_active = self.focus_active.saturating_add(other.focus_active);
        for e in other.entries.iter().take(MAX_CENSUS_ENTRIES) {
            self.add_entry(e);
        }
        for m in other.missing.iter().take(MAX_CENSUS_SAMPLES) {
            self.add_missing(m);
        }
    }

    /// Adds `e`'s agents to the entry with the same key, or as a new entry while there are
    /// fewer than [`MAX_CENSUS_ENTRIES`]. Does not touch `agents`.
    pub fn add_entry(&mut self, e: &CensusEntry) {
        if let Some(mine) = self.entries.iter_mut().find(|m| m.same_key(e)) {
            mine.agents = mine.agents.saturating_add(e.agents);
        } else if self.entries.len() < MAX_CENSUS_ENTRIES {
            self.entries.push(e.clone());
        }
    }

    /// Keeps `m` while there are fewer than [`MAX_CENSUS_SAMPLES`] samples, its `why` cut to
    /// [`MAX_CENSUS_WHY`] bytes.
    pub fn add_missing(&mut self, m: &Missing) {
        if self.missing.len() < MAX_CENSUS_SAMPLES {
            let mut m = m.clone();
            m.why = cut(&m.why, MAX_CENSUS_WHY);
            self.missing.push(m);
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// How many agents serve one release of one app, in one state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CensusEntry {
    pub app: AppName,
    /// The seq of the head in force on those agents.
    pub seq: u64,
    /// What serves there.
    pub version: semver::Version,
    pub digest: Digest,
    pub state: ServeState,
    pub agents: u32,
}

impl CensusEntry {
    /// Whether `other` counts the same thing: (app, seq, version, digest, state).
    pub fn same_key(&self, other: &CensusEntry) -> bool {
        (&self.app, self.seq, &self.version, &self.digest, self.state)
            == (
                &other.app,
                other.seq,
                &other.version,
                &other.digest,
                other.state,
            )
    }
}

/// Why an agent serves what it serves.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum ServeState {
    /// The head in force's release.
    Active,
    /// The head's release failed here; an older release serves.
    Reverted,
    /// An operator on the node chose it (`fleetcast-agent rollback`).
    Override,
}

/// An agent that does not run the focus release, and what it does instead.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Missing {
    pub node: NodeId,
    /// Where it listens, when it knows.
    pub addr: Option<SocketAddr>,
    /// The highest seq it accepted for the focus app (0: none).
    pub seq: u64,
    /// What it says, short (at most [`MAX_CENSUS_WHY`] bytes): "fetching seq 7 (12 of 40
    /// chunks)", "activating seq 7", "failed: …", "reverted to 1.0.0: …", "local override:
    /// serves 1.0.0", "holds newer seq 9", "never got seq 7 (holds seq 6)", "no release of shop".
    pub why: String,
}
