//! The broadcast layer: eager push, prune on duplicates, IHave → Graft, anti-entropy repair,
//! stale and conflicting heads.

use super::*;
use crate::wire::{Outcome, Report};

/// Three nodes that all know each other: 0 (the root) pushes the head to both eagerly; the
/// duplicate one of them then gets from the other prunes that link out of the tree.
#[test]
fn a_head_is_pushed_eagerly_and_a_duplicate_prunes_its_link() {
    let mut net = Net::new(3, |i| (0..i).collect());
    assert_eq!(net.nodes[0].active_peers().len(), 2);
    let body = scenario::content(1, 20_000);
    let sh = head(1, &body);
    net.publish(0, &sh, &body);
    net.run();
    for i in 0..3 {
        assert!(net.accepted(i, 1), "node {i}");
    }
    assert_eq!(net.nodes[0].round(&app()), Some(0));
    for i in [1, 2] {
        assert_eq!(net.count(0, i, is_gossip), 1, "0 pushes to {i}");
        assert_eq!(net.nodes[i].round(&app()), Some(1));
    }
    // 1 and 2 relay to each other; whoever hears it second prunes the link.
    let relays = net.count(1, 2, is_gossip) + net.count(2, 1, is_gossip);
    assert!(relays >= 1);
    let prune = |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::Prune));
    assert_eq!(net.count(1, 2, prune) + net.count(2, 1, prune), relays);
    // A second head travels the pruned link lazily.
    let before = net.sent.len();
    let body2 = scenario::content(2, 20_000);
    let sh2 = head(2, &body2);
    net.publish(0, &sh2, &body2);
    net.run();
    let ihave = net.sent[before..].iter().any(|(a, b, m)| {
        (*a, *b) != (0, 1)
            && (*a, *b) != (0, 2)
            && matches!(m, Message::Broadcast(BroadcastMsg::IHave(_)))
    });
    assert!(
        ihave,
        "the pruned link carries an announcement, not the head"
    );
    assert_eq!((net.seq(1), net.seq(2)), (Some(2), Some(2)));
}

/// A head announced by `IHave` that does not arrive by eager push within `ihave_timeout` is
/// grafted from the announcer, which then pushes it.
#[test]
fn an_announced_head_that_does_not_arrive_is_grafted() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let c = net.conn(0, 1);
    // 1 pruned 0 earlier: 0 only announces to it.
    net.queue
        .push_back((0, Ev::Msg(c, BroadcastMsg::Prune.into())));
    net.run();
    let body = scenario::content(1, 20_000);
    let sh = head(1, &body);
    net.publish(0, &sh, &body);
    net.run();
    let ihave =
        |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::IHave(a)) if a[0].seq == 1);
    assert_eq!(net.count(0, 1, ihave), 1);
    assert_eq!(net.count(0, 1, is_gossip), 0);
    assert!(!net.accepted(1, 1));
    let graft = |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::Graft { seq: 1, .. }));
    net.advance(Duration::from_millis(100));
    assert_eq!(
        net.count(1, 0, graft),
        0,
        "not before ihave_timeout (150 ms)"
    );
    net.advance(Duration::from_millis(100));
    assert_eq!(net.count(1, 0, graft), 1);
    assert_eq!(
        net.count(0, 1, is_gossip),
        1,
        "the graft is answered with the head"
    );
    assert!(net.accepted(1, 1));
    assert_eq!(net.nodes[1].round(&app()), Some(1));
}

/// A node that missed a head (every broadcast message to it was lost) gets it from the
/// periodic anti-entropy summary exchange.
#[test]
fn an_anti_entropy_summary_repairs_a_missed_head() {
    let mut net = Net::new(2, |i| (0..i).collect());
    net.drop = Box::new(|_, to, m| to == 1 && matches!(m, Message::Broadcast(_)));
    let body = scenario::content(1, 20_000);
    let sh = head(1, &body);
    net.publish(0, &sh, &body);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.seq(0), Some(1));
    assert!(!net.accepted(1, 1));
    net.drop = Box::new(|_, _, _| false);
    // anti_entropy_interval is 5 s (± 25%): within 7 s one of them runs an exchange.
    net.advance(Duration::from_secs(7));
    let summary = |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::Summary { .. }));
    assert!(net.count(0, 1, summary) + net.count(1, 0, summary) >= 1);
    assert_eq!(net.seq(1), Some(1), "repaired");
}

/// An older head is refused as stale (only the sender hears it); another head with the same
/// seq is a conflict (reported and counted rejected); neither changes anything; the same head
/// again is dropped quietly.
#[test]
fn stale_and_conflicting_heads_are_refused_and_change_nothing() {
    let mut net = Net::new(1, |_| vec![]);
    let body = scenario::content(1, 20_000);
    let (p, c) = net.publish(0, &head(2, &body), &body);
    net.run();
    assert_eq!(net.seq(0), Some(2));
    net.take(p);
    let status = net.nodes[0].status();
    net.say(p, c, BroadcastMsg::Head(Box::new(head(1, &body))));
    net.run();
    let got = net.take(p);
    assert!(
        matches!(
            &got[..],
            [Message::Report(Report {
                outcome: Outcome::Stale { current: 2 },
                ..
            })]
        ),
        "{got:?}"
    );
    let other = scenario::content(9, 20_000);
    net.say(p, c, BroadcastMsg::Head(Box::new(head(2, &other))));
    net.run();
    let got = net.take(p);
    assert!(
        matches!(&got[0], Message::Report(Report { outcome: Outcome::Rejected(r), .. }) if r.contains("two different heads claim")),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], Message::Tally(TallyMsg::Subtree(t)) if t.rejected == 1),
        "{got:?}"
    );
    assert_eq!(net.nodes[0].status(), status, "a refusal changes nothing");
    net.say(p, c, BroadcastMsg::Head(Box::new(head(2, &body))));
    net.run();
    assert!(
        net.take(p).is_empty(),
        "the same head again is dropped quietly"
    );
}
