//! A message that is not a JSON object: `fail` stops the job naming topic, partition and offset;
//! `skip` drops and counts it; `dead_letter` writes it unchanged, with error headers, to another
//! topic. The good messages around it are delivered exactly once either way.

use rdkafka::message::{Headers, Message};

use super::super::harness::*;
use super::broker::*;

const POISON_AT: i64 = 5;

/// Ten messages on one partition; the one at offset 5 is broken, with a key and a header.
fn topic_with_poison() -> String {
    let topic = unique("poison");
    create_topic(&topic, 1);
    produce(
        &topic,
        (0..10).map(|i| {
            if i == POISON_AT {
                Rec {
                    key: Some(b"k5".to_vec()),
                    headers: vec![("trace".into(), "t5".into())],
                    value: b"{not json".to_vec(),
                    ..Rec::json(0, serde_json::json!({}))
                }
            } else {
                Rec::json(0, serde_json::json!({ "id": i }))
            }
        }),
    );
    topic
}

fn good_ids() -> Vec<i64> {
    (0..10).filter(|i| *i != POISON_AT).collect()
}

#[test]
fn fail_names_topic_partition_and_offset() {
    let topic = topic_with_poison();
    let dir = tempfile::tempdir().unwrap();
    let src = format!("    topics: [{topic}]\n    stop_at: latest");
    let o = run(&spec(dir.path(), "p.yaml", 1, &src), &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("topic {topic} partition 0 offset 5"))
            && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn skip_drops_and_counts() {
    let topic = topic_with_poison();
    let dir = tempfile::tempdir().unwrap();
    let src = format!("    topics: [{topic}]\n    on_error: skip");
    let job = Running::start(&spec(dir.path(), "p.yaml", 1, &src), &[]);
    let out = dir.path().join("out");
    wait_until(30, "the nine good ids", || {
        (count_json_field(&out, "id").len() == 9).then_some(())
    });
    let metrics = get(&job, "/metrics").unwrap();
    assert!(
        metrics.contains("weir_node_record_errors_total{job=\"ks\",node=\"src\",worker=\"0\"} 1"),
        "{metrics}"
    );
    assert!(job.kill9());
    let c = count_json_field(&out, "id");
    assert_eq!(c.keys().copied().collect::<Vec<_>>(), good_ids());
    assert!(c.values().all(|n| *n == 1));
}

#[test]
fn dead_letter_writes_the_raw_message_with_error_headers() {
    let topic = topic_with_poison();
    let dlq = format!("{topic}-dlq");
    create_topic(&dlq, 1);
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        "    topics: [{topic}]\n    stop_at: latest\n    on_error: {{ dead_letter: {{ topic: {dlq} }} }}"
    );
    restart_to_end(&spec(dir.path(), "p.yaml", 1, &src), &[]);
    let c = count_json_field(&dir.path().join("out"), "id");
    assert_eq!(c.keys().copied().collect::<Vec<_>>(), good_ids());

    let dead = read_all(&dlq);
    assert_eq!(dead.len(), 1, "one dead letter");
    let m = &dead[0];
    assert_eq!(m.payload(), Some(&b"{not json"[..]));
    assert_eq!(m.key(), Some(&b"k5"[..]));
    let headers: Vec<(String, String)> = m
        .headers()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h.key.to_string(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    let get = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no header {k}: {headers:?}"))
    };
    assert_eq!(get("trace"), "t5");
    assert_eq!(get("weir.error.topic"), topic);
    assert_eq!(get("weir.error.partition"), "0");
    assert_eq!(get("weir.error.offset"), "5");
    assert!(get("weir.error.message").contains("invalid JSON"));
}
