//! The content layer: Have / GetChunk / Chunk / HaveChunk between nodes, a bad chunk bans its
//! sender, a request that times out goes to another peer.

use super::*;

fn get_chunks(msgs: &[Message]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Content(ContentMsg::GetChunk { index, .. }) => Some(*index),
            _ => None,
        })
        .collect()
}

/// 0 fetches from the publisher and announces each verified chunk to 1, which asked to hear
/// of them (`Have` with `want`) and fetches them from 0 (cut-through): both activate exactly
/// the signed bytes.
#[test]
fn chunks_stream_through_have_get_chunk_chunk_and_have_chunk() {
    let mut net = Net::new(2, |i| (0..i).collect());
    let body = scenario::content(3, 40_000);
    let sh = head(1, &body);
    let d = sh.head.release.digest;
    net.publish(0, &sh, &body);
    net.run();
    let want = |m: &Message| matches!(m, Message::Content(ContentMsg::Have { want: true, digest, .. }) if *digest == d);
    assert!(net.count(1, 0, want) >= 1, "1 asks to hear of 0's chunks");
    let have_chunk = |m: &Message| matches!(m, Message::Content(ContentMsg::HaveChunk { .. }));
    assert!(
        net.count(0, 1, have_chunk) >= 1,
        "0 announces verified chunks"
    );
    let get = |m: &Message| matches!(m, Message::Content(ContentMsg::GetChunk { .. }));
    let chunk = |m: &Message| matches!(m, Message::Content(ContentMsg::Chunk { .. }));
    assert!(
        net.count(1, 0, get) >= 1 && net.count(0, 1, chunk) >= 1,
        "1 fetches from 0"
    );
    assert!(
        net.count(1, 0, have_chunk) >= 1,
        "1 acknowledges what 0 served"
    );
    for i in [0, 1] {
        let (_, a) = net
            .activations
            .iter()
            .find(|(n, _)| *n == i)
            .expect("activated");
        assert_eq!(a.content.as_deref(), Some(&body[..]), "node {i}");
    }
    assert_eq!((net.seq(0), net.seq(1)), (Some(1), Some(1)));
}

/// A peer that serves a chunk that does not match the signed chunk map is disconnected and
/// banned (a new link from it is refused); its chunks come from the other holder.
#[test]
fn a_bad_chunk_bans_its_sender_and_the_chunk_comes_from_another_peer() {
    let mut net = Net::new(1, |_| vec![]);
    let body = scenario::content(4, 64 * 1024);
    let sh = head(1, &body);
    let d = sh.head.release.digest;
    let n = sh.head.release.chunk_count();
    let (liar, lc) = net.fake(0);
    let (good, gc) = net.fake(0);
    net.say(liar, lc, BroadcastMsg::Head(Box::new(sh.clone())));
    for (f, c) in [(liar, lc), (good, gc)] {
        let bits = crate::swarm::bits_full(n);
        net.say(
            f,
            c,
            ContentMsg::Have {
                digest: d,
                bits,
                want: false,
            },
        );
    }
    net.run();
    let asked_liar = get_chunks(&net.take(liar));
    assert!(!asked_liar.is_empty());
    let i = asked_liar[0];
    let mut bad = chunk_of(&body, &sh, i).to_vec();
    bad[0] ^= 0xff;
    net.say(
        liar,
        lc,
        ContentMsg::Chunk {
            digest: d,
            index: i,
            data: bad.into(),
        },
    );
    net.run();
    assert!(
        net.disconnects
            .iter()
            .any(|(_, r)| r.contains("served a bad chunk")),
        "{:?}",
        net.disconnects
    );
    assert!(!net.conns[&lc].2, "the liar is disconnected");
    // The good peer gets asked for everything, the bad chunk included, and serves it.
    for _ in 0..n {
        let asked = get_chunks(&net.take(good));
        for index in asked {
            let data = chunk_of(&body, &sh, index);
            net.say(
                good,
                gc,
                ContentMsg::Chunk {
                    digest: d,
                    index,
                    data,
                },
            );
        }
        net.run();
    }
    let (_, a) = net.activations.last().expect("activated");
    assert_eq!(a.content.as_deref(), Some(&body[..]));
    // It comes back: refused.
    net.reconnect(liar, 0);
    assert!(
        net.disconnects
            .iter()
            .any(|(_, r)| r == "dropped earlier for serving bad data")
    );
}

/// A request not answered by `chunk_timeout` goes to another peer that has the chunk.
#[test]
fn a_request_that_times_out_goes_to_another_peer() {
    let mut net = Net::new(1, |_| vec![]);
    net.auto_activate = false;
    let body = scenario::content(5, 8 * 1024);
    let sh = head(1, &body);
    let d = sh.head.release.digest;
    let (slow, sc) = net.fake(0);
    net.say(slow, sc, BroadcastMsg::Head(Box::new(sh.clone())));
    net.say(
        slow,
        sc,
        ContentMsg::Have {
            digest: d,
            bits: vec![1],
            want: false,
        },
    );
    net.run();
    assert_eq!(get_chunks(&net.take(slow)), vec![0]);
    let (other, oc) = net.fake(0);
    net.say(
        other,
        oc,
        ContentMsg::Have {
            digest: d,
            bits: vec![1],
            want: false,
        },
    );
    net.run();
    assert_eq!(
        get_chunks(&net.take(other)),
        Vec::<u32>::new(),
        "chunk 0 is in flight"
    );
    net.advance(Duration::from_millis(1900));
    assert!(
        get_chunks(&net.take(other)).is_empty(),
        "not before chunk_timeout (2 s)"
    );
    net.advance(Duration::from_millis(200));
    assert_eq!(
        get_chunks(&net.take(other)),
        vec![0],
        "asked elsewhere after the timeout"
    );
    let data = chunk_of(&body, &sh, 0);
    net.say(
        other,
        oc,
        ContentMsg::Chunk {
            digest: d,
            index: 0,
            data,
        },
    );
    net.run();
    assert_eq!(net.activations.len(), 1);
}
