//! The `[runtime]` section of the agent configuration: the engine's settings and every app's
//! default (and maximum) limits. [`RuntimeEngine::new`](super::RuntimeEngine::new) checks it.

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
        }
    }
}

impl RuntimeConfig {
    /// Checks every value (the messages start with the key, `runtime.…`).
    pub fn validate(&self) -> Result<(), super::EngineError> {
        super::engine::validate(self)
    }
}
