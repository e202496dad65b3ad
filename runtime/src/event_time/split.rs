//! Per-split watermarks at a source (Kafka partitions, Kinesis shards): bounded out-of-orderness
//! per split, the source's watermark the minimum over splits that are not idle (the rule of the
//! `watermark` transform, applied at the source where splits are still apart). A split that
//! ended (a Kinesis shard after resharding) is removed, so it never holds the watermark back.

use std::collections::HashMap;

use super::{combined, Monotonic, SplitClock};

pub struct SplitWatermarks {
    bound_ms: i64,
    idle_ms: Option<i64>,
    clocks: HashMap<String, SplitClock>,
    current: Monotonic,
}

impl SplitWatermarks {
    pub fn new(bound_ms: i64, idle_ms: Option<i64>) -> Self {
        SplitWatermarks {
            bound_ms,
            idle_ms,
            clocks: HashMap::new(),
            current: Monotonic::default(),
        }
    }

    /// A newly assigned split holds the watermark back until it delivers a record or, with an
    /// idle timeout, until that long has passed without one (so an empty split does not stall
    /// the job, yet a slow one is not overtaken before it had a chance).
    pub fn assigned(&mut self, split: &str, now_ms: i64) {
        self.clocks.entry(split.to_string()).or_insert(SplitClock {
            max_event: i64::MIN,
            last_seen_ms: now_ms,
        });
    }

    pub fn observe(&mut self, split: &str, event_time: i64, now_ms: i64) {
        let c = self.clocks.entry(split.to_string()).or_insert(SplitClock {
            max_event: i64::MIN,
            last_seen_ms: now_ms,
        });
        c.max_event = c.max_event.max(event_time);
        c.last_seen_ms = now_ms;
    }

    /// A split that has ended: it no longer counts.
    pub fn remove(&mut self, split: &str) {
        self.clocks.remove(split);
    }

    /// The watermark now; never goes back. `None` until every active split has a record.
    pub fn current(&mut self, now_ms: i64) -> Option<i64> {
        let w =
            combined(&self.clocks, self.bound_ms, self.idle_ms, now_ms).filter(|w| *w != i64::MIN);
        self.current.advance(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_active_partition_sets_it() {
        let mut w = SplitWatermarks::new(1000, None);
        w.assigned("t/0", 0);
        w.assigned("t/1", 0);
        w.observe("t/0", 10_000, 10);
        assert_eq!(w.current(20), None, "t/1 has not delivered yet");
        w.observe("t/1", 5_000, 30);
        assert_eq!(w.current(40), Some(3_999));
        w.observe("t/1", 20_000, 50);
        assert_eq!(w.current(60), Some(8_999));
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back() {
        let mut w = SplitWatermarks::new(0, Some(500));
        w.assigned("t/0", 0);
        w.assigned("t/1", 0);
        w.observe("t/0", 10_000, 300);
        assert_eq!(w.current(400), None, "t/1 not idle yet");
        assert_eq!(w.current(600), Some(9_999), "t/1 idle after 500 ms");
        // Never backwards, even when the idle partition wakes up behind.
        w.observe("t/1", 1_000, 700);
        assert_eq!(w.current(710), Some(9_999));
    }

    #[test]
    fn an_ended_split_no_longer_holds_it_back() {
        let mut w = SplitWatermarks::new(0, None);
        w.assigned("s/parent", 0);
        w.assigned("s/child", 0);
        w.observe("s/parent", 1_000, 1);
        w.observe("s/child", 9_000, 2);
        assert_eq!(w.current(3), Some(999));
        w.remove("s/parent");
        assert_eq!(w.current(4), Some(8_999));
    }

    #[test]
    fn without_idle_timeout_an_empty_partition_holds_it_forever() {
        let mut w = SplitWatermarks::new(0, None);
        w.assigned("t/0", 0);
        w.assigned("t/1", 0);
        w.observe("t/0", 10_000, 1);
        assert_eq!(w.current(1_000_000), None);
    }
}
