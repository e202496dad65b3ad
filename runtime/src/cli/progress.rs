//! Progress on stderr at most once a second, and the final summary.

use std::time::{Duration, Instant};

use crate::engine::{JobControl, WorkerStatus};
use weir_crds::contract::BreakerState;

/// Sum of a per-node counter family over the given nodes (every worker).
fn sum_counter(control: &JobControl, family: &str, nodes: &[String]) -> u64 {
    sum_counters(
        control,
        |f| f == family,
        |node| nodes.iter().any(|n| n == node),
    )
}

/// Sum of this job's counters whose family and `node` label match (every worker).
fn sum_counters(
    control: &JobControl,
    family: impl Fn(&str) -> bool,
    node: impl Fn(&str) -> bool,
) -> u64 {
    // Connectors keep their own counters (retries, dead letters) in the process's default
    // registry, which `/metrics` renders beside the runtime's.
    let mut families = control.metrics.registry.gather();
    families.extend(prometheus::gather());
    families
        .iter()
        .filter(|f| family(f.name()))
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| {
            let label = |name: &str, ok: &dyn Fn(&str) -> bool| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == name && ok(l.value()))
            };
            label("job", &|v| v == control.job) && label("node", &node)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// One node's records over every worker, for the summary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NodeTotals {
    /// `sources[0]`, `transforms[1]`, `sinks[0]`.
    pub path: String,
    pub name: String,
    pub records_in: u64,
    pub records_out: u64,
    /// Records that failed and were skipped by `on_error` (or failed the job).
    pub errors: u64,
    /// Records a `critical: false` sink diverted to its dead-letter target.
    pub dead_lettered: u64,
    /// Retried attempts (lookups, entries, documents, publishes; whatever the node retries).
    pub retried: u64,
}

/// What the summary at the end of a run says.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub nodes: Vec<NodeTotals>,
    pub workers: usize,
    pub checkpoints_completed: u64,
    pub checkpoints_failed: u64,
    pub last_checkpoint: Option<u64>,
    pub restarts: u32,
}

pub fn summary(control: &JobControl) -> Summary {
    let roles = [
        ("sources", &control.sources),
        ("transforms", &control.transforms),
        ("sinks", &control.sinks),
    ];
    let nodes = roles
        .into_iter()
        .flat_map(|(list, names)| {
            names.iter().enumerate().map(move |(i, name)| {
                let one = |family: &str| sum_counter(control, family, std::slice::from_ref(name));
                NodeTotals {
                    path: format!("{list}[{i}]"),
                    name: name.clone(),
                    records_in: one("weir_node_records_in_total"),
                    records_out: one("weir_node_records_out_total"),
                    errors: one("weir_node_record_errors_total"),
                    dead_lettered: one("weir_sink_dead_letter_records_total"),
                    retried: sum_counters(
                        control,
                        |f| f.contains("retri") || f.contains("retry"),
                        |n| n == name,
                    ),
                }
            })
        })
        .collect();
    let workers = control.snapshot();
    Summary {
        nodes,
        workers: workers.len(),
        checkpoints_completed: workers.iter().map(|w| w.checkpoints_completed).sum(),
        checkpoints_failed: workers.iter().map(|w| w.checkpoints_failed).sum(),
        last_checkpoint: workers
            .iter()
            .filter_map(|w| w.last_checkpoint.as_ref().map(|c| c.id))
            .max(),
        restarts: workers.iter().map(|w| w.restarts).sum(),
    }
}

impl Summary {
    /// The summary's lines after the first: checkpoints and restarts, then one line per node.
    pub fn lines(&self) -> Vec<String> {
        let cp = match (self.workers, self.last_checkpoint) {
            (_, None) => format!(
                "checkpoints: none completed, {} failed",
                self.checkpoints_failed
            ),
            // Each worker numbers its own checkpoints: the counts add up, the ids do not.
            (1, Some(last)) => format!(
                "checkpoints: {} completed, {} failed, last id {last}",
                self.checkpoints_completed, self.checkpoints_failed
            ),
            (n, Some(last)) => format!(
                "checkpoints: {} completed, {} failed (summed over {n} workers), newest id {last}",
                self.checkpoints_completed, self.checkpoints_failed
            ),
        };
        let mut out = vec![format!("  {cp}; restarts: {}", self.restarts)];
        for n in &self.nodes {
            let mut parts = Vec::new();
            if !n.path.starts_with("sources") {
                parts.push(format!("in {}", n.records_in));
            }
            if !n.path.starts_with("sinks") {
                parts.push(format!("out {}", n.records_out));
            }
            for (count, word) in [
                (n.errors, "skipped or failed"),
                (n.dead_lettered, "dead-lettered"),
                (n.retried, "retried"),
            ] {
                if count > 0 {
                    parts.push(format!("{word} {count}"));
                }
            }
            out.push(format!("  {} {}: {}", n.path, n.name, parts.join(", ")));
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_name_each_node_and_do_not_mix_ids_with_counts() {
        let node = |path: &str, name: &str, i, o, e, d, r| NodeTotals {
            path: path.into(),
            name: name.into(),
            records_in: i,
            records_out: o,
            errors: e,
            dead_lettered: d,
            retried: r,
        };
        let s = Summary {
            nodes: vec![
                node("sources[0]", "g", 0, 100, 0, 0, 0),
                node("transforms[0]", "f", 100, 90, 3, 0, 0),
                node("sinks[0]", "out", 90, 0, 0, 5, 7),
            ],
            workers: 2,
            checkpoints_completed: 234,
            checkpoints_failed: 1,
            last_checkpoint: Some(173),
            restarts: 1,
        };
        assert_eq!(
            s.lines(),
            [
                "  checkpoints: 234 completed, 1 failed (summed over 2 workers), newest id 173; restarts: 1",
                "  sources[0] g: out 100",
                "  transforms[0] f: in 100, out 90, skipped or failed 3",
                "  sinks[0] out: in 90, dead-lettered 5, retried 7",
            ]
        );
        let one = Summary {
            workers: 1,
            nodes: vec![],
            ..s
        };
        assert_eq!(
            one.lines()[0],
            "  checkpoints: 234 completed, 1 failed, last id 173; restarts: 1"
        );
    }
}
