//! In-process WAN link emulation at the quinn socket layer (no `tc netem` needed).
//!
//! [`EmulatedSocket`] wraps the real tokio UDP socket and shapes the **egress** path of one
//! endpoint: every outgoing datagram may be dropped (`loss`), is serialised through a virtual
//! link of `rate_bps` with a bounded drop-tail queue (`queue_bytes`), then delayed by
//! `delay ± jitter`. Ingress is untouched, so when both peers emulate their own egress the
//! round-trip time is `2 × delay` plus serialisation.
//!
//! Invariants:
//! - **Order is preserved.** Jitter never reorders datagrams (a release time is never before
//!   the previous one), like a real serial link; QUIC would otherwise see spurious losses.
//! - **The rate cap is a virtual clock.** `link_free_at` advances by `bytes × 8 / rate` per
//!   accepted datagram (UDP payload bytes; IP/UDP headers are not counted), independent of
//!   timer granularity, so the long-run rate never exceeds the cap. A datagram that would make
//!   the backlog (`(link_free_at − now) × rate`) exceed `queue_bytes` is dropped (tail drop).
//! - **Deterministic decisions.** Loss and jitter draws come from a ChaCha RNG seeded with
//!   [`LinkModel::seed`], in the order quinn hands datagrams to the socket.
//! - **No segmentation offload** while emulating: `max_transmit_segments() == 1`, so every
//!   datagram is shaped individually.
//! - Delayed datagrams are sent by one background task per socket; it drains what is already
//!   queued and ends once the socket (and so its queue sender) is dropped.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Endpoint, EndpointConfig, Runtime, ServerConfig, TokioRuntime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Egress shaping of one endpoint. [`Default`] shapes nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkModel {
    /// One-way delay added to every outgoing datagram.
    pub delay: Duration,
    /// Each datagram's delay is drawn uniformly from `delay ± jitter` (never below zero, and
    /// never reordering datagrams).
    pub jitter: Duration,
    /// Probability in `[0, 1]` of dropping an outgoing datagram.
    pub loss: f64,
    /// Upload bandwidth cap in bits per second; `None` = unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes the bottleneck queue holds before dropping (only with `rate_bps`). Default 256 KiB.
    pub queue_bytes: usize,
    /// Seed of the per-socket RNG (loss and jitter draws).
    pub seed: u64,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_bytes: 256 * 1024,
            seed: 0,
        }
    }
}

impl LinkModel {
    fn validate(&self) -> io::Result<()> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("link loss {} is not a probability in [0, 1]", self.loss),
            ));
        }
        if self.rate_bps == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "link rate_bps must be > 0 (use None for unlimited)",
            ));
        }
        Ok(())
    }
}

/// Counters of one emulated socket (datagrams as handed over by quinn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub queue_dropped: u64,
}

/// A quinn endpoint on `socket` whose egress is shaped by `link`. `server` makes it accept
/// connections. Must be called inside a tokio runtime.
pub fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<ServerConfig>,
    link: LinkModel,
) -> io::Result<Endpoint> {
    let runtime = Arc::new(TokioRuntime);
    let socket = EmulatedSocket::new(runtime.wrap_udp_socket(socket)?, link)?;
    Endpoint::new_with_abstract_socket(EndpointConfig::default(), server, socket, runtime)
}

/// A dial-only shaped endpoint on an ephemeral port: `[::]:0` (dual-stack where the OS
/// default allows it), falling back to `0.0.0.0:0`.
pub fn client_endpoint(link: LinkModel) -> io::Result<Endpoint> {
    let socket = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .or_else(|_| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?;
    endpoint(socket, None, link)
}

/// A datagram waiting for its release time.
struct Pending {
    release: Instant,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
    contents: Vec<u8>,
}

struct State {
    rng: ChaCha8Rng,
    /// When the virtual link has serialised everything accepted so far.
    link_free_at: Instant,
    /// Release time of the last queued datagram (keeps jittered releases in order).
    last_release: Instant,
    stats: LinkStats,
}

/// [`AsyncUdpSocket`] shaping egress per [`LinkModel`]; see the module docs.
pub struct EmulatedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    model: LinkModel,
    state: Mutex<State>,
    queue: mpsc::UnboundedSender<Pending>,
}

impl fmt::Debug for EmulatedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedSocket")
            .field("inner", &self.inner)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl EmulatedSocket {
    /// Wraps `inner` and spawns its release task. Must be called inside a tokio runtime.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, model: LinkModel) -> io::Result<Arc<Self>> {
        model.validate()?;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("link emulation needs a tokio runtime: {e}")))?;
        let (queue, rx) = mpsc::unbounded_channel();
        rt.spawn(release_loop(inner.clone(), rx));
        let now = Instant::now();
        Ok(Arc::new(EmulatedSocket {
            inner,
            state: Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(model.seed),
                link_free_at: now,
                last_release: now,
                stats: LinkStats::default(),
            }),
            model,
            queue,
        }))
    }

    pub fn stats(&self) -> LinkStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies loss, rate and delay to one datagram and queues it (or drops it).
    fn shape(&self, transmit: &Transmit, datagram: &[u8]) {
        let m = &self.model;
        let now = Instant::now();
        let mut st = self.lock();
        st.stats.sent += 1;
        if m.loss > 0.0 && st.rng.gen_bool(m.loss) {
            st.stats.lost += 1;
            return;
        }
        let mut release = now;
        if let Some(rate) = m.rate_bps {
            let start = st.link_free_at.max(now);
            let backlog = (start - now).as_secs_f64() * rate as f64 / 8.0;
            if backlog + datagram.len() as f64 > m.queue_bytes as f64 {
                st.stats.queue_dropped += 1;
                return;
            }
            let tx = Duration::from_secs_f64(datagram.len() as f64 * 8.0 / rate as f64);
            st.link_free_at = start + tx;
            release = st.link_free_at;
        }
        let mut delay = m.delay;
        if !m.jitter.is_zero() {
            let j = m.jitter.as_secs_f64();
            let offset = st.rng.gen_range(-j..=j);
            delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
        }
        release = (release + delay).max(st.last_release);
        st.last_release = release;
        let pending = Pending {
            release,
            destination: transmit.destination,
            ecn: transmit.ecn,
            src_ip: transmit.src_ip,
            contents: datagram.to_vec(),
        };
        // Queued while holding the lock, so the channel order is the release order.
        let _ = self.queue.send(pending);
    }
}

impl AsyncUdpSocket for EmulatedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        // `try_send` never reports `WouldBlock` (the release task waits for writability).
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        match transmit.segment_size {
            Some(size) if size > 0 && size < transmit.contents.len() => {
                for datagram in transmit.contents.chunks(size) {
                    self.shape(transmit, datagram);
                }
            }
            _ => self.shape(transmit, transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends queued datagrams at their release times, in order. Ends when the socket is dropped
/// and everything already queued was sent.
async fn release_loop(inner: Arc<dyn AsyncUdpSocket>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut poller = inner.clone().create_io_poller();
    let mut due: VecDeque<Pending> = VecDeque::new();
    while let Some(first) = rx.recv().await {
        due.push_back(first);
        while let Some(head) = due.front() {
            tokio::time::sleep_until(head.release).await;
            // Everything already queued with the same release time goes out now as well.
            let now = Instant::now();
            while let Ok(p) = rx.try_recv() {
                due.push_back(p);
            }
            while due.front().is_some_and(|p| p.release <= now) {
                let Some(p) = due.pop_front() else { break };
                send(inner.as_ref(), &mut poller, &p).await;
            }
        }
    }
}

async fn send(
    inner: &dyn AsyncUdpSocket,
    poller: &mut Pin<Box<dyn quinn::UdpPoller>>,
    p: &Pending,
) {
    let transmit = Transmit {
        destination: p.destination,
        ecn: p.ecn,
        contents: &p.contents,
        segment_size: None,
        src_ip: p.src_ip,
    };
    loop {
        match inner.try_send(&transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await {
                    return tracing::debug!("emulated link: socket not writable: {e}");
                }
            }
            // Like a real link: a failed send is a lost datagram, QUIC recovers.
            Err(e) => return tracing::debug!(dst = %p.destination, "emulated link send: {e}"),
            Ok(()) => return,
        }
    }
}
