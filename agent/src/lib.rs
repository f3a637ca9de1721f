//! fleetcast-agent: the edge daemon as a library, so tests can run agents in-process.
//!
//! One actor per IO concern: [`net`] owns the quinn endpoint, [`agent`] owns the protocol node
//! and the [`store`] (sled), [`runtime`] owns the wasmtime engine and the per-app swap slots,
//! and [`http`] serves requests ([`routes`] decides which app, [`serve`] is the accept loop it
//! shares with [`admin`]). `main.rs` only parses flags ([`cli`]).

pub mod admin;
pub mod agent;
pub mod cli;
pub mod config;
pub mod http;
pub mod keys;
pub mod logging;
pub mod net;
pub mod routes;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod supervisor;
pub mod tls;
