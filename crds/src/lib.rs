//! Types shared by the weir operator and runtime: the pipeline spec (the same document whether it
//! sits in a StreamJob or in a file for `weir run`) and, with the `kube` feature, the Kubernetes
//! custom resources `StreamJob` and `Connector` (group `weir.dev`, version `v1alpha1`).

pub mod contract;
pub mod failure;
pub mod input;
pub mod pipeline;
pub mod transactions;
pub mod units;

#[cfg(feature = "kube")]
pub mod connector;
#[cfg(feature = "kube")]
pub mod generated;
#[cfg(feature = "kube")]
pub mod rejected;
#[cfg(feature = "kube")]
mod schema;
#[cfg(feature = "kube")]
pub mod status;
#[cfg(feature = "kube")]
pub mod stream_job;

pub use failure::{
    CircuitBreakerSpec, DeadLetterSpec, ExponentialDelay, Restart, RestartSpec, RestartStrategy,
};
pub use pipeline::{CheckpointMode, CheckpointSpec, NodeSpec, PipelineSpec, SpecError};
pub use units::{ByteSize, Duration};

#[cfg(feature = "kube")]
pub use connector::{Connector, ConnectorSpec, ConnectorStatus};
#[cfg(feature = "kube")]
pub use stream_job::{StreamJob, StreamJobSpec, StreamJobStatus};
