//! Runtime unit tests: real wasmtime, real guest components.

use wasmtime_wasi_http::WasiHttpView as _;

use super::testutil::*;
use super::*;

#[test]
fn config_defaults_and_unknown_fields() {
    let cfg: RuntimeConfig = toml::from_str("").unwrap();
    assert_eq!(cfg, RuntimeConfig::default());
    assert!(cfg.pooling);
    assert_eq!(
        (
            cfg.max_instances,
            cfg.max_memory_mib,
            cfg.request_timeout_ms,
            cfg.epoch_tick_ms
        ),
        (128, 128, 30_000, 10)
    );
    let cfg: RuntimeConfig = toml::from_str("max_instances = 4\npooling = false").unwrap();
    assert_eq!((cfg.max_instances, cfg.pooling), (4, false));
    let err = toml::from_str::<RuntimeConfig>("max_instance = 4").unwrap_err();
    assert!(err.to_string().contains("max_instance"), "{err}");
}

#[test]
fn invalid_config_is_refused() {
    for cfg in [
        RuntimeConfig {
            max_instances: 0,
            ..Default::default()
        },
        RuntimeConfig {
            epoch_tick_ms: 0,
            ..Default::default()
        },
        RuntimeConfig {
            max_memory_mib: 5000,
            ..Default::default()
        },
        RuntimeConfig {
            request_timeout_ms: 5,
            epoch_tick_ms: 10,
            ..Default::default()
        },
    ] {
        let err = Runtime::new(&cfg).err().expect("must fail");
        assert!(err.to_string().starts_with("runtime."), "{err}");
    }
}

#[test]
fn pooling_falls_back_to_on_demand_when_the_reservation_is_impossible() {
    // Four billion instance slots cannot be reserved on any host.
    let rt = runtime_with(RuntimeConfig {
        max_instances: u32::MAX,
        ..Default::default()
    });
    assert!(!rt.is_pooling());
    rt.compile(HELLO_V1)
        .expect("the fallback engine still compiles");

    assert!(small_runtime().is_pooling());
    assert!(
        !runtime_with(RuntimeConfig {
            pooling: false,
            ..Default::default()
        })
        .is_pooling()
    );
}

#[test]
fn garbage_is_not_wasm() {
    let err = small_runtime().compile(GARBAGE).err().expect("must fail");
    assert!(matches!(err, CompileError::NotWasm), "{err:?}");
    assert!(err.to_string().contains("not WebAssembly"), "{err}");
    let err = small_runtime().compile(b"").err().expect("must fail");
    assert!(matches!(err, CompileError::NotWasm), "{err:?}");
}

#[test]
fn core_module_is_not_a_component() {
    let err = small_runtime()
        .compile(NOT_A_COMPONENT)
        .err()
        .expect("must fail");
    assert!(
        matches!(err, CompileError::CoreModuleNotComponent),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("core WebAssembly module, not a component"),
        "{err}"
    );
}

#[test]
fn cli_command_is_the_wrong_world() {
    let rt = small_runtime();
    let err = rt.compile(WRONG_WORLD).err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, CompileError::WrongWorld(_)), "{err:?}");
    assert!(
        msg.contains("does not export wasi:http/incoming-handler"),
        "{msg}"
    );
    assert!(
        msg.contains("wasi:cli/run"),
        "names what it does export: {msg}"
    );
    assert_eq!(rt.stats().compiles, 0);
}

#[test]
fn truncated_component_is_invalid() {
    let err = small_runtime()
        .compile(&HELLO_V1[..HELLO_V1.len() / 2])
        .err()
        .expect("must fail");
    assert!(matches!(err, CompileError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("invalid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn precompiled_artifacts_are_never_compiled() {
    let rt = small_runtime();
    let prepared = rt.compile(HELLO_V1).unwrap();
    let err = rt.compile(&prepared.artifact).err().expect("must fail");
    assert!(matches!(err, CompileError::Precompiled), "{err:?}");
    assert!(
        err.to_string().contains("never accepted from the network"),
        "{err}"
    );
}

#[test]
fn unknown_import_is_reported_as_missing() {
    let wat = br#"(component
        (import "fleetcast:test/nope@1.0.0" (instance (export "f" (func))))
        (instance $empty)
        (export "wasi:http/incoming-handler@0.2.12" (instance $empty)))"#;
    let err = prepare_wat(&small_runtime(), wat).err().expect("must fail");
    assert!(matches!(err, CompileError::MissingImports(_)), "{err:?}");
    assert!(err.to_string().contains("fleetcast:test/nope"), "{err}");
}

#[test]
fn compile_counts_and_links_the_handler() {
    let rt = small_runtime();
    rt.compile(HELLO_V1).unwrap();
    prepare_wat(&rt, &handler_wat("unreachable")).expect("a bare handler links");
    assert_eq!(rt.stats().compiles, 1, "prepare_wat bypasses compile()");
}

#[test]
fn load_round_trip_needs_a_compatible_engine() {
    let a = small_runtime();
    let b = small_runtime();
    assert_eq!(a.compat_hash(), b.compat_hash());
    let prepared = a.compile(HELLO_V1).unwrap();
    // SAFETY: the artifact was produced by `compile` just above.
    let loaded = unsafe { b.load(&prepared.artifact) }.unwrap();
    assert_eq!(loaded.artifact, prepared.artifact);
    assert_eq!((b.stats().compiles, b.stats().cache_loads), (0, 1));

    // SAFETY: not an artifact; `load` must reject it before deserializing.
    let err = unsafe { b.load(HELLO_V1) }.err().expect("must fail");
    assert!(matches!(err, CompileError::Load(_)), "{err:?}");
    assert!(err.to_string().contains("recompile"), "{err}");
    assert_eq!(b.stats().cache_loads, 1);
}

#[test]
fn deploy_swaps_and_returns_the_previous_version() {
    let rt = small_runtime();
    let v1 = rt.compile(HELLO_V1).unwrap();
    let v2 = rt.compile(HELLO_V2).unwrap();
    assert!(rt.active("hello").is_none());
    assert!(rt.deploy(meta("hello", "1.0.0", 1), &v1).is_none());
    let held = rt.active("hello").unwrap();
    let prev = rt.deploy(meta("hello", "2.0.0", 2), &v2).unwrap();
    assert_eq!(prev.meta.version, "1.0.0");
    assert_eq!(held.meta.version, "1.0.0", "a held version stays usable");
    assert_eq!(rt.active("hello").unwrap().meta.version, "2.0.0");

    rt.deploy(meta("api", "1.0.0", 3), &v1);
    let apps: Vec<_> = rt.apps().into_iter().map(|m| (m.app, m.version)).collect();
    assert_eq!(
        apps,
        [
            ("api".to_string(), "1.0.0".to_string()),
            ("hello".into(), "2.0.0".into())
        ]
    );
    // What routing sees of the runtime (its `Deployments`).
    let routes = crate::routes::Routes::default();
    let route = |host: &str| routes.resolve_host(host, "/", &*rt);
    assert_eq!(route("api").unwrap().meta.app, "api");
    assert_eq!(
        route("zzz").err().unwrap(),
        crate::routes::Unrouted::NotFound {
            app: "zzz".into(),
            deployed: vec!["api".into(), "hello".into()]
        }
    );

    assert_eq!(rt.undeploy("api").unwrap().meta.app, "api");
    assert!(rt.active("api").is_none());
    assert_eq!(
        route("zzz").unwrap().meta.app,
        "hello",
        "single app serves all"
    );
}

#[test]
fn compat_hash_is_stable_across_runtimes_with_equal_code_settings() {
    let a = small_runtime();
    let c = runtime_with(RuntimeConfig {
        max_instances: 16,
        request_timeout_ms: 1000,
        ..Default::default()
    });
    assert_eq!(
        a.compat_hash(),
        c.compat_hash(),
        "timeouts do not affect code"
    );
    assert_eq!(a.compat_hash(), a.compat_hash());
    assert_ne!(a.compat_hash(), [0; 32]);
}

/// A spinning guest is interrupted at its deadline even when the `Runtime`
/// was dropped meanwhile (the store keeps the epoch ticker alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guest_is_interrupted_after_the_runtime_is_dropped() {
    use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
    let rt = runtime_with(RuntimeConfig {
        max_instances: 4,
        request_timeout_ms: 200,
        ..Default::default()
    });
    let prepared = prepare_wat(&rt, &handler_wat("(loop $l (br $l))")).unwrap();
    let mut store = rt.new_store(&crate::runtime::Limits::agent(rt.config()));
    drop(rt);
    let (tx, _rx) = tokio::sync::oneshot::channel();
    let req = http::Request::get("http://spin/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .unwrap();
    let out = store.data_mut().http().new_response_outparam(tx).unwrap();
    let run = tokio::spawn(async move {
        let proxy = prepared.pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
    });
    let err = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the guest must be interrupted")
        .unwrap()
        .expect_err("the guest must trap");
    assert!(
        matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ),
        "{err:?}"
    );
}

/// Serves `rt` and returns the body of `GET /` for host `app`.
async fn serve_once(rt: &Arc<Runtime>, app: &str) -> String {
    let server = TestServer::start(rt.clone()).await;
    let r = get(&client(), server.addr, app, "/").await.unwrap();
    server.stop().await.unwrap();
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_sharing_an_engine_deploy_and_serve_independently() {
    let engine = RuntimeEngine::new(&RuntimeConfig {
        max_instances: 16,
        ..Default::default()
    })
    .unwrap();
    let a = Runtime::with_engine(engine.clone());
    let b = Runtime::with_engine(engine.clone());
    assert!(Arc::ptr_eq(a.engine(), b.engine()));
    assert_eq!(a.compat_hash(), b.compat_hash());
    assert_eq!(a.config(), engine.config());

    a.deploy(meta("hello", "1.0.0", 1), &compile(&a, HELLO_V1).await);
    b.deploy(meta("hello", "2.0.0", 1), &compile(&b, HELLO_V2).await);
    assert_eq!(
        serve_once(&a, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );
    assert_eq!(
        serve_once(&b, "hello").await,
        "hello from fleetcast 2.0.0\n"
    );
    assert_eq!(
        serve_once(&a, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );

    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.compiles, sa.requests), (1, 2));
    assert_eq!((sb.compiles, sb.requests), (1, 1));
    b.undeploy("hello");
    assert!(b.active("hello").is_none());
    assert_eq!(a.active("hello").unwrap().meta.version, "1.0.0");

    // Code compiled by one runtime deploys on another sharing the engine.
    a.deploy(meta("hello", "2.0.0", 2), &compile(&b, HELLO_V2).await);
    assert_eq!(
        serve_once(&a, "hello").await,
        "hello from fleetcast 2.0.0\n"
    );

    // The engine (and its ticker) outlive any one runtime.
    drop(b);
    a.deploy(meta("hello", "1.0.0", 3), &compile(&a, HELLO_V1).await);
    assert_eq!(
        serve_once(&a, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_cache_builds_once_for_concurrent_requests() {
    const AGENTS: usize = 50;
    let engine = RuntimeEngine::new(&RuntimeConfig {
        max_instances: 16,
        ..Default::default()
    })
    .unwrap();
    let cache = CompileCache::new();
    let digest = *blake3::hash(HELLO_V1).as_bytes();
    let barrier = Arc::new(std::sync::Barrier::new(AGENTS));
    let mut tasks = Vec::new();
    for _ in 0..AGENTS {
        let rt = Runtime::with_shared(engine.clone(), Some(cache.clone()));
        let barrier = barrier.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            barrier.wait();
            let prepared = rt.prepare_cached(&digest, || rt.compile(HELLO_V1)).unwrap();
            rt.deploy(meta("hello", "1.0.0", 1), &prepared);
            rt
        }));
    }
    let mut runtimes = Vec::new();
    for t in tasks {
        runtimes.push(t.await.unwrap());
    }
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.hits, stats.entries), (1, 49, 1));
    let compiles: u64 = runtimes.iter().map(|rt| rt.stats().compiles).sum();
    assert_eq!(compiles, 1);

    // A cache hit serves exactly like a fresh compile.
    let hit = runtimes.iter().find(|rt| rt.stats().compiles == 0).unwrap();
    assert_eq!(
        serve_once(hit, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_cache_keys_do_not_collide() {
    let cfg = RuntimeConfig {
        max_instances: 16,
        ..Default::default()
    };
    let engine = RuntimeEngine::new(&cfg).unwrap();
    let cache = CompileCache::new();
    let (d1, d2) = (
        *blake3::hash(HELLO_V1).as_bytes(),
        *blake3::hash(HELLO_V2).as_bytes(),
    );
    let prepare = |rt: &Arc<Runtime>, digest: [u8; 32], wasm: &'static [u8]| {
        let rt = rt.clone();
        tokio::task::spawn_blocking(move || rt.prepare_cached(&digest, || rt.compile(wasm)))
    };

    let a = Runtime::with_shared(engine.clone(), Some(cache.clone()));
    let b = Runtime::with_shared(engine.clone(), Some(cache.clone()));
    let v1 = prepare(&a, d1, HELLO_V1).await.unwrap().unwrap();
    let v2 = prepare(&b, d2, HELLO_V2).await.unwrap().unwrap();
    assert_eq!((cache.stats().misses, cache.stats().hits), (2, 0));
    a.deploy(meta("hello", "2.0.0", 1), &v2);
    b.deploy(meta("hello", "1.0.0", 1), &v1);
    assert_eq!(
        serve_once(&a, "hello").await,
        "hello from fleetcast 2.0.0\n"
    );
    assert_eq!(
        serve_once(&b, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );

    // Hits hand back the entry of their own digest.
    let hit1 = prepare(&b, d1, HELLO_V2).await.unwrap().unwrap();
    let hit2 = prepare(&a, d2, HELLO_V1).await.unwrap().unwrap();
    assert_eq!((cache.stats().misses, cache.stats().hits), (2, 2));
    a.deploy(meta("hello", "1.0.0", 2), &hit1);
    b.deploy(meta("hello", "2.0.0", 2), &hit2);
    assert_eq!(
        serve_once(&a, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );
    assert_eq!(
        serve_once(&b, "hello").await,
        "hello from fleetcast 2.0.0\n"
    );

    // Another engine never receives code compiled for this one.
    let other = Runtime::with_shared(RuntimeEngine::new(&cfg).unwrap(), Some(cache.clone()));
    let own = prepare(&other, d1, HELLO_V1).await.unwrap().unwrap();
    assert_eq!(cache.stats().misses, 3);
    assert_eq!(other.stats().compiles, 1);
    other.deploy(meta("hello", "1.0.0", 1), &own);
    assert_eq!(
        serve_once(&other, "hello").await,
        "hello from fleetcast 1.0.0\n"
    );

    // Failures are not cached; removal forgets a digest on every engine.
    let err = b
        .prepare_cached(&[9; 32], || b.compile(GARBAGE))
        .err()
        .expect("must fail");
    assert!(matches!(err, CompileError::NotWasm), "{err:?}");
    assert_eq!(cache.stats().entries, 3);
    cache.remove(&d1);
    assert_eq!(cache.stats().entries, 1);
    cache.clear();
    assert_eq!(cache.stats().entries, 0);
}
