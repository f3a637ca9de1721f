//! The serving layer: a few upload slots, the least-served chunk first, slots freed by
//! `HaveChunk` or a timeout.

use super::*;
use crate::node::serve::SERVE_SLOTS;

/// Node 0 holds the content of `sh` (stored).
fn holder(body: &[u8]) -> (Net, SignedHead) {
    let sh = head(1, body);
    let record = AppRecord::advance(None, &sh, 8);
    let mut net = Net::new(0, |_| vec![]);
    net.add(0, vec![], [record], [sh.head.release.digest]);
    net.content.insert(sh.head.release.digest, body.to_vec());
    net.run();
    (net, sh)
}

fn chunks(msgs: &[Message]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Content(ContentMsg::Chunk { index, .. }) => Some(*index),
            _ => None,
        })
        .collect()
}

/// With every slot busy, the next slot goes to the chunk sent least often, even when another
/// request is older; a `HaveChunk` frees a slot at once.
#[test]
fn the_least_served_chunk_goes_first_when_a_slot_frees() {
    let body = scenario::content(6, 10 * 8 * 1024);
    let (mut net, sh) = holder(&body);
    let d = sh.head.release.digest;
    let (a, ac) = net.fake(0);
    let (b, bc) = net.fake(0);
    for index in 0..SERVE_SLOTS as u32 {
        net.say(a, ac, ContentMsg::GetChunk { digest: d, index });
    }
    net.run();
    assert_eq!(
        chunks(&net.take(a)),
        (0..SERVE_SLOTS as u32).collect::<Vec<_>>()
    );
    // Slots full: b's request for chunk 0 (sent once already) queues, then a's for 7 (never).
    net.say(
        b,
        bc,
        ContentMsg::GetChunk {
            digest: d,
            index: 0,
        },
    );
    net.say(
        a,
        ac,
        ContentMsg::GetChunk {
            digest: d,
            index: 7,
        },
    );
    net.run();
    assert!(net.take(a).is_empty() && net.take(b).is_empty(), "queued");
    net.say(
        a,
        ac,
        ContentMsg::HaveChunk {
            digest: d,
            index: 0,
        },
    );
    net.run();
    assert_eq!(chunks(&net.take(a)), vec![7], "least served first");
    assert!(net.take(b).is_empty());
    net.say(
        a,
        ac,
        ContentMsg::HaveChunk {
            digest: d,
            index: 1,
        },
    );
    net.run();
    assert_eq!(chunks(&net.take(b)), vec![0]);
}

/// A chunk never acknowledged frees its slot after `SERVE_SLOT_TIMEOUT`; a request for a
/// chunk this node does not hold is refused at once.
#[test]
fn an_unacknowledged_slot_frees_after_a_timeout() {
    let body = scenario::content(7, 10 * 8 * 1024);
    let (mut net, sh) = holder(&body);
    let d = sh.head.release.digest;
    let (a, ac) = net.fake(0);
    for index in 0..=SERVE_SLOTS as u32 {
        net.say(a, ac, ContentMsg::GetChunk { digest: d, index });
    }
    net.say(
        a,
        ac,
        ContentMsg::GetChunk {
            digest: Digest([7; 32]),
            index: 0,
        },
    );
    net.run();
    let got = net.take(a);
    assert_eq!(chunks(&got).len(), SERVE_SLOTS);
    assert!(
        got.iter()
            .any(|m| matches!(m, Message::Content(ContentMsg::NoChunk { .. })))
    );
    net.advance(Duration::from_millis(900));
    assert!(net.take(a).is_empty());
    net.advance(Duration::from_millis(200));
    assert_eq!(chunks(&net.take(a)), vec![SERVE_SLOTS as u32]);
}
