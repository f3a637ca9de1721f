//! A real agent (quinn on loopback, sled, the node actor) with a fleet root and admission:
//! who it lets in, a new root that revokes a connected peer, and what a restart keeps.
//! Synchronisation only waits on events with deadlines.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleetcast_agent::agent::{self, AgentHandle};
use fleetcast_agent::config::AgentConfig;
use fleetcast_net::{Identity, Net, NetConfig, NetError, NetEvent, NetHandle, OpenAdmission};
use fleetcast_protocol::PublicKey;
use fleetcast_protocol::trust::{
    Hello, NodeCert, PeerRole, Role, Roles, Root, SignedNodeCert, SignedRoot,
};
use fleetcast_protocol::wire::{Message, NodeId, TrustMsg};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(20);
const DAY: u64 = 24 * 3600 * 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The fleet's one key: root, release and nodes role.
fn fleet_key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn root_v1() -> SignedRoot {
    let role = Role::new(vec![PublicKey::from(&fleet_key().verifying_key())], 1);
    Root {
        fleet: "prod".into(),
        version: 1,
        epoch: 1,
        issued_ms: now_ms() - 1000,
        expires_ms: now_ms() + 365 * DAY,
        roles: Roles {
            root: role.clone(),
            release: role.clone(),
            nodes: role,
        },
        revoked: Vec::new(),
    }
    .sign(&fleet_key())
}

fn revoking(prev: &SignedRoot, node: NodeId) -> SignedRoot {
    let mut r = prev
        .root
        .next(prev.root.issued_ms + 1, prev.root.expires_ms);
    r.revoked.push(node);
    r.fix_epoch(&prev.root);
    r.sign(&fleet_key())
}

fn cert(node: NodeId) -> SignedNodeCert {
    NodeCert {
        fleet: "prod".into(),
        node,
        issued_ms: now_ms(),
        expires_ms: now_ms() + 90 * DAY,
    }
    .sign(&fleet_key())
}

fn write_json(path: &Path, v: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// An agent config in `dir` with the root file and, if `enrolled`, a certificate for the
/// identity it will have.
fn config(dir: &Path, root: &SignedRoot, enrolled: bool) -> AgentConfig {
    let data = dir.join("data");
    let mut cfg = AgentConfig::with_data_dir(data.clone());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.http = "127.0.0.1:0".parse().unwrap();
    cfg.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.runtime.pooling = false;
    let root_file = dir.join("root.json");
    write_json(&root_file, root);
    cfg.root = Some(root_file);
    if enrolled {
        let id = Identity::load_or_create(data.join("node.key")).unwrap();
        let cert_file: PathBuf = dir.join("node.cert");
        write_json(&cert_file, &cert(id.node_id()));
        cfg.node_cert = Some(cert_file);
    }
    cfg
}

fn client(secret: [u8; 32], hello: Hello) -> (NetHandle, Receiver<NetEvent>) {
    let cfg = NetConfig {
        admit: Arc::new(OpenAdmission),
        hello,
        ..NetConfig::default()
    };
    Net::client(&Identity::from_secret_bytes(&secret), cfg).unwrap()
}

async fn next(rx: &mut Receiver<NetEvent>) -> NetEvent {
    timeout(DEADLINE, rx.recv())
        .await
        .expect("timed out waiting for a net event")
        .expect("event channel closed")
}

async fn metrics(agent: &AgentHandle) -> String {
    let addr = agent.admin_addr().unwrap();
    tokio::task::spawn_blocking(move || {
        fleetcast_agent::cli::admin_request(addr, "GET", "/metrics").unwrap()
    })
    .await
    .unwrap()
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_admits_its_fleet_refuses_strangers_and_cuts_off_the_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = root_v1();
    let cfg = config(dir.path(), &v1, true);
    let a = agent::start(cfg.clone()).await.unwrap();
    let status = a.status().await.unwrap();
    assert_eq!(
        (status.trust.version, status.trust.fleet.as_str()),
        (1, "prod")
    );

    // An enrolled node is admitted, and sees the agent as a node.
    let member = Identity::from_secret_bytes(&[20; 32]).node_id();
    let (m, mut m_rx) = client(
        [20; 32],
        Hello::Node {
            cert: Some(cert(member)),
        },
    );
    let m_conn = m.dial(a.quic_addr()).await.unwrap();
    match next(&mut m_rx).await {
        NetEvent::Connected { node, role, .. } => {
            assert_eq!((node, role), (a.node_id(), PeerRole::Node))
        }
        other => panic!("expected Connected, got {other:?}"),
    }

    // A node without a certificate is refused with what to do.
    let (stranger, mut s_rx) = client([21; 32], Hello::Node { cert: None });
    let err = stranger.dial(a.quic_addr()).await.unwrap_err();
    assert!(matches!(err, NetError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("fleetcast node enroll"), "{err}");
    assert!(s_rx.try_recv().is_err());

    // An operator needs a release key.
    let (op, _op_rx) = client(fleet_key().to_bytes(), Hello::Operator);
    let op_conn = op.dial(a.quic_addr()).await.unwrap();
    let (fake, _f_rx) = client([22; 32], Hello::Operator);
    let err = fake.dial(a.quic_addr()).await.unwrap_err().to_string();
    assert!(err.contains("not a release key"), "{err}");

    // The operator pushes root version 2, which revokes the member: its link is cut.
    let v2 = revoking(&v1, member);
    op.send(op_conn, &Message::Trust(TrustMsg::Roots(vec![v2.clone()])))
        .unwrap();
    let reason = loop {
        match next(&mut m_rx).await {
            NetEvent::Disconnected { conn, reason, .. } if conn == m_conn => break reason,
            _ => continue,
        }
    };
    assert!(reason.contains("revoked by root version 2"), "{reason}");
    // The agent adopts (and persists) the root before it rechecks its links.
    assert_eq!(a.status().await.unwrap().trust.version, 2);
    let err = m.dial(a.quic_addr()).await.unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");

    let text = metrics(&a).await;
    for line in [
        "fleetcast_root_version 2",
        "fleetcast_root_epoch 1",
        "fleetcast_root_expired 0",
        r#"fleetcast_admission_refused_total{reason="not-enrolled"} 1"#,
        r#"fleetcast_admission_refused_total{reason="not-operator"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("fleetcast_admission_refused_total{reason=\"revoked\"} ")),
        "{text}"
    );
    let expires = format!(
        "fleetcast_root_expires_timestamp_seconds {}",
        v2.root.expires_ms / 1000
    );
    assert!(text.lines().any(|l| l == expires), "{text}");

    // A restart with the old root.json keeps the stored version 2.
    a.shutdown().await;
    let a = agent::start(cfg).await.unwrap();
    assert_eq!(a.status().await.unwrap().trust.version, 2);
    let err = m.dial(a.quic_addr()).await.unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_without_a_certificate_does_not_start_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &root_v1(), false);
    let err = agent::start(cfg).await.err().unwrap().to_string();
    assert!(
        err.contains("fleetcast node enroll") && err.contains("node_cert"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_agent_admits_a_node_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), &root_v1(), false);
    cfg.admission = Some(fleetcast_protocol::trust::Admission::Open);
    let a = agent::start(cfg).await.unwrap();
    let (c, mut c_rx) = client([23; 32], Hello::Node { cert: None });
    c.dial(a.quic_addr()).await.unwrap();
    assert!(matches!(next(&mut c_rx).await, NetEvent::Connected { .. }));
    a.shutdown().await;
}
