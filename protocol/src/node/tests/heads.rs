//! Accepting and refusing heads: a version names one set of bytes.

use super::*;
use crate::head::Head;
use crate::release::Release;
use crate::wire::{Outcome, Report};

/// A head for `app()` at `seq` that calls `body` version `version`.
fn versioned(seq: u64, version: &str, body: &[u8], kind: HeadKind) -> SignedHead {
    Head {
        fleet: "sim".into(),
        app: app(),
        seq,
        release: Release::build(app(), version.parse().unwrap(), body, 8 * 1024).unwrap(),
        kind,
        issued_at_ms: seq,
        epoch: 0,
        plan: None,
    }
    .sign(&scenario::publisher_key())
}

fn rejections(net: &Net) -> Vec<(u64, &'static str, String)> {
    net.events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Rejected {
                seq, kind, reason, ..
            } => Some((*seq, *kind, reason.clone())),
            _ => None,
        })
        .collect()
}

/// A `Release` head that gives a version of the history other bytes is refused on the usual
/// path (the sender hears why, it is counted rejected, nothing changes); the same bytes under a
/// new version and a `Rollback` to the old release (same version, same digest) are accepted.
#[test]
fn a_version_reused_for_other_bytes_is_refused() {
    let mut net = Net::new(1, |_| vec![]);
    let (a, b) = (scenario::content(1, 20_000), scenario::content(2, 20_000));
    let v1 = versioned(1, "2.0.3", &a, HeadKind::Release);
    net.publish(0, &v1, &a);
    net.run();
    assert_eq!(net.seq(0), Some(1));

    let reuse = versioned(2, "2.0.3", &b, HeadKind::Release);
    let (p, _) = net.publish(0, &reuse, &b);
    net.run();
    let (da, db) = (Digest::of(&a).short(), Digest::of(&b).short());
    let want = format!(
        "shop 2.0.3 is already released with other bytes (digest {da}, this head carries {db}): \
         a version names one set of bytes; release these bytes as a new version"
    );
    assert_eq!(rejections(&net), vec![(2, "version-reuse", want.clone())]);
    let msgs = net.take(p);
    assert!(
        msgs.iter().any(|m| matches!(m,
            Message::Report(Report { seq: 2, outcome: Outcome::Rejected(r), .. }) if *r == want)),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| matches!(m,
            Message::Tally(TallyMsg::Subtree(t)) if t.seq == 2 && t.rejected == 1)),
        "{msgs:?}"
    );
    assert_eq!(net.seq(0), Some(1), "nothing changed");
    assert_eq!(
        net.nodes[0].status().seqs,
        vec![(app(), at(1))],
        "seq 2 not held"
    );
    assert_eq!(net.activations.len(), 1);

    // The same bytes under a new version: accepted.
    let renamed = versioned(2, "2.0.4", &b, HeadKind::Release);
    net.publish(0, &renamed, &b);
    net.run();
    assert_eq!(net.seq(0), Some(2));

    // A rollback to the old release: same version, same digest, accepted (from the store).
    let rollback = versioned(3, "2.0.3", &a, HeadKind::Rollback);
    net.publish(0, &rollback, &a);
    net.run();
    assert_eq!(net.seq(0), Some(3));
    let (_, last) = net.activations.last().unwrap();
    assert_eq!(last.head, rollback);
    assert!(last.content.is_none(), "activated from the store");
    assert_eq!(rejections(&net).len(), 1, "only the reuse was refused");

    // A rollback that names the old version with other bytes is refused like a release.
    let forged = versioned(4, "2.0.3", &b, HeadKind::Rollback);
    net.publish(0, &forged, &b);
    net.run();
    assert_eq!(net.seq(0), Some(3));
    assert_eq!(rejections(&net).len(), 2);
}
