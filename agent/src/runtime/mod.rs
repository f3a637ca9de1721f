//! The agent's WebAssembly runtime: compiles `wasi:http/proxy` components,
//! keeps one pre-instantiated version per app, and atomically swaps versions.
//!
//! Shape: one [`RuntimeEngine`] — a [`wasmtime::Engine`] (pooling allocator,
//! epoch interruption), one [`Linker<Host>`](wasmtime::component::Linker)
//! with all of WASI 0.2 plus `wasi:http` added once, and the epoch ticker —
//! which many [`Runtime`]s in one process may share
//! ([`Runtime::with_engine`]); and per runtime, a per-app
//! [`ArcSwapOption<Deployed>`] slot, the instance semaphore and the counters.
//! An optional [`CompileCache`] shares compiled components between runtimes.
//! Every request gets a fresh [`Store<Host>`] (see [`Runtime::new_store`]);
//! the HTTP front lives in [`crate::http`], and which app a request goes to is decided in
//! [`crate::routes`] (the runtime only answers which apps are deployed, [`Deployments`]).
//!
//! Files: `config.rs` (`[runtime]`), `engine.rs` (engine, linker, epoch ticker, compile
//! cache), `compile.rs` (compile and load, [`CompileError`]), `host.rs` (per-request store
//! data), `invoke.rs` (one request on one release), `limits.rs`, `trial.rs`, `metrics/`.
//!
//! Invariants:
//! * **A swap never fails a request.** [`Runtime::deploy`] replaces the slot's
//!   `Arc<Deployed>` in one atomic store. A request clones the `Arc` once at its
//!   start ([`Runtime::active`]) and runs to completion on that version, so
//!   requests in flight keep the old code alive and new ones see the new code.
//! * **Compiled code is never accepted from the network.** [`Runtime::compile`]
//!   takes only wasm bytes and rejects precompiled artifacts; the only way to
//!   load native code is the `unsafe` [`Runtime::load`], reserved for the
//!   agent's own local cache of artifacts produced by `compile`.
//!
//! Guest environment: no preopened directories, no environment variables, no
//! arguments, no network sockets (WASI's default deny-all address check), stdin
//! closed. Guest stdout and stderr both go to the agent's stderr (stdout stays
//! clean for the agent's own output). Outgoing `wasi:http` requests use
//! wasmtime's default client.

mod compile;
mod config;
mod engine;
mod host;
pub mod invoke;
pub mod limits;
pub mod metrics;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
pub mod trial;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use self::compile::CompileError;
pub use self::config::RuntimeConfig;
pub use self::engine::{CompileCache, CompileCacheStats, EngineError, RuntimeEngine};
pub use self::host::Host;
pub use self::limits::Limits;
pub use self::metrics::AppHealth;
use self::metrics::{Metrics, ReleaseMetrics, SwapMark};
use self::trial::TrialCounters;
use crate::routes::Deployments;

/// The export every deployable component must provide.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// What is deployed in an app slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeployedMeta {
    pub app: String,
    pub version: String,
    /// Hex digest of the component bytes.
    pub digest: String,
    /// Monotonic deployment sequence number chosen by the caller.
    pub seq: u64,
}

/// A deployed version: metadata, the pre-instantiated component, and what its requests run
/// under: limits, a concurrency gate, metrics and (while on trial) the trial's counters.
pub struct Deployed {
    pub meta: DeployedMeta,
    pre: ProxyPre<Host>,
    pub limits: Limits,
    /// `limits.max_concurrent` permits: a request that finds none gets 503 (no queue).
    pub(crate) concurrency: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<ReleaseMetrics>,
    /// Set while the release is on trial (cleared when it is committed).
    pub trial: ArcSwapOption<TrialCounters>,
}

impl Deployed {
    /// The pre-instantiated component; instantiate it into a store from
    /// [`Runtime::new_store`].
    pub fn pre(&self) -> &ProxyPre<Host> {
        &self.pre
    }
}

/// A compiled, linked component ready to [`Runtime::deploy`]. Cheap to clone
/// (both fields are reference-counted).
#[derive(Clone)]
pub struct Prepared {
    pub pre: ProxyPre<Host>,
    /// `Component::serialize()` bytes, for the agent's local artifact cache
    /// (reload with [`Runtime::load`]).
    pub artifact: Arc<[u8]>,
}

/// Counters, see [`Runtime::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuntimeStatsSnapshot {
    /// Components compiled from wasm bytes.
    pub compiles: u64,
    /// Components loaded from a cached artifact.
    pub cache_loads: u64,
    /// HTTP requests received.
    pub requests: u64,
    /// 5xx responses, whether produced by the agent or by the guest.
    pub errors: u64,
    /// 404 responses for hosts naming no deployed app.
    pub not_found: u64,
}

#[derive(Default)]
struct Stats {
    compiles: AtomicU64,
    cache_loads: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    not_found: AtomicU64,
}

type Slot = Arc<ArcSwapOption<Deployed>>;

/// One agent's runtime: per-app slots, the instance semaphore and counters, on
/// a (possibly shared) [`RuntimeEngine`], with an optional [`CompileCache`].
pub struct Runtime {
    engine: Arc<RuntimeEngine>,
    compile_cache: Option<Arc<CompileCache>>,
    apps: RwLock<HashMap<String, Slot>>,
    instances: Arc<tokio::sync::Semaphore>,
    stats: Stats,
    metrics: Arc<Metrics>,
    /// Notified when a request finishes on a release on trial (the supervisor re-judges it).
    trial_events: Arc<tokio::sync::Notify>,
    /// Per app, the mark taken when what serves went into its slot (staged rollouts' health).
    swaps: std::sync::Mutex<HashMap<String, SwapMark>>,
}

impl Runtime {
    /// A runtime with an engine of its own (see [`RuntimeEngine::new`]) and no
    /// compile cache.
    pub fn new(cfg: &RuntimeConfig) -> Result<Arc<Runtime>, EngineError> {
        Ok(Runtime::with_engine(RuntimeEngine::new(cfg)?))
    }

    /// A runtime on a shared engine, without a compile cache. Cheap: no thread,
    /// no address-space reservation. Its limits (`max_instances` concurrent
    /// requests, memory, timeout) come from the engine's config but are counted
    /// per runtime.
    pub fn with_engine(engine: Arc<RuntimeEngine>) -> Arc<Runtime> {
        Runtime::with_shared(engine, None)
    }

    /// A runtime on a shared engine that looks compiled components up in
    /// `compile_cache` (when given) before building them, see
    /// [`Runtime::prepare_cached`].
    pub fn with_shared(
        engine: Arc<RuntimeEngine>,
        compile_cache: Option<Arc<CompileCache>>,
    ) -> Arc<Runtime> {
        let max_instances = engine.config().max_instances as usize;
        Arc::new(Runtime {
            engine,
            compile_cache,
            apps: RwLock::default(),
            instances: Arc::new(tokio::sync::Semaphore::new(max_instances)),
            stats: Stats::default(),
            metrics: Arc::default(),
            trial_events: Arc::default(),
            swaps: std::sync::Mutex::default(),
        })
    }

    /// Per-app and per-release metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Notified whenever a request finishes on a release that is on trial.
    pub fn trial_events(&self) -> &Arc<tokio::sync::Notify> {
        &self.trial_events
    }

    /// The engine this runtime runs on.
    pub fn engine(&self) -> &Arc<RuntimeEngine> {
        &self.engine
    }

    /// The compile cache this runtime shares, if any.
    pub fn compile_cache(&self) -> Option<&Arc<CompileCache>> {
        self.compile_cache.as_ref()
    }

    /// The configuration this runtime was built with (its engine's).
    pub fn config(&self) -> &RuntimeConfig {
        self.engine.config()
    }

    /// Whether the pooling allocator is in use (false after a fallback).
    pub fn is_pooling(&self) -> bool {
        self.engine.is_pooling()
    }

    /// Identifies which compiled artifacts this engine can load: artifacts from
    /// an engine with a different hash must be recompiled.
    pub fn compat_hash(&self) -> [u8; 32] {
        self.engine.compat_hash()
    }

    /// With a compile cache: the cached component for `digest` (the BLAKE3
    /// digest of source bytes the caller has verified), else `build()`'s result,
    /// cached on success; concurrent calls for one digest build once. Without
    /// one: `build()`. `build` must compile or load that content on this
    /// runtime. Blocking: call it from `spawn_blocking`.
    pub fn prepare_cached<E>(
        &self,
        digest: &[u8; 32],
        build: impl FnOnce() -> Result<Prepared, E>,
    ) -> Result<Prepared, E> {
        match &self.compile_cache {
            Some(cache) => cache.get_or_prepare(self, digest, build),
            None => build(),
        }
    }

    /// Makes `prepared` the active version of `meta.app` in one atomic swap, under the agent's
    /// default limits and not on trial, and returns the version it replaced. Requests already
    /// running on the old version finish on it.
    pub fn deploy(&self, meta: DeployedMeta, prepared: &Prepared) -> Option<Arc<Deployed>> {
        let limits = Limits::agent(self.config());
        self.deploy_with(meta, prepared, limits, None)
    }

    /// [`Runtime::deploy`] with the release's own limits and, when `trial` is given, its
    /// requests counted there.
    pub fn deploy_with(
        &self,
        meta: DeployedMeta,
        prepared: &Prepared,
        limits: Limits,
        trial: Option<Arc<TrialCounters>>,
    ) -> Option<Arc<Deployed>> {
        let deployed = self.deployed(meta, prepared, limits, trial);
        self.swap_in(deployed)
    }

    /// A deployable version, not yet in any slot (the smoke check runs requests on it).
    pub fn deployed(
        &self,
        meta: DeployedMeta,
        prepared: &Prepared,
        limits: Limits,
        trial: Option<Arc<TrialCounters>>,
    ) -> Arc<Deployed> {
        let metrics = self.metrics.release(&meta.app, &meta.version);
        Arc::new(Deployed {
            meta,
            pre: prepared.pre.clone(),
            limits,
            concurrency: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent as usize)),
            metrics,
            trial: ArcSwapOption::from(trial),
        })
    }

    /// Puts `deployed` in its app's slot in one atomic store; returns what it replaced. Marks
    /// the swap for the app's health ([`Runtime::health`]).
    pub fn swap_in(&self, deployed: Arc<Deployed>) -> Option<Arc<Deployed>> {
        let mut swaps = self.swaps.lock().unwrap_or_else(|p| p.into_inner());
        let app = deployed.meta.app.clone();
        let digest = fleetcast_protocol::Digest::from_hex(&deployed.meta.digest);
        let metrics = deployed.metrics.clone();
        let old = self.slot(&app).swap(Some(deployed));
        match digest {
            Some(digest) => {
                let mark = SwapMark::after(swaps.get(&app), digest, metrics);
                swaps.insert(app, mark);
            }
            None => {
                swaps.remove(&app);
            }
        }
        old
    }

    /// Per app that serves: its release's digest, what it served since it was swapped in here,
    /// and what the release it replaced had served until then (zeros when nothing served
    /// before it in this process). Requests shed or refused for their size are not counted.
    pub fn health(&self) -> Vec<AppHealth> {
        let swaps = self.swaps.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<AppHealth> = swaps
            .iter()
            .map(|(app, m)| AppHealth {
                app: app.clone(),
                digest: m.digest,
                new: m.since(),
                old: m.old.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.app.cmp(&b.app));
        out
    }

    /// Removes the app; returns what was deployed. In-flight requests finish.
    pub fn undeploy(&self, app: &str) -> Option<Arc<Deployed>> {
        self.swaps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
        let slot = self
            .apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned();
        slot.and_then(|slot| slot.swap(None))
    }

    fn slot(&self, app: &str) -> Slot {
        if let Some(slot) = self.apps.read().unwrap_or_else(|p| p.into_inner()).get(app) {
            return slot.clone();
        }
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        apps.entry(app.to_string()).or_default().clone()
    }

    /// The active version of `app`.
    pub fn active(&self, app: &str) -> Option<Arc<Deployed>> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        apps.get(app).and_then(|slot| slot.load_full())
    }

    /// Metadata of every deployed app, sorted by app name.
    pub fn apps(&self) -> Vec<DeployedMeta> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        let mut metas: Vec<DeployedMeta> = apps
            .values()
            .filter_map(|s| s.load_full())
            .map(|d| d.meta.clone())
            .collect();
        metas.sort_by(|a, b| a.app.cmp(&b.app));
        metas
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RuntimeStatsSnapshot {
        let s = &self.stats;
        RuntimeStatsSnapshot {
            compiles: s.compiles.load(Ordering::Relaxed),
            cache_loads: s.cache_loads.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            not_found: s.not_found.load(Ordering::Relaxed),
        }
    }

    /// Per-request guest timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config().request_timeout_ms)
    }

    /// One of the `max_instances` instance slots shared by all apps, if one is free now; the
    /// permit must live as long as the store.
    pub fn try_acquire_instance(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.instances.clone().try_acquire_owned().ok()
    }

    /// Number of guest instances currently alive (requests being executed).
    pub fn instances_in_use(&self) -> usize {
        (self.config().max_instances as usize).saturating_sub(self.instances.available_permits())
    }

    /// A fresh store for one request under `limits`: memory limit, fuel (when metered), and an
    /// epoch deadline of `timeout / epoch_tick` ticks. The guest yields to the async executor
    /// at every tick (so a busy guest cannot starve other requests) and traps when the ticks
    /// run out.
    pub fn new_store(&self, limits: &Limits) -> Store<Host> {
        let cfg = self.config();
        let max_memory = usize::try_from(limits.max_memory_bytes).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine.engine,
            Host::new(max_memory, self.engine.ticker.clone()),
        );
        store.limiter(|host| &mut host.limits);
        if self.engine.meters_fuel() {
            // An unmetered release on a metering engine still needs fuel to run at all.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        let mut ticks_left = (limits.request_timeout_ms / cfg.epoch_tick_ms).max(1);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks_left = ticks_left.saturating_sub(1);
            if ticks_left == 0 {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }

    pub(crate) fn count_request(&self) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_error(&self) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_not_found(&self) {
        self.stats.not_found.fetch_add(1, Ordering::Relaxed);
    }
}

/// What routing asks the runtime: the apps deployed now ([`crate::routes::Routes::resolve`]).
impl Deployments for Runtime {
    type App = Arc<Deployed>;

    fn deployed(&self, name: &str) -> Option<Arc<Deployed>> {
        self.active(name)
    }

    fn all_deployed(&self) -> Vec<(String, Arc<Deployed>)> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        apps.iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.load_full()?)))
            .collect()
    }
}
