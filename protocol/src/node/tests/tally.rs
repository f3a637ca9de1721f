//! The tally layer: counts up the tree to the root and the publisher, the settled fleet count
//! down (versioned), pacing.

use super::*;
use crate::node::tally::{FLEET_SETTLE, TALLY_BURST};
use crate::wire::Tally;

fn subtree(app: &AppName, seq: u64, active: u32, version: u64) -> TallyMsg {
    TallyMsg::Subtree(Tally {
        app: Some(app.clone()),
        seq,
        active,
        version,
        ..Tally::default()
    })
}

/// Three nodes: the root's count reaches the publisher, and once it has been still for
/// `FLEET_SETTLE` it comes back down, so every node's status shows the fleet count.
#[test]
fn counts_go_up_the_tree_and_the_settled_count_comes_down() {
    let mut net = Net::new(3, |i| (0..i).collect());
    let body = scenario::content(1, 20_000);
    let sh = head(1, &body);
    let (p, _) = net.publish(0, &sh, &body);
    net.advance(Duration::from_millis(200));
    let last = net
        .take(p)
        .into_iter()
        .filter_map(|m| match m {
            Message::Tally(TallyMsg::Subtree(t)) => Some(t),
            _ => None,
        })
        .max_by_key(|t| t.version)
        .expect("the root reports to the publisher");
    assert_eq!(last.active, 3);
    assert!(
        net.nodes[2].status().fleet_tallies.is_empty(),
        "not settled yet"
    );
    net.advance(FLEET_SETTLE + Duration::from_millis(100));
    for i in 0..3 {
        let fleet = net.nodes[i].status().fleet_tallies;
        assert_eq!(fleet.len(), 1, "node {i}");
        assert_eq!(fleet[0].active, 3, "node {i}");
    }
    let fleet = |m: &Message| matches!(m, Message::Tally(TallyMsg::Fleet { version: 1, .. }));
    assert!(net.count(0, 1, fleet) + net.count(0, 2, fleet) >= 1);
}

/// Tallies and fleet counts carry versions: an older one from the same peer (frames may
/// arrive out of order) is ignored.
#[test]
fn older_tally_versions_are_ignored() {
    let mut net = Net::new(1, |_| vec![]);
    let body = scenario::content(2, 20_000);
    let sh = head(1, &body);
    net.publish(0, &sh, &body);
    net.run();
    let (c, cc) = net.fake_as(0, PeerRole::Node);
    net.say(c, cc, subtree(&app(), 1, 2, 5));
    net.run();
    assert_eq!(net.nodes[0].tally(&app()).unwrap().active, 3);
    net.say(c, cc, subtree(&app(), 1, 1, 4));
    net.run();
    assert_eq!(
        net.nodes[0].tally(&app()).unwrap().active,
        3,
        "older: ignored"
    );
    net.say(c, cc, subtree(&app(), 1, 4, 6));
    net.run();
    assert_eq!(net.nodes[0].tally(&app()).unwrap().active, 5);

    // Down the tree: a node below the root keeps the newest fleet count only.
    let mut net = Net::new(1, |_| vec![]);
    let (up, uc) = net.fake_as(0, PeerRole::Node);
    net.content.insert(sh.head.release.digest, body.clone());
    let gossip = BroadcastMsg::Gossip {
        head: Box::new(sh.clone()),
        round: 0,
    };
    net.say(up, uc, gossip);
    let fleet = |active, version| TallyMsg::Fleet {
        tally: Tally {
            app: Some(app()),
            seq: 1,
            active,
            ..Tally::default()
        },
        version,
    };
    net.say(up, uc, fleet(10, 2));
    net.say(up, uc, fleet(5, 1));
    net.run();
    assert_eq!(net.nodes[0].status().fleet_tallies[0].active, 10);
    net.say(up, uc, fleet(7, 3));
    net.run();
    assert_eq!(net.nodes[0].status().fleet_tallies[0].active, 7);
}

/// Tally sends are paced: a burst of `TALLY_BURST` at once, then one per `tally_interval`
/// (25 ms), coalescing what changed meanwhile.
#[test]
fn tally_sends_are_paced_by_a_token_bucket() {
    let mut net = Net::new(1, |_| vec![]);
    let body = scenario::content(3, 8 * 1024);
    let sh = head(1, &body);
    let (up, uc) = net.fake_as(0, PeerRole::Node);
    net.content.insert(sh.head.release.digest, body.clone());
    // Its summary: the node has checked with a peer, so what the peer hands it activates.
    let summary = BroadcastMsg::Summary {
        heads: vec![],
        reply: false,
        root: 0,
    };
    net.say(up, uc, summary);
    let gossip = BroadcastMsg::Gossip {
        head: Box::new(sh.clone()),
        round: 3,
    };
    net.say(up, uc, gossip);
    net.say(
        up,
        uc,
        ContentMsg::Have {
            digest: sh.head.release.digest,
            bits: vec![1],
            want: false,
        },
    );
    net.run();
    let index = 0;
    let data = chunk_of(&body, &sh, index);
    let d = sh.head.release.digest;
    net.say(
        up,
        uc,
        ContentMsg::Chunk {
            digest: d,
            index,
            data,
        },
    );
    net.advance(Duration::ZERO);
    let children: Vec<(usize, Conn)> = (0..8).map(|_| net.fake_as(0, PeerRole::Node)).collect();
    for (c, cc) in &children {
        net.say(*c, *cc, subtree(&app(), 1, 1, 1));
        net.advance(Duration::ZERO);
    }
    let sent_now = net.take(up).into_iter().filter(is_tally).count();
    assert_eq!(sent_now, TALLY_BURST as usize, "a burst, then pacing");
    net.advance(Duration::from_millis(26));
    let paced: Vec<Tally> = net
        .take(up)
        .into_iter()
        .filter_map(|m| match m {
            Message::Tally(TallyMsg::Subtree(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(paced.len(), 1, "one per interval after the burst");
    assert_eq!(paced[0].active, 1 + 8, "it carries every change held back");
    net.advance(Duration::from_millis(200));
    assert_eq!(
        net.take(up).into_iter().filter(is_tally).count(),
        0,
        "nothing new"
    );
}
