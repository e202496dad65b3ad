//! Bad input gives a clear error that names the field or record.

use super::harness::*;

fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "p.yaml", yaml);
    let o = weir().arg("validate").arg(&p).output().unwrap();
    (o.status.code().unwrap_or(-1), stderr(&o))
}

const HEAD: &str = "name: t\ncheckpoint: { storage: /tmp/weir-never }\nsources:\n  - { name: g, type: datagen, count: 3, fields: { id: { kind: sequence } } }\n";

#[test]
fn malformed_yaml_names_the_line() {
    let (code, err) = validate("name: t\nsources: [ { name: g\n");
    assert_eq!(code, 2);
    assert!(err.contains("line"), "{err}");
}

#[test]
fn unknown_field_is_named() {
    let (code, err) = validate(&format!(
        "{HEAD}sinks:\n  - {{ name: s, type: blackhole, colour: red }}\n"
    ));
    assert_eq!(code, 2);
    assert!(err.contains("sinks[0]") && err.contains("colour"), "{err}");
}

#[test]
fn bad_size_names_its_path() {
    let (code, err) = validate(&format!(
        "{HEAD}sinks:\n  - {{ name: s, type: filesystem, path: /tmp/x, format: json, rolling: {{ max_part_size: huge }} }}\n"
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("sinks[0].rolling.max_part_size: expected a size like 256MiB"),
        "{err}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let (code, err) = validate(&format!(
        "{HEAD}transforms:\n  - {{ name: f, type: filter, expr: 'id >' }}\n  - {{ name: m, type: mapp }}\nsinks:\n  - {{ name: s, type: blackhole }}\n"
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("transforms[0].expr: invalid CEL expression"),
        "{err}"
    );
    assert!(
        err.contains("transforms[1].type: unknown transform type \"mapp\""),
        "{err}"
    );
}

#[test]
fn valid_examples_pass() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart.yaml");
    let o = weir().arg("validate").arg(root).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn records_file(dir: &std::path::Path) -> std::path::PathBuf {
    write(
        dir,
        "in.jsonl",
        "{\"id\": 1, \"amount\": 5}\n{\"id\": 2}\n{\"id\": 3, \"amount\": 7}\n",
    )
}

#[test]
fn record_that_cel_cannot_evaluate_fails_the_job_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = records_file(dir.path());
    let spec = write(dir.path(), "p.yaml", &format!(
        "name: t\ncheckpoint: {{ storage: {} }}\nsources:\n  - {{ name: f, type: file, path: {}, format: json }}\n\
         transforms:\n  - {{ name: big, type: filter, expr: 'amount > 1' }}\nsinks:\n  - {{ name: s, type: filesystem, path: {}, format: json }}\n",
        dir.path().join("state").display(), input.display(), dir.path().join("out").display()));
    let o = run(&spec, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("big: record {\"id\":2}") && err.contains("no field \"amount\""),
        "{err}"
    );
    assert!(
        visible_files(&dir.path().join("out")).is_empty(),
        "nothing may be published by a failed job"
    );
}

#[test]
fn record_that_cel_cannot_evaluate_is_skipped_and_counted_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let input = records_file(dir.path());
    let out = dir.path().join("out");
    let spec = write(dir.path(), "p.yaml", &format!(
        "name: t\ncheckpoint: {{ storage: {} }}\nsources:\n  - {{ name: f, type: file, path: {}, format: json }}\n\
         transforms:\n  - {{ name: big, type: filter, expr: 'amount > 1', on_error: skip }}\nsinks:\n  - {{ name: s, type: filesystem, path: {}, format: json }}\n",
        dir.path().join("state").display(), input.display(), out.display()));
    let o = run(
        &spec,
        &[
            "--summary-json",
            dir.path().join("sum.json").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let counts = count_json_field(&out, "id");
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
}

#[test]
fn unwritable_output_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = write(dir.path(), "file", "not a directory");
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            "{}sinks:\n  - {{ name: s, type: filesystem, path: {}/out, format: json }}\n",
            HEAD.replace(
                "/tmp/weir-never",
                &dir.path().join("state").display().to_string()
            ),
            blocker.display()
        ),
    );
    let o = run(&spec, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&blocker.display().to_string()),
        "the error names the path: {err}"
    );
}

#[test]
fn corrupt_manifest_and_missing_savepoint_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let spec = write(dir.path(), "p.yaml", &format!(
        "name: t\ncheckpoint: {{ storage: {} }}\nsources:\n  - {{ name: g, type: datagen, count: 10, fields: {{ id: {{ kind: sequence }} }} }}\nsinks:\n  - {{ name: s, type: blackhole }}\n",
        state.display()));
    assert!(run(&spec, &[], &[]).status.success());
    let chk = std::fs::read_dir(state.join("t/worker-0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max()
        .unwrap();
    std::fs::write(chk.join("_MANIFEST.json"), "{ not json").unwrap();
    let o = run(&spec, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("corrupt manifest") && err.contains("_MANIFEST.json"),
        "{err}"
    );

    let o = run(
        &spec,
        &[
            "--from-savepoint",
            dir.path().join("nope").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = run(&spec, &["--from-savepoint", state.to_str().unwrap()], &[]);
    assert!(stderr(&o).contains("_SAVEPOINT.json"), "{}", stderr(&o));
}
