//! The node's IO vocabulary: what the shell feeds in ([`Input`]), what it drains out
//! ([`Output`], with [`Event`]s for logs), and the payloads they carry.
//!
//! These types are the node's boundary with its shell (the agent, the simulator); they hold no
//! state and import no layer, so every layer can emit outputs without importing another one.
//! **Invariant:** outputs leave in the order the layers emit them (one FIFO, [`Outbox`]), which
//! is what makes a simulated run replay exactly.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::head::SignedHead;
use crate::release::{AppName, Digest, Release};
use crate::rollout::Health;
use crate::trust::{PeerRole, SignedRoot};
use crate::wire::{Message, NodeId, NodeStatus};

use super::AppRecord;

/// Inputs to [`Node::handle`](super::Node::handle).
#[derive(Debug)]
pub enum Input<P> {
    /// A connection to `P` is up: `node` is the peer's authenticated id, `addr` the address
    /// the connection runs to, `outbound` whether this side dialled it.
    PeerUp {
        peer: P,
        node: NodeId,
        addr: SocketAddr,
        outbound: bool,
        /// What the peer was admitted as at the handshake ([`crate::trust::Trust::admit`]).
        role: PeerRole,
    },
    /// The connection to `P` is gone.
    PeerDown(P),
    /// An [`Output::Dial`] failed.
    DialFailed(SocketAddr),
    /// `P` sent a message.
    Message(P, Message),
    /// The shell finished an [`Output::Activate`]: `Ok` once the record is durable and the
    /// release serves; `Err` with the reason if it could not be activated (nothing was stored).
    Activated {
        app: AppName,
        seq: u64,
        result: Result<(), ActivationError>,
    },
    /// The shell finished an [`Output::Prefetch`]: `Ok` once the release is stored and
    /// compiled (ready to swap in), `Err` with the reason if it would not compile.
    Prefetched {
        app: AppName,
        seq: u64,
        result: Result<(), ActivationError>,
    },
    /// Requests served on this node by `app`'s release `digest` since it was activated
    /// (`new`), and by the release it replaced, before the swap (`old`). Fed by the shell every
    /// second or so while a rollout's wave runs here; counted up the tally tree.
    Health {
        app: AppName,
        digest: Digest,
        new: Health,
        old: Health,
    },
    /// The release of `seq` served, then failed on this node (its trial: traps, timeouts,
    /// errors; or the agent restarted during the trial) and the shell went back to `serving`
    /// (`None`: nothing serves). The seq stays held: the release is not activated again here
    /// unless a newer head arrives. Counted as failed in the fleet's tallies. `reason` is data
    /// for operators (status, reports), not an error of the node.
    Reverted {
        app: AppName,
        seq: u64,
        reason: String,
        serving: Option<Release>,
    },
    /// An operator on this node made `release` serve in place of the head's (`None`: the
    /// override is over and the head's release serves). Shown in status; not a new head.
    LocalOverride {
        app: AppName,
        release: Option<Release>,
    },
    /// The time from [`Node::poll_timeout`](super::Node::poll_timeout) has come.
    Timeout,
    /// The wall clock (unix ms), fed by the shell at start and then every second or so:
    /// what root and certificate expiry is judged by (never before the newest time seen in
    /// signed metadata).
    Clock { unix_ms: u64 },
}

/// Why the shell could not activate a release ([`Input::Activated`]). Either way nothing of
/// the release serves; the node keeps the head's seq (it is not activated here again unless a
/// newer head arrives), shows the reason in status and counts the head as failed here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    /// The release was refused at pipeline `stage` (compile, persist, smoke check…).
    #[error("{stage}: {reason}")]
    Refused { stage: String, reason: String },
    /// The shell stopped the activation after [`Output::CancelActivation`]: a newer head is
    /// waiting and starts next.
    #[error("cancelled: a newer head arrived")]
    Cancelled,
}

/// What serves for an app when it is not the release of the head in force.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Serving {
    pub release: Option<Release>,
    pub local_override: bool,
}

/// Work for the IO shell, drained with [`Node::poll_output`](super::Node::poll_output).
#[derive(Debug)]
#[must_use]
pub enum Output<P> {
    /// Send `msg` to `to` (drop it if the peer is gone).
    Send { to: P, msg: Message },
    /// Read chunk `index` of stored content `digest` and send it to `to` as a chunk message
    /// (or a no-chunk message if the store no longer has it).
    ServeChunk { to: P, digest: Digest, index: u32 },
    /// Compile `head`'s release (from `content`, or from the store when `None`), persist the
    /// content and `record` durably, swap it in, then feed back [`Input::Activated`].
    Activate(Box<Activation>),
    /// `head`'s wave does not include this node: compile its release (from `content`, or
    /// from the store when `None`) and keep it stored and compiled, **without** swapping it in
    /// (the release in force keeps serving), then feed back [`Input::Prefetched`]. Below the
    /// serving traffic: one at a time, at a lower priority than requests.
    Prefetch(Box<Prefetch>),
    /// Open a connection to `addr`; report [`Input::PeerUp`] (outbound) or
    /// [`Input::DialFailed`].
    Dial(SocketAddr),
    /// Close the connection to `peer`, telling it why.
    Disconnect { peer: P, reason: String },
    /// A newer head is waiting behind the activation of `seq`: the shell may stop it early
    /// (it still feeds back [`Input::Activated`], `Err` if it stopped it).
    CancelActivation { app: AppName, seq: u64 },
    /// Answer a status request from `to`: the shell may fill in what only it knows
    /// ([`NodeStatus::runtime`], [`NodeStatus::now_ms`]) and sends it as [`Message::Status`].
    Status { to: P, status: Box<NodeStatus> },
    /// The node adopted newer fleet roots (oldest first): persist them and `floor_ms` (the
    /// newest signed time seen) durably **before** carrying out any later output, and apply
    /// them to admission (a revoked peer's connections close).
    Roots {
        roots: Vec<SignedRoot>,
        floor_ms: u64,
    },
    /// Something worth logging happened.
    Event(Event),
}

/// An activation request.
#[derive(Debug)]
pub struct Activation {
    pub head: SignedHead,
    /// The verified content, when it was just fetched; `None` when it is already stored.
    pub content: Option<Vec<u8>>,
    /// What to persist for the app once the release is compiled.
    pub record: AppRecord,
}

/// A prefetch request: the release of a head whose wave leaves this node out for now.
#[derive(Debug)]
pub struct Prefetch {
    pub head: SignedHead,
    /// The verified content, when it was just fetched; `None` when it is already stored.
    pub content: Option<Vec<u8>>,
}

/// Notable happenings, for logs and tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Accepted {
        app: AppName,
        seq: u64,
        version: semver::Version,
        cached: bool,
    },
    Rejected {
        app: AppName,
        seq: u64,
        /// [`crate::HeadError::kind`]: a fixed name, for metrics labels.
        kind: &'static str,
        reason: String,
    },
    Activated {
        app: AppName,
        seq: u64,
        version: semver::Version,
    },
    ActivationFailed {
        app: AppName,
        seq: u64,
        reason: String,
    },
    /// A head's wave leaves this node out: its release is stored and compiled, the release in
    /// force keeps serving.
    Prefetched {
        app: AppName,
        seq: u64,
        version: semver::Version,
    },
    /// A peer entered or left the active view.
    Neighbor { node: NodeId, up: bool },
    /// A newer fleet root was verified and adopted.
    RootAdopted { version: u64, epoch: u64 },
    /// Roots that did not follow the chain (the trusted root stays where it was).
    RootRefused { reason: String },
}

/// The one output queue every layer writes to, in order.
#[derive(Debug)]
pub(crate) struct Outbox<P>(VecDeque<Output<P>>);

impl<P> Default for Outbox<P> {
    fn default() -> Self {
        Outbox(VecDeque::new())
    }
}

impl<P> Outbox<P> {
    pub(crate) fn send(&mut self, to: P, msg: impl Into<Message>) {
        self.0.push_back(Output::Send {
            to,
            msg: msg.into(),
        });
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.0.push_back(Output::Event(e));
    }

    pub(crate) fn push(&mut self, o: Output<P>) {
        self.0.push_back(o);
    }

    pub(crate) fn pop(&mut self) -> Option<Output<P>> {
        self.0.pop_front()
    }
}
