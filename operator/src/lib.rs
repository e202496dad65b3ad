//! The weir operator: runs `StreamJob`s as StatefulSets of `weir` workers and keeps them in step
//! with their spec through savepoints. Decisions are pure functions (`lifecycle`, `tuning`,
//! `resolve`, `job_status`, `resources`, `savepoint::aggregate`); Kubernetes and worker I/O
//! sits in `controller`, `admin`, `savepoint` and `probes`.

pub mod admin;
pub mod admin_secret;
pub mod controller;
pub mod error;
pub mod job_status;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod pods;
pub mod probes;
pub mod resolve;
pub mod resources;
pub mod savepoint;
pub mod tuning;

pub use error::{Error, Result};
