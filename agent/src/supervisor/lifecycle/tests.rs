//! The lifecycle driven by hand: no store, no runtime, no tokio; time is a number.

use std::time::{Duration, Instant};

use fleetcast_protocol::{Head, HeadKind, RunPolicy};

use super::*;
use crate::runtime::trial::{RequestOutcome, TrialConfig};
use crate::supervisor::error::RollbackError;

const APP: &str = "hello";

fn app() -> AppName {
    AppName::new(APP).unwrap()
}

fn cfg(requests: u32, secs: u32, cached_releases: usize) -> LifecycleConfig {
    LifecycleConfig {
        trial: TrialConfig {
            requests,
            secs,
            ..TrialConfig::default()
        },
        cached_releases,
    }
}

struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Now {
        Now {
            at: self.0 + Duration::from_millis(ms),
            unix_ms: 1_000_000 + ms,
        }
    }
}

fn release(version: &str) -> Release {
    let content = format!("{APP} {version}");
    Release::build(app(), version.parse().unwrap(), content.as_bytes(), 4096).unwrap()
}

fn act(r: &Release, seq: u64) -> Box<Activation> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let head = Head {
        fleet: "f".into(),
        app: r.app.clone(),
        seq,
        release: r.clone(),
        kind: HeadKind::Release,
        issued_at_ms: 0,
        epoch: 0,
        plan: None,
    }
    .sign(&key);
    let record = AppRecord::advance(None, &head, 8);
    Box::new(Activation {
        head,
        content: None,
        record,
    })
}

/// What the store would hold after the effects so far.
#[derive(Default)]
struct Disk {
    record: Option<AppRecord>,
    state: Option<ServingState>,
}

impl Disk {
    fn apply(&mut self, fx: &[Effect]) {
        for e in fx {
            match e {
                Effect::PersistRecord { record, state } => {
                    self.record = Some(record.as_ref().clone());
                    self.state = Some(state.as_ref().clone());
                }
                Effect::PersistState { state, .. } => self.state = Some(state.as_ref().clone()),
                _ => {}
            }
        }
    }

    /// What a restart would decide from it.
    fn restart(&self, now: Now) -> RestorePlan {
        plan_restore(now, self.record.as_ref().unwrap(), self.state.clone())
    }
}

fn persisted_state(fx: &[Effect], write: Write) -> ServingState {
    fx.iter()
        .find_map(|e| match e {
            Effect::PersistState {
                state, write: w, ..
            } if *w == write => Some(state.as_ref().clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {write:?} write in {fx:?}"))
}

fn has(fx: &[Effect], f: impl Fn(&Effect) -> bool) -> bool {
    fx.iter().any(f)
}

fn activated(fx: &[Effect]) -> Option<Result<(), ActivationError>> {
    fx.iter().find_map(|e| match e {
        Effect::Notify(Input::Activated { result, .. }) => Some(result.clone()),
        _ => None,
    })
}

/// Drives one activation through compile, persist and smoke; returns the effects of the
/// smoke's end (the swap and what follows) and records every write on `disk`.
fn through_smoke(lc: &mut Lifecycle, disk: &mut Disk, now: Now, a: Box<Activation>) -> Vec<Effect> {
    let fx = lc.activate(a);
    let Some(Effect::StartCompile(a)) = fx.into_iter().last() else {
        panic!("no compile started");
    };
    let fx = lc.compiled(now, &a, StepOutcome::Done);
    assert!(matches!(&fx[..], [Effect::PersistRecord { .. }]), "{fx:?}");
    disk.apply(&fx);
    let fx = lc.persisted(now, &a, Ok(()));
    assert!(matches!(&fx[..], [Effect::StartSmoke { seq, .. }] if *seq == a.head.head.seq));
    let fx = lc.smoked(now, &a, StepOutcome::Done);
    disk.apply(&fx);
    fx
}

/// v1 through its trial, committed.
fn committed_v1(lc: &mut Lifecycle, disk: &mut Disk, now: Now) -> Arc<TrialCounters> {
    let fx = through_smoke(lc, disk, now, act(&release("1.0.0"), 1));
    let counters = counting(&fx).expect("on trial");
    counters.record(&RequestOutcome::Status(200));
    counters.record(&RequestOutcome::Status(200));
    let fx = lc.judge_trials(now);
    disk.apply(&fx);
    assert!(persisted_state(&fx, Write::Commit).committed.is_some());
    counters
}

fn counting(fx: &[Effect]) -> Option<Arc<TrialCounters>> {
    fx.iter().find_map(|e| match e {
        Effect::Swap {
            to: SwapTo::Activated { counting, .. },
            ..
        } => counting.clone(),
        _ => None,
    })
}

#[test]
fn an_activation_persists_the_record_as_activating_then_swaps_on_trial() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let v1 = release("1.0.0");
    let a = act(&v1, 1);
    let fx = lc.activate(a);
    assert!(matches!(&fx[..], [Effect::StartCompile(_)]));
    assert_eq!(lc.app(&app()).unwrap().activation.map(|r| r.seq), Some(1));
    let a = act(&v1, 1);
    let fx = lc.compiled(clock.at(5), &a, StepOutcome::Done);
    let [Effect::PersistRecord { record, state }] = &fx[..] else {
        panic!("{fx:?}");
    };
    assert_eq!(record.head.head.seq, 1);
    assert_eq!(state.activating.as_ref().map(|r| r.seq), Some(1));
    assert_eq!(
        state.trial, None,
        "not on trial before its smoke check and swap"
    );
    let _ = lc.persisted(clock.at(6), &a, Ok(()));
    let fx = lc.smoked(clock.at(7), &a, StepOutcome::Done);
    assert!(matches!(
        &fx[0],
        Effect::Swap {
            to: SwapTo::Activated {
                seq: 1,
                counting: Some(_)
            },
            keep_old: false,
            ..
        }
    ));
    assert_eq!(activated(&fx), Some(Ok(())));
    let st = persisted_state(&fx, Write::Trial);
    assert_eq!(st.trial.as_ref().map(|r| r.seq), Some(1));
    assert_eq!(st.activating, None);
    assert_eq!(st.cached, vec![v1]);
    let life = lc.app(&app()).unwrap();
    assert_eq!(life.activation, None);
    assert_eq!(life.trial.as_ref().map(|t| t.started), Some(clock.at(7).at));
    assert!(life.serving.as_ref().is_some_and(|s| s.counting));
    assert_eq!(lc.poll_timeout(), None, "no time window configured");
}

#[test]
fn without_a_trial_the_swap_commits_at_once() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(0, 0, 5));
    let mut disk = Disk::default();
    let fx = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    assert!(counting(&fx).is_none());
    assert!(!has(&fx, |e| matches!(
        e,
        Effect::PersistState {
            write: Write::Trial,
            ..
        }
    )));
    let st = persisted_state(&fx, Write::Commit);
    assert_eq!(st.committed.as_ref().map(|c| c.seq), Some(1));
    assert_eq!(st.trial, None);
    assert!(lc.app(&app()).unwrap().trial.is_none());
}

#[test]
fn a_passed_trial_commits_drops_the_fallback_and_trims_the_cache() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 1));
    let mut disk = Disk::default();
    committed_v1(&mut lc, &mut disk, clock.at(0));
    let fx = through_smoke(&mut lc, &mut disk, clock.at(10), act(&release("2.0.0"), 2));
    assert!(
        has(&fx, |e| matches!(e, Effect::Swap { keep_old: true, .. })),
        "the committed release is kept for a revert: {fx:?}"
    );
    assert_eq!(
        lc.app(&app()).unwrap().fallback.as_ref().map(|f| f.seq),
        Some(1)
    );
    let counters = counting(&fx).unwrap();
    counters.record(&RequestOutcome::Status(200));
    assert!(
        lc.judge_trials(clock.at(11)).is_empty(),
        "one of two requests"
    );
    counters.record(&RequestOutcome::Status(200));
    let fx = lc.judge_trials(clock.at(12));
    assert!(has(&fx, |e| matches!(e, Effect::DropFallback { .. })));
    assert!(has(&fx, |e| matches!(e, Effect::EndTrial { .. })));
    let st = persisted_state(&fx, Write::Commit);
    assert_eq!(st.committed.as_ref().map(|c| c.seq), Some(2));
    assert_eq!(st.cached, vec![release("2.0.0")], "cached_releases = 1");
    let v1 = release("1.0.0");
    assert!(has(
        &fx,
        |e| matches!(e, Effect::DropArtifact { digest } if *digest == v1.digest)
    ));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::ForgetMetrics { release, .. } if *release == v1)
    ));
    let life = lc.app(&app()).unwrap();
    assert!(life.fallback.is_none() && life.trial.is_none());
    assert!(life.serving.as_ref().is_some_and(|s| !s.counting));
}

#[test]
fn a_failed_trial_reverts_to_the_fallback_and_tells_the_node() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(50, 0, 5));
    let mut disk = Disk::default();
    let fx = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    // v1 passes quickly: 50 requests.
    let c = counting(&fx).unwrap();
    for _ in 0..50 {
        c.record(&RequestOutcome::Status(200));
    }
    let _ = lc.judge_trials(clock.at(1));
    let v2 = release("2.0.0");
    let fx = through_smoke(&mut lc, &mut disk, clock.at(2), act(&v2, 2));
    let c = counting(&fx).unwrap();
    c.record(&RequestOutcome::Trap("boom".into()));
    let fx = lc.judge_trials(clock.at(3));
    assert!(matches!(
        &fx[0],
        Effect::Swap {
            to: SwapTo::Fallback,
            keep_old: false,
            ..
        }
    ));
    assert!(has(&fx, |e| matches!(
        e,
        Effect::Count {
            counter: Counter::Revert,
            ..
        }
    )));
    let st = persisted_state(&fx, Write::Revert);
    let f = st.failure.as_ref().unwrap();
    assert_eq!((f.seq, f.stage, f.at_ms), (2, Stage::Trial, 1_000_003));
    assert!(f.reason.contains("trapped on 1 of 1"), "{f:?}");
    assert_eq!(st.trial, None);
    assert_eq!(
        st.cached,
        vec![release("1.0.0")],
        "not a rollback target any more"
    );
    let Some(Effect::Notify(Input::Reverted {
        seq,
        reason,
        serving,
        ..
    })) = fx.iter().find(|e| matches!(e, Effect::Notify(_)))
    else {
        panic!("{fx:?}");
    };
    assert_eq!(*seq, 2);
    assert!(reason.starts_with("trial: trapped"));
    assert_eq!(serving.as_ref(), Some(&release("1.0.0")));
    assert!(has(
        &fx,
        |e| matches!(e, Effect::DropArtifact { digest } if *digest == v2.digest)
    ));
    let life = lc.app(&app()).unwrap();
    assert_eq!(life.serving.as_ref().map(|s| s.release.seq), Some(1));
    assert!(life.fallback.is_none() && life.trial.is_none());
}

#[test]
fn a_revert_without_a_fallback_loads_the_committed_release_or_empties_the_slot() {
    let clock = Clock(Instant::now());
    // Nothing committed: the slot is emptied.
    let mut lc = Lifecycle::new(cfg(50, 0, 5));
    let mut disk = Disk::default();
    let fx = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    counting(&fx)
        .unwrap()
        .record(&RequestOutcome::Timeout("slow".into()));
    let fx = lc.judge_trials(clock.at(1));
    assert!(matches!(&fx[0], Effect::Undeploy { .. }), "{fx:?}");
    assert!(lc.app(&app()).unwrap().serving.is_none());

    // A local override serving (not the committed release): no fallback is kept, so the
    // revert loads the committed release from the cache.
    let mut lc = Lifecycle::new(cfg(50, 0, 5));
    let (v0, v1) = (release("0.9.0"), release("1.0.0"));
    let state = ServingState {
        committed: Some(ReleaseRef {
            seq: 1,
            release: v1.clone(),
        }),
        local_override: Some(ReleaseRef {
            seq: 0,
            release: v0.clone(),
        }),
        cached: vec![v0, v1.clone()],
        ..ServingState::default()
    };
    let fx = lc.restore(clock.at(0), act(&v1, 1).record, Some(state));
    assert!(
        matches!(&fx[0], Effect::Swap { to: SwapTo::Restored { release, counting: None }, .. } if release.seq == 0)
    );
    let mut disk = Disk::default();
    let fx = through_smoke(&mut lc, &mut disk, clock.at(1), act(&release("2.0.0"), 2));
    assert!(
        has(&fx, |e| matches!(
            e,
            Effect::Swap {
                keep_old: false,
                ..
            }
        )),
        "an override is not kept as the fallback"
    );
    counting(&fx)
        .unwrap()
        .record(&RequestOutcome::Trap("x".into()));
    let fx = lc.judge_trials(clock.at(2));
    assert!(
        matches!(&fx[0], Effect::Swap { to: SwapTo::Committed(c), .. } if c.seq == 1),
        "{fx:?}"
    );
    lc.serving_lost(&app());
    assert!(lc.app(&app()).unwrap().serving.is_none(), "the load failed");
}

#[test]
fn refusals_at_compile_persist_and_smoke_record_their_stage() {
    let clock = Clock(Instant::now());
    for stage in [Stage::Compile, Stage::Persist, Stage::Smoke] {
        let mut lc = Lifecycle::new(cfg(2, 0, 5));
        let mut disk = Disk::default();
        committed_v1(&mut lc, &mut disk, clock.at(0));
        let a = act(&release("2.0.0"), 2);
        let _ = lc.activate(act(&release("2.0.0"), 2));
        let why = || "it broke".to_string();
        let fx = match stage {
            Stage::Compile => lc.compiled(clock.at(1), &a, StepOutcome::Failed(why())),
            _ => {
                let fx = lc.compiled(clock.at(1), &a, StepOutcome::Done);
                disk.apply(&fx);
                if stage == Stage::Persist {
                    lc.persisted(clock.at(2), &a, Err(why()))
                } else {
                    let _ = lc.persisted(clock.at(2), &a, Ok(()));
                    lc.smoked(clock.at(3), &a, StepOutcome::Failed(why()))
                }
            }
        };
        disk.apply(&fx);
        assert!(has(&fx, |e| matches!(
            e,
            Effect::Count {
                counter: Counter::Refused,
                ..
            }
        )));
        assert!(!has(&fx, |e| matches!(e, Effect::Swap { .. })));
        assert_eq!(
            activated(&fx).map(|r| r.map_err(|e| e.to_string())),
            Some(Err(format!("{stage}: it broke")))
        );
        let st = persisted_state(&fx, Write::Refusal);
        let f = st.failure.as_ref().unwrap();
        assert_eq!((f.seq, f.stage), (2, stage));
        assert_eq!(st.activating, None);
        assert_eq!(st.committed.as_ref().map(|c| c.seq), Some(1));
        let life = lc.app(&app()).unwrap();
        assert_eq!(life.serving.as_ref().map(|s| s.release.seq), Some(1));
        assert_eq!(life.activation, None);
        // A restart serves v1, and says v2 failed where it did.
        let plan = disk.restart(clock.at(9));
        assert_eq!(plan.serve.map(|s| s.seq), Some(1));
        assert_eq!(plan.state.failure.map(|f| f.stage), Some(stage));
    }
}

#[test]
fn a_newer_head_cancels_the_activation_and_its_result_is_dropped() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let a = act(&release("1.0.0"), 1);
    let _ = lc.activate(act(&release("1.0.0"), 1));
    assert!(lc.cancel(&app(), 7).is_empty(), "another seq");
    let fx = lc.cancel(&app(), 1);
    assert!(matches!(&fx[..], [Effect::CancelCompile { seq: 1, .. }]));
    assert!(lc.cancel(&app(), 1).is_empty(), "once");
    // The compile was already running: it ends, and nothing is persisted.
    let fx = lc.compiled(clock.at(1), &a, StepOutcome::Done);
    assert_eq!(activated(&fx), Some(Err(ActivationError::Cancelled)));
    assert!(!has(&fx, |e| matches!(
        e,
        Effect::PersistRecord { .. } | Effect::PersistState { .. }
    )));
    assert!(lc.app(&app()).unwrap().activation.is_none());

    // Cancelled after its record was written: no swap; the record stays `activating`, so a
    // restart counts it failed.
    let mut disk = Disk::default();
    let _ = lc.activate(act(&release("1.0.0"), 1));
    disk.apply(&lc.compiled(clock.at(2), &a, StepOutcome::Done));
    let _ = lc.persisted(clock.at(2), &a, Ok(()));
    let _ = lc.cancel(&app(), 1);
    let fx = lc.smoked(clock.at(3), &a, StepOutcome::Done);
    assert!(!has(&fx, |e| matches!(e, Effect::Swap { .. })));
    assert_eq!(activated(&fx), Some(Err(ActivationError::Cancelled)));
    assert!(lc.app(&app()).unwrap().state.activating.is_some());
    let plan = disk.restart(clock.at(4));
    assert_eq!(
        plan.state.failure.map(|f| (f.seq, f.stage)),
        Some((1, Stage::Restart))
    );
    assert!(plan.serve.is_none());
}

#[test]
fn a_second_activation_replaces_the_first() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let first = act(&release("1.0.0"), 1);
    let _ = lc.activate(act(&release("1.0.0"), 1));
    let fx = lc.activate(act(&release("2.0.0"), 2));
    assert!(matches!(
        &fx[..],
        [
            Effect::CancelCompile { seq: 1, .. },
            Effect::StartCompile(_)
        ]
    ));
    let fx = lc.compiled(clock.at(1), &first, StepOutcome::Done);
    assert_eq!(activated(&fx), Some(Err(ActivationError::Cancelled)));
    assert_eq!(lc.app(&app()).unwrap().activation.map(|r| r.seq), Some(2));
}

#[test]
fn a_trial_window_passes_by_time() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(0, 30, 5));
    let mut disk = Disk::default();
    let _ = through_smoke(
        &mut lc,
        &mut disk,
        clock.at(1_000),
        act(&release("1.0.0"), 1),
    );
    assert_eq!(lc.poll_timeout(), Some(clock.at(31_000).at));
    assert!(lc.judge_trials(clock.at(30_999)).is_empty());
    let fx = lc.judge_trials(clock.at(31_000));
    assert_eq!(
        persisted_state(&fx, Write::Commit).committed.map(|c| c.seq),
        Some(1)
    );
    assert_eq!(lc.poll_timeout(), None);
}

#[test]
fn a_local_rollback_serves_another_cached_release_as_an_override() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(0, 0, 5));
    let mut disk = Disk::default();
    let _ = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    let e = lc.rollback_target(APP, None).unwrap_err();
    assert!(matches!(e, RollbackError::NothingElseCached { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("no cached release of hello other than the one serving")
    );
    let _ = through_smoke(&mut lc, &mut disk, clock.at(1), act(&release("2.0.0"), 2));
    let e = lc.rollback_target("other", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no app named \"other\" on this agent (apps: hello)"
    );
    let e = lc.rollback_target(APP, Some("9.9.9")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "version 9.9.9 of hello is not in this agent's cache (cached: 2.0.0, 1.0.0)"
    );
    assert_eq!(
        lc.rollback_target(APP, Some("2.0.0")).unwrap(),
        release("2.0.0")
    );
    let target = lc.rollback_target(APP, None).unwrap();
    assert_eq!(target, release("1.0.0"));
    let fx = lc.rolled_back(target.clone());
    assert!(matches!(&fx[0], Effect::Swap { to: SwapTo::RolledBack(r), .. } if r.seq == 0));
    let st = persisted_state(&fx, Write::LocalRollback);
    assert_eq!(
        st.local_override.as_ref().map(|o| &o.release),
        Some(&target)
    );
    assert_eq!(st.cached[0], target, "first in the cached list");
    assert!(matches!(
        fx.last(),
        Some(Effect::Notify(Input::LocalOverride { release: Some(r), .. })) if *r == target
    ));
    disk.apply(&fx);
    // A restart keeps the override, and the node hears of it.
    let plan = disk.restart(clock.at(5));
    assert_eq!(plan.serve.map(|s| (s.seq, s.release)), Some((0, target)));
    assert!(matches!(&plan.inputs[..], [Input::LocalOverride { .. }]));
    // The next head ends it.
    let fx = through_smoke(&mut lc, &mut disk, clock.at(6), act(&release("3.0.0"), 3));
    assert_eq!(persisted_state(&fx, Write::Commit).local_override, None);
}

/// `version` built from `bytes_of`'s content: two versions that share bytes.
fn same_bytes(version: &str, bytes_of: &str) -> Release {
    let content = format!("{APP} {bytes_of}");
    Release::build(app(), version.parse().unwrap(), content.as_bytes(), 4096).unwrap()
}

#[test]
fn a_local_rollback_resolves_versions_that_share_bytes() {
    let clock = Clock(Instant::now());
    // One slot: the two versions share one artifact, so both stay cached.
    let mut lc = Lifecycle::new(cfg(0, 0, 1));
    let mut disk = Disk::default();
    let (v200, v201) = (same_bytes("2.0.0", "2.0.0"), same_bytes("2.0.1", "2.0.0"));
    assert_eq!(v200.digest, v201.digest);
    let _ = through_smoke(&mut lc, &mut disk, clock.at(0), act(&v200, 1));
    let fx = through_smoke(&mut lc, &mut disk, clock.at(1), act(&v201, 2));
    assert_eq!(
        persisted_state(&fx, Write::Commit).cached,
        vec![v201.clone(), v200.clone()]
    );
    assert!(
        !has(&fx, |e| matches!(e, Effect::DropArtifact { .. })),
        "{fx:?}"
    );
    assert_eq!(lc.rollback_target(APP, Some("2.0.0")).unwrap(), v200);
    // A third content takes the one slot: both versions of the old bytes go, and their
    // artifact with them.
    let fx = through_smoke(&mut lc, &mut disk, clock.at(2), act(&release("3.0.0"), 3));
    assert_eq!(
        persisted_state(&fx, Write::Commit).cached,
        vec![release("3.0.0")]
    );
    assert!(has(
        &fx,
        |e| matches!(e, Effect::DropArtifact { digest } if *digest == v200.digest)
    ));
}

#[test]
fn a_local_rollback_never_picks_the_release_that_failed_here() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(0, 0, 5));
    let mut disk = Disk::default();
    let _ = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    let _ = through_smoke(&mut lc, &mut disk, clock.at(1), act(&release("2.0.0"), 2));
    let _ = through_smoke(&mut lc, &mut disk, clock.at(2), act(&release("3.0.0"), 3));
    // 3.0.0 serves; 2.0.0 failed here (say, a restart found it on trial).
    let failed = failure(
        clock.at(3),
        2,
        &release("2.0.0"),
        Stage::Restart,
        "x".into(),
    );
    lc.apps.get_mut(&app()).unwrap().state.failure = Some(failed);
    assert_eq!(lc.app(&app()).unwrap().state.cached.len(), 3);
    assert_eq!(lc.rollback_target(APP, None).unwrap(), release("1.0.0"));
}

#[test]
fn a_failed_load_leaves_nothing_serving() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(2, 0, 5));
    let mut disk = Disk::default();
    let _ = through_smoke(&mut lc, &mut disk, clock.at(0), act(&release("1.0.0"), 1));
    lc.serving_lost(&app());
    let life = lc.app(&app()).unwrap();
    assert!(life.serving.is_none() && life.trial.is_none());
    assert_eq!(lc.poll_timeout(), None);
}

#[test]
fn a_release_policy_sets_its_own_trial() {
    let clock = Clock(Instant::now());
    let mut lc = Lifecycle::new(cfg(0, 0, 5));
    let mut disk = Disk::default();
    let mut r = release("1.0.0");
    r.policy = RunPolicy {
        trial_requests: Some(1),
        ..RunPolicy::default()
    };
    let fx = through_smoke(&mut lc, &mut disk, clock.at(0), act(&r, 1));
    let c = counting(&fx).expect("the release asks for a trial the agent's defaults skip");
    c.record(&RequestOutcome::Status(200));
    let fx = lc.judge_trials(clock.at(1));
    assert!(persisted_state(&fx, Write::Commit).committed.is_some());
}

mod restart;
mod staged;
