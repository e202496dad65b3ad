//! Entries and the batches they travel in, within a service's limits (Kinesis PutRecords: 500
//! records, 5 MiB, 1 MiB per record counting the partition key; Firehose PutRecordBatch: 500
//! records, 4 MiB, 1000 KiB per record). Pure: checked before anything is sent.

use std::time::Instant;

use bytes::Bytes;

/// One record on its way to the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub data: Bytes,
    /// Kinesis partition key (Firehose has none).
    pub key: Option<String>,
    /// Kinesis explicit hash key, overriding the partition key's hash.
    pub hash_key: Option<String>,
    /// Requests it has been part of so far.
    pub attempts: u32,
    /// When it was first sent (for `retry.max_elapsed`).
    pub first_sent: Option<Instant>,
}

impl Entry {
    pub fn new(data: Bytes, key: Option<String>, hash_key: Option<String>) -> Self {
        Entry {
            data,
            key,
            hash_key,
            attempts: 0,
            first_sent: None,
        }
    }

    /// What the service counts against its limits: the data and the partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.key.as_ref().map_or(0, String::len)
    }

    /// A short rendering for errors and logs: the start of the data as text.
    pub fn describe(&self) -> String {
        let head = &self.data[..self.data.len().min(200)];
        let mut s = String::from_utf8_lossy(head).into_owned();
        if self.data.len() > 200 {
            s.push('…');
        }
        match &self.key {
            Some(k) => format!("(partition key {k:?}) {s}"),
            None => s,
        }
    }
}

/// A service's limits per request and per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_records: usize,
    pub max_request_bytes: usize,
    pub max_record_bytes: usize,
}

/// Why an entry can never be sent (it then follows `on_error`).
pub fn check(entry: &Entry, limits: &Limits) -> Result<(), String> {
    if entry.size() > limits.max_record_bytes {
        return Err(format!(
            "the record is {} bytes{}, over the limit of {} bytes per record",
            entry.size(),
            if entry.key.is_some() {
                " with its partition key"
            } else {
                ""
            },
            limits.max_record_bytes
        ));
    }
    Ok(())
}

/// Collects entries into requests that stay within the limits.
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    entries: Vec<Entry>,
    bytes: usize,
    /// When the first entry of the open batch arrived (the linger clock).
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(limits: Limits) -> Self {
        Batcher {
            limits,
            entries: Vec::new(),
            bytes: 0,
            opened: None,
        }
    }

    /// Adds a checked entry; returns a batch that is ready to go: the open one when `entry`
    /// does not fit beside it (then `entry` opens the next), or the open one with `entry` when
    /// that reaches the record limit.
    pub fn push(&mut self, entry: Entry, now: Instant) -> Option<Vec<Entry>> {
        let size = entry.size();
        let full = !self.entries.is_empty()
            && (self.entries.len() >= self.limits.max_records
                || self.bytes + size > self.limits.max_request_bytes);
        let ready = if full { Some(self.take()) } else { None };
        if self.entries.is_empty() {
            self.opened = Some(now);
        }
        self.bytes += size;
        self.entries.push(entry);
        if ready.is_none() && self.entries.len() >= self.limits.max_records {
            return Some(self.take());
        }
        ready
    }

    /// The open batch, emptied.
    pub fn take(&mut self) -> Vec<Entry> {
        self.bytes = 0;
        self.opened = None;
        std::mem::take(&mut self.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the open batch has waited `linger` since its first entry.
    pub fn due(&self, now: Instant, linger: std::time::Duration) -> bool {
        self.opened.is_some_and(|t| now.duration_since(t) >= linger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_records: 3,
        max_request_bytes: 100,
        max_record_bytes: 40,
    };

    fn entry(bytes: usize, key: Option<&str>) -> Entry {
        Entry::new(Bytes::from(vec![b'x'; bytes]), key.map(String::from), None)
    }

    #[test]
    fn the_record_limit_counts_the_partition_key() {
        assert!(check(&entry(40, None), &LIMITS).is_ok());
        let e = check(&entry(38, Some("abc")), &LIMITS).unwrap_err();
        assert!(e.contains("41 bytes with its partition key"), "{e}");
        assert!(e.contains("limit of 40 bytes"), "{e}");
    }

    #[test]
    fn a_batch_closes_at_the_record_limit() {
        let mut b = Batcher::new(LIMITS);
        let now = Instant::now();
        assert!(b.push(entry(1, None), now).is_none());
        assert!(b.push(entry(1, None), now).is_none());
        assert_eq!(b.push(entry(1, None), now).map(|v| v.len()), Some(3));
        assert!(b.is_empty());
    }

    #[test]
    fn an_entry_that_does_not_fit_opens_the_next_batch() {
        let mut b = Batcher::new(LIMITS);
        let now = Instant::now();
        assert!(b.push(entry(40, None), now).is_none());
        assert!(b.push(entry(40, None), now).is_none());
        let ready = b.push(entry(30, None), now).expect("80 + 30 > 100");
        assert_eq!(ready.len(), 2);
        assert_eq!(b.take().len(), 1, "the third waits in the next batch");
    }

    #[test]
    fn linger_runs_from_the_first_entry_of_the_open_batch() {
        let mut b = Batcher::new(LIMITS);
        let t0 = Instant::now();
        let linger = std::time::Duration::from_millis(100);
        assert!(!b.due(t0, linger), "empty batches are never due");
        b.push(entry(1, None), t0);
        b.push(entry(1, None), t0 + linger / 2);
        assert!(!b.due(t0 + linger / 2, linger));
        assert!(b.due(t0 + linger, linger));
    }

    #[test]
    fn describe_shows_the_key_and_cuts_long_data() {
        let e = Entry::new(Bytes::from("{\"id\":1}"), Some("k1".into()), None);
        assert_eq!(e.describe(), "(partition key \"k1\") {\"id\":1}");
        assert!(entry(300, None).describe().ends_with('…'));
    }
}
