//! kill -9 at every two-phase-commit step and at random moments; the visible output must hold
//! every input record exactly once.

use std::path::Path;

use super::harness::*;

const N: i64 = 30_000;

/// A job with several checkpoints, parts that roll between checkpoints (pending files) and
/// in-progress files that span checkpoints, on two workers.
fn spec(dir: &Path, format_extra: &str) -> std::path::PathBuf {
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: eo
parallelism: 2
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 20000
    splits: 4
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 99, prefix: u }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 100ms }}
    event_time: ts
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
    rolling: {{ max_part_size: 32KiB }}
    bucket: {{ by: event_time, pattern: "hour=%H" }}{format_extra}
"#,
            state = dir.join("state").display(),
            out = dir.join("out").display()
        ),
    )
}

/// Killed once at `point`'s `hit`-th pass, restarted: every record once.
fn crash_then_finish(point: &str, hit: u32) {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    run_until_killed(&spec, Kill::At(point, hit));
    restart_to_end(&spec, &[]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}

#[test]
fn kill_before_pre_commit() {
    crash_then_finish("before_precommit", 4);
}

#[test]
fn kill_after_pre_commit() {
    crash_then_finish("after_precommit", 4);
}

#[test]
fn kill_before_the_manifest_is_written() {
    crash_then_finish("before_manifest", 3);
}

#[test]
fn kill_after_the_manifest_before_commit() {
    crash_then_finish("after_manifest", 3);
}

#[test]
fn kill_after_commit() {
    crash_then_finish("after_commit", 3);
}

#[test]
fn kill_repeatedly_at_random_moments() {
    // Twice the other tests' records, 3 s of input at 20,000/s: a kill at most 650 ms into a
    // run leaves at least 1.7 s for each of the first four runs, so each is still going when
    // its kill comes. With 1.5 s of input, two late kills left the third run too little and it
    // finished first (2 of 5 kills, once in CI).
    const RECORDS: i64 = 2 * N;
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace(&format!("count: {N}\n"), &format!("count: {RECORDS}\n"));
    assert!(text.contains(&format!("count: {RECORDS}\n")));
    std::fs::write(&spec, text).unwrap();
    // 150..650 ms into each run: before, between and during checkpoints.
    let window = ms(150)..ms(650);
    let kills = run_until_killed(&spec, Kill::AtRandom { runs: 5, window }).kills;
    assert!(
        kills >= 4,
        "only {kills} of 5 runs were still going when killed"
    );
    restart_to_end(&spec, &[]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), RECORDS);
}

#[test]
fn parquet_and_csv_survive_a_crash_after_the_manifest() {
    for format in ["csv", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        let spec_path = spec(dir.path(), "");
        let text = std::fs::read_to_string(&spec_path)
            .unwrap()
            .replace("format: json", &format!("format: {format}"));
        std::fs::write(&spec_path, text).unwrap();
        run_until_killed(&spec_path, Kill::At("after_manifest", 3));
        restart_to_end(&spec_path, &[]);
        let files = visible_files(&dir.path().join("out"));
        assert!(!files.is_empty());
        let rows: usize = files
            .iter()
            .map(|f| match format {
                "csv" => std::fs::read_to_string(f).unwrap().lines().count() - 1,
                _ => parquet_rows(f),
            })
            .sum();
        assert_eq!(rows as i64, N, "{format}");
    }
}

fn parquet_rows(f: &Path) -> usize {
    let file = std::fs::File::open(f).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    reader.metadata().file_metadata().num_rows() as usize
}
