//! Staged rollouts on the node: a head's wave decides whether a node activates its release or
//! only prefetches it; the next wave swaps from what was prefetched; a halt (a rollback)
//! brings the canaries back; every node counts itself and its health up the tree.

use super::*;
use crate::rollout::{FULL, Gates, Health, Plan, bucket};
use crate::wire::{Outcome, Tally};

/// `sh` with `plan`, signed again.
fn with_plan(sh: &SignedHead, plan: Plan, seq: u64) -> SignedHead {
    let mut h = sh.head.clone();
    h.plan = Some(plan);
    h.seq = seq;
    h.sign(&scenario::publisher_key())
}

/// A first wave that includes exactly the nodes of `net` whose bucket for `sh` is below the
/// median: (plan, the nodes included).
fn split(net: &Net, sh: &SignedHead) -> (Plan, Vec<usize>) {
    let digest = sh.head.release.digest;
    let mut buckets: Vec<(u16, usize)> = (0..net.nodes.len())
        .map(|i| (bucket(&digest, &net.nodes[i].status().node), i))
        .collect();
    buckets.sort();
    let cut = buckets[buckets.len() / 2].0;
    let included: Vec<usize> = {
        let mut v: Vec<usize> = buckets
            .iter()
            .filter(|(b, _)| *b < cut)
            .map(|(_, i)| *i)
            .collect();
        v.sort();
        v
    };
    let plan = Plan::new(vec![cut, FULL], Gates::default()).unwrap();
    (plan, included)
}

/// `sh` as a one-wave rollout (100%) with a 1 s bake, at `seq`.
fn whole_fleet(sh: &SignedHead, seq: u64) -> SignedHead {
    let gates = Gates {
        bake_ms: 1000,
        ..Gates::default()
    };
    with_plan(sh, Plan::new(vec![FULL], gates).unwrap(), seq)
}

/// The newest subtree tally the fake `p` heard for `seq`.
fn last_tally(net: &mut Net, p: usize, seq: u64) -> Tally {
    net.take(p)
        .into_iter()
        .filter_map(|m| match m {
            Message::Tally(TallyMsg::Subtree(t)) if t.seq == seq => Some(t),
            _ => None,
        })
        .max_by_key(|t| t.version)
        .expect("the root reports to the publisher")
}

fn activated(net: &Net, i: usize, seq: u64) -> bool {
    net.activations
        .iter()
        .any(|(n, a)| *n == i && a.head.head.seq == seq)
}

fn prefetched(net: &Net, i: usize, seq: u64) -> bool {
    net.prefetches
        .iter()
        .any(|(n, p)| *n == i && p.head.head.seq == seq)
}

/// v1 everywhere, then v2 staged: nodes in the first wave activate it, the others prefetch it
/// (stored and compiled, not swapped in) and keep v1; all count themselves; the next wave's
/// head activates v2 everywhere from what is stored (no content asked for); a halt brings
/// the canaries back to v1.
#[test]
fn a_wave_activates_its_nodes_and_the_others_prefetch_then_swap() {
    let mut net = Net::new(6, |i| (0..i).collect());
    let (b1, b2) = (scenario::content(1, 40_000), scenario::content(2, 40_000));
    let v1 = head(1, &b1);
    net.publish(0, &v1, &b1);
    net.run();
    assert!((0..6).all(|i| net.seq(i) == Some(1)));

    let v2 = signed("shop", 2, &b2, 8 * 1024, HeadKind::Release);
    let (plan, canaries) = split(&net, &v2);
    assert!(!canaries.is_empty() && canaries.len() < 6, "{canaries:?}");
    let w1 = with_plan(&v2, plan.clone(), 2);
    let (p, _) = net.publish(0, &w1, &b2);
    net.run();
    for i in 0..6 {
        let canary = canaries.contains(&i);
        assert_eq!(activated(&net, i, 2), canary, "node {i} activation");
        assert_eq!(prefetched(&net, i, 2), !canary, "node {i} prefetch");
        let st = net.nodes[i].status();
        let shop = &st.apps[0];
        if canary {
            assert_eq!(shop.seq, 2, "node {i}");
            assert_eq!(shop.plan.as_ref(), Some(&plan));
            assert!(shop.staged.is_none());
        } else {
            assert_eq!(shop.seq, 1, "node {i} keeps v1 in force");
            let staged = shop.staged.as_ref().expect("v2 staged");
            assert_eq!((staged.seq, staged.release.digest), (2, Digest::of(&b2)));
            assert_eq!(net.nodes[i].position(&app()), at(2), "node {i} holds seq 2");
            assert!(
                st.reports
                    .iter()
                    .any(|r| r.seq == 2 && r.outcome == Outcome::Prefetched),
                "node {i}"
            );
        }
    }
    net.advance(Duration::from_millis(300));
    let t = last_tally(&mut net, p, 2);
    let k = canaries.len() as u32;
    assert_eq!(
        (
            t.nodes,
            t.in_wave,
            t.active,
            t.prefetched,
            t.pending,
            t.failed
        ),
        (6, k, k, 6 - k, 0, 0),
        "{t:?}"
    );

    // The last wave: the same release at 100%, from the store (no chunk asked for again).
    let asked_before =
        net.count_all(|m| matches!(m, Message::Content(ContentMsg::GetChunk { .. })));
    let w2 = with_plan(&v2, plan.advanced().unwrap(), 3);
    let (p2, _) = net.publish(0, &w2, &b2);
    net.run();
    for i in 0..6 {
        let a = net
            .activations
            .iter()
            .find(|(n, a)| *n == i && a.head.head.seq == 3)
            .unwrap_or_else(|| panic!("node {i} activates the last wave"));
        assert!(a.1.content.is_none(), "node {i} activates from its store");
        assert_eq!(net.seq(i), Some(3));
        assert!(net.nodes[i].status().apps[0].staged.is_none());
    }
    let asked_after = net.count_all(|m| matches!(m, Message::Content(ContentMsg::GetChunk { .. })));
    assert_eq!(
        asked_before, asked_after,
        "no chunk was fetched for the last wave"
    );
    net.advance(Duration::from_millis(300));
    let t = last_tally(&mut net, p2, 3);
    assert_eq!((t.nodes, t.in_wave, t.active), (6, 6, 6), "{t:?}");

    // A halt instead (a rollback to v1): every node activates v1 from its store.
    let mut halt = v1.head.clone();
    halt.seq = 4;
    halt.kind = HeadKind::Rollback;
    let halt = halt.sign(&scenario::publisher_key());
    net.publish(0, &halt, &b1);
    net.run();
    for i in 0..6 {
        assert_eq!(net.seq(i), Some(4));
        assert_eq!(
            net.nodes[i].app(&app()).unwrap().head.head.release.digest,
            Digest::of(&b1)
        );
    }
}

/// A node outside the wave whose prefetch fails (the release would not compile) counts as
/// failed, so the failed gate halts the rollout before the release reaches it.
#[test]
fn a_prefetch_that_fails_counts_failed() {
    let mut net = Net::new(4, |i| (0..i).collect());
    net.auto_activate = true;
    let (b1, b2) = (scenario::content(1, 20_000), scenario::content(2, 20_000));
    net.publish(0, &head(1, &b1), &b1);
    net.run();
    let v2 = signed("shop", 2, &b2, 8 * 1024, HeadKind::Release);
    let (plan, canaries) = split(&net, &v2);
    net.auto_activate = false;
    let w1 = with_plan(&v2, plan, 2);
    let (p, _) = net.publish(0, &w1, &b2);
    net.run();
    let outsider = (0..4).find(|i| !canaries.contains(i)).unwrap();
    for (i, a) in std::mem::take(&mut net.activations) {
        let h = &a.head.head;
        let (app, seq) = (h.app.clone(), h.seq);
        net.input(
            i,
            Input::Activated {
                app,
                seq,
                result: Ok(()),
            },
        );
    }
    for (i, pf) in std::mem::take(&mut net.prefetches) {
        let h = &pf.head.head;
        let result = if i == outsider {
            Err(ActivationError::Refused {
                stage: "compile".into(),
                reason: "not a component".into(),
            })
        } else {
            Ok(())
        };
        let (app, seq) = (h.app.clone(), h.seq);
        net.input(i, Input::Prefetched { app, seq, result });
    }
    net.run();
    net.advance(Duration::from_millis(300));
    let t = last_tally(&mut net, p, 2);
    assert_eq!(t.failed, 1, "{t:?}");
    assert_eq!(t.nodes, 4);
    let st = net.nodes[outsider].status();
    assert!(
        st.apps[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("prefetch: compile")),
        "{:?}",
        st.apps[0].last_error
    );
    assert!(
        st.apps[0].staged.is_none(),
        "a failed prefetch is not staged"
    );
    assert_eq!(net.seq(outsider), Some(1), "v1 keeps serving");
}

/// Health the shell reports for the release a node runs is summed up the tree; reports for
/// another release, or from a node that does not run the head's release, count for nothing.
#[test]
fn health_is_summed_up_the_tree_for_the_release_that_runs() {
    let mut net = Net::new(3, |i| (0..i).collect());
    let body = scenario::content(1, 20_000);
    let sh = whole_fleet(&head(1, &body), 1);
    let (p, _) = net.publish(0, &sh, &body);
    net.run();
    let digest = sh.head.release.digest;
    let mut new = Health::default();
    for _ in 0..10 {
        new.record(Duration::from_millis(3), false);
    }
    new.record(Duration::from_millis(3), true);
    let mut old = Health::default();
    old.record(Duration::from_millis(1), false);
    for i in 0..3 {
        let (new, old) = (new.clone(), old.clone());
        net.input(
            i,
            Input::Health {
                app: app(),
                digest,
                new,
                old,
            },
        );
    }
    // Another release's numbers are not this head's.
    let other = Digest::of(b"another release");
    let mut noise = Health::default();
    noise.record(Duration::from_millis(1), true);
    net.input(
        1,
        Input::Health {
            app: app(),
            digest: other,
            new: noise.clone(),
            old: noise,
        },
    );
    net.run();
    net.advance(Duration::from_millis(500));
    let t = last_tally(&mut net, p, 1);
    assert_eq!(t.health_new.requests, 33, "{t:?}");
    assert_eq!(t.health_new.errors, 3);
    assert_eq!(t.health_old.requests, 3);
    assert_eq!(t.health_new.p99_ms(), Some(5));
}

/// While a wave serves, health changes every second, so the root's count is never still for
/// `FLEET_SETTLE`: it still comes down the tree within `FLEET_MAX_WAIT`, so `rollout status`
/// at any agent is live.
#[test]
fn a_count_that_keeps_changing_still_comes_down_the_tree() {
    use crate::node::tally::{FLEET_MAX_WAIT, FLEET_SETTLE};
    let mut net = Net::new(3, |i| (0..i).collect());
    let body = scenario::content(1, 20_000);
    let sh = whole_fleet(&head(1, &body), 1);
    net.publish(0, &sh, &body);
    net.run();
    net.advance(FLEET_SETTLE * 2);
    let digest = sh.head.release.digest;
    let mut new = Health::default();
    let step = FLEET_SETTLE / 2;
    let mut waited = Duration::ZERO;
    let mut seen = 0;
    while waited < FLEET_MAX_WAIT * 2 {
        new.record(Duration::from_millis(2), false);
        let (h, old) = (new.clone(), Health::default());
        net.input(
            2,
            Input::Health {
                app: app(),
                digest,
                new: h,
                old,
            },
        );
        net.advance(step);
        waited += step;
        let fleet = net.nodes[1].status().fleet_tallies;
        seen = seen.max(fleet.first().map_or(0, |t| t.health_new.requests));
        if waited >= FLEET_MAX_WAIT + step {
            assert!(
                seen > 0,
                "after {waited:?} of changes node 1 still saw no request (seed-free, replay: \
                 cargo test -p fleetcast-protocol a_count_that_keeps)"
            );
        }
    }
}

/// A node restarted after prefetching holds the content in its store but no record names it:
/// when the staged head comes back (anti-entropy, or the next wave), it is used from the store,
/// not fetched again.
#[test]
fn content_prefetched_before_a_restart_is_used_from_the_store() {
    let mut net = Net::new(1, |_| vec![]);
    let (b1, b2) = (scenario::content(1, 40_000), scenario::content(2, 40_000));
    let v1 = head(1, &b1);
    net.publish(0, &v1, &b1);
    net.run();
    let record = net.nodes[0].app(&app()).unwrap().clone();
    let v2 = signed("shop", 2, &b2, 8 * 1024, HeadKind::Release);
    let (d1, d2) = (Digest::of(&b1), Digest::of(&b2));
    // Node 1: the same record, and v2's content held loose (prefetched before the restart).
    net.add(1, vec![], [record], [d1, d2]);
    net.run();
    let me = net.nodes[1].status().node;
    let plan = |frac| Plan::new(vec![frac, FULL], Gates::default()).unwrap();
    let b = bucket(&d2, &me);
    // A first wave that leaves node 1 out: staged at once, nothing fetched or compiled.
    let out = with_plan(&v2, plan(b.max(1)), 2);
    let asked =
        |net: &Net| net.count_all(|m| matches!(m, Message::Content(ContentMsg::GetChunk { .. })));
    let before = asked(&net);
    if b > 0 {
        net.publish(1, &out, &b2);
        net.run();
        assert!(
            net.prefetches.iter().all(|(n, _)| *n != 1),
            "not compiled again"
        );
        assert_eq!(net.nodes[1].staged(&app()).map(|h| h.head.seq), Some(2));
    }
    // The last wave: activated from the store.
    let last = with_plan(&v2, plan(b.max(1)).advanced().unwrap(), 3);
    net.publish(1, &last, &b2);
    net.run();
    let a = net
        .activations
        .iter()
        .find(|(n, a)| *n == 1 && a.head.head.seq == 3)
        .expect("node 1 activates the last wave");
    assert!(a.1.content.is_none(), "from the store");
    assert_eq!(asked(&net), before, "no chunk fetched");
}

/// Health counts only while a rollout is being judged: for the last wave, its bake and a
/// minute after; never for a head without a plan. A finished rollout costs no messages.
#[test]
fn health_stops_counting_after_the_last_wave_and_never_counts_without_a_plan() {
    use crate::node::tally::HEALTH_AFTER_BAKE;
    let mut net = Net::new(2, |i| (0..i).collect());
    let body = scenario::content(1, 20_000);
    let plain = head(1, &body);
    let digest = plain.head.release.digest;
    let (p, _) = net.publish(0, &plain, &body);
    net.run();
    let mut h = Health::default();
    h.record(Duration::from_millis(1), false);
    let feed = |net: &mut Net, h: &Health| {
        for i in 0..2 {
            let (new, old) = (h.clone(), Health::default());
            net.input(
                i,
                Input::Health {
                    app: app(),
                    digest,
                    new,
                    old,
                },
            );
        }
    };
    feed(&mut net, &h);
    net.run();
    net.advance(Duration::from_millis(300));
    assert_eq!(
        last_tally(&mut net, p, 1).health_new.requests,
        0,
        "no plan: not counted"
    );

    let staged = whole_fleet(&plain, 2);
    let (p, _) = net.publish(0, &staged, &body);
    net.run();
    feed(&mut net, &h);
    net.run();
    net.advance(Duration::from_millis(300));
    assert_eq!(last_tally(&mut net, p, 2).health_new.requests, 2);
    net.advance(Duration::from_millis(1000) + HEALTH_AFTER_BAKE);
    h.record(Duration::from_millis(1), false);
    feed(&mut net, &h);
    net.run();
    net.advance(Duration::from_millis(300));
    let later: Vec<Message> = net.take(p);
    assert!(
        !later
            .iter()
            .any(|m| matches!(m, Message::Tally(TallyMsg::Subtree(t)) if t.seq == 2)),
        "no tally sent for health after the window: {later:?}"
    );
}

/// A canary whose trial failed (it reverted) does not run the release again when a later wave
/// (a looser `max_failed` let it go on) includes it: it counts failed for that wave's head.
#[test]
fn a_canary_that_reverted_does_not_run_the_release_again_in_a_later_wave() {
    let mut net = Net::new(4, |i| (0..i).collect());
    let (b1, b2) = (scenario::content(1, 20_000), scenario::content(2, 20_000));
    net.publish(0, &head(1, &b1), &b1);
    net.run();
    let v2 = signed("shop", 2, &b2, 8 * 1024, HeadKind::Release);
    let (plan, canaries) = split(&net, &v2);
    net.publish(0, &with_plan(&v2, plan.clone(), 2), &b2);
    net.run();
    let c = canaries[0];
    let v1_release = net.nodes[c].app(&app()).unwrap().history[0].release.clone();
    net.input(
        c,
        Input::Reverted {
            app: app(),
            seq: 2,
            reason: "trial: 3 traps".into(),
            serving: Some(v1_release),
        },
    );
    net.run();
    let before = net.activations.iter().filter(|(n, _)| *n == c).count();
    let (p, _) = net.publish(0, &with_plan(&v2, plan.advanced().unwrap(), 3), &b2);
    net.run();
    let after = net.activations.iter().filter(|(n, _)| *n == c).count();
    assert_eq!(before, after, "the canary does not activate it again");
    let others = (0..4).filter(|i| *i != c).all(|i| net.seq(i) == Some(3));
    assert!(others, "the rest of the fleet takes the last wave");
    net.advance(Duration::from_millis(300));
    let t = last_tally(&mut net, p, 3);
    assert_eq!((t.failed, t.active, t.in_wave), (1, 3, 4), "{t:?}");
    let err = net.nodes[c].status().apps[0].last_error.clone().unwrap();
    assert!(
        err.contains("failed its trial on this agent in an earlier wave"),
        "{err}"
    );
}

/// Past the first wave, a node with no release of the app has nothing to keep serving: the
/// head runs on it whatever its bucket (an agent that joins mid-rollout is not left serving
/// nothing) and it counts in the wave. In the first wave (a staged first release) it stays out.
#[test]
fn past_the_first_wave_a_node_with_no_release_of_the_app_runs_it_whatever_its_bucket() {
    let mut net = Net::new(6, |i| (0..i).collect());
    let body = scenario::content(3, 20_000);
    let sh = signed("shop", 1, &body, 8 * 1024, HeadKind::Release);
    let (first, canaries) = split(&net, &sh);
    assert!(canaries.len() < 6);
    // Wave 2 is one basis point more than wave 1 (it adds at most the median node).
    let w = first.waves[0];
    let plan = Plan::new(vec![w, w + 1, FULL], Gates::default()).unwrap();
    let (p, _) = net.publish(0, &with_plan(&sh, plan.clone(), 1), &body);
    net.run();
    for i in 0..6 {
        assert_eq!(
            activated(&net, i, 1),
            canaries.contains(&i),
            "wave 1, node {i}"
        );
    }
    net.advance(Duration::from_millis(300));
    let t = last_tally(&mut net, p, 1);
    assert_eq!((t.nodes, t.in_wave), (6, canaries.len() as u32), "{t:?}");

    // A new node joins at wave 2: it runs it whatever its bucket; the others keep their place.
    net.add(6, vec![0], [], []);
    net.run();
    let (p, _) = net.publish(0, &with_plan(&sh, plan.advanced().unwrap(), 2), &body);
    net.run();
    assert!(activated(&net, 6, 2), "the joined node runs wave 2");
    let digest = sh.head.release.digest;
    for i in 0..6 {
        let runs = activated(&net, i, 2);
        let inside = crate::rollout::includes(&digest, &net.nodes[i].status().node, w + 1);
        assert_eq!(runs, inside, "wave 2, node {i}: by its bucket");
        assert!(inside || net.nodes[i].staged(&app()).is_some(), "node {i}");
    }
    net.advance(Duration::from_millis(300));
    let t = last_tally(&mut net, p, 2);
    assert_eq!(t.nodes, 7, "{t:?}");
}
