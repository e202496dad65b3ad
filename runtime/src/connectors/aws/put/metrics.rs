//! Metrics of the AWS put sinks (labels job, worker, node), in the process's default registry
//! that `/metrics` renders beside the runtime's own.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::api::NodeContext;

struct Families {
    retried: IntCounterVec,
    throttled: IntCounterVec,
    dead_letters: IntCounterVec,
    concurrency: IntGaugeVec,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let labels = &["job", "worker", "node"];
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric");
            prometheus::register(Box::new(c.clone())).expect("registered once");
            c
        };
        let concurrency = IntGaugeVec::new(
            Opts::new(
                "weir_sink_concurrency_limit",
                "Requests a sink may have in flight now (AIMD).",
            ),
            labels,
        )
        .expect("static metric");
        prometheus::register(Box::new(concurrency.clone())).expect("registered once");
        Families {
            retried: counter(
                "weir_sink_retried_entries_total",
                "Entries sent again after the service refused them or the request failed.",
            ),
            throttled: counter(
                "weir_sink_throttled_requests_total",
                "Requests in which the service refused entries for load.",
            ),
            dead_letters: counter(
                "weir_sink_dead_letter_records_total",
                "Records written to the sink's dead-letter location.",
            ),
            concurrency,
        }
    })
}

/// The counters of one sink on one worker.
#[derive(Clone, Debug)]
pub struct PutMetrics {
    pub retried: IntCounter,
    pub throttled: IntCounter,
    pub dead_letters: IntCounter,
    pub concurrency: IntGauge,
}

impl PutMetrics {
    pub fn new(ctx: &NodeContext) -> Self {
        let f = families();
        let w = ctx.worker.to_string();
        let l = [ctx.job.as_str(), w.as_str(), ctx.node.as_str()];
        PutMetrics {
            retried: f.retried.with_label_values(&l),
            throttled: f.throttled.with_label_values(&l),
            dead_letters: f.dead_letters.with_label_values(&l),
            concurrency: f.concurrency.with_label_values(&l),
        }
    }
}
