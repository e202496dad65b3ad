//! Records, batches and the messages that flow between nodes.

use std::sync::Arc;

pub use serde_json::{Map, Value};

/// Top-level fields of a record, in insertion order.
pub type Fields = Map<String, Value>;

/// Identifies a source split (a file, a generator partition, a Kafka partition).
pub type SplitId = Arc<str>;

/// One record: its fields and, once a watermark assigner or the source set it, its event time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub fields: Fields,
    /// Event time in milliseconds since the Unix epoch.
    pub event_time: Option<i64>,
}

impl Record {
    pub fn new(fields: Fields) -> Self {
        Record {
            fields,
            event_time: None,
        }
    }

    /// A short JSON rendering for error messages (never the whole of a large record).
    pub fn describe(&self) -> String {
        let mut s = serde_json::to_string(&self.fields).unwrap_or_else(|_| "<unprintable>".into());
        if s.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            s.truncate(cut);
            s.push('…');
        }
        s
    }
}

/// Records from one split (or from several, after a merge), moved together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub split: Option<SplitId>,
    pub records: Vec<Record>,
}

impl Batch {
    pub fn new(split: Option<SplitId>, records: Vec<Record>) -> Self {
        Batch { split, records }
    }
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What a checkpoint barrier asks of the nodes it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    pub id: u64,
    /// Savepoints are kept, and sinks roll every open part so the savepoint holds no open files.
    pub savepoint: bool,
    /// The job ends after this barrier (end of bounded input, or stop-with-savepoint).
    pub last: bool,
}

impl Barrier {
    /// Whether sinks must close every open part at this barrier.
    pub fn rolls_all(&self) -> bool {
        self.savepoint || self.last
    }
}

/// The stream between two nodes.
#[derive(Clone, Debug)]
pub enum Message {
    Batch(Batch),
    /// Event time (ms) up to which no earlier record is expected.
    Watermark(i64),
    Barrier(Barrier),
    /// No more input will follow on this channel.
    End,
}
