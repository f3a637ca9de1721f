//! How the rest of the agent talks to the supervisor: its settings, its commands, its handle.

use fleetcast_protocol::AppName;
use fleetcast_protocol::node::{Activation, Prefetch};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::trial::TrialConfig;
use crate::supervisor::error::{RollbackError, Stopped};
use crate::supervisor::view::{AppView, RollbackDone};

/// `[activation]` section of the agent configuration: what only the supervisor reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivationConfig {
    /// Compilations run at once, each on a blocking thread (at least 1).
    pub compile_concurrency: usize,
    /// Releases per app kept compiled in the cache, so a rollback among them never compiles
    /// (at least 1: the release in force).
    pub cached_releases: usize,
}

impl Default for ActivationConfig {
    fn default() -> Self {
        ActivationConfig {
            compile_concurrency: 1,
            cached_releases: 5,
        }
    }
}

/// Settings of the supervisor, built by the caller from the agent's configuration.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The trial defaults and thresholds, and the smoke check's deadline.
    pub trial: TrialConfig,
    /// Compiles at once (at least 1).
    pub compile_concurrency: usize,
    /// Compiled releases kept per app (at least 1).
    pub cached_releases: usize,
}

/// Work for the supervisor.
#[derive(Debug)]
pub enum Command {
    /// Run the pipeline for a verified head (from the protocol node).
    Activate(Box<Activation>),
    /// Compile and store the release of a head whose wave leaves this node out, without
    /// swapping it in (from the protocol node); answered with `Input::Prefetched`.
    Prefetch(Box<Prefetch>),
    /// A newer head waits behind the activation (or prefetch) of `seq`.
    Cancel { app: AppName, seq: u64 },
    /// An operator's local rollback: serve a cached release of `app` (`to`: a version; default
    /// the newest cached release that is neither serving nor the last one that failed here).
    /// Both are the operator's words, checked by the supervisor.
    Rollback {
        app: String,
        to: Option<String>,
        reply: oneshot::Sender<Result<RollbackDone, RollbackError>>,
    },
    /// The per-app view for `/status`.
    Status {
        reply: oneshot::Sender<Vec<AppView>>,
    },
}

/// Handle to the supervisor actor. Cheap to clone.
#[derive(Clone)]
pub struct SupervisorHandle {
    pub(in crate::supervisor) tx: mpsc::UnboundedSender<Command>,
}

impl SupervisorHandle {
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
    }

    /// A local rollback; `Err` says why it was refused.
    pub async fn rollback(
        &self,
        app: &str,
        to: Option<String>,
    ) -> Result<RollbackDone, RollbackError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Rollback {
            app: app.to_string(),
            to,
            reply,
        });
        rx.await.map_err(|_| Stopped)?
    }

    pub async fn status(&self) -> Result<Vec<AppView>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply });
        rx.await.map_err(|_| Stopped)
    }
}
