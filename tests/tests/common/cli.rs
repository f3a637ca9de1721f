//! The `fleetcast` binary as an operator runs it: built by cargo with the workspace's features
//! (`cargo build --workspace --bin fleetcast`) the first time a test needs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Builds (once per test process) and returns the `fleetcast` binary beside this test's
/// target directory.
pub fn cli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // <target>/<profile>/deps/cli-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test binary lives in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("a target directory");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the workspace");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--workspace", "--bin", "fleetcast", "--target-dir"])
            .arg(target_dir)
            .current_dir(workspace);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build --bin fleetcast failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("fleetcast")
    })
    .clone()
}

/// One run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Every stdout line as JSON; each must parse and name its event.
    pub fn json(&self) -> Vec<Value> {
        let lines: Vec<Value> = self
            .stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{self:#?}"))
            })
            .collect();
        assert!(!lines.is_empty(), "no JSON: {self:#?}");
        for l in &lines {
            assert!(l["event"].is_string(), "no event field: {l}");
        }
        lines
    }

    /// The event of each line, in order.
    pub fn events(&self) -> Vec<String> {
        self.json()
            .iter()
            .map(|l| l["event"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn last(&self) -> Value {
        self.json().pop().unwrap()
    }

    /// Asserts the exit code, showing everything the run printed if it differs.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "{self:#?}");
        self
    }
}

/// Runs `fleetcast args…` and waits for it to exit (at most two minutes).
pub async fn fleetcast(args: &[&str]) -> Run {
    let bin = tokio::task::spawn_blocking(cli_bin).await.unwrap();
    let t = Instant::now();
    let child = tokio::process::Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("fleetcast starts");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("fleetcast {args:?} did not exit within 120 s"))
        .unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t.elapsed(),
    }
}

/// `fleetcast release FILE --app hello --version V --key <fleet key> --peer <agent 0>`, plus
/// `more`: a release as an operator runs it against a test fleet.
pub async fn release(fleet: &super::Fleet, file: &str, version: &str, more: &[&str]) -> Run {
    let (file, key, peer) = (
        super::guest(file).display().to_string(),
        fleet.key().display().to_string(),
        fleet.agent(0).quic_addr().to_string(),
    );
    let mut args = vec![
        "release",
        &file,
        "--app",
        "hello",
        "--version",
        version,
        "--key",
        &key,
        "--peer",
        &peer,
    ];
    args.extend_from_slice(more);
    fleetcast(&args).await
}
