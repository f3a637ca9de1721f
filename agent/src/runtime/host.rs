//! What a guest's store holds for one request: its WASI and wasi:http contexts (no preopened
//! directories, no environment, no sockets, stdin closed, stdout and stderr to the agent's
//! stderr), the resource table, the memory limiter (which remembers a refused growth, so an
//! out-of-memory trap is reported as such), and a handle on the epoch ticker that keeps it
//! ticking while the store can still run guest code.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::engine::EpochTicker;

/// Per-request store data.
pub struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(super) limits: MemoryLimiter,
    /// Keeps the epoch ticker running while this store can still run guest
    /// code, even if the `Runtime` itself is dropped meanwhile: without ticks
    /// a spinning guest would never reach its deadline.
    _ticker: Arc<EpochTicker>,
}

impl Host {
    pub(super) fn new(max_memory_bytes: usize, ticker: Arc<EpochTicker>) -> Self {
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
pub(super) struct MemoryLimiter {
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
