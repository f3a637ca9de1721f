//! The wire types of the fleet root's travel and of head order: [`TrustMsg`] and
//! [`Position`] (re-exported by [`crate::wire`]).

use serde::{Deserialize, Serialize};

use crate::trust::SignedRoot;

/// The fleet root travelling the mesh: a newly adopted root is pushed to every neighbour, and
/// a node whose anti-entropy summary shows an older root version is sent (or asks for) the
/// versions it lacks.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum TrustMsg {
    /// Consecutive roots, oldest first (at most [`crate::trust::MAX_ROOTS_PER_MSG`]).
    Roots(Vec<SignedRoot>),
    /// "Send me the roots after version `after`."
    Want { after: u64 },
}

/// Where a head sits in its app's order: heads are ordered by epoch, then seq.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch == 0 {
            write!(f, "seq {}", self.seq)
        } else {
            write!(f, "seq {} (epoch {})", self.seq, self.epoch)
        }
    }
}
