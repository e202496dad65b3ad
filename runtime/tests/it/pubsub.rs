//! The `pubsub` source and sink against the Pub/Sub emulator (e2e/services/pubsub.sh):
//! exactly-once into files through kill -9 at every checkpoint step, at random and after the
//! acknowledgements (forced redelivery), leases held past the ack deadline, ordering keys, the
//! sink through an emulator restart, and misconfigurations. Where the emulator is missing every
//! test says "skipped: no emulator" on the terminal and passes.
#![cfg(feature = "pubsub")]

mod emulator;

mod errors;
mod ordering;
mod sink;
mod source;
