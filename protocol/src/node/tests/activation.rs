//! The activation layer: Activate → Activated, refused, reverted, local override, and a newer
//! head cancelling an activation in flight.

use super::*;
use crate::wire::{Outcome, Report};

fn reports(msgs: &[Message]) -> Vec<Outcome> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Report(Report { outcome, .. }) => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

/// The verified content goes to the shell with the record to persist; the record is in force
/// only once the shell reports `Activated`, and the publisher hears the outcome.
#[test]
fn a_release_is_in_force_only_once_activated() {
    let mut net = Net::new(1, |_| vec![]);
    net.auto_activate = false;
    let body = scenario::content(1, 20_000);
    let sh = head(1, &body);
    let (p, _) = net.publish(0, &sh, &body);
    net.run();
    let (_, a) = &net.activations[0];
    assert_eq!(a.head, sh);
    assert_eq!(a.content.as_deref(), Some(&body[..]));
    assert_eq!(a.record.head, sh);
    assert_eq!(net.seq(0), None, "not in force before the shell says so");
    assert_eq!(
        net.nodes[0].status().seqs,
        vec![(app(), at(1))],
        "but the seq is held"
    );
    net.input(
        0,
        Input::Activated {
            app: app(),
            seq: 1,
            result: Ok(()),
        },
    );
    net.run();
    assert_eq!(net.seq(0), Some(1));
    assert!(
        net.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Activated { seq: 1, .. }))
    );
    assert_eq!(reports(&net.take(p)), vec![Outcome::Active]);
    assert_eq!(net.nodes[0].tally(&app()).unwrap().active, 1);
}

/// A refusal keeps the seq held (the same head is not tried again), shows the reason and
/// counts the head failed here.
#[test]
fn a_refused_activation_keeps_the_seq_and_counts_failed() {
    let mut net = Net::new(1, |_| vec![]);
    net.auto_activate = false;
    let body = scenario::content(2, 20_000);
    let sh = head(1, &body);
    let (p, pc) = net.publish(0, &sh, &body);
    net.run();
    let err = ActivationError::Refused {
        stage: "compile".into(),
        reason: "not a component".into(),
    };
    net.input(
        0,
        Input::Activated {
            app: app(),
            seq: 1,
            result: Err(err),
        },
    );
    net.run();
    let text = "compile: not a component".to_string();
    assert!(net.events.iter().any(
        |(_, e)| matches!(e, Event::ActivationFailed { seq: 1, reason, .. } if *reason == text)
    ));
    assert_eq!(reports(&net.take(p)), vec![Outcome::Failed(text)]);
    assert_eq!(net.nodes[0].tally(&app()).unwrap().failed, 1);
    assert_eq!(net.nodes[0].status().seqs, vec![(app(), at(1))]);
    net.say(p, pc, BroadcastMsg::Head(Box::new(sh.clone())));
    net.run();
    assert_eq!(
        net.activations.len(),
        1,
        "the same head is not activated again"
    );
}

/// After its trial a release may be reverted: status shows what serves instead and why, the
/// tally counts it failed; an operator's local override shows too, until it is lifted.
#[test]
fn a_reverted_release_and_a_local_override_show_in_status() {
    let mut net = Net::new(1, |_| vec![]);
    let body = scenario::content(3, 20_000);
    let (v1, v2) = (head(1, &body), head(2, &scenario::content(4, 20_000)));
    net.publish(0, &v1, &body);
    net.run();
    net.publish(0, &v2, &scenario::content(4, 20_000));
    net.run();
    assert_eq!(net.seq(0), Some(2));
    let reason = "trial failed: the guest trapped".to_string();
    net.input(
        0,
        Input::Reverted {
            app: app(),
            seq: 2,
            reason: reason.clone(),
            serving: Some(v1.head.release.clone()),
        },
    );
    net.run();
    let st = &net.nodes[0].status().apps[0];
    assert_eq!((st.seq, st.last_error.as_ref()), (2, Some(&reason)));
    assert_eq!(st.serving.as_ref(), Some(&v1.head.release));
    assert!(!st.local_override);
    let t = net.nodes[0].tally(&app()).unwrap();
    assert_eq!((t.active, t.failed), (0, 1));
    // A revert of a seq that is not in force is ignored.
    net.input(
        0,
        Input::Reverted {
            app: app(),
            seq: 1,
            reason: "x".into(),
            serving: None,
        },
    );
    net.input(
        0,
        Input::LocalOverride {
            app: app(),
            release: Some(v1.head.release.clone()),
        },
    );
    net.run();
    let st = &net.nodes[0].status().apps[0];
    assert!(st.local_override && st.last_error.as_ref() == Some(&reason));
    net.input(
        0,
        Input::LocalOverride {
            app: app(),
            release: None,
        },
    );
    net.run();
    let st = &net.nodes[0].status().apps[0];
    assert_eq!((st.serving.as_ref(), st.local_override), (None, false));
}

/// Newer heads during an activation ask the shell once to cancel it; when it reports back,
/// the newest head starts (cached content activates from the store, `content: None`).
#[test]
fn newer_heads_cancel_an_activation_in_flight_once() {
    let mut net = Net::new(1, |_| vec![]);
    net.auto_activate = false;
    let body = scenario::content(5, 20_000);
    let sh1 = head(1, &body);
    let (p, pc) = net.publish(0, &sh1, &body);
    net.run();
    assert_eq!(net.activations.len(), 1);
    let rollback = signed("shop", 2, &body, 8 * 1024, HeadKind::Rollback);
    let sh3 = signed("shop", 3, &body, 8 * 1024, HeadKind::Rollback);
    net.say(p, pc, BroadcastMsg::Head(Box::new(rollback)));
    net.say(p, pc, BroadcastMsg::Head(Box::new(sh3.clone())));
    net.run();
    assert_eq!(net.cancels, vec![(0, 1)], "one cancel, for seq 1");
    assert_eq!(
        net.activations.len(),
        1,
        "nothing starts while seq 1 activates"
    );
    net.input(
        0,
        Input::Activated {
            app: app(),
            seq: 1,
            result: Err(ActivationError::Cancelled),
        },
    );
    net.run();
    let (_, a) = net.activations.last().unwrap();
    assert_eq!(a.head, sh3, "the newest head starts");
    assert_eq!(
        a.content.as_deref(),
        Some(&body[..]),
        "its content is the verified transfer"
    );
    net.input(
        0,
        Input::Activated {
            app: app(),
            seq: 3,
            result: Ok(()),
        },
    );
    net.run();
    assert_eq!(net.seq(0), Some(3));
    assert!(net.events.iter().any(|(_, e)| matches!(e, Event::ActivationFailed { seq: 1, reason, .. } if reason == "cancelled: a newer head arrived")));
}
