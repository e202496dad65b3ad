//! Types shared by the weir operator and runtime: the pipeline spec (the same document whether it
//! sits in a StreamJob or in a file for `weir run`) and, later, the Kubernetes custom resources.

pub mod pipeline;
pub mod units;

pub use pipeline::{CheckpointMode, CheckpointSpec, NodeSpec, PipelineSpec, SpecError};
pub use units::{ByteSize, Duration};
