//! The sink's own metric families, in the process's default Prometheus registry (served by the
//! admin API's `/metrics` next to the runtime's): documents sent, acknowledged, retried and
//! failed (by status class), bulk request duration and size, requests in flight and the current
//! concurrency limit.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::api::NodeContext;

struct Families {
    sent: IntCounterVec,
    acked: IntCounterVec,
    retried: IntCounterVec,
    failed: IntCounterVec,
    duration: HistogramVec,
    size: HistogramVec,
    in_flight: IntGaugeVec,
    limit: IntGaugeVec,
}

const LABELS: &[&str] = &["job", "worker", "node"];
const STATUS_LABELS: &[&str] = &["job", "worker", "node", "status"];

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            crate::metrics::global(c)
        };
        let gauge = |name: &str, help: &str| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), LABELS).expect("static metric definition");
            crate::metrics::global(g)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), LABELS)
                .expect("static metric definition");
            crate::metrics::global(h)
        };
        Families {
            sent: counter(
                "weir_elasticsearch_docs_sent_total",
                "Actions sent in _bulk requests (each attempt counts).",
                LABELS,
            ),
            acked: counter(
                "weir_elasticsearch_docs_acked_total",
                "Actions the server acknowledged (a 409 replay of an existing document counts).",
                LABELS,
            ),
            retried: counter(
                "weir_elasticsearch_docs_retried_total",
                "Actions sent again, by why: 429, 5xx, transport.",
                STATUS_LABELS,
            ),
            failed: counter(
                "weir_elasticsearch_docs_failed_total",
                "Actions the server rejected (to on_error), by status class.",
                STATUS_LABELS,
            ),
            duration: histogram(
                "weir_elasticsearch_bulk_request_duration_seconds",
                "Time of one _bulk request (one attempt).",
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            ),
            size: histogram(
                "weir_elasticsearch_bulk_request_bytes",
                "Body size of one _bulk request.",
                prometheus::exponential_buckets(1024.0, 4.0, 9).expect("static buckets"),
            ),
            in_flight: gauge(
                "weir_elasticsearch_requests_in_flight",
                "_bulk requests sent and not yet answered (retries waiting included).",
            ),
            limit: gauge(
                "weir_elasticsearch_concurrency_limit",
                "Requests allowed in flight now (max_in_flight, lowered after 429s).",
            ),
        }
    })
}

/// One sink's metrics; cheap to clone into request tasks.
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    pub sent: IntCounter,
    pub acked: IntCounter,
    retried: [IntCounter; 3],
    failed: [IntCounter; 3],
    pub duration: Histogram,
    pub size: Histogram,
    pub in_flight: IntGauge,
    pub limit: IntGauge,
}

impl SinkMetrics {
    pub fn for_node(ctx: &NodeContext) -> Self {
        let f = families();
        let w = ctx.worker.to_string();
        let l = [ctx.job.as_str(), w.as_str(), ctx.node.as_str()];
        let with = |v: &IntCounterVec, s: &str| v.with_label_values(&[l[0], l[1], l[2], s]);
        SinkMetrics {
            sent: f.sent.with_label_values(&l),
            acked: f.acked.with_label_values(&l),
            retried: [
                with(&f.retried, "429"),
                with(&f.retried, "5xx"),
                with(&f.retried, "transport"),
            ],
            failed: [
                with(&f.failed, "4xx"),
                with(&f.failed, "5xx"),
                with(&f.failed, "other"),
            ],
            duration: f.duration.with_label_values(&l),
            size: f.size.with_label_values(&l),
            in_flight: f.in_flight.with_label_values(&l),
            limit: f.limit.with_label_values(&l),
        }
    }

    /// Registered nowhere, for tests.
    #[cfg(test)]
    pub fn detached() -> Self {
        let c = || IntCounter::new("detached", "detached").expect("static metric name");
        let h = || {
            Histogram::with_opts(HistogramOpts::new("detached", "detached"))
                .expect("static metric name")
        };
        let g = || IntGauge::new("detached", "detached").expect("static metric name");
        SinkMetrics {
            sent: c(),
            acked: c(),
            retried: [c(), c(), c()],
            failed: [c(), c(), c()],
            duration: h(),
            size: h(),
            in_flight: g(),
            limit: g(),
        }
    }

    /// Counts `n` actions sent again because of `label` (429, 5xx, transport).
    pub fn retried(&self, label: &str, n: u64) {
        let i = match label {
            "429" => 0,
            "5xx" => 1,
            _ => 2,
        };
        self.retried[i].inc_by(n);
    }

    /// Counts a rejected action by its status (None: refused before it was sent).
    pub fn failed(&self, status: Option<u16>) {
        let i = match status {
            Some(400..=499) => 0,
            Some(500..=599) => 1,
            _ => 2,
        };
        self.failed[i].inc();
    }
}
