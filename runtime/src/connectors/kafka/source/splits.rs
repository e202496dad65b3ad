//! Partitions as splits: their ids, which worker owns each, and what a split's checkpointed
//! position looks like.

use serde_json::{json, Value};

/// `topic/partition`. Kafka topic names cannot contain `/`; parsing splits at the last one
/// regardless, so the id stays unambiguous.
pub fn split_id(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

pub fn parse_split_id(id: &str) -> Result<(&str, i32), String> {
    let (topic, partition) = id
        .rsplit_once('/')
        .ok_or_else(|| format!("expected topic/partition, got {id:?}"))?;
    let partition: i32 = partition.parse().ok().filter(|p| *p >= 0).ok_or_else(|| {
        format!("expected topic/partition with a partition number ≥ 0, got {id:?}")
    })?;
    if topic.is_empty() {
        return Err(format!("expected topic/partition, got {id:?}"));
    }
    Ok((topic, partition))
}

/// The index of a partition in the stable split order that `NodeContext::owns_index` divides
/// among workers. As in Flink's `KafkaTopicPartitionAssigner`, a topic's partitions are spread
/// round-robin from a start derived from the topic name, so adding partitions or topics never
/// moves an existing partition to another worker, and a topic's partitions stay balanced.
pub fn owner_index(topic: &str, partition: i32) -> usize {
    let start = crc32fast::hash(topic.as_bytes()) as usize;
    start.wrapping_add(partition.max(0) as usize)
}

/// A partition's position in a checkpoint: the next offset to read and, for a bounded source,
/// the offset it ends at (fixed when the partition was first assigned, so a restart ends at the
/// same place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub next: i64,
    pub stop: Option<i64>,
}

impl Position {
    pub fn to_value(self) -> Value {
        match self.stop {
            Some(stop) => json!({ "offset": self.next, "stop": stop }),
            None => json!({ "offset": self.next }),
        }
    }

    pub fn from_value(v: &Value) -> Result<Position, String> {
        let next = v["offset"]
            .as_i64()
            .filter(|o| *o >= 0)
            .ok_or_else(|| format!("expected {{\"offset\": N}}, got {v}"))?;
        Ok(Position {
            next,
            stop: v["stop"].as_i64(),
        })
    }

    pub fn finished(self) -> bool {
        self.stop.is_some_and(|s| self.next >= s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_split_id(&split_id("orders", 3)), Ok(("orders", 3)));
        assert_eq!(parse_split_id("a/b/7"), Ok(("a/b", 7)));
        assert!(parse_split_id("orders").is_err());
        assert!(parse_split_id("orders/-1").is_err());
        assert!(parse_split_id("/1").is_err());
    }

    fn owners(topic: &str, partitions: i32, p: usize) -> Vec<usize> {
        (0..partitions).map(|i| owner_index(topic, i) % p).collect()
    }

    #[test]
    fn a_topic_is_spread_evenly_over_workers() {
        for p in 1..=6 {
            let o = owners("orders", 6 * p as i32, p);
            for w in 0..p {
                assert_eq!(o.iter().filter(|x| **x == w).count(), 6, "p={p} w={w}");
            }
        }
    }

    #[test]
    fn adding_partitions_or_topics_never_moves_existing_ones() {
        let before = owners("orders", 4, 3);
        let after = owners("orders", 9, 3);
        assert_eq!(before[..], after[..4]);
        // Another topic's assignment does not depend on this one.
        assert_eq!(owners("payments", 4, 3), owners("payments", 4, 3));
    }

    #[test]
    fn positions_round_trip_and_know_when_they_are_done() {
        let p = Position {
            next: 5,
            stop: Some(9),
        };
        assert_eq!(Position::from_value(&p.to_value()), Ok(p));
        assert!(!p.finished());
        assert!(Position {
            next: 9,
            stop: Some(9)
        }
        .finished());
        assert!(!Position {
            next: 9,
            stop: None
        }
        .finished());
        assert!(Position::from_value(&json!({ "offset": -1 })).is_err());
        assert!(Position::from_value(&json!(3)).is_err());
    }
}
