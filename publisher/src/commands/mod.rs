//! One module per `fleetcast` command.

pub mod demo;
pub mod history;
pub mod keygen;
pub mod publish;
pub mod release;
pub mod rollback;
pub mod status;
