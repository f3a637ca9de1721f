//! The process-shareable half of the runtime: [`RuntimeEngine`] (the wasmtime
//! `Engine` with its pooling allocator and epoch interruption, the `Linker`,
//! and the epoch ticker thread that drives request timeouts), and the opt-in
//! [`CompileCache`] that lets many agents in one process share compiled code.
//!
//! Invariants kept here: every `Engine` this module hands out has epoch
//! interruption enabled and is paired with a running [`EpochTicker`], so a guest
//! that spins forever is always interrupted at its deadline; and a
//! [`CompileCache`] only ever hands a [`Prepared`] to a [`Runtime`] built on the
//! same engine it was compiled with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::{Host, Prepared, Runtime, RuntimeConfig};

/// Core instances reserved per component slot (componentize-py components
/// instantiate a dozen or more core modules: libc, libpython, adapters, shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Linear memories reserved per component slot.
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables reserved per component slot.
const TABLES_PER_COMPONENT: u32 = 8;
/// Elements per table slot (CPython's indirect function table is large).
const TABLE_ELEMENTS: usize = 100_000;
/// Maximum size of one core instance's `VMContext`.
const CORE_INSTANCE_SIZE: usize = 2 << 20;

/// The cause inside an [`EngineError`]: a `wasmtime::Error` (which does not implement
/// `std::error::Error` itself) boxed as one, keeping its cause chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why [`RuntimeEngine::new`] (or [`Runtime::new`]) built nothing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A `[runtime]` setting is out of range; the text names it (`runtime.…`).
    #[error("{0}")]
    InvalidConfig(String),
    /// wasmtime refused the configuration (even without the pooling allocator).
    #[error("creating the wasmtime engine")]
    Engine(#[source] BoxError),
    /// WASI or wasi:http could not be added to the linker.
    #[error("adding WASI and wasi:http to the linker")]
    Linker(#[source] BoxError),
    /// The epoch ticker thread could not be started.
    #[error("spawning the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
}

/// The shareable part of a [`Runtime`]: one wasmtime `Engine` (and its pooling
/// allocator's address-space reservation), one `Linker` with WASI 0.2 and
/// `wasi:http`, and one epoch ticker thread. Create it once with
/// [`RuntimeEngine::new`] and give it to any number of
/// [`Runtime::with_engine`]s; the ticker stops (and its thread is joined) when
/// the last `Arc` to it — including those held by live request stores — drops.
///
/// With the pooling allocator, `max_instances` and `max_memory_mib` of its
/// config size the pool for *all* runtimes sharing this engine, while each
/// runtime still admits up to `max_instances` concurrent requests of its own:
/// size the engine for the whole process (or disable pooling).
pub struct RuntimeEngine {
    /// Process-unique, never reused: keys [`CompileCache`] entries.
    id: u64,
    pub(super) engine: Engine,
    pub(super) linker: Linker<Host>,
    cfg: RuntimeConfig,
    pooling: bool,
    pub(super) ticker: Arc<EpochTicker>,
}

impl RuntimeEngine {
    /// Creates the engine (pooling allocator unless disabled or unavailable),
    /// the linker, and starts the epoch ticker.
    pub fn new(cfg: &RuntimeConfig) -> Result<Arc<RuntimeEngine>, EngineError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (engine, pooling) = build_engine(cfg)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Linker(e.into()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Linker(e.into()))?;
        let ticker = EpochTicker::spawn(engine.clone(), Duration::from_millis(cfg.epoch_tick_ms))?;
        Ok(Arc::new(RuntimeEngine {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            engine,
            linker,
            cfg: cfg.clone(),
            pooling,
            ticker: Arc::new(ticker),
        }))
    }

    /// The configuration this engine was built with (and that every runtime
    /// sharing it applies).
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Whether the pooling allocator is in use (false after a fallback).
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// Whether stores on this engine consume fuel (`runtime.fuel` set).
    pub fn meters_fuel(&self) -> bool {
        self.cfg.fuel.is_some()
    }

    /// Identifies which compiled artifacts this engine can load: artifacts from
    /// an engine with a different hash must be recompiled.
    pub fn compat_hash(&self) -> [u8; 32] {
        struct Blake3Hasher(blake3::Hasher);
        impl std::hash::Hasher for Blake3Hasher {
            fn finish(&self) -> u64 {
                let hash = self.0.finalize();
                u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        *hasher.0.finalize().as_bytes()
    }
}

/// Counters of a [`CompileCache`], see [`CompileCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompileCacheStats {
    /// Lookups answered from the cache (including after waiting for another
    /// caller's build of the same digest).
    pub hits: u64,
    /// Lookups that ran their build closure (successful or not).
    pub misses: u64,
    /// Entries currently held (approximate while builds are in progress).
    pub entries: usize,
}

/// One cache slot; its mutex is held while the slot's value is being built,
/// so concurrent lookups of the same key wait for that build (single flight).
type CacheSlot = Arc<Mutex<Option<Prepared>>>;

/// Compiled components shared by the runtimes of one process, keyed by the
/// engine and the BLAKE3 digest of the component's *verified* source bytes.
///
/// An explicit opt-in object (there is no global instance): create one with
/// [`CompileCache::new`] and give it to the runtimes that should share it
/// ([`Runtime::with_shared`]). Concurrent lookups of the same key build once:
/// the first caller runs its build closure and the others block until it is
/// done, then get a clone of its result (a failed build is not cached; the next
/// waiter runs its own build). Entries are held until [`CompileCache::clear`]
/// or [`CompileCache::remove`]. Blocking: call it from `spawn_blocking`.
///
/// Trust: a digest is only a safe key for content the caller has verified
/// against it (e.g. against a signed release), since every runtime sharing the
/// cache gets whatever was built under that digest.
#[derive(Default)]
pub struct CompileCache {
    slots: Mutex<HashMap<(u64, [u8; 32]), CacheSlot>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    /// An empty cache.
    pub fn new() -> Arc<CompileCache> {
        Arc::default()
    }

    /// The prepared component for `digest` on `runtime`'s engine: a clone of
    /// the cached one, or else the result of `build` (which must compile or
    /// load the content whose BLAKE3 digest is `digest`, on `runtime`), cached
    /// on success. Blocks while another caller builds the same key.
    pub fn get_or_prepare<E>(
        &self,
        runtime: &Runtime,
        digest: &[u8; 32],
        build: impl FnOnce() -> Result<Prepared, E>,
    ) -> Result<Prepared, E> {
        let engine = runtime.engine();
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((engine.id, *digest))
            .or_default()
            .clone();
        // A build that panicked left `None` behind: the next caller rebuilds.
        let mut value = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prepared) = value.as_ref() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(prepared.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let prepared = build()?;
        if Engine::same(prepared.pre.engine(), &engine.engine) {
            *value = Some(prepared.clone());
        } else {
            tracing::warn!(
                "not caching a component prepared on another engine than the requesting runtime's"
            );
        }
        Ok(prepared)
    }

    /// Drops the entries for `digest` (on every engine).
    pub fn remove(&self, digest: &[u8; 32]) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, d), _| d != digest);
    }

    /// Drops every entry (counters are kept).
    pub fn clear(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Hit and miss counters, and the number of entries held.
    pub fn stats(&self) -> CompileCacheStats {
        let entries = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|slot| slot.try_lock().map(|v| v.is_some()).unwrap_or(true))
            .count();
        CompileCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
        }
    }
}

/// Builds the engine. Returns the engine and whether the pooling allocator is
/// in use (it is not when disabled in `cfg` or when the host refused the
/// virtual-memory reservation).
fn build_engine(cfg: &RuntimeConfig) -> Result<(Engine, bool), EngineError> {
    validate(cfg)?;
    if cfg.pooling {
        match Engine::new(&config(cfg, true)) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                max_instances = cfg.max_instances,
                max_memory_mib = cfg.max_memory_mib,
                "could not create the pooling allocator (too little virtual memory on this host?); \
                 falling back to on-demand instance allocation. Lower runtime.max_instances to use pooling"
            ),
        }
    }
    let engine = Engine::new(&config(cfg, false)).map_err(|e| EngineError::Engine(e.into()))?;
    Ok((engine, false))
}

/// Checks a `[runtime]` section; [`RuntimeEngine::new`] refuses what this refuses, and the
/// agent's config validation calls it before anything is bound.
pub(crate) fn validate(cfg: &RuntimeConfig) -> Result<(), EngineError> {
    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                return Err(EngineError::InvalidConfig(format!($($msg)+)));
            }
        };
    }
    ensure!(
        cfg.max_instances >= 1,
        "runtime.max_instances must be at least 1"
    );
    ensure!(
        (1..=4096).contains(&cfg.max_memory_mib),
        "runtime.max_memory_mib must be between 1 and 4096 (the wasm32 limit), got {}",
        cfg.max_memory_mib
    );
    ensure!(
        cfg.max_concurrent >= 1,
        "runtime.max_concurrent must be at least 1"
    );
    ensure!(
        cfg.fuel != Some(0),
        "runtime.fuel must be at least 1 (leave it out to not meter fuel)"
    );
    ensure!(
        cfg.epoch_tick_ms >= 1,
        "runtime.epoch_tick_ms must be at least 1"
    );
    ensure!(
        cfg.request_timeout_ms >= cfg.epoch_tick_ms,
        "runtime.request_timeout_ms ({}) must be at least runtime.epoch_tick_ms ({})",
        cfg.request_timeout_ms,
        cfg.epoch_tick_ms
    );
    Ok(())
}

fn config(cfg: &RuntimeConfig, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(cfg.fuel.is_some());
    if pooling {
        let n = cfg.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
            .total_stacks(n)
            .table_elements(TABLE_ELEMENTS)
            .max_core_instance_size(CORE_INSTANCE_SIZE)
            .max_memory_size(usize::try_from(cfg.max_memory_mib << 20).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A thread that increments the engine's epoch every tick. Dropping it stops
/// and joins the thread (promptly: the thread waits on a channel, not a sleep).
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn spawn(engine: Engine, tick: Duration) -> Result<Self, EngineError> {
        let (stop, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("fleetcast-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(EngineError::Ticker)?;
        Ok(Self {
            stop: Some(stop),
            handle: Some(handle),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        // Dropping the sender disconnects the channel, which ends the loop.
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
