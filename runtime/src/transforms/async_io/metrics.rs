//! The operator's own metric families (in the process's default Prometheus registry, which the
//! admin API's `/metrics` serves next to the runtime's).

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::api::NodeContext;
use crate::metrics::{node_counter, node_gauge};

struct Families {
    in_flight: IntGaugeVec,
    timeouts: IntCounterVec,
    errors: IntCounterVec,
    retries: IntCounterVec,
    cache_hits: IntCounterVec,
    cache_misses: IntCounterVec,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let (counter, gauge) = (node_counter, node_gauge);
        let in_flight = gauge(
            "weir_async_in_flight",
            "Records held by an async operator (lookup in flight, or waiting to be emitted).",
        );
        Families {
            in_flight,
            timeouts: counter(
                "weir_async_timeouts_total",
                "Records whose lookup timed out after every retry.",
            ),
            errors: counter(
                "weir_async_errors_total",
                "Records whose lookup failed after every retry.",
            ),
            retries: counter("weir_async_retries_total", "Lookup attempts retried."),
            cache_hits: counter(
                "weir_async_cache_hits_total",
                "Lookups answered from the cache.",
            ),
            cache_misses: counter("weir_async_cache_misses_total", "Lookups not in the cache."),
        }
    })
}

/// One operator's metrics; cheap to clone into request tasks.
#[derive(Clone, Debug)]
pub struct LookupMetrics {
    pub in_flight: IntGauge,
    pub timeouts: IntCounter,
    pub errors: IntCounter,
    pub retries: IntCounter,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
}

impl LookupMetrics {
    pub fn for_node(ctx: &NodeContext) -> Self {
        let f = families();
        let w = ctx.worker.to_string();
        let l = [ctx.job.as_str(), w.as_str(), ctx.node.as_str()];
        LookupMetrics {
            in_flight: f.in_flight.with_label_values(&l),
            timeouts: f.timeouts.with_label_values(&l),
            errors: f.errors.with_label_values(&l),
            retries: f.retries.with_label_values(&l),
            cache_hits: f.cache_hits.with_label_values(&l),
            cache_misses: f.cache_misses.with_label_values(&l),
        }
    }

    /// Registered nowhere, for tests and tools.
    pub fn detached() -> Self {
        let c = || IntCounter::new("detached", "detached").expect("static metric name");
        LookupMetrics {
            in_flight: IntGauge::new("detached", "detached").expect("static metric name"),
            timeouts: c(),
            errors: c(),
            retries: c(),
            cache_hits: c(),
            cache_misses: c(),
        }
    }
}
