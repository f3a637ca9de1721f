//! Freshness: an empty node does not serve an old release a peer hands it before it has
//! checked with its peers that nothing newer exists.

use super::*;
use crate::scenario::content;

fn activated(net: &Net, node: usize) -> Vec<u64> {
    net.activations
        .iter()
        .filter(|(i, _)| *i == node)
        .map(|(_, a)| a.head.head.seq)
        .collect()
}

/// Fake `f` (a node link) gossips `sh` to its node over `c` and announces the whole content.
fn hand(net: &mut Net, f: usize, c: Conn, sh: &SignedHead) {
    net.serving_fakes.insert(f);
    let gossip = BroadcastMsg::Gossip {
        head: Box::new(sh.clone()),
        round: 1,
    };
    net.say(f, c, gossip);
    let have = ContentMsg::Have {
        digest: sh.head.release.digest,
        bits: crate::swarm::bits_full(sh.head.release.chunk_count()),
        want: false,
    };
    net.say(f, c, have);
}

/// A node that starts empty is handed seq 1 by one peer before anything else: it verifies,
/// keeps and fetches it but does not activate it; once its two neighbours' summaries are
/// answered (they hold seq 2) it activates seq 2, never seq 1.
#[test]
fn an_empty_node_handed_an_old_head_waits_for_its_peers_and_activates_the_newest() {
    let mut net = Net::new_with(
        2,
        |i| (0..i).collect(),
        |i, c| {
            if i == 2 {
                c.freshness_peers = 2;
            }
        },
    );
    let (a, b) = (content(1, 20_000), content(2, 20_000));
    let (old, new) = (head(1, &a), head(2, &b));
    net.publish(0, &old, &a);
    net.run();
    net.publish(0, &new, &b);
    net.run();
    assert_eq!((net.seq(0), net.seq(1)), (Some(2), Some(2)));

    // Node 2 starts empty with contacts 0 and 1; its joins wait while a peer hands it seq 1.
    net.add(2, vec![0, 1], [], []);
    let joins = std::mem::take(&mut net.queue);
    let (peer, pc) = net.fake_as(2, PeerRole::Node);
    hand(&mut net, peer, pc, &old);
    net.run();
    assert!(net.accepted(2, 1), "verified and kept");
    assert_eq!(net.nodes[2].status().seqs, vec![(app(), at(1))]);
    let fetched = |m: &Message| matches!(m, Message::Content(ContentMsg::GetChunk { .. }));
    assert!(net.count(2, peer, fetched) > 0, "its content is fetched");
    assert!(activated(&net, 2).is_empty(), "but not activated");
    assert!(!net.nodes[2].is_fresh());

    net.queue.extend(joins);
    net.run();
    assert!(
        net.nodes[2].is_fresh(),
        "both neighbours' summaries answered"
    );
    assert_eq!(activated(&net, 2), vec![2], "the newest, and only it");
    assert_eq!(net.seq(2), Some(2));
}

/// What an operator pushes activates at once; with a single neighbour, a head it hands waits
/// for `freshness_timeout`.
#[test]
fn an_operator_push_activates_at_once_and_one_peer_suffices_after_the_timeout() {
    let mut net = Net::new_with(1, |_| vec![], |_, c| c.freshness_peers = 2);
    let a = content(1, 20_000);
    net.publish(0, &head(1, &a), &a);
    net.run();
    assert_eq!(net.seq(0), Some(1), "the operator signed it for now");
    assert!(!net.nodes[0].is_fresh(), "no peer heard yet");

    net.add(1, vec![0], [], []);
    net.run();
    assert!(net.accepted(1, 1), "its only neighbour pushed it");
    assert!(activated(&net, 1).is_empty());
    net.advance(Duration::from_millis(2_900));
    assert!(
        activated(&net, 1).is_empty(),
        "one peer: wait for the timeout"
    );
    net.advance(Duration::from_millis(200));
    assert_eq!(net.seq(1), Some(1));
}

/// A node that started with a record of the app takes a newer head from a peer at once: its
/// stored position protects it.
#[test]
fn a_node_with_a_record_at_start_is_not_held() {
    let a = content(1, 20_000);
    let h1 = head(1, &a);
    let record = AppRecord::advance(None, &h1, 8);
    let mut net = Net::new_with(0, |_| vec![], |_, c| c.freshness_peers = 2);
    net.add(0, vec![], [record], [h1.head.release.digest]);
    net.run();
    let b = content(2, 20_000);
    let h2 = head(2, &b);
    net.content.insert(h2.head.release.digest, b);
    let (peer, pc) = net.fake_as(0, PeerRole::Node);
    hand(&mut net, peer, pc, &h2);
    net.run();
    assert!(!net.nodes[0].is_fresh());
    assert_eq!(net.seq(0), Some(2));
}
