//! The README's shell blocks, run as written: the walkthrough (under "## Walkthrough") and
//! the fleet with a root (under "### Try it: a fleet with a root"), each in order, with real
//! agent processes on loopback. Only the ports are moved (to free ones, so
//! the test can run beside anything) and `$PWD/target/debug` points at this build's target
//! directory (which `CARGO_TARGET_DIR` may move). If a step fails the test prints the output
//! so far and the agents' logs.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The whole walkthrough includes `cargo build --workspace` (a no-op or a relink here).
const DEADLINE: Duration = Duration::from_secs(900);

/// The first fenced `sh` block after the heading `heading` (e.g. `## Walkthrough`).
fn block(readme: &str, heading: &str) -> String {
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has a {heading} section"))
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the walkthrough has a ```sh block")
        .1;
    block
        .split_once("\n```")
        .expect("the block is closed")
        .0
        .to_string()
}

/// A port nobody listens on now, for TCP (`udp: false`) or QUIC.
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Kills the script's whole process group (the agents it started in the background) on drop.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

/// `target/debug` of this build: the test runs from `target/debug/deps`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    run_block(
        "## Walkthrough",
        [7400, 8400, 9400],
        3,
        &[
            // Step 3 and 5: what the agents serve.
            "hello from fleetcast 1.0.0",
            // Step 4: the refusal, with its exit code.
            "refused: exit 2",
            // Step 6: the same bytes under a new version.
            "same bytes as",
            // Step 8: the serving version as a metric.
            "fleetcast_app_serving_info{",
        ],
    );
}

#[test]
fn the_readme_keys_and_trust_block_runs_as_written() {
    run_block(
        "### Try it: a fleet with a root",
        [7410, 8410, 9410],
        2,
        &[
            // Step 3: a 2-of-3 release, then a head signed by two holders apart.
            "hello from fleetcast 1.0.0",
            "hello from fleetcast 2.0.0",
            // Step 4: the rotated-out key's head is refused, then the new keys' goes through.
            "refused: exit",
            // Step 5: the revoked node is cut off: the release after it does not reach it.
            "edge2 still serves: hello from fleetcast 1.0.0",
            "revoked nodes:",
        ],
    );
}

/// Runs the `sh` block under `heading` from the repository root, with the ports `base + 1 ..=
/// base + count` of each base moved to free ones (the first base is QUIC), and checks that the
/// output holds each of `expected`.
fn run_block(heading: &str, bases: [u16; 3], count: u16, expected: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut script = block(&readme, heading);
    for base in bases {
        for i in 1..=count {
            let port = base + i;
            let free = free_port(base == bases[0]);
            script = script.replace(&format!(":{port}"), &format!(":{free}"));
        }
    }
    let bins = bin_dir();
    script = script.replace("$PWD/target/debug", &bins.display().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("walkthrough.sh");
    std::fs::write(&path, format!("set -eo pipefail\nset -x\n{script}\n")).unwrap();

    let out_path = tmp.path().join("output.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .current_dir(root)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("bash runs");
    let _group = Group(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    // `None`: still running at the deadline (the group is killed on the way out).
    let status = rx
        .recv_timeout(DEADLINE)
        .ok()
        .map(|r| r.expect("wait for bash"));
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let logs = agent_logs(tmp.path());
    // With --nocapture: what a reader of the README would see.
    println!("{output}");
    assert!(
        status.is_some_and(|s| s.success()),
        "{heading} failed ({status:?}):\n{output}\n{logs}"
    );
    for e in expected {
        assert!(
            output.contains(e),
            "the output of {heading} lacks {e:?}:\n{output}\n{logs}"
        );
    }
}

/// Every `edge*.log` under `dir`, for a failure message.
fn agent_logs(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(inner) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for f in inner.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("edge") && name.ends_with(".log") {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                out.push_str(&format!("--- {name}\n{text}\n"));
            }
        }
    }
    out
}
