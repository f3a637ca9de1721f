//! What a restart serves: a crash after every pipeline step, a clean stop during a trial, and
//! records the serving state does not account for.

use super::*;

#[test]
fn a_crash_after_every_step_restarts_into_the_last_committed_release() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let serves = |disk: &Disk| {
        let p = disk.restart(clock.at(100));
        (
            p.serve.map(|s| s.release.version.to_string()),
            p.state.failure.map(|f| (f.seq, f.stage, f.reason)),
        )
    };
    assert_eq!(serves(&disk), (Some("1.0.0".into()), None));
    let a = act(&release("2.0.0"), 2);
    let _ = lc.activate(act(&release("2.0.0"), 2));
    // After compile and cache nothing is persisted: v1, no failure.
    assert_eq!(serves(&disk), (Some("1.0.0".into()), None));
    // After persist (and smoke, and swap: nothing more is written): v2 failed, `restart`.
    disk.apply(&lc.compiled(clock.at(1), &a, StepOutcome::Done));
    let (v, f) = serves(&disk);
    let (seq, stage, reason) = f.unwrap();
    assert_eq!(
        (v.as_deref(), seq, stage),
        (Some("1.0.0"), 2, Stage::Restart)
    );
    assert_eq!(
        reason,
        "the agent stopped while release 2.0.0 (seq 2) was being activated; restarted into 1.0.0"
    );
    let plan = disk.restart(clock.at(100));
    assert!(matches!(&plan.inputs[..], [Input::Reverted { seq: 2, .. }]));
    assert!(plan.changed && plan.state.activating.is_none());
    let _ = lc.persisted(clock.at(2), &a, Ok(()));
    // After the swap and "on trial": v2 failed, `restart`, v1 serves.
    let fx = lc.smoked(clock.at(3), &a, StepOutcome::Done);
    disk.apply(&fx);
    let (v, f) = serves(&disk);
    assert_eq!(v.as_deref(), Some("1.0.0"));
    assert!(
        f.as_ref()
            .is_some_and(|f| f.0 == 2 && f.2.contains("or on trial")),
        "{f:?}"
    );
    // After the commit: v2, no failure.
    let c = counting(&fx).unwrap();
    c.record(&RequestOutcome::Status(200));
    c.record(&RequestOutcome::Status(200));
    disk.apply(&lc.judge_trials(clock.at(4)));
    assert_eq!(serves(&disk), (Some("2.0.0".into()), None));
}

#[test]
fn a_clean_stop_resumes_the_trial_and_a_crash_does_not() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let _ = through_smoke(&mut lc, &mut disk, clock.at(1), act(&release("2.0.0"), 2));
    let crashed = disk.restart(clock.at(2));
    assert_eq!(crashed.serve.map(|s| s.seq), Some(1));
    assert!(crashed.resume.is_none());
    let fx = lc.clean_stop();
    assert!(persisted_state(&fx, Write::CleanStop).trial_clean_stop);
    disk.apply(&fx);
    let plan = disk.restart(clock.at(3));
    assert_eq!(plan.serve.as_ref().map(|s| s.seq), Some(2));
    assert_eq!(plan.resume.map(|s| s.seq), Some(2));
    assert!(!plan.state.trial_clean_stop && plan.state.failure.is_none());
    // Through the lifecycle: the trial runs again, counted from the restart.
    let mut again = Lifecycle::new(cfg(2, 0, 5));
    let fx = again.restore(
        clock.at(3),
        disk.record.clone().unwrap(),
        disk.state.clone(),
    );
    assert!(matches!(
        &fx[..],
        [Effect::Swap { to: SwapTo::Restored { counting: Some(_), release }, .. }] if release.seq == 2
    ));
    let life = again.app(&app()).unwrap();
    assert_eq!(
        life.trial.as_ref().map(|t| (t.seq, t.started)),
        Some((2, clock.at(3).at))
    );
}

#[test]
fn a_crash_on_trial_with_nothing_committed_resumes_the_trial() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    let _ = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    let plan = disk.restart(clock.at(1));
    assert_eq!(plan.resume.map(|r| r.seq), Some(1));
    assert!(plan.state.failure.is_none() && plan.inputs.is_empty());
}

#[test]
fn a_record_without_a_serving_state_or_unaccounted_for_is_handled() {
    let clock = Clock(Instant::now());
    let v1 = release("1.0.0");
    let rec = act(&v1, 4).record;
    // Without a serving state: its release is the committed one; nothing is rewritten.
    let plan = plan_restore(clock.at(0), &rec, None);
    assert_eq!(plan.serve.map(|s| s.seq), Some(4));
    assert!(!plan.changed && plan.inputs.is_empty());
    // A state that knows nothing of the record's seq: that release failed, `restart`.
    let state = ServingState {
        committed: Some(ReleaseRef {
            seq: 3,
            release: release("0.9.0"),
        }),
        ..ServingState::default()
    };
    let plan = plan_restore(clock.at(0), &rec, Some(state));
    assert!(plan.changed);
    let f = plan.state.failure.unwrap();
    assert_eq!(
        (f.seq, f.stage, f.version.as_str()),
        (4, Stage::Restart, "1.0.0")
    );
    assert_eq!(plan.serve.map(|s| s.seq), Some(3));
}
