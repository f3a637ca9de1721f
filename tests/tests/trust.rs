//! The attack corpus over real QUIC: agents on loopback (real quinn, sled and wasmtime) in a
//! fleet with a root (`fleetcast fleet init`: 2-of-3 root keys, 2-of-3 release keys, an enroll
//! key), each enrolled (`fleetcast node enroll`); the operator is the real `fleetcast` binary;
//! the attacker speaks the wire protocol directly where the CLI would refuse to.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::{Run, cli_bin, fleetcast};
use common::{Fleet, TIMEOUT, guest, serves};
use fleetcast::session::{News, Session};
use fleetcast::target::Target;
use fleetcast_agent::agent::AgentHandle;
use fleetcast_net::{Identity, Net, NetConfig, NetError, NetEvent};
use fleetcast_protocol::wire::{Message, Outcome, Tally, TallyMsg};
use fleetcast_protocol::{AppName, Head, HeadKind, Hello, NodeId, Release, SignedHead};
use tokio::time::Instant;

/// A fleet of `n` enrolled agents (agent `i > 0` joins through agent 0) and its fleet directory.
struct Trusted {
    fleet: Fleet,
    /// The fleet directory (`root.json`, `roots/`, `keys/`): the operator's side.
    dir: PathBuf,
    _keep: tempfile::TempDir,
}

fn run_sync(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(cli_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("fleetcast runs");
    assert!(out.status.success(), "fleetcast {args:?}: {out:?}");
    out
}

impl Trusted {
    async fn start(n: usize) -> Trusted {
        let keep = tempfile::tempdir().unwrap();
        let dir = keep.path().join("fleet");
        let d = dir.display().to_string();
        let bin = tokio::task::spawn_blocking(cli_bin).await.unwrap();
        assert!(bin.exists());
        fleetcast(&[
            "fleet",
            "init",
            "--out",
            &d,
            "--fleet-name",
            "test",
            "--root-keys",
            "3",
            "--root-threshold",
            "2",
            "--release-keys",
            "3",
            "--release-threshold",
            "2",
        ])
        .await
        .expect(0);
        let root = dir.join("root.json");
        let fd = dir.clone();
        let fleet = Fleet::start_with(
            n,
            |i| if i == 0 { vec![] } else { vec![0] },
            move |cfg| {
                cfg.trusted_keys.clear();
                cfg.root = Some(root.clone());
                let id = Identity::load_or_create(cfg.data_dir.join("node.key")).unwrap();
                let cert = cfg.data_dir.join("node.cert");
                run_sync(&[
                    "node",
                    "enroll",
                    "--fleet",
                    &fd.display().to_string(),
                    "--node",
                    &id.node_id().to_string(),
                    "--out",
                    &cert.display().to_string(),
                ]);
                cfg.node_cert = Some(cert);
            },
        )
        .await;
        Trusted {
            fleet,
            dir,
            _keep: keep,
        }
    }

    fn key(&self, name: &str) -> String {
        self.dir
            .join("keys")
            .join(format!("{name}.key"))
            .display()
            .to_string()
    }

    fn peer(&self) -> String {
        self.fleet.agent(0).quic_addr().to_string()
    }

    /// `fleetcast release FILE --app hello --version V --key K… --peer agent0` plus `more`.
    async fn release(&self, file: &str, version: &str, keys: &[&str], more: &[&str]) -> Run {
        let file = guest(file).display().to_string();
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let peer = self.peer();
        let mut args = vec!["release", &file, "--app", "hello", "--version", version];
        for k in &keys {
            args.extend(["--key", k]);
        }
        args.extend(["--peer", &peer]);
        args.extend_from_slice(more);
        fleetcast(&args).await
    }

    /// `fleetcast fleet rotate --replace WHAT` signed by root-1 and root-2, then `fleet push`.
    async fn rotate_and_push(&self, args: &[&str]) {
        let d = self.dir.display().to_string();
        let (r1, r2) = (self.key("root-1"), self.key("root-2"));
        let mut a = args.to_vec();
        a.extend(["--fleet", &d, "--root-key", &r1, "--root-key", &r2]);
        fleetcast(&a).await.expect(0);
        self.push_roots().await;
    }

    async fn push_roots(&self) {
        let (d, peer, key) = (
            self.dir.display().to_string(),
            self.peer(),
            self.key("release-2"),
        );
        fleetcast(&[
            "fleet", "push", "--fleet", &d, "--peer", &peer, "--key", &key,
        ])
        .await
        .expect(0);
    }

    /// Waits until every running agent holds root `version`.
    async fn wait_root(&self, version: u64) {
        let deadline = Instant::now() + TIMEOUT;
        for a in self.fleet.agents.iter().flatten() {
            loop {
                let st = a.status().await.unwrap();
                if st.trust.version >= version {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "agent {} still at root version {}",
                    a.node_id().short(),
                    st.trust.version
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn secret(path: &str) -> ed25519_dalek::SigningKey {
    fleetcast_net::keys::read_secret(Path::new(path)).unwrap()
}

/// Pushes `h` (serving `content`) to `addr` as the operator holding `as_key`; returns the
/// peer agent's report.
async fn push_raw(
    addr: SocketAddr,
    as_key: &ed25519_dalek::SigningKey,
    agent: NodeId,
    h: &SignedHead,
    content: &[u8],
) -> Outcome {
    let mut s = Session::connect_as(&Target::addr(addr, TIMEOUT), Some(as_key))
        .await
        .unwrap();
    s.serve(h.head.release.clone(), content.to_vec());
    s.push_head(h).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let news = s
            .next_news(deadline)
            .await
            .unwrap()
            .expect("a report in time");
        if let News::Report(r) = news
            && r.seq == h.head.seq
            && r.node == agent
        {
            return r.outcome;
        }
    }
}

fn head(epoch: u64, seq: u64, version: &str, content: &[u8]) -> Head {
    let app = AppName::new("hello").unwrap();
    Head {
        fleet: "test".into(),
        app: app.clone(),
        seq,
        release: Release::build(app, version.parse().unwrap(), content, 16 * 1024).unwrap(),
        kind: HeadKind::Release,
        issued_at_ms: fleetcast::fleetdir::now_ms(),
        epoch,
        plan: None,
    }
}

async fn seq_of(a: &AgentHandle) -> (u64, u64) {
    let st = a.status().await.unwrap();
    (st.apps[0].epoch, st.apps[0].seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_forwarded_app_is_recovered_by_rotating_the_release_key() {
    let t = Trusted::start(3).await;
    t.release(
        "hello-v1.wasm",
        "1.0.0",
        &["release-1", "release-2"],
        &["--wait", "--expect", "3"],
    )
    .await
    .expect(0);

    // Two release keys leak (or a script goes wrong): a head at seq 2^64-2 is valid, and the
    // fleet takes it; one more release signs 2^64-1.
    let ff = t.dir.join("ff.head").display().to_string();
    let seq = (u64::MAX - 1).to_string();
    t.release(
        "hello-v2.wasm",
        "2.0.0",
        &["release-1", "release-2"],
        &[
            "--sign-only",
            "--seq",
            &seq,
            "--epoch",
            "1",
            "--fleet-name",
            "test",
            "--out",
            &ff,
        ],
    )
    .await
    .expect(0);
    let (peer, k1) = (t.peer(), t.key("release-1"));
    fleetcast(&[
        "push", &ff, "--peer", &peer, "--key", &k1, "--wait", "--expect", "3",
    ])
    .await
    .expect(0);
    t.release(
        "hello-v1.wasm",
        "2.0.1",
        &["release-1", "release-2"],
        &["--wait"],
    )
    .await
    .expect(0);
    for a in t.fleet.agents.iter().flatten() {
        assert_eq!(seq_of(a).await, (1, u64::MAX));
    }
    // The seq is used up in this epoch: a clear refusal, no overflow panic.
    let r = t
        .release("hello-v2.wasm", "2.0.2", &["release-1", "release-2"], &[])
        .await;
    assert_ne!(r.code, 0, "{r:#?}");
    assert!(
        r.stderr.contains("seq exhausted") && r.stderr.contains("fleet rotate"),
        "{r:#?}"
    );
    assert!(!r.stderr.contains("panicked"), "{r:#?}");

    // Recovery: rotate the leaked key out. The release role changed, so epoch 2 starts, and
    // its seqs start at 1. No node is touched: the root spreads through the mesh.
    t.rotate_and_push(&["fleet", "rotate", "--replace", "release-1"])
        .await;
    t.wait_root(2).await;
    t.release(
        "hello-v2.wasm",
        "3.0.0",
        &["release-2", "release-3"],
        &["--wait", "--expect", "3"],
    )
    .await
    .expect(0);
    for a in t.fleet.agents.iter().flatten() {
        assert_eq!(seq_of(a).await, (2, 1));
        assert_eq!(a.status().await.unwrap().trust.epoch, 2);
    }
    // The fast-forwarded head of the old epoch is refused, however high its seq.
    // The CLI will not send it…
    let r = fleetcast(&["push", &ff, "--peer", &peer, "--key", &t.key("release-2")]).await;
    r.expect(2);
    assert!(
        r.stderr.contains("epoch 1") && r.stderr.contains("epoch 2"),
        "{r:#?}"
    );
    // …and an agent handed it anyway refuses it.
    let file = fleetcast::headfile::HeadFile::read(Path::new(&ff)).unwrap();
    let content = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let agent = t.fleet.agent(0);
    let op = secret(&t.key("release-2"));
    let out = push_raw(
        agent.quic_addr(),
        &op,
        agent.node_id(),
        &file.head,
        &content,
    )
    .await;
    assert!(
        matches!(&out, Outcome::Rejected(r) if r.contains("epoch 1") && r.contains("rotated")),
        "{out:?}"
    );
    assert_eq!(seq_of(agent).await, (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_signed_with_a_revoked_release_key_is_refused() {
    let t = Trusted::start(2).await;
    t.release(
        "hello-v1.wasm",
        "1.0.0",
        &["release-1", "release-2"],
        &["--wait", "--expect", "2"],
    )
    .await
    .expect(0);
    let old = t.dir.join("keys/old/release-1.v1.key");
    let leaked = t.dir.join("leaked.key").display().to_string();
    std::fs::copy(t.dir.join("keys/release-1.key"), &leaked).unwrap();
    t.rotate_and_push(&["fleet", "rotate", "--replace", "release-1"])
        .await;
    t.wait_root(2).await;
    assert!(old.exists(), "the rotated-out key is kept aside");

    // The leaked key and one good key, at the new epoch: only one counts.
    let content = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let mut sh = head(2, 1, "2.0.0", &content).sign(&secret(&leaked));
    sh.add_signature(&secret(&t.key("release-2")));
    let agent = t.fleet.agent(0);
    let op = secret(&t.key("release-2"));
    let out = push_raw(agent.quic_addr(), &op, agent.node_id(), &sh, &content).await;
    let Outcome::Rejected(reason) = out else {
        panic!("accepted: {out:?}")
    };
    assert!(
        reason.contains("1 distinct release key") && reason.contains("needs 2"),
        "{reason}"
    );
    // The leaked key cannot connect as an operator either.
    let r = fleetcast(&["status", "--peer", &t.peer(), "--key", &leaked]).await;
    r.expect(1);
    assert!(r.stderr.contains("not a release key"), "{r:#?}");
    for a in t.fleet.agents.iter().flatten() {
        assert_eq!(serves(a).await, "1.0.0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_with_one_signature_under_a_2_of_3_policy_is_refused() {
    let t = Trusted::start(2).await;
    t.release(
        "hello-v1.wasm",
        "1.0.0",
        &["release-1", "release-2"],
        &["--wait", "--expect", "2"],
    )
    .await
    .expect(0);
    // The CLI refuses to send it…
    let r = t
        .release("hello-v2.wasm", "2.0.0", &["release-1"], &[])
        .await;
    r.expect(2);
    assert!(r.stderr.contains("fleetcast sign"), "{r:#?}");
    // …and an agent handed it anyway refuses it; nothing of it is stored.
    let content = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let sh = head(1, 2, "2.0.0", &content).sign(&secret(&t.key("release-1")));
    let agent = t.fleet.agent(0);
    let op = secret(&t.key("release-1"));
    let out = push_raw(agent.quic_addr(), &op, agent.node_id(), &sh, &content).await;
    assert!(
        matches!(&out, Outcome::Rejected(r) if r.contains("needs 2")),
        "{out:?}"
    );
    assert!(!agent.store().has_blob(&sh.head.release.digest).unwrap());
    // A second holder signs the head file and it goes through.
    let file = t.dir.join("two.head").display().to_string();
    t.release(
        "hello-v2.wasm",
        "2.0.0",
        &["release-1"],
        &["--sign-only", "--out", &file],
    )
    .await
    .expect(0);
    let d = t.dir.display().to_string();
    fleetcast(&["sign", &file, "--key", &t.key("release-3"), "--fleet", &d])
        .await
        .expect(0);
    fleetcast(&[
        "push",
        &file,
        "--peer",
        &t.peer(),
        "--key",
        &t.key("release-3"),
        "--wait",
        "--expect",
        "2",
    ])
    .await
    .expect(0);
    for a in t.fleet.agents.iter().flatten() {
        assert_eq!(serves(a).await, "2.0.0");
    }
}

/// Dials `addr` with a fresh identity saying `hello`; returns the dial's outcome.
async fn dial_as_stranger(addr: SocketAddr, hello: Hello) -> Result<(), NetError> {
    let cfg = NetConfig {
        hello,
        ..NetConfig::default()
    };
    let (net, _events) = Net::client(&Identity::generate(), cfg).unwrap();
    net.dial(addr).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unenrolled_node_and_a_stranger_operator_are_refused_at_the_handshake() {
    let t = Trusted::start(1).await;
    let agent = t.fleet.agent(0);
    let before = agent.status().await.unwrap().links;
    let err = dial_as_stranger(agent.quic_addr(), Hello::Node { cert: None })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NetError::Refused { .. }), "{msg}");
    assert!(
        msg.contains("presented no certificate") && msg.contains("fleetcast node enroll"),
        "{msg}"
    );
    let err = dial_as_stranger(agent.quic_addr(), Hello::Operator)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a release key"), "{err}");
    // `fleetcast status` from a stranger is refused with the reason, exit 1; with a release
    // key it answers.
    let r = fleetcast(&["status", "--peer", &t.peer()]).await;
    r.expect(1);
    assert!(
        r.stderr.contains("not a release key") && r.stderr.contains("--key"),
        "{r:#?}"
    );
    fleetcast(&["status", "--peer", &t.peer(), "--key", &t.key("release-3")])
        .await
        .expect(0);
    // The admitted operator's link closes when its process exits; the agent hears the close a
    // moment later (on a loaded machine, not always before the next status request).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let links = agent.status().await.unwrap().links;
        if links == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a link was kept: {links} links, {before} before"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_tally_counts_for_nothing() {
    let t = Trusted::start(2).await;
    t.release(
        "hello-v1.wasm",
        "1.0.0",
        &["release-1", "release-2"],
        &["--wait", "--expect", "2"],
    )
    .await
    .expect(0);
    let agent = t.fleet.agent(0);
    let (_, seq) = seq_of(agent).await;
    let forged = Message::Tally(TallyMsg::Subtree(Tally {
        app: Some(AppName::new("hello").unwrap()),
        seq,
        active: 1_000_000,
        version: u64::MAX,
        ..Tally::default()
    }));
    // An unenrolled client cannot even connect to send it.
    let err = dial_as_stranger(agent.quic_addr(), Hello::Node { cert: None }).await;
    assert!(matches!(err, Err(NetError::Refused { .. })), "{err:?}");
    // An operator may connect, but counts come only from enrolled nodes.
    let cfg = NetConfig {
        hello: Hello::Operator,
        ..NetConfig::default()
    };
    let op = Identity::from_secret_bytes(&secret(&t.key("release-1")).to_bytes());
    let (net, mut events) = Net::client(&op, cfg).unwrap();
    let conn = net.dial(agent.quic_addr()).await.unwrap();
    net.send(conn, &forged).unwrap();
    // Ask for status on the same link after it: the agent answers once it has read both.
    net.send(conn, &Message::StatusRequest).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let NetEvent::Message {
            msg: Message::Status(_),
            ..
        } = ev
        {
            break;
        }
    }
    for _ in 0..20 {
        let st = agent.status().await.unwrap();
        for tl in st.tallies.iter().chain(&st.fleet_tallies) {
            assert!(tl.active <= 2, "a forged count was taken: {tl:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the CLI's N of M stays honest: 3 agents are not to be had.
    let r = t
        .release(
            "hello-v2.wasm",
            "2.0.0",
            &["release-1", "release-2"],
            &["--expect", "3", "--timeout", "5"],
        )
        .await;
    r.expect(4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_and_gets_no_more_releases() {
    let t = Trusted::start(3).await;
    t.release(
        "hello-v1.wasm",
        "1.0.0",
        &["release-1", "release-2"],
        &["--wait", "--expect", "3"],
    )
    .await
    .expect(0);
    let revoked = t.fleet.agent(2).node_id();
    let d = t.dir.display().to_string();
    let (r1, r3) = (t.key("root-1"), t.key("root-3"));
    fleetcast(&[
        "node",
        "revoke",
        "--fleet",
        &d,
        "--node",
        &revoked.to_string(),
        "--root-key",
        &r1,
        "--root-key",
        &r3,
    ])
    .await
    .expect(0);
    t.push_roots().await;
    // Every agent that learns of it closes the revoked node's links.
    let deadline = Instant::now() + TIMEOUT;
    for i in [0, 1] {
        let a = t.fleet.agent(i);
        loop {
            let st = a.status().await.unwrap();
            let linked = st.active_view.iter().any(|p| p.node == revoked);
            if st.trust.version >= 2 && !linked {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "agent {i} still linked to the revoked node"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A new release reaches the fleet but not the revoked node, which keeps what it ran.
    t.release(
        "hello-v2.wasm",
        "2.0.0",
        &["release-1", "release-2"],
        &["--wait"],
    )
    .await
    .expect(0);
    assert_eq!(serves(t.fleet.agent(0)).await, "2.0.0");
    assert_eq!(serves(t.fleet.agent(1)).await, "2.0.0");
    assert_eq!(serves(t.fleet.agent(2)).await, "1.0.0");
    let st = t.fleet.agent(0).status().await.unwrap();
    assert!(st.active_view.iter().all(|p| p.node != revoked));
}
