//! What a checkpoint holds, and how a restored checkpoint is split among the new workers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use weir_crds::contract::{SavepointManifest, FORMAT_VERSION};

/// One worker's part of a checkpoint or savepoint (`state.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerCheckpoint {
    pub version: u32,
    pub job: String,
    pub id: u64,
    pub worker: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub savepoint: bool,
    pub timestamp_ms: i64,
    /// The savepoint this run started from, carried by every later checkpoint, so a restart
    /// with the same `--from-savepoint` resumes from the newest checkpoint instead.
    #[serde(default)]
    pub origin: Option<String>,
    /// Split positions per source node.
    pub sources: BTreeMap<String, BTreeMap<String, Value>>,
    /// Keyed state per transform node, by key group.
    pub operators: BTreeMap<String, BTreeMap<u32, Value>>,
    pub sinks: BTreeMap<String, SinkCheckpoint>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkCheckpoint {
    /// One state per worker whose work this sink holds (several right after a rescale).
    pub states: Vec<Value>,
    /// Everything pre-committed up to this checkpoint and not yet known to be committed.
    pub committables: Vec<Value>,
}

/// Written after the state, atomically: a checkpoint without it does not exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub job: String,
    pub id: u64,
    pub worker: u32,
    pub parallelism: u32,
    pub savepoint: bool,
    pub timestamp_ms: i64,
    pub state_file: String,
    pub state_bytes: u64,
    pub state_crc32: u32,
}

/// The key groups `[start, end)` owned by `worker` (Flink's contiguous ranges).
pub fn key_group_range(
    worker: u32,
    parallelism: u32,
    max_parallelism: u32,
) -> std::ops::Range<u32> {
    let p = parallelism.max(1) as u64;
    let m = max_parallelism as u64;
    let w = worker as u64;
    ((w * m).div_ceil(p) as u32)..(((w + 1) * m).div_ceil(p) as u32)
}

/// The key group of a key: stable across runs and machines.
pub fn key_group(key: &[u8], max_parallelism: u32) -> u32 {
    crc32fast::hash(key) % max_parallelism.max(1)
}

/// What one new worker restores from a set of parts (its own last checkpoint, or every part of a
/// savepoint taken at any parallelism).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restore {
    pub checkpoint_id: u64,
    /// All split positions of every part: sources keep the splits they own.
    pub sources: BTreeMap<String, BTreeMap<String, Value>>,
    pub operators: BTreeMap<String, BTreeMap<u32, Value>>,
    /// States and committables of the old workers this worker takes over.
    pub sinks: BTreeMap<String, (Vec<Value>, Vec<Value>)>,
}

/// Splits restored parts among new workers: pure, so rescaling rules are tested directly.
/// Old worker `j`'s sink states and committables go to new worker `j % parallelism`.
pub fn assign(
    parts: &[WorkerCheckpoint],
    worker: u32,
    parallelism: u32,
    max_parallelism: u32,
) -> Restore {
    let mut r = Restore::default();
    let groups = key_group_range(worker, parallelism, max_parallelism);
    for part in parts {
        r.checkpoint_id = r.checkpoint_id.max(part.id);
        for (node, splits) in &part.sources {
            let entry = r.sources.entry(node.clone()).or_default();
            for (split, pos) in splits {
                entry.insert(split.clone(), pos.clone());
            }
        }
        for (node, state) in &part.operators {
            let entry = r.operators.entry(node.clone()).or_default();
            for (group, value) in state.range(groups.clone()) {
                entry.insert(*group, value.clone());
            }
        }
        if part.worker % parallelism.max(1) == worker {
            for (node, sink) in &part.sinks {
                let entry = r.sinks.entry(node.clone()).or_default();
                entry.0.extend(sink.states.iter().cloned());
                entry.1.extend(sink.committables.iter().cloned());
            }
        }
    }
    r
}

/// Nodes whose state a savepoint holds but the spec lacks (sources with positions, operators
/// with state, sinks with states or committables), sorted; restoring would drop that state.
pub fn unmapped_nodes(parts: &[WorkerCheckpoint], spec: &weir_crds::PipelineSpec) -> Vec<String> {
    let known = |list: &[weir_crds::NodeSpec], name: &str| list.iter().any(|n| n.name == name);
    let mut out = std::collections::BTreeSet::new();
    for part in parts {
        for (node, splits) in &part.sources {
            if !splits.is_empty() && !known(&spec.sources, node) {
                out.insert(format!("source {node}"));
            }
        }
        for (node, state) in &part.operators {
            if !state.is_empty() && !known(&spec.transforms, node) {
                out.insert(format!("transform {node}"));
            }
        }
        for (node, sink) in &part.sinks {
            let has_state =
                !sink.committables.is_empty() || sink.states.iter().any(|s| !s.is_null());
            if has_state && !known(&spec.sinks, node) {
                out.insert(format!("sink {node}"));
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn part(worker: u32, splits: &[&str]) -> WorkerCheckpoint {
        let mut c = WorkerCheckpoint {
            id: 7,
            worker,
            parallelism: 3,
            max_parallelism: 128,
            ..Default::default()
        };
        c.sources.insert(
            "src".into(),
            splits
                .iter()
                .map(|s| (s.to_string(), json!(worker)))
                .collect(),
        );
        c.operators.insert(
            "agg".into(),
            (0..128)
                .filter(|g| g % 3 == worker)
                .map(|g| (g, json!(g)))
                .collect(),
        );
        c.sinks.insert(
            "out".into(),
            SinkCheckpoint {
                states: vec![json!({ "w": worker })],
                committables: vec![json!(format!("c{worker}"))],
            },
        );
        c
    }

    #[test]
    fn unmapped_nodes_names_state_the_spec_cannot_take() {
        let spec = |names: [&str; 3]| {
            weir_crds::PipelineSpec::from_yaml(&format!(
                "name: j\nsources:\n- {{name: {}, type: datagen}}\ntransforms:\n- {{name: {}, type: filter, input: {}}}\nsinks:\n- {{name: {}, type: blackhole, input: {}}}\n",
                names[0], names[1], names[0], names[2], names[1]
            ))
            .unwrap()
        };
        let parts = [part(0, &["a"]), part(1, &["b"])];
        assert!(unmapped_nodes(&parts, &spec(["src", "agg", "out"])).is_empty());
        assert_eq!(
            unmapped_nodes(&parts, &spec(["src2", "agg", "out2"])),
            vec!["sink out".to_string(), "source src".to_string()]
        );
        // A renamed stateless operator loses nothing.
        let mut stateless = part(0, &["a"]);
        stateless.operators.insert("agg".into(), BTreeMap::new());
        assert!(unmapped_nodes(&[stateless], &spec(["src", "other", "out"])).is_empty());
    }

    #[test]
    fn key_group_ranges_cover_everything_once() {
        for p in 1..=7 {
            let mut seen = vec![0; 128];
            for w in 0..p {
                for g in key_group_range(w, p, 128) {
                    seen[g as usize] += 1;
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "p={p}");
        }
    }

    #[test]
    fn rescale_three_to_two_hands_every_part_to_one_worker() {
        let parts = vec![part(0, &["a"]), part(1, &["b"]), part(2, &["c"])];
        let w0 = assign(&parts, 0, 2, 128);
        let w1 = assign(&parts, 1, 2, 128);
        assert_eq!(
            w0.sources["src"].len(),
            3,
            "sources see every split and pick their own"
        );
        assert_eq!(w0.sinks["out"].1, vec![json!("c0"), json!("c2")]);
        assert_eq!(w1.sinks["out"].1, vec![json!("c1")]);
        let groups: usize = w0.operators["agg"].len() + w1.operators["agg"].len();
        assert_eq!(groups, 128);
        assert!(w0.operators["agg"].keys().all(|g| *g < 64));
        assert_eq!(w0.checkpoint_id, 7);
    }
}
