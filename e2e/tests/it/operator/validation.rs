//! The CRDs on the real API server: every example applies with strict field validation (nothing
//! pruned, nothing unknown), and every validation rule refuses the resource meant to break it,
//! with its message (the cases of crds/tests/rejected.yaml, also checked offline).

use std::path::PathBuf;

use weir_crds::Connector;

use super::{Install, Op};
use crate::harness::repo_root;

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_apply_strictly_and_every_rule_refuses_its_case() {
    let op = Op::install("crds", Install::default()).await;
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        // Server-side dry run: the whole validation (schema, pruning, CEL rules), nothing created
        // for the operator to act on.
        let out = op.kubectl(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
            ],
            Some(&text),
        );
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nested Connector properties survive a real apply (the server used to prune them).
    let kafka =
        std::fs::read_to_string(repo_root().join("examples/k8s/kafka-exactly-once.yaml")).unwrap();
    let connector = kafka.split("\n---\n").next().unwrap();
    op.apply(connector);
    let stored = op.env.api::<Connector>().get("kafka").await.unwrap();
    assert_eq!(
        stored.spec.properties["properties"]["client.id"], "weir",
        "{:?}",
        stored.spec.properties
    );

    let cases = weir_crds::rejected::cases(&repo_root().join("examples/k8s")).unwrap();
    for case in &cases {
        let yaml = serde_norway::to_string(&case.doc).unwrap();
        // `create`, not `apply`: a server-side apply of a case named like the Connector stored
        // above would merge into it and keep the fields the case removes.
        let out = op.kubectl(
            &["create", "--dry-run=server", "--validate=strict", "-f", "-"],
            Some(&yaml),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: accepted", case.what);
        assert!(
            err.contains(&case.expect),
            "{}: expected {:?} in {err}",
            case.what,
            case.expect
        );
    }
    for message in weir_crds::rejected::rule_messages() {
        assert!(
            cases.iter().any(|c| message.contains(&c.expect)),
            "no case exercises the rule {message:?}"
        );
    }
    op.finish().await;
}

/// A malformed job selector stops the operator at start with the API server's message, naming
/// the setting, instead of an operator that looks healthy while every watch fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_job_selector_stops_the_operator_at_start_naming_it() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(super::bin_dir().join("weir-operator"))
        .arg("run")
        .env("KUBECONFIG", crate::harness::kubeconfig())
        .env("WATCH_NAMESPACES", "default")
        .env("JOB_SELECTOR", "team in (a")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = status.unwrap_or_else(|| panic!("still running after 30 s: {log}"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("JOB_SELECTOR") && log.contains("team in (a"),
        "names the setting and the selector: {log}"
    );
}
