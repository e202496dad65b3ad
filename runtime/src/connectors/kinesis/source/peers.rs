//! Whether another worker has finished a shard: read from that worker's newest complete
//! checkpoint in the job's checkpoint storage (workers share nothing else). A child shard whose
//! parent belongs to another worker starts only once that worker's checkpoint, which holds
//! every record of the parent as committed, marks the parent finished. This is the lease table
//! of the Kinesis Client Library, with the checkpoints as the table. Only checkpoints of the
//! same run (same origin and parallelism) count.

use std::collections::{BTreeMap, BTreeSet};

use super::position::{parse_key, Position, StateKey};
use super::shards::{finished_in, ShardGraph};
use crate::api::NodeContext;
use crate::checkpoint::CheckpointStore;
use crate::error::Result;

pub struct Peers {
    store: CheckpointStore,
    node: String,
    parallelism: u32,
    origin: Option<String>,
}

impl Peers {
    /// `None` with checkpointing off: there is nothing to read (children of other workers'
    /// shards then start once those shards are closed; order across workers is not kept).
    pub async fn open(ctx: &NodeContext) -> Result<Option<Peers>> {
        let cp = &ctx.checkpoint;
        if !cp.enabled {
            return Ok(None);
        }
        let store = CheckpointStore::open(&cp.storage, &cp.storage_options, &ctx.job)?;
        let origin = store.latest(ctx.worker).await?.and_then(|c| c.origin);
        Ok(Some(Peers {
            store,
            node: ctx.node.clone(),
            parallelism: ctx.parallelism,
            origin,
        }))
    }

    /// The shard positions of `stream` in `worker`'s newest complete checkpoint of this run.
    async fn positions(&self, worker: u32, stream: &str) -> Result<BTreeMap<String, Position>> {
        let Some(mut cp) = self.store.latest(worker).await? else {
            return Ok(BTreeMap::new());
        };
        if cp.origin != self.origin || cp.parallelism != self.parallelism {
            return Ok(BTreeMap::new());
        }
        let splits = cp.sources.remove(&self.node).unwrap_or_default();
        Ok(splits
            .iter()
            .filter_map(|(k, v)| match parse_key(k) {
                StateKey::Shard { stream: s, shard } if s == stream => {
                    Position::from_value(v).ok().map(|p| (shard.to_string(), p))
                }
                _ => None,
            })
            .collect())
    }

    /// Which of `wanted` (shard → owning worker) their owners' checkpoints show finished.
    pub async fn finished(
        &self,
        stream: &str,
        graph: &ShardGraph,
        wanted: &BTreeMap<String, u32>,
    ) -> Result<BTreeSet<String>> {
        let workers: BTreeSet<u32> = wanted.values().copied().collect();
        let mut out = BTreeSet::new();
        for w in workers {
            let positions = self.positions(w, stream).await?;
            for (shard, _) in wanted.iter().filter(|(_, owner)| **owner == w) {
                if finished_in(graph, &positions, shard) {
                    out.insert(shard.clone());
                }
            }
        }
        Ok(out)
    }
}
