//! Prometheus metrics, named `weir_<area>_<name>_<unit>[_total]` with labels job, worker, node.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric family of one process (all its workers).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    record_errors: IntCounterVec,
    bytes_out: IntCounterVec,
    pub checkpoints_completed: IntCounterVec,
    pub checkpoints_failed: IntCounterVec,
    pub checkpoint_duration: HistogramVec,
    pub checkpoint_size: IntGaugeVec,
    pub checkpoint_last_completed: GaugeVec,
    pub watermark: IntGaugeVec,
    pub watermark_lag: GaugeVec,
    /// In-process restarts of a worker.
    pub worker_restarts: IntCounterVec,
    /// The backoff a worker is waiting out before its restart (0 while it runs).
    pub worker_restart_backoff: GaugeVec,
    /// A non-critical sink's circuit breaker: 0 closed, 1 half-open, 2 open.
    pub sink_circuit_state: IntGaugeVec,
    pub sink_circuit_transitions: IntCounterVec,
    pub sink_dead_lettered: IntCounterVec,
}

/// Counters of one node on one worker; cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    pub records_in: IntCounter,
    pub records_out: IntCounter,
    /// Records that failed and were skipped by policy (or failed the job).
    pub record_errors: IntCounter,
    pub bytes_out: IntCounter,
}

impl NodeMetrics {
    /// Counters registered nowhere, for tests and tools.
    pub fn detached() -> Self {
        let c = || IntCounter::new("detached", "detached").expect("static metric name");
        NodeMetrics {
            records_in: c(),
            records_out: c(),
            record_errors: c(),
            bytes_out: c(),
        }
    }
}

/// A connector's metric family, put in the process's default registry (which `/metrics` serves
/// next to the runtime's); the caller makes it once per process. Registration fails only if
/// something else registered the name: the family still counts, it is just not exported twice.
pub fn global<M: prometheus::core::Collector + Clone + 'static>(family: M) -> M {
    let _ = prometheus::register(Box::new(family.clone()));
    family
}

/// A counter family of one connector's nodes (labels job, worker, node), in the default registry.
pub fn node_counter(name: &str, help: &str) -> IntCounterVec {
    global(
        IntCounterVec::new(Opts::new(name, help), &["job", "worker", "node"])
            .expect("static metric definition"),
    )
}

/// A gauge family of one connector's nodes (labels job, worker, node), in the default registry.
pub fn node_gauge(name: &str, help: &str) -> IntGaugeVec {
    global(
        IntGaugeVec::new(Opts::new(name, help), &["job", "worker", "node"])
            .expect("static metric definition"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let node = &["job", "worker", "node"];
        let worker = &["job", "worker"];
        let checkpoint_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_checkpoint_duration_seconds",
                "Time from barrier injection to commit.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            worker,
        )
        .expect("static metric definition");
        r.register(Box::new(checkpoint_duration.clone()))
            .expect("metric registered once");
        let checkpoint_size = IntGaugeVec::new(
            Opts::new("weir_checkpoint_size_bytes", "Size of the last checkpoint."),
            worker,
        )
        .expect("static metric definition");
        r.register(Box::new(checkpoint_size.clone()))
            .expect("metric registered once");
        let checkpoint_last_completed = GaugeVec::new(
            Opts::new(
                "weir_checkpoint_last_completed_timestamp_seconds",
                "Unix time of the last completed checkpoint (age = now - this).",
            ),
            worker,
        )
        .expect("static metric definition");
        r.register(Box::new(checkpoint_last_completed.clone()))
            .expect("metric registered once");
        let watermark = IntGaugeVec::new(
            Opts::new(
                "weir_watermark_milliseconds",
                "Current event-time watermark of a node.",
            ),
            node,
        )
        .expect("static metric definition");
        r.register(Box::new(watermark.clone()))
            .expect("metric registered once");
        let watermark_lag = GaugeVec::new(
            Opts::new(
                "weir_watermark_lag_seconds",
                "Processing time minus the node's watermark.",
            ),
            node,
        )
        .expect("static metric definition");
        r.register(Box::new(watermark_lag.clone()))
            .expect("metric registered once");
        let worker_restart_backoff = GaugeVec::new(
            Opts::new(
                "weir_worker_restart_backoff_seconds",
                "The backoff a failed worker waits out before it restarts (0 while it runs).",
            ),
            worker,
        )
        .expect("static metric definition");
        r.register(Box::new(worker_restart_backoff.clone()))
            .expect("metric registered once");
        let sink_circuit_state = IntGaugeVec::new(
            Opts::new(
                "weir_sink_circuit_state",
                "Circuit breaker of a critical: false sink: 0 closed, 1 half-open, 2 open.",
            ),
            node,
        )
        .expect("static metric definition");
        r.register(Box::new(sink_circuit_state.clone()))
            .expect("metric registered once");
        Metrics {
            worker_restarts: counter(
                &r,
                "weir_worker_restarts_total",
                "In-process restarts of a worker from its latest complete checkpoint.",
                worker,
            ),
            worker_restart_backoff,
            sink_circuit_state,
            sink_circuit_transitions: counter(
                &r,
                "weir_sink_circuit_transitions_total",
                "Circuit breaker transitions of a critical: false sink, by the state entered.",
                &["job", "worker", "node", "state"],
            ),
            sink_dead_lettered: counter(
                &r,
                "weir_sink_dead_letter_records_total",
                "Records a critical: false sink sent to its dead-letter sink.",
                node,
            ),
            records_in: counter(
                &r,
                "weir_node_records_in_total",
                "Records received by a node.",
                node,
            ),
            records_out: counter(
                &r,
                "weir_node_records_out_total",
                "Records emitted or written by a node.",
                node,
            ),
            record_errors: counter(
                &r,
                "weir_node_record_errors_total",
                "Records a node could not process (skipped or fatal, by policy).",
                node,
            ),
            bytes_out: counter(
                &r,
                "weir_sink_bytes_total",
                "Bytes written by a sink.",
                node,
            ),
            checkpoints_completed: counter(
                &r,
                "weir_checkpoint_completed_total",
                "Completed checkpoints.",
                worker,
            ),
            checkpoints_failed: counter(
                &r,
                "weir_checkpoint_failed_total",
                "Failed or timed-out checkpoints.",
                worker,
            ),
            checkpoint_duration,
            checkpoint_size,
            checkpoint_last_completed,
            watermark,
            watermark_lag,
            registry: r,
        }
    }

    pub fn node(&self, job: &str, worker: u32, node: &str) -> NodeMetrics {
        let w = worker.to_string();
        let l = [job, w.as_str(), node];
        NodeMetrics {
            records_in: self.records_in.with_label_values(&l),
            records_out: self.records_out.with_label_values(&l),
            record_errors: self.record_errors.with_label_values(&l),
            bytes_out: self.bytes_out.with_label_values(&l),
        }
    }

    /// The Prometheus text exposition of every metric: the runtime's, and those that operators
    /// and custom connectors registered in the process's default registry.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        if encoder.encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
