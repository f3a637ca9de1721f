//! The errors at the supervisor's boundary. Each says what it did to the serving state.

use crate::store::StoreError;

/// The supervisor has stopped (the agent is shutting down); nothing was done.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct Stopped;

/// Why an operator's local rollback was refused. Apart from [`RollbackError::NotPersisted`],
/// nothing changed: the release that served keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("no app named {app:?} on this agent (apps: {known})")]
    NoSuchApp { app: String, known: String },
    #[error("version {version} of {app} is not in this agent's cache (cached: {cached})")]
    NotCached {
        version: String,
        app: String,
        cached: String,
    },
    #[error(
        "no cached release of {app} other than the one serving and the one that failed \
         (cached: {cached}); name one with --to"
    )]
    NothingElseCached { app: String, cached: String },
    #[error(
        "release {version} of {app} is not compiled in this agent's cache; a local rollback \
         never compiles: publish a rollback with `fleetcast rollback`"
    )]
    NotCompiled { version: String, app: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("loading the release failed: {0}")]
    Load(String),
    /// The release serves (and the node was not told): only its durability failed.
    #[error("the rollback serves but could not be persisted: {0}")]
    NotPersisted(StoreError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
}
