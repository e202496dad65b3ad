//! Ordering keys end to end: the sink publishes records keyed by a field (and attributes from
//! fields) to a topic whose subscription delivers in order; two workers share that
//! subscription and each writes every key it receives in publish order.

use std::collections::BTreeMap;

use super::emulator::*;
use crate::harness::*;

const N: i64 = 3_000;

#[test]
fn per_key_order_survives_the_sink_and_two_workers_sharing_the_subscription() {
    let Some(host) =
        emulator("per_key_order_survives_the_sink_and_two_workers_sharing_the_subscription")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let id = unique("order");
    create(&host, &id, 10, true);
    let publish = write(
        dir.path(),
        "publish.yaml",
        &format!(
            r#"name: ps-order-publish
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    splits: 1
    fields:
      id: {{ kind: sequence }}
      key: {{ kind: int, min: 0, max: 4, prefix: k }}
sinks:
  - name: out
    type: pubsub
    topic: {topic}
    emulator_host: "{host}"
    ordering_key_field: key
    attributes: {{ origin: id }}
    batching: {{ max_messages: 100, max_delay: 5ms }}
"#,
            state = dir.path().join("publish-state").display(),
            topic = topic_path(&id),
        ),
    );
    restart_to_end(&publish, &[]);
    let read = spec(
        dir.path(),
        &host,
        &id,
        2,
        "300ms",
        "    stop_after_idle: 5s\n    metadata: { message_id: _mid, ordering_key: _key, attributes: _attrs }",
    );
    run_to_end(&read);
    let out = dir.path().join("out");
    assert_once(&out, N);
    // Each worker's parts in the order it committed them.
    let mut parts: Vec<(u32, u64, std::path::PathBuf)> = visible_files(&out)
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            let mut it = name.rsplitn(3, '-');
            let n: u64 = it.next().unwrap().parse().unwrap();
            let w: u32 = it.next().unwrap().parse().unwrap();
            (w, n, p)
        })
        .collect();
    parts.sort();
    let mut last: BTreeMap<(u32, String), i64> = BTreeMap::new();
    let mut keys_seen = 0;
    for (w, _, p) in &parts {
        for line in std::fs::read_to_string(p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["id"].as_i64().unwrap();
            let key = v["_key"]
                .as_str()
                .expect("ordering key in the output")
                .to_string();
            assert_eq!(v["key"], v["_key"], "the ordering key is the key field");
            assert_eq!(
                v["_attrs"]["origin"],
                id.to_string(),
                "attribute from a field"
            );
            let prev = last.insert((*w, key.clone()), id);
            if prev.is_none() {
                keys_seen += 1;
            }
            assert!(
                prev.is_none_or(|p| p < id),
                "worker {w}: key {key}: id {id} after {prev:?}"
            );
        }
    }
    assert!(
        keys_seen >= 5,
        "every key arrived ({keys_seen} worker/key pairs)"
    );
}
