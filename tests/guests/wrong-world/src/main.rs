//! A plain WASI command: a valid component whose world is `wasi:cli/command`
//! (it exports `wasi:cli/run`), so a wasi:http host must reject it.

fn main() {
    println!("hi");
}
