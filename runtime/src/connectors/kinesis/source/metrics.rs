//! Per-shard metrics of the `kinesis` source (labels job, worker, node, shard), in the
//! process's default registry that `/metrics` renders beside the runtime's own. A shard's
//! series are removed when it finishes, so resharding does not leave stale ones behind.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::api::NodeContext;

struct Families {
    behind: IntGaugeVec,
    records: IntCounterVec,
    throttles: IntCounterVec,
    resubscriptions: IntCounterVec,
    expired: IntCounterVec,
}

const LABELS: &[&str] = &["job", "worker", "node", "shard"];

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), LABELS).expect("static metric");
            prometheus::register(Box::new(c.clone())).expect("registered once");
            c
        };
        let behind = IntGaugeVec::new(
            Opts::new(
                "weir_kinesis_shard_behind_latest_milliseconds",
                "How far the last records read from a shard are behind its tip (MillisBehindLatest).",
            ),
            LABELS,
        )
        .expect("static metric");
        prometheus::register(Box::new(behind.clone())).expect("registered once");
        Families {
            behind,
            records: counter(
                "weir_kinesis_shard_records_total",
                "Records read from a shard.",
            ),
            throttles: counter(
                "weir_kinesis_shard_throttles_total",
                "Calls for a shard that Kinesis throttled (each backed off, the other shards unaffected).",
            ),
            resubscriptions: counter(
                "weir_kinesis_shard_resubscriptions_total",
                "Enhanced fan-out subscriptions to a shard renewed (every 5 minutes, after errors, or by the watchdog).",
            ),
            expired: counter(
                "weir_kinesis_expired_positions_total",
                "Checkpointed positions that no longer existed, handled by on_expired_position.",
            ),
        }
    })
}

/// The metrics of one shard.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    labels: [String; 4],
    pub behind: IntGauge,
    pub records: IntCounter,
    pub throttles: IntCounter,
    pub resubscriptions: IntCounter,
    pub expired: IntCounter,
}

impl ShardMetrics {
    pub fn new(ctx: &NodeContext, split: &str) -> Self {
        let f = families();
        let labels = [
            ctx.job.clone(),
            ctx.worker.to_string(),
            ctx.node.clone(),
            split.to_string(),
        ];
        let l: [&str; 4] = [&labels[0], &labels[1], &labels[2], &labels[3]];
        ShardMetrics {
            behind: f.behind.with_label_values(&l),
            records: f.records.with_label_values(&l),
            throttles: f.throttles.with_label_values(&l),
            resubscriptions: f.resubscriptions.with_label_values(&l),
            expired: f.expired.with_label_values(&l),
            labels,
        }
    }

    /// Drops the shard's series (it finished or moved).
    pub fn remove(&self) {
        let f = families();
        let l: [&str; 4] = [
            &self.labels[0],
            &self.labels[1],
            &self.labels[2],
            &self.labels[3],
        ];
        let _ = f.behind.remove_label_values(&l);
        let _ = f.records.remove_label_values(&l);
        let _ = f.throttles.remove_label_values(&l);
        let _ = f.resubscriptions.remove_label_values(&l);
        let _ = f.expired.remove_label_values(&l);
    }
}
