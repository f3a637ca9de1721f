//! QUIC transport of the gossip mesh: an actor owning one quinn [`Endpoint`] that moves
//! opaque frames between authenticated peers. The protocol core (sans-IO) decodes frames.
//!
//! Wire format: every frame travels on its own unidirectional stream as a big-endian `u32`
//! length followed by exactly that many bytes, then FIN. Frames on different streams may be
//! delivered in any order.
//!
//! Invariants:
//! - **Frames are bounded.** A length above [`NetConfig::max_frame`] closes the whole
//!   connection with reason `frame of N bytes exceeds the maximum of M bytes` before any of the
//!   body is read; a stream whose body is shorter or longer than announced is dropped. Memory
//!   is bounded by QUIC flow control, a fixed number of concurrent readers per connection, the
//!   bounded event channel (a slow consumer backpressures readers, which backpressures peers),
//!   and a bounded number of in-flight sends per connection ([`SendError::Busy`]).
//!   Worst case ≈ `(event_capacity + connections × 16) × max_frame`.
//! - **Nothing here trusts frame contents**; they are handed over as bytes.
//! - **Identity proves key possession**: the [`NodeId`] in [`NetEvent::Connected`] comes from
//!   a certificate whose TLS 1.3 handshake signature was verified (see [`crate::tls`]).
//! - Per connection: exactly one `Connected`, then its `Frame`s, then exactly one
//!   `Disconnected` (emitted after every reader of that connection has finished).
//!
//! Shutdown: [`NetHandle`] is a cheap clone around a drop guard. When the last clone is dropped
//! the endpoint is closed (peers see reason `endpoint shut down`), the accept and
//! `keep_dialing` loops stop, every connection task emits its `Disconnected`, and once all
//! tasks are gone the event channel closes (the receiver yields `None`). Dropping cannot
//! await; quinn's driver keeps flushing CONNECTION_CLOSE in the background while the runtime
//! lives. Before exiting the process, call [`NetHandle::shutdown`], which also awaits
//! `wait_idle` for at most [`SHUTDOWN_GRACE`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, VarInt};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::tls::{self, Identity, NodeId};

pub mod emulator;
pub use emulator::LinkModel;

/// Application close code: closed on request ([`NetHandle::close`]).
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer announced a frame above our maximum.
pub const CLOSE_FRAME_TOO_LARGE: u32 = 1;
/// Application close code: the endpoint is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 2;
/// Upper bound on how long [`NetHandle::shutdown`] waits for peers to acknowledge closes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const READERS_PER_CONN: usize = 16;
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Largest frame accepted (and sent). Default 1 MiB + 64 KiB.
    pub max_frame: usize,
    /// Capacity of the event channel. Default 1024.
    pub event_capacity: usize,
    /// Sends not yet acknowledged by the peer, per connection. Default 64.
    pub max_inflight_sends_per_conn: usize,
    /// Emulated WAN link on this endpoint's egress (tests and benches). Default `None`.
    pub link: Option<LinkModel>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            max_frame: 1024 * 1024 + 64 * 1024,
            event_capacity: 1024,
            max_inflight_sends_per_conn: 64,
            link: None,
        }
    }
}

/// Local handle of one connection; never reused within a [`Net`] instance.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    Connected {
        conn: ConnId,
        node: NodeId,
        addr: SocketAddr,
        outbound: bool,
    },
    Frame {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Disconnected {
        conn: ConnId,
        node: NodeId,
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("connection is closed or unknown")]
    Closed,
    #[error("too many sends in flight on this connection")]
    Busy,
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Constructors of the transport actor.
pub struct Net;

impl Net {
    /// Listens on `addr` (and dials from it). Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        cfg: NetConfig,
    ) -> Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
        let rt = runtime()?;
        let server = tls::quinn_server_config(identity)?;
        let endpoint = match &cfg.link {
            None => Endpoint::server(server, addr),
            Some(link) => std::net::UdpSocket::bind(addr)
                .and_then(|socket| emulator::endpoint(socket, Some(server), link.clone())),
        }
        .with_context(|| format!("cannot bind the QUIC endpoint on {addr}"))?;
        let (handle, rx) = start(endpoint, identity, cfg, rt)?;
        let shared = handle.guard.shared.clone();
        shared.rt.spawn(accept_loop(shared.clone()));
        Ok((handle, rx))
    }

    /// Dial-only endpoint on an ephemeral port: dual-stack `[::]:0`, falling back to
    /// `0.0.0.0:0` where IPv6 is unavailable.
    pub fn client(
        identity: &Identity,
        cfg: NetConfig,
    ) -> Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
        let rt = runtime()?;
        let endpoint = match &cfg.link {
            None => Endpoint::client((Ipv6Addr::UNSPECIFIED, 0).into())
                .or_else(|_| Endpoint::client(([0, 0, 0, 0], 0).into())),
            Some(link) => emulator::client_endpoint(link.clone()),
        }
        .context("cannot bind a client QUIC endpoint")?;
        start(endpoint, identity, cfg, rt)
    }
}

fn runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().context("the QUIC transport needs a tokio runtime")
}

fn start(
    mut endpoint: Endpoint,
    identity: &Identity,
    cfg: NetConfig,
    rt: tokio::runtime::Handle,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
    if cfg.max_frame > u32::MAX as usize || cfg.event_capacity == 0 {
        bail!("invalid NetConfig: max_frame must fit in u32 and event_capacity must be > 0");
    }
    if cfg.max_inflight_sends_per_conn == 0 {
        bail!("invalid NetConfig: max_inflight_sends_per_conn must be > 0");
    }
    endpoint.set_default_client_config(tls::quinn_client_config(identity, None)?);
    let local_addr = endpoint
        .local_addr()
        .context("QUIC endpoint has no local address")?;
    let (events, rx) = mpsc::channel(cfg.event_capacity);
    let shared = Arc::new(Shared {
        endpoint,
        identity: identity.clone(),
        local_addr,
        cfg,
        events,
        conns: Mutex::new(HashMap::new()),
        dialing: Mutex::new(HashSet::new()),
        next_id: AtomicU64::new(1),
        shutdown: watch::channel(false).0,
        rt,
    });
    let guard = Arc::new(Guard { shared });
    Ok((NetHandle { guard }, rx))
}

/// State shared by the handle and all tasks. Tasks hold `Arc<Shared>`, never the [`Guard`].
struct Shared {
    endpoint: Endpoint,
    identity: Identity,
    local_addr: SocketAddr,
    cfg: NetConfig,
    events: mpsc::Sender<NetEvent>,
    conns: Mutex<HashMap<ConnId, ConnEntry>>,
    dialing: Mutex<HashSet<SocketAddr>>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    rt: tokio::runtime::Handle,
}

struct ConnEntry {
    conn: Connection,
    node: NodeId,
    addr: SocketAddr,
    sends: Arc<Semaphore>,
    /// Why we closed it, if we did; set before `Connection::close`.
    local_reason: Arc<OnceLock<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn begin_shutdown(&self) {
        if !self.shutdown.send_replace(true) {
            self.endpoint
                .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint shut down");
        }
    }
}

struct Guard {
    shared: Arc<Shared>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

/// Cheap, cloneable handle; the endpoint shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct NetHandle {
    guard: Arc<Guard>,
}

impl fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.guard.shared;
        write!(
            f,
            "NetHandle({} on {})",
            s.identity.node_id().short(),
            s.local_addr
        )
    }
}

impl NetHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.guard.shared
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    pub fn node_id(&self) -> NodeId {
        self.shared().identity.node_id()
    }

    /// One connection attempt (bounded by a 10 s timeout); emits `Connected` on success.
    pub async fn dial(&self, addr: SocketAddr) -> Result<ConnId> {
        Ok(connect(self.shared(), addr, None).await?.0)
    }

    /// Like [`dial`](Self::dial), but the handshake fails unless the peer proves `node`.
    pub async fn dial_expecting(&self, addr: SocketAddr, node: NodeId) -> Result<ConnId> {
        Ok(connect(self.shared(), addr, Some(node)).await?.0)
    }

    /// Keeps one connection to `addr` until shutdown, redialing with backoff (250 ms doubling
    /// to 5 s; reset after a connection lived ≥ 5 s). Idempotent per address.
    pub fn keep_dialing(&self, addr: SocketAddr) {
        let shared = self.shared();
        if *shared.shutdown.borrow() || !lock(&shared.dialing).insert(addr) {
            return;
        }
        shared.rt.spawn(keep_dialing_loop(shared.clone(), addr));
    }

    /// Queues `frame` on a new unidirectional stream. Never blocks; see [`SendError`].
    pub fn send(&self, conn: ConnId, frame: Vec<u8>) -> Result<(), SendError> {
        self.send_with_priority(conn, frame, 0)
    }

    /// [`send`](Self::send) with a stream priority: on one connection, data of streams with a
    /// higher priority is sent first (the mesh sends its small control messages ahead of the
    /// chunks queued on the same connection).
    pub fn send_with_priority(
        &self,
        conn: ConnId,
        frame: Vec<u8>,
        priority: i32,
    ) -> Result<(), SendError> {
        let shared = self.shared();
        let max = shared.cfg.max_frame;
        if frame.len() > max {
            return Err(SendError::TooLarge {
                len: frame.len(),
                max,
            });
        }
        let (connection, sends) = {
            let conns = lock(&shared.conns);
            let entry = conns.get(&conn).ok_or(SendError::Closed)?;
            (entry.conn.clone(), entry.sends.clone())
        };
        if connection.close_reason().is_some() {
            return Err(SendError::Closed);
        }
        let permit = sends.try_acquire_owned().map_err(|_| SendError::Busy)?;
        shared.rt.spawn(async move {
            // The permit is held until the peer acknowledged the whole stream.
            let _permit = permit;
            let len = frame.len();
            if let Err(e) = write_frame(&connection, frame, priority).await {
                tracing::debug!(%conn, "frame of {len} bytes not delivered: {e}");
            }
        });
        Ok(())
    }

    /// Closes `conn`; the peer's `Disconnected.reason` carries `reason`.
    pub fn close(&self, conn: ConnId, reason: &str) {
        let conns = lock(&self.shared().conns);
        if let Some(entry) = conns.get(&conn) {
            let _ = entry.local_reason.set(reason.to_string());
            entry
                .conn
                .close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
        }
    }

    /// Open connections: id, verified peer identity, peer address.
    pub fn connections(&self) -> Vec<(ConnId, NodeId, SocketAddr)> {
        let conns = lock(&self.shared().conns);
        let mut out: Vec<_> = conns
            .iter()
            .filter(|(_, e)| e.conn.close_reason().is_none())
            .map(|(id, e)| (*id, e.node, e.addr))
            .collect();
        out.sort_unstable_by_key(|(id, _, _)| *id);
        out
    }

    /// Graceful shutdown: closes the endpoint (as dropping the last handle would) and waits at
    /// most [`SHUTDOWN_GRACE`] for peers to acknowledge. Other clones become inert.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.begin_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, shared.endpoint.wait_idle()).await;
    }
}

async fn write_frame(conn: &Connection, frame: Vec<u8>, priority: i32) -> Result<()> {
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
        bail!("peer stopped the stream with code {code}");
    }
    Ok(())
}

/// Dials `addr` and registers the connection (which emits `Connected`).
async fn connect(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    expected: Option<NodeId>,
) -> Result<(ConnId, Connection)> {
    let connecting = match expected {
        None => shared.endpoint.connect(addr, tls::SERVER_NAME),
        Some(node) => shared.endpoint.connect_with(
            tls::quinn_client_config(&shared.identity, Some(node))?,
            addr,
            tls::SERVER_NAME,
        ),
    }
    .with_context(|| format!("cannot dial {addr}"))?;
    let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .with_context(|| format!("dialing {addr} timed out"))?
        .with_context(|| format!("handshake with {addr} failed"))?;
    let node = tls::peer_node_id(&conn)?;
    Ok((register(shared, conn.clone(), node, true), conn))
}

async fn accept_loop(shared: Arc<Shared>) {
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
            match tls::peer_node_id(&conn) {
                Ok(node) => {
                    register(&shared, conn, node, false);
                }
                Err(e) => conn.close(VarInt::from_u32(CLOSE_NORMAL), format!("{e}").as_bytes()),
            }
        };
        shared.rt.spawn(task);
    }
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

fn register(shared: &Arc<Shared>, conn: Connection, node: NodeId, outbound: bool) -> ConnId {
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let addr = normalize(conn.remote_address());
    let local_reason = Arc::new(OnceLock::new());
    let entry = ConnEntry {
        conn: conn.clone(),
        node,
        addr,
        sends: Arc::new(Semaphore::new(shared.cfg.max_inflight_sends_per_conn)),
        local_reason: local_reason.clone(),
    };
    lock(&shared.conns).insert(id, entry);
    tracing::debug!(conn = %id, node = %node.short(), %addr, outbound, "connected");
    let task = run_conn(shared.clone(), id, conn, node, addr, outbound, local_reason);
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
    addr: SocketAddr,
    outbound: bool,
    local_reason: Arc<OnceLock<String>>,
) {
    let connected = NetEvent::Connected {
        conn: id,
        node,
        addr,
        outbound,
    };
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
        Ok(bytes) if bytes.len() == len => {
            let _ = shared
                .events
                .send(NetEvent::Frame { conn: id, bytes })
                .await;
        }
        Ok(bytes) => {
            tracing::debug!(conn = %id, "stream ended after {} of {len} bytes", bytes.len())
        }
        Err(e) => tracing::debug!(conn = %id, "dropping frame of {len} bytes: {e}"),
    }
}

async fn keep_dialing_loop(shared: Arc<Shared>, addr: SocketAddr) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            r = connect(&shared, addr, None) => r,
            _ = shutdown_signal(&mut shutdown) => break,
        };
        match attempt {
            Ok((_, conn)) => {
                if failures > 0 {
                    tracing::info!(%addr, "reconnected after {failures} failed attempts");
                }
                failures = 0;
                let started = Instant::now();
                tokio::select! {
                    _ = conn.closed() => {}
                    _ = shutdown_signal(&mut shutdown) => break,
                }
                if started.elapsed() >= BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%addr, "cannot reach peer, will keep retrying: {e:#}");
                } else {
                    tracing::debug!(%addr, failures, "redial failed: {e:#}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown_signal(&mut shutdown) => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    lock(&shared.dialing).remove(&addr);
}

async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}

#[cfg(test)]
mod tests;
