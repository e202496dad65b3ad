//! The polling reader of one shard: GetShardIterator for its position, then GetRecords in a
//! loop (at most every `polling.interval`, `polling.idle_interval` after an empty answer) until
//! the shard ends. Throttling backs off this shard alone; an expired iterator (unused for five
//! minutes, e.g. under backpressure) is renewed from the last record sent.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use tokio::sync::mpsc::Sender;

use super::position::Position;
use super::reader::{
    check_restored, children, expired, expired_kind, send_end, send_records, Pacer, ReaderEvent,
    Shared, Target,
};
use crate::connectors::aws::errors::{classify, code, describe, message, Failure};
use crate::error::{Error, Result};

pub async fn run(shared: Arc<Shared>, target: Target, start: Position, tx: Sender<ReaderEvent>) {
    if let Err(e) = read(&shared, &target, start, &tx).await {
        let _ = tx.send(ReaderEvent::Failed(e)).await;
    }
}

async fn read(
    shared: &Shared,
    target: &Target,
    start: Position,
    tx: &Sender<ReaderEvent>,
) -> Result<()> {
    let polling = &shared.settings.config.polling;
    let mut pacer = Pacer::new(shared.settings.config.retry);
    let mut position = check_restored(shared, target, start, tx).await?;
    let Some(mut iterator) = shard_iterator(shared, target, &mut position, &mut pacer, tx).await?
    else {
        return send_end(target, Vec::new(), tx).await;
    };
    loop {
        let started = Instant::now();
        let call = shared
            .client
            .get_records()
            .shard_iterator(&iterator)
            .limit(polling.max_records);
        let out = match call.send().await {
            Ok(out) => out,
            Err(e) => {
                if code(&e) == Some("ExpiredIteratorException") {
                    match shard_iterator(shared, target, &mut position, &mut pacer, tx).await? {
                        Some(it) => iterator = it,
                        None => return send_end(target, Vec::new(), tx).await,
                    }
                    continue;
                }
                match classify(&e) {
                    Failure::Throttled => pacer.throttled(&target.metrics).await,
                    Failure::Transient => {
                        tracing::debug!(shard = %target.split, error = %describe(&e), "GetRecords failed; retrying");
                        if pacer.failed().await.is_err() {
                            return Err(failed(
                                shared,
                                target,
                                "GetRecords",
                                &pacer,
                                &describe(&e),
                            ));
                        }
                    }
                    Failure::Fatal => {
                        return Err(failed(shared, target, "GetRecords", &pacer, &describe(&e)))
                    }
                }
                continue;
            }
        };
        pacer.reset();
        if let Some(ms) = out.millis_behind_latest {
            target.metrics.behind.set(ms);
        }
        let empty = out.records.is_empty();
        if !empty {
            match send_records(shared, target, out.records, tx).await? {
                Some(p) => position = p,
                None => return Ok(()), // the source is closing
            }
        }
        match out.next_shard_iterator {
            Some(next) => iterator = next,
            None => {
                return send_end(
                    target,
                    children(out.child_shards.as_deref().unwrap_or(&[])),
                    tx,
                )
                .await
            }
        }
        let pause = if empty {
            polling.idle_interval.as_std()
        } else {
            polling.interval.as_std().saturating_sub(started.elapsed())
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn failed(shared: &Shared, target: &Target, call: &str, pacer: &Pacer, why: &str) -> Error {
    let tries = pacer.retries();
    let retried = if tries > 0 {
        format!(" (after {tries} retries)")
    } else {
        String::new()
    };
    Error::node(
        &shared.node,
        format!("{}: {call}{retried}: {why}", target.describe()),
    )
}

/// An iterator at `position`; `None` when the shard is gone and the policy goes on without it.
/// An expired position is handled by `on_expired_position` (which may change `position`).
pub async fn shard_iterator(
    shared: &Shared,
    target: &Target,
    position: &mut Position,
    pacer: &mut Pacer,
    tx: &Sender<ReaderEvent>,
) -> Result<Option<String>> {
    loop {
        let mut call = shared.client.get_shard_iterator().shard_id(&target.shard);
        call = match &target.stream.arn {
            Some(arn) => call.stream_arn(arn),
            None => call.stream_name(&target.stream.name),
        };
        call = match &*position {
            Position::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::AtTimestamp(t) => call
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*t)),
            Position::After(seq) => call
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            Position::Finished => return Ok(None),
        };
        match call.send().await {
            Ok(out) => {
                pacer.reset();
                return match out.shard_iterator {
                    Some(it) => Ok(Some(it)),
                    None => Err(failed(
                        shared,
                        target,
                        "GetShardIterator",
                        pacer,
                        "the answer has no iterator",
                    )),
                };
            }
            Err(e) => {
                if let Some(kind) = expired_kind(code(&e), message(&e).unwrap_or_default()) {
                    *position = expired(shared, target, kind, position, &describe(&e), tx).await?;
                    if position.is_finished() {
                        return Ok(None);
                    }
                    continue;
                }
                let gives_up = match classify(&e) {
                    Failure::Throttled => {
                        pacer.throttled(&target.metrics).await;
                        false
                    }
                    // Transient: retried until the policy runs out.
                    Failure::Transient => pacer.failed().await.is_err(),
                    Failure::Fatal => true,
                };
                if gives_up {
                    let why = describe(&e);
                    return Err(failed(shared, target, "GetShardIterator", pacer, &why));
                }
            }
        }
    }
}
