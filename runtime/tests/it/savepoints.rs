//! Savepoint taken, job stopped, restarted from it at another parallelism: still exactly once.

use std::path::Path;
use std::time::Duration;

use super::harness::*;

const N: i64 = 40_000;

fn spec(dir: &Path, parallelism: u32) -> std::path::PathBuf {
    write(
        dir,
        &format!("p{parallelism}.yaml"),
        &format!(
            r#"name: sp
parallelism: {parallelism}
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 20000
    splits: 6
    fields:
      id: {{ kind: sequence }}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            state = dir.join("state").display(),
            out = dir.join("out").display()
        ),
    )
}

/// Runs for a while, then `weir savepoint --stop`; returns the savepoint path.
fn run_then_stop_with_savepoint(spec: &Path, args: &[&str]) -> String {
    let job = Running::start(spec, args);
    job.wait_for_metric("weir_node_records_in_total", "node=\"out\"", 1.0);
    let path = job.stop_with_savepoint();
    assert!(Path::new(&path).join("_SAVEPOINT.json").exists(), "{path}");
    path
}

#[test]
fn rescale_one_to_two_to_one_through_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = spec(dir.path(), 1);
    let p2 = spec(dir.path(), 2);
    let sp1 = run_then_stop_with_savepoint(&p1, &[]);
    let partial = count_json_field(&dir.path().join("out"), "id").len() as i64;
    assert!(
        partial > 0 && partial < N,
        "the first run stopped part way ({partial})"
    );
    let sp2 = run_then_stop_with_savepoint(&p2, &["--from-savepoint", &sp1]);
    assert_ne!(sp1, sp2);
    restart_to_end(&p1, &["--from-savepoint", &sp2]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}

#[test]
fn restart_with_the_same_savepoint_flag_resumes_from_newer_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = spec(dir.path(), 1);
    let p2 = spec(dir.path(), 2);
    let sp = run_then_stop_with_savepoint(&p1, &[]);
    // As a pod restarted with the same arguments would: crash once after progress was made.
    let job = weir_job(&p2).args(&["--from-savepoint", &sp]);
    job.run_until_killed(&Kill::At("after_commit", 6));
    job.restart_to_end();
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}

#[test]
fn status_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let p = spec(dir.path(), 2);
    let job = Running::start(&p, &[]);
    std::thread::sleep(Duration::from_millis(600));
    let get = |path: &str| -> String {
        let o = std::process::Command::new("curl")
            .args(["-sf", &format!("{}{path}", job.admin)])
            .output()
            .unwrap();
        assert!(o.status.success(), "GET {path}");
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(get("/healthz").trim(), "ok");
    let status: serde_json::Value = serde_json::from_str(&get("/v1/status")).unwrap();
    assert_eq!(status["parallelism"], 2);
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    assert!(
        status["workers"][0]["last_checkpoint"]["id"]
            .as_u64()
            .unwrap()
            >= 1,
        "{status}"
    );
    let metrics = get("/metrics");
    assert!(
        metrics.contains("weir_checkpoint_completed_total{job=\"sp\",worker=\"1\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_node_records_out_total{job=\"sp\",node=\"gen\",worker=\"0\"}"));
    assert!(job.kill9());
}

#[test]
fn sigterm_finishes_the_checkpoint_in_flight_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let p = spec(dir.path(), 2);
    let job = Running::start(&p, &[]);
    job.wait_for_metric("weir_node_records_in_total", "node=\"out\"", 1.0);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(job.child.id() as i32, libc::SIGTERM) };
    let out = job.wait();
    assert!(
        out.status.success(),
        "SIGTERM must end the job with exit 0: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("stopped"), "{}", stderr(&out));
    let partial = count_json_field(&dir.path().join("out"), "id").len() as i64;
    assert!(partial < N, "stopped before the end ({partial})");
    restart_to_end(&p, &[]);
    assert_exactly_once(&count_json_field(&dir.path().join("out"), "id"), N);
}

#[test]
fn a_savepoint_with_state_for_a_removed_node_needs_allow_non_restored_state() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = spec(dir.path(), 1);
    let sp = run_then_stop_with_savepoint(&p1, &[]);
    // The same job with its source renamed: the old source's positions have nowhere to go.
    let renamed = std::fs::read_to_string(&p1)
        .unwrap()
        .replace("name: gen", "name: gen2");
    let p2 = write(dir.path(), "renamed.yaml", &renamed);
    let o = run(&p2, &["--from-savepoint", &sp], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("source gen") && err.contains("--allow-non-restored-state"),
        "{err}"
    );
    let o = run(
        &p2,
        &["--from-savepoint", &sp],
        &[("WEIR_ALLOW_NON_RESTORED_STATE", "true")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The renamed source starts over, so ids written before the savepoint appear twice: that is
    // what dropping the old positions means.
    let counts = count_json_field(&dir.path().join("out"), "id");
    assert_eq!(counts.len() as i64, N);
    assert!(counts.values().any(|&c| c == 2));
}

#[test]
fn env_references_are_expanded_and_an_unset_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(spec(dir.path(), 1))
        .unwrap()
        .replace(
            &format!("path: {}", dir.path().join("out").display()),
            "path: ${env:WEIR_TEST_OUT}",
        );
    let p = write(dir.path(), "env.yaml", &text);
    let o = run(&p, &[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sinks[0].path") && stderr(&o).contains("WEIR_TEST_OUT"),
        "{}",
        stderr(&o)
    );
    let out = dir.path().join("env-out");
    let o = run(&p, &[], &[("WEIR_TEST_OUT", out.to_str().unwrap())]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_exactly_once(&count_json_field(&out, "id"), N);
}

#[test]
fn start_fresh_drops_positions_and_a_restart_with_the_same_token_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = spec(dir.path(), 2);
    let out = dir.path().join("out");
    run_then_stop_with_savepoint(&p, &[]);
    let before = count_json_field(&out, "id");
    assert!(!before.is_empty() && (before.len() as i64) < N);
    // A stateless start reads everything again; it crashes once and is restarted with the
    // same token, which must resume that run rather than start a third time.
    let job = weir_job(&p).args(&["--start-fresh", "gen-2"]);
    job.run_until_killed(&Kill::At("after_commit", 6));
    job.restart_to_end();
    let after = count_json_field(&out, "id");
    assert_eq!(after.len() as i64, N);
    for (id, n) in &after {
        let expected = before.get(id).copied().unwrap_or(0) + 1;
        assert_eq!(
            *n, expected,
            "id {id}: the fresh run wrote it {n} times in all"
        );
    }
}
