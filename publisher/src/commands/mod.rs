//! One module per `fleetcast` command.

pub mod demo;
pub mod drive;
pub mod fleet;
pub mod history;
pub mod keygen;
pub mod node;
pub mod publish;
pub mod push;
pub mod release;
pub mod rollback;
pub mod rollout;
pub mod sign;
pub mod status;
