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

/// `weir validate` and `weir run` on the same spec: both exit 2 with every needle on stderr,
/// and the run ends before running anything (it never reaches the admin API line).
fn refused_by_validate_and_run(spec_text: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "p.yaml", spec_text);
    for args in [vec!["validate"], vec!["run", "--quiet"]] {
        let started = std::time::Instant::now();
        let o = weir().args(&args).arg(&spec).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
        assert!(
            !err.contains("admin API"),
            "{args:?} started the job: {err}"
        );
    }
}

fn with_transform(transform: &str) -> String {
    format!("{HEAD}transforms:\n  - {transform}\nsinks:\n  - {{ name: s, type: blackhole }}\n")
}

#[test]
fn cel_expressions_too_deep_or_too_long_are_errors_not_stack_overflows() {
    let chain = vec!["1"; 3000].join("+");
    refused_by_validate_and_run(
        &with_transform(&format!("{{ name: f, type: filter, expr: '{chain} > 0' }}")),
        &["transforms[0].expr: the expression is 6003 bytes long; at most 4096"],
    );
    let chain = vec!["id"; 1000].join("+");
    refused_by_validate_and_run(
        &with_transform(&format!("{{ name: f, type: filter, expr: '{chain} > 0' }}")),
        &["transforms[0].expr: invalid CEL expression", "at most 32"],
    );
    let parens = format!("{}id{}", "(".repeat(2000), ")".repeat(2000));
    refused_by_validate_and_run(
        &with_transform(&format!(
            "{{ name: m, type: map, fields: {{ x: '{parens}' }} }}"
        )),
        &["transforms[0].fields.x: brackets nested 2000 deep; at most 32"],
    );
}

#[test]
fn sizes_and_counts_beyond_their_bounds_are_errors() {
    refused_by_validate_and_run(
        &(HEAD.replace(
            "{ id: { kind: sequence } }",
            "{ s: { kind: string, length: 4611686018427387904 } }",
        ) + "sinks:\n  - { name: s, type: blackhole }\n"),
        &["sources[0].fields.s.length: must be at most 1048576"],
    );
    refused_by_validate_and_run(
        &(HEAD.replace("count: 3,", "count: 3, splits: 4294967295,")
            + "sinks:\n  - { name: s, type: blackhole }\n"),
        &["sources[0].splits: must be from 1 to 4096"],
    );
    refused_by_validate_and_run(
        &format!("parallelism: 100000\nmax_parallelism: 100000\n{HEAD}sinks:\n  - {{ name: s, type: blackhole }}\n"),
        &["parallelism: must be at most 1024", "max_parallelism: must be at most 32768"],
    );
    refused_by_validate_and_run(
        &format!("{HEAD}sinks:\n  - {{ name: s, type: filesystem, path: /tmp/x, format: json, rolling: {{ max_part_size: 99999999999999PiB }} }}\n"),
        &["sinks[0].rolling.max_part_size: \"99999999999999PiB\" is too large; at most 1TiB"],
    );
    refused_by_validate_and_run(
        &format!("{HEAD}sinks:\n  - {{ name: s, type: blackhole }}\n").replace(
            "storage: /tmp/weir-never",
            "storage: /tmp/weir-never, interval: 100000000d",
        ),
        &["checkpoint.interval: \"100000000d\" is too long; at most 365d"],
    );
}

#[test]
fn deeply_nested_or_huge_yaml_is_refused_before_parsing() {
    let started = std::time::Instant::now();
    refused_by_validate_and_run(
        &format!("{HEAD}sinks: {}\n", "[".repeat(100_000)),
        &["nesting deeper than 64 levels at line 5"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    refused_by_validate_and_run(
        &format!(
            "{HEAD}sinks:\n  - {{ name: s, type: blackhole }}\n# {}\n",
            "x".repeat(2 << 20)
        ),
        &["at most 1048576 bytes (1 MiB)"],
    );
}

#[test]
fn non_finite_numbers_in_settings_are_errors_not_unset() {
    refused_by_validate_and_run(
        &(HEAD.replace("count: 3", "count: 3, rate: .nan")
            + "sinks:\n  - { name: s, type: blackhole }\n"),
        &["sources[0].rate: expected a finite number, got .nan"],
    );
    refused_by_validate_and_run(
        &(HEAD.replace("count: 3", "count: 3, rate: -.inf")
            + "sinks:\n  - { name: s, type: blackhole }\n"),
        &["sources[0].rate: expected a finite number, got -.inf"],
    );
}

#[test]
fn null_storage_and_watermark_without_a_time_are_errors() {
    refused_by_validate_and_run(
        &format!("{HEAD}sinks:\n  - {{ name: s, type: blackhole }}\n")
            .replace("storage: /tmp/weir-never", "storage: null"),
        &["checkpoint.storage: expected a string, got null"],
    );
    refused_by_validate_and_run(
        &with_transform("{ name: w, type: watermark, max_out_of_orderness: 1s }"),
        &["transforms[0].field: required: the source \"g\" sets no event time"],
    );
    // With the source's event time it is fine.
    let dir = tempfile::tempdir().unwrap();
    let ok = write(
        dir.path(),
        "p.yaml",
        &with_transform("{ name: w, type: watermark, max_out_of_orderness: 1s }")
            .replace("count: 3,", "count: 3, event_time: id,"),
    );
    let o = weir().arg("validate").arg(&ok).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn messages_name_the_path_once_and_in_words() {
    for (spec, expected) in [
        (
            format!("{HEAD}sinks:\n  - {{ name: s, type: blackhole }}\n").replace("storage: /tmp/weir-never", "storage: /tmp/weir-never, interval: 5x"),
            "error: p.yaml: checkpoint.interval: expected a duration like 500ms, 1s or 15m, got \"5x\"",
        ),
        (
            format!("{HEAD}sinks:\n  - {{ name: s, type: filesystem, format: json }}\n"),
            "error: p.yaml: sinks[0].path: required, but missing",
        ),
        (
            HEAD.replace("count: 3", "count: 99999999999999999999") + "sinks:\n  - { name: s, type: blackhole }\n",
            "error: p.yaml: sources[0].count: 99999999999999999999 is too large; integers range from",
        ),
        (
            format!("parallelism: -1\n{HEAD}sinks:\n  - {{ name: s, type: blackhole }}\n"),
            "error: p.yaml: parallelism: invalid type: integer `-1`, expected a whole number from 0 to 4294967295",
        ),
        (
            HEAD.replace("kind: sequence", "kind: sequnce") + "sinks:\n  - { name: s, type: blackhole }\n",
            "error: p.yaml: sources[0].fields.id.kind: unknown variant `sequnce`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.yaml", &spec);
        let o = weir().current_dir(dir.path()).arg("validate").arg("p.yaml").output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.starts_with(expected), "expected {expected:?}, got {err}");
        drop(p);
    }
}

#[test]
fn a_line_that_is_not_utf8_is_a_bad_record_for_on_error_not_a_failed_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, b"id,name\n1,ann\n2,\xff\xfe\n3,cy\n").unwrap();
    let out = dir.path().join("out");
    let spec = |on_error: &str| {
        write(dir.path(), "p.yaml", &format!(
            "name: t\ncheckpoint: {{ storage: {} }}\nsources:\n  - {{ name: f, type: file, path: {}, format: csv, csv: {{ infer_types: true }}, on_error: {on_error} }}\n\
             sinks:\n  - {{ name: s, type: filesystem, path: {}, format: json }}\n",
            dir.path().join(format!("state-{on_error}")).display(), input.display(), out.display()))
    };
    let o = run(&spec("fail"), &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("in.csv:3") && err.contains("invalid UTF-8"),
        "{err}"
    );
    let o = run(&spec("skip"), &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let counts = count_json_field(&out, "id");
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
}

#[test]
fn watermark_settings_that_could_never_work_are_errors() {
    refused_by_validate_and_run(
        &with_transform("{ name: w, type: watermark, field: '', max_out_of_orderness: 1s }"),
        &["transforms[0].field: must not be empty (leave it out to use the time the source set)"],
    );
    refused_by_validate_and_run(
        &with_transform(
            "{ name: w, type: watermark, field: id, max_out_of_orderness: 1s, idleness: 0s }",
        ),
        &["transforms[0].idleness: must be more than 0s (every split would count as idle)"],
    );
}
