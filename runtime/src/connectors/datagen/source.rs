//! Split `k` of `S` produces the records with global index k, k+S, k+2S, …; its position is how
//! many it has produced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::Value;

use super::config::DatagenConfig;
use super::generate::Generator;
use crate::api::{Batch, NodeContext, Record, Result, Source, SourcePoll, SplitId};
use crate::error::Error;

struct Split {
    id: SplitId,
    index: u64,
    /// Records produced so far.
    done: u64,
    /// Records this split produces in all (None: unbounded).
    total: Option<u64>,
}

pub struct DatagenSource {
    config: DatagenConfig,
    gen: Generator,
    splits: Vec<Split>,
    next: usize,
    rate: Option<f64>,
    started: Option<Instant>,
    emitted: u64,
}

impl DatagenSource {
    pub fn new(config: DatagenConfig, gen: Generator) -> Self {
        DatagenSource {
            config,
            gen,
            splits: Vec::new(),
            next: 0,
            rate: None,
            started: None,
            emitted: 0,
        }
    }
}

fn split_total(count: Option<u64>, splits: u64, k: u64) -> Option<u64> {
    count.map(|c| if c > k { (c - k).div_ceil(splits) } else { 0 })
}

#[async_trait]
impl Source for DatagenSource {
    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()> {
        let s = self.config.splits as u64;
        for k in 0..s {
            if !ctx.owns_index(k as usize) {
                continue;
            }
            let id = format!("datagen-{k}");
            let done = match restored.get(&id) {
                None => 0,
                Some(v) => v.as_u64().ok_or_else(|| {
                    Error::Checkpoint(format!(
                        "{}: position of split {id} is not a count: {v}",
                        ctx.node
                    ))
                })?,
            };
            self.splits.push(Split {
                id: Arc::from(id),
                index: k,
                done,
                total: split_total(self.config.count, s, k),
            });
        }
        if restored.keys().any(|k| {
            k.strip_prefix("datagen-")
                .and_then(|n| n.parse::<u64>().ok())
                .is_none_or(|n| n >= s)
        }) {
            return Err(Error::Checkpoint(format!(
                "{}: the restored state has splits this source does not have (was `splits` changed from the checkpointed job?)",
                ctx.node
            )));
        }
        let owned = self.splits.len() as f64;
        self.rate = self.config.rate.map(|r| r * owned / s as f64);
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        let live: Vec<usize> = (0..self.splits.len())
            .filter(|i| {
                self.splits[*i]
                    .total
                    .is_none_or(|t| self.splits[*i].done < t)
            })
            .collect();
        if live.is_empty() {
            return Ok(SourcePoll::Finished);
        }
        let mut max = self.config.batch_size as u64;
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = (started.elapsed().as_secs_f64() * rate) as u64 + 1;
            if self.emitted >= allowed {
                return Ok(SourcePoll::Idle);
            }
            max = max
                .min(allowed - self.emitted)
                .min(((rate / 20.0) as u64).max(1));
        }
        let pick = live[self.next % live.len()];
        self.next = self.next.wrapping_add(1);
        let s = self.config.splits as u64;
        let split = &mut self.splits[pick];
        let n = match split.total {
            Some(t) => max.min(t - split.done),
            None => max,
        };
        let mut records = Vec::with_capacity(n as usize);
        for j in split.done..split.done + n {
            let (fields, event_time) = self.gen.record(split.index + j * s);
            records.push(Record::new(fields).with_event_time(event_time));
        }
        split.done += n;
        self.emitted += n;
        Ok(SourcePoll::Batch(Batch::new(
            Some(split.id.clone()),
            records,
        )))
    }

    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>> {
        Ok(self
            .splits
            .iter()
            .map(|s| (s.id.to_string(), Value::from(s.done)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_totals_add_up() {
        for count in [0u64, 1, 7, 100, 101] {
            for s in 1..6 {
                let sum: u64 = (0..s)
                    .map(|k| split_total(Some(count), s, k).unwrap())
                    .sum();
                assert_eq!(sum, count, "count {count} splits {s}");
            }
        }
    }
}
