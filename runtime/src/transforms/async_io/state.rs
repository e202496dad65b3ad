//! In-flight records in a checkpoint: spread by a hash of the record over the key groups this
//! worker owns, restored in their arrival order.
//!
//! Records are not partitioned by key here (any worker may hold any record), so the hash picks a
//! group inside the worker's own range: a key group must be written by one worker only, since a
//! restore takes each group's state from whichever part holds it.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checkpoint::key_group;
use crate::record::Record;

/// One record held by the operator at a barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldRecord {
    /// Arrival order on the worker that took the checkpoint.
    pub seq: u64,
    /// The input (lookup still to do) or the finished output (`done`).
    pub fields: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default)]
    pub done: bool,
}

impl HeldRecord {
    pub fn new(seq: u64, record: &Record, split: Option<&str>, done: bool) -> Self {
        HeldRecord {
            seq,
            fields: record.fields().clone(),
            event_time: record.event_time,
            split: split.map(str::to_string),
            done,
        }
    }

    pub fn record(&self) -> Record {
        Record::new(self.fields.clone()).with_event_time(self.event_time)
    }
}

/// The operator state: held records grouped by key group, every group in `owned` (this
/// worker's range).
pub fn encode(held: Vec<HeldRecord>, owned: Range<u32>) -> BTreeMap<u32, Value> {
    let width = owned.end.saturating_sub(owned.start).max(1);
    let mut groups: BTreeMap<u32, Vec<HeldRecord>> = BTreeMap::new();
    for h in held {
        let bytes = serde_json::to_vec(&h.fields).unwrap_or_default();
        groups
            .entry(owned.start + key_group(&bytes, width))
            .or_default()
            .push(h);
    }
    groups
        .into_iter()
        .map(|(g, v)| (g, serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect()
}

/// Held records of the key groups this worker restores, oldest first (several old workers'
/// records interleave after a rescale; each one's order is kept).
pub fn decode(restored: BTreeMap<u32, Value>) -> Result<Vec<HeldRecord>, String> {
    let mut all = Vec::new();
    for (group, v) in restored {
        let list: Vec<HeldRecord> = serde_json::from_value(v)
            .map_err(|e| format!("key group {group} of the restored state: {e}"))?;
        all.extend(list);
    }
    all.sort_by_key(|h| h.seq);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checkpoint::key_group_range;

    fn rec(id: i64) -> Record {
        Record::new(json!({ "id": id }).as_object().unwrap().clone()).with_event_time(Some(id * 10))
    }

    #[test]
    fn round_trips_in_arrival_order_across_key_groups() {
        let held: Vec<HeldRecord> = (0..50)
            .map(|i| HeldRecord::new(i as u64, &rec(i), Some("s1"), i % 3 == 0))
            .collect();
        let state = encode(held.clone(), 0..128);
        assert!(state.len() > 1, "records spread over key groups");
        assert!(state.keys().all(|g| *g < 128));
        assert_eq!(decode(state).unwrap(), held);
    }

    /// Two workers hold records; each writes only its own key groups, so a restore (at the same
    /// or another parallelism, which takes each group from the one part holding it) loses none.
    #[test]
    fn workers_write_disjoint_groups_and_any_restore_gets_every_record() {
        let parts: Vec<BTreeMap<u32, Value>> = (0..2u32)
            .map(|w| {
                let held = (0..40)
                    .map(|i| HeldRecord::new(i as u64, &rec(i + 100 * w as i64), None, false))
                    .collect();
                encode(held, key_group_range(w, 2, 128))
            })
            .collect();
        assert!(parts[0]
            .keys()
            .all(|g| key_group_range(0, 2, 128).contains(g)));
        assert!(parts[1]
            .keys()
            .all(|g| key_group_range(1, 2, 128).contains(g)));
        for new_parallelism in [1, 2, 3] {
            let mut total = 0;
            for w in 0..new_parallelism {
                let range = key_group_range(w, new_parallelism, 128);
                let mut mine = BTreeMap::new();
                for p in &parts {
                    for (g, v) in p.range(range.clone()) {
                        assert!(
                            mine.insert(*g, v.clone()).is_none(),
                            "group {g} written twice"
                        );
                    }
                }
                total += decode(mine).unwrap().len();
            }
            assert_eq!(total, 80, "at parallelism {new_parallelism}");
        }
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_group() {
        let mut s = BTreeMap::new();
        s.insert(7, json!({"not": "a list"}));
        assert!(decode(s).unwrap_err().contains("key group 7"));
    }
}
