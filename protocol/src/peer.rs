//! The peer handle: how the IO shell names a connection to the node and its layers.
//!
//! It lives on its own so that every layer ([`crate::membership`], [`crate::swarm`],
//! [`crate::node`]) can name peers without importing another layer: no module imports back up.
//! **Invariant:** a handle is only ever compared, ordered and copied, so iteration over peers
//! is in the handle's order and the simulator replays exactly.

use std::fmt;

/// A peer handle chosen by the IO shell (a connection id, an index in a simulator…).
pub trait Peer: Copy + Ord + fmt::Debug {}
impl<T: Copy + Ord + fmt::Debug> Peer for T {}
