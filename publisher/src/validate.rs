//! Checks a file is a wasi:http component before anything is signed.

use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

/// The export a component needs to be served by agents.
pub const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";

/// `Ok` if `bytes` is a valid component exporting `wasi:http/incoming-handler@0.2.x`;
/// otherwise a sentence that says what is wrong and what to do.
pub fn check_component(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("it is not a WebAssembly binary (no \\0asm header): build your app for wasm32-wasip2 and pass the .wasm file".into());
    }
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("it does not parse as WebAssembly: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err("it is a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new` and the WASI adapter)".into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(s) if depth == 1 => {
                for e in s {
                    let e = e.map_err(|e| format!("its export section is damaged: {e}"))?;
                    exports.push(e.name.0.to_string());
                }
            }
            _ => {}
        }
    }
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| format!("it is not a valid component: {e}"))?;
    if !exports.iter().any(|e| e.starts_with(HTTP_EXPORT)) {
        return Err(format!(
            "it does not export {HTTP_EXPORT}.x (it exports: {}): agents serve wasi:http/proxy components only",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../tests/guests/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn hello_passes_and_the_rest_fail_with_reasons() {
        check_component(&guest("hello-v1.wasm")).unwrap();
        let e = check_component(&guest("garbage.bin")).unwrap_err();
        assert!(e.contains("not a WebAssembly binary"), "{e}");
        let e = check_component(&guest("not-a-component.wasm")).unwrap_err();
        assert!(e.contains("core WebAssembly module"), "{e}");
        let e = check_component(&guest("wrong-world.wasm")).unwrap_err();
        assert!(
            e.contains("does not export wasi:http/incoming-handler"),
            "{e}"
        );
        let mut cut = guest("hello-v1.wasm");
        cut.truncate(cut.len() / 2);
        assert!(check_component(&cut).is_err());
    }
}
