//! Staged rollouts on real agents (quinn, sled, wasmtime on loopback): a head whose wave
//! includes one agent (the canary) makes it serve the new release while the others keep
//! serving the old one and prefetch the new one (stored and compiled, not swapped in); the next
//! wave's head promotes them with no chunk transfer and no compile; a halt (a rollback head)
//! puts the canary back while the others never serve the new release.

mod common;

use std::time::Duration;

use common::{Fleet, TIMEOUT, guest, serves};
use fleetcast::session::{News, Session};
use fleetcast_agent::agent::AgentHandle;
use fleetcast_protocol::rollout::{self, FULL, Gates, Plan};
use fleetcast_protocol::wire::{NodeStatus, Tally};
use fleetcast_protocol::{AppName, Head, HeadKind, Release, SignedHead};
use tokio::time::Instant;

const POLL: Duration = Duration::from_millis(20);

/// Three agents on v1 (seq 1), without trials (a release commits when it swaps in); v2's
/// content and release.
async fn fleet_on_v1() -> (Fleet, Vec<u8>, Release) {
    let fleet = Fleet::start_with(
        3,
        |i| (0..i).collect(),
        |c| {
            c.trial.requests = 0;
            c.trial.secs = 0;
        },
    )
    .await;
    fleet.release("hello-v1.wasm", "1.0.0").await.unwrap();
    for a in fleet.agents.iter().flatten() {
        assert_eq!(serves(a).await, "1.0.0");
    }
    let content = std::fs::read(guest("hello-v2.wasm")).unwrap();
    let app = AppName::new("hello").unwrap();
    let v2 = Release::build(app, "2.0.0".parse().unwrap(), &content, 16 * 1024).unwrap();
    (fleet, content, v2)
}

/// The index of the one agent a first wave includes, and that wave's fraction: just above
/// the smallest bucket of `release` among the fleet's node ids, so exactly one is included.
fn canary(fleet: &Fleet, release: &Release) -> (usize, u16) {
    let buckets: Vec<u16> = fleet
        .agents
        .iter()
        .flatten()
        .map(|a| rollout::bucket(&release.digest, &a.node_id()))
        .collect();
    println!("wave buckets of {}: {buckets:?}", release.digest.short());
    let (c, min) = buckets
        .iter()
        .enumerate()
        .min_by_key(|(_, b)| **b)
        .map(|(i, b)| (i, *b))
        .unwrap();
    let fraction = min + 1;
    assert!(fraction < FULL, "a bucket this high leaves no second wave");
    for (i, a) in fleet.agents.iter().flatten().enumerate() {
        assert_eq!(
            rollout::includes(&release.digest, &a.node_id(), fraction),
            i == c,
            "exactly the canary is in the first wave"
        );
    }
    (c, fraction)
}

fn signed(
    fleet: &Fleet,
    seq: u64,
    kind: HeadKind,
    release: &Release,
    plan: Option<Plan>,
) -> SignedHead {
    Head {
        fleet: "test".into(),
        app: release.app.clone(),
        seq,
        release: release.clone(),
        kind,
        issued_at_ms: 0,
        epoch: 0,
        plan,
    }
    .sign(&fleetcast_net::keys::read_secret(&fleet.key()).unwrap())
}

/// Pushes `h` to agent 0 (serving `content`) and waits for the fleet's tally of its seq to
/// satisfy `done`. Returns the session (it keeps serving the content) and the tally.
async fn push_until(
    fleet: &Fleet,
    h: &SignedHead,
    content: Option<&[u8]>,
    done: impl Fn(&Tally) -> bool,
) -> (Session, Tally) {
    let mut s = Session::connect(fleet.agent(0).quic_addr(), TIMEOUT)
        .await
        .unwrap();
    if let Some(c) = content {
        s.serve(h.head.release.clone(), c.to_vec());
    }
    s.push_head(h).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    loop {
        let news = s.next_news(deadline).await.unwrap();
        match news {
            Some(News::Tally(t)) if t.seq == h.head.seq => {
                if done(&t) {
                    return (s, t);
                }
                last = Some(t);
            }
            Some(News::Report(r)) if r.seq == h.head.seq => println!("report: {r:?}"),
            Some(_) => {}
            None => panic!(
                "seq {}: the fleet's tally never got there: {last:?}",
                h.head.seq
            ),
        }
    }
}

async fn status(a: &AgentHandle) -> NodeStatus {
    a.status().await.unwrap()
}

/// Waits until `check` holds, polling every [`POLL`] up to [`TIMEOUT`].
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The payload (chunk) frames agent `a` has received, from its `/metrics`.
async fn chunks_received(a: &AgentHandle) -> u64 {
    let addr = a.admin_addr().expect("admin enabled");
    let body = tokio::task::spawn_blocking(move || {
        fleetcast_agent::cli::admin_request(addr, "GET", "/metrics").unwrap()
    })
    .await
    .unwrap()
    .1;
    body.lines()
        .find(|l| l.starts_with("fleetcast_net_frames_received_total{kind=\"payload\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no payload frame counter in /metrics:\n{body}"))
}

/// v2 on the canary, staged (stored and compiled) on the others.
async fn first_wave(fleet: &Fleet, content: &[u8], v2: &Release) -> (usize, Plan, Session) {
    let (c, fraction) = canary(fleet, v2);
    let plan = Plan::new(vec![fraction, FULL], Gates::default()).unwrap();
    let h = signed(fleet, 2, HeadKind::Release, v2, Some(plan.clone()));
    let (s, t) = push_until(fleet, &h, Some(content), |t| {
        t.nodes == 3 && t.active == 1 && t.prefetched == 2
    })
    .await;
    assert_eq!((t.in_wave, t.pending, t.failed), (1, 0, 0), "{t:?}");
    assert_eq!(serves(fleet.agent(c)).await, "2.0.0");
    for (i, a) in fleet.agents.iter().flatten().enumerate() {
        let st = status(a).await;
        let app = &st.apps[0];
        if i == c {
            assert_eq!(
                (app.seq, app.active.version.to_string()),
                (2, "2.0.0".into())
            );
            assert_eq!(app.plan.as_ref().map(|p| p.wave), Some(0));
            continue;
        }
        assert_eq!(serves(a).await, "1.0.0", "agent {i} is outside the wave");
        assert_eq!(app.seq, 1, "agent {i}: the record in force stays v1's");
        let staged = app.staged.as_ref().expect("the v2 head is staged");
        assert_eq!((staged.seq, &staged.release), (2, v2));
        assert!(a.store().has_blob(&v2.digest).unwrap());
        let compat = a.runtime().compat_hash();
        assert!(
            a.store().has_compiled(&v2.digest, &compat).unwrap(),
            "agent {i}: the prefetched release is compiled"
        );
        // The admin's status names it.
        let views = a.supervisor().status().await.unwrap();
        let view = views[0].clone().with_node(Some(app));
        println!("agent {i}: {}", view.summary);
        assert!(
            view.summary.starts_with(
                "hello: serving 1.0.0 (seq 1); 2.0.0 prefetched, seq 2, wave 1 of 2 ("
            ) && view.summary.ends_with(") leaves this agent out"),
            "{}",
            view.summary
        );
    }
    (c, plan, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_serves_the_first_wave_and_the_next_wave_is_a_swap_from_the_prefetch() {
    let (fleet, content, v2) = fleet_on_v1().await;
    let (c, plan, _first) = first_wave(&fleet, &content, &v2).await;

    // The canary's health reaches the fleet's tally: requests on v2, and v1's before the swap.
    for _ in 0..5 {
        assert_eq!(serves(fleet.agent(c)).await, "2.0.0");
    }
    // Before the next wave: what each agent has received and compiled so far.
    let mut before = Vec::new();
    for a in fleet.agents.iter().flatten() {
        before.push((chunks_received(a).await, a.runtime_stats().compiles));
    }
    let next = plan.advanced().unwrap();
    assert_eq!(next.fraction(), FULL);
    let h = signed(&fleet, 3, HeadKind::Release, &v2, Some(next));
    let started = Instant::now();
    let (_s, t) = push_until(&fleet, &h, None, |t| t.active == 3).await;
    let took = started.elapsed();
    println!("next wave: all 3 serve v2 after {took:?}; tally {t:?}");
    assert_eq!((t.nodes, t.in_wave, t.failed, t.pending), (3, 3, 0, 0));
    for (i, a) in fleet.agents.iter().flatten().enumerate() {
        assert_eq!(serves(a).await, "2.0.0", "agent {i}");
        let st = status(a).await;
        assert_eq!(st.apps[0].seq, 3);
        assert!(st.apps[0].staged.is_none());
        let (chunks, compiles) = before[i];
        assert_eq!(
            chunks_received(a).await,
            chunks,
            "agent {i}: no chunk crossed the mesh for the next wave"
        );
        assert_eq!(
            a.runtime_stats().compiles,
            compiles,
            "agent {i}: nothing compiled for the next wave (loaded from the prefetch)"
        );
    }
    assert!(
        took < Duration::from_secs(10),
        "promotion is a head broadcast plus a swap: {took:?}"
    );
    // The canary's requests since its swap are counted for the head in force.
    wait_until("the canary's health is in the fleet's tally", || async {
        let st = status(fleet.agent(0)).await;
        st.fleet_tallies
            .iter()
            .chain(st.tallies.iter())
            .any(|t| t.seq == 3 && t.health_new.requests >= 5 && t.health_old.requests >= 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_puts_the_canary_back_and_the_others_never_serve_the_new_release() {
    let (fleet, content, v2) = fleet_on_v1().await;
    let v1 = status(fleet.agent(0)).await.apps[0].active.clone();
    let (c, _plan, _first) = first_wave(&fleet, &content, &v2).await;
    // The halt: a rollback head to v1, without a plan.
    let h = signed(&fleet, 3, HeadKind::Rollback, &v1, None);
    let (_s, t) = push_until(&fleet, &h, None, |t| t.active == 3).await;
    assert_eq!(t.failed, 0, "{t:?}");
    wait_until("every agent serves v1", || async {
        for a in fleet.agents.iter().flatten() {
            if serves(a).await != "1.0.0" {
                return false;
            }
        }
        true
    })
    .await;
    for (i, a) in fleet.agents.iter().flatten().enumerate() {
        let st = status(a).await;
        let app = &st.apps[0];
        assert_eq!(
            (app.seq, app.active.version.to_string()),
            (3, "1.0.0".into())
        );
        assert!(
            app.staged.is_none(),
            "agent {i}: the halt superseded the staged head"
        );
        let ran: Vec<String> = app
            .history
            .iter()
            .map(|e| e.release.version.to_string())
            .collect();
        if i == c {
            assert_eq!(
                ran,
                ["1.0.0", "2.0.0", "1.0.0"],
                "the canary ran v2 and went back"
            );
        } else {
            assert!(
                !ran.contains(&"2.0.0".to_string()),
                "agent {i} never activated v2: {ran:?}"
            );
            let metrics = a.runtime().metrics().render_prometheus();
            assert!(
                !metrics.contains("version=\"2.0.0\""),
                "agent {i} never served a request on v2"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_does_not_compile_fails_its_prefetch_and_nothing_changes() {
    let (fleet, _, _) = fleet_on_v1().await;
    let junk = std::fs::read(guest("not-a-component.wasm")).unwrap();
    let app = AppName::new("hello").unwrap();
    let bad = Release::build(app, "2.0.0".parse().unwrap(), &junk, 16 * 1024).unwrap();
    let (c, fraction) = canary(&fleet, &bad);
    let plan = Plan::new(vec![fraction, FULL], Gates::default()).unwrap();
    let h = signed(&fleet, 2, HeadKind::Release, &bad, Some(plan));
    // The canary fails its activation, the others their prefetch: all count as failed.
    let (_s, t) = push_until(&fleet, &h, Some(&junk), |t| t.failed == 3).await;
    assert_eq!(
        (t.nodes, t.in_wave, t.active, t.prefetched),
        (3, 1, 0, 0),
        "{t:?}"
    );
    for (i, a) in fleet.agents.iter().flatten().enumerate() {
        assert_eq!(serves(a).await, "1.0.0", "agent {i}");
        let compat = a.runtime().compat_hash();
        assert!(!a.store().has_compiled(&bad.digest, &compat).unwrap());
        if i == c {
            continue;
        }
        let st = status(a).await;
        let err = st.apps[0].last_error.clone().unwrap_or_default();
        assert!(err.starts_with("prefetch: compile: "), "agent {i}: {err}");
        let addr = a.admin_addr().unwrap();
        let (_, metrics) = tokio::task::spawn_blocking(move || {
            fleetcast_agent::cli::admin_request(addr, "GET", "/metrics").unwrap()
        })
        .await
        .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l == r#"fleetcast_prefetches_total{app="hello",result="failed"} 1"#),
            "agent {i}: {metrics}"
        );
        assert!(
            metrics
                .lines()
                .any(|l| l == r#"fleetcast_activations_total{app="hello",result="failed"} 0"#),
            "agent {i}: a failed prefetch is not a failed activation"
        );
    }
}
