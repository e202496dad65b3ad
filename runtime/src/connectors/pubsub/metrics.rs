//! The Pub/Sub connector's metric families (in the process's default Prometheus registry, which
//! the admin API's `/metrics` serves next to the runtime's).

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::api::NodeContext;
use crate::metrics::{node_counter, node_gauge};

struct Families {
    outstanding: IntGaugeVec,
    remembered: IntGaugeVec,
    acked: IntCounterVec,
    redelivered: IntCounterVec,
    deduplicated: IntCounterVec,
    lease_extended: IntCounterVec,
    ack_failures: IntCounterVec,
    published: IntCounterVec,
    publish_retries: IntCounterVec,
    publish_in_flight: IntGaugeVec,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let (counter, gauge) = (node_counter, node_gauge);
        Families {
            outstanding: gauge(
                "weir_pubsub_outstanding_messages",
                "Messages emitted and not yet acknowledged: they wait for the checkpoint that covers them, their leases extended.",
            ),
            remembered: gauge(
                "weir_pubsub_dedup_ids",
                "Message ids remembered after their checkpoint, to drop redeliveries (the dedup window).",
            ),
            acked: counter(
                "weir_pubsub_acked_total",
                "Messages acknowledged after their checkpoint completed.",
            ),
            redelivered: counter(
                "weir_pubsub_redelivered_total",
                "Deliveries of a message already received (known id, or delivery attempt > 1).",
            ),
            deduplicated: counter(
                "weir_pubsub_deduplicated_total",
                "Redelivered messages dropped because their id was already emitted.",
            ),
            lease_extended: counter(
                "weir_pubsub_lease_extended_total",
                "Messages held past their first lease (ack_deadline) before their checkpoint completed, so their lease was extended.",
            ),
            ack_failures: counter(
                "weir_pubsub_ack_failures_total",
                "Acknowledgements an exactly-once subscription refused (the message comes again and is dropped by id).",
            ),
            published: counter(
                "weir_pubsub_published_total",
                "Messages Pub/Sub acknowledged to the sink.",
            ),
            publish_retries: counter(
                "weir_pubsub_publish_retries_total",
                "Messages published again after a transient failure.",
            ),
            publish_in_flight: gauge(
                "weir_pubsub_publish_in_flight",
                "Messages handed to the publisher and not yet acknowledged by Pub/Sub.",
            ),
        }
    })
}

/// One source's metrics.
#[derive(Clone, Debug)]
pub struct SourceMetrics {
    pub outstanding: IntGauge,
    pub remembered: IntGauge,
    pub acked: IntCounter,
    pub redelivered: IntCounter,
    pub deduplicated: IntCounter,
    pub lease_extended: IntCounter,
    pub ack_failures: IntCounter,
}

/// One sink's metrics.
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    pub published: IntCounter,
    pub retries: IntCounter,
    pub in_flight: IntGauge,
}

fn labels(ctx: &NodeContext) -> [String; 3] {
    [ctx.job.clone(), ctx.worker.to_string(), ctx.node.clone()]
}

impl SourceMetrics {
    pub fn for_node(ctx: &NodeContext) -> Self {
        let f = families();
        let l = labels(ctx);
        let l = [l[0].as_str(), l[1].as_str(), l[2].as_str()];
        SourceMetrics {
            outstanding: f.outstanding.with_label_values(&l),
            remembered: f.remembered.with_label_values(&l),
            acked: f.acked.with_label_values(&l),
            redelivered: f.redelivered.with_label_values(&l),
            deduplicated: f.deduplicated.with_label_values(&l),
            lease_extended: f.lease_extended.with_label_values(&l),
            ack_failures: f.ack_failures.with_label_values(&l),
        }
    }

    /// Registered nowhere, until the source opens.
    pub fn detached() -> Self {
        let c = || IntCounter::new("detached", "detached").expect("static metric name");
        let g = || IntGauge::new("detached", "detached").expect("static metric name");
        SourceMetrics {
            outstanding: g(),
            remembered: g(),
            acked: c(),
            redelivered: c(),
            deduplicated: c(),
            lease_extended: c(),
            ack_failures: c(),
        }
    }
}

impl SinkMetrics {
    pub fn for_node(ctx: &NodeContext) -> Self {
        let f = families();
        let l = labels(ctx);
        let l = [l[0].as_str(), l[1].as_str(), l[2].as_str()];
        SinkMetrics {
            published: f.published.with_label_values(&l),
            retries: f.publish_retries.with_label_values(&l),
            in_flight: f.publish_in_flight.with_label_values(&l),
        }
    }

    pub fn detached() -> Self {
        SinkMetrics {
            published: IntCounter::new("detached", "detached").expect("static metric name"),
            retries: IntCounter::new("detached", "detached").expect("static metric name"),
            in_flight: IntGauge::new("detached", "detached").expect("static metric name"),
        }
    }
}
