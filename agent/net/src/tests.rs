//! Transport tests on real quinn endpoints bound to 127.0.0.1:0. Synchronisation only waits
//! on events with deadlines (the one poll loop waits for the OS to release a UDP port).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use fleetcast_protocol::release::Digest;
use fleetcast_protocol::trust::{Hello, PeerRole};
use fleetcast_protocol::wire::{ContentMsg, Message, Payload};

use quinn::{ConnectionError, VarInt};

use super::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn listen(cfg: NetConfig) -> (NetHandle, Receiver<NetEvent>) {
    Net::bind(localhost(), &Identity::generate(), cfg).unwrap()
}

async fn next(rx: &mut Receiver<NetEvent>) -> NetEvent {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("timed out waiting for a net event")
        .expect("event channel closed")
}

async fn connected(rx: &mut Receiver<NetEvent>) -> (ConnId, NodeId, bool) {
    match next(rx).await {
        NetEvent::Connected {
            conn,
            node,
            outbound,
            ..
        } => (conn, node, outbound),
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// Test payloads travel as chunk messages, whose data can be any bytes of any length.
fn chunk(data: Vec<u8>) -> Message {
    ContentMsg::Chunk {
        digest: Digest([9; 32]),
        index: 0,
        data: Payload(data.into()),
    }
    .into()
}

/// The encoded size of a [`chunk`] message of `len` bytes.
fn chunk_frame_len(len: usize) -> usize {
    codec::encode(&chunk(vec![0; len]), usize::MAX)
        .unwrap()
        .len()
}

/// The next message, which must be a [`chunk`]: its connection and data.
async fn frame(rx: &mut Receiver<NetEvent>) -> (ConnId, Vec<u8>) {
    match next(rx).await {
        NetEvent::Message {
            conn,
            msg: Message::Content(ContentMsg::Chunk { data, .. }),
        } => (conn, data.0.to_vec()),
        other => panic!("expected a chunk message, got {other:?}"),
    }
}

async fn disconnected(rx: &mut Receiver<NetEvent>) -> (ConnId, NodeId, String) {
    loop {
        match next(rx).await {
            NetEvent::Disconnected { conn, node, reason } => return (conn, node, reason),
            NetEvent::Message { .. } => continue,
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
}

/// A listener and a dialer, connected. Returns (a, a_rx, a's conn, b, b_rx, b's conn).
async fn pair(
    cfg_a: NetConfig,
    cfg_b: NetConfig,
) -> (
    NetHandle,
    Receiver<NetEvent>,
    ConnId,
    NetHandle,
    Receiver<NetEvent>,
    ConnId,
) {
    let (a, mut a_rx) = listen(cfg_a);
    let (b, mut b_rx) = Net::client(&Identity::generate(), cfg_b).unwrap();
    let b_conn = b.dial(a.local_addr()).await.unwrap();
    let (conn, node, outbound) = connected(&mut b_rx).await;
    assert_eq!((conn, node, outbound), (b_conn, a.node_id(), true));
    let (a_conn, node, outbound) = connected(&mut a_rx).await;
    assert_eq!((node, outbound), (b.node_id(), false));
    (a, a_rx, a_conn, b, b_rx, b_conn)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn frames_both_ways() {
    let (a, mut a_rx, a_conn, b, mut b_rx, b_conn) =
        pair(NetConfig::default(), NetConfig::default()).await;
    assert_eq!(
        a.connections(),
        vec![(a_conn, b.node_id(), a.connections()[0].2)]
    );
    assert_eq!(b.connections()[0].1, a.node_id());

    b.send(b_conn, &chunk(b"hello".to_vec())).unwrap();
    assert_eq!(frame(&mut a_rx).await, (a_conn, b"hello".to_vec()));
    a.send(a_conn, &chunk(Vec::new())).unwrap();
    assert_eq!(frame(&mut b_rx).await, (b_conn, Vec::new()));

    let big = pattern(1024 * 1024, 3);
    a.send(a_conn, &chunk(big.clone())).unwrap();
    assert_eq!(frame(&mut b_rx).await.1, big);
    b.send(b_conn, &chunk(big.clone())).unwrap();
    assert_eq!(frame(&mut a_rx).await.1, big);
}

#[tokio::test]
async fn big_frame_does_not_block_small_ones_and_many_arrive() {
    let cfg = NetConfig {
        max_inflight_sends_per_conn: 1024,
        ..NetConfig::default()
    };
    let (_a, mut a_rx, _, b, _b_rx, b_conn) = pair(cfg.clone(), cfg).await;
    b.send(b_conn, &chunk(pattern(256 * 1024, 9))).unwrap();
    let mut expected = HashSet::new();
    for i in 0..500u32 {
        b.send(b_conn, &chunk(i.to_be_bytes().to_vec())).unwrap();
        expected.insert(i.to_be_bytes().to_vec());
    }
    let mut got = HashSet::new();
    let mut big_seen = false;
    while got.len() < expected.len() || !big_seen {
        let (_, bytes) = frame(&mut a_rx).await;
        if bytes.len() == 256 * 1024 {
            assert_eq!(bytes, pattern(256 * 1024, 9));
            big_seen = true;
        } else {
            assert!(got.insert(bytes), "duplicate frame");
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn send_errors() {
    let cfg = NetConfig {
        max_inflight_sends_per_conn: 1,
        ..NetConfig::default()
    };
    let max = cfg.max_frame;
    let (_a, _a_rx, _, b, _b_rx, b_conn) = pair(NetConfig::default(), cfg).await;
    let len = chunk_frame_len(max + 1);
    assert_eq!(
        b.send(b_conn, &chunk(vec![0; max + 1])),
        Err(SendError::TooLarge { len, max })
    );
    b.send(b_conn, &chunk(vec![1])).unwrap();
    // The first send holds the only permit until the peer acknowledges it.
    assert_eq!(b.send(b_conn, &chunk(vec![2])), Err(SendError::Busy));
    assert_eq!(
        b.send(ConnId(9999), &chunk(vec![3])),
        Err(SendError::Closed)
    );
}

#[tokio::test]
async fn oversized_frame_closes_the_connection_on_both_sides() {
    let small = NetConfig {
        max_frame: 1000,
        ..NetConfig::default()
    };
    let (_a, mut a_rx, a_conn, b, mut b_rx, b_conn) = pair(small, NetConfig::default()).await;
    b.send(b_conn, &chunk(vec![0; 1001])).unwrap();
    let (conn, node, reason) = disconnected(&mut a_rx).await;
    assert_eq!((conn, node), (a_conn, b.node_id()));
    let len = chunk_frame_len(1001);
    assert!(
        reason.contains(&format!(
            "frame of {len} bytes exceeds the maximum of 1000 bytes"
        )),
        "{reason}"
    );
    let (conn, _, reason) = disconnected(&mut b_rx).await;
    assert_eq!(conn, b_conn);
    assert!(reason.contains("exceeds the maximum"), "{reason}");
    assert_eq!(b.send(b_conn, &chunk(vec![1])), Err(SendError::Closed));
    assert!(b.connections().is_empty());
}

#[tokio::test]
async fn close_carries_the_reason() {
    let (a, mut a_rx, a_conn, _b, mut b_rx, _) =
        pair(NetConfig::default(), NetConfig::default()).await;
    a.close(a_conn, "go away");
    assert!(disconnected(&mut a_rx).await.2.contains("go away"));
    assert!(disconnected(&mut b_rx).await.2.contains("go away"));
}

#[tokio::test]
async fn expected_node_id_is_enforced() {
    let (a, mut a_rx) = listen(NetConfig::default());
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    let wrong = Identity::generate().node_id();
    let err = b.dial_expecting(a.local_addr(), wrong).await.unwrap_err();
    assert!(format!("{err:#}").contains("does not match"), "{err:#}");
    let conn = b.dial_expecting(a.local_addr(), a.node_id()).await.unwrap();
    // The failed attempt produced no events on either side.
    assert_eq!(connected(&mut b_rx).await.0, conn);
    assert_eq!(connected(&mut a_rx).await.1, b.node_id());
}

#[tokio::test]
async fn dropping_all_handles_closes_the_endpoint() {
    let (a, mut a_rx, a_conn, b, mut b_rx, b_conn) =
        pair(NetConfig::default(), NetConfig::default()).await;
    let a_id = a.node_id();
    let a2 = a.clone();
    drop(a);
    b.send(b_conn, &chunk(b"still up".to_vec())).unwrap();
    assert_eq!(frame(&mut a_rx).await.1, b"still up");
    drop(a2);
    let (conn, node, reason) = disconnected(&mut b_rx).await;
    assert_eq!((conn, node), (b_conn, a_id));
    assert!(reason.contains("endpoint shut down"), "{reason}");
    assert_eq!(disconnected(&mut a_rx).await.0, a_conn);
    // Every task of the dropped endpoint ended: the event channel closes.
    assert!(timeout(DEADLINE, a_rx.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn keep_dialing_reconnects_after_close() {
    let (a, mut a_rx) = listen(NetConfig::default());
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    b.keep_dialing(a.local_addr());
    b.keep_dialing(a.local_addr()); // idempotent
    let (b1, node, _) = connected(&mut b_rx).await;
    assert_eq!(node, a.node_id());
    let (a1, _, _) = connected(&mut a_rx).await;
    a.close(a1, "rotate");
    assert!(disconnected(&mut b_rx).await.2.contains("rotate"));
    assert_eq!(disconnected(&mut a_rx).await.0, a1);
    let (b2, node, outbound) = connected(&mut b_rx).await;
    assert!(b2 != b1 && node == a.node_id() && outbound);
    let (a2, node, _) = connected(&mut a_rx).await;
    assert!(a2 != a1 && node == b.node_id());
    assert_eq!(b.connections().len(), 1);
}

#[tokio::test]
async fn keep_dialing_reconnects_to_a_rebound_listener() {
    let (a, mut a_rx) = listen(NetConfig::default());
    let addr = a.local_addr();
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    b.keep_dialing(addr);
    connected(&mut b_rx).await;
    connected(&mut a_rx).await;
    drop(a);
    assert!(
        disconnected(&mut b_rx)
            .await
            .2
            .contains("endpoint shut down")
    );
    // Wait for the old endpoint's tasks to end, then for the OS to release the port.
    while timeout(DEADLINE, a_rx.recv()).await.unwrap().is_some() {}
    let identity = Identity::generate();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (a2, mut a2_rx) = loop {
        match Net::bind(addr, &identity, NetConfig::default()) {
            Ok(bound) => break bound,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("port {addr} not yet released: {e:#}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("port {addr} never released: {e:#}"),
        }
    };
    let (_, node, _) = connected(&mut b_rx).await;
    assert_eq!(node, a2.node_id());
    assert_eq!(connected(&mut a2_rx).await.1, b.node_id());
}

#[tokio::test]
async fn slow_consumer_loses_nothing() {
    let tiny = NetConfig {
        event_capacity: 1,
        ..NetConfig::default()
    };
    let (_a, mut a_rx, _, b, _b_rx, b_conn) = pair(tiny, NetConfig::default()).await;
    for i in 0..60u8 {
        b.send(b_conn, &chunk(vec![i; 1000])).unwrap();
    }
    // Readers block on the full channel (no unbounded buffering); draining releases them.
    let mut got: Vec<u8> = Vec::new();
    while got.len() < 60 {
        got.push(frame(&mut a_rx).await.1[0]);
    }
    got.sort_unstable();
    assert_eq!(got, (0..60).collect::<Vec<u8>>());
}

// ---- link emulation (egress shaping per endpoint) ----

fn shaped(link: LinkModel) -> NetConfig {
    NetConfig {
        max_inflight_sends_per_conn: 1024,
        link: Some(link),
        ..NetConfig::default()
    }
}

#[tokio::test]
async fn emulated_delay_applies_on_both_egress_paths() {
    let link = LinkModel {
        delay: Duration::from_millis(25),
        ..LinkModel::default()
    };
    let (a, mut a_rx, a_conn, b, mut b_rx, b_conn) = pair(shaped(link.clone()), shaped(link)).await;
    let started = tokio::time::Instant::now();
    b.send(b_conn, &chunk(b"ping".to_vec())).unwrap();
    assert_eq!(frame(&mut a_rx).await.1, b"ping");
    let one_way = started.elapsed();
    a.send(a_conn, &chunk(b"pong".to_vec())).unwrap();
    assert_eq!(frame(&mut b_rx).await.1, b"pong");
    let round_trip = started.elapsed();
    assert!(one_way >= Duration::from_millis(25), "{one_way:?}");
    assert!(round_trip >= Duration::from_millis(50), "{round_trip:?}");
}

#[tokio::test]
async fn emulated_loss_is_recovered_by_quic() {
    let link = |seed| LinkModel {
        loss: 0.1,
        seed,
        ..LinkModel::default()
    };
    let (_a, mut a_rx, _, b, _b_rx, b_conn) = pair(shaped(link(1)), shaped(link(2))).await;
    let mut expected = HashSet::new();
    for i in 0..200u32 {
        // 4-byte id followed by a pattern of 1..=6000 bytes: many span several datagrams.
        let mut f = i.to_be_bytes().to_vec();
        f.extend(pattern(1 + (i as usize * 997) % 6000, i as u8));
        expected.insert(f.clone());
        b.send(b_conn, &chunk(f)).unwrap();
    }
    let mut got = HashSet::new();
    while got.len() < expected.len() {
        let bytes = frame(&mut a_rx).await.1;
        assert!(expected.contains(&bytes), "corrupted frame");
        assert!(got.insert(bytes), "duplicate frame");
    }
}

#[tokio::test]
async fn emulated_rate_caps_upload_bandwidth() {
    const RATE: u64 = 8_000_000;
    let link = LinkModel {
        rate_bps: Some(RATE),
        ..LinkModel::default()
    };
    let (_a, mut a_rx, _, b, _b_rx, b_conn) = pair(NetConfig::default(), shaped(link)).await;
    let total = 2 * 1024 * 1024;
    let started = tokio::time::Instant::now();
    for seed in 0..2u8 {
        b.send(b_conn, &chunk(pattern(total / 2, seed))).unwrap();
    }
    let mut received = 0;
    for _ in 0..2 {
        let bytes = frame(&mut a_rx).await.1;
        assert!(bytes == pattern(total / 2, 0) || bytes == pattern(total / 2, 1));
        received += bytes.len();
    }
    let elapsed = started.elapsed();
    assert_eq!(received, total);
    let floor = Duration::from_secs_f64(total as f64 * 8.0 / RATE as f64 * 0.9);
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}");
}

/// The socket wrapper alone: deterministic drops (same seed, same decisions), GSO disabled,
/// and every datagram not dropped arrives intact and in order.
#[tokio::test]
async fn emulated_socket_drops_deterministically_and_keeps_order() {
    use quinn::udp::Transmit;
    use quinn::{AsyncUdpSocket, Runtime, TokioRuntime};

    let receiver = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    let dest = receiver.local_addr().unwrap();
    let model = LinkModel {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(3),
        loss: 0.3,
        seed: 7,
        ..LinkModel::default()
    };
    let make = |model: LinkModel| {
        let std_socket = std::net::UdpSocket::bind(localhost()).unwrap();
        let inner = TokioRuntime.wrap_udp_socket(std_socket).unwrap();
        emulator::EmulatedSocket::new(inner, model).unwrap()
    };
    let socket = make(model.clone());
    assert_eq!(socket.max_transmit_segments(), 1);
    for i in 0..100u32 {
        let contents = i.to_be_bytes();
        let transmit = Transmit {
            destination: dest,
            ecn: None,
            contents: &contents,
            segment_size: None,
            src_ip: None,
        };
        socket.try_send(&transmit).unwrap();
    }
    let stats = socket.stats();
    assert_eq!(stats.sent, 100);
    assert!((10..=50).contains(&stats.lost), "{stats:?}");
    // Same seed, same decisions.
    let twin = make(model);
    for i in 0..100u32 {
        let contents = i.to_be_bytes();
        let transmit = Transmit {
            destination: "127.0.0.1:9".parse().unwrap(),
            ecn: None,
            contents: &contents,
            segment_size: None,
            src_ip: None,
        };
        twin.try_send(&transmit).unwrap();
    }
    assert_eq!(twin.stats(), stats);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < (stats.sent - stats.lost) as usize {
        let (n, _) = timeout(DEADLINE, receiver.recv_from(&mut buf))
            .await
            .expect("timed out waiting for a datagram")
            .unwrap();
        assert_eq!(n, 4);
        got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
}

// ---- codec and version at the connection ----

#[tokio::test]
async fn undecodable_frame_closes_the_connection_with_the_reason() {
    let (_a, mut a_rx, a_conn, b, mut b_rx, b_conn) =
        pair(NetConfig::default(), NetConfig::default()).await;
    b.send_frame(b_conn, vec![0xff; 3], 1).unwrap();
    let (conn, node, reason) = disconnected(&mut a_rx).await;
    assert_eq!((conn, node), (a_conn, b.node_id()));
    assert!(reason.contains("does not decode"), "{reason}");
    let (_, _, reason) = disconnected(&mut b_rx).await;
    assert!(reason.contains("does not decode"), "{reason}");
}

/// A QUIC config that speaks only `alpn`, as an agent of an older release does.
fn old_client(alpn: &[u8]) -> quinn::ClientConfig {
    let mut tls = tls::rustls_client_config(&Identity::generate(), None).unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(std::sync::Arc::new(tls))
}

#[tokio::test]
async fn an_older_version_dialling_in_is_told_to_upgrade() {
    let (a, mut a_rx) = listen(NetConfig::default());
    let old = quinn::Endpoint::client(localhost()).unwrap();
    let conn = old
        .connect_with(old_client(b"fleetcast/5"), a.local_addr(), tls::SERVER_NAME)
        .unwrap()
        .await
        .expect("the handshake itself succeeds, so the reason can be delivered");
    let err = timeout(DEADLINE, conn.closed()).await.unwrap();
    let ConnectionError::ApplicationClosed(close) = err else {
        panic!("expected an application close, got {err:?}");
    };
    assert_eq!(close.error_code, VarInt::from_u32(codec::CLOSE_VERSION));
    let reason = String::from_utf8_lossy(&close.reason);
    assert!(
        reason.contains("fleetcast/5") && reason.contains("fleetcast/6"),
        "{reason}"
    );
    assert!(reason.contains("upgrade"), "{reason}");
    // The refused peer never became a connection: the next event is a current peer's.
    let (b, _b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    b.dial(a.local_addr()).await.unwrap();
    assert_eq!(connected(&mut a_rx).await.1, b.node_id());
}

#[tokio::test]
async fn dialling_an_older_version_fails_with_a_reason_that_says_to_upgrade() {
    let mut tls = tls::rustls_server_config(&Identity::generate()).unwrap();
    tls.alpn_protocols = vec![b"fleetcast/5".to_vec()];
    let tls = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let old = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(std::sync::Arc::new(tls)),
        localhost(),
    )
    .unwrap();
    let addr = old.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let conn = old.accept().await.unwrap().await.unwrap();
        conn.closed().await
    });
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    let err = b.dial(addr).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, NetError::Version { .. }), "{text}");
    assert!(
        text.contains("fleetcast/5") && text.contains("upgrade"),
        "{text}"
    );
    let closed = timeout(DEADLINE, server).await.unwrap().unwrap();
    assert!(
        matches!(&closed, ConnectionError::ApplicationClosed(c) if c.reason.starts_with(b"protocol version mismatch")),
        "{closed:?}"
    );
    // No event for a refused connection.
    assert!(b.connections().is_empty());
    assert!(b_rx.try_recv().is_err());
}

// ---- admission ----

/// Refuses the node ids it holds (as a revocation would), admits the rest as they say.
#[derive(Debug, Default)]
struct Deny(Mutex<HashSet<NodeId>>);

impl Deny {
    fn reason(node: NodeId) -> String {
        format!(
            "node {} is revoked by root version 7 of fleet lab",
            node.short()
        )
    }

    fn add(&self, node: NodeId) {
        self.0.lock().unwrap().insert(node);
    }
}

impl Admit for Deny {
    fn admit(&self, node: NodeId, hello: &Hello) -> Result<PeerRole, String> {
        if self.0.lock().unwrap().contains(&node) {
            Err(Deny::reason(node))
        } else {
            OpenAdmission.admit(node, hello)
        }
    }
}

fn admitting(deny: &Arc<Deny>, hello: Hello) -> NetConfig {
    NetConfig {
        admit: deny.clone(),
        hello,
        ..NetConfig::default()
    }
}

async fn connected_role(rx: &mut Receiver<NetEvent>) -> (NodeId, PeerRole) {
    match next(rx).await {
        NetEvent::Connected { node, role, .. } => (node, role),
        other => panic!("expected Connected, got {other:?}"),
    }
}

#[tokio::test]
async fn an_admitted_peer_connects_with_its_role() {
    let deny = Arc::new(Deny::default());
    let (a, mut a_rx) = listen(admitting(&deny, Hello::Node { cert: None }));
    let (op, mut op_rx) =
        Net::client(&Identity::generate(), admitting(&deny, Hello::Operator)).unwrap();
    op.dial(a.local_addr()).await.unwrap();
    assert_eq!(
        connected_role(&mut a_rx).await,
        (op.node_id(), PeerRole::Operator)
    );
    assert_eq!(
        connected_role(&mut op_rx).await,
        (a.node_id(), PeerRole::Node)
    );
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    b.dial(a.local_addr()).await.unwrap();
    assert_eq!(
        connected_role(&mut a_rx).await,
        (b.node_id(), PeerRole::Node)
    );
    assert_eq!(
        connected_role(&mut b_rx).await,
        (a.node_id(), PeerRole::Node)
    );
    assert_eq!(a.counters().snapshot().refused, 0);
}

#[tokio::test]
async fn a_refused_dialler_gets_the_reason_and_the_acceptor_emits_nothing() {
    let deny = Arc::new(Deny::default());
    let (a, mut a_rx) = listen(admitting(&deny, Hello::Node { cert: None }));
    let bad_id = Identity::generate();
    deny.add(bad_id.node_id());
    let (bad, mut bad_rx) = Net::client(&bad_id, NetConfig::default()).unwrap();
    let err = bad.dial(a.local_addr()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, NetError::Refused { addr, reason }
            if *addr == a.local_addr() && *reason == Deny::reason(bad_id.node_id())),
        "{text}"
    );
    assert!(text.contains(&Deny::reason(bad_id.node_id())), "{text}");
    assert!(bad.connections().is_empty());
    assert!(bad_rx.try_recv().is_err());
    assert_eq!(bad.counters().snapshot().refused_by_peer, 1);
    assert_eq!(a.counters().snapshot().refused, 1);
    assert_eq!(a.counters().snapshot().connections, 0);
    // The refused peer never became a connection: the next event is a good peer's.
    let (good, _good_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    good.dial(a.local_addr()).await.unwrap();
    assert_eq!(connected_role(&mut a_rx).await.0, good.node_id());
    assert_eq!(a.connections().len(), 1);
}

#[tokio::test]
async fn a_dialler_refuses_an_acceptor_its_policy_refuses() {
    let a_id = Identity::generate();
    let (a, mut a_rx) = Net::bind(localhost(), &a_id, NetConfig::default()).unwrap();
    let deny = Arc::new(Deny::default());
    deny.add(a_id.node_id());
    let (b, mut b_rx) = Net::client(
        &Identity::generate(),
        admitting(&deny, Hello::Node { cert: None }),
    )
    .unwrap();
    let err = b.dial(a.local_addr()).await.unwrap_err();
    assert!(
        matches!(&err, NetError::RefusedPeer { reason, .. } if *reason == Deny::reason(a_id.node_id())),
        "{err}"
    );
    assert!(b.connections().is_empty() && b_rx.try_recv().is_err());
    assert_eq!(b.counters().snapshot().refused, 1);
    // The acceptor registered nothing either: its next event is another peer's.
    let (c, _c_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    c.dial(a.local_addr()).await.unwrap();
    assert_eq!(connected_role(&mut a_rx).await.0, c.node_id());
    assert_eq!(a.counters().snapshot().refused_by_peer, 1);
}

#[tokio::test]
async fn recheck_closes_the_connections_the_policy_now_refuses() {
    let deny = Arc::new(Deny::default());
    let (a, mut a_rx) = listen(admitting(&deny, Hello::Node { cert: None }));
    let (b, mut b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    let (c, mut c_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    b.dial(a.local_addr()).await.unwrap();
    connected_role(&mut a_rx).await;
    connected_role(&mut b_rx).await;
    c.dial(a.local_addr()).await.unwrap();
    connected_role(&mut a_rx).await;
    connected_role(&mut c_rx).await;

    assert_eq!(a.recheck(), 0, "nothing changed, nothing closes");
    deny.add(b.node_id());
    assert_eq!(a.recheck(), 1);
    let reason = Deny::reason(b.node_id());
    let (_, node, why) = disconnected(&mut a_rx).await;
    assert_eq!(node, b.node_id());
    assert!(why.contains(&reason), "{why}");
    let (_, _, why) = disconnected(&mut b_rx).await;
    assert!(why.contains(&reason), "{why}");
    // The other peer stays.
    assert_eq!(a.connections().len(), 1);
    assert_eq!(a.connections()[0].1, c.node_id());
    assert!(
        c.send(c.connections()[0].0, &chunk(b"still here".to_vec()))
            .is_ok()
    );
    assert_eq!(frame(&mut a_rx).await.1, b"still here".to_vec());
    assert_eq!(a.counters().snapshot().refused, 1);
    // And the refused one cannot come back.
    let err = b.dial(a.local_addr()).await.unwrap_err();
    assert!(matches!(err, NetError::Refused { .. }), "{err}");
}

#[tokio::test]
async fn a_hello_that_does_not_decode_closes_the_connection() {
    let (a, mut a_rx) = listen(NetConfig::default());
    let raw = quinn::Endpoint::client(localhost()).unwrap();
    let conn = raw
        .connect_with(old_client(codec::ALPN), a.local_addr(), tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
    s.finish().unwrap();
    let err = timeout(DEADLINE, conn.closed()).await.unwrap();
    let ConnectionError::ApplicationClosed(close) = err else {
        panic!("expected an application close, got {err:?}");
    };
    assert!(
        String::from_utf8_lossy(&close.reason).contains("hello"),
        "{close:?}"
    );
    // A hello above the bound is refused the same way, before it is decoded.
    let conn = raw
        .connect_with(old_client(codec::ALPN), a.local_addr(), tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let _ = s.write_all(&vec![0; codec::MAX_HELLO + 1]).await;
    let _ = s.finish();
    let err = timeout(DEADLINE, conn.closed()).await.unwrap();
    let ConnectionError::ApplicationClosed(close) = err else {
        panic!("expected an application close, got {err:?}");
    };
    let reason = String::from_utf8_lossy(&close.reason).into_owned();
    assert!(
        reason.contains("exceeds the maximum of 8192 bytes"),
        "{reason}"
    );
    let (b, _b_rx) = Net::client(&Identity::generate(), NetConfig::default()).unwrap();
    b.dial(a.local_addr()).await.unwrap();
    assert_eq!(connected_role(&mut a_rx).await.0, b.node_id());
}
