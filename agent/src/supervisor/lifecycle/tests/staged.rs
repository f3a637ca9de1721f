//! Staged rollouts: prefetches (compiled and stored, never swapped in; one at a time, after
//! activations; cancelled or refused with a reason), the staged release kept compiled until
//! superseded, and the head of a new wave of the release that already serves.

use fleetcast_protocol::node::Prefetch;

use super::*;

fn prefetch_of(r: &Release, seq: u64) -> Box<Prefetch> {
    Box::new(Prefetch {
        head: act(r, seq).head,
        content: Some(b"bytes".to_vec()),
    })
}

fn prefetched_answer(fx: &[Effect]) -> Option<(u64, Result<(), ActivationError>)> {
    fx.iter().find_map(|e| match e {
        Effect::Notify(Input::Prefetched { seq, result, .. }) => Some((*seq, result.clone())),
        _ => None,
    })
}

fn started_prefetch(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::StartPrefetch(p) => Some(p.head.head.seq),
        _ => None,
    })
}

/// No slot, record or serving-state effect.
fn touches_nothing(fx: &[Effect]) -> bool {
    !has(fx, |e| {
        matches!(
            e,
            Effect::Swap { .. }
                | Effect::Undeploy { .. }
                | Effect::PersistRecord { .. }
                | Effect::PersistState { .. }
                | Effect::PersistSame { .. }
                | Effect::StartCompile(_)
        )
    })
}

#[test]
fn a_prefetch_compiles_and_stores_without_touching_what_serves() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let before = lc.app(&app()).unwrap().state.clone();
    let v2 = release("2.0.0");
    let fx = lc.prefetch(prefetch_of(&v2, 2));
    assert_eq!(started_prefetch(&fx), Some(2));
    assert!(touches_nothing(&fx), "{fx:?}");
    let fx = lc.prefetched(&app(), 2, &v2, StepOutcome::Done);
    assert_eq!(prefetched_answer(&fx), Some((2, Ok(()))));
    assert!(touches_nothing(&fx), "{fx:?}");
    let life = lc.app(&app()).unwrap();
    assert_eq!(life.state, before, "the serving state is untouched");
    assert_eq!(life.record.as_ref().map(|r| r.head.head.seq), Some(1));
    assert_eq!(life.serving.as_ref().map(|s| s.release.seq), Some(1));
    assert_eq!(life.staged.as_ref(), Some(&v2));
    assert!(lc.prefetching().is_none());
}

#[test]
fn prefetches_run_one_at_a_time_and_only_after_activations() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(0, 0, 5));
    let shop = |v: &str| {
        let mut r = release(v);
        r.app = AppName::new("shop").unwrap();
        r
    };
    // An activation of "hello" is in progress: the prefetch of "shop" waits.
    let fx = lc.activate(act(&release("1.0.0"), 1));
    let Some(Effect::StartCompile(a)) = fx.into_iter().last() else {
        panic!("no compile");
    };
    let fx = lc.prefetch(prefetch_of(&shop("1.0.0"), 4));
    assert_eq!(started_prefetch(&fx), None, "{fx:?}");
    assert!(lc.start_prefetch().is_empty());
    // The activation ends (swapped in and committed, no trial): now it starts.
    let _ = lc.compiled(clock.at(1), &a, StepOutcome::Done);
    let _ = lc.persisted(clock.at(2), &a, Ok(()));
    let fx = lc.smoked(clock.at(3), &a, StepOutcome::Done);
    assert_eq!(activated(&fx), Some(Ok(())));
    let fx = lc.start_prefetch();
    assert_eq!(started_prefetch(&fx), Some(4));
    // A second one (another app) waits for the first.
    let mut other = release("3.0.0");
    other.app = AppName::new("blog").unwrap();
    assert_eq!(started_prefetch(&lc.prefetch(prefetch_of(&other, 7))), None);
    assert_eq!(lc.prefetches_queued(), 1);
    // An activation arriving meanwhile is not held up by the prefetch.
    let fx = lc.activate(act(&release("2.0.0"), 2));
    assert!(matches!(fx.last(), Some(Effect::StartCompile(_))), "{fx:?}");
    // The first prefetch ends: the next waits for that activation.
    let fx = lc.prefetched(
        &AppName::new("shop").unwrap(),
        4,
        &shop("1.0.0"),
        StepOutcome::Done,
    );
    assert_eq!(prefetched_answer(&fx), Some((4, Ok(()))));
    assert_eq!(started_prefetch(&fx), None, "{fx:?}");
    assert_eq!(lc.prefetches_queued(), 1);
}

#[test]
fn a_prefetch_that_does_not_compile_is_answered_with_its_stage_and_reason() {
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let v1 = release("1.0.0");
    let _ = lc.prefetch(prefetch_of(&v1, 1));
    let fx = lc.prefetched(
        &app(),
        1,
        &v1,
        StepOutcome::Failed("not a component".into()),
    );
    let (seq, result) = prefetched_answer(&fx).unwrap();
    assert_eq!(seq, 1);
    let e = result.unwrap_err();
    assert_eq!(
        e,
        ActivationError::Refused {
            stage: "compile".into(),
            reason: "not a component".into()
        }
    );
    assert_eq!(e.to_string(), "compile: not a component");
    assert!(touches_nothing(&fx));
    assert!(lc.app(&app()).is_none_or(|l| l.staged.is_none()));
}

#[test]
fn a_cancelled_prefetch_stops_when_cheap_and_is_answered_either_way() {
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let (v1, v2) = (release("1.0.0"), release("2.0.0"));
    let mut shop = release("5.0.0");
    shop.app = AppName::new("shop").unwrap();
    let _ = lc.prefetch(prefetch_of(&shop, 3));
    // Queued behind it: cancelled at once.
    assert_eq!(started_prefetch(&lc.prefetch(prefetch_of(&v1, 1))), None);
    let fx = lc.cancel(&app(), 1);
    assert_eq!(
        prefetched_answer(&fx),
        Some((1, Err(ActivationError::Cancelled)))
    );
    assert_eq!(lc.prefetches_queued(), 0);
    // Running: the shell is asked to stop it; stopped before its compile, it answers Cancelled.
    let shop_app = shop.app.clone();
    let fx = lc.cancel(&shop_app, 3);
    assert!(
        matches!(&fx[..], [Effect::CancelPrefetch { seq: 3, .. }]),
        "{fx:?}"
    );
    assert!(lc.cancel(&shop_app, 3).is_empty(), "asked once");
    let fx = lc.prefetched(&shop_app, 3, &shop, StepOutcome::Cancelled);
    assert_eq!(
        prefetched_answer(&fx),
        Some((3, Err(ActivationError::Cancelled)))
    );
    // Too late to stop: it finishes, and its result is kept (a later wave may want it).
    let _ = lc.prefetch(prefetch_of(&v2, 2));
    let _ = lc.cancel(&app(), 2);
    let fx = lc.prefetched(&app(), 2, &v2, StepOutcome::Done);
    assert_eq!(prefetched_answer(&fx), Some((2, Ok(()))));
    assert_eq!(lc.app(&app()).unwrap().staged.as_ref(), Some(&v2));
}

#[test]
fn the_staged_release_is_kept_compiled_until_another_head_supersedes_it() {
    let clock = Clock(Instant::now());
    // One compiled release kept per app.
    let mut lc = Lifecycle::new(cfg(2, 0, 1));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let (v1, v2) = (release("1.0.0"), release("2.0.0"));
    // Another app holds the same bytes as v2, and commits twice: its trim would drop them.
    let other = AppName::new("shop").unwrap();
    let with_app = |r: &Release, v: &str| {
        let mut r = r.clone();
        r.app = other.clone();
        r.version = v.parse().unwrap();
        r
    };
    let _ = lc.prefetch(prefetch_of(&v2, 2));
    let _ = lc.prefetched(&app(), 2, &v2, StepOutcome::Done);
    let shop_v2 = with_app(&v2, "2.0.0");
    for (r, seq) in [
        (shop_v2.clone(), 1),
        (with_app(&release("9.0.0"), "9.0.0"), 2),
    ] {
        let fx = through_smoke(&mut lc, &mut disk, clock.at(seq), act(&r, seq));
        if let Some(c) = counting(&fx) {
            c.record(&RequestOutcome::Status(200));
            c.record(&RequestOutcome::Status(200));
        }
        let fx = lc.judge_trials(clock.at(seq));
        assert!(
            !has(
                &fx,
                |e| matches!(e, Effect::DropArtifact { digest } if *digest == v2.digest)
            ),
            "the staged release's artifact is kept: {fx:?}"
        );
    }
    // The next wave includes this node: v2 activates from its artifact; v1 is trimmed, not v2.
    let fx = through_smoke(&mut lc, &mut disk, clock.at(10), act(&v2, 3));
    let c = counting(&fx).unwrap();
    c.record(&RequestOutcome::Status(200));
    c.record(&RequestOutcome::Status(200));
    let fx = lc.judge_trials(clock.at(11));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::DropArtifact { digest } if *digest == v1.digest)
    ));
    assert!(!has(
        &fx,
        |e| matches!(e, Effect::DropArtifact { digest } if *digest == v2.digest)
    ));
    assert!(lc.app(&app()).unwrap().staged.is_none(), "it serves now");
    // A halt supersedes a staged release: its artifact goes (no app keeps it).
    let v3 = release("3.0.0");
    let _ = lc.prefetch(prefetch_of(&v3, 4));
    let _ = lc.prefetched(&app(), 4, &v3, StepOutcome::Done);
    let fx = lc.activate(act(&v2, 5));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::DropArtifact { digest } if *digest == v3.digest)
    ));
}

/// The record and state a [`Effect::PersistSame`] writes, applied to `disk`.
fn apply_same(disk: &mut Disk, fx: &[Effect]) -> (Box<Activation>, ServingState) {
    let [Effect::PersistSame { act, state }] = fx else {
        panic!("expected only a record write: {fx:?}");
    };
    disk.record = Some(act.record.clone());
    disk.state = Some(state.as_ref().clone());
    (
        Box::new(Activation {
            head: act.head.clone(),
            content: None,
            record: act.record.clone(),
        }),
        state.as_ref().clone(),
    )
}

#[test]
fn a_new_wave_of_the_release_that_serves_only_advances_the_record() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let v1 = release("1.0.0");
    // The next wave's head (seq 2) of v1, which serves and is committed here.
    let fx = lc.activate(act(&v1, 2));
    assert!(
        !has(&fx, |e| matches!(e, Effect::StartCompile(_))),
        "{fx:?}"
    );
    let (a, state) = apply_same(&mut disk, &fx);
    assert_eq!(state.committed.as_ref().map(|c| c.seq), Some(2));
    assert_eq!(a.record.head.head.seq, 2);
    let fx = lc.recorded(clock.at(1), &a, state, Ok(()));
    assert!(matches!(
        &fx[..],
        [Effect::Notify(Input::Activated {
            seq: 2,
            result: Ok(()),
            ..
        })]
    ));
    let life = lc.app(&app()).unwrap();
    assert_eq!(life.record.as_ref().map(|r| r.head.head.seq), Some(2));
    assert_eq!(life.serving.as_ref().map(|s| s.release.seq), Some(2));
    assert!(life.trial.is_none(), "no new trial");
    // A restart from that disk serves v1 and holds seq 2 as committed, not failed.
    let plan = disk.restart(clock.at(5));
    assert_eq!(
        plan.serve.map(|s| (s.seq, s.release)),
        Some((2, v1.clone()))
    );
    assert!(
        plan.state.failure.is_none() && !plan.changed,
        "{:?}",
        plan.state
    );
    // A write that fails refuses the head at persist; v1 keeps serving.
    let fx = lc.activate(act(&v1, 3));
    let (a, state) = apply_same(&mut Disk::default(), &fx);
    let fx = lc.recorded(clock.at(6), &a, state, Err("disk full".into()));
    assert_eq!(
        activated(&fx),
        Some(Err(ActivationError::Refused {
            stage: "persist".into(),
            reason: "disk full".into()
        }))
    );
    assert_eq!(
        lc.app(&app())
            .unwrap()
            .serving
            .as_ref()
            .map(|s| s.release.seq),
        Some(2)
    );
}

#[test]
fn a_new_wave_during_the_trial_keeps_the_trial_under_the_new_seq() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let v2 = release("2.0.0");
    let fx = through_smoke(&mut lc, &mut disk, clock.at(1), act(&v2, 2));
    let c = counting(&fx).unwrap();
    let fx = lc.activate(act(&v2, 3));
    let (a, state) = apply_same(&mut disk, &fx);
    assert_eq!(state.trial.as_ref().map(|t| t.seq), Some(3));
    let _ = lc.recorded(clock.at(2), &a, state, Ok(()));
    assert_eq!(
        lc.app(&app()).unwrap().trial.as_ref().map(|t| t.seq),
        Some(3)
    );
    // The same counters judge it: a trap reverts, and the node hears it for seq 3.
    c.record(&RequestOutcome::Trap("boom".into()));
    let fx = lc.judge_trials(clock.at(3));
    assert!(has(&fx, |e| matches!(
        e,
        Effect::Notify(Input::Reverted { seq: 3, .. })
    )));
    // A different release of the same app is a real activation.
    let fx = lc.activate(act(&release("4.0.0"), 4));
    assert!(matches!(fx.last(), Some(Effect::StartCompile(_))), "{fx:?}");
}
