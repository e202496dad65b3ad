//! Split `k` of `S` produces the records with global index k, k+S, k+2S, …; its position is how
//! many it has produced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pace: Option<Pace>,
}

/// `rate` records per second, with at most one second of unused allowance saved up (Guava's
/// `SmoothBursty`, which Flink's datagen uses): after a stall (backpressure, a slow sink
/// starting) the source catches up by one second's worth, not by everything it missed.
#[derive(Debug)]
struct Pace {
    rate: f64,
    /// The moment from which `rate × elapsed` counts what may have been emitted; moved forward
    /// when the saved allowance would exceed one second's worth.
    origin: Option<Instant>,
    emitted: u64,
}

impl Pace {
    fn new(rate: f64) -> Self {
        Pace {
            rate,
            origin: None,
            emitted: 0,
        }
    }

    /// How many records may be emitted at `now` (0: wait).
    fn allowed(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let burst = self.rate.max(1.0);
        let earned = now.saturating_duration_since(origin).as_secs_f64() * self.rate;
        if earned - self.emitted as f64 > burst {
            // Forget what exceeds the burst: as if emitting had been on pace until `burst` ago.
            let behind = Duration::from_secs_f64((self.emitted as f64 + burst) / self.rate);
            self.origin = Some(now.checked_sub(behind).unwrap_or(origin));
        }
        let origin = self.origin.unwrap_or(now);
        let earned = now.saturating_duration_since(origin).as_secs_f64() * self.rate;
        (earned as u64 + 1).saturating_sub(self.emitted)
    }

    fn emitted(&mut self, n: u64) {
        self.emitted += n;
    }
}

impl DatagenSource {
    pub fn new(config: DatagenConfig, gen: Generator) -> Self {
        DatagenSource {
            config,
            gen,
            splits: Vec::new(),
            next: 0,
            pace: None,
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
        self.pace = self.config.rate.map(|r| Pace::new(r * owned / s as f64));
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
        if let Some(pace) = &mut self.pace {
            let allowed = pace.allowed(Instant::now());
            if allowed == 0 {
                return Ok(SourcePoll::Idle);
            }
            max = max.min(allowed).min(((pace.rate / 20.0) as u64).max(1));
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
        if let Some(pace) = &mut self.pace {
            pace.emitted(n);
        }
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

    #[test]
    fn pace_keeps_the_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(1000.0);
        assert_eq!(p.allowed(t0), 1);
        p.emitted(1);
        assert_eq!(p.allowed(t0), 0);
        assert_eq!(p.allowed(t0 + Duration::from_millis(500)), 500);
        p.emitted(500);
        assert_eq!(p.allowed(t0 + Duration::from_millis(500)), 0);
    }

    #[test]
    fn pace_saves_up_at_most_one_second_after_a_stall() {
        let t0 = Instant::now();
        let mut p = Pace::new(1000.0);
        p.allowed(t0);
        p.emitted(1);
        // A 10 s stall: one second's worth may go at once, not ten.
        let t = t0 + Duration::from_secs(10);
        let burst = p.allowed(t);
        assert!((1000..=1001).contains(&burst), "{burst}");
        p.emitted(burst);
        assert_eq!(p.allowed(t), 0);
        // From then on, the rate again.
        let later = p.allowed(t + Duration::from_millis(100));
        assert!((99..=101).contains(&later), "{later}");
    }
}
