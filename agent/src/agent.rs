//! The agent: binds the QUIC and HTTP listeners, restores the cache, and runs the node actor.
//!
//! The node actor owns the protocol [`Node`] and is the only task that touches it. It shuttles:
//! network events become [`Input`]s, [`Output`]s become messages, chunk reads and commands to
//! the supervisor, and the node's timer is a `sleep_until`. The supervisor runs each
//! activation (compile or load the agent's own cached artifact, persist with a flush, smoke
//! check, swap, trial) and feeds the outcome back to the actor as an input.
//!
//! Trust: the actor feeds the node the wall clock ([`Input::Clock`]) at start and every
//! second; on [`Output::Roots`] it persists the roots and the time floor (flushed) before it
//! carries out any later output, gives the admission policy ([`FleetAdmission`]) the node's new
//! trust and rechecks every link (a revoked peer is cut off); every minute it rechecks them
//! again (certificates expire).
//!
//! Shutdown is by drop guard: dropping the [`AgentHandle`] (or calling
//! [`AgentHandle::shutdown`]) stops the actor and the HTTP server; the QUIC endpoint closes when
//! the last net handle drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcast_protocol::Event;
use fleetcast_protocol::node::{Input, Node, NodeConfig, Output};
use fleetcast_protocol::trust::{Hello, SignedRoot};
use fleetcast_protocol::wire::{ContentMsg, Message, NodeId, NodeStatus};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use fleetcast_net::{ConnId, Identity, Net, NetConfig, NetEvent, NetHandle};

use crate::config::AgentConfig;
use crate::mesh_metrics::{ChunkSource, MeshMetrics};
use crate::runtime::{Runtime, RuntimeStatsSnapshot};
use crate::store::Store;
use crate::supervisor::{Command, SupervisorConfig, SupervisorHandle};
use crate::trust::{ExpiryWatch, FleetAdmission};

/// How often the node is told the wall clock.
const CLOCK_EVERY: Duration = Duration::from_secs(1);
/// How often every link is judged again (certificates expire).
const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Why an agent did not start, or stopped answering. A failed start leaves nothing running:
/// whatever was opened or bound is closed again.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Key(#[from] fleetcast_net::keys::KeyError),
    #[error(transparent)]
    Identity(#[from] fleetcast_net::tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::EngineError),
    #[error(transparent)]
    Net(#[from] fleetcast_net::NetError),
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error(
        "cannot listen for {what} on {addr}: {error}{}",
        listen_fix(error, flag, key)
    )]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
        /// The flag and the config key that move it, for the fix the message names.
        flag: &'static str,
        key: &'static str,
    },
    #[error("restoring the cache failed: {0}")]
    Restore(String),
    #[error("agent has stopped")]
    Stopped,
}

type Result<T, E = AgentError> = std::result::Result<T, E>;

/// What to do about a listen address that cannot be had: name the flag that moves it.
fn listen_fix(error: &std::io::Error, flag: &str, key: &str) -> String {
    let off = if flag == "--admin" {
        format!(", or `{flag} off` to run without it")
    } else {
        String::new()
    };
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another process (another fleetcast-agent?) holds it: pick a free one with `{flag} ADDR` (config `{key}`){off}"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "; that address is not on this host: pick one of its addresses with `{flag} ADDR` (config `{key}`){off}"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "; ports below 1024 need privileges: pick another with `{flag} ADDR` (config `{key}`){off}"
        ),
        _ => format!("; pick another with `{flag} ADDR` (config `{key}`){off}"),
    }
}

/// A running agent. Dropping it shuts the agent down.
pub struct AgentHandle {
    node_id: NodeId,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    runtime: Arc<Runtime>,
    supervisor: SupervisorHandle,
    store: Store,
    status_tx: mpsc::Sender<oneshot::Sender<NodeStatus>>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }
    /// The admin endpoint (`/status`, `/metrics`, local rollback), if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }
    /// The runtime (slots, metrics).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
    /// The activation supervisor: per-app serving state, local rollback.
    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.supervisor
    }
    /// The agent's store (for inspection). The supervisor is its only writer (blobs, artifacts,
    /// records with their serving state); the node actor only reads chunks from it.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// Runtime counters (compiles, cache loads, requests…).
    pub fn runtime_stats(&self) -> RuntimeStatsSnapshot {
        self.runtime.stats()
    }
    /// The node's status, as peers would see it.
    pub async fn status(&self) -> Result<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.status_tx
            .send(tx)
            .await
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)
    }
    /// Stops the agent and waits for its tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// What agents running in one process may share (tests, in-process fleets). The default shares
/// nothing and is what [`start`] uses.
#[derive(Default)]
pub struct Shared {
    /// Run on this engine instead of building one from `cfg.runtime` (whose settings are then
    /// ignored: the engine's apply, with per-agent instance limits).
    pub engine: Option<Arc<crate::runtime::RuntimeEngine>>,
    /// Share compiled releases, by digest, with the other agents given this cache.
    pub compile_cache: Option<Arc<crate::runtime::CompileCache>>,
    /// How the agent's sled store is opened.
    pub store: crate::store::StoreOptions,
    /// Emulate a WAN link on this agent's QUIC socket (delay, loss, upload cap).
    pub link: Option<fleetcast_net::LinkModel>,
}

/// Starts an agent from `cfg`: opens the store, restores and serves the active releases from
/// the cache (before the network is even up), then binds QUIC and HTTP.
pub async fn start(cfg: AgentConfig) -> Result<AgentHandle> {
    start_with(cfg, Shared::default()).await
}

/// [`start`], sharing what `shared` names with other agents in this process.
pub async fn start_with(cfg: AgentConfig, shared: Shared) -> Result<AgentHandle> {
    cfg.validate()?;
    let identity = Identity::load_or_create(cfg.data_dir.join("node.key"))?;
    let node_id = identity.node_id();
    let store = Store::open_with(&cfg.data_dir, shared.store)?;
    let loaded = crate::trust::load_trust(&cfg, &store)?;
    let mut trust = loaded.trust;
    if !loaded.new_roots.is_empty() {
        store.put_roots(&loaded.new_roots, trust.floor_ms())?;
        tracing::info!(
            version = trust.version(),
            epoch = trust.epoch(),
            fleet = trust.fleet(),
            "fleet root adopted from the root file"
        );
    }
    let cert = crate::trust::load_node_cert(&cfg, &trust, node_id)?;
    let engine = match shared.engine {
        Some(engine) => engine,
        None => crate::runtime::RuntimeEngine::new(&cfg.runtime)?,
    };
    let runtime = Runtime::with_shared(engine, shared.compile_cache);

    let supervisor_cfg = SupervisorConfig {
        trial: cfg.trial.clone(),
        compile_concurrency: cfg.activation.compile_concurrency,
        cached_releases: cfg.activation.cached_releases,
    };
    let mut restored = {
        let (store, runtime, trust) = (store.clone(), runtime.clone(), trust.clone());
        let sup = supervisor_cfg.clone();
        tokio::task::spawn_blocking(move || {
            crate::supervisor::restore(&store, &runtime, &trust, &sup)
        })
        .await
        .map_err(|e| AgentError::Restore(format!("the restore task panicked: {e}")))??
    };
    // Expiry is never judged before a time this agent saw signed: its stored heads' included.
    if let Some(newest) = restored
        .records
        .iter()
        .map(|r| r.head.head.issued_at_ms)
        .max()
    {
        trust.observe(newest);
    }
    let mesh_metrics = Arc::new(MeshMetrics::default());
    let admission = FleetAdmission::new(trust.clone(), cfg.admission(), mesh_metrics.clone());
    let cert_expires_ms = cert.as_ref().map(|c| c.cert.expires_ms);
    let routes = crate::http::Routes::new(&cfg.routes);

    let listen = |what, addr, flag, key| {
        move |error| AgentError::Listen {
            what,
            addr,
            error,
            flag,
            key,
        }
    };
    let http = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(listen("HTTP", cfg.http, "--http", "http"))?;
    let http_addr = http
        .local_addr()
        .map_err(listen("HTTP", cfg.http, "--http", "http"))?;
    let net_cfg = NetConfig {
        link: shared.link.clone(),
        admit: admission.clone(),
        hello: Hello::Node { cert },
        ..NetConfig::default()
    };
    let (net, events) = Net::bind(cfg.listen, &identity, net_cfg).map_err(|e| match e {
        fleetcast_net::NetError::Bind { addr, error } => {
            listen("the QUIC mesh", addr, "--listen", "listen")(error)
        }
        e => e.into(),
    })?;
    let quic_addr = net.local_addr();

    let admin = match cfg.admin.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(listen(
                "the admin endpoint",
                addr,
                "--admin",
                "[admin] listen",
            ))?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin endpoint (status, metrics, local rollback) listens beyond localhost; it has no authentication");
            }
            Some(l)
        }
        None => None,
    };
    let admin_addr = match (&admin, cfg.admin.listen) {
        (Some(l), Some(addr)) => Some(l.local_addr().map_err(listen(
            "the admin endpoint",
            addr,
            "--admin",
            "[admin] listen",
        ))?),
        _ => None,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    {
        let rt = runtime.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            crate::http::serve_routes(http, rt, routes, stopped).await;
        }));
    }
    let (status_tx, status_rx) = mpsc::channel(16);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    // Every log line of this agent names it (many agents may share a process).
    let span = tracing::info_span!("agent", node = %node_id.short());
    let (supervisor, supervisor_task) = {
        let _enter = span.enter();
        crate::supervisor::spawn(
            &mut restored,
            store.clone(),
            runtime.clone(),
            supervisor_cfg,
            done_tx.clone(),
            shutdown_rx.clone(),
        )
    };
    if let Some(listener) = admin {
        let admin = crate::admin::Admin {
            supervisor: supervisor.clone(),
            runtime: runtime.clone(),
            status: status_tx.clone(),
            mesh: mesh_metrics.clone(),
            net: net.counters(),
        };
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            admin.serve(listener, stopped).await;
        }));
    }
    let mut node_cfg = NodeConfig::new(node_id, trust);
    node_cfg.seed = rand::random();
    node_cfg.membership.contacts = cfg.contacts.clone();
    // Where peers (and a census naming this agent as missing) can dial it: the configured
    // address, else the bound one unless it is a wildcard (then peers use the observed one).
    node_cfg.membership.advertise = cfg
        .advertise
        .or((!quic_addr.ip().is_unspecified()).then_some(quic_addr));
    cfg.mesh.apply(&mut node_cfg);
    let now = Instant::now();
    let mut node = Node::new(
        now,
        node_cfg,
        std::mem::take(&mut restored.records),
        std::mem::take(&mut restored.blobs),
    );
    node.handle(
        now,
        Input::Clock {
            unix_ms: crate::supervisor::unix_ms(),
        },
    );
    let fleet = node.trust().fleet().to_string();
    let status = node.trust().status();
    let mut expiry = ExpiryWatch::default();
    expiry.check(&status, cert_expires_ms);
    for input in std::mem::take(&mut restored.inputs) {
        node.handle(now, input);
    }
    let actor = Actor {
        node,
        net,
        store: store.clone(),
        supervisor: supervisor.clone(),
        events,
        status_rx,
        done_tx,
        dials: tokio::task::JoinSet::new(),
        supervisor_task: Some(supervisor_task),
        metrics: mesh_metrics,
        admission,
        expiry,
        cert_expires_ms,
    };
    tasks.push(tokio::spawn(
        actor.run(done_rx, shutdown_rx).instrument(span),
    ));
    tracing::info!(
        node = %node_id.short(), %quic_addr, %http_addr, %fleet,
        root_version = status.version, root_epoch = status.epoch,
        admission = %cfg.admission(), "agent started"
    );
    Ok(AgentHandle {
        node_id,
        quic_addr,
        http_addr,
        admin_addr,
        runtime,
        supervisor,
        store,
        status_tx,
        shutdown,
        tasks,
    })
}

struct Actor {
    node: Node<ConnId>,
    net: NetHandle,
    store: Store,
    supervisor: SupervisorHandle,
    events: mpsc::Receiver<NetEvent>,
    status_rx: mpsc::Receiver<oneshot::Sender<NodeStatus>>,
    /// Results of work done off the actor (activations, failed dials), fed back as inputs.
    done_tx: mpsc::UnboundedSender<Input<ConnId>>,
    /// Dials in progress; aborted when the actor stops.
    dials: tokio::task::JoinSet<()>,
    /// The supervisor runs the activations, which hold the store: the actor waits for it before
    /// it ends, so that once [`AgentHandle::shutdown`] returns the sled database is closed and
    /// the data directory can be opened again (a restart in the same process).
    supervisor_task: Option<JoinHandle<()>>,
    /// What `/metrics` shows of the node: counted in [`Actor::drain`], read by the admin.
    metrics: Arc<MeshMetrics>,
    /// The policy the transport admits peers by: the node's trust, replaced on new roots.
    admission: Arc<FleetAdmission>,
    expiry: ExpiryWatch,
    /// This node's own certificate's expiry (unix ms), for the warning.
    cert_expires_ms: Option<u64>,
}

impl Actor {
    async fn run(
        mut self,
        mut done_rx: mpsc::UnboundedReceiver<Input<ConnId>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.observe_trust();
        self.drain();
        let mut clock = tokio::time::interval(CLOCK_EVERY);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.node.poll_timeout().map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                Some(input) = done_rx.recv() => input,
                Some(_) = self.dials.join_next(), if !self.dials.is_empty() => continue,
                Some(tx) = self.status_rx.recv() => {
                    let _ = tx.send(self.node.status());
                    continue;
                }
                ev = self.events.recv() => match ev {
                    Some(ev) => match self.net_input(ev) {
                        Some(i) => i,
                        None => continue,
                    },
                    None => break,
                },
                _ = timer => Input::Timeout,
                _ = clock.tick() => {
                    let unix_ms = crate::supervisor::unix_ms();
                    self.admission.set_now(unix_ms);
                    self.observe_trust();
                    Input::Clock { unix_ms }
                }
                _ = recheck.tick() => {
                    self.recheck("periodic");
                    continue;
                }
            };
            self.node.handle(Instant::now(), input);
            self.drain();
        }
        // A blocking task cannot be cancelled: let the activations in progress finish (each
        // commits durably or stores nothing), then close the store.
        if let Some(t) = self.supervisor_task.take() {
            let _ = t.await;
        }
        let _ = self.store.flush();
        tracing::debug!("node actor stopped");
    }

    fn net_input(&mut self, ev: NetEvent) -> Option<Input<ConnId>> {
        match ev {
            NetEvent::Connected {
                conn,
                node,
                addr,
                outbound,
                role,
            } => {
                tracing::debug!(peer = %node.short(), %addr, outbound, ?role, "peer connected");
                Some(Input::PeerUp {
                    peer: conn,
                    node,
                    addr,
                    outbound,
                    role,
                })
            }
            NetEvent::Disconnected { conn, node, reason } => {
                tracing::debug!(peer = %node.short(), %reason, "peer disconnected");
                Some(Input::PeerDown(conn))
            }
            NetEvent::Message { conn, msg } => {
                tracing::trace!(%conn, kind = msg.kind(), index = chunk_index(&msg), "recv");
                Some(Input::Message(conn, msg))
            }
        }
    }

    /// Answers a status request with the node's status and what only the supervisor knows
    /// (trial, limits, since when each release serves), off the actor: the supervisor may be
    /// busy with a store write.
    fn answer_status(&self, to: ConnId, mut status: Box<NodeStatus>) {
        let (net, supervisor) = (self.net.clone(), self.supervisor.clone());
        tokio::spawn(async move {
            let views = tokio::time::timeout(Duration::from_secs(2), supervisor.status()).await;
            if let Ok(Ok(views)) = views {
                status.runtime = views.iter().filter_map(|v| v.to_wire()).collect();
            }
            status.now_ms = crate::supervisor::unix_ms();
            if let Err(e) = net.send(to, &Message::Status(status)) {
                tracing::debug!(%to, "status answer dropped: {e}");
            }
        });
    }

    /// Judges every link again with the current admission policy (closing the refused ones).
    fn recheck(&self, why: &str) {
        let closed = self.net.recheck();
        if closed > 0 {
            tracing::warn!(closed, "{why} admission recheck closed {closed} link(s)");
        }
    }

    /// The node adopted `roots`: persist them and the floor (flushed) before anything else,
    /// then judge every link by the new trust.
    fn adopt_roots(&mut self, roots: &[SignedRoot], floor_ms: u64) {
        let store = self.store.clone();
        if let Err(e) = crate::supervisor::off_the_reactor(|| store.put_roots(roots, floor_ms)) {
            // The node runs with them anyway (they verified); a restart learns them again
            // from the mesh.
            tracing::error!("cannot persist the fleet roots: {e:#}");
        }
        self.admission.set_trust(self.node.trust().clone());
        let status = self.node.trust().status();
        self.metrics.observe_trust(&status);
        self.expiry.check(&status, self.cert_expires_ms);
        self.recheck("new fleet root:");
    }

    /// Whether the transport took `msg` (a dropped one gets a debug line).
    fn try_send(&self, to: ConnId, msg: &Message) -> bool {
        tracing::trace!(%to, kind = msg.kind(), index = chunk_index(msg), "send");
        let sent = self.net.send(to, msg);
        if let Err(e) = &sent {
            tracing::debug!(%to, kind = msg.kind(), "send dropped: {e}");
        }
        sent.is_ok()
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { to, msg } => {
                    // A chunk sent as it is comes from a transfer in progress (cut-through).
                    if self.try_send(to, &msg) && msg.is_payload() {
                        self.metrics.chunk_served(ChunkSource::Transfer);
                    }
                }
                Output::ServeChunk { to, digest, index } => {
                    let msg = match self.store.read_chunk(&digest, index) {
                        Ok(Some(data)) => ContentMsg::Chunk {
                            digest,
                            index,
                            data: data.into(),
                        },
                        Ok(None) => ContentMsg::NoChunk { digest, index },
                        Err(e) => {
                            tracing::error!("cannot serve chunk: {e:#}");
                            ContentMsg::NoChunk { digest, index }
                        }
                    };
                    let found = matches!(msg, ContentMsg::Chunk { .. });
                    if self.try_send(to, &msg.into()) && found {
                        self.metrics.chunk_served(ChunkSource::Store);
                    }
                }
                Output::Activate(act) => self.supervisor.send(Command::Activate(act)),
                // STOPGAP (publisher helper, h-pub), to be replaced by the agent's prefetch
                // (h-agent): store the content without compiling or swapping, so the next
                // wave activates it from the store.
                Output::Prefetch(p) => {
                    let h = &p.head.head;
                    let result = match &p.content {
                        Some(c) => self.store.put_blob(&h.release, c).map_err(|e| {
                            fleetcast_protocol::node::ActivationError::Refused {
                                stage: "persist".into(),
                                reason: format!("{e:#}"),
                            }
                        }),
                        None => Ok(()),
                    };
                    let _ = self.done_tx.send(Input::Prefetched {
                        app: h.app.clone(),
                        seq: h.seq,
                        result,
                    });
                }
                Output::CancelActivation { app, seq } => {
                    self.supervisor.send(Command::Cancel { app, seq })
                }
                Output::Dial(addr) => {
                    let (net, done) = (self.net.clone(), self.done_tx.clone());
                    self.dials.spawn(async move {
                        if let Err(e) = net.dial(addr).await {
                            tracing::debug!(%addr, "dial failed: {e:#}");
                            let _ = done.send(Input::DialFailed(addr));
                        }
                    });
                }
                Output::Disconnect { peer, reason } => {
                    tracing::debug!(%peer, %reason, "disconnecting peer");
                    self.net.close(peer, &reason);
                }
                Output::Status { to, status } => self.answer_status(to, status),
                Output::Roots { roots, floor_ms } => self.adopt_roots(&roots, floor_ms),
                Output::Event(e) => {
                    self.metrics.event(&e, |app| self.node.app(app).is_some());
                    log_event(&e);
                }
            }
        }
        self.metrics.observe_node(&self.node);
    }

    /// Once a second: the trust gauges and the expiry warning (root and own certificate).
    fn observe_trust(&mut self) {
        let status = self.node.trust().status();
        self.metrics.observe_trust(&status);
        self.expiry.check(&status, self.cert_expires_ms);
    }
}

/// The chunk a chunk message is about, for trace logs.
fn chunk_index(msg: &Message) -> Option<u32> {
    match msg {
        Message::Content(
            ContentMsg::GetChunk { index, .. }
            | ContentMsg::Chunk { index, .. }
            | ContentMsg::NoChunk { index, .. }
            | ContentMsg::HaveChunk { index, .. },
        ) => Some(*index),
        _ => None,
    }
}

fn log_event(e: &Event) {
    match e {
        Event::Accepted {
            app,
            seq,
            version,
            cached,
        } => {
            tracing::info!(%app, seq, %version, cached, "head accepted")
        }
        Event::Rejected {
            app, seq, reason, ..
        } => tracing::warn!(%app, seq, %reason, "head rejected"),
        Event::Activated { app, seq, version } => tracing::info!(%app, seq, %version, "active"),
        Event::ActivationFailed { app, seq, reason } => {
            tracing::warn!(%app, seq, %reason, "activation failed; previous release keeps serving")
        }
        Event::Neighbor { node, up: true } => tracing::info!(peer = %node.short(), "neighbour up"),
        Event::Neighbor { node, up: false } => {
            tracing::info!(peer = %node.short(), "neighbour down")
        }
        Event::RootAdopted { version, epoch } => {
            tracing::info!(version, epoch, "fleet root adopted")
        }
        Event::RootRefused { reason } => {
            tracing::warn!(%reason, "fleet roots refused; the trusted root stays as it was")
        }
        // STOPGAP (h-pub) until the agent's prefetch lands (h-agent).
        Event::Prefetched { app, seq, version } => {
            tracing::info!(%app, seq, %version, "prefetched (outside the wave)")
        }
    }
}
