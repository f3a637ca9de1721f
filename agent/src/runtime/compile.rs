//! Turning bytes into a deployable [`Prepared`]: [`Runtime::compile`] takes only wasm
//! component bytes (it refuses non-wasm, core modules, precompiled artifacts, and components
//! that do not export `wasi:http/incoming-handler` or import what the agent does not provide);
//! the `unsafe` [`Runtime::load`] takes only this agent's own cached artifacts.
//!
//! Invariant kept here: **compiled code is never accepted from the network**: `compile` checks
//! the header before spending time and rejects precompiled artifacts.

use std::sync::atomic::Ordering;

use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::{Host, INCOMING_HANDLER, Prepared, Runtime};

/// Why a component was refused (by [`Runtime::compile`]) or a cached artifact was not loaded
/// (by [`Runtime::load`]). Nothing was deployed or cached.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
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

impl Runtime {
    /// Validates, compiles and links a component, and serializes the compiled
    /// code. CPU-heavy and blocking: call it from `spawn_blocking`.
    pub fn compile(&self, wasm: &[u8]) -> Result<Prepared, CompileError> {
        check_header(wasm)?;
        let component = Component::from_binary(&self.engine.engine, wasm).map_err(|e| {
            // Translation/validation errors carry this context (wasmtime's compile.rs).
            if e.to_string() == "failed to parse WebAssembly module" {
                CompileError::Invalid(format!("{e:#}"))
            } else {
                CompileError::Compile(format!("{e:#}"))
            }
        })?;
        let pre = self.link(&component)?;
        let artifact = component.serialize().map_err(|e| {
            CompileError::Compile(format!("serializing the compiled component: {e:#}"))
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
    /// rejected with [`CompileError::Load`] rather than loaded.
    pub unsafe fn load(&self, artifact: &[u8]) -> Result<Prepared, CompileError> {
        match Engine::detect_precompiled(artifact) {
            Some(Precompiled::Component) => {}
            Some(Precompiled::Module) => {
                return Err(CompileError::Load(
                    "the artifact is a precompiled core module, not a component".into(),
                ));
            }
            None => {
                return Err(CompileError::Load(
                    "the bytes are not a wasmtime precompiled artifact".into(),
                ));
            }
        }
        // SAFETY: forwarded to the caller, see `# Safety`.
        let component = unsafe { Component::deserialize(&self.engine.engine, artifact) }
            .map_err(|e| CompileError::Load(format!("{e:#}")))?;
        let pre = self.link(&component)?;
        self.stats.cache_loads.fetch_add(1, Ordering::Relaxed);
        Ok(Prepared {
            pre,
            artifact: artifact.into(),
        })
    }

    pub(super) fn link(&self, component: &Component) -> Result<ProxyPre<Host>, CompileError> {
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
            return Err(CompileError::WrongWorld(format!(
                "it does not export {INCOMING_HANDLER} (it exports: {list})"
            )));
        }
        let instance_pre = self
            .engine
            .linker
            .instantiate_pre(component)
            .map_err(|e| CompileError::MissingImports(format!("{e:#}")))?;
        ProxyPre::new(instance_pre).map_err(|e| {
            CompileError::WrongWorld(format!(
                "its {INCOMING_HANDLER} export does not match: {e:#}"
            ))
        })
    }
}

/// Classifies the input by its 8-byte header before spending time compiling.
fn check_header(wasm: &[u8]) -> Result<(), CompileError> {
    if Engine::detect_precompiled(wasm).is_some() {
        return Err(CompileError::Precompiled);
    }
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(CompileError::NotWasm);
    }
    match [wasm[4], wasm[5], wasm[6], wasm[7]] {
        // version 1, layer 0: a core module
        [1, 0, 0, 0] => Err(CompileError::CoreModuleNotComponent),
        // layer 1: a component (any encoding version; the parser judges it)
        [_, _, 1, 0] => Ok(()),
        [a, b, c, d] => Err(CompileError::Invalid(format!(
            "unknown WebAssembly header version/layer bytes {a:#04x} {b:#04x} {c:#04x} {d:#04x}"
        ))),
    }
}
