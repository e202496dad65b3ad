use std::time::Instant;

use clap::Args;

use super::progress;
use crate::admin::AdminToken;
use crate::engine::{self, JobOptions, JobOutcome};
use crate::metrics::Metrics;
use crate::registry::Registry;

#[derive(Args)]
pub struct RunArgs {
    /// Pipeline file (YAML).
    file: String,
    /// Start from this savepoint directory or URL instead of the latest checkpoint.
    #[arg(long)]
    from_savepoint: Option<String>,
    /// Start from the savepoint even if it holds state of nodes the spec no longer has.
    #[arg(long, env = "WEIR_ALLOW_NON_RESTORED_STATE")]
    allow_non_restored_state: bool,
    /// Start without source and operator state (stateless upgrade); TOKEN names this start so
    /// a restart with the same TOKEN resumes from its own checkpoints.
    #[arg(
        long,
        env = "WEIR_START_FRESH",
        value_name = "TOKEN",
        conflicts_with = "from_savepoint"
    )]
    start_fresh: Option<String>,
    /// Admin API address (port 0 picks a free port, printed at start). Loopback by default:
    /// bind a wider address only where a network policy limits who can reach it.
    #[arg(long, env = "WEIR_ADMIN_ADDR", default_value = "127.0.0.1:0")]
    admin_addr: String,
    /// File holding the bearer token that `POST /v1/savepoints` needs. Without it the token is
    /// `WEIR_ADMIN_TOKEN`, and without that one is generated and printed once at start.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<String>,
    /// Run only this worker (a Kubernetes pod); default: every worker in this process.
    #[arg(long, env = "WEIR_WORKER_INDEX")]
    worker: Option<u32>,
    /// Overrides the spec's parallelism.
    #[arg(long, env = "WEIR_PARALLELISM")]
    parallelism: Option<u32>,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
    /// Write a JSON summary (records, checkpoints, seconds, peak RSS) to this file at the end.
    #[arg(long)]
    summary_json: Option<String>,
    /// After the job finished or was stopped by a savepoint, keep the process (and its admin
    /// API) up until SIGTERM instead of exiting. In a pod: a container that exited 0 would be
    /// restarted into the old spec from an older checkpoint before the operator rolls it.
    #[arg(long, env = "WEIR_IDLE_WHEN_DONE")]
    idle_when_done: bool,
}

pub async fn run(registry: Registry, args: RunArgs) -> u8 {
    // Registered first thing: a SIGTERM that arrives while the job is starting (a pod
    // deleted at once, a test stopping a job that has nothing left to do) must still stop it
    // gracefully instead of killing it by the default action.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut spec = match super::load_spec(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    if let Err(errors) = crate::env_expand::expand_spec(&mut spec, &env) {
        eprintln!("error: {}", crate::Error::Spec(errors));
        return 2;
    }
    if let Some(p) = args.parallelism {
        spec.parallelism = p;
    }
    let workers = match args.worker {
        Some(w) => vec![w],
        None => (0..spec.parallelism).collect(),
    };
    let token = match admin_token(
        args.admin_token_file.as_deref(),
        std::env::var("WEIR_ADMIN_TOKEN").ok(),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    let opts = JobOptions {
        workers,
        from_savepoint: args.from_savepoint.clone(),
        allow_non_restored_state: args.allow_non_restored_state,
        start_fresh: args.start_fresh.clone(),
        metrics: Metrics::new(),
    };
    let job = match engine::start(spec, &registry, opts).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return if matches!(e, crate::Error::Spec(_)) {
                2
            } else {
                1
            };
        }
    };
    let control = job.control.clone();
    let (token, generated) = token;
    let shown = generated.then(|| token.expose().to_string());
    match crate::admin::serve(&args.admin_addr, control.clone(), token).await {
        Ok(addr) => {
            eprintln!(
                "weir: job {} running; admin API on http://{addr}",
                control.job
            );
            if let Some(t) = shown {
                // Printed once, here only: the token a local user needs for `weir savepoint`.
                eprintln!("weir: admin token (WEIR_ADMIN_TOKEN for `weir savepoint`): {t}");
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            control.stop().await;
            return 1;
        }
    }
    let stopper = control.clone();
    // Set by the first SIGTERM/SIGINT; an idle process (job done) exits on it.
    let (signalled_tx, mut signalled) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let Some(mut term) = term else { return };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = signalled_tx.send(true);
        eprintln!("weir: stopping: a final checkpoint commits and publishes what was written (signal again to exit at once)");
        stopper.stop().await;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        std::process::exit(130);
    });
    let reporter = (!args.quiet).then(|| tokio::spawn(progress::report(control.clone(), started)));
    let result = job.wait().await;
    control
        .settle_savepoints(std::time::Duration::from_secs(5))
        .await;
    if let Some(r) = reporter {
        r.abort();
    }
    let t = progress::totals(&control);
    let secs = started.elapsed().as_secs_f64();
    let rss = super::peak_rss_bytes().unwrap_or(0);
    let outcome = match &result {
        Ok(JobOutcome::Finished) => "finished",
        Ok(JobOutcome::Stopped) => "stopped",
        Err(_) => "failed",
    };
    let summary = progress::summary(&control);
    let skipped: u64 = summary.nodes.iter().map(|n| n.errors).sum();
    let dead_lettered: u64 = summary.nodes.iter().map(|n| n.dead_lettered).sum();
    let retried: u64 = summary.nodes.iter().map(|n| n.retried).sum();
    eprintln!(
        "weir: job {} {outcome} after {secs:.1}s: {} records read, {} written, {skipped} skipped or failed, {dead_lettered} dead-lettered, {retried} retried; peak RSS {} MiB",
        control.job,
        t.read,
        t.written,
        rss / (1024 * 1024)
    );
    for line in summary.lines() {
        eprintln!("{line}");
    }
    if let Some(path) = &args.summary_json {
        let summary = serde_json::json!({
            "job": control.job, "outcome": outcome, "seconds": secs, "records_read": t.read,
            "records_written": t.written, "checkpoints": t.checkpoints, "restarts": t.restarts,
            "peak_rss_bytes": rss, "checkpoints_failed": summary.checkpoints_failed,
            "last_checkpoint": summary.last_checkpoint, "nodes": summary.nodes,
            "skipped": skipped, "dead_lettered": dead_lettered, "retried": retried,
        });
        if let Err(e) = std::fs::write(path, summary.to_string()) {
            eprintln!("error: writing {path}: {e}");
        }
    }
    match result {
        Ok(_) => {
            if args.idle_when_done && !*signalled.borrow() {
                eprintln!("weir: job ended; idle until stopped (SIGTERM)");
                // Ends when the signal task reports SIGTERM/SIGINT (or is gone).
                let _ = signalled.wait_for(|s| *s).await;
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The admin API token: from `--admin-token-file`, else `WEIR_ADMIN_TOKEN`, else a new one
/// (`true`: generated, so the user has to be shown it).
fn admin_token(file: Option<&str>, env: Option<String>) -> Result<(AdminToken, bool), String> {
    match (file, env.filter(|v| !v.is_empty())) {
        (Some(_), Some(_)) => Err(
            "--admin-token-file and WEIR_ADMIN_TOKEN are both set; give the admin token one way"
                .into(),
        ),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-token-file {path}: {e}"))?;
            Ok((
                AdminToken::new(&text, &format!("--admin-token-file {path}"))?,
                false,
            ))
        }
        (None, Some(v)) => Ok((AdminToken::new(&v, "WEIR_ADMIN_TOKEN")?, false)),
        (None, None) => Ok((AdminToken::generate(), true)),
    }
}

#[cfg(test)]
mod tests {
    use super::admin_token;

    #[test]
    fn the_admin_token_comes_from_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "token-from-the-file-0001\n").unwrap();
        let file = file.to_str().unwrap();
        let (t, generated) = admin_token(Some(file), None).unwrap();
        assert_eq!((t.expose(), generated), ("token-from-the-file-0001", false));
        let (t, generated) = admin_token(None, Some("token-from-the-env-0001".into())).unwrap();
        assert_eq!((t.expose(), generated), ("token-from-the-env-0001", false));
        let (_, generated) = admin_token(None, Some(String::new())).unwrap();
        assert!(generated);
        let e = admin_token(Some(file), Some("token-from-the-env-0001".into())).unwrap_err();
        assert!(e.contains("both set"), "{e}");
        let e = admin_token(Some("/no/such/token"), None).unwrap_err();
        assert!(e.starts_with("--admin-token-file /no/such/token:"), "{e}");
        let e = admin_token(None, Some("short".into())).unwrap_err();
        assert!(
            e.starts_with("WEIR_ADMIN_TOKEN:") && !e.contains("short"),
            "{e}"
        );
    }
}
