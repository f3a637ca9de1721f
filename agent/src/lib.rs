//! fleetcast-agent: the edge daemon as a library, so tests can run agents in-process.
//!
//! One actor per IO concern: the transport crate `fleetcast-net` owns the quinn endpoint (with
//! the codec, TLS identity and key files, which the operator CLI shares), [`agent`] owns the
//! protocol node, [`store`] the sled cache, [`supervisor`] each app's serving state,
//! [`runtime`] the wasmtime engine and the per-app swap slots, and [`http`] serves requests
//! ([`routes`] decides which app, [`serve`] is the accept loop it shares with [`admin`]).
//! [`mesh_metrics`] holds what the node actor counts for `/metrics`; [`trust`] is the IO of the
//! fleet root, the node certificate and the admission policy; [`health`] feeds the node the
//! serving releases' health for staged rollouts.
//! `main.rs` only parses flags ([`cli`]).

pub mod admin;
pub mod agent;
pub mod cli;
pub mod config;
pub mod health;
pub mod http;
pub mod mesh_metrics;
pub mod routes;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod supervisor;
pub mod trust;
