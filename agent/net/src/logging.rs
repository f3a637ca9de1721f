//! Structured logs through `tracing`; `RUST_LOG` filters, `json` switches the format.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once (later calls are no-ops).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,wasmtime=warn,cranelift=warn,sled=warn,quinn=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
