//! The admin API's mutating endpoints need the job's bearer token: without it a stop is refused
//! (401, logged with the caller's address, never the token) and the job keeps running; the
//! read-only endpoints stay open for probes and Prometheus.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{stderr, weir, write, Running};

/// A job that runs for a minute unless stopped.
fn long_job(dir: &Path) -> PathBuf {
    write(
        dir,
        "job.yaml",
        &format!(
            "name: guarded\nparallelism: 1\ncheckpoint: {{ interval: 200ms, storage: {state} }}\n\
             sources: [{{ name: gen, type: datagen, count: 60000, rate: 1000, fields: {{ id: {{ kind: sequence }} }} }}]\n\
             sinks: [{{ name: out, type: blackhole }}]\n",
            state = dir.join("state").display()
        ),
    )
}

/// `curl` a request; returns (HTTP status, body).
fn curl(method: &str, url: &str, auth: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(a) = auth {
        c.args(["-H", &format!("Authorization: {a}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "content-type: application/json", "-d", b]);
    }
    let o = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn a_stop_without_the_token_is_refused_and_the_job_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Running::start(&long_job(dir.path()), &[]);
    let stop = r#"{"stop": true}"#;
    let url = format!("{}/v1/savepoints", job.admin);
    let wrong = "Bearer not-the-token-but-a-guess";
    for auth in [None, Some(wrong), Some("Basic dXNlcjpwYXNz")] {
        let (code, body) = curl("POST", &url, auth, Some(stop));
        assert_eq!(code, 401, "{auth:?}: {body}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
    }
    // Read-only endpoints need nothing.
    for path in ["/healthz", "/readyz", "/metrics", "/v1/status"] {
        let (code, body) = curl("GET", &format!("{}{path}", job.admin), None, None);
        assert_eq!(code, 200, "{path}: {body}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        job.child.try_wait().unwrap().is_none(),
        "the refused stop must not stop the job"
    );
    let (_, status) = curl("GET", &format!("{}/v1/status", job.admin), None, None);
    assert!(status.contains(r#""state":"running""#), "{status}");
    // `weir savepoint` without the token says what is missing.
    let o = weir()
        .env_remove("WEIR_ADMIN_TOKEN")
        .args(["savepoint", "--stop", "--admin", &job.admin])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("401") && stderr(&o).contains("WEIR_ADMIN_TOKEN"),
        "{}",
        stderr(&o)
    );
    // With it, the stop works.
    let o = job.savepoint(true);
    assert!(o.status.success(), "savepoint failed: {}", stderr(&o));
    let token = job.token.clone();
    let out = job.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin API refused a request"))
        .collect();
    assert_eq!(refusals.len(), 4, "{log}");
    assert!(
        refusals.iter().all(|l| l.contains("caller=127.0.0.1:")),
        "{log}"
    );
    assert!(log.contains("wrong bearer token") && log.contains("no bearer token"));
    assert!(
        !log.contains("not-the-token") && !log.contains(&token),
        "{log}"
    );
}

#[test]
fn without_a_token_weir_run_generates_one_and_prints_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = weir()
        .env_remove("WEIR_ADMIN_TOKEN")
        .env("WEIR_LOG", "warn")
        .args(["run", "--quiet"])
        .arg(long_job(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut admin, mut token) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.is_none() || token.is_none() {
        assert!(Instant::now() < deadline, "no admin address and token");
        let Some(Ok(line)) = lines.next() else {
            panic!("weir run ended early")
        };
        if let Some((_, a)) = line.split_once("admin API on ") {
            admin = Some(a.trim().to_string());
        }
        if let Some((_, t)) = line.split_once("`weir savepoint`): ") {
            token = Some(t.trim().to_string());
        }
    }
    let (admin, token) = (admin.unwrap(), token.unwrap());
    assert!(
        admin.starts_with("http://127.0.0.1:"),
        "loopback by default: {admin}"
    );
    assert_eq!(token.len(), 64, "{token}");
    let o = weir()
        .env("WEIR_ADMIN_TOKEN", &token)
        .args(["savepoint", "--stop", "--admin", &admin])
        .output()
        .unwrap();
    assert!(o.status.success(), "savepoint failed: {}", stderr(&o));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains(&token)),
        "printed once only: {rest:?}"
    );
}
