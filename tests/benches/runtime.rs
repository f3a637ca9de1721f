//! The agent's runtime under load: hot swaps while a load generator runs at the agent's full
//! throughput, the activation pipeline's compiled → serving time, local rollback latency, and
//! instantiation per request with and without the pooling allocator. One in-process agent
//! (real quinn, sled, wasmtime) on loopback; the load generator is `fleetcast_tests::load`
//! (closed loop, keep-alive HTTP/1.1), in the same process.
//!
//! Run: `cargo bench --workspace --bench runtime` (env FLEETCAST_BENCH_CONNS, default 16;
//! FLEETCAST_BENCH_SWAPS, default 100; FLEETCAST_BENCH_HEADS, default 50).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fleet, guest};
use fleetcast::commands::publish::PushArgs;
use fleetcast::commands::release::{PolicyArgs, ReleaseCmd};
use fleetcast::commands::rollback::Rollback;
use fleetcast_agent::runtime::{Limits, Runtime, RuntimeConfig};
use fleetcast_tests::load::{self, LoadConfig, LoadReport, percentile_of};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(xs: &mut [u64], q: f64) -> u64 {
    xs.sort_unstable();
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

fn line(name: &str, r: &LoadReport) {
    println!(
        "{name:<28} requests {:>7}  failed {:>3}  {:>8.0} req/s  p50 {:>6} us  p99 {:>6} us  max {:>6} us",
        r.requests(),
        r.failed(),
        r.throughput_rps(),
        r.percentile(0.5).as_micros(),
        r.percentile(0.99).as_micros(),
        r.max_latency().as_micros()
    );
}

async fn admin(addr: std::net::SocketAddr, method: &'static str, path: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || fleetcast_agent::cli::admin_request(addr, method, &path))
        .await
        .unwrap()
        .unwrap()
}

fn main() {
    let conns = env("FLEETCAST_BENCH_CONNS", 16);
    let swaps = env("FLEETCAST_BENCH_SWAPS", 100);
    let heads = env("FLEETCAST_BENCH_HEADS", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let fleet = Fleet::start_with(
            1,
            |_| vec![],
            |c| {
                c.trial.requests = 0;
                c.trial.secs = 0;
                c.runtime.max_instances = 128;
                c.runtime.max_concurrent = 128;
            },
        )
        .await;
        let a = fleet.agent(0);
        let push = || PushArgs {
            key: fleet.key(),
            peer: a.quic_addr(),
            fleet: Some("test".into()),
            wait: false,
            expect: None,
            timeout: 60,
        };
        for (file, v) in [("hello-v1.wasm", "1.0.0"), ("hello-v2.wasm", "2.0.0")] {
            ReleaseCmd {
                file: guest(file),
                app: "hello".into(),
                version: v.into(),
                push: push(),
                chunk_size: 64 * 1024,
                policy: PolicyArgs::default(),
            }
            .execute()
            .await
            .unwrap();
        }
        let cfg = LoadConfig {
            addr: a.http_addr(),
            host: "hello".into(),
            path: "/".into(),
            connections: conns,
            duration: Duration::from_secs(4),
            warmup: Duration::from_secs(1),
        };
        println!("machine: {} cores; {conns} connections, keep-alive, GET / (hello component)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));

        // Steady state.
        let steady = load::run(&cfg).await.unwrap();
        line("steady state", &steady);

        // The same load while `swaps` local rollbacks alternate v1 <-> v2.
        let admin_addr = a.admin_addr().unwrap();
        let swapper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_200)).await; // past the warmup
            let mut serving_us = Vec::new();
            let mut command_us = Vec::new();
            let (mut first, mut last) = (None, None);
            for i in 0..swaps {
                let to = if i % 2 == 0 { "1.0.0" } else { "2.0.0" };
                let t = Instant::now();
                first.get_or_insert(t);
                let (code, body) =
                    admin(admin_addr, "POST", format!("/apps/hello/rollback?to={to}")).await;
                command_us.push(t.elapsed().as_micros() as u64);
                last = Some(Instant::now());
                assert_eq!(code, 200, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                serving_us.push(v["serving_after_us"].as_u64().unwrap());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (serving_us, command_us, first.unwrap(), last.unwrap())
        });
        let load_start = Instant::now() + cfg.warmup;
        let during = load::run(&cfg).await.unwrap();
        let (mut serving_us, mut command_us, first, last) = swapper.await.unwrap();
        line("during swaps (whole run)", &during);
        // The samples that started while swaps were happening.
        let from = first.saturating_duration_since(load_start).as_micros() as u64;
        let to = last.saturating_duration_since(load_start).as_micros() as u64;
        let window: Vec<_> = during
            .samples
            .iter()
            .copied()
            .filter(|s| s.at_us >= from && s.at_us <= to)
            .collect();
        let failed = during.failed();
        println!(
            "{:<28} requests {:>7}  failed {:>3}  p50 {:>6} us  p99 {:>6} us  ({swaps} swaps in {:.2?})",
            "  within the swap window",
            window.len(),
            window.iter().filter(|s| !s.is_ok()).count(),
            percentile_of(&window, 0.5).as_micros(),
            percentile_of(&window, 0.99).as_micros(),
            last - first
        );
        println!(
            "failed requests during {swaps} swaps: {failed} (statuses {:?})",
            during.failures_by_status()
        );
        println!(
            "local rollback, command received -> serving: p50 {} us  p99 {} us  max {} us",
            pct(&mut serving_us, 0.5),
            pct(&mut serving_us, 0.99),
            serving_us.iter().max().unwrap()
        );
        println!(
            "local rollback, admin request round trip (incl. durable): p50 {} us  p99 {} us",
            pct(&mut command_us, 0.5),
            pct(&mut command_us, 0.99)
        );

        // Head-driven activations of cached releases: fleetcast rollback, alternating.
        let (mut c2s, mut swap_us, mut persist_us, mut smoke_us) = (vec![], vec![], vec![], vec![]);
        for i in 0..heads {
            let to = if i % 2 == 0 { "1.0.0" } else { "2.0.0" };
            Rollback {
                app: "hello".into(),
                to: Some(to.into()),
                push: PushArgs {
                    wait: false,
                    ..push()
                },
            }
            .execute()
            .await
            .unwrap();
            let (_, body) = admin(admin_addr, "GET", "/status".into()).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let t = &v["apps"][0]["last_activation"];
            c2s.push(t["compiled_to_serving_us"].as_u64().unwrap());
            swap_us.push(t["swap_us"].as_u64().unwrap());
            persist_us.push(t["persist_us"].as_u64().unwrap());
            smoke_us.push(t["smoke_us"].as_u64().unwrap());
        }
        println!(
            "activation of a cached release ({heads} rollback heads): compiled -> serving p50 {} us p99 {} us \
             (persist p50 {} us, smoke p50 {} us, swap p50 {} us p99 {} us)",
            pct(&mut c2s, 0.5),
            pct(&mut c2s, 0.99),
            pct(&mut persist_us, 0.5),
            pct(&mut smoke_us, 0.5),
            pct(&mut swap_us, 0.5),
            pct(&mut swap_us, 0.99)
        );
        drop(fleet);

        // Instantiation per request.
        for pooling in [true, false] {
            let rt = Runtime::new(&RuntimeConfig {
                pooling,
                max_instances: 128,
                ..RuntimeConfig::default()
            })
            .unwrap();
            let wasm = std::fs::read(guest("hello-v1.wasm")).unwrap();
            let prepared = {
                let rt = rt.clone();
                tokio::task::spawn_blocking(move || rt.compile(&wasm).unwrap())
                    .await
                    .unwrap()
            };
            let limits = Limits::agent(rt.config());
            let mut us = Vec::new();
            for _ in 0..3_000 {
                let mut store = rt.new_store(&limits);
                let t = Instant::now();
                let _ = prepared.pre.instantiate_async(&mut store).await.unwrap();
                us.push(t.elapsed().as_nanos() as u64);
                drop(store);
            }
            let mean = us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0;
            println!(
                "instantiation ({}): p50 {:.1} us  p99 {:.1} us  mean {:.1} us  (n=3000)",
                if pooling { "pooling allocator" } else { "on-demand allocation" },
                pct(&mut us, 0.5) as f64 / 1000.0,
                pct(&mut us, 0.99) as f64 / 1000.0,
                mean
            );
            let _ = Arc::strong_count(&rt);
        }
    });
}
