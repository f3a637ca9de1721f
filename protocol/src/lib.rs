//! fleetcast's sans-IO core.
//!
//! Everything that decides what a fleetcast node does lives here, and none of it touches the
//! outside world: no clock (time arrives as an argument), no socket, no file, no global RNG.
//! Cargo enforces it: this crate depends on none of tokio, quinn, sled, wasmtime or hyper.
//!
//! - [`release`]: what a component is (app, version, digest, size, chunk map).
//! - [`head`]: the signed statement that moves an app, and its verification rules.
//! - [`trust`]: the fleet root (roles, thresholds, rotation, expiry, epochs), node
//!   certificates and admission.
//! - [`wire`]: the messages peers exchange, nested per layer ([`wire::MembershipMsg`],
//!   [`wire::BroadcastMsg`], [`wire::ContentMsg`], [`wire::TallyMsg`], [`wire::CensusMsg`]),
//!   and their framing limits.
//! - [`peer`]: the peer handle trait every layer names peers by (no layer imports another).
//! - [`membership`]: HyParView active/passive views over the shell's connections.
//! - [`swarm`]: chunk-level swarming transfer of one release.
//! - [`node`]: the node state machine (`handle(now, input)` / `poll_output` / `poll_timeout`),
//!   composing one state struct per layer: membership wiring, Plumtree broadcast +
//!   anti-entropy, content, serving, tallies, activation, census; its IO types in `node::io`.
//! - [`sim`]: the deterministic simulator (seeded; latency, bandwidth, loss, crashes, partitions).
//!
//! The agent (`fleetcast-agent`) and the publisher (`fleetcast`) are thin IO shells around it.

pub mod head;
mod hexser;
pub mod membership;
pub mod node;
pub mod peer;
pub mod release;
pub mod rng;
pub mod rollout;
pub mod scenario;
pub mod sim;
pub mod swarm;
pub mod trust;
pub mod wire;

pub use head::{Head, HeadError, HeadKind, PublicKey, SignedHead, TrustPolicy};
pub use node::{
    Activation, ActivationError, AppRecord, Event, Input, Node, NodeConfig, Output, Serving,
};
pub use release::{AppName, DEFAULT_CHUNK_SIZE, Digest, Release, ReleaseError, RunPolicy};
pub use trust::{
    Admission, AdmitError, Hello, NodeCert, PeerRole, Role, Roles, Root, RootError, SignedNodeCert,
    SignedRoot, Trust, TrustStatus,
};
pub use wire::{
    AppStatus, BroadcastMsg, Census, CensusEntry, CensusMsg, ContentMsg, Focus, HistoryEntry,
    MembershipMsg, Message, Missing, NodeId, NodeStatus, Outcome, ParseNodeIdError, PeerInfo,
    Report, ServeState, Tally, TallyMsg,
};

#[cfg(test)]
mod scenario_tests;
#[cfg(test)]
mod sim_rollout_tests;
#[cfg(test)]
mod sim_tests;
