//! Messages the engine's tests feed their nodes and gates.

use crate::record::{Barrier, Batch, Message};

/// A batch of `n` empty records from no split.
pub fn batch(n: usize) -> Message {
    Message::Batch(Batch::new(None, vec![Default::default(); n]))
}

/// Checkpoint barrier `id`: not a savepoint, not the last.
pub fn barrier(id: u64) -> Message {
    Message::Barrier(Barrier {
        id,
        savepoint: false,
        last: false,
    })
}
