//! Checkpoints and savepoints in an object store: state written first, manifest written last.

pub mod model;
pub mod restore;
pub mod store;

pub use model::{assign, key_group, key_group_range, Restore, SinkCheckpoint, WorkerCheckpoint};
pub use store::{CheckpointStore, SavepointRef};
