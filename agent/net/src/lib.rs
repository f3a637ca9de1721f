//! fleetcast-net: the transport both binaries share, the agent daemon and the operator CLI.
//!
//! - [`endpoint`]: the quinn endpoint actor ([`Net`], [`NetHandle`], [`NetEvent`]): one task per
//!   connection, one frame per unidirectional stream, bounded frames and sends; callers send and
//!   receive [`Message`](fleetcast_protocol::wire::Message)s.
//! - [`codec`]: the frame codec ([`codec::encode`], [`codec::decode`], [`codec::MAX_FRAME`]) and
//!   the protocol version ([`codec::ALPN`]), with the reason an older peer is refused; the
//!   admission `Hello` ([`codec::encode_hello`]) and [`codec::CLOSE_ADMISSION`].
//! - [`Admit`] / [`OpenAdmission`]: the admission policy a [`NetConfig`] carries; the handshake
//!   (`handshake.rs`) judges each peer with it, [`NetHandle::recheck`] judges them again.
//! - [`tls`]: node identity (ed25519), self-signed certificates, TLS 1.3 only, mutual auth that
//!   proves key possession, ring as the only crypto provider.
//! - [`keys`]: the publisher's key files.
//! - [`emulator`]: an in-process WAN link under quinn's UDP socket (delay, jitter, loss, rate
//!   cap) for tests and benches, since tc netem is not available.
//! - [`logging`]: the `tracing` subscriber both binaries install.
//!
//! **Architecture Invariant:** no edge runtime here (no wasmtime, sled or hyper), so the
//! operator CLI that links this crate stays small.

pub mod codec;
mod conn;
pub mod emulator;
pub mod endpoint;
mod handshake;
pub mod keys;
pub mod logging;
pub mod tls;

pub use emulator::LinkModel;
pub use endpoint::{
    Admit, ConnId, Net, NetConfig, NetError, NetEvent, NetHandle, OpenAdmission, SendError,
};
pub use tls::{Identity, NodeId};

#[cfg(test)]
mod tests;
