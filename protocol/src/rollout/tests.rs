use super::*;
use crate::rng::Rng;

fn node(i: u64) -> NodeId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&i.to_le_bytes());
    NodeId(id)
}

#[test]
fn a_full_wave_includes_every_node_and_waves_nest() {
    let digest = Digest::of(b"shop 1.5.0");
    for i in 0..20_000 {
        let n = node(i);
        let b = bucket(&digest, &n);
        assert!(b < FULL, "bucket {b} of node {i} is not below 100%");
        assert!(includes(&digest, &n, FULL), "node {i} left out at 100%");
        assert!(!includes(&digest, &n, 0), "node {i} included at 0%");
        // A larger wave includes everyone a smaller one does.
        for (small, large) in [(100, 1000), (1000, 5000), (5000, FULL)] {
            if includes(&digest, &n, small) {
                assert!(
                    includes(&digest, &n, large),
                    "node {i} in {small} but not {large}"
                );
            }
        }
    }
}

#[test]
fn the_extremes_of_the_hash_map_inside_the_range() {
    // The bucket is (x * FULL) >> 64: x = u64::MAX gives FULL - 1, x = 0 gives 0.
    let top = ((u128::from(u64::MAX) * u128::from(FULL)) >> 64) as u16;
    assert_eq!(top, FULL - 1);
    let bottom = ((u128::from(u64::MIN) * u128::from(FULL)) >> 64) as u16;
    assert_eq!(bottom, 0);
}

#[test]
fn a_wave_takes_about_its_share_and_other_releases_pick_other_canaries() {
    let seed = 7;
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let nodes: Vec<NodeId> = (0..10_000)
        .map(|_| {
            let mut id = [0u8; 32];
            for c in id.chunks_mut(8) {
                c.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            NodeId(id)
        })
        .collect();
    let a = Digest::of(b"release a");
    let b = Digest::of(b"release b");
    for (frac, lo, hi) in [(100u16, 60, 140), (1000, 900, 1100), (5000, 4800, 5200)] {
        let n = nodes.iter().filter(|n| includes(&a, n, frac)).count();
        assert!((lo..=hi).contains(&n), "{n} of 10000 at {}", pct(frac));
    }
    let in_a: Vec<bool> = nodes.iter().map(|n| includes(&a, n, 100)).collect();
    let both = nodes
        .iter()
        .zip(&in_a)
        .filter(|(n, ina)| **ina && includes(&b, n, 100))
        .count();
    // Independent 1% samples share about 1 node in 10,000.
    assert!(both < 10, "{both} canaries shared by two releases");
}

#[test]
fn percentages_parse_and_print() {
    assert_eq!(
        parse_waves("1%,10%,50%,100%").unwrap(),
        vec![100, 1000, 5000, 10000]
    );
    assert_eq!(parse_pct("0.5%").unwrap(), 50);
    assert_eq!(parse_pct("12.25").unwrap(), 1225);
    assert_eq!(parse_pct(".5%").unwrap(), 50);
    assert!(parse_pct("101%").unwrap_err().contains("above 100%"));
    assert!(parse_pct("0.125%").unwrap_err().contains("two decimals"));
    assert!(parse_pct("ten%").unwrap_err().contains("not a percentage"));
    assert!(parse_pct("%").is_err());
    assert_eq!(pct(50), "0.5%");
    assert_eq!(pct(1225), "12.25%");
    assert_eq!(pct(FULL), "100%");
}

#[test]
fn malformed_plans_are_refused_with_the_reason() {
    let g = Gates::default();
    assert_eq!(Plan::new(vec![], g.clone()), Err(PlanError::NoWaves));
    assert!(matches!(
        Plan::new(vec![100, 100, FULL], g.clone()),
        Err(PlanError::NotIncreasing { index: 1, .. })
    ));
    assert_eq!(
        Plan::new(vec![100, 5000], g.clone()),
        Err(PlanError::NotFull(5000))
    );
    assert_eq!(
        Plan::new(vec![0, FULL], g.clone()),
        Err(PlanError::EmptyWave { index: 0 })
    );
    let mut p = Plan::new(vec![100, FULL], g).unwrap();
    p.wave = 2;
    assert!(matches!(p.check(), Err(PlanError::NoSuchWave { .. })));
    let msg = PlanError::NotFull(5000).to_string();
    assert!(msg.contains("50%") && msg.contains("100%"), "{msg}");
}

#[test]
fn plans_advance_to_the_last_wave_and_no_further() {
    let p = Plan::new(vec![100, 1000, FULL], Gates::default()).unwrap();
    assert_eq!(p.describe(), "wave 1 of 3 (1%)");
    let p2 = p.advanced().unwrap();
    let p3 = p2.advanced().unwrap();
    assert_eq!(p3.fraction(), FULL);
    assert!(p3.is_last());
    assert_eq!(p3.advanced(), None);
}

fn health(requests: u64, errors: u64, ms: u64) -> Health {
    let mut h = Health::default();
    for i in 0..requests {
        h.record(Duration::from_millis(ms), i < errors);
    }
    h
}

#[test]
fn health_adds_up_in_any_order_and_gives_rates_and_p99() {
    let (a, b, c) = (health(10, 1, 3), health(5, 5, 700), health(100, 0, 1));
    let mut x = a.clone();
    x.add(&b);
    x.add(&c);
    let mut y = c.clone();
    y.add(&a);
    y.add(&b);
    assert_eq!(x, y);
    assert_eq!(x.requests, 115);
    assert_eq!(x.error_rate_bp(), 6 * 10_000 / 115);
    assert_eq!(health(100, 0, 3).p99_ms(), Some(5));
    assert_eq!(health(100, 0, 5000).p99_ms(), Some(u32::MAX));
    assert_eq!(Health::default().p99_ms(), None);
    let later = x.clone();
    assert_eq!(later.since(&a).requests, 105);
    // 99 fast and 1 slow: p99 is the fast bucket; 98 and 2: the slow one.
    let mut h = health(99, 0, 1);
    h.add(&health(1, 0, 900));
    assert_eq!(h.p99_ms(), Some(1));
    let mut h = health(98, 0, 1);
    h.add(&health(2, 0, 900));
    assert_eq!(h.p99_ms(), Some(1000));
}

fn tally(in_wave: u32, active: u32, failed: u32, new: Health, old: Health) -> Tally {
    Tally {
        nodes: in_wave,
        in_wave,
        active,
        failed,
        pending: in_wave.saturating_sub(active + failed),
        health_new: Box::new(new),
        health_old: Box::new(old),
        ..Tally::default()
    }
}

fn plan(gates: Gates) -> Plan {
    Plan::new(vec![100, 1000, FULL], gates).unwrap()
}

#[test]
fn the_failed_gate_halts_at_once_even_before_the_wave_settles() {
    let p = plan(Gates::default());
    let t = tally(10, 3, 1, Health::default(), Health::default());
    match judge(&p, &t, None) {
        Verdict::Halt { gate, why } => {
            assert_eq!(gate, Gate::Failed);
            assert!(why.contains("1 agent(s) failed"), "{why}");
        }
        v => panic!("{v:?}"),
    }
    let lenient = plan(Gates {
        max_failed: 1,
        ..Gates::default()
    });
    assert!(matches!(judge(&lenient, &t, None), Verdict::Hold { .. }));
}

#[test]
fn the_error_rate_gate_compares_new_against_old() {
    let p = plan(Gates::default()); // +1%
    let old = health(1000, 10, 3); // 1%
    let ok = tally(10, 10, 0, health(1000, 19, 3), old.clone()); // 1.9%
    let bad = tally(10, 10, 0, health(1000, 500, 3), old.clone()); // 50%
    let d = Some(Duration::from_secs(120));
    assert_eq!(judge(&p, &ok, d), Verdict::Pass);
    match judge(&p, &bad, d) {
        Verdict::Halt { gate, why } => {
            assert_eq!(gate, Gate::ErrorRate);
            assert!(why.contains("50%") && why.contains("1%"), "{why}");
        }
        v => panic!("{v:?}"),
    }
    // Judged as soon as there are requests, before the bake ends.
    assert!(matches!(judge(&p, &bad, None), Verdict::Halt { .. }));
}

#[test]
fn the_latency_gate_halts_a_slow_release() {
    let p = plan(Gates {
        max_p99_increase_pct: Some(50),
        ..Gates::default()
    });
    let t = tally(10, 10, 0, health(100, 0, 300), health(100, 0, 3));
    assert!(matches!(
        judge(&p, &t, Some(Duration::from_secs(999))),
        Verdict::Halt {
            gate: Gate::Latency,
            ..
        }
    ));
}

#[test]
fn a_wave_holds_until_settled_baked_and_served() {
    let p = plan(Gates {
        bake_ms: 10_000,
        min_requests: 50,
        ..Gates::default()
    });
    let h = health(100, 0, 1);
    let pending = tally(10, 9, 0, h.clone(), Health::default());
    assert!(matches!(judge(&p, &pending, None), Verdict::Hold { why } if why.contains("9 of 10")));
    assert!(!settled(&pending, 0));
    let done = tally(10, 10, 0, h.clone(), Health::default());
    let baking = judge(&p, &done, Some(Duration::from_secs(3)));
    assert!(
        matches!(&baking, Verdict::Hold { why } if why.contains("baking: 3s of 10s")),
        "{baking:?}"
    );
    let quiet = tally(10, 10, 0, health(10, 0, 1), Health::default());
    let v = judge(&p, &quiet, Some(Duration::from_secs(30)));
    assert!(
        matches!(&v, Verdict::Hold { why } if why.contains("--min-requests 50")),
        "{v:?}"
    );
    assert_eq!(
        judge(&p, &done, Some(Duration::from_secs(10))),
        Verdict::Pass
    );
    let empty = tally(0, 0, 0, h, Health::default());
    assert!(!settled(&empty, 0));
    // A wave is not settled before the fleet counted itself.
    assert!(settled(&settled_t(), 10) && !settled(&settled_t(), 11));
}

fn settled_t() -> Tally {
    tally(10, 10, 0, Health::default(), Health::default())
}

#[test]
fn the_driver_bakes_from_when_the_wave_settled_then_advances_to_done() {
    let p = Plan::new(
        vec![100, FULL],
        Gates {
            bake_ms: 1000,
            min_requests: 10,
            ..Gates::default()
        },
    )
    .unwrap();
    let mut d = Driver::new(p, 0);
    let h = health(10, 0, 1);
    assert_eq!(
        d.on_tally(0, &tally(2, 1, 0, h.clone(), Health::default())),
        Step::Wait
    );
    assert_eq!(
        d.on_tally(500, &tally(2, 2, 0, h.clone(), Health::default())),
        Step::Wait
    );
    // Settled at 500: the bake ends at 1500, not 1000.
    assert_eq!(
        d.on_tally(1200, &tally(2, 2, 0, h.clone(), Health::default())),
        Step::Wait
    );
    let next = match d.on_tally(1500, &tally(2, 2, 0, h.clone(), Health::default())) {
        Step::Advance(next) => next,
        s => panic!("{s:?}"),
    };
    assert_eq!(next.wave, 1);
    d.advanced(next);
    assert_eq!(
        d.on_tally(1600, &tally(100, 100, 0, h.clone(), Health::default())),
        Step::Wait
    );
    assert_eq!(
        d.on_tally(2600, &tally(100, 100, 0, h, Health::default())),
        Step::Done
    );
}

#[test]
fn a_paused_plan_is_neither_advanced_nor_halted() {
    let mut p = plan(Gates {
        bake_ms: 0,
        ..Gates::default()
    });
    p.paused = true;
    let mut d = Driver::new(p, 0);
    let t = tally(1, 0, 1, Health::default(), Health::default());
    assert_eq!(d.on_tally(0, &t), Step::Wait);
    assert!(matches!(d.verdict(), Verdict::Halt { .. }));
}

#[test]
fn a_wave_that_includes_nobody_of_a_counted_fleet_passes_at_once() {
    let p = Plan::new(vec![100, FULL], Gates::default()).unwrap();
    let empty = Tally {
        nodes: 5,
        ..Tally::default()
    };
    // Without a census there is no telling an empty wave from one not heard of yet.
    assert_eq!(Driver::new(p.clone(), 0).on_tally(0, &empty), Step::Wait);
    let partial = Tally {
        nodes: 4,
        ..Tally::default()
    };
    assert_eq!(Driver::new(p.clone(), 5).on_tally(0, &partial), Step::Wait);
    match Driver::new(p, 5).on_tally(0, &empty) {
        Step::Advance(next) => assert_eq!(next.wave, 1),
        s => panic!("{s:?}"),
    }
}

#[test]
fn by_default_a_wave_waits_for_a_hundred_requests_before_it_judges_rates_or_passes() {
    let p = plan(Gates::default());
    let early = tally(10, 10, 0, health(3, 1, 1), Health::default());
    let v = judge(&p, &early, Some(Duration::from_secs(600)));
    assert!(
        matches!(&v, Verdict::Hold { why } if why.contains("3 of --min-requests 100")),
        "{v:?}"
    );
    let judged = tally(10, 10, 0, health(100, 34, 1), Health::default());
    assert!(matches!(
        judge(&p, &judged, None),
        Verdict::Halt {
            gate: Gate::ErrorRate,
            ..
        }
    ));
}

#[test]
fn a_count_below_the_census_that_stays_still_is_taken_as_the_fleet() {
    let p = Plan::new(
        vec![5000, FULL],
        Gates {
            bake_ms: 0,
            min_requests: 0,
            ..Gates::default()
        },
    )
    .unwrap();
    let mut d = Driver::new(p.clone(), 10);
    // 8 of 10 counted (two went down after the census): not settled yet, then taken.
    let t = Tally {
        nodes: 8,
        in_wave: 4,
        active: 4,
        ..Tally::default()
    };
    assert_eq!(d.on_tally(1_000, &t), Step::Wait);
    assert_eq!(d.on_tally(1_000 + COUNT_STILL_MS - 1, &t), Step::Wait);
    assert!(matches!(
        d.on_tally(1_000 + COUNT_STILL_MS, &t),
        Step::Advance(_)
    ));
    // A count still growing is waited for.
    let mut d = Driver::new(p, 10);
    for (i, n) in (1..=8).enumerate() {
        let t = Tally {
            nodes: n,
            in_wave: n / 2,
            active: n / 2,
            ..Tally::default()
        };
        assert_eq!(d.on_tally(i as u64 * 1_000, &t), Step::Wait);
    }
}
