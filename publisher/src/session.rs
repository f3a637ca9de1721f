//! A publisher's QUIC session with one agent: it asks for status and for a census, pushes
//! heads, serves the content of the releases it publishes, and collects the reports that flow
//! back.
//!
//! Chunk requests are answered inside every wait, so content keeps flowing while a caller waits
//! for anything else; messages that arrive while a caller waits for one thing (a status, a
//! census reply) are kept for the next wait, so no report or tally is lost.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleetcast_net::{ConnId, Identity, Net, NetConfig, NetError, NetEvent, NetHandle};
use fleetcast_protocol::Hello;
use fleetcast_protocol::wire::{
    BroadcastMsg, Census, CensusMsg, ContentMsg, Focus, Message, NodeId, NodeStatus, Report, Tally,
    TallyMsg, TrustMsg,
};
use fleetcast_protocol::{Digest, Release, SignedHead};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::error::{CliError, Result};
use crate::target::{Target, secs};

/// A new connection attempt starts this often while none has answered, so one lost Initial
/// packet costs a quarter of a second rather than QUIC's first retransmission timeout.
pub const REDIAL_EVERY: Duration = Duration::from_millis(250);
/// Attempts kept in flight at once (the oldest is dropped for a new one).
const MAX_ATTEMPTS: usize = 8;
/// How long to wait for the agent's answer to a status request.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// What the census waits beyond its budget for the answer to cross the network.
pub const CENSUS_MARGIN: Duration = Duration::from_millis(500);
/// Messages kept for a later wait while a caller waits for something else.
const MAX_PENDING: usize = 4096;

/// What an agent tells the publisher after a push.
#[derive(Debug)]
pub enum News {
    /// The peer agent's own outcome (or its refusal).
    Report(Report),
    /// The fleet's totals, as counted up the broadcast tree to the peer agent.
    Tally(Tally),
    /// The answer to a census query ([`Session::start_census`]).
    Census { id: u64, count: Option<Census> },
}

/// A connection to one agent.
pub struct Session {
    net: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    conn: ConnId,
    peer: NodeId,
    addr: SocketAddr,
    content: BTreeMap<Digest, (Release, Vec<u8>)>,
    pending: VecDeque<Message>,
    /// Chunks served, for the closing line.
    pub chunks_served: u64,
    /// Bytes of content served.
    pub bytes_served: u64,
}

/// Endpoints of sessions that ended, their connection closed but the close maybe not yet sent:
/// the process waits for them before it exits ([`flush_closed`]), so an agent hears that the
/// operator left at once rather than at its idle timeout.
static CLOSED: std::sync::Mutex<Vec<NetHandle>> = std::sync::Mutex::new(Vec::new());

impl Drop for Session {
    fn drop(&mut self) {
        self.net.close(self.conn, "the operator's command ended");
        if let Ok(mut closed) = CLOSED.lock() {
            closed.push(self.net.clone());
        }
    }
}

/// Waits until every ended session's close reached its agent (each at most
/// `fleetcast_net::SHUTDOWN_GRACE`, all at once). `fleetcast` calls it before it exits.
pub async fn flush_closed() {
    let handles = CLOSED
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    let mut set = JoinSet::new();
    for h in handles {
        set.spawn(async move { h.shutdown().await });
    }
    while set.join_next().await.is_some() {}
}

impl Session {
    /// Connects to the agent at `addr`, trying for `within`.
    pub async fn connect(addr: SocketAddr, within: Duration) -> Result<Session> {
        Session::connect_to(&Target::addr(addr, within)).await
    }

    /// Connects to the first of `target`'s addresses that answers within its connect timeout.
    /// Every address is dialled at once and again every [`REDIAL_EVERY`]; an agent that
    /// answers and refuses (another protocol version, a TLS failure) fails at once with its
    /// reason.
    pub async fn connect_to(target: &Target) -> Result<Session> {
        Session::connect_as(target, None).await
    }

    /// [`Session::connect_to`] as an operator whose QUIC identity is `key` (a release key: an
    /// enrolled fleet admits operators by it), or an ephemeral identity without one (which
    /// only an open or `trusted_keys` fleet admits). The CLI says `Hello::Operator` either way.
    pub async fn connect_as(target: &Target, key: Option<&SigningKey>) -> Result<Session> {
        let identity = match key {
            Some(k) => Identity::from_secret_bytes(&k.to_bytes()),
            None => Identity::generate(),
        };
        let config = NetConfig {
            hello: Hello::Operator,
            ..NetConfig::default()
        };
        let (net, mut events) = Net::client(&identity, config).map_err(|e| {
            CliError::unreachable(format!("cannot open a QUIC endpoint to dial from: {e}"))
        })?;
        let within = target.connect_timeout;
        let deadline = Instant::now() + within;
        let unanswered = || {
            CliError::unreachable(format!(
                "no fleetcast-agent answered at {} within {}: check it runs and that --peer names its QUIC listen address (its `listen`, printed as quic= in its ready line); raise --connect-timeout for a slow link",
                target.describe(),
                secs(within)
            ))
        };
        let mut attempts: JoinSet<(SocketAddr, std::result::Result<ConnId, NetError>)> =
            JoinSet::new();
        let mut order: VecDeque<tokio::task::AbortHandle> = VecDeque::new();
        let mut next_round = Instant::now();
        // Addresses this machine cannot dial at all (say IPv6 without an IPv6 socket), and why.
        let mut undialable: Vec<(SocketAddr, String)> = Vec::new();
        let (conn, addr) = loop {
            if Instant::now() >= next_round {
                for &a in &target.addrs {
                    if undialable.iter().any(|(u, _)| *u == a) {
                        continue;
                    }
                    if order.len() >= MAX_ATTEMPTS
                        && let Some(old) = order.pop_front()
                    {
                        old.abort();
                    }
                    let n = net.clone();
                    order.push_back(attempts.spawn(async move { (a, n.dial(a).await) }));
                }
                next_round += REDIAL_EVERY;
            }
            let wake = next_round.min(deadline);
            tokio::select! {
                done = attempts.join_next(), if !attempts.is_empty() => match done {
                    Some(Ok((a, Ok(conn)))) => break (conn, a),
                    Some(Ok((a, Err(e)))) => match failure(&e) {
                        Failure::NoAnswer => {}
                        Failure::Undialable(why) => {
                            if !undialable.iter().any(|(u, _)| *u == a) {
                                undialable.push((a, why));
                            }
                            if undialable.len() == target.addrs.len() {
                                let whys: Vec<String> =
                                    undialable.iter().map(|(a, w)| format!("{a}: {w}")).collect();
                                return Err(CliError::unreachable(format!(
                                    "cannot dial {} from this machine ({}): give an address it can reach",
                                    target.describe(),
                                    whys.join("; ")
                                )));
                            }
                        }
                        Failure::Refused(why) => {
                            return Err(CliError::unreachable(format!(
                                "the agent at {a} answered but the connection failed: {why}"
                            )));
                        }
                        Failure::NotAdmitted(why) => {
                            return Err(CliError::refused(format!(
                                "the agent at {a} refused this CLI: {why} (right after a rotation, the agent may still hold the older root: send it with a key it still admits, fleetcast fleet push --fleet DIR --key ...)"
                            )));
                        }
                    },
                    // An attempt dropped for a newer one.
                    Some(Err(_)) | None => {}
                },
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Err(unanswered());
                    }
                }
            }
        };
        attempts.abort_all();
        // The registered connection announces itself; a second attempt that got through
        // before the others were dropped is closed.
        let grace = deadline.max(Instant::now() + Duration::from_secs(1));
        let peer = loop {
            match timeout_at(grace, events.recv()).await {
                Ok(Some(NetEvent::Connected { conn: c, node, .. })) if c == conn => break node,
                Ok(Some(NetEvent::Connected { conn: other, .. })) => {
                    net.close(other, "a duplicate connection attempt")
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return Err(unanswered()),
            }
        };
        Ok(Session {
            net,
            events,
            conn,
            peer,
            addr,
            content: BTreeMap::new(),
            pending: VecDeque::new(),
            chunks_served: 0,
            bytes_served: 0,
        })
    }

    /// The connected agent's node id.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The address that answered.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `content` of `release` to whoever asks on this connection.
    pub fn serve(&mut self, release: Release, content: Vec<u8>) {
        self.content.insert(release.digest, (release, content));
    }

    fn send(&self, msg: &Message) -> Result<()> {
        self.net.send(self.conn, msg).map_err(|e| {
            CliError::unreachable(format!("cannot send to the agent at {}: {e}", self.addr))
        })
    }

    /// Sends root versions (oldest first, at most [`fleetcast_protocol::trust::MAX_ROOTS_PER_MSG`]
    /// per message) to the agent.
    pub fn push_roots(&self, roots: &[fleetcast_protocol::SignedRoot]) -> Result<()> {
        for part in roots.chunks(fleetcast_protocol::trust::MAX_ROOTS_PER_MSG) {
            self.send(&Message::Trust(TrustMsg::Roots(part.to_vec())))?;
        }
        Ok(())
    }

    /// Pushes a signed head to the agent.
    pub fn push_head(&self, head: &SignedHead) -> Result<()> {
        self.send(&BroadcastMsg::Head(Box::new(head.clone())).into())?;
        // Say that this side holds the whole content, if it does, so the agent fetches from it.
        let r = &head.head.release;
        if self.content.contains_key(&r.digest) {
            self.send(&Message::Content(ContentMsg::Have {
                digest: r.digest,
                bits: fleetcast_protocol::swarm::bits_full(r.chunk_count()),
                want: false,
            }))?;
        }
        Ok(())
    }

    /// Asks the agent for its status.
    pub async fn status(&mut self, within: Duration) -> Result<NodeStatus> {
        self.send(&Message::StatusRequest)?;
        let deadline = Instant::now() + within;
        loop {
            match self.recv_fresh(deadline).await? {
                Some(Message::Status(s)) => return Ok(*s),
                Some(other) => self.keep(other),
                None => {
                    return Err(CliError::unreachable(format!(
                        "the agent at {} did not answer a status request within {}: it may be overloaded; try again",
                        self.addr,
                        secs(within)
                    )));
                }
            }
        }
    }

    /// Sends a census query (the peer agent becomes the root of an echo wave over the mesh and
    /// answers with the count of every live agent); the answer comes as [`News::Census`] with
    /// the returned id.
    pub fn start_census(&mut self, focus: Option<Focus>, budget: Duration) -> Result<u64> {
        let id = rand::random::<u64>();
        self.send(
            &CensusMsg::Query {
                id,
                budget_ms: budget.as_millis().min(u32::MAX as u128) as u32,
                focus,
            }
            .into(),
        )?;
        Ok(id)
    }

    /// Counts the live fleet through the peer agent: waits up to `budget` plus
    /// [`CENSUS_MARGIN`] for the answer. An agent that does not answer in time fails with
    /// [`crate::error::ErrorKind::Timeout`] (agents older than the census never answer);
    /// callers degrade.
    pub async fn census(&mut self, focus: Option<Focus>, budget: Duration) -> Result<Census> {
        let id = self.start_census(focus, budget)?;
        let within = budget + CENSUS_MARGIN;
        let deadline = Instant::now() + within;
        loop {
            match self.recv_fresh(deadline).await? {
                Some(Message::Census(CensusMsg::Reply { id: got, count })) if got == id => {
                    return count.ok_or_else(|| {
                        CliError::timeout(format!(
                            "the agent at {} answered the census without a count: try again",
                            self.addr
                        ))
                    });
                }
                Some(other) => self.keep(other),
                None => return Err(census_unanswered(self.addr, within)),
            }
        }
    }

    /// The next report, fleet tally or census reply, or `None` at `deadline`.
    pub async fn next_news(&mut self, deadline: Instant) -> Result<Option<News>> {
        loop {
            let msg = match self.pending.pop_front() {
                Some(m) => m,
                None => match self.recv_fresh(deadline).await? {
                    Some(m) => m,
                    None => return Ok(None),
                },
            };
            match msg {
                Message::Report(r) => return Ok(Some(News::Report(r))),
                Message::Tally(TallyMsg::Subtree(t)) => return Ok(Some(News::Tally(t))),
                Message::Census(CensusMsg::Reply { id, count }) => {
                    return Ok(Some(News::Census { id, count }));
                }
                _ => continue,
            }
        }
    }

    fn keep(&mut self, msg: Message) {
        if matches!(
            msg,
            Message::Report(_) | Message::Tally(_) | Message::Census(_)
        ) {
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back(msg);
        }
    }

    /// The next message from the connection that is not a chunk request (those are answered
    /// here), or `None` at `deadline`.
    async fn recv_fresh(&mut self, deadline: Instant) -> Result<Option<Message>> {
        loop {
            let ev = match timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => {
                    return Err(CliError::unreachable(format!(
                        "the connection to the agent at {} ended",
                        self.addr
                    )));
                }
                Ok(Some(ev)) => ev,
            };
            match ev {
                NetEvent::Message { conn, msg } if conn == self.conn => {
                    if let Message::Content(ContentMsg::GetChunk { digest, index }) = msg {
                        // A send that fails here means the connection is closing (the agent
                        // dropped it: its reason arrives as the next event) or its send queue
                        // is full (the agent asks again after its deadline). Either way the
                        // next event says more than this error would.
                        let _ = self.answer_chunk(digest, index);
                        continue;
                    }
                    return Ok(Some(msg));
                }
                NetEvent::Disconnected { conn, reason, .. } if conn == self.conn => {
                    return Err(CliError::unreachable(format!(
                        "the agent at {} closed the connection: {reason}",
                        self.addr
                    )));
                }
                _ => continue,
            }
        }
    }

    fn answer_chunk(&mut self, digest: Digest, index: u32) -> Result<()> {
        let msg = match self.content.get(&digest) {
            Some((release, content)) if index < release.chunk_count() => {
                let start = index as usize * release.chunk_size as usize;
                let end = start + release.chunk_len(index);
                self.chunks_served += 1;
                self.bytes_served += (end - start) as u64;
                ContentMsg::Chunk {
                    digest,
                    index,
                    data: content[start..end].to_vec().into(),
                }
            }
            _ => ContentMsg::NoChunk { digest, index },
        };
        self.send(&msg.into())
    }
}

/// The error of a census nobody answered.
pub fn census_unanswered(addr: SocketAddr, within: Duration) -> CliError {
    CliError::timeout(format!(
        "the agent at {addr} did not answer the census within {}: it may run an older fleetcast-agent",
        secs(within)
    ))
}

/// What a failed dial says.
enum Failure {
    /// Nothing answered (yet): dial again.
    NoAnswer,
    /// This machine cannot dial the address at all.
    Undialable(String),
    /// Something answered and refused (another protocol version, a TLS failure): no point in
    /// dialling again.
    Refused(String),
    /// The agent's admission policy refused this CLI's key (exit 1, with the agent's reason).
    NotAdmitted(String),
}

fn failure(e: &NetError) -> Failure {
    match e {
        NetError::DialTimeout { .. } => Failure::NoAnswer,
        NetError::Dial { error, .. } => Failure::Undialable(error.to_string()),
        NetError::Handshake { error, .. } => match error {
            quinn::ConnectionError::TimedOut | quinn::ConnectionError::LocallyClosed => {
                Failure::NoAnswer
            }
            other => Failure::Refused(other.to_string()),
        },
        NetError::Version { reason, .. } => Failure::Refused(reason.clone()),
        NetError::Refused { reason, .. } => Failure::NotAdmitted(reason.clone()),
        other => Failure::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fleetcast_net::Admit;
    use fleetcast_protocol::PeerRole;

    use super::*;

    /// An agent's admission as an enrolled fleet has it: operators by one release key only.
    #[derive(Debug)]
    struct ReleaseKeyOnly(NodeId);

    impl Admit for ReleaseKeyOnly {
        fn admit(&self, node: NodeId, hello: &Hello) -> std::result::Result<PeerRole, String> {
            match hello {
                Hello::Operator if node == self.0 => Ok(PeerRole::Operator),
                _ => Err(format!(
                    "operator key {} is not a release key: pass --key with a release key of this fleet",
                    node.short()
                )),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cli_connects_as_its_key_says_operator_and_a_refusal_exits_1() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let id = NodeId(key.verifying_key().to_bytes());
        let agent = Identity::generate();
        let config = NetConfig {
            admit: Arc::new(ReleaseKeyOnly(id)),
            ..NetConfig::default()
        };
        let (net, mut events) = Net::bind("127.0.0.1:0".parse().unwrap(), &agent, config).unwrap();
        let target = Target::addr(net.local_addr(), Duration::from_secs(10));
        let s = Session::connect_as(&target, Some(&key)).await.unwrap();
        assert_eq!(s.peer(), agent.node_id());
        let (node, role) = loop {
            match events.recv().await.expect("the agent's events") {
                NetEvent::Connected { node, role, .. } => break (node, role),
                _ => continue,
            }
        };
        assert_eq!((node, role), (id, PeerRole::Operator));
        drop(s);
        // An ephemeral identity is refused: exit 1, with the agent's reason.
        let e = Session::connect_as(&target, None)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code(), 1, "{e}");
        assert!(e.message.contains("refused this CLI"), "{e}");
        assert!(e.message.contains("pass --key"), "{e}");
    }
}
