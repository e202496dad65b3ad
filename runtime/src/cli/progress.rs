//! Progress on stderr at most once a second, and the final summary.

use std::time::{Duration, Instant};

use crate::engine::status::BreakerState;
use crate::engine::{JobControl, WorkerStatus};

/// Sum of a per-node counter family over the given nodes (every worker).
fn sum_counter(control: &JobControl, family: &str, nodes: &[String]) -> u64 {
    control
        .metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            let job = m
                .get_label()
                .iter()
                .any(|l| l.name() == "job" && l.value() == control.job);
            job && m
                .get_label()
                .iter()
                .any(|l| l.name() == "node" && nodes.iter().any(|n| n == l.value()))
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

pub struct Totals {
    /// Records emitted by sources.
    pub read: u64,
    /// Records handed to sinks.
    pub written: u64,
    pub checkpoints: u64,
    pub last_checkpoint: Option<u64>,
    /// In-process restarts over every worker.
    pub restarts: u32,
}

pub fn totals(control: &JobControl) -> Totals {
    let workers = control.snapshot();
    Totals {
        read: sum_counter(control, "weir_node_records_out_total", &control.sources),
        written: sum_counter(control, "weir_node_records_in_total", &control.sinks),
        checkpoints: workers.iter().map(|w| w.checkpoints_completed).sum(),
        last_checkpoint: workers
            .iter()
            .filter_map(|w| w.last_checkpoint.as_ref().map(|c| c.id))
            .max(),
        restarts: workers.iter().map(|w| w.restarts).sum(),
    }
}

/// What is wrong right now, for the progress line: workers waiting to restart (with the cause
/// and the backoff) and open circuit breakers.
pub fn troubles(workers: &[WorkerStatus]) -> Vec<String> {
    let mut out = Vec::new();
    for w in workers {
        if let Some(r) = &w.restart {
            let cause = w.failures.last().map(|f| f.cause.as_str()).unwrap_or("?");
            out.push(format!(
                "worker {} restarting in {:.1}s (attempt {}): {cause}",
                w.worker,
                r.delay_ms as f64 / 1000.0,
                r.attempt
            ));
        }
        for (sink, b) in &w.breakers {
            if b.state != BreakerState::Closed {
                out.push(format!(
                    "worker {} sink {sink}: circuit {}, {} records dead-lettered",
                    w.worker,
                    b.state.name().replace('_', "-"),
                    b.dead_lettered
                ));
            }
        }
    }
    out
}

/// Prints a progress line every second until the task is dropped.
pub async fn report(control: JobControl, started: Instant) {
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let t = totals(&control);
        let now = Instant::now();
        let rate = t.read.saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, t.read);
        let cp = t
            .last_checkpoint
            .map(|c| format!("checkpoint {c}"))
            .unwrap_or_else(|| "no checkpoint yet".into());
        let restarts = match t.restarts {
            0 => String::new(),
            n => format!(", {n} restart(s)"),
        };
        let mut troubles = troubles(&control.snapshot()).join("; ");
        if !troubles.is_empty() {
            troubles.insert_str(0, "; ");
        }
        eprintln!(
            "[{:>6.1}s] {} records read ({:.0}/s), {} written, {cp}{restarts}{troubles}",
            started.elapsed().as_secs_f64(),
            t.read,
            rate,
            t.written
        );
    }
}
