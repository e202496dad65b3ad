//! Type erasure for sinks: the runtime moves committables and states as JSON values.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::api::{NodeContext, Sink, TwoPhaseSink};
use crate::error::{Error, Result};
use crate::record::{Barrier, Batch};

#[async_trait]
pub trait DynSink: Send {
    async fn open(&mut self, ctx: &NodeContext) -> Result<()>;
    async fn recover(&mut self, states: Vec<Value>, committables: Vec<Value>) -> Result<()>;
    async fn write(&mut self, batch: Batch) -> Result<()>;
    async fn pre_commit(&mut self, barrier: Barrier) -> Result<(Vec<Value>, Value)>;
    async fn commit(&mut self, committables: Vec<Value>) -> Result<()>;
    async fn abort(&mut self) -> Result<()>;
    async fn on_tick(&mut self) -> Result<()>;
    async fn close(&mut self) -> Result<()>;
}

pub struct PlainSink<S>(pub S);
pub struct TwoPhase<S>(pub S);

#[async_trait]
impl<S: Sink> DynSink for PlainSink<S> {
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

#[async_trait]
impl<S: TwoPhaseSink> DynSink for TwoPhase<S> {
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
        let state = serde_json::to_value(&state)
            .map_err(|e| Error::Checkpoint(format!("cannot serialize sink state: {e}")))?;
        Ok((to_values(&committables)?, state))
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
}
