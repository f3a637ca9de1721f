//! Small types every part of the supervisor shares: the time of an input, what the node is
//! told, failure records, the failpoints of the crash tests.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fleetcast_protocol::Release;
use fleetcast_protocol::node::Input;

use crate::store::{FailureRecord, Stage};
use fleetcast_net::ConnId;

/// What the protocol node is told.
pub type NodeInput = Input<ConnId>;

/// The time of an input: monotonic for trials, wall clock for failure records.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

impl Now {
    /// The clocks, read once (by the actor, never by the lifecycle).
    pub fn read() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}

/// The wall clock, unix milliseconds (0 before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A failure record of `release` (seq `seq`) at `stage`.
pub fn failure(
    now: Now,
    seq: u64,
    release: &Release,
    stage: Stage,
    reason: String,
) -> FailureRecord {
    FailureRecord {
        seq,
        version: release.version.to_string(),
        digest: release.digest.to_hex(),
        stage,
        reason,
        at_ms: now.unix_ms,
    }
}

/// The steps a crash test can abort the agent after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    Compile,
    Cache,
    Persist,
    Smoke,
    Swap,
    Trial,
    Commit,
}

impl Failpoint {
    fn name(self) -> &'static str {
        match self {
            Failpoint::Compile => "compile",
            Failpoint::Cache => "cache",
            Failpoint::Persist => "persist",
            Failpoint::Smoke => "smoke",
            Failpoint::Swap => "swap",
            Failpoint::Trial => "trial",
            Failpoint::Commit => "commit",
        }
    }

    /// Aborts the process when `FLEETCAST_FAILPOINT` names this step (crash tests).
    pub fn hit(self) {
        static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let point = POINT.get_or_init(|| std::env::var("FLEETCAST_FAILPOINT").ok());
        let step = self.name();
        if point.as_deref() == Some(step) {
            eprintln!("fleetcast-agent: failpoint {step:?} reached, aborting");
            std::process::abort();
        }
    }
}
