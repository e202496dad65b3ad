//! What the shard readers (polling and enhanced fan-out, one task per shard) share: what they
//! tell the source, decoding, getting a position back after an expired one, and pacing after
//! throttling and errors. A reader sends a shard's records in order and its end last, so the
//! source sees every record of a parent before it starts a child.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use aws_sdk_kinesis::types::{ChildShard, Record as KinesisRecord};
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc::Sender;

use super::config::{ExpiredPolicy, Settings};
use super::decode::{Decoder, RawRecord};
use super::metrics::ShardMetrics;
use super::position::Position;
use super::shards::ShardInfo;
use crate::connectors::kinesis::stream::StreamRef;
use crate::error::Error;
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;
use crate::record::{Record, SplitId};
use crate::retry::{Backoff, RetryPolicy};

/// What a reader tells the source.
#[derive(Debug)]
pub enum ReaderEvent {
    /// Records of one shard in order; `last` is the sequence number of the last record read
    /// (skipped ones included), the position to resume after.
    Records {
        split: SplitId,
        records: Vec<Record>,
        last: String,
    },
    /// The shard is read to its end; every record was sent before.
    Ended {
        split: SplitId,
        children: Vec<ShardInfo>,
    },
    /// `on_expired_position` moved the shard's position.
    Repositioned {
        split: SplitId,
        position: Position,
    },
    Failed(Error),
}

/// What every reader of a source has.
pub struct Shared {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub decoder: Decoder,
    pub node: String,
    pub node_metrics: NodeMetrics,
}

/// The shard a reader reads.
#[derive(Clone)]
pub struct Target {
    pub stream: StreamRef,
    pub shard: String,
    pub split: SplitId,
    pub metrics: ShardMetrics,
    /// The EFO consumer, with `reader: efo`.
    pub consumer_arn: Option<String>,
    /// Set by the source once a listing shows the shard closed (no record will be added).
    pub closed: Arc<AtomicBool>,
    /// The shard's first sequence number, as listed when the reader started.
    pub first_sequence: Option<String>,
}

impl Target {
    /// `stream "orders" shard shardId-000000000001`.
    pub fn describe(&self) -> String {
        format!("{} shard {}", self.stream, self.shard)
    }
}

/// Tells the source the shard is read to its end. A source that has stopped listening is
/// stopping the readers too: nothing to report then.
pub async fn send_end(
    target: &Target,
    children: Vec<ShardInfo>,
    tx: &Sender<ReaderEvent>,
) -> crate::error::Result<()> {
    let _ = tx
        .send(ReaderEvent::Ended {
            split: target.split.clone(),
            children,
        })
        .await;
    Ok(())
}

/// Decodes a non-empty batch of the shard's records and sends them to the source; the position
/// after them, or `None` when the source has stopped listening (it is closing).
pub async fn send_records(
    shared: &Shared,
    target: &Target,
    fetched: Vec<KinesisRecord>,
    tx: &Sender<ReaderEvent>,
) -> Result<Option<Position>, Error> {
    let (records, last) = decode(shared, target, fetched)?;
    let last = last.expect("not empty");
    let position = Position::After(last.clone());
    let sent = tx
        .send(ReaderEvent::Records {
            split: target.split.clone(),
            records,
            last,
        })
        .await;
    Ok(sent.is_ok().then_some(position))
}

/// Children as the shard's end announces them (those without a hash range are left to
/// discovery).
pub fn children(list: &[ChildShard]) -> Vec<ShardInfo> {
    list.iter()
        .filter_map(|c| {
            let range = c.hash_key_range.as_ref()?;
            Some(ShardInfo {
                id: c.shard_id.clone(),
                parents: c.parent_shards.clone(),
                hash_start: range.starting_hash_key.parse().ok()?,
                hash_end: range.ending_hash_key.parse().ok()?,
                closed: false,
                first_sequence: None,
            })
        })
        .collect()
}

/// Decodes a fetched list; records that cannot be decoded follow `on_error`. Returns the
/// records and the last sequence number read.
pub fn decode(
    shared: &Shared,
    target: &Target,
    fetched: Vec<KinesisRecord>,
) -> Result<(Vec<Record>, Option<String>), Error> {
    let count = fetched.len();
    let mut out = Vec::with_capacity(count);
    let mut last = None;
    for r in fetched {
        let raw = RawRecord {
            stream: &target.stream.name,
            shard: &target.shard,
            sequence_number: &r.sequence_number,
            partition_key: r.partition_key.as_deref().unwrap_or_default(),
            arrival_ms: r
                .approximate_arrival_timestamp
                .and_then(|t| t.to_millis().ok()),
            // The SDK's buffer becomes the record's: no copy.
            data: bytes::Bytes::from(r.data.into_inner()),
        };
        match shared.decoder.decode(&raw) {
            Ok(rec) => out.push(rec),
            Err(why) => {
                shared.node_metrics.record_errors.inc();
                match shared.settings.config.on_error {
                    OnError::Fail => {
                        return Err(Error::Record {
                            node: shared.node.clone(),
                            record: format!(
                                "{} sequence number {}",
                                target.describe(),
                                r.sequence_number
                            ),
                            message: why,
                        })
                    }
                    OnError::Skip => tracing::warn!(
                        node = %shared.node, shard = %target.split, sequence_number = %r.sequence_number,
                        "skipped a record: {why}"
                    ),
                    OnError::DeadLetter(never) => match never {},
                }
            }
        }
        last = Some(r.sequence_number);
    }
    target.metrics.records.inc_by(count as u64);
    Ok((out, last))
}

/// What an expired position looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The sequence number is no longer there (trimmed, or from another stream of that name).
    Sequence,
    /// The shard itself is gone (past the retention period).
    Shard,
}

/// Reads an iterator or subscription error: real Kinesis says InvalidArgumentException for a
/// sequence number it no longer has, kinesis-mock ResourceNotFoundException; a shard that is
/// gone is ResourceNotFoundException naming the shard. Pure.
pub fn expired_kind(code: Option<&str>, message: &str) -> Option<Expired> {
    let m = message.to_ascii_lowercase();
    match code? {
        "InvalidArgumentException" | "ResourceNotFoundException" if m.contains("sequence") => {
            Some(Expired::Sequence)
        }
        "ResourceNotFoundException" if m.contains("shard") => Some(Expired::Shard),
        _ => None,
    }
}

/// A restored position older than its shard's first sequence number was taken on an earlier
/// stream of the same name (deleted and created again): it is expired, whatever the service
/// answers for it (kinesis-mock, for one, hands out an iterator that never returns a record).
/// Positions read in this run are never older than their shard.
pub async fn check_restored(
    shared: &Shared,
    target: &Target,
    position: Position,
    tx: &Sender<ReaderEvent>,
) -> Result<Position, Error> {
    let (Position::After(seq), Some(first)) = (&position, &target.first_sequence) else {
        return Ok(position);
    };
    if !predates(seq, first) {
        return Ok(position);
    }
    let detail = format!(
        "it is older than the shard's first sequence number {first}: the stream was deleted and \
         created again"
    );
    expired(shared, target, Expired::Sequence, &position, &detail, tx).await
}

/// Whether sequence number `seq` comes before `first` (both decimal, up to 128 digits). Pure.
pub fn predates(seq: &str, first: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seq) || !digits(first) {
        return false;
    }
    let (a, b) = (seq.trim_start_matches('0'), first.trim_start_matches('0'));
    (a.len(), a) < (b.len(), b)
}

/// Where an expired position goes under the policy, or `None` to fail. Pure.
pub fn after_expiry(policy: ExpiredPolicy, now_ms: i64) -> Option<Position> {
    match policy {
        ExpiredPolicy::Fail => None,
        ExpiredPolicy::TrimHorizon => Some(Position::TrimHorizon),
        ExpiredPolicy::Latest => Some(Position::AtTimestamp(now_ms)),
    }
}

/// Applies `on_expired_position`: logs and counts, tells the source, and returns the new
/// position (`Finished` for a shard that is gone), or the error of `fail`.
pub async fn expired(
    shared: &Shared,
    target: &Target,
    kind: Expired,
    position: &Position,
    detail: &str,
    tx: &Sender<ReaderEvent>,
) -> Result<Position, Error> {
    let policy = shared.settings.config.on_expired_position;
    let what = match kind {
        Expired::Sequence => format!("the position ({position}) no longer exists"),
        Expired::Shard => "the shard no longer exists".to_string(),
    };
    target.metrics.expired.inc();
    let Some(next) = after_expiry(policy, chrono::Utc::now().timestamp_millis()) else {
        // A restart resumes from the same position: only the user can repair this.
        return Err(Error::fatal(
            &shared.node,
            format!(
                "{}: {what} ({detail}); on_expired_position is fail: set it to trim_horizon or \
                 latest to go on from there",
                target.describe()
            ),
        ));
    };
    let next = if kind == Expired::Shard {
        Position::Finished
    } else {
        next
    };
    tracing::warn!(
        node = %shared.node, shard = %target.split, policy = ?policy,
        "{what} ({detail}); going on from {next}"
    );
    let _ = tx
        .send(ReaderEvent::Repositioned {
            split: target.split.clone(),
            position: next.clone(),
        })
        .await;
    Ok(next)
}

/// Waits after throttling and errors: throttled calls back off without limit (each shard on
/// its own), other retryable errors within the `retry` policy.
pub struct Pacer {
    policy: RetryPolicy,
    throttled: u32,
    backoff: Backoff,
}

impl Pacer {
    pub fn new(policy: RetryPolicy) -> Self {
        Pacer {
            policy,
            throttled: 0,
            backoff: policy.backoff(),
        }
    }

    /// A call went through.
    pub fn reset(&mut self) {
        self.throttled = 0;
        self.backoff = self.policy.backoff();
    }

    pub async fn throttled(&mut self, metrics: &ShardMetrics) {
        metrics.throttles.inc();
        let d = self.policy.delay(self.throttled.min(30), fastrand::f64());
        self.throttled += 1;
        tokio::time::sleep(d).await;
    }

    /// Waits before the next attempt, or says the retries are used up.
    pub async fn failed(&mut self) -> Result<(), ()> {
        match self.backoff.next() {
            Some(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            None => Err(()),
        }
    }

    pub fn retries(&self) -> u32 {
        self.backoff.retries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(predates("9", "10"));
        assert!(predates(
            "49680861608625018839183750836475446655597177475539402754",
            "49680861609338642685536730776883697058360462263699111938"
        ));
        assert!(!predates("10", "10"));
        assert!(!predates("011", "10"));
        assert!(!predates("x", "10"), "not a number: left to the service");
    }

    #[test]
    fn expired_positions_are_told_apart_from_other_errors() {
        assert_eq!(
            expired_kind(
                Some("InvalidArgumentException"),
                "StartingSequenceNumber 49… used in GetShardIterator on shard shardId-000000000000 \
                 in stream s under account 1 is invalid because it did not come from this stream."
            ),
            Some(Expired::Sequence)
        );
        assert_eq!(
            expired_kind(
                Some("ResourceNotFoundException"),
                "Unable to find record with provided SequenceNumber SequenceNumber(4999)"
            ),
            Some(Expired::Sequence)
        );
        assert_eq!(
            expired_kind(
                Some("ResourceNotFoundException"),
                "Could not find shardId shardId-000000000099 in stream s1"
            ),
            Some(Expired::Shard)
        );
        assert_eq!(
            expired_kind(Some("ResourceNotFoundException"), "Stream s1 not found"),
            None
        );
        assert_eq!(
            expired_kind(Some("AccessDeniedException"), "sequence"),
            None
        );
        assert_eq!(expired_kind(None, "sequence"), None);
    }

    #[test]
    fn the_policy_decides_where_to_go_on() {
        assert_eq!(after_expiry(ExpiredPolicy::Fail, 5), None);
        assert_eq!(
            after_expiry(ExpiredPolicy::TrimHorizon, 5),
            Some(Position::TrimHorizon)
        );
        assert_eq!(
            after_expiry(ExpiredPolicy::Latest, 5),
            Some(Position::AtTimestamp(5))
        );
    }
}
