//! The census layer: an echo wave over the active view counts every node once; duplicates,
//! silent and lost children, focus samples, and the bounds.

use super::*;
use crate::node::census::{HOP_MARGIN, MAX_IN_PROGRESS, NEIGHBOUR_BURST, NEIGHBOUR_INTERVAL};
use crate::release::Release;
use crate::sim::addr_of;
use crate::wire::{
    Census, CensusEntry, CensusMsg, Focus, MAX_CENSUS_ENTRIES, MAX_CENSUS_SAMPLES, MAX_CENSUS_WHY,
    MembershipMsg, Missing, ServeState,
};

const BUDGET: u32 = 2_000;

fn query(id: u64, budget_ms: u32, focus: Option<Focus>) -> CensusMsg {
    CensusMsg::Query {
        id,
        budget_ms,
        focus,
    }
}

fn focus(seq: u64) -> Option<Focus> {
    Some(Focus { app: app(), seq })
}

/// A client connects to `entry` and asks for census `id`.
fn ask(net: &mut Net, entry: usize, id: u64, budget_ms: u32, f: Option<Focus>) -> (usize, Conn) {
    let (c, cc) = net.fake(entry);
    net.say(c, cc, query(id, budget_ms, f));
    net.run();
    (c, cc)
}

/// The census replies fake `f` received.
fn replies(net: &mut Net, f: usize) -> Vec<(u64, Option<Census>)> {
    net.take(f)
        .into_iter()
        .filter_map(|m| match m {
            Message::Census(CensusMsg::Reply { id, count }) => Some((id, count)),
            _ => None,
        })
        .collect()
}

/// The one census reply fake `f` received, with a count.
fn counted(net: &mut Net, f: usize) -> Census {
    match &replies(net, f)[..] {
        [(_, Some(c))] => c.clone(),
        other => panic!("expected one reply with a count, got {other:?}"),
    }
}

/// The census queries fake `f` received.
fn queries(net: &mut Net, f: usize) -> Vec<(u64, u32)> {
    net.take(f)
        .into_iter()
        .filter_map(|m| match m {
            Message::Census(CensusMsg::Query { id, budget_ms, .. }) => Some((id, budget_ms)),
            _ => None,
        })
        .collect()
}

/// Census messages between nodes (not clients).
fn mesh_census_messages(net: &Net) -> usize {
    net.sent
        .iter()
        .filter(|(a, b, m)| *a < 1000 && *b < 1000 && matches!(m, Message::Census(_)))
        .count()
}

/// `n` nodes in a line, 0 − 1 − … − n−1 (joins are not forwarded, so each node's only links
/// are the ones it dialled and was dialled on).
fn chain(n: usize) -> Net {
    let mut net = Net::new(1, |_| vec![]);
    net.drop =
        Box::new(|_, _, m| matches!(m, Message::Membership(MembershipMsg::ForwardJoin { .. })));
    for i in 1..n {
        net.add(i, vec![i - 1], [], []);
        net.run();
    }
    for i in 0..n {
        let want = if i == 0 || i == n - 1 { 1 } else { 2 };
        assert_eq!(net.nodes[i].active_peers().len(), want, "node {i}");
    }
    net
}

/// A fake that joins `node`'s active view (a neighbour the test speaks for).
fn neighbour(net: &mut Net, node: usize) -> (usize, Conn) {
    let (f, c) = net.fake_as(node, PeerRole::Node);
    net.say(f, c, MembershipMsg::Join { addr: None });
    net.run();
    net.take(f);
    (f, c)
}

fn publish_everywhere(net: &mut Net, seq: u64, body: &[u8]) -> SignedHead {
    let sh = head(seq, body);
    net.publish(0, &sh, body);
    net.run();
    for i in 0..net.nodes.len() {
        assert_eq!(net.seq(i), Some(seq), "node {i}");
    }
    sh
}

fn entry(sh: &SignedHead, rel: &Release, state: ServeState, agents: u32) -> CensusEntry {
    CensusEntry {
        app: app(),
        seq: sh.head.seq,
        version: rel.version.clone(),
        digest: rel.digest,
        state,
        agents,
    }
}

/// A chain and a triangle, asked at an end, in the middle and anywhere: every node counted
/// exactly once, per-app entries summed, nothing unanswered, and the answer comes as soon as
/// the wave has crossed the mesh (no timer). Two messages per link: queries that cross on a
/// link answer each other.
#[test]
fn a_chain_and_a_triangle_count_every_node_exactly_once() {
    let mut net = chain(4);
    let body = scenario::content(1, 20_000);
    let sh = publish_everywhere(&mut net, 1, &body);
    let want = vec![entry(&sh, &sh.head.release, ServeState::Active, 4)];
    for (id, entry) in [(1, 0), (2, 3), (3, 1)] {
        let (c, _) = ask(&mut net, entry, id, BUDGET, None);
        let count = counted(&mut net, c);
        assert_eq!((count.agents, count.unanswered), (4, 0), "asked at {entry}");
        assert_eq!(count.entries, want, "asked at {entry}");
        assert_eq!(net.nodes[entry].censuses_in_progress(), 0);
    }
    assert_eq!(
        mesh_census_messages(&net),
        3 * 2 * 3,
        "3 links, 2 each, 3 censuses"
    );

    let mut net = Net::new(3, |i| (0..i).collect());
    for i in 0..3 {
        assert_eq!(net.nodes[i].active_peers().len(), 2, "a triangle");
    }
    let sh = publish_everywhere(&mut net, 1, &body);
    let (c, _) = ask(&mut net, 2, 9, BUDGET, focus(1));
    let count = counted(&mut net, c);
    assert_eq!((count.agents, count.unanswered), (3, 0));
    assert_eq!((count.focus_active, count.missing.len()), (3, 0));
    assert_eq!(
        count.entries,
        vec![entry(&sh, &sh.head.release, ServeState::Active, 3)]
    );
    assert_eq!(
        mesh_census_messages(&net),
        3 * 2,
        "3 links, 2 messages each"
    );
}

/// A query for a census already joined is answered `None` at once (the sender does not wait
/// for it), while the census is in progress and after it finished.
#[test]
fn a_query_arriving_twice_gives_none_once() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let (silent, _) = neighbour(&mut net, 0);
    let (c, cc) = ask(&mut net, 0, 7, BUDGET, None);
    net.say(c, cc, query(7, BUDGET, None));
    net.run();
    assert_eq!(replies(&mut net, c), vec![(7, None)], "the second, at once");
    let (c2, _) = ask(&mut net, 0, 7, BUDGET, None);
    assert_eq!(
        replies(&mut net, c2),
        vec![(7, None)],
        "another client, same id"
    );
    assert_eq!(queries(&mut net, silent), vec![(7, BUDGET - 250)]);
    net.advance(Duration::from_millis(BUDGET as u64));
    let count = counted(&mut net, c);
    assert_eq!((count.agents, count.unanswered), (2, 1));
    net.say(c, cc, query(7, BUDGET, None));
    net.run();
    assert_eq!(
        replies(&mut net, c),
        vec![(7, None)],
        "finished: still known"
    );
}

/// A child that never answers is counted in `unanswered` once the budget runs out, and the
/// root still answers, with everyone else counted.
#[test]
fn a_child_that_never_answers_is_unanswered_after_the_budget() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let (silent, _) = neighbour(&mut net, 0);
    let (c, _) = ask(&mut net, 0, 1, 1_000, None);
    assert_eq!(
        queries(&mut net, silent),
        vec![(1, 1_000 - HOP_MARGIN.as_millis() as u32)],
        "the child's budget is the parent's minus the margin"
    );
    net.advance(Duration::from_millis(999));
    assert!(replies(&mut net, c).is_empty(), "waits for the budget");
    net.advance(Duration::from_millis(1));
    let count = counted(&mut net, c);
    assert_eq!((count.agents, count.unanswered), (2, 1));
    assert_eq!(net.nodes[0].censuses_in_progress(), 0);
}

/// A child that goes down while awaited counts as unanswered at once: the wave does not wait
/// for its budget. A leaf whose budget is too small to forward answers at once with itself and
/// the neighbours it did not ask unanswered.
#[test]
fn a_child_going_down_mid_wave_does_not_stall_it() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let (silent, sc) = neighbour(&mut net, 0);
    let (c, _) = ask(&mut net, 0, 1, 10_000, None);
    assert_eq!(queries(&mut net, silent).len(), 1);
    assert!(replies(&mut net, c).is_empty());
    net.conns.get_mut(&sc).unwrap().2 = false;
    net.queue.push_back((0, Ev::Down(sc)));
    net.run();
    let count = counted(&mut net, c);
    assert_eq!((count.agents, count.unanswered), (2, 1), "without a timer");

    let (c, _) = ask(&mut net, 0, 2, HOP_MARGIN.as_millis() as u32, None);
    let count = counted(&mut net, c);
    assert_eq!((count.agents, count.unanswered), (1, 1), "not forwarded");
    let forwarded = net.count(0, 1, |m| {
        matches!(m, Message::Census(CensusMsg::Query { id: 2, .. }))
    });
    assert_eq!(forwarded, 0);
}

/// With a focus, the nodes that do not serve it are named, with their address, the seq they
/// hold and why: one failed the release, one is still fetching it.
#[test]
fn focus_samples_name_the_nodes_that_miss_the_release_and_why() {
    let mut net = Net::new(3, |i| (0..i).collect());
    publish_everywhere(&mut net, 1, &scenario::content(1, 20_000));
    net.auto_activate = false;
    // Node 2 only ever gets the first of three chunks.
    net.drop = Box::new(|_, to, m| {
        to == 2 && matches!(m, Message::Content(ContentMsg::Chunk { index, .. }) if *index > 0)
    });
    let body = scenario::content(2, 20_000);
    let sh2 = head(2, &body);
    assert_eq!(sh2.head.release.chunk_count(), 3);
    net.publish(0, &sh2, &body);
    net.run();
    let activated = |result| Input::Activated {
        app: app(),
        seq: 2,
        result,
    };
    net.input(0, activated(Ok(())));
    let refused = ActivationError::Refused {
        stage: "compile".into(),
        reason: "not a component".into(),
    };
    net.input(1, activated(Err(refused)));
    net.run();

    let (c, _) = ask(&mut net, 0, 1, BUDGET, focus(2));
    let count = counted(&mut net, c);
    assert_eq!(
        (count.agents, count.unanswered, count.focus_active),
        (3, 0, 1)
    );
    let missing = |node: usize, why: &str| Missing {
        node: crate::sim::node_id(node),
        addr: Some(addr_of(node)),
        seq: 2,
        why: why.into(),
    };
    let mut got = count.missing.clone();
    got.sort_by_key(|m| m.node);
    assert_eq!(
        got,
        vec![
            missing(1, "failed: compile: not a component"),
            missing(2, "fetching seq 2 (1 of 3 chunks)"),
        ]
    );
    // Asked about seq 1: the two still serving it count; the node on seq 2 holds a newer one.
    let (c, _) = ask(&mut net, 1, 2, BUDGET, focus(1));
    let count = counted(&mut net, c);
    assert_eq!(count.focus_active, 2);
    assert_eq!(count.missing.len(), 1);
    assert_eq!(count.missing[0].node, crate::sim::node_id(0));
    assert_eq!(count.missing[0].why, "holds newer seq 2");
}

/// One node through every state the focus can find it in: no release, an older seq,
/// activating, reverted (reason cut short), a local override, a newer seq. Entries say what
/// serves and why.
#[test]
fn why_says_what_a_node_does_instead_of_the_focus() {
    let mut net = Net::new(1, |_| vec![]);
    let mut id = 0;
    let mut census = |net: &mut Net, seq: u64| {
        id += 1;
        net.advance(Duration::from_secs(1)); // one client, one census a second
        let (c, _) = ask(net, 0, id, BUDGET, focus(seq));
        counted(net, c)
    };
    let why = |c: &Census| c.missing.first().map(|m| (m.seq, m.why.clone()));
    assert_eq!(
        why(&census(&mut net, 1)),
        Some((0, "no release of shop".into()))
    );

    let b1 = scenario::content(1, 20_000);
    let v1 = publish_everywhere(&mut net, 1, &b1);
    let c = census(&mut net, 2);
    assert_eq!(why(&c), Some((1, "never got seq 2 (holds seq 1)".into())));
    assert_eq!(
        c.entries,
        vec![entry(&v1, &v1.head.release, ServeState::Active, 1)]
    );

    let v2 = publish_everywhere(&mut net, 2, &scenario::content(2, 20_000));
    let long = format!("trial failed: {}", "x".repeat(300));
    net.input(
        0,
        Input::Reverted {
            app: app(),
            seq: 2,
            reason: long.clone(),
            serving: Some(v1.head.release.clone()),
        },
    );
    let c = census(&mut net, 2);
    let (seq, text) = why(&c).unwrap();
    assert_eq!(seq, 2);
    assert!(
        text.starts_with("reverted to 1.0.1: trial failed: xxx"),
        "{text}"
    );
    assert!(text.ends_with('…') && text.len() < 150, "{text}");
    assert_eq!(
        c.entries,
        vec![entry(&v2, &v1.head.release, ServeState::Reverted, 1)]
    );

    net.input(
        0,
        Input::LocalOverride {
            app: app(),
            release: Some(v1.head.release.clone()),
        },
    );
    let c = census(&mut net, 2);
    assert_eq!(why(&c), Some((2, "local override: serves 1.0.1".into())));
    assert_eq!(
        c.entries,
        vec![entry(&v2, &v1.head.release, ServeState::Override, 1)]
    );
    net.input(
        0,
        Input::LocalOverride {
            app: app(),
            release: None,
        },
    );
    let c = census(&mut net, 2);
    assert_eq!((why(&c), c.focus_active), (None, 1), "the override is over");

    net.auto_activate = false;
    let b3 = scenario::content(3, 20_000);
    net.publish(0, &head(3, &b3), &b3);
    net.run();
    let c = census(&mut net, 3);
    assert_eq!(why(&c), Some((3, "activating seq 3".into())));
    assert_eq!(
        c.entries,
        vec![entry(&v2, &v2.head.release, ServeState::Active, 1)]
    );
    assert_eq!(
        why(&census(&mut net, 1)),
        Some((3, "holds newer seq 3".into()))
    );
}

/// At most `MAX_IN_PROGRESS` censuses at once: one more is answered at once with this node
/// alone and not forwarded (and remembered: a duplicate gets `None`).
#[test]
fn censuses_in_progress_are_bounded() {
    let mut net = Net::new(1, |_| vec![]);
    let (a, ac) = neighbour(&mut net, 0);
    let (b, bc) = neighbour(&mut net, 0);
    let (silent, _) = neighbour(&mut net, 0);
    // Half from each neighbour (each may bring `NEIGHBOUR_BURST` at once).
    let half = MAX_IN_PROGRESS as u64 / 2;
    for id in 0..half {
        net.say(a, ac, query(id, BUDGET, None));
        net.say(b, bc, query(half + id, BUDGET, None));
    }
    net.run();
    assert_eq!(net.nodes[0].censuses_in_progress(), MAX_IN_PROGRESS);
    assert_eq!(queries(&mut net, silent).len(), MAX_IN_PROGRESS);
    net.advance(Duration::from_secs(1)); // a's allowance refills; the censuses still wait
    net.say(a, ac, query(99, BUDGET, None));
    net.run();
    let got = replies(&mut net, a);
    assert_eq!(got.len(), 1);
    let count = got[0].1.clone().unwrap();
    assert_eq!((got[0].0, count.agents, count.unanswered), (99, 1, 2));
    assert!(queries(&mut net, silent).is_empty(), "not forwarded");
    net.say(a, ac, query(99, BUDGET, None));
    net.run();
    assert_eq!(replies(&mut net, a), vec![(99, None)]);
    // The budget ends them all.
    net.advance(Duration::from_millis(BUDGET as u64));
    assert_eq!(net.nodes[0].censuses_in_progress(), 0);
    assert_eq!(
        replies(&mut net, a).len() + replies(&mut net, b).len(),
        MAX_IN_PROGRESS
    );
}

/// A child's count is merged within the bounds: entries by key up to `MAX_CENSUS_ENTRIES`
/// (agents beyond still counted), samples up to `MAX_CENSUS_SAMPLES`, their text cut.
#[test]
fn a_childs_count_is_merged_within_the_bounds() {
    let mut net = Net::new(1, |_| vec![]);
    let (a, ac) = neighbour(&mut net, 0);
    let (c, _) = ask(&mut net, 0, 5, BUDGET, focus(1));
    assert_eq!(queries(&mut net, a).len(), 1);
    let digest = Digest::of(b"x");
    let child = Census {
        agents: 1_000,
        unanswered: 2,
        entries: (0..100)
            .map(|i| CensusEntry {
                app: app(),
                seq: i,
                version: format!("1.0.{i}").parse().unwrap(),
                digest,
                state: ServeState::Active,
                agents: 10,
            })
            .collect(),
        focus_active: 900,
        missing: (0..40)
            .map(|i| Missing {
                node: NodeId([i as u8; 32]),
                addr: None,
                seq: 0,
                why: "y".repeat(5_000),
            })
            .collect(),
    };
    net.say(
        a,
        ac,
        CensusMsg::Reply {
            id: 5,
            count: Some(child),
        },
    );
    net.run();
    let count = counted(&mut net, c);
    assert_eq!((count.agents, count.unanswered), (1_001, 2));
    assert_eq!(count.focus_active, 900);
    assert_eq!(count.entries.len(), MAX_CENSUS_ENTRIES);
    assert_eq!(count.missing.len(), MAX_CENSUS_SAMPLES);
    assert_eq!(
        count.missing[0].why, "no release of shop",
        "its own sample first"
    );
    assert!(count.missing.iter().all(|m| m.why.len() <= MAX_CENSUS_WHY));
}

/// A client link starts at most one census per second here, and all clients together a burst
/// of four, then one a second: extra queries get this node alone, not forwarded.
#[test]
fn clients_may_start_few_censuses() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let forwarded = |net: &Net, id: u64| {
        net.count(
            0,
            1,
            |m| matches!(m, Message::Census(CensusMsg::Query { id: i, .. }) if *i == id),
        )
    };
    let (c, cc) = ask(&mut net, 0, 1, BUDGET, None);
    assert_eq!(counted(&mut net, c).agents, 2);
    net.say(c, cc, query(2, BUDGET, None));
    net.run();
    let count = counted(&mut net, c);
    assert_eq!(
        (count.agents, count.unanswered),
        (1, 1),
        "too soon for this link"
    );
    assert_eq!((forwarded(&net, 1), forwarded(&net, 2)), (1, 0));
    net.advance(Duration::from_secs(1));
    net.say(c, cc, query(3, BUDGET, None));
    net.run();
    assert_eq!(counted(&mut net, c).agents, 2, "a second later");
    // Across client links: the bucket (4, one a second) has 3 left.
    let mut full = 0;
    for id in 10..15 {
        let (c, _) = ask(&mut net, 0, id, BUDGET, None);
        full += usize::from(counted(&mut net, c).agents == 2);
    }
    assert_eq!(full, 3, "then the node-wide cap");
    // The rate-limited id is not remembered: asked again later, it is counted in full.
    net.advance(Duration::from_secs(1));
    let (c, _) = ask(&mut net, 0, 14, BUDGET, None);
    assert_eq!(counted(&mut net, c).agents, 2);
}

/// A neighbour (any peer may join the overlay) brings at most `NEIGHBOUR_BURST` new censuses
/// back to back, then one per `NEIGHBOUR_INTERVAL`: extra ones get this node alone, not
/// forwarded.
#[test]
fn a_neighbour_may_bring_few_censuses() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let (a, ac) = neighbour(&mut net, 0);
    let burst = NEIGHBOUR_BURST as u64;
    for id in 0..=burst {
        net.say(a, ac, query(id, BUDGET, None));
    }
    net.run();
    let got = replies(&mut net, a);
    let agents: Vec<u32> = got
        .iter()
        .map(|(_, c)| c.as_ref().unwrap().agents)
        .collect();
    assert_eq!(agents.iter().filter(|n| **n == 2).count() as u64, burst);
    let beyond = got.iter().find(|(id, _)| *id == burst).unwrap();
    let alone = Census {
        agents: 1,
        unanswered: 1,
        ..Census::default()
    };
    assert_eq!(
        beyond.1,
        Some(alone),
        "the one beyond the burst: this node alone"
    );
    net.advance(NEIGHBOUR_INTERVAL);
    net.say(a, ac, query(100, BUDGET, None));
    net.run();
    assert_eq!(
        counted(&mut net, a).agents,
        2,
        "one more after the interval"
    );
}
