//! One connection's life: dial or accept, the version and identity checks, the reader tasks
//! that turn frames into [`NetEvent::Message`]s, and the writer of one frame per stream.
//!
//! Invariant: a connection is registered (and emits `Connected`) only after its peer proved
//! its key, negotiated this build's protocol version and passed the admission handshake on
//! both sides (`handshake.rs`); `Disconnected` is emitted only here,
//! after every reader of the connection has finished, so no message can follow it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use quinn::{Connection, ConnectionError, RecvStream, VarInt};
use tokio::sync::Semaphore;

use crate::codec::{self, CLOSE_VERSION};
use crate::endpoint::{
    CLOSE_FRAME_TOO_LARGE, CLOSE_NORMAL, CLOSE_UNDECODABLE, ConnEntry, ConnId, DIAL_TIMEOUT,
    FrameKind, NetError, NetEvent, READERS_PER_CONN, Shared, lock,
};
use crate::handshake::{self, Admitted};
use crate::tls::{self, NodeId};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn write_frame(
    conn: &Connection,
    frame: Vec<u8>,
    priority: i32,
) -> Result<(), BoxError> {
    let mut stream = conn.open_uni().await?;
    if priority != 0 {
        stream.set_priority(priority)?;
    }
    let len = u32::try_from(frame.len())?;
    // Handed over as owned buffers: quinn queues them without copying the frame again.
    let mut chunks = [
        bytes::Bytes::copy_from_slice(&len.to_be_bytes()),
        bytes::Bytes::from(frame),
    ];
    stream.write_all_chunks(&mut chunks).await?;
    stream.finish()?;
    if let Some(code) = stream.stopped().await? {
        return Err(format!("peer stopped the stream with code {code}").into());
    }
    Ok(())
}

/// Dials `addr` and registers the connection (which emits `Connected`).
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    expected: Option<NodeId>,
) -> Result<(ConnId, Connection), NetError> {
    let connecting = match expected {
        None => shared.endpoint.connect(addr, tls::SERVER_NAME),
        Some(node) => shared.endpoint.connect_with(
            tls::quinn_client_config(&shared.identity, Some(node))?,
            addr,
            tls::SERVER_NAME,
        ),
    }
    .map_err(|error| NetError::Dial { addr, error })?;
    let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| NetError::DialTimeout { addr })?
        .map_err(|error| NetError::Handshake { addr, error })?;
    if let Some(reason) = refuse_version(&conn) {
        tracing::warn!(%addr, "{reason}");
        return Err(NetError::Version { addr, reason });
    }
    let node = tls::peer_node_id(&conn)?;
    let admitted = handshake::outbound(shared, &conn, node, addr).await?;
    Ok((register(shared, conn.clone(), node, true, admitted), conn))
}

pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let task_shared = shared.clone();
        let task = async move {
            let shared = task_shared;
            let remote = incoming.remote_address();
            let conn = match tokio::time::timeout(DIAL_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return tracing::debug!(%remote, "inbound handshake failed: {e}"),
                Err(_) => return tracing::debug!(%remote, "inbound handshake timed out"),
            };
            if let Some(reason) = refuse_version(&conn) {
                return tracing::warn!(%remote, "{reason}");
            }
            match tls::peer_node_id(&conn) {
                Ok(node) => {
                    if let Some(admitted) = handshake::inbound(&shared, &conn, node, remote).await {
                        register(&shared, conn, node, false, admitted);
                    }
                }
                Err(e) => conn.close(VarInt::from_u32(CLOSE_NORMAL), format!("{e}").as_bytes()),
            }
        };
        shared.rt.spawn(task);
    }
}

/// Closes `conn` with [`CLOSE_VERSION`] and says why, unless it negotiated this build's
/// protocol version.
fn refuse_version(conn: &Connection) -> Option<String> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let reason = codec::refuse_version(alpn.as_deref())?;
    conn.close(VarInt::from_u32(CLOSE_VERSION), reason.as_bytes());
    Some(reason)
}

fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn register(
    shared: &Arc<Shared>,
    conn: Connection,
    node: NodeId,
    outbound: bool,
    admitted: Admitted,
) -> ConnId {
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let addr = normalize(conn.remote_address());
    let local_reason = Arc::new(OnceLock::new());
    let role = admitted.role;
    let entry = ConnEntry {
        conn: conn.clone(),
        node,
        addr,
        sends: Arc::new(Semaphore::new(shared.cfg.max_inflight_sends_per_conn)),
        local_reason: local_reason.clone(),
        hello: admitted.hello,
    };
    {
        let mut conns = lock(&shared.conns);
        // A recheck ran while this one was being judged: judge it again under the new policy
        // (it is then closed like any connection a recheck refuses).
        if shared.admit_generation.load(Ordering::SeqCst) != admitted.generation {
            shared.rejudge(id, &entry);
        }
        conns.insert(id, entry);
    }
    shared.counters.connection_opened();
    tracing::debug!(conn = %id, node = %node.short(), %addr, outbound, ?role, "connected");
    let connected = NetEvent::Connected {
        conn: id,
        node,
        addr,
        outbound,
        role,
    };
    let task = run_conn(shared.clone(), id, conn, node, connected, local_reason);
    shared.rt.spawn(task);
    id
}

/// Emits `Connected`, accepts streams until the connection ends, waits for its readers,
/// then emits `Disconnected` — the only place either event is sent for this connection.
async fn run_conn(
    shared: Arc<Shared>,
    id: ConnId,
    conn: Connection,
    node: NodeId,
    connected: NetEvent,
    local_reason: Arc<OnceLock<String>>,
) {
    let _ = shared.events.send(connected).await;
    let readers = Arc::new(Semaphore::new(READERS_PER_CONN));
    let error = loop {
        let Ok(permit) = readers.clone().acquire_owned().await else {
            unreachable!("the reader semaphore is never closed")
        };
        match conn.accept_uni().await {
            Ok(stream) => {
                let reader = read_frame(
                    shared.clone(),
                    id,
                    conn.clone(),
                    stream,
                    local_reason.clone(),
                );
                shared.rt.spawn(async move {
                    reader.await;
                    drop(permit);
                });
            }
            Err(e) => break e,
        }
    };
    // All permits back == every reader finished, so no Frame can follow Disconnected.
    let _ = readers.acquire_many(READERS_PER_CONN as u32).await;
    lock(&shared.conns).remove(&id);
    shared.counters.connection_closed();
    let reason = describe(&error, local_reason.get(), *shared.shutdown.borrow());
    tracing::debug!(conn = %id, node = %node.short(), "disconnected: {reason}");
    let _ = shared
        .events
        .send(NetEvent::Disconnected {
            conn: id,
            node,
            reason,
        })
        .await;
}

fn describe(error: &ConnectionError, local: Option<&String>, shutting_down: bool) -> String {
    match error {
        ConnectionError::ApplicationClosed(close) if close.reason.is_empty() => {
            format!("closed by peer (code {})", close.error_code)
        }
        ConnectionError::ApplicationClosed(close) => {
            format!("closed by peer: {}", String::from_utf8_lossy(&close.reason))
        }
        ConnectionError::LocallyClosed => match local {
            Some(reason) => format!("closed locally: {reason}"),
            None if shutting_down => "closed locally: endpoint shut down".to_string(),
            None => "closed locally".to_string(),
        },
        other => other.to_string(),
    }
}

/// Reads one frame from `stream`. An oversized length closes the whole connection.
async fn read_frame(
    shared: Arc<Shared>,
    id: ConnId,
    conn: Connection,
    mut stream: RecvStream,
    local_reason: Arc<OnceLock<String>>,
) {
    let mut header = [0u8; 4];
    if let Err(e) = stream.read_exact(&mut header).await {
        return tracing::debug!(conn = %id, "stream without a frame header: {e}");
    }
    let len = u32::from_be_bytes(header) as usize;
    let max = shared.cfg.max_frame;
    if len > max {
        let reason = format!("frame of {len} bytes exceeds the maximum of {max} bytes");
        tracing::warn!(conn = %id, "closing connection: {reason}");
        let _ = local_reason.set(reason.clone());
        conn.close(VarInt::from_u32(CLOSE_FRAME_TOO_LARGE), reason.as_bytes());
        return;
    }
    match stream.read_to_end(len).await {
        Ok(bytes) if bytes.len() == len => match codec::decode(&bytes, max) {
            Ok(msg) => {
                shared.counters.received(FrameKind::of(&msg), len);
                let _ = shared
                    .events
                    .send(NetEvent::Message { conn: id, msg })
                    .await;
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(conn = %id, "closing connection: {reason}");
                let _ = local_reason.set(reason.clone());
                conn.close(VarInt::from_u32(CLOSE_UNDECODABLE), reason.as_bytes());
            }
        },
        Ok(bytes) => {
            tracing::debug!(conn = %id, "stream ended after {} of {len} bytes", bytes.len())
        }
        Err(e) => tracing::debug!(conn = %id, "dropping frame of {len} bytes: {e}"),
    }
}
