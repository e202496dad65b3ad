//! Operator integration tests (one binary): the lifecycle state machine, pure planning pieces,
//! reconciles against an in-process fake API server, the savepoint flow against real `weir`
//! workers, the Helm chart, and the example manifests.

mod chart;
mod examples;
mod fake_api;
mod lifecycle;
mod planning;
mod real_workers;
mod reconcile;
