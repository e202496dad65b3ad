//! weir runtime: checkpointed streaming pipelines with exactly-once sinks.
//!
//! Layout: [`api`] (public traits for custom connectors, and the registry they register into),
//! [`registry`] (the built-ins by name), [`engine`] (workers, barriers, the checkpoint
//! coordinator), [`checkpoint`] (what is stored and where), [`connectors`] and [`transforms`]
//! (built-ins), [`admin`] (the worker's HTTP API), [`cli`] (the `weir` command). Which may use
//! which is written and checked in `layers.rs`.

pub mod admin;
pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod connectors;
pub mod engine;
pub mod env_expand;
pub mod error;
pub mod event_time;
pub mod fault;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod on_error;
pub mod ordered;
pub mod record;
pub mod registry;
pub mod retry;
pub mod storage;
pub mod testkit;
pub mod tls;
pub mod transforms;

pub use error::{Error, Result};
