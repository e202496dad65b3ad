//! The public API for custom sources, transforms and sinks.
//!
//! A connector is a type implementing [`Source`], [`Transform`], [`Sink`] (idempotent or
//! at-least-once: flushed at every barrier) or [`TwoPhaseSink`] (exactly-once), plus a factory
//! registered by name in a [`Registry`]. The factory parses the node's settings
//! (with [`NodeConfig::parse`], which reports errors with their path) and must do no I/O: it also
//! runs for `weir validate`. I/O starts in `open`.
//!
//! ```no_run
//! use weir_runtime::api::*;
//! use weir_runtime::registry::Registry;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct StdoutConfig { prefix: String }
//!
//! struct Stdout { prefix: String }
//!
//! #[async_trait::async_trait]
//! impl Sink for Stdout {
//!     async fn write(&mut self, batch: Batch) -> Result<()> {
//!         for r in batch.records {
//!             println!("{}{}", self.prefix, serde_json::Value::Object(r.into_fields()));
//!         }
//!         Ok(())
//!     }
//!     async fn flush(&mut self) -> Result<()> { Ok(()) }
//! }
//!
//! let mut registry = Registry::with_builtins();
//! registry.sink("stdout", |cfg: &NodeConfig| {
//!     let c: StdoutConfig = cfg.parse()?;
//!     Ok(SinkBox::plain(Stdout { prefix: c.prefix }))
//! });
//! // weir_runtime::cli::main_with(registry) runs the `weir` command with the new sink.
//! ```

mod node;
pub mod registry;
mod sink;
mod source;
mod transform;

pub use serde_json::Value;

pub use crate::error::{Error, Result};
pub use crate::record::{Barrier, Batch, Fields, Record, SplitId};
pub use node::{ConnectorConfig, NodeConfig, NodeContext};
pub use registry::Registry;
pub(crate) use sink::DynSink;
pub use sink::{FlushMark, Prepare, Sink, SinkBox, TwoPhaseSink};
pub use source::{Source, SourcePoll};
pub(crate) use transform::SyncTransform;
pub use transform::{AsyncTransform, Output, Transform};
