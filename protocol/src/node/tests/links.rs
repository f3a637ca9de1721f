//! The membership wiring: what a neighbour coming and going means to the other layers.

use super::*;

/// A new neighbour hears this node's summary and the heads it holds (with its rank, for the
/// tally tree); the summary exchange pushes it the head it lacks, and it fetches the content.
#[test]
fn a_new_neighbour_hears_the_summary_and_catches_up() {
    let body = scenario::content(8, 20_000);
    let sh = head(1, &body);
    let record = AppRecord::advance(None, &sh, 8);
    let mut net = Net::new(0, |_| vec![]);
    net.add(0, vec![], [record], [sh.head.release.digest]);
    net.content.insert(sh.head.release.digest, body.clone());
    net.run();
    net.add(1, vec![0], [], []);
    net.run();
    let summary = |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::Summary { heads, reply: false, .. }) if heads == &vec![(app(), at(1))]);
    assert_eq!(net.count(0, 1, summary), 1);
    let ihave = |m: &Message| matches!(m, Message::Broadcast(BroadcastMsg::IHave(a)) if a.len() == 1 && a[0].seq == 1 && a[0].round == 0);
    assert_eq!(net.count(0, 1, ihave), 1);
    assert!(
        net.count(0, 1, is_gossip) >= 1,
        "the summary exchange pushes the head"
    );
    assert_eq!(net.seq(1), Some(1));
    let (_, a) = net.activations.iter().find(|(n, _)| *n == 1).unwrap();
    assert_eq!(a.content.as_deref(), Some(&body[..]));
    assert!(
        net.events
            .iter()
            .any(|(n, e)| *n == 0 && matches!(e, Event::Neighbor { up: true, .. }))
    );
}

/// A neighbour that goes away mid-transfer: its requests are forgotten and the chunks come
/// from another holder; it leaves the eager set (heads are no longer pushed to it).
#[test]
fn a_lost_neighbour_mid_transfer_is_replaced_by_another_holder() {
    let mut net = Net::new(1, |_| vec![]);
    let body = scenario::content(9, 8 * 1024 * 4);
    let sh = head(1, &body);
    let d = sh.head.release.digest;
    let (gone, gc) = net.fake(0);
    let (other, oc) = net.fake(0);
    net.say(gone, gc, BroadcastMsg::Head(Box::new(sh.clone())));
    let bits = crate::swarm::bits_full(4);
    net.say(
        gone,
        gc,
        ContentMsg::Have {
            digest: d,
            bits: bits.clone(),
            want: false,
        },
    );
    net.run();
    assert!(!net.take(gone).is_empty(), "asked the first holder");
    net.conns.get_mut(&gc).unwrap().2 = false;
    net.queue.push_back((0, Ev::Down(gc)));
    net.say(
        other,
        oc,
        ContentMsg::Have {
            digest: d,
            bits,
            want: false,
        },
    );
    net.run();
    let asked: Vec<u32> = net
        .take(other)
        .into_iter()
        .filter_map(|m| match m {
            Message::Content(ContentMsg::GetChunk { index, .. }) => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(
        asked.len(),
        4,
        "every chunk from the remaining holder: {asked:?}"
    );
    for index in asked {
        let data = chunk_of(&body, &sh, index);
        net.say(
            other,
            oc,
            ContentMsg::Chunk {
                digest: d,
                index,
                data,
            },
        );
    }
    net.run();
    assert_eq!(net.seq(0), Some(1));
}
