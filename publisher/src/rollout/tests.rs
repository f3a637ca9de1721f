use super::*;
use clap::Parser;
use fleetcast_protocol::AppName;
use fleetcast_protocol::wire::{HistoryEntry, Staged};

#[derive(Parser, Debug)]
struct Flags {
    #[command(flatten)]
    w: WaveArgs,
}

fn parse(args: &[&str]) -> std::result::Result<WaveArgs, clap::Error> {
    let mut all = vec!["x"];
    all.extend_from_slice(args);
    Flags::try_parse_from(all).map(|f| f.w)
}

#[test]
fn bake_takes_ms_seconds_minutes_and_prints_back_the_same() {
    for (s, ms) in [
        ("500ms", 500),
        ("60s", 60_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("90", 90_000),
        ("1.5s", 1500),
    ] {
        assert_eq!(
            s.parse::<Dur>().unwrap().0,
            Duration::from_millis(ms),
            "{s}"
        );
    }
    for bad in ["", "s", "60x", "-1s", "1 s s", "9999h"] {
        let e = bad.parse::<Dur>().unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
    }
    assert_eq!(Dur(Duration::from_millis(500)).to_string(), "500ms");
    assert_eq!(Dur(Duration::from_secs(60)).to_string(), "60s");
    assert_eq!(Dur(Duration::from_secs(120)).to_string(), "2m");
    assert_eq!(Dur(Duration::from_secs(90)).to_string(), "90s");
}

#[test]
fn the_error_rate_gate_is_relative_to_the_old_release_and_says_so() {
    assert_eq!("+1%".parse::<RateLimit>().unwrap(), RateLimit(Some(100)));
    assert_eq!("+0.5%".parse::<RateLimit>().unwrap(), RateLimit(Some(50)));
    assert_eq!("off".parse::<RateLimit>().unwrap(), RateLimit(None));
    let e = "1%".parse::<RateLimit>().unwrap_err();
    assert!(
        e.contains("write it as +1%") && e.contains("old release"),
        "{e}"
    );
    assert!("+x%".parse::<RateLimit>().is_err());
    assert_eq!(RateLimit(Some(100)).to_string(), "+1%");
    assert_eq!(RateLimit(Some(50)).to_string(), "+0.5%");
    assert_eq!(
        "+50%".parse::<IncreaseLimit>().unwrap(),
        IncreaseLimit(Some(50))
    );
    assert_eq!("off".parse::<IncreaseLimit>().unwrap(), IncreaseLimit(None));
    assert!("50%".parse::<IncreaseLimit>().is_err());
    assert_eq!(IncreaseLimit(Some(50)).to_string(), "+50%");
}

#[test]
fn the_flags_defaults_are_the_gates_defaults() {
    let w = parse(&["--waves", "1%,10%,50%,100%"]).unwrap();
    assert_eq!(w.gates(), Gates::default());
    assert_eq!(WaveArgs::default().gates(), Gates::default());
    let plan = w.plan().unwrap().unwrap();
    assert_eq!(plan.waves, vec![100, 1000, 5000, 10_000]);
    assert_eq!((plan.wave, plan.paused), (0, false));
    // No --waves: no plan, nothing changes.
    assert_eq!(parse(&[]).unwrap().plan().unwrap(), None);
}

#[test]
fn the_plan_is_built_from_the_flags() {
    let w = parse(&[
        "--waves",
        "50%,100%",
        "--bake",
        "1s",
        "--max-failed",
        "2",
        "--max-error-rate",
        "+0.5%",
        "--max-p99-increase",
        "+50%",
        "--min-requests",
        "100",
    ])
    .unwrap();
    let p = w.plan().unwrap().unwrap();
    assert_eq!(p.waves, vec![5000, 10_000]);
    assert_eq!(
        p.gates,
        Gates {
            bake_ms: 1000,
            max_failed: 2,
            max_error_rate_bp: Some(50),
            max_p99_increase_pct: Some(50),
            min_requests: 100,
        }
    );
    assert_eq!(
        gates_line(&p.gates),
        "bake 1s, --max-failed 2, --max-error-rate +0.5%, --max-p99-increase +50%, --min-requests 100"
    );
    // A bad plan is a usage error naming the flag.
    let e = parse(&["--waves", "10%,50%"]).unwrap().plan().unwrap_err();
    assert_eq!(e.code(), 2);
    assert!(
        e.message
            .starts_with("--waves \"10%,50%\": the last wave is 50%"),
        "{e}"
    );
    let e = parse(&["--waves", "10%,x"]).unwrap().plan().unwrap_err();
    assert!(e.message.contains("is not a percentage"), "{e}");
    // A gate flag without --waves is refused by the parser.
    assert!(parse(&["--bake", "1s"]).is_err());
    assert!(parse(&["--max-error-rate", "1%", "--waves", "100%"]).is_err());
}

fn plan(wave: u8) -> Plan {
    Plan {
        wave,
        ..Plan::new(vec![100, 1000, 5000, 10_000], Gates::default()).unwrap()
    }
}

fn health(requests: u64, errors: u64, slot: usize) -> Health {
    let mut h = Health {
        requests,
        errors,
        ..Health::default()
    };
    h.latency[slot] = requests;
    h
}

#[test]
fn the_live_line_reads_the_wave_from_the_tally() {
    let t = Tally {
        nodes: 1000,
        in_wave: 100,
        active: 98,
        prefetched: 900,
        pending: 2,
        health_new: Box::new(health(1000, 4, 4)),
        health_old: Box::new(health(1000, 3, 4)),
        ..Tally::default()
    };
    let v = Verdict::Hold {
        why: "baking: 23s of 60s".into(),
    };
    let p = plan(1);
    assert_eq!(
        wave_line(&p, &t, Some(1000), &next_words(&p, &v)),
        "wave 2/4 10%: 98 of 100 active (in wave), 0 failed, 5xx 0.4% new vs 0.3% old, p99 ≤ 20 ms vs ≤ 20 ms; fleet 1,000 agents, 900 prefetched; next: baking: 23s of 60s"
    );
    // Before any request, and with a census larger than the head's count so far.
    let quiet = Tally {
        nodes: 3,
        in_wave: 1,
        rejected: 1,
        ..Tally::default()
    };
    assert_eq!(
        wave_line(
            &plan(0),
            &quiet,
            Some(5),
            "1 of 1 agent(s) in the wave active, 0 pending"
        ),
        "wave 1/4 1%: 0 of 1 active (in wave), 0 failed, 1 rejected, no requests served by the new release yet; fleet 5 agents, 0 prefetched; next: 1 of 1 agent(s) in the wave active, 0 pending"
    );
    let halt = Verdict::Halt {
        gate: rollout::Gate::Failed,
        why: "1 agent(s) failed".into(),
    };
    assert_eq!(
        next_words(&plan(0), &halt),
        "HALT by the failed gate: 1 agent(s) failed"
    );
    assert_eq!(
        next_words(&plan(0), &Verdict::Pass),
        "passed: opening wave 2 (10%)"
    );
    assert_eq!(
        next_words(&plan(3), &Verdict::Pass),
        "passed: the rollout is complete"
    );
    let paused = Plan {
        paused: true,
        ..plan(1)
    };
    assert!(next_words(&paused, &v).starts_with("paused"));
    assert_eq!(verdict_json(&paused, &v).state, "paused");
    assert_eq!(verdict_json(&p, &halt).gate.as_deref(), Some("failed"));
    assert_eq!(group(1_234_567), "1,234,567");
    assert_eq!(group(999), "999");
}

#[test]
fn the_view_changes_with_the_numbers_not_with_the_bake_clock() {
    let t = Tally {
        in_wave: 1,
        active: 1,
        ..Tally::default()
    };
    let at = |s: u64| Verdict::Hold {
        why: format!("baking: {s}s of 60s"),
    };
    assert_eq!(
        view_key(&t, &plan(0), &at(1)),
        view_key(&t, &plan(0), &at(2))
    );
    let more = Tally {
        active: 2,
        ..t.clone()
    };
    assert_ne!(
        view_key(&t, &plan(0), &at(1)),
        view_key(&more, &plan(0), &at(1))
    );
    assert_ne!(
        view_key(&t, &plan(0), &at(1)),
        view_key(&t, &plan(1), &at(1))
    );
}

fn rel(v: &str, bytes: &[u8]) -> Release {
    Release::build(
        AppName::new("shop").unwrap(),
        v.parse().unwrap(),
        bytes,
        4096,
    )
    .unwrap()
}

fn app(history: &[Release], seq: u64) -> AppStatus {
    let last = history.last().unwrap().clone();
    AppStatus {
        app: AppName::new("shop").unwrap(),
        seq,
        epoch: 0,
        kind: HeadKind::Release,
        active: last,
        issued_at_ms: 0,
        history: history
            .iter()
            .enumerate()
            .map(|(i, r)| HistoryEntry {
                seq: i as u64 + 1,
                kind: HeadKind::Release,
                release: r.clone(),
                issued_at_ms: 0,
            })
            .collect(),
        last_error: None,
        serving: None,
        local_override: false,
        plan: Some(plan(0)),
        staged: None,
    }
}

#[test]
fn the_newest_head_is_the_staged_one_when_it_is_newer() {
    let (v1, v2) = (rel("1.0.0", b"one"), rel("2.0.0", b"two"));
    let mut a = app(std::slice::from_ref(&v1), 1);
    a.plan = None;
    let n = newest(&a);
    assert_eq!((n.pos.seq, n.in_force, n.plan.is_none()), (1, true, true));
    a.staged = Some(Staged {
        seq: 3,
        epoch: 0,
        kind: HeadKind::Release,
        release: v2.clone(),
        plan: Some(plan(1)),
        issued_at_ms: 7,
    });
    let n = newest(&a);
    assert_eq!(n.pos.seq, 3);
    assert!(!n.in_force);
    assert_eq!(n.release, v2);
    assert_eq!(n.plan.unwrap().wave, 1);
    // A staged head older than the head in force (a rollback since): the head in force.
    a.seq = 4;
    let n = newest(&a);
    assert_eq!((n.pos.seq, n.in_force), (4, true));
    // A newer epoch wins over a higher seq.
    a.staged.as_mut().unwrap().epoch = 1;
    a.staged.as_mut().unwrap().seq = 1;
    assert_eq!(newest(&a).pos, Position { epoch: 1, seq: 1 });
}

#[test]
fn a_halt_goes_back_to_the_release_before_the_rollout() {
    let (v1, v2, v3) = (
        rel("1.0.0", b"one"),
        rel("2.0.0", b"two"),
        rel("3.0.0", b"three"),
    );
    // The agent runs the new release (in the wave): the one before in its history.
    let a = app(&[v1.clone(), v2.clone(), v3.clone()], 3);
    assert_eq!(halt_target(Some(&a), &v3), Some(v2.clone()));
    // Outside the wave: what it runs is what the fleet goes back to.
    let b = app(&[v1.clone(), v2.clone()], 2);
    assert_eq!(halt_target(Some(&b), &v3), Some(v2.clone()));
    // The app's first release: nothing to go back to.
    let c = app(std::slice::from_ref(&v3), 1);
    assert_eq!(halt_target(Some(&c), &v3), None);
    assert_eq!(halt_target(None, &v3), None);
    // The same release under the same digest twice in a row is skipped.
    let d = app(&[v1.clone(), v3.clone(), v3.clone()], 3);
    assert_eq!(halt_target(Some(&d), &v3), Some(v1));
}

#[test]
fn a_wave_that_includes_nobody_is_skipped_once_the_fleet_counted_itself() {
    let t = Tally {
        nodes: 4,
        ..Tally::default()
    };
    assert!(empty_wave(&plan(0), &t, 4));
    assert!(!empty_wave(&plan(0), &t, 5), "not every agent counted yet");
    assert!(
        !empty_wave(&plan(0), &t, 0),
        "the fleet's size is not known"
    );
    assert!(
        !empty_wave(&plan(3), &t, 4),
        "the last wave includes everyone"
    );
    let someone = Tally {
        in_wave: 1,
        ..t.clone()
    };
    assert!(!empty_wave(&plan(0), &someone, 4));
    let paused = Plan {
        paused: true,
        ..plan(0)
    };
    assert!(!empty_wave(&paused, &t, 4));
}
