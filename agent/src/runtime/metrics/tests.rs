//! Tests of the metrics registry and its Prometheus rendering.
use super::exposition::{check_exposition, parse_sample};
use super::*;

const B: &[u64] = &[10, 20, 30];

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

#[test]
fn everything_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Histogram>();
    check::<HistogramSnapshot>();
    check::<ReleaseMetrics>();
    check::<ReleaseMetricsSnapshot>();
    check::<AppMetrics>();
    check::<Metrics>();
    check::<Arc<Metrics>>();
    fn serializable<T: Serialize>() {}
    serializable::<ReleaseMetricsSnapshot>();
    serializable::<AppMetricsSnapshot>();
    serializable::<HistogramSnapshot>();
}

#[test]
fn bucket_placement_at_and_around_bounds() {
    let h = Histogram::new(B);
    for d in [
        Duration::ZERO,               // bucket 0
        us(10),                       // bucket 0: le is inclusive
        Duration::from_nanos(1),      // bucket 0 (1 µs)
        Duration::from_nanos(10_001), // bucket 1: 10.001 µs > 10 µs
        us(11),                       // bucket 1
        us(20),                       // bucket 1
        us(30),                       // bucket 2
        us(31),                       // +Inf
    ] {
        h.observe(d);
    }
    let s = h.snapshot();
    assert_eq!(s.bounds, B);
    assert_eq!(s.counts, vec![3, 3, 1, 1]);
    assert_eq!(s.count, 8);
    assert_eq!(s.sum_us, 1 + 10 + 11 + 11 + 20 + 30 + 31);

    let h = Histogram::new(B);
    h.observe(Duration::MAX); // saturates to u64::MAX µs
    let s = h.snapshot();
    assert_eq!(s.counts, vec![0, 0, 0, 1]);
    assert_eq!(s.sum_us, u64::MAX);
}

#[test]
fn sum_is_in_microseconds() {
    let h = Histogram::new(LATENCY_BUCKETS_US);
    h.observe(Duration::from_millis(3));
    h.observe(us(250));
    let s = h.snapshot();
    assert_eq!(s.sum_us, 3_250);
    assert_eq!(s.count, 2);
    assert_eq!(s.counts.len(), LATENCY_BUCKETS_US.len() + 1);
    // 250 µs is exactly a bound; 3 ms falls in (2.5 ms, 5 ms].
    let at = |bound| LATENCY_BUCKETS_US.iter().position(|&b| b == bound).unwrap();
    assert_eq!(s.counts[at(250)], 1);
    assert_eq!(s.counts[at(5_000)], 1);
}

#[test]
#[should_panic(expected = "strictly increasing")]
fn unsorted_bounds_are_rejected() {
    Histogram::new(&[10, 10]);
}

#[test]
fn bucket_constants_are_valid() {
    // Histogram::new asserts strictly increasing bounds.
    assert_eq!(Histogram::new(LATENCY_BUCKETS_US).bounds().len(), 18);
    assert_eq!(Histogram::new(INSTANTIATE_BUCKETS_US).bounds().len(), 12);
    assert_eq!(LATENCY_BUCKETS_US.last(), Some(&30_000_000));
}

#[test]
fn quantile_of_empty_is_none() {
    let s = Histogram::new(B).snapshot();
    assert_eq!(s.count, 0);
    assert_eq!(s.quantile(0.0), None);
    assert_eq!(s.quantile(0.5), None);
    assert_eq!(s.quantile(1.0), None);
}

#[test]
fn quantile_rejects_out_of_range_q() {
    let h = Histogram::new(B);
    h.observe(us(5));
    let s = h.snapshot();
    assert_eq!(s.quantile(-0.1), None);
    assert_eq!(s.quantile(1.1), None);
    assert_eq!(s.quantile(f64::NAN), None);
    assert_eq!(s.quantile(1.0), Some(us(10)));
}

#[test]
fn quantile_picks_the_bucket_of_the_ranked_observation() {
    let h = Histogram::new(B);
    // 4 observations ≤ 10 µs, 4 in (10, 20], 2 in +Inf.
    for _ in 0..4 {
        h.observe(us(7));
        h.observe(us(15));
    }
    h.observe(us(100));
    h.observe(us(1_000));
    let s = h.snapshot();
    assert_eq!(s.counts, vec![4, 4, 0, 2]);
    assert_eq!(s.quantile(0.0), Some(us(10))); // rank 1
    assert_eq!(s.quantile(0.1), Some(us(10))); // rank 1
    assert_eq!(s.quantile(0.4), Some(us(10))); // rank 4: last in bucket 0
    assert_eq!(s.quantile(0.41), Some(us(20))); // rank 5: first in bucket 1
    assert_eq!(s.quantile(0.5), Some(us(20)));
    assert_eq!(s.quantile(0.8), Some(us(20))); // rank 8: last in bucket 1
    assert_eq!(s.quantile(0.81), Some(Duration::MAX)); // rank 9: +Inf
    assert_eq!(s.quantile(1.0), Some(Duration::MAX));
}

#[test]
fn quantile_is_not_fooled_by_float_error() {
    // 0.07 * 100.0 == 7.000000000000001 in f64; the rank must still be 7.
    assert!(std::hint::black_box(0.07_f64) * 100.0 > 7.0);
    let h = Histogram::new(B);
    for _ in 0..7 {
        h.observe(us(1));
    }
    for _ in 0..93 {
        h.observe(us(25));
    }
    let s = h.snapshot();
    assert_eq!(s.quantile(0.07), Some(us(10)));
    assert_eq!(s.quantile(0.071), Some(us(30)));
}

#[test]
fn quantile_with_no_bounds_is_unbounded() {
    let h = Histogram::new(&[]);
    h.observe(us(1));
    let s = h.snapshot();
    assert_eq!(s.counts, vec![1]);
    assert_eq!(s.quantile(0.5), Some(Duration::MAX));
}

#[test]
fn concurrent_observe_sums_correctly() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 20_000;
    let h = Histogram::new(B);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let h = &h;
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    // 5, 15, 25, 35 µs in turn: one per bucket.
                    h.observe(us(5 + 10 * ((i + t) % 4)));
                }
            });
        }
    });
    let s = h.snapshot();
    let n = THREADS * PER_THREAD;
    assert_eq!(s.count, n);
    assert_eq!(s.counts, vec![n / 4; 4]);
    assert_eq!(s.sum_us, n / 4 * (5 + 15 + 25 + 35));
}

#[test]
fn concurrent_registry_use_shares_one_entry() {
    let m = Metrics::default();
    let arcs: Vec<Arc<ReleaseMetrics>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    let r = m.release("app", "1.0.0");
                    for _ in 0..1_000 {
                        r.record_response(200, us(60));
                    }
                    m.app("app").record_swap();
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(arcs.iter().all(|a| Arc::ptr_eq(a, &arcs[0])));
    let s = m.release("app", "1.0.0").snapshot();
    assert_eq!(s.requests, 6_000);
    assert_eq!(s.responses_2xx, 6_000);
    assert_eq!(s.latency.count, 6_000);
    assert_eq!(s.latency.sum_us, 6_000 * 60);
    assert_eq!(m.app("app").snapshot().swaps, 6);
}

#[test]
fn responses_are_counted_by_status_class() {
    let r = ReleaseMetrics::new();
    for status in [
        200, 204, 299, 301, 100, 400, 404, 413, 499, 500, 503, 599, 600, 0,
    ] {
        r.record_response(status, us(100));
    }
    r.record_trap();
    r.record_timeout();
    r.record_timeout();
    r.record_overloaded();
    r.record_too_large();
    r.record_instantiate(us(42));
    let s = r.snapshot();
    assert_eq!(s.requests, 14);
    assert_eq!(s.responses_2xx, 3);
    assert_eq!(s.responses_4xx, 4);
    assert_eq!(s.responses_5xx, 3);
    assert_eq!(
        (s.traps, s.timeouts, s.overloaded, s.too_large),
        (1, 2, 1, 1)
    );
    assert_eq!(s.latency.count, 14);
    assert_eq!(s.latency.sum_us, 1_400);
    assert_eq!(s.instantiate.count, 1);
    assert_eq!(s.instantiate.sum_us, 42);
    assert_eq!(s.instantiate.quantile(1.0), Some(us(50)));
}

#[test]
fn app_counters() {
    let m = Metrics::default();
    let a = m.app("a");
    a.record_swap();
    a.record_swap();
    a.record_revert();
    a.record_local_rollback();
    a.record_refused();
    a.record_refused();
    a.record_refused();
    assert!(Arc::ptr_eq(&a, &m.app("a")));
    assert_eq!(
        m.app("a").snapshot(),
        AppMetricsSnapshot {
            swaps: 2,
            reverts: 1,
            local_rollbacks: 1,
            refused: 3
        }
    );
    assert_eq!(m.app("b").snapshot(), AppMetricsSnapshot::default());
}

#[test]
fn seconds_formatting_is_exact() {
    let f = |n| MicrosAsSeconds(n).to_string();
    assert_eq!(f(0), "0");
    assert_eq!(f(5), "0.000005");
    assert_eq!(f(50), "0.00005");
    assert_eq!(f(2_500), "0.0025");
    assert_eq!(f(1_000_000), "1");
    assert_eq!(f(2_500_000), "2.5");
    assert_eq!(f(30_000_000), "30");
    assert_eq!(f(1_234_567), "1.234567");
    assert_eq!(f(u64::MAX), "18446744073709.551615");
}

#[test]
fn label_values_are_escaped() {
    let mut out = String::new();
    escape_label_value(&mut out, "a\\b\"c\nd").unwrap();
    assert_eq!(out, r#"a\\b\"c\nd"#);

    let m = Metrics::default();
    m.release("we\"ird\\app\nx", "1.0.0-rc.1+\"b\"")
        .record_response(200, us(1));
    let text = m.render_prometheus();
    assert!(
        text.contains(
            r#"fleetcast_requests_total{app="we\"ird\\app\nx",version="1.0.0-rc.1+\"b\""} 1"#
        ),
        "{text}"
    );
    // No raw newline leaked into a sample line.
    for line in text.lines() {
        assert!(
            line.starts_with('#') || line.starts_with("fleetcast_"),
            "{line}"
        );
    }
    check_exposition(&text);
}

fn sample_registry() -> Metrics {
    let m = Metrics::default();
    let b1 = m.release("beta", "2.0.0");
    b1.record_response(200, us(40)); // le 0.00005
    b1.record_response(200, us(50)); // le 0.00005 (boundary)
    b1.record_response(404, us(51)); // le 0.0001
    b1.record_response(500, Duration::from_millis(7)); // le 0.01
    b1.record_response(503, Duration::from_secs(31)); // +Inf
    b1.record_overloaded();
    b1.record_trap();
    b1.record_instantiate(us(30));
    let a1 = m.release("alpha", "1.1.0");
    a1.record_response(200, us(100));
    m.release("alpha", "1.0.0").record_response(413, us(10));
    m.release("alpha", "1.0.0").record_too_large();
    m.app("alpha").record_swap();
    m.app("beta").record_refused();
    m.record_not_found();
    m.record_not_found();
    m
}

#[test]
fn rendered_histogram_is_cumulative_and_inf_equals_count() {
    let text = sample_registry().render_prometheus();
    let series = r#"app="beta",version="2.0.0""#;
    let expect = [
        ("0.00005", 2),
        ("0.0001", 3),
        ("0.00025", 3),
        ("0.005", 3),
        ("0.01", 4),
        ("30", 4),
        ("+Inf", 5),
    ];
    for (le, n) in expect {
        let line =
            format!(r#"fleetcast_request_duration_seconds_bucket{{{series},le="{le}"}} {n}"#);
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    assert!(text.contains(&format!(
        "fleetcast_request_duration_seconds_count{{{series}}} 5\n"
    )));
    // 40 + 50 + 51 + 7000 + 31_000_000 µs.
    assert!(text.contains(&format!(
        "fleetcast_request_duration_seconds_sum{{{series}}} 31.007141\n"
    )));
    assert!(text.contains(&format!(
        "fleetcast_instantiation_duration_seconds_bucket{{{series},le=\"0.00005\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "fleetcast_instantiation_duration_seconds_sum{{{series}}} 0.00003\n"
    )));
    // Every histogram series, in the generic check.
    check_exposition(&text);
}

#[test]
fn rendered_counters_and_order() {
    let text = sample_registry().render_prometheus();
    for line in [
        r#"fleetcast_requests_total{app="beta",version="2.0.0"} 5"#,
        r#"fleetcast_responses_total{app="beta",version="2.0.0",class="2xx"} 2"#,
        r#"fleetcast_responses_total{app="beta",version="2.0.0",class="4xx"} 1"#,
        r#"fleetcast_responses_total{app="beta",version="2.0.0",class="5xx"} 2"#,
        r#"fleetcast_responses_total{app="alpha",version="1.0.0",class="4xx"} 1"#,
        r#"fleetcast_traps_total{app="beta",version="2.0.0"} 1"#,
        r#"fleetcast_timeouts_total{app="beta",version="2.0.0"} 0"#,
        r#"fleetcast_overloaded_total{app="beta",version="2.0.0"} 1"#,
        r#"fleetcast_request_body_too_large_total{app="alpha",version="1.0.0"} 1"#,
        r#"fleetcast_swaps_total{app="alpha"} 1"#,
        r#"fleetcast_swaps_total{app="beta"} 0"#,
        r#"fleetcast_reverts_total{app="alpha"} 0"#,
        r#"fleetcast_local_rollbacks_total{app="beta"} 0"#,
        r#"fleetcast_releases_refused_total{app="beta"} 1"#,
        "fleetcast_not_found_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    // Sorted by app, then version, within a family.
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fleetcast_requests_total"))
        .collect();
    assert_eq!(
        requests,
        [
            r#"fleetcast_requests_total{app="alpha",version="1.0.0"} 1"#,
            r#"fleetcast_requests_total{app="alpha",version="1.1.0"} 1"#,
            r#"fleetcast_requests_total{app="beta",version="2.0.0"} 5"#,
        ]
    );
    // Deterministic.
    let m = sample_registry();
    assert_eq!(m.render_prometheus(), m.render_prometheus());
    assert!(text.ends_with('\n'));
}

#[test]
fn forget_release_drops_its_series_only() {
    let m = sample_registry();
    let held = m.release("beta", "2.0.0");
    assert!(m.forget_release("beta", "2.0.0"));
    assert!(!m.forget_release("beta", "2.0.0"));
    assert!(!m.forget_release("nope", "1"));
    let text = m.render_prometheus();
    assert!(!text.contains(r#"version="2.0.0""#), "{text}");
    // The app's own series stay; so do other releases.
    assert!(text.contains(r#"fleetcast_releases_refused_total{app="beta"} 1"#));
    assert!(text.contains(r#"fleetcast_requests_total{app="alpha",version="1.1.0"} 1"#));
    check_exposition(&text);
    // A held Arc still works but is detached; a new lookup starts at zero.
    held.record_response(200, us(1));
    assert_eq!(m.release("beta", "2.0.0").snapshot().requests, 0);

    assert!(m.forget_app("alpha"));
    let text = m.render_prometheus();
    assert!(!text.contains(r#"app="alpha""#), "{text}");
    check_exposition(&text);
}

#[test]
fn empty_registry_renders_headers_and_not_found() {
    let text = Metrics::default().render_prometheus();
    assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 13);
    assert!(text.ends_with("fleetcast_not_found_total 0\n"));
    check_exposition(&text);
}

#[test]
fn parser_rejects_malformed_lines() {
    for bad in [
        "",
        " x 1",
        "x  1",
        "x{a=\"1\"}1",
        "x{a=1} 1",
        "x{a=\"1\" 1",
        "x{a=\"\\t\"} 1",
        "x{a=\"1\"b=\"2\"} 1",
        "x 1e",
        "x one",
        "1x 1",
    ] {
        assert!(parse_sample(bad).is_err(), "accepted {bad:?}");
    }
    let s = parse_sample(r#"a_b:c{x="q\"\\\n",le="+Inf"} 12.5"#).unwrap();
    assert_eq!(s.name, "a_b:c");
    assert_eq!(
        s.labels,
        vec![
            ("x".to_owned(), "q\"\\\n".to_owned()),
            ("le".to_owned(), "+Inf".to_owned())
        ]
    );
    assert_eq!(s.value, 12.5);
    assert_eq!(parse_sample("x +Inf").unwrap().value, f64::INFINITY);
}
