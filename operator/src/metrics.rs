//! Operator metrics (`weir_operator_*`), served as Prometheus text on the metrics port.

use prometheus::{
    histogram_opts, opts, Encoder, HistogramVec, IntCounterVec, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    pub upgrades: IntCounterVec,
    pub savepoints: IntCounterVec,
    pub savepoint_duration: HistogramVec,
    pub probes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            opts!(
                "weir_operator_reconciles_total",
                "Reconciles by resource kind"
            ),
            &["kind"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            opts!(
                "weir_operator_reconcile_errors_total",
                "Failed reconciles by resource kind"
            ),
            &["kind"],
        )?;
        let reconcile_duration = HistogramVec::new(
            histogram_opts!(
                "weir_operator_reconcile_duration_seconds",
                "Reconcile duration",
                // Prometheus' defaults (5 ms to 10 s): a steady reconcile takes milliseconds,
                // and the p99 needs buckets there.
                prometheus::DEFAULT_BUCKETS.to_vec()
            ),
            &["kind"],
        )?;
        let upgrades = IntCounterVec::new(
            opts!(
                "weir_operator_upgrades_total",
                "Upgrades by mode and outcome"
            ),
            &["mode", "outcome"],
        )?;
        let savepoints = IntCounterVec::new(
            opts!(
                "weir_operator_savepoints_total",
                "Savepoints by kind and outcome"
            ),
            &["kind", "outcome"],
        )?;
        let savepoint_duration = HistogramVec::new(
            histogram_opts!(
                "weir_operator_savepoint_duration_seconds",
                "Savepoint duration from trigger to job manifest",
                vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]
            ),
            &["kind"],
        )?;
        let probes = IntCounterVec::new(
            opts!(
                "weir_operator_connector_probes_total",
                "Connector probes by type and result"
            ),
            &["type", "result"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(upgrades.clone()))?;
        registry.register(Box::new(savepoints.clone()))?;
        registry.register(Box::new(savepoint_duration.clone()))?;
        registry.register(Box::new(probes.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            upgrades,
            savepoints,
            savepoint_duration,
            probes,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for valid metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
