//! Sinks: [`Sink`] (idempotent or at-least-once, flushed at every barrier) and [`TwoPhaseSink`]
//! (exactly-once), and [`SinkBox`], either kind with its committables and states as JSON values
//! for the runtime ([`DynSink`]).

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::node::{NodeConfig, NodeContext};
use crate::error::{Error, Result};
use crate::record::{Barrier, Batch};

/// A sink that needs no transaction: writes are idempotent (upserts, documents with ids) or
/// at-least-once is enough. After `flush` returns, everything written so far is durable.
///
/// At a checkpoint barrier the runtime calls `flush` and writes nothing until it returns. A sink
/// whose writes become durable on their own (acknowledgements that arrive while it keeps
/// sending) can instead return a [`FlushMark`] from `mark`: the runtime then keeps writing and
/// acknowledges the barrier once `flushed(mark)` returns, which keeps the contract (everything
/// written before the barrier is durable before the checkpoint completes) without stopping the
/// data path while the earlier writes are acknowledged.
#[async_trait]
pub trait Sink: Send + 'static {
    async fn open(&mut self, _ctx: &NodeContext) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, batch: Batch) -> Result<()>;
    async fn flush(&mut self) -> Result<()>;
    /// Marks a barrier without waiting (see the trait's doc); `None`, the default, means the
    /// barrier is handled by `flush`.
    fn mark(&mut self) -> Option<FlushMark> {
        None
    }
    /// Returns once everything written before `mark` is durable. Must be cancel-safe: the
    /// runtime drops it whenever a batch arrives and calls it again later, so all progress
    /// lives in the sink. Called only with marks returned by `mark`, oldest first.
    async fn flushed(&mut self, _mark: FlushMark) -> Result<()> {
        Ok(())
    }
    /// Called about every 100 ms (time-based flushes).
    async fn on_tick(&mut self) -> Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// `weir validate --connect`: asks the live system what only it can answer (the topic
    /// exists, the table has the columns, the bucket answers) without reading records, writing
    /// or opening transactions. Returns what was checked, one line each; an error names the
    /// setting to change. The default checks nothing.
    async fn preflight(&mut self, _cfg: &NodeConfig) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A point in a sink's writes, from [`Sink::mark`]: what the sink needs to tell the writes
/// before it from those after (for example the sequence number of its next write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushMark(pub u64);

/// The background part of a [`TwoPhaseSink::begin_pre_commit`]: its committables and state.
pub type Prepare<C, S> = BoxFuture<'static, Result<(Vec<C>, S)>>;

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
    /// A pre-commit that does not stop the data path: `Some(prepare)` means the sink has already
    /// moved its later writes off what `barrier` stages (to a new transaction), and `prepare`
    /// makes the staged data durable and returns what `pre_commit` would. The runtime runs it in
    /// the background, keeps calling `write`, and acknowledges the barrier once it resolves
    /// (several may be in flight; they are acknowledged in barrier order). `None`, the default,
    /// means the barrier is handled by `pre_commit` while writes wait.
    async fn begin_pre_commit(
        &mut self,
        _barrier: Barrier,
    ) -> Result<Option<Prepare<Self::Committable, Self::State>>> {
        Ok(None)
    }
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
    /// `weir validate --connect`: asks the live system what only it can answer (the topic
    /// exists, the table has the columns, the bucket answers) without reading records, writing
    /// or opening transactions. Returns what was checked, one line each; an error names the
    /// setting to change. The default checks nothing.
    async fn preflight(&mut self, _cfg: &NodeConfig) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A sink of either kind, type-erased for the runtime.
pub struct SinkBox(pub(crate) Box<dyn DynSink>);

impl SinkBox {
    pub fn plain<S: Sink>(sink: S) -> Self {
        SinkBox(Box::new(PlainSink(sink)))
    }
    pub fn two_phase<S: TwoPhaseSink>(sink: S) -> Self {
        SinkBox(Box::new(TwoPhase(sink)))
    }
    /// Whether the sink commits through checkpoints ([`TwoPhaseSink`]).
    pub fn transactional(&self) -> bool {
        self.0.transactional()
    }
    /// [`Sink::preflight`] / [`TwoPhaseSink::preflight`].
    pub async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        self.0.preflight(cfg).await
    }
}

#[async_trait]
/// A sink of either kind as the runtime drives it: committables and states as JSON values.
pub trait DynSink: Send {
    /// Whether the sink commits through checkpoints (two-phase): it is then exactly-once and
    /// cannot be `critical: false`.
    fn transactional(&self) -> bool;
    async fn open(&mut self, ctx: &NodeContext) -> Result<()>;
    async fn recover(&mut self, states: Vec<Value>, committables: Vec<Value>) -> Result<()>;
    async fn write(&mut self, batch: Batch) -> Result<()>;
    async fn pre_commit(&mut self, barrier: Barrier) -> Result<(Vec<Value>, Value)>;
    /// [`TwoPhaseSink::begin_pre_commit`], its result as JSON values.
    async fn begin_pre_commit(&mut self, barrier: Barrier)
        -> Result<Option<Prepare<Value, Value>>>;
    /// A plain sink's [`Sink::mark`]: `Some` means the barrier is pre-committed (with no
    /// committables and no state) once `flushed` returns, instead of by `pre_commit`.
    fn mark(&mut self) -> Option<FlushMark>;
    /// [`Sink::flushed`]; cancel-safe.
    async fn flushed(&mut self, mark: FlushMark) -> Result<()>;
    async fn commit(&mut self, committables: Vec<Value>) -> Result<()>;
    async fn abort(&mut self) -> Result<()>;
    async fn on_tick(&mut self) -> Result<()>;
    async fn close(&mut self) -> Result<()>;
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>>;
}

struct PlainSink<S>(S);
struct TwoPhase<S>(S);

#[async_trait]
impl<S: Sink> DynSink for PlainSink<S> {
    fn transactional(&self) -> bool {
        false
    }
    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.0.open(ctx).await
    }
    async fn recover(&mut self, _: Vec<Value>, _: Vec<Value>) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, batch: Batch) -> Result<()> {
        self.0.write(batch).await
    }
    async fn pre_commit(&mut self, _: Barrier) -> Result<(Vec<Value>, Value)> {
        self.0.flush().await?;
        Ok((Vec::new(), Value::Null))
    }
    async fn begin_pre_commit(&mut self, _: Barrier) -> Result<Option<Prepare<Value, Value>>> {
        Ok(None)
    }
    fn mark(&mut self) -> Option<FlushMark> {
        self.0.mark()
    }
    async fn flushed(&mut self, mark: FlushMark) -> Result<()> {
        self.0.flushed(mark).await
    }
    async fn commit(&mut self, _: Vec<Value>) -> Result<()> {
        Ok(())
    }
    async fn abort(&mut self) -> Result<()> {
        Ok(())
    }
    async fn on_tick(&mut self) -> Result<()> {
        self.0.on_tick().await
    }
    async fn close(&mut self) -> Result<()> {
        self.0.close().await
    }
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        self.0.preflight(cfg).await
    }
}

fn to_values<T: Serialize>(items: &[T]) -> Result<Vec<Value>> {
    items
        .iter()
        .map(|c| {
            serde_json::to_value(c).map_err(|e| Error::Checkpoint(format!("cannot serialize: {e}")))
        })
        .collect()
}

fn from_values<T: DeserializeOwned>(what: &str, values: Vec<Value>) -> Result<Vec<T>> {
    values
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                Error::Checkpoint(format!("stored {what} does not match this sink: {e}"))
            })
        })
        .collect()
}

/// A pre-commit's committables and state as the checkpoint stores them.
fn prepared_values<C: Serialize, S: Serialize>(
    committables: &[C],
    state: &S,
) -> Result<(Vec<Value>, Value)> {
    let state = serde_json::to_value(state)
        .map_err(|e| Error::Checkpoint(format!("cannot serialize sink state: {e}")))?;
    Ok((to_values(committables)?, state))
}

#[async_trait]
impl<S: TwoPhaseSink> DynSink for TwoPhase<S> {
    fn transactional(&self) -> bool {
        true
    }
    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.0.open(ctx).await
    }
    async fn recover(&mut self, states: Vec<Value>, committables: Vec<Value>) -> Result<()> {
        let states = from_values(
            "sink state",
            states.into_iter().filter(|s| !s.is_null()).collect(),
        )?;
        let committables = from_values("committable", committables)?;
        self.0.recover(states, committables).await
    }
    async fn write(&mut self, batch: Batch) -> Result<()> {
        self.0.write(batch).await
    }
    async fn pre_commit(&mut self, barrier: Barrier) -> Result<(Vec<Value>, Value)> {
        let (committables, state) = self.0.pre_commit(barrier).await?;
        prepared_values(&committables, &state)
    }
    async fn begin_pre_commit(
        &mut self,
        barrier: Barrier,
    ) -> Result<Option<Prepare<Value, Value>>> {
        let Some(prepare) = self.0.begin_pre_commit(barrier).await? else {
            return Ok(None);
        };
        Ok(Some(
            prepare
                .map(|r| r.and_then(|(committables, state)| prepared_values(&committables, &state)))
                .boxed(),
        ))
    }
    fn mark(&mut self) -> Option<FlushMark> {
        // A transaction is pre-committed as a whole, in `pre_commit`.
        None
    }
    async fn flushed(&mut self, _: FlushMark) -> Result<()> {
        Ok(())
    }
    async fn commit(&mut self, committables: Vec<Value>) -> Result<()> {
        let committables = from_values("committable", committables)?;
        self.0.commit(committables).await
    }
    async fn abort(&mut self) -> Result<()> {
        self.0.abort().await
    }
    async fn on_tick(&mut self) -> Result<()> {
        self.0.on_tick().await
    }
    async fn close(&mut self) -> Result<()> {
        self.0.close().await
    }
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        self.0.preflight(cfg).await
    }
}
