//! The endpoint actor: one quinn [`Endpoint`] that moves [`Message`]s between authenticated
//! peers. Callers send and receive messages; framing and the codec ([`crate::codec`]) stay here.
//!
//! Wire format: every message travels as one frame on its own unidirectional stream: a
//! big-endian `u32` length followed by exactly that many bytes, then FIN. Frames on different
//! streams may be delivered in any order. Control messages are sent at a higher stream
//! priority than chunks, so they overtake the chunks queued on the same connection.
//!
//! Invariants:
//! - **Frames are bounded.** A length above [`NetConfig::max_frame`] closes the whole
//!   connection with reason `frame of N bytes exceeds the maximum of M bytes` before any of the
//!   body is read; a stream whose body is shorter or longer than announced is dropped; a frame
//!   that does not decode closes the connection with the decoder's reason. Memory
//!   is bounded by QUIC flow control, a fixed number of concurrent readers per connection, the
//!   bounded event channel (a slow consumer backpressures readers, which backpressures peers),
//!   and a bounded number of in-flight sends per connection ([`SendError::Busy`]).
//!   Worst case ≈ `(event_capacity + connections × 16) × max_frame`.
//! - **Nothing here trusts message contents**: a message that decoded is handed over as it is;
//!   the protocol core verifies what it means.
//! - **Identity proves key possession**: the [`NodeId`] in [`NetEvent::Connected`] comes from
//!   a certificate whose TLS 1.3 handshake signature was verified (see [`crate::tls`]).
//! - **One protocol version**: a connection that negotiated another version than
//!   [`crate::codec::ALPN`] is closed with a reason that says to upgrade, and never emits an
//!   event.
//! - **Admission before registration**: after the version check each side sends one
//!   [`Hello`] and judges the peer's with [`NetConfig::admit`]; a refused peer is closed with
//!   [`crate::codec::CLOSE_ADMISSION`] and the reason, is never registered and emits no event
//!   (its dial fails with [`NetError::Refused`]). [`NetHandle::recheck`] judges every open
//!   connection again (a revocation, an expired certificate) and closes the refused ones.
//! - Per connection: exactly one `Connected`, then its `Message`s, then exactly one
//!   `Disconnected` (emitted after every reader of that connection has finished).
//!
//! Counters: [`NetHandle::counters`] shares the endpoint's [`NetCounters`] (frames and bytes in
//! and out by kind, open connections): relaxed atomics, one add per frame, no lock.
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

use fleetcast_protocol::trust::{Hello, PeerRole};
use fleetcast_protocol::wire::Message;
use quinn::{Connection, ConnectionError, Endpoint, VarInt};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::codec::{self, CLOSE_ADMISSION, MAX_FRAME};
use crate::conn;
use crate::emulator::{self, LinkModel};
use crate::tls::{self, Identity, NodeId, TlsError};

/// Application close code: closed on request ([`NetHandle::close`]).
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer announced a frame above our maximum.
pub const CLOSE_FRAME_TOO_LARGE: u32 = 1;
/// Application close code: the endpoint is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 2;
/// Application close code: the peer sent a frame that does not decode as a message.
pub const CLOSE_UNDECODABLE: u32 = 4;
/// Upper bound on how long [`NetHandle::shutdown`] waits for peers to acknowledge closes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
pub(crate) const READERS_PER_CONN: usize = 16;
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Stream priority of chunk frames ([`Message::is_payload`]); control frames go at
/// [`CONTROL_PRIORITY`], which quinn sends first on a connection.
pub const PAYLOAD_PRIORITY: i32 = 0;
/// Stream priority of every frame that is not a chunk.
pub const CONTROL_PRIORITY: i32 = 1;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Who may connect, and as what: judged at the handshake on the peer's TLS-proven node id and
/// its [`Hello`], and again by [`NetHandle::recheck`]. `Err` carries the reason the peer is
/// told (the close reason) and this side logs.
pub trait Admit: Send + Sync + fmt::Debug {
    fn admit(&self, node: NodeId, hello: &Hello) -> Result<PeerRole, String>;
}

/// Admits everyone as what it says it is (a node claim is a node, an operator claim an
/// operator). The default; agents pass their fleet's policy instead.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAdmission;

impl Admit for OpenAdmission {
    fn admit(&self, _node: NodeId, hello: &Hello) -> Result<PeerRole, String> {
        Ok(match hello {
            Hello::Node { .. } => PeerRole::Node,
            Hello::Operator => PeerRole::Operator,
        })
    }
}

#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Largest frame accepted (and sent). Default [`MAX_FRAME`] (1 MiB + 64 KiB).
    pub max_frame: usize,
    /// Capacity of the event channel. Default 1024.
    pub event_capacity: usize,
    /// Sends not yet acknowledged by the peer, per connection. Default 64.
    pub max_inflight_sends_per_conn: usize,
    /// Emulated WAN link on this endpoint's egress (tests and benches). Default `None`.
    pub link: Option<LinkModel>,
    /// The admission policy peers are judged by. Default [`OpenAdmission`].
    pub admit: Arc<dyn Admit>,
    /// What this side says it is in the handshake. Default `Hello::Node { cert: None }`.
    pub hello: Hello,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            max_frame: MAX_FRAME,
            event_capacity: 1024,
            max_inflight_sends_per_conn: 64,
            link: None,
            admit: Arc::new(OpenAdmission),
            hello: Hello::Node { cert: None },
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

#[derive(Clone, Debug, PartialEq)]
pub enum NetEvent {
    Connected {
        conn: ConnId,
        node: NodeId,
        addr: SocketAddr,
        outbound: bool,
        /// What the admission policy admitted the peer as.
        role: PeerRole,
    },
    Message {
        conn: ConnId,
        msg: Message,
    },
    Disconnected {
        conn: ConnId,
        node: NodeId,
        reason: String,
    },
}

/// Why a bind or a dial failed. Nothing is left behind: no endpoint, no connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the QUIC transport needs a tokio runtime")]
    NoRuntime,
    #[error("invalid NetConfig: {0}")]
    Config(&'static str),
    #[error("cannot bind the QUIC endpoint on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot bind a client QUIC endpoint: {0}")]
    BindClient(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot dial {addr}: {error}")]
    Dial {
        addr: SocketAddr,
        error: quinn::ConnectError,
    },
    #[error("dialing {addr} timed out")]
    DialTimeout { addr: SocketAddr },
    #[error("handshake with {addr} failed: {error}")]
    Handshake {
        addr: SocketAddr,
        error: ConnectionError,
    },
    #[error("refused {addr}: {reason}")]
    Version { addr: SocketAddr, reason: String },
    /// The peer's admission policy refused this node; `reason` is the peer's, verbatim.
    #[error("{addr} refused this node: {reason}")]
    Refused { addr: SocketAddr, reason: String },
    /// This node's admission policy refused the peer it dialled.
    #[error("refused the peer at {addr}: {reason}")]
    RefusedPeer { addr: SocketAddr, reason: String },
    /// The hello exchange after the TLS handshake failed (timed out, did not decode, lost).
    #[error("admission handshake with {addr} failed: {reason}")]
    Hello { addr: SocketAddr, reason: String },
}

type Result<T, E = NetError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("connection is closed or unknown")]
    Closed,
    #[error("too many sends in flight on this connection")]
    Busy,
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("message cannot be encoded")]
    Unencodable,
}

/// What a frame carries, as the counters split it: chunk data ([`Message::is_payload`]) or
/// everything else (membership, gossip, announcements, requests, tallies, status).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Payload,
    Control,
}

impl FrameKind {
    /// Both kinds, in the order snapshots and labels list them.
    pub const ALL: [FrameKind; 2] = [FrameKind::Payload, FrameKind::Control];

    /// The kind of a frame sent at stream `priority` (what [`NetHandle::send`] picks).
    fn of_priority(priority: i32) -> Self {
        if priority == PAYLOAD_PRIORITY {
            FrameKind::Payload
        } else {
            FrameKind::Control
        }
    }

    pub(crate) fn of(msg: &Message) -> Self {
        if msg.is_payload() {
            FrameKind::Payload
        } else {
            FrameKind::Control
        }
    }

    /// `payload` or `control` (a metrics label value).
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Payload => "payload",
            FrameKind::Control => "control",
        }
    }
}

/// The transport's counters for one endpoint, shared by every task of it (and by whoever
/// holds the `Arc` from [`NetHandle::counters`], which does not keep the endpoint open).
///
/// Bytes are frame bytes: the 4-byte length prefix and the encoded message, not QUIC or UDP
/// overhead. A frame is counted sent once the peer acknowledged its whole stream, and received
/// once it decoded into a message (just before its [`NetEvent::Message`] is emitted). Updates
/// are relaxed atomic adds; the counters only go up (connections is a gauge).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Indexed by [`FrameKind`] as `usize` (payload, control).
    sent: [Traffic; 2],
    received: [Traffic; 2],
    connections: AtomicU64,
    /// Peers this endpoint's admission policy refused (at the handshake or a recheck).
    refused: AtomicU64,
    /// Times a peer's admission policy refused this endpoint.
    refused_by_peer: AtomicU64,
}

#[derive(Debug, Default)]
struct Traffic {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    fn add(&self, frame_len: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(FRAME_HEADER + frame_len as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The length prefix every frame carries on the wire.
const FRAME_HEADER: u64 = 4;

impl NetCounters {
    fn index(kind: FrameKind) -> usize {
        match kind {
            FrameKind::Payload => 0,
            FrameKind::Control => 1,
        }
    }

    /// A frame with a body of `frame_len` bytes was sent and acknowledged.
    pub(crate) fn sent(&self, kind: FrameKind, frame_len: usize) {
        self.sent[Self::index(kind)].add(frame_len);
    }

    /// A frame with a body of `frame_len` bytes was received and decoded.
    pub(crate) fn received(&self, kind: FrameKind, frame_len: usize) {
        self.received[Self::index(kind)].add(frame_len);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused_by_peer(&self) {
        self.refused_by_peer.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> NetSnapshot {
        let by_kind = |t: &[Traffic; 2]| ByKind {
            payload: t[Self::index(FrameKind::Payload)].snapshot(),
            control: t[Self::index(FrameKind::Control)].snapshot(),
        };
        NetSnapshot {
            sent: by_kind(&self.sent),
            received: by_kind(&self.received),
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            refused_by_peer: self.refused_by_peer.load(Ordering::Relaxed),
        }
    }
}

/// Frames and bytes of one direction and kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    pub frames: u64,
    pub bytes: u64,
}

/// Traffic of one direction, by [`FrameKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByKind {
    pub payload: TrafficSnapshot,
    pub control: TrafficSnapshot,
}

impl ByKind {
    pub fn get(&self, kind: FrameKind) -> TrafficSnapshot {
        match kind {
            FrameKind::Payload => self.payload,
            FrameKind::Control => self.control,
        }
    }
}

/// A point-in-time copy of [`NetCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetSnapshot {
    pub sent: ByKind,
    pub received: ByKind,
    /// Connections open now: registered (their `Connected` emitted or on its way) and not yet
    /// gone, of any role (neighbours, probes, clients).
    pub connections: u64,
    /// Peers this endpoint's admission policy refused (the reasons are the policy's: an
    /// agent counts them by kind itself).
    pub refused: u64,
    /// Times a peer refused this endpoint at the handshake.
    pub refused_by_peer: u64,
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
        .map_err(|error| NetError::Bind { addr, error })?;
        let (handle, rx) = start(endpoint, identity, cfg, rt)?;
        let shared = handle.guard.shared.clone();
        shared.rt.spawn(conn::accept_loop(shared.clone()));
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
        .map_err(NetError::BindClient)?;
        start(endpoint, identity, cfg, rt)
    }
}

fn runtime() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)
}

fn start(
    mut endpoint: Endpoint,
    identity: &Identity,
    cfg: NetConfig,
    rt: tokio::runtime::Handle,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>)> {
    if cfg.max_frame > u32::MAX as usize || cfg.event_capacity == 0 {
        return Err(NetError::Config(
            "max_frame must fit in u32 and event_capacity must be > 0",
        ));
    }
    if cfg.max_inflight_sends_per_conn == 0 {
        return Err(NetError::Config("max_inflight_sends_per_conn must be > 0"));
    }
    endpoint.set_default_client_config(tls::quinn_client_config(identity, None)?);
    let local_addr = endpoint.local_addr().map_err(NetError::BindClient)?;
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
        admit_generation: AtomicU64::new(0),
        counters: Arc::new(NetCounters::default()),
        shutdown: watch::channel(false).0,
        rt,
    });
    let guard = Arc::new(Guard { shared });
    Ok((NetHandle { guard }, rx))
}

/// State shared by the handle and all tasks. Tasks hold `Arc<Shared>`, never the [`Guard`].
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    pub(crate) identity: Identity,
    pub(crate) local_addr: SocketAddr,
    pub(crate) cfg: NetConfig,
    pub(crate) events: mpsc::Sender<NetEvent>,
    pub(crate) conns: Mutex<HashMap<ConnId, ConnEntry>>,
    pub(crate) dialing: Mutex<HashSet<SocketAddr>>,
    pub(crate) next_id: AtomicU64,
    /// Bumped by every [`NetHandle::recheck`]: a handshake judged under an older generation is
    /// judged again once registered, so no recheck can miss it.
    pub(crate) admit_generation: AtomicU64,
    pub(crate) counters: Arc<NetCounters>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) rt: tokio::runtime::Handle,
}

pub(crate) struct ConnEntry {
    pub(crate) conn: Connection,
    pub(crate) node: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) sends: Arc<Semaphore>,
    /// Why we closed it, if we did; set before `Connection::close`.
    pub(crate) local_reason: Arc<OnceLock<String>>,
    /// What the peer said at the handshake (judged again by [`NetHandle::recheck`]).
    pub(crate) hello: Hello,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Judges the open connection `entry` again; closes it with [`CLOSE_ADMISSION`] and the
    /// reason if the policy now refuses it. Returns whether it closed it.
    pub(crate) fn rejudge(&self, id: ConnId, entry: &ConnEntry) -> bool {
        if entry.conn.close_reason().is_some() {
            return false;
        }
        let Err(reason) = self.cfg.admit.admit(entry.node, &entry.hello) else {
            return false;
        };
        tracing::warn!(conn = %id, node = %entry.node.short(), addr = %entry.addr,
            "closing connection: admission refused: {reason}");
        self.counters.refused();
        let _ = entry.local_reason.set(reason.clone());
        entry
            .conn
            .close(VarInt::from_u32(CLOSE_ADMISSION), reason.as_bytes());
        true
    }

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

    /// This endpoint's traffic counters. Holding them does not keep the endpoint open.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.shared().counters.clone()
    }

    /// One connection attempt (bounded by a 10 s timeout); emits `Connected` on success.
    pub async fn dial(&self, addr: SocketAddr) -> Result<ConnId> {
        Ok(conn::connect(self.shared(), addr, None).await?.0)
    }

    /// Like [`dial`](Self::dial), but the handshake fails unless the peer proves `node`.
    pub async fn dial_expecting(&self, addr: SocketAddr, node: NodeId) -> Result<ConnId> {
        Ok(conn::connect(self.shared(), addr, Some(node)).await?.0)
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

    /// Encodes `msg` and queues it on a new unidirectional stream, at a higher priority than
    /// chunks unless it is one. Never blocks; see [`SendError`].
    pub fn send(&self, conn: ConnId, msg: &Message) -> Result<(), SendError> {
        let max = self.shared().cfg.max_frame;
        let frame = codec::encode(msg, max).map_err(|e| match e {
            codec::CodecError::TooLarge { size, max } => SendError::TooLarge { len: size, max },
            codec::CodecError::Undecodable { .. } => SendError::Unencodable,
        })?;
        let priority = match FrameKind::of(msg) {
            FrameKind::Payload => PAYLOAD_PRIORITY,
            FrameKind::Control => CONTROL_PRIORITY,
        };
        self.send_frame(conn, frame, priority)
    }

    /// Queues `frame` as it is, unencoded, at `priority` (on one connection, data of streams
    /// with a higher priority is sent first). [`send`](Self::send) is the way to talk to a
    /// peer; this is for tests and tools that play a peer sending damaged frames. The counters
    /// take a frame at [`PAYLOAD_PRIORITY`] for a chunk and any other for control.
    pub fn send_frame(&self, conn: ConnId, frame: Vec<u8>, priority: i32) -> Result<(), SendError> {
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
        let counters = shared.counters.clone();
        shared.rt.spawn(async move {
            // The permit is held until the peer acknowledged the whole stream.
            let _permit = permit;
            let len = frame.len();
            match conn::write_frame(&connection, frame, priority).await {
                Ok(()) => counters.sent(FrameKind::of_priority(priority), len),
                Err(e) => tracing::debug!(%conn, "frame of {len} bytes not delivered: {e}"),
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

    /// Judges every open connection again with [`NetConfig::admit`] (each with the [`Hello`]
    /// its peer sent) and closes those it now refuses with [`CLOSE_ADMISSION`] and the reason
    /// (their `Disconnected` follows as usual). Call it after the policy changed: a new root
    /// revoked a node, a certificate expired. Returns how many it closed.
    pub fn recheck(&self) -> usize {
        let shared = self.shared();
        shared.admit_generation.fetch_add(1, Ordering::SeqCst);
        let conns = lock(&shared.conns);
        conns
            .iter()
            .filter(|(id, entry)| shared.rejudge(**id, entry))
            .count()
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

async fn keep_dialing_loop(shared: Arc<Shared>, addr: SocketAddr) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            r = conn::connect(&shared, addr, None) => r,
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
