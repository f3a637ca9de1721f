//! Everything an agent must refuse, and what it keeps doing meanwhile: the old release keeps
//! serving and nothing of the refused release is stored.

mod common;

use common::{Fleet, TIMEOUT, guest, serves};
use fleetcast::session::Session;
use fleetcast_protocol::wire::Outcome;
use fleetcast_protocol::{AppName, Digest, Head, HeadKind, Release, SignedHead};
use tokio::time::Instant;

/// A head for app `hello` at `seq` over `content`, signed with the key at `key`.
fn head(key: &std::path::Path, seq: u64, version: &str, content: &[u8]) -> SignedHead {
    let app = AppName::new("hello").unwrap();
    Head {
        fleet: "test".into(),
        app: app.clone(),
        seq,
        release: Release::build(app, version.parse().unwrap(), content, 16 * 1024).unwrap(),
        kind: HeadKind::Release,
        issued_at_ms: 0,
        epoch: 0,
        plan: None,
    }
    .sign(&fleetcast_net::keys::read_secret(key).unwrap())
}

/// Pushes `h` (serving `content`) to agent 0 and returns its report.
async fn push(fleet: &Fleet, h: &SignedHead, content: &[u8]) -> anyhow::Result<Outcome> {
    let mut s = Session::connect(fleet.agent(0).quic_addr(), TIMEOUT).await?;
    s.serve(h.head.release.clone(), content.to_vec());
    s.push_head(h)?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let news = s
            .next_news(deadline)
            .await?
            .expect("a report before the deadline");
        let fleetcast::session::News::Report(r) = news else {
            continue;
        };
        if r.seq == h.head.seq && r.node == fleet.agent(0).node_id() {
            return Ok(r.outcome);
        }
    }
}

async fn fleet_on_v1() -> Fleet {
    let fleet = Fleet::start(2, |i| if i == 0 { vec![] } else { vec![0] }).await;
    fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    fleet
}

async fn assert_unchanged(fleet: &Fleet, refused: &Digest) {
    for a in fleet.agents.iter().flatten() {
        assert_eq!(serves(a).await, "1.0.0");
        assert!(
            !a.store().has_blob(refused).unwrap(),
            "refused content was stored"
        );
        let st = a.status().await.unwrap();
        assert_eq!(st.apps[0].seq, 1, "seq moved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_signed_by_an_untrusted_key_is_refused() {
    let fleet = fleet_on_v1().await;
    let rogue = fleet.dir.path().join("rogue.key");
    fleetcast_net::keys::generate(&rogue).unwrap();
    let mut args = fleet.push_args(2);
    args.key = rogue;
    let err = fleet
        .release_with("hello-v2.wasm", "2.0.0", args)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("not release keys") && msg.contains("trusted_keys"),
        "{msg}"
    );
    let v2 = Digest::of(&std::fs::read(guest("hello-v2.wasm")).unwrap());
    assert_unchanged(&fleet, &v2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_head_signature_and_content_are_refused() {
    let fleet = fleet_on_v1().await;
    let v2 = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let good = head(&fleet.key(), 2, "2.0.0", &v2);

    // A byte of the head changed after signing (the version).
    let mut h = good.clone();
    h.head.release.version = "2.0.1".parse().unwrap();
    let o = push(&fleet, &h, &v2).await.unwrap();
    assert!(
        matches!(&o, Outcome::Rejected(r) if r.contains("does not verify")),
        "{o:?}"
    );

    // A byte of the signature changed.
    let mut h = good.clone();
    let mut sig = h.signatures[0].sig.to_bytes();
    sig[10] ^= 1;
    h.signatures[0].sig = ed25519_dalek::Signature::from_bytes(&sig);
    let o = push(&fleet, &h, &v2).await.unwrap();
    assert!(
        matches!(&o, Outcome::Rejected(r) if r.contains("does not verify")),
        "{o:?}"
    );

    // A byte of the content changed: the signed head is fine, the bytes served are not. The
    // agent drops the connection of the peer that served the bad chunk.
    let mut bad = v2.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    let err = push(&fleet, &good, &bad).await.unwrap_err();
    assert!(format!("{err:#}").contains("bad chunk"), "{err:#}");
    assert_unchanged(&fleet, &good.head.release.digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_that_is_not_a_component_is_refused_after_verification() {
    let fleet = fleet_on_v1().await;
    for (seq, name) in (2..).zip(["garbage.bin", "not-a-component.wasm", "wrong-world.wasm"]) {
        let junk = std::fs::read(guest(name)).unwrap();
        // The CLI refuses to sign it at all…
        let cli = fleet
            .release_with(name, "2.0.0", fleet.push_args(2))
            .await
            .unwrap_err();
        assert!(format!("{cli:#}").contains("cannot be released"), "{cli:#}");
        // …and an agent refuses it even when a trusted key signed it.
        // A verified head whose release fails to activate still holds its seq: each try
        // signs the next one.
        let h = head(&fleet.key(), seq, "2.0.0", &junk);
        let o = push(&fleet, &h, &junk).await.unwrap();
        assert!(matches!(&o, Outcome::Failed(_)), "{name}: {o:?}");
        assert_unchanged(&fleet, &h.head.release.digest).await;
        let st = fleet.agent(0).status().await.unwrap();
        let err = st.apps[0].last_error.clone().unwrap();
        assert!(!err.is_empty(), "{name}: the reason shows in status");
        println!("{name}: {err}");
        let st = fleet.agent(0).status().await.unwrap();
        assert!(
            st.seqs
                .iter()
                .any(|(a, s)| a.as_str() == "hello" && s.seq == seq)
        );
    }
    // The CLI reads the seq the failures hold and signs above it: the next release goes in.
    let o = fleet.release("hello-v2.wasm", "2.0.0").await.unwrap();
    assert_eq!(o.head.head.seq, 5);
    assert_eq!(serves(fleet.agent(0)).await, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_older_head_is_refused_also_after_restart() {
    let mut fleet = Fleet::start(1, |_| vec![]).await;
    let v1 = std::fs::read(guest("hello-v1.wasm")).unwrap();
    let v2 = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let h1 = head(&fleet.key(), 1, "1.0.0", &v1);
    let h2 = head(&fleet.key(), 2, "2.0.0", &v2);
    assert_eq!(push(&fleet, &h1, &v1).await.unwrap(), Outcome::Active);
    assert_eq!(push(&fleet, &h2, &v2).await.unwrap(), Outcome::Active);
    assert_eq!(
        push(&fleet, &h1, &v1).await.unwrap(),
        Outcome::Stale { current: 2 }
    );
    assert_eq!(serves(fleet.agent(0)).await, "2.0.0");

    // Restart the agent: the seq it held is durable.
    let cfg = fleet.config(0, vec![]);
    fleet.agents[0].take().unwrap().shutdown().await;
    fleet.agents[0] = Some(fleetcast_agent::agent::start(cfg).await.unwrap());
    assert_eq!(
        push(&fleet, &h1, &v1).await.unwrap(),
        Outcome::Stale { current: 2 }
    );
    assert_eq!(serves(fleet.agent(0)).await, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_an_undecodable_frame_is_disconnected_with_the_reason() {
    use fleetcast_net::{Net, NetConfig, NetEvent};
    let fleet = fleet_on_v1().await;
    let (net, mut events) =
        Net::client(&fleetcast_net::Identity::generate(), NetConfig::default()).unwrap();
    let conn = net.dial(fleet.agent(0).quic_addr()).await.unwrap();
    net.send_frame(conn, vec![0xff; 64], 0).unwrap();
    let reason = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(NetEvent::Disconnected {
                conn: c, reason, ..
            }) = events.recv().await
                && c == conn
            {
                return reason;
            }
        }
    })
    .await
    .expect("disconnected before the deadline");
    assert!(reason.contains("does not decode"), "{reason}");
    assert_eq!(
        serves(fleet.agent(0)).await,
        "1.0.0",
        "the agent keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_released_again_with_other_bytes_is_refused() {
    let fleet = fleet_on_v1().await;
    let other = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let h = head(&fleet.key(), 2, "1.0.0", &other);
    let outcome = push(&fleet, &h, &other).await.unwrap();
    let Outcome::Rejected(why) = &outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert!(
        why.contains("hello 1.0.0 is already released with other bytes")
            && why.contains("release these bytes as a new version"),
        "{why}"
    );
    assert_unchanged(&fleet, &h.head.release.digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_names_the_flag_that_moves_it() {
    let fleet = Fleet::start(1, |_| vec![]).await;
    let a = fleet.agent(0);
    let cases = [
        ("--http ADDR", "http"),
        ("--listen ADDR", "listen"),
        ("--admin ADDR", "admin"),
    ];
    for (i, (flag, which)) in cases.into_iter().enumerate() {
        let mut cfg = fleet.config(1 + i, vec![]);
        match which {
            "http" => cfg.http = a.http_addr(),
            "listen" => cfg.listen = a.quic_addr(),
            _ => cfg.admin.listen = a.admin_addr(),
        }
        let err = fleetcast_agent::agent::start(cfg)
            .await
            .err()
            .expect("the address is taken")
            .to_string();
        assert!(
            err.contains(flag) && err.contains("another process"),
            "{which}: {err}"
        );
        if which == "admin" {
            assert!(err.contains("--admin off"), "{err}");
        }
    }
}
