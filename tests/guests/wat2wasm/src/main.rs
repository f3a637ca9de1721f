//! `wat2wasm <in.wat> <out.wasm>`: converts a WebAssembly text file (core module or
//! component) to its binary encoding with the `wat` crate, for `tests/guests/build.sh`.
//!
//! The output is deterministic (the same text always gives the same bytes). The tool
//! prints what it wrote: `component` or `core module`, judged by the header's
//! version/layer bytes (`0d 00 01 00` for a component, `01 00 00 00` for a core module).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = args.as_slice() else {
        eprintln!("usage: wat2wasm <in.wat> <out.wasm>");
        return ExitCode::from(2);
    };
    match convert(input, output) {
        Ok(kind) => {
            println!("wat2wasm: {input} -> {output} ({kind})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wat2wasm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn convert(input: &str, output: &str) -> Result<&'static str, String> {
    let bytes = wat::parse_file(input).map_err(|e| format!("{input}: {e}"))?;
    let kind = match bytes.get(4..8) {
        Some([0x0d, 0x00, 0x01, 0x00]) => "component",
        Some([0x01, 0x00, 0x00, 0x00]) => "core module",
        _ => {
            return Err(format!(
                "{input}: encoded output has an unexpected wasm header"
            ));
        }
    };
    std::fs::write(output, &bytes).map_err(|e| format!("writing {output}: {e}"))?;
    Ok(kind)
}
