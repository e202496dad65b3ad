//! Transforms: synchronous ones ([`Transform`]) and those that wait ([`AsyncTransform`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::node::{NodeConfig, NodeContext};
use crate::error::Result;
use crate::record::{Barrier, Batch};

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
    /// `weir validate --connect`: asks the live system what only it can answer (the lookup
    /// table has the key column, the service answers) without reading records, writing
    /// or opening transactions. Returns what was checked, one line each; an error names the
    /// setting to change. The default checks nothing.
    async fn preflight(&mut self, _cfg: &NodeConfig) -> Result<Vec<String>> {
        Ok(Vec::new())
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
