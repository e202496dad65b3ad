//! The savepoint-on-upgrade flow against real `weir` workers, one process per worker as in a
//! StatefulSet: the operator's own functions trigger a stop-with-savepoint on every worker, poll
//! them, write the job's `_SAVEPOINT.json`; the job then restarts from it (at a new parallelism,
//! as a scale-up would) and every generated id is written exactly once across the upgrade.
//! The workers hold the job's token from before a rotation: the operator gets in with `previous`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use weir_crds::stream_job::OperationKind;
use weir_operator::admin::AdminClient;
use weir_operator::admin_secret::AdminTokens;
use weir_operator::lifecycle::SavepointOutcome;
use weir_operator::savepoint;
use weir_runtime::admin::AdminToken;

const N: i64 = 40_000;
/// The token the workers were started with (before a rotation).
const OLD_TOKEN: &str = "old-admin-token-0000000001";

/// `WEIR_BIN`, or `target/<profile>/weir` next to this test binary (built if missing).
fn weir_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/it-<hash> → target/debug/weir
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("weir");
    if !bin.exists() {
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "weir-runtime",
                "--bin",
                "weir",
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build for the weir binary");
        assert!(
            status.success(),
            "cargo build -p weir-runtime --bin weir failed"
        );
    }
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Worker {
    child: Child,
    url: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(spec: &Path, index: u32, parallelism: u32, from: Option<&str>) -> Worker {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(weir_bin());
    cmd.arg("run")
        .arg("--quiet")
        .arg(spec)
        .env("WEIR_WORKER_INDEX", index.to_string())
        .env("WEIR_PARALLELISM", parallelism.to_string())
        .env("WEIR_ADMIN_ADDR", &addr)
        .env("WEIR_ADMIN_TOKEN", OLD_TOKEN)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = from {
        cmd.arg("--from-savepoint").arg(p);
    }
    let child = cmd.spawn().expect("starting weir");
    let w = Worker {
        child,
        url: format!("http://{addr}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "worker {index}: admin API never came up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    w
}

fn wait_exit(mut w: Worker, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = w.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(status.success(), "{what} exited with {status}: {err}");
            return err;
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn visible_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            visible_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn id_counts(dir: &Path) -> BTreeMap<i64, usize> {
    let mut files = Vec::new();
    visible_files(dir, &mut files);
    let mut counts = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", f.display()));
            *counts.entry(v["id"].as_i64().expect("id")).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoint_upgrade_with_real_workers_is_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    let spec = dir.path().join("job.yaml");
    std::fs::write(
        &spec,
        format!(
            r#"name: upgrade
parallelism: 2
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
            state = state.display(),
            out = out.display()
        ),
    )
    .unwrap();

    // The "old" deployment: two pods.
    let workers: Vec<Worker> = (0..2).map(|i| start_worker(&spec, i, 2, None)).collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let urls: Vec<Option<String>> = workers.iter().map(|w| Some(w.url.clone())).collect();
    let admin = AdminClient::new(Duration::from_secs(5)).unwrap();
    let id = savepoint::savepoint_id(OperationKind::Upgrade, 1, Utc::now());
    let token = |t: &str| AdminToken::new(t, "test").unwrap();
    let new = token("new-admin-token-0000000002");
    // Only the new token: every worker refuses, and the error shows no token.
    let alone = AdminTokens {
        current: new.clone(),
        previous: None,
    };
    let e = savepoint::trigger_all(&admin, &urls, &id, true, &alone)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 401") && !e.contains("admin-token-000"),
        "{e}"
    );
    let rotated = AdminTokens {
        current: new,
        previous: Some(token(OLD_TOKEN)),
    };
    savepoint::trigger_all(&admin, &urls, &id, true, &rotated)
        .await
        .unwrap();

    // Poll as the reconciler does, one round at a time.
    let mut completed = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = loop {
        let answers = savepoint::poll_all(&admin, &urls, &id, &completed).await;
        let progress = savepoint::aggregate(2, completed, &answers);
        completed = progress.completed;
        match progress.outcome {
            SavepointOutcome::Completed { path } => break path,
            SavepointOutcome::Failed { error } => panic!("savepoint failed: {error}"),
            SavepointOutcome::Pending => {}
        }
        assert!(Instant::now() < deadline, "savepoint {id} never completed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(path, format!("{}/upgrade/savepoints/{id}", state.display()));
    assert!(
        !Path::new(&path)
            .join(savepoint::SAVEPOINT_MANIFEST)
            .exists(),
        "with one worker per process no worker writes the job manifest"
    );
    savepoint::complete_job_savepoint(&path, "upgrade", &id, 2, &BTreeMap::new(), Utc::now())
        .await
        .unwrap();
    for (i, w) in workers.into_iter().enumerate() {
        wait_exit(w, &format!("old worker {i} after stop-with-savepoint"));
    }
    let before: usize = id_counts(&out).len();
    assert!(
        (before as i64) < N,
        "the savepoint must be taken mid-run to prove anything ({before} of {N} already written)"
    );

    // The "new" deployment: three pods, all from the savepoint.
    let workers: Vec<Worker> = (0..3)
        .map(|i| start_worker(&spec, i, 3, Some(&path)))
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        wait_exit(w, &format!("new worker {i}"));
    }
    let counts = id_counts(&out);
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates (id, count): {dups:?}");
    let missing: Vec<i64> = (0..N).filter(|i| !counts.contains_key(i)).take(5).collect();
    assert!(missing.is_empty(), "missing ids (first 5): {missing:?}");
    assert_eq!(counts.len() as i64, N);
}
