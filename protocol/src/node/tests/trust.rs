//! The trust layer: epochs, roots through the mesh, roles, revocation, expiry.

use super::*;
use crate::scenario::{chain_after, content, first_root, next_root, signed_in};
use crate::trust::{MAX_ROOTS_PER_MSG, SignedRoot, Trust};
use crate::wire::{CensusMsg, MembershipMsg, Tally, TrustMsg};

/// Every node anchored at `anchor`.
fn rooted(anchor: &SignedRoot) -> impl Fn(usize, &mut NodeConfig) + 'static {
    let anchor = anchor.clone();
    move |_, cfg| cfg.trust = Trust::with_root(anchor.clone()).unwrap()
}

/// A head for `app()` at (`epoch`, `seq`), signed by release key `key`, issued at `at_ms`.
fn head_in(seq: u64, epoch: u64, key: u8, body: &[u8], at_ms: u64) -> SignedHead {
    signed_in("shop", seq, epoch, body, 8 * 1024, key, at_ms)
}

/// An operator connects to `node` and pushes `roots` (`fleetcast fleet push`).
fn push_roots(net: &mut Net, node: usize, roots: Vec<SignedRoot>) {
    let (op, oc) = net.fake(node);
    net.say(op, oc, Message::Trust(TrustMsg::Roots(roots)));
    net.run();
}

fn rejected_kinds(net: &Net, node: usize) -> Vec<(u64, &'static str)> {
    net.events
        .iter()
        .filter_map(|(n, e)| match e {
            Event::Rejected { seq, kind, .. } if *n == node => Some((*seq, *kind)),
            _ => None,
        })
        .collect()
}

fn pos(epoch: u64, seq: u64) -> Position {
    Position { epoch, seq }
}

/// Fast-forward recovery: a head near the end of epoch 1's seqs is held; root v2 rotates the
/// release role (epoch 2); a head at epoch 2 seq 1 supersedes it on every node, and an
/// epoch-1 head of any seq is refused as old-epoch.
#[test]
fn a_new_epoch_supersedes_any_seq_of_the_old_one() {
    let v1 = first_root(u64::MAX);
    let mut net = Net::new_with(2, |i| (0..i).collect(), rooted(&v1));
    let a = content(1, 20_000);
    let old = head_in(u64::MAX - 1, 1, 0, &a, 10);
    net.publish(0, &old, &a);
    net.run();
    for i in 0..2 {
        assert_eq!(
            net.nodes[i].status().seqs,
            vec![(app(), pos(1, u64::MAX - 1))]
        );
    }

    let v2 = next_root(&v1, 20, u64::MAX, 1, &[]);
    assert_eq!(v2.root.epoch, 2, "a new release role starts an epoch");
    push_roots(&mut net, 0, vec![v2]);
    for i in 0..2 {
        assert_eq!(net.nodes[i].trust().epoch(), 2, "node {i}");
    }

    let b = content(2, 20_000);
    let new = head_in(1, 2, 1, &b, 30);
    net.publish(0, &new, &b);
    net.run();
    for i in 0..2 {
        assert_eq!(net.seq(i), Some(1), "node {i} runs the epoch-2 head");
        assert_eq!(net.nodes[i].app(&app()).unwrap().head.head.epoch, 2);
        assert_eq!(net.nodes[i].status().seqs, vec![(app(), pos(2, 1))]);
        let st = &net.nodes[i].status().apps[0];
        assert_eq!((st.epoch, st.seq), (2, 1));
    }

    // The old key (or any seq of the old epoch) no longer moves the app.
    let c = content(3, 20_000);
    net.publish(0, &head_in(u64::MAX, 1, 0, &c, 40), &c);
    net.run();
    assert_eq!(rejected_kinds(&net, 0), vec![(u64::MAX, "old-epoch")]);
    assert_eq!(net.seq(0), Some(1), "nothing changed");
    // The same (epoch, seq) with other bytes is a conflict; a lower seq is stale.
    let d = content(4, 20_000);
    net.publish(0, &head_in(1, 2, 1, &d, 50), &d);
    net.run();
    assert_eq!(rejected_kinds(&net, 0)[1], (1, "conflict"));
}

/// A root pushed to one node reaches every node, and each persists it (with the time floor)
/// before anything else.
#[test]
fn a_rotation_spreads_to_every_node() {
    let v1 = first_root(u64::MAX);
    let mut net = Net::new_with(
        4,
        |i| if i == 0 { vec![] } else { vec![i - 1] },
        rooted(&v1),
    );
    let v2 = next_root(&v1, 500, u64::MAX, 0, &[]);
    push_roots(&mut net, 0, vec![v2.clone()]);
    for i in 0..4 {
        assert_eq!(net.nodes[i].trust().version(), 2, "node {i}");
        let persisted: Vec<_> = net.roots.iter().filter(|(n, _, _)| *n == i).collect();
        assert_eq!(persisted.len(), 1, "node {i} persisted it once");
        assert_eq!(persisted[0].1, vec![v2.clone()]);
        assert_eq!(persisted[0].2, 500, "the floor is the root's signed time");
    }
    assert!(
        net.events.iter().any(|(n, e)| *n == 3
            && *e
                == Event::RootAdopted {
                    version: 2,
                    epoch: 1
                }),
        "logged"
    );
}

/// A node that missed two rotations (it joins later, anchored at v1) gets both from its first
/// neighbour's summary.
#[test]
fn a_node_that_missed_two_rotations_gets_both_by_anti_entropy() {
    let v1 = first_root(u64::MAX);
    let mut net = Net::new_with(2, |i| (0..i).collect(), rooted(&v1));
    let chain = chain_after(&v1, 2, u64::MAX);
    push_roots(&mut net, 0, chain.clone());
    assert_eq!(net.nodes[1].trust().version(), 3);

    net.add(2, vec![1], [], []);
    net.run();
    assert_eq!(net.nodes[2].trust().version(), 3);
    let persisted: Vec<SignedRoot> = net
        .roots
        .iter()
        .filter(|(n, _, _)| *n == 2)
        .flat_map(|(_, r, _)| r.clone())
        .collect();
    assert_eq!(persisted, chain, "v2 then v3, each once");
    let summary_root =
        |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::Summary { root: 3, .. }));
    assert!(net.count(1, 2, summary_root) >= 1, "the summary said v3");
}

/// A chain longer than one message catches up in several rounds: after each batch the node
/// asks again while its neighbour is still ahead.
#[test]
fn a_long_chain_catches_up_in_batches() {
    let v1 = first_root(u64::MAX);
    let mut net = Net::new_with(1, |_| vec![], rooted(&v1));
    let n = MAX_ROOTS_PER_MSG + 8;
    let chain = chain_after(&v1, n, u64::MAX);
    push_roots(&mut net, 0, chain[..MAX_ROOTS_PER_MSG].to_vec());
    push_roots(&mut net, 0, chain[MAX_ROOTS_PER_MSG..].to_vec());
    let top = n as u64 + 1;
    assert_eq!(net.nodes[0].trust().version(), top);

    net.add(1, vec![0], [], []);
    net.run();
    assert_eq!(net.nodes[1].trust().version(), top);
    let wants: Vec<u64> = net
        .sent
        .iter()
        .filter_map(|(a, b, m)| match m {
            Message::Trust(TrustMsg::Want { after }) if (*a, *b) == (1, 0) => Some(*after),
            _ => None,
        })
        .collect();
    assert!(
        wants.contains(&(MAX_ROOTS_PER_MSG as u64 + 1)),
        "asked again after the first batch: {wants:?}"
    );
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| matches!(e, Event::RootRefused { .. })),
        "no batch was refused"
    );
}

/// An operator link pushes heads and roots and asks for status and censuses, but its
/// membership messages are dropped and its tallies ignored; a node link's are taken.
#[test]
fn an_operator_link_never_joins_the_overlay_nor_counts_in_tallies() {
    let mut net = Net::new(1, |_| vec![]);
    let body = content(1, 20_000);
    let sh = head(1, &body);
    let (op, oc) = net.publish(0, &sh, &body);
    net.run();
    assert_eq!(net.seq(0), Some(1), "its head is taken");
    net.take(op);

    net.say(op, oc, MembershipMsg::Join { addr: None });
    let fake_tally = Tally {
        app: Some(app()),
        seq: 1,
        active: 5,
        version: 1,
        ..Tally::default()
    };
    net.say(op, oc, TallyMsg::Subtree(fake_tally.clone()));
    net.say(op, oc, Message::StatusRequest);
    let query = CensusMsg::Query {
        id: 1,
        budget_ms: 1_000,
        focus: None,
    };
    net.say(op, oc, query);
    net.advance(Duration::from_secs(2));
    assert!(net.nodes[0].active_peers().is_empty(), "not in the overlay");
    assert_eq!(net.nodes[0].tally(&app()).unwrap().active, 1, "not counted");
    let got = net.take(op);
    assert!(
        !got.iter().any(|m| matches!(m, Message::Membership(_))),
        "{got:?}"
    );
    assert!(got.iter().any(|m| matches!(m, Message::Status(_))));
    assert!(
        got.iter()
            .any(|m| matches!(m, Message::Census(CensusMsg::Reply { id: 1, .. })))
    );

    // The same from an enrolled node is taken.
    let (n, nc) = net.fake_as(0, PeerRole::Node);
    net.say(n, nc, MembershipMsg::Join { addr: None });
    net.say(n, nc, TallyMsg::Subtree(fake_tally));
    net.run();
    assert_eq!(net.nodes[0].active_peers().len(), 1, "a neighbour");
    assert_eq!(net.nodes[0].tally(&app()).unwrap().active, 6, "counted");
}

/// A root that revokes a node closes every link to it (the reason names the node and the
/// root version), drops it from the passive view, and it is never taken back.
#[test]
fn a_revoked_node_is_disconnected_and_never_taken_back() {
    let v1 = first_root(u64::MAX);
    let mut net = Net::new_with(3, |i| (0..i).collect(), rooted(&v1));
    let links_to_2 = |net: &Net| {
        net.conns
            .values()
            .filter(|(a, b, up)| *up && ((*a == 2 && *b < 2) || (*b == 2 && *a < 2)))
            .count()
    };
    assert!(links_to_2(&net) >= 1);
    let revoked = crate::sim::node_id(2);
    let v2 = next_root(&v1, 5, u64::MAX, 0, &[revoked]);
    push_roots(&mut net, 0, vec![v2]);
    let want = format!("node {revoked} is revoked by root version 2 of fleet sim");
    assert!(
        net.disconnects.iter().any(|(n, r)| *n == 0 && *r == want),
        "{:?}",
        net.disconnects
    );
    assert_eq!(links_to_2(&net), 0);
    for i in 0..2 {
        assert_eq!(net.nodes[i].trust().version(), 2);
        assert!(!net.nodes[i].in_passive_view(revoked), "node {i}");
    }
    // It keeps dialling its contacts: each link is closed at once.
    net.advance(Duration::from_secs(60));
    assert_eq!(links_to_2(&net), 0);
    assert!(net.disconnects.iter().filter(|(_, r)| *r == want).count() >= 2);
    for i in 0..2 {
        assert!(!net.nodes[i].in_passive_view(revoked), "node {i}");
        assert!(net.nodes[i].active_peers().len() <= 1);
    }
}

/// An expired root refuses new heads (root-expired) while the record in force stays; a newer
/// root that extends expiry, arriving by gossip, lets heads in again; a clock turned back
/// after a signed time past expiry was seen keeps the root expired.
#[test]
fn an_expired_root_refuses_heads_until_a_newer_root_and_time_never_goes_back() {
    let v1 = first_root(1_000);
    let mut net = Net::new_with(2, |i| (0..i).collect(), rooted(&v1));
    let clock = |net: &mut Net, unix_ms| {
        for i in 0..2 {
            net.input(i, Input::Clock { unix_ms });
        }
        net.run();
    };
    clock(&mut net, 500);
    let a = content(1, 20_000);
    net.publish(0, &head_in(1, 1, 0, &a, 600), &a);
    net.run();
    assert_eq!((net.seq(0), net.seq(1)), (Some(1), Some(1)));

    clock(&mut net, 2_000);
    let b = content(2, 20_000);
    let h2 = head_in(2, 1, 0, &b, 1_900);
    net.publish(0, &h2, &b);
    net.run();
    assert_eq!(rejected_kinds(&net, 0), vec![(2, "root-expired")]);
    assert_eq!(net.seq(0), Some(1), "what runs keeps running");
    assert!(net.nodes[0].status().trust.expired);
    assert_eq!(net.nodes[0].status().seqs, vec![(app(), pos(1, 1))]);

    // v2 (expiring at 10 s) is pushed to node 1 and reaches node 0 over the mesh.
    let v2 = next_root(&v1, 1_500, 10_000, 0, &[]);
    push_roots(&mut net, 1, vec![v2]);
    assert_eq!(net.nodes[0].trust().version(), 2);
    assert!(!net.nodes[0].trust().expired());
    let floor = net.roots.iter().find(|(n, _, _)| *n == 0).unwrap().2;
    assert_eq!(
        floor, 1_500,
        "the newest signed time seen goes with the roots"
    );
    net.publish(0, &h2, &b);
    net.run();
    assert_eq!(net.seq(0), Some(2), "accepted again");

    // A head signed at 20 s verifies (the root was valid) and moves the floor past expiry.
    let c = content(3, 20_000);
    net.publish(0, &head_in(3, 1, 0, &c, 20_000), &c);
    net.run();
    assert_eq!(net.seq(0), Some(3));
    assert!(net.nodes[0].trust().expired());
    clock(&mut net, 3_000);
    let d = content(4, 20_000);
    net.publish(0, &head_in(4, 1, 0, &d, 3_000), &d);
    net.run();
    assert_eq!(rejected_kinds(&net, 0).last(), Some(&(4, "root-expired")));
    assert_eq!(net.seq(0), Some(3));
}

/// A head still fetching when a root closes its epoch (its release keys were rotated, maybe
/// leaked) is not activated when its content arrives.
#[test]
fn a_head_of_a_closed_epoch_still_fetching_is_not_activated() {
    let v1 = first_root(u64::MAX);
    let mut net = Net::new_with(1, |_| vec![], rooted(&v1));
    let a = content(1, 20_000);
    let sh = head_in(1, 1, 0, &a, 10);
    let (op, oc) = net.fake(0);
    net.say(op, oc, BroadcastMsg::Head(Box::new(sh.clone())));
    net.run();
    assert!(net.accepted(0, 1), "accepted; nobody has its content yet");
    push_roots(&mut net, 0, vec![next_root(&v1, 20, u64::MAX, 1, &[])]);

    net.serving_fakes.insert(op);
    net.content.insert(sh.head.release.digest, a);
    let have = ContentMsg::Have {
        digest: sh.head.release.digest,
        bits: crate::swarm::bits_full(sh.head.release.chunk_count()),
        want: false,
    };
    net.say(op, oc, have);
    net.advance(Duration::from_secs(3));
    assert!(net.activations.is_empty(), "epoch 1 is closed");
    assert_eq!(net.seq(0), None);
}

#[test]
fn one_operator_key_may_hold_several_links_at_once() {
    // The CLI's identity is its release key: `status` while `release --wait` follows must not
    // knock the other off as a duplicate link.
    let mut net = Net::new(1, |_| vec![]);
    let (op, first) = net.fake(0);
    let second = net.reconnect(op, 0);
    net.run();
    assert!(
        net.conns[&first].2 && net.conns[&second].2,
        "both links stay up"
    );
    net.take(op);
    net.say(op, first, Message::StatusRequest);
    net.say(op, second, Message::StatusRequest);
    net.run();
    let answers = net
        .take(op)
        .iter()
        .filter(|m| matches!(m, Message::Status(_)))
        .count();
    assert_eq!(answers, 2, "each link is answered");
}
