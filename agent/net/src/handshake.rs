//! The admission handshake, right after TLS (which proved the peer's node id) and the version
//! check:
//!
//! 1. the dialler sends its [`Hello`] on its first unidirectional stream;
//! 2. the acceptor judges it ([`crate::Admit`]): refused → close with [`CLOSE_ADMISSION`] and
//!    the reason; admitted → it sends its own `Hello` on its first stream;
//! 3. the dialler judges that one: refused → close the same way; admitted → it sends an empty
//!    stream (its acknowledgement) and registers the connection;
//! 4. the acceptor registers the connection once the acknowledgement arrived.
//!
//! So a side registers (and emits `Connected`) only once the peer admitted it too, and a
//! refused peer is never registered on either side. The whole exchange has a deadline
//! ([`HELLO_TIMEOUT`]); a hello is at most [`codec::MAX_HELLO`] bytes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fleetcast_protocol::trust::{Hello, PeerRole};
use quinn::{Connection, ConnectionError, ReadToEndError, VarInt};

use crate::codec::{self, CLOSE_ADMISSION};
use crate::endpoint::{NetError, Shared};
use crate::tls::NodeId;

/// How long the hello exchange may take after the TLS handshake.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Application close code for a hello exchange that failed (not a refusal).
const CLOSE_HELLO: u32 = 6;

/// An admitted peer: what it said and what it was admitted as, and the policy generation it
/// was judged under.
pub(crate) struct Admitted {
    pub(crate) hello: Hello,
    pub(crate) role: PeerRole,
    pub(crate) generation: u64,
}

/// Why the exchange did not admit the peer.
enum Failure {
    /// The peer refused us (its close reason).
    RefusedByPeer(String),
    /// We refused the peer.
    Refused(String),
    /// Anything else: timeout, undecodable hello, lost connection.
    Broken(String),
}

impl Failure {
    fn into_error(self, addr: SocketAddr) -> NetError {
        match self {
            Failure::RefusedByPeer(reason) => NetError::Refused { addr, reason },
            Failure::Refused(reason) => NetError::RefusedPeer { addr, reason },
            Failure::Broken(reason) => NetError::Hello { addr, reason },
        }
    }
}

fn lost(e: &ConnectionError) -> Failure {
    match e {
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(CLOSE_ADMISSION) =>
        {
            Failure::RefusedByPeer(String::from_utf8_lossy(&c.reason).into_owned())
        }
        ConnectionError::ApplicationClosed(c) if !c.reason.is_empty() => Failure::Broken(format!(
            "closed by peer: {}",
            String::from_utf8_lossy(&c.reason)
        )),
        other => Failure::Broken(other.to_string()),
    }
}

fn read_failed(e: ReadToEndError) -> Failure {
    match e {
        ReadToEndError::Read(quinn::ReadError::ConnectionLost(c)) => lost(&c),
        ReadToEndError::TooLong => Failure::Broken(format!(
            "hello exceeds the maximum of {} bytes",
            codec::MAX_HELLO
        )),
        other => Failure::Broken(format!("reading the hello: {other}")),
    }
}

async fn send_stream(conn: &Connection, bytes: &[u8]) -> Result<(), Failure> {
    let mut stream = conn.open_uni().await.map_err(|e| lost(&e))?;
    stream.write_all(bytes).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(c) => lost(&c),
        other => Failure::Broken(format!("sending the hello: {other}")),
    })?;
    stream
        .finish()
        .map_err(|e| Failure::Broken(format!("sending the hello: {e}")))
}

async fn read_stream(conn: &Connection, max: usize) -> Result<Vec<u8>, Failure> {
    let mut stream = conn.accept_uni().await.map_err(|e| lost(&e))?;
    stream.read_to_end(max).await.map_err(read_failed)
}

async fn read_hello(conn: &Connection) -> Result<Hello, Failure> {
    let bytes = read_stream(conn, codec::MAX_HELLO).await?;
    codec::decode_hello(&bytes).map_err(|e| Failure::Broken(e.to_string()))
}

/// Judges the peer's hello; a refusal closes the connection with the reason.
fn judge(
    shared: &Shared,
    conn: &Connection,
    node: NodeId,
    hello: Hello,
) -> Result<Admitted, Failure> {
    let generation = shared.admit_generation.load(Ordering::SeqCst);
    match shared.cfg.admit.admit(node, &hello) {
        Ok(role) => Ok(Admitted {
            hello,
            role,
            generation,
        }),
        Err(reason) => {
            shared.counters.refused();
            conn.close(VarInt::from_u32(CLOSE_ADMISSION), reason.as_bytes());
            Err(Failure::Refused(reason))
        }
    }
}

fn own_hello(shared: &Shared) -> Result<Vec<u8>, Failure> {
    codec::encode_hello(&shared.cfg.hello)
        .map_err(|e| Failure::Broken(format!("this node's hello: {e}")))
}

async fn dialler(shared: &Shared, conn: &Connection, node: NodeId) -> Result<Admitted, Failure> {
    send_stream(conn, &own_hello(shared)?).await?;
    let hello = read_hello(conn).await?;
    let admitted = judge(shared, conn, node, hello)?;
    send_stream(conn, &[]).await?;
    Ok(admitted)
}

async fn acceptor(shared: &Shared, conn: &Connection, node: NodeId) -> Result<Admitted, Failure> {
    let hello = read_hello(conn).await?;
    let admitted = judge(shared, conn, node, hello)?;
    send_stream(conn, &own_hello(shared)?).await?;
    let ack = read_stream(conn, 0).await?;
    debug_assert!(ack.is_empty());
    Ok(admitted)
}

/// Runs the exchange on `conn` with the peer proved as `node`; on failure the connection is
/// closed (with [`CLOSE_ADMISSION`] if either side refused).
async fn run(
    shared: &Shared,
    conn: &Connection,
    node: NodeId,
    outbound: bool,
) -> Result<Admitted, Failure> {
    let exchange = async {
        if outbound {
            dialler(shared, conn, node).await
        } else {
            acceptor(shared, conn, node).await
        }
    };
    let result = match tokio::time::timeout(HELLO_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Broken(format!(
            "no admission hello within {} s",
            HELLO_TIMEOUT.as_secs()
        ))),
    };
    match &result {
        Ok(_) | Err(Failure::Refused(_)) => {}
        Err(Failure::RefusedByPeer(_)) => shared.counters.refused_by_peer(),
        Err(Failure::Broken(reason)) => {
            conn.close(VarInt::from_u32(CLOSE_HELLO), reason.as_bytes());
        }
    }
    result
}

/// The dialler's side: `Err` is what its dial returns.
pub(crate) async fn outbound(
    shared: &Shared,
    conn: &Connection,
    node: NodeId,
    addr: SocketAddr,
) -> Result<Admitted, NetError> {
    run(shared, conn, node, true).await.map_err(|f| {
        let e = f.into_error(addr);
        tracing::warn!(%addr, node = %node.short(), "{e}");
        e
    })
}

/// The acceptor's side: a failure is only logged (nothing is registered).
pub(crate) async fn inbound(
    shared: &Shared,
    conn: &Connection,
    node: NodeId,
    addr: SocketAddr,
) -> Option<Admitted> {
    match run(shared, conn, node, false).await {
        Ok(a) => Some(a),
        Err(Failure::Refused(reason)) => {
            tracing::warn!(%addr, node = %node.short(), "refused an inbound peer: {reason}");
            None
        }
        Err(Failure::RefusedByPeer(reason)) => {
            tracing::warn!(%addr, node = %node.short(), "the peer that dialled in refused this node: {reason}");
            None
        }
        Err(f) => {
            tracing::debug!(%addr, node = %node.short(), "{}", f.into_error(addr));
            None
        }
    }
}
