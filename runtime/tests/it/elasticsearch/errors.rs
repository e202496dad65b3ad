//! Documents the server refuses (mapping errors under a strict mapping, a missing index) and
//! records the sink cannot turn into actions (no id) follow `on_error` exactly: the good
//! documents are indexed, the poison ones fail the job naming id, index and reason, are
//! skipped, or reach the dead letters with the original document and the reason. Bad settings
//! are spec errors naming the field.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::opensearch::*;
use crate::harness::*;

const LINES: i64 = 300;

/// JSON lines: ids 0..300 with a number `n`, except those of `bad` among 50 (`n` is text: a
/// mapping error), 60 (a field the strict mapping does not know) and 70 (no id at all).
fn input(dir: &Path, bad: &[i64]) -> PathBuf {
    let mut lines = Vec::new();
    for i in 0..LINES {
        lines.push(match i {
            50 if bad.contains(&i) => r#"{"id": 50, "n": "lots"}"#.to_string(),
            60 if bad.contains(&i) => r#"{"id": 60, "n": 6, "colour": "red"}"#.to_string(),
            70 if bad.contains(&i) => r#"{"n": 7}"#.to_string(),
            i => format!(r#"{{"id": {i}, "n": {}}}"#, i * 10),
        });
    }
    write(dir, "in.jsonl", &(lines.join("\n") + "\n"))
}

fn strict_index(base: &str, prefix: &str) -> String {
    let index = unique(prefix);
    create_index(
        base,
        &index,
        1,
        json!({"dynamic": "strict", "properties": {"id": {"type": "long"}, "n": {"type": "long"}}}),
    );
    index
}

fn spec(dir: &Path, base: &str, index: &str, bad: &[i64], sink_extra: &str) -> PathBuf {
    let input = input(dir, bad);
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: es-poison
checkpoint: {{ interval: 300ms, storage: {state} }}
sources:
  - name: in
    type: file
    path: {input}
    format: json
    batch_size: 100
sinks:
  - name: search
    type: elasticsearch
    url: {base}
    index: {index}
    id_field: id
{sink_extra}"#,
            state = dir.join("state").display(),
            input = input.display(),
        ),
    )
}

fn good_ids() -> Vec<i64> {
    (0..LINES).filter(|i| ![50, 60, 70].contains(i)).collect()
}

fn ids(base: &str, index: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = read_all(base, index)
        .into_iter()
        .map(|(id, doc)| {
            assert_eq!(doc["n"], json!(doc["id"].as_i64().unwrap() * 10), "{doc}");
            id.parse().unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// The dead-letter entries for the three bad lines, by what they say.
fn assert_dead_letters(entries: &[Value], index: &str) {
    assert_eq!(entries.len(), 3, "{entries:#?}");
    let by = |needle: &str| -> &Value {
        entries
            .iter()
            .find(|e| e["document"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no dead letter with {needle}: {entries:#?}"))
    };
    let lots = by("\"lots\"");
    assert_eq!(lots["index"], index);
    assert_eq!(lots["id"], "50");
    assert_eq!(lots["status"], 400);
    assert!(
        lots["reason"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception"),
        "{lots}"
    );
    let doc: Value = serde_json::from_str(lots["document"].as_str().unwrap()).unwrap();
    assert_eq!(doc, json!({"id": 50, "n": "lots"}), "the original document");
    let colour = by("colour");
    assert_eq!(colour["id"], "60");
    assert!(
        colour["reason"]
            .as_str()
            .unwrap()
            .contains("strict_dynamic_mapping_exception"),
        "{colour}"
    );
    let no_id = by("{\"n\": 7}");
    assert!(no_id["status"].is_null(), "refused before sending: {no_id}");
    assert_eq!(no_id["reason"], "id field \"id\" is missing");
}

#[test]
fn poison_documents_go_to_a_dead_letter_index_with_the_reason() {
    let base = url();
    let index = strict_index(&base, "poison-dlq");
    let dlq = format!("{index}-dlq");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        &base,
        &index,
        &[50, 60, 70],
        &format!("    on_error: {{ dead_letter: {{ index: {dlq} }} }}\n"),
    );
    let o = run(&spec, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&base, &index), good_ids());
    let entries: Vec<Value> = read_all(&base, &dlq).into_iter().map(|(_, d)| d).collect();
    assert_dead_letters(&entries, &index);
}

#[test]
fn poison_documents_go_to_a_dead_letter_file_with_the_reason() {
    let base = url();
    let index = strict_index(&base, "poison-file");
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dead");
    let spec = spec(
        dir.path(),
        &base,
        &index,
        &[50, 60, 70],
        &format!(
            "    on_error: {{ dead_letter: {{ path: {} }} }}\n",
            dlq.display()
        ),
    );
    let o = run(&spec, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&base, &index), good_ids());
    let text = std::fs::read_to_string(dlq.join("es-poison-search-0.jsonl")).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_dead_letters(&entries, &index);
}

#[test]
fn poison_documents_are_skipped_and_logged_with_the_reason() {
    let base = url();
    let index = strict_index(&base, "poison-skip");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        &base,
        &index,
        &[50, 60, 70],
        "    on_error: skip\n",
    );
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert_eq!(ids(&base, &index), good_ids());
    assert!(log.contains("mapper_parsing_exception"), "{log}");
    assert!(log.contains("strict_dynamic_mapping_exception"), "{log}");
    assert!(
        log.contains("id field \\\"id\\\" is missing")
            || log.contains("id field \"id\" is missing"),
        "{log}"
    );
}

#[test]
fn a_poison_document_fails_the_job_naming_id_index_and_reason() {
    let base = url();
    let index = strict_index(&base, "poison-fail");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), &base, &index, &[50], "");
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("index \\\"{index}\\\", id \\\"50\\\""))
            || log.contains(&format!("index \"{index}\", id \"50\"")),
        "{log}"
    );
    assert!(log.contains("mapper_parsing_exception"), "{log}");
}

#[test]
fn a_missing_index_without_auto_creation_is_poison_and_never_retried() {
    let base = url();
    // Only names under this prefix are kept from auto-creation; other tests are not affected.
    let (s, v) = call(
        "PUT",
        &format!("{base}/_cluster/settings"),
        Some(json!({"persistent": {"action.auto_create_index": "-noauto-*,+*"}})),
    );
    assert_eq!(s, 200, "{v}");
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"id": {i}, "tenant": "{}"}}"#,
                if i == 7 { "absent" } else { "present" }
            )
        })
        .collect();
    let input = write(dir.path(), "in.jsonl", &(lines.join("\n") + "\n"));
    let stem = unique("noauto");
    create_index(&base, &format!("{stem}-present"), 1, json!({}));
    let dlq = unique("weir-dlq");
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: es-noauto
checkpoint: {{ interval: 300ms, storage: {state} }}
sources:
  - {{ name: in, type: file, path: {input}, format: json }}
sinks:
  - name: search
    type: elasticsearch
    url: {base}
    index: "{stem}-{{tenant}}"
    id_field: id
    retry: {{ backoff: 10ms, max_attempts: 3 }}
    on_error: {{ dead_letter: {{ index: {dlq} }} }}
"#,
            state = dir.path().join("state").display(),
            input = input.display(),
        ),
    );
    let o = run(&spec, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let present = read_all(&base, &format!("{stem}-present"));
    assert_eq!(present.len(), 19);
    let entries = read_all(&base, &dlq);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0].1;
    assert_eq!(e["index"], format!("{stem}-absent"));
    assert_eq!(e["status"], 404);
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("index_not_found_exception"),
        "{e}"
    );
    let (status, _) = call("GET", &format!("{base}/{stem}-absent"), None);
    assert_eq!(status, 404, "the index was not created");
}

fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "p.yaml", yaml);
    let o = weir().arg("validate").arg(&p).output().unwrap();
    (o.status.code().unwrap_or(-1), stderr(&o))
}

const HEAD: &str = "name: t\ncheckpoint: { storage: /tmp/weir-never }\nsources:\n  - { name: g, type: datagen, count: 3, fields: { id: { kind: sequence } } }\nsinks:\n";

#[test]
fn bad_settings_are_spec_errors_naming_the_field() {
    for (sink, needle) in [
        (
            "{ name: s, type: elasticsearch, url: http://es:9200, index: e, action: upsert }",
            "sinks[0].action: unknown variant `upsert`",
        ),
        (
            "{ name: s, type: elasticsearch, url: http://es:9200, index: e, action: update }",
            "sinks[0].id_field: required with action: update",
        ),
        (
            "{ name: s, type: elasticsearch, url: http://es:9200, index: logs, data_stream: {} }",
            "sinks[0].data_stream.timestamp_field: required: every data stream document needs an @timestamp",
        ),
        (
            "{ name: s, type: elasticsearch, url: http://es:9200, index: Logs }",
            "sinks[0].index",
        ),
        (
            "{ name: s, type: elasticsearch, index: e }",
            "sinks[0].url: required",
        ),
        (
            "{ name: s, type: elasticsearch, url: http://es:9200, index: e, on_error: { dead_letter: { topic: x } } }",
            "sinks[0].on_error",
        ),
    ] {
        let (code, err) = validate(&format!("{HEAD}  - {sink}\n"));
        assert_eq!(code, 2, "{sink}: {err}");
        assert!(err.contains(needle), "{sink}:\n{err}");
    }
}

#[test]
fn validate_says_a_sink_without_ids_is_at_least_once() {
    let (code, err) = validate(&format!(
        "{HEAD}  - {{ name: s, type: elasticsearch, url: http://es:9200, index: e }}\n"
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("sinks[0]: no id_field") && err.contains("at-least-once"),
        "{err}"
    );
    let (code, err) = validate(&format!(
        "{HEAD}  - {{ name: s, type: elasticsearch, url: http://es:9200, index: e, id_field: id }}\n"
    ));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("at-least-once"), "{err}");
}
