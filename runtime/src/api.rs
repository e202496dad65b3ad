//! The public API for custom sources, transforms and sinks.
//!
//! A connector is a type implementing [`Source`], [`Transform`], [`Sink`] (idempotent or
//! at-least-once: flushed at every barrier) or [`TwoPhaseSink`] (exactly-once), plus a factory
//! registered by name in a [`crate::registry::Registry`]. The factory parses the node's settings
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

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
pub use serde_json::Value;
use weir_crds::{CheckpointSpec, NodeSpec};

pub use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;
pub use crate::record::{Barrier, Batch, Fields, Record, SplitId};

/// A node's settings as given in the spec, with the path used in error messages.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `sources[0]`, `transforms[2]`, `sinks[1]`.
    pub path: String,
    pub spec: NodeSpec,
    pub parallelism: u32,
    pub checkpoint: CheckpointSpec,
}

impl NodeConfig {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Deserializes the node's own settings; an error names the field, e.g.
    /// `sinks[0].rolling.max_part_size: expected a size like 256MiB`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        let value = Value::Object(self.spec.config.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let path = if inner == "." {
                self.path.clone()
            } else {
                format!("{}.{inner}", self.path)
            };
            Error::spec(path, e.into_inner().to_string())
        })
    }

    /// An error about one field of this node.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Error {
        let path = if field.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{field}", self.path)
        };
        Error::spec(path, message)
    }
}

/// What a running node knows about its place in the job.
#[derive(Clone, Debug)]
pub struct NodeContext {
    pub job: String,
    pub node: String,
    pub worker: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub checkpoint: CheckpointSpec,
    pub metrics: NodeMetrics,
}

impl NodeContext {
    /// Whether this worker owns the split at `index` of a source's stable split order.
    pub fn owns_index(&self, index: usize) -> bool {
        index % self.parallelism as usize == self.worker as usize
    }
}

/// What a source returned from one poll.
#[derive(Debug)]
pub enum SourcePoll {
    Batch(Batch),
    /// Nothing available right now (the runtime checks for barriers and polls again).
    Idle,
    /// Bounded input exhausted on every split this worker owns.
    Finished,
}

/// A source of records. Its position per split is part of every checkpoint.
#[async_trait]
pub trait Source: Send + 'static {
    /// Called once before polling. `restored` holds the positions of every split found in the
    /// checkpoint or savepoint (from all workers that wrote it); keep those this worker owns.
    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()>;
    /// Returns the next batch; must return (`Idle` if need be) within about 100 ms so that
    /// barriers are not delayed.
    async fn poll(&mut self) -> Result<SourcePoll>;
    /// Position of every owned split, taken between two polls when a barrier is injected.
    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>>;
    /// The source's event-time watermark after the last poll (for example the minimum over its
    /// active partitions), if it tracks one. Asked after every poll; the runtime forwards it
    /// downstream whenever it advances.
    fn watermark(&mut self) -> Option<i64> {
        None
    }
    /// Called once checkpoint `id` is durable (e.g. to commit offsets for lag monitoring).
    async fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a transform emits for one input message.
#[derive(Debug, Default)]
pub struct Output {
    pub batches: Vec<Batch>,
    pub watermark: Option<i64>,
}

/// A transform. State is keyed by key group so a savepoint restores at another parallelism.
pub trait Transform: Send + 'static {
    fn open(&mut self, _ctx: &NodeContext, _restored: BTreeMap<u32, Value>) -> Result<()> {
        Ok(())
    }
    fn process(&mut self, batch: Batch, out: &mut Output) -> Result<()>;
    /// The merged input watermark advanced; the default forwards it.
    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        out.watermark = Some(watermark);
        Ok(())
    }
    /// Called about every 100 ms (idleness detection, timers).
    fn on_tick(&mut self, _now_ms: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }
    /// State per key group, taken when the barrier has arrived on every input.
    fn snapshot(&mut self) -> Result<BTreeMap<u32, Value>> {
        Ok(BTreeMap::new())
    }
}

/// A transform that waits: async I/O, lookups, anything with requests in flight.
///
/// The runtime runs every [`Transform`] through this trait too. Between inputs it awaits
/// [`AsyncTransform::ready`] and, once that resolves, calls [`AsyncTransform::emit_ready`], so
/// completed work is emitted without waiting for the next input.
#[async_trait]
pub trait AsyncTransform: Send + 'static {
    async fn open(&mut self, _ctx: &NodeContext, _restored: BTreeMap<u32, Value>) -> Result<()> {
        Ok(())
    }
    /// May wait, e.g. until in-flight capacity frees up (that is the backpressure).
    async fn process(&mut self, batch: Batch, out: &mut Output) -> Result<()>;
    /// The merged input watermark advanced. A transform with work in flight must hold the
    /// watermark back until every record that arrived before it has been emitted.
    async fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        out.watermark = Some(watermark);
        Ok(())
    }
    /// Resolves when finished work can be emitted. Must be cancel-safe: the runtime drops it
    /// whenever input, a barrier or a tick arrives first. The default never resolves.
    async fn ready(&mut self) {
        std::future::pending::<()>().await
    }
    /// Emits whatever finished since the last call.
    fn emit_ready(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }
    /// Called about every 100 ms (timeouts, idleness, timers).
    async fn on_tick(&mut self, _now_ms: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }
    /// State per key group when the barrier has arrived on every input; `out` is emitted before
    /// the barrier. Work still in flight belongs in the state (its input records, to be issued
    /// again by `open` on restore). When `barrier.last` is set the job ends after this barrier:
    /// finish and emit everything in flight instead, since nothing emitted later is committed.
    /// State that is not partitioned by key must use only this worker's key groups
    /// ([`crate::checkpoint::key_group_range`]): a restore takes each group from one worker.
    async fn snapshot(
        &mut self,
        barrier: &Barrier,
        out: &mut Output,
    ) -> Result<BTreeMap<u32, Value>>;
    /// Input ended (after the last barrier): emit anything left.
    async fn finish(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }
}

/// Runs a [`Transform`] as an [`AsyncTransform`].
pub(crate) struct SyncTransform(pub Box<dyn Transform>);

#[async_trait]
impl AsyncTransform for SyncTransform {
    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<u32, Value>) -> Result<()> {
        self.0.open(ctx, restored)
    }
    async fn process(&mut self, batch: Batch, out: &mut Output) -> Result<()> {
        self.0.process(batch, out)
    }
    async fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        self.0.on_watermark(watermark, out)
    }
    async fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        self.0.on_tick(now_ms, out)
    }
    async fn snapshot(
        &mut self,
        _barrier: &Barrier,
        _out: &mut Output,
    ) -> Result<BTreeMap<u32, Value>> {
        self.0.snapshot()
    }
}

/// A sink that needs no transaction: writes are idempotent (upserts, documents with ids) or
/// at-least-once is enough. After `flush` returns, everything written so far is durable.
#[async_trait]
pub trait Sink: Send + 'static {
    async fn open(&mut self, _ctx: &NodeContext) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, batch: Batch) -> Result<()>;
    async fn flush(&mut self) -> Result<()>;
    /// Called about every 100 ms (time-based flushes).
    async fn on_tick(&mut self) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// An exactly-once sink: the two-phase-commit contract of ARCHITECTURE.md.
///
/// 1. `write` stages records in an open transaction (an in-progress file, a Kafka transaction).
/// 2. `pre_commit(barrier)` makes the staged data durable but invisible and returns committables
///    (and the sink's own state); the runtime stores both in checkpoint `barrier.id`.
/// 3. Only once that checkpoint is durable does the runtime call `commit` with every committable
///    not yet committed. Commit must be idempotent: it may be repeated after a crash.
/// 4. On start, `recover` gets the states and committables of the checkpoint restored from:
///    finish those commits idempotently and abort or discard anything staged after it.
#[async_trait]
pub trait TwoPhaseSink: Send + 'static {
    type Committable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    type State: Serialize + DeserializeOwned + Send + 'static;

    async fn open(&mut self, ctx: &NodeContext) -> Result<()>;
    /// `states` are the states of the workers this one takes over (its own, or several after a
    /// rescale); `committables` must be committed (again) before any new write.
    async fn recover(
        &mut self,
        states: Vec<Self::State>,
        committables: Vec<Self::Committable>,
    ) -> Result<()>;
    async fn write(&mut self, batch: Batch) -> Result<()>;
    async fn pre_commit(
        &mut self,
        barrier: Barrier,
    ) -> Result<(Vec<Self::Committable>, Self::State)>;
    async fn commit(&mut self, committables: Vec<Self::Committable>) -> Result<()>;
    /// Drop staged, not pre-committed work (the job is failing or cancelled).
    async fn abort(&mut self) -> Result<()>;
    /// Called about every 100 ms (time-based rolling).
    async fn on_tick(&mut self) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A sink of either kind, type-erased for the runtime.
pub struct SinkBox(pub(crate) Box<dyn crate::engine::sink_adapter::DynSink>);

impl SinkBox {
    pub fn plain<S: Sink>(sink: S) -> Self {
        SinkBox(Box::new(crate::engine::sink_adapter::PlainSink(sink)))
    }
    pub fn two_phase<S: TwoPhaseSink>(sink: S) -> Self {
        SinkBox(Box::new(crate::engine::sink_adapter::TwoPhase(sink)))
    }
}
