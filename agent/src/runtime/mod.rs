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
//! the HTTP front lives in [`crate::http`].
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

mod engine;
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
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Precompiled, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use self::engine::EpochTicker;
pub use self::engine::{CompileCache, CompileCacheStats, RuntimeEngine};
pub use self::limits::Limits;
use self::metrics::{Metrics, ReleaseMetrics};
use self::trial::TrialCounters;

/// The export every deployable component must provide.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// `[runtime]` section of the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Use wasmtime's pooling allocator (falls back to on-demand allocation,
    /// with a warning, when the host cannot reserve the virtual memory).
    pub pooling: bool,
    /// Maximum number of guest instances alive at once over all apps (= concurrent requests
    /// being executed; the pooling allocator is sized for it; beyond it requests get 503).
    pub max_instances: u32,
    /// Linear-memory limit per instance, in MiB (1..=4096): every app's default and maximum.
    pub max_memory_mib: u64,
    /// A request whose guest has not produced a response in this time gets a 500: every
    /// app's default and maximum.
    pub request_timeout_ms: u64,
    /// Epoch tick period; the granularity of timeouts and of guest yields.
    pub epoch_tick_ms: u64,
    /// Fuel per request (every app's default and maximum). Unset: fuel is not metered (metering
    /// costs some speed), and a release's `fuel` is not enforced.
    pub fuel: Option<u64>,
    /// Requests one app executes at once (default and maximum); more get 503 at once.
    pub max_concurrent: u32,
    /// Largest request body, bytes (default and maximum); larger gets 413.
    pub max_body_bytes: u64,
    /// Releases per app kept compiled in the cache, so a rollback among them never compiles.
    pub cached_releases: usize,
    /// Compilations run at once (each on a blocking thread).
    pub compile_concurrency: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 128,
            max_memory_mib: 128,
            request_timeout_ms: 30_000,
            epoch_tick_ms: 10,
            fuel: None,
            max_concurrent: 64,
            max_body_bytes: 16 << 20,
            cached_releases: 5,
            compile_concurrency: 1,
        }
    }
}

/// Per-request store data.
pub struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: MemoryLimiter,
    /// Keeps the epoch ticker running while this store can still run guest
    /// code, even if the `Runtime` itself is dropped meanwhile: without ticks
    /// a spinning guest would never reach its deadline.
    _ticker: Arc<EpochTicker>,
}

impl Host {
    fn new(max_memory_bytes: usize, ticker: Arc<EpochTicker>) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(std::io::stderr())
            .stderr(std::io::stderr())
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: MemoryLimiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(max_memory_bytes)
                    .build(),
                max: max_memory_bytes,
                denied: None,
            },
            _ticker: ticker,
        }
    }

    /// The size a memory growth was refused at, when the guest hit its memory limit.
    pub fn memory_denied(&self) -> Option<usize> {
        self.limits.denied
    }
}

/// [`StoreLimits`] that also remembers a refused memory growth, so a guest that traps after
/// running out of memory is reported as such.
struct MemoryLimiter {
    inner: StoreLimits,
    max: usize,
    denied: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.denied = Some(desired);
        }
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

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

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "input is not WebAssembly (it does not start with the \\0asm magic bytes); \
         publish a wasi:http component built for wasm32-wasip2"
    )]
    NotWasm,
    #[error(
        "input is a core WebAssembly module, not a component; build for wasm32-wasip2 \
         (or wrap the module with `wasm-tools component new`) so that it exports {INCOMING_HANDLER}"
    )]
    CoreModuleNotComponent,
    #[error(
        "input is a precompiled wasmtime artifact; compiled code is never accepted from the \
         network, publish the original .wasm component instead"
    )]
    Precompiled,
    #[error("invalid WebAssembly component: {0}; rebuild the component")]
    Invalid(String),
    #[error(
        "the component imports something this agent does not provide: {0}; the agent provides \
         WASI 0.2 (cli, clocks, filesystem, random, sockets, io) and wasi:http 0.2"
    )]
    MissingImports(String),
    #[error(
        "the component is not a wasi:http/proxy component: {0}; build it against the \
         wasi:http/proxy world so that it exports {INCOMING_HANDLER}"
    )]
    WrongWorld(String),
    #[error("compiling the component failed: {0}")]
    Compile(String),
    #[error(
        "loading a cached compiled artifact failed: {0}; delete the cache entry and recompile \
         from the original .wasm"
    )]
    Load(String),
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
}

impl Runtime {
    /// A runtime with an engine of its own (see [`RuntimeEngine::new`]) and no
    /// compile cache.
    pub fn new(cfg: &RuntimeConfig) -> anyhow::Result<Arc<Runtime>> {
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

    /// Validates, compiles and links a component, and serializes the compiled
    /// code. CPU-heavy and blocking: call it from `spawn_blocking`.
    pub fn compile(&self, wasm: &[u8]) -> Result<Prepared, RuntimeError> {
        check_header(wasm)?;
        let component = Component::from_binary(&self.engine.engine, wasm).map_err(|e| {
            // Translation/validation errors carry this context (wasmtime's compile.rs).
            if e.to_string() == "failed to parse WebAssembly module" {
                RuntimeError::Invalid(format!("{e:#}"))
            } else {
                RuntimeError::Compile(format!("{e:#}"))
            }
        })?;
        let pre = self.link(&component)?;
        let artifact = component.serialize().map_err(|e| {
            RuntimeError::Compile(format!("serializing the compiled component: {e:#}"))
        })?;
        self.stats.compiles.fetch_add(1, Ordering::Relaxed);
        Ok(Prepared {
            pre,
            artifact: artifact.into(),
        })
    }

    /// Loads an artifact produced by [`Runtime::compile`] (`Prepared::artifact`).
    ///
    /// # Safety
    ///
    /// `artifact` is native machine code that wasmtime maps executable after
    /// only a header check; arbitrary bytes here mean arbitrary code execution.
    /// The caller must guarantee that `artifact` is exactly what
    /// `Prepared::artifact` contained when this agent compiled it, read back
    /// from the agent's own local cache, and verified against a checksum
    /// recorded at write time. Never pass bytes received from the network.
    /// (It is an `unsafe fn`, rather than a safe fn with a doc comment, because
    /// that precondition is a memory-safety one the compiler cannot check.)
    /// Artifacts from an engine with a different [`Runtime::compat_hash`] are
    /// rejected with [`RuntimeError::Load`] rather than loaded.
    pub unsafe fn load(&self, artifact: &[u8]) -> Result<Prepared, RuntimeError> {
        match Engine::detect_precompiled(artifact) {
            Some(Precompiled::Component) => {}
            Some(Precompiled::Module) => {
                return Err(RuntimeError::Load(
                    "the artifact is a precompiled core module, not a component".into(),
                ));
            }
            None => {
                return Err(RuntimeError::Load(
                    "the bytes are not a wasmtime precompiled artifact".into(),
                ));
            }
        }
        // SAFETY: forwarded to the caller, see `# Safety`.
        let component = unsafe { Component::deserialize(&self.engine.engine, artifact) }
            .map_err(|e| RuntimeError::Load(format!("{e:#}")))?;
        let pre = self.link(&component)?;
        self.stats.cache_loads.fetch_add(1, Ordering::Relaxed);
        Ok(Prepared {
            pre,
            artifact: artifact.into(),
        })
    }

    fn link(&self, component: &Component) -> Result<ProxyPre<Host>, RuntimeError> {
        let ty = component.component_type();
        let exports: Vec<&str> = ty
            .exports(&self.engine.engine)
            .map(|(name, _)| name)
            .collect();
        let exports_handler = exports.iter().any(|name| {
            *name == INCOMING_HANDLER || name.starts_with(&format!("{INCOMING_HANDLER}@"))
        });
        if !exports_handler {
            let list = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            return Err(RuntimeError::WrongWorld(format!(
                "it does not export {INCOMING_HANDLER} (it exports: {list})"
            )));
        }
        let instance_pre = self
            .engine
            .linker
            .instantiate_pre(component)
            .map_err(|e| RuntimeError::MissingImports(format!("{e:#}")))?;
        ProxyPre::new(instance_pre).map_err(|e| {
            RuntimeError::WrongWorld(format!(
                "its {INCOMING_HANDLER} export does not match: {e:#}"
            ))
        })
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

    /// Puts `deployed` in its app's slot in one atomic store; returns what it replaced.
    pub fn swap_in(&self, deployed: Arc<Deployed>) -> Option<Arc<Deployed>> {
        self.slot(&deployed.meta.app).swap(Some(deployed))
    }

    /// Removes the app; returns what was deployed. In-flight requests finish.
    pub fn undeploy(&self, app: &str) -> Option<Arc<Deployed>> {
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

    /// Routes a request: the app named `app` if deployed; otherwise, if exactly
    /// one app is deployed, that one; otherwise the sorted deployed app names.
    pub fn route(&self, app: Option<&str>) -> Result<Arc<Deployed>, Vec<String>> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = app.and_then(|a| apps.get(a)).and_then(|s| s.load_full()) {
            return Ok(d);
        }
        let mut active: Vec<Arc<Deployed>> = apps.values().filter_map(|s| s.load_full()).collect();
        if active.len() == 1 {
            return Ok(active.remove(0));
        }
        let mut names: Vec<String> = active.into_iter().map(|d| d.meta.app.clone()).collect();
        names.sort();
        Err(names)
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
        let max_memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let mut store = Store::new(
            &self.engine.engine,
            Host::new(max_memory, self.engine.ticker.clone()),
        );
        store.limiter(|host| &mut host.limits);
        if self.engine.meters_fuel() {
            // An unmetered release on a metering engine still needs fuel to run at all.
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        let mut ticks_left = (limits.timeout_ms / cfg.epoch_tick_ms).max(1);
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

/// Classifies the input by its 8-byte header before spending time compiling.
fn check_header(wasm: &[u8]) -> Result<(), RuntimeError> {
    if Engine::detect_precompiled(wasm).is_some() {
        return Err(RuntimeError::Precompiled);
    }
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(RuntimeError::NotWasm);
    }
    match [wasm[4], wasm[5], wasm[6], wasm[7]] {
        // version 1, layer 0: a core module
        [1, 0, 0, 0] => Err(RuntimeError::CoreModuleNotComponent),
        // layer 1: a component (any encoding version; the parser judges it)
        [_, _, 1, 0] => Ok(()),
        [a, b, c, d] => Err(RuntimeError::Invalid(format!(
            "unknown WebAssembly header version/layer bytes {a:#04x} {b:#04x} {c:#04x} {d:#04x}"
        ))),
    }
}
