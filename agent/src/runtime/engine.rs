//! Engine construction for [`super::Runtime`]: the wasmtime `Config` (pooling
//! allocator sized from [`RuntimeConfig`], epoch interruption) and the epoch
//! ticker thread that drives request timeouts.
//!
//! Invariant kept here: every `Engine` this module hands out has epoch
//! interruption enabled and is paired with a running [`EpochTicker`], so a guest
//! that spins forever is always interrupted at its deadline.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::RuntimeConfig;

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

/// Converts a `wasmtime::Error` (which does not implement `std::error::Error`)
/// into an `anyhow::Error`, keeping the cause chain.
pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into())
}

/// Builds the engine. Returns the engine and whether the pooling allocator is
/// in use (it is not when disabled in `cfg` or when the host refused the
/// virtual-memory reservation).
pub(crate) fn build_engine(cfg: &RuntimeConfig) -> anyhow::Result<(Engine, bool)> {
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
    let engine = Engine::new(&config(cfg, false))
        .map_err(to_anyhow)
        .context("creating the wasmtime engine")?;
    Ok((engine, false))
}

fn validate(cfg: &RuntimeConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        cfg.max_instances >= 1,
        "runtime.max_instances must be at least 1"
    );
    anyhow::ensure!(
        (1..=4096).contains(&cfg.max_memory_mib),
        "runtime.max_memory_mib must be between 1 and 4096 (the wasm32 limit), got {}",
        cfg.max_memory_mib
    );
    anyhow::ensure!(
        cfg.epoch_tick_ms >= 1,
        "runtime.epoch_tick_ms must be at least 1"
    );
    anyhow::ensure!(
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
    pub(crate) fn spawn(engine: Engine, tick: Duration) -> anyhow::Result<Self> {
        let (stop, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("fleetcast-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .context("spawning the epoch ticker thread")?;
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
