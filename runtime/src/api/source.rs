//! Sources: records from splits whose positions go into every checkpoint.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::node::{NodeConfig, NodeContext};
use crate::error::Result;
use crate::record::Batch;

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
    /// `weir validate --connect`: asks the live system what only it can answer (the topic
    /// exists, the table has the columns, the bucket answers) without reading records, writing
    /// or opening transactions. Returns what was checked, one line each; an error names the
    /// setting to change. The default checks nothing.
    async fn preflight(&mut self, _cfg: &NodeConfig) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
