//! A publisher's QUIC session with one agent: it asks for status, pushes heads, serves the
//! content of the releases it publishes, and collects the reports that flow back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fleetcast_net::{ConnId, Identity, Net, NetConfig, NetEvent, NetHandle};
use fleetcast_protocol::wire::{
    BroadcastMsg, ContentMsg, Message, NodeId, NodeStatus, Report, Tally, TallyMsg,
};

/// What an agent tells the publisher after a push.
#[derive(Debug)]
pub enum News {
    /// The peer agent's own outcome (or its refusal).
    Report(Report),
    /// The fleet's totals, as counted up the broadcast tree to the peer agent.
    Tally(Tally),
}
use fleetcast_protocol::{Digest, Release, SignedHead};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// A connection to one agent.
pub struct Session {
    net: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    conn: ConnId,
    peer: NodeId,
    addr: SocketAddr,
    content: BTreeMap<Digest, (Release, Vec<u8>)>,
    /// Chunks served, for the closing line.
    pub chunks_served: u64,
}

impl Session {
    /// Connects to the agent at `addr`.
    pub async fn connect(addr: SocketAddr, within: Duration) -> Result<Session> {
        let identity = Identity::generate();
        let (net, mut events) = Net::client(&identity, NetConfig::default())?;
        let fail = || {
            format!(
                "cannot reach agent at {addr}: check that fleetcast-agent runs there and --peer names its QUIC listen address"
            )
        };
        let conn = tokio::time::timeout(within, net.dial(addr))
            .await
            .map_err(|_| anyhow!("timed out after {within:?}"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(fail)?;
        let deadline = Instant::now() + within;
        let peer = loop {
            match timeout_at(deadline, events.recv()).await {
                Ok(Some(NetEvent::Connected { conn: c, node, .. })) if c == conn => break node,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => bail!("{}", fail()),
            }
        };
        Ok(Session {
            net,
            events,
            conn,
            peer,
            addr,
            content: BTreeMap::new(),
            chunks_served: 0,
        })
    }

    /// The connected agent's node id.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Serve `content` of `release` to whoever asks on this connection.
    pub fn serve(&mut self, release: Release, content: Vec<u8>) {
        self.content.insert(release.digest, (release, content));
    }

    fn send(&self, msg: &Message) -> Result<()> {
        self.net
            .send(self.conn, msg)
            .map_err(|e| anyhow!("cannot send to {}: {e}", self.addr))
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
            match self.recv(deadline).await? {
                Some(Message::Status(s)) => return Ok(*s),
                Some(_) => continue,
                None => bail!(
                    "agent at {} did not answer a status request within {within:?}",
                    self.addr
                ),
            }
        }
    }

    /// The next report or fleet tally, or `None` at `deadline`.
    pub async fn next_news(&mut self, deadline: Instant) -> Result<Option<News>> {
        loop {
            match self.recv(deadline).await? {
                Some(Message::Report(r)) => return Ok(Some(News::Report(r))),
                Some(Message::Tally(TallyMsg::Subtree(t))) => return Ok(Some(News::Tally(t))),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next message that is not a chunk request (those are answered here).
    async fn recv(&mut self, deadline: Instant) -> Result<Option<Message>> {
        loop {
            let ev = match timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("connection to {} ended", self.addr),
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
                    bail!("agent at {} closed the connection: {reason}", self.addr)
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
