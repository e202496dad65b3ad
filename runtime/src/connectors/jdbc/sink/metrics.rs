//! Metrics of the `jdbc` sink (labels job, worker, node), in the process's default registry that
//! `/metrics` renders beside the runtime's own.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use crate::api::NodeContext;

fn retried_batches() -> &'static IntCounterVec {
    static F: OnceLock<IntCounterVec> = OnceLock::new();
    F.get_or_init(|| {
        crate::metrics::node_counter(
            "weir_sink_retried_batches_total",
            "Batches written again after a transient database error (lost connection, \
             deadlock, serialization failure).",
        )
    })
}

/// The counters of one sink on one worker.
#[derive(Clone, Debug)]
pub struct JdbcMetrics {
    pub retried_batches: IntCounter,
}

impl JdbcMetrics {
    pub fn new(ctx: &NodeContext) -> Self {
        let w = ctx.worker.to_string();
        JdbcMetrics {
            retried_batches: retried_batches().with_label_values(&[
                ctx.job.as_str(),
                w.as_str(),
                ctx.node.as_str(),
            ]),
        }
    }

    /// Counters registered nowhere, before open.
    pub fn detached() -> Self {
        JdbcMetrics {
            retried_batches: IntCounter::new("detached", "detached").expect("static metric name"),
        }
    }
}
