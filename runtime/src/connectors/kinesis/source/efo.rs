//! Enhanced fan-out: the stream consumer (registered by the job or self-managed) and the reader
//! of one shard: SubscribeToShard from its position, events until the subscription ends (after
//! five minutes) or fails, then a new subscription from the last record sent. A watchdog
//! replaces a subscription that stays silent for `efo.idle_timeout`; after an error the next
//! subscription waits at least `efo.error_backoff` (Kinesis refuses one within 5 s).
//!
//! A shard's end is the event that carries its children. Where none comes (kinesis-mock never
//! sends one), a closed shard whose subscription has caught up is probed with one GetRecords at
//! the reader's position: no next iterator means the end, with the children GetRecords names.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;
use tokio::sync::mpsc::Sender;

use super::config::{Efo, Registration};
use super::position::Position;
use super::reader::{
    check_restored, children, expired, expired_kind, send_end, send_records, Pacer, ReaderEvent,
    Shared, Target,
};
use crate::connectors::aws::errors::{classify, code, describe, message, Failure};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// How long a consumer may take to become ACTIVE.
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);

/// The consumer's ARN once it is ACTIVE: registered now (`registration: job`, if missing) or
/// looked up (`self_managed`, which must exist).
pub async fn consumer(
    client: &Client,
    stream_arn: &str,
    name: &str,
    registration: Registration,
    retry: RetryPolicy,
) -> std::result::Result<String, String> {
    use backon::Retryable;
    if registration == Registration::Job {
        let registered = (|| async {
            client
                .register_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(name)
                .send()
                .await
        })
        .retry(retry)
        .when(|e| classify(e) == Failure::Throttled)
        .await;
        match registered {
            Ok(_) => tracing::info!(
                consumer = name,
                stream = stream_arn,
                "registered the stream consumer"
            ),
            // Registered already (by another worker, or an earlier run).
            Err(e) if code(&e) == Some("ResourceInUseException") => {}
            Err(e) => return Err(format!("registering consumer {name:?}: {}", describe(&e))),
        }
    }
    let deadline = Instant::now() + ACTIVE_WITHIN;
    loop {
        let described = (|| async {
            client
                .describe_stream_consumer()
                .stream_arn(stream_arn)
                .consumer_name(name)
                .send()
                .await
        })
        .retry(retry)
        .when(|e| classify(e).retryable())
        .await
        .map_err(|e| {
            let hint = if registration == Registration::SelfManaged {
                " (efo.registration is self_managed: register it first, or use registration: job)"
            } else {
                ""
            };
            format!("consumer {name:?}: {}{hint}", describe(&e))
        })?;
        let d = described
            .consumer_description
            .ok_or_else(|| format!("consumer {name:?}: DescribeStreamConsumer answered nothing"))?;
        match d.consumer_status {
            ConsumerStatus::Active => return Ok(d.consumer_arn),
            ConsumerStatus::Deleting if registration == Registration::Job => {
                // A previous run is deregistering it: wait, then register again.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Box::pin(consumer(client, stream_arn, name, registration, retry)).await;
            }
            other if Instant::now() > deadline => {
                return Err(format!(
                    "consumer {name:?} is still {other:?} after {}s",
                    ACTIVE_WITHIN.as_secs()
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Deregisters the consumer (`registration: job`, when the job ends).
pub async fn deregister(client: &Client, consumer_arn: &str) -> std::result::Result<(), String> {
    match client
        .deregister_stream_consumer()
        .consumer_arn(consumer_arn)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(describe(&e)),
    }
}

fn starting_position(p: &Position) -> Option<StartingPosition> {
    let b = StartingPosition::builder();
    let b = match p {
        Position::TrimHorizon => b.r#type(ShardIteratorType::TrimHorizon),
        Position::AtTimestamp(t) => b
            .r#type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from_millis(*t)),
        Position::After(seq) => b
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(seq),
        Position::Finished => return None,
    };
    b.build().ok()
}

pub async fn run(
    shared: Arc<Shared>,
    target: Target,
    start: Position,
    efo: Efo,
    tx: Sender<ReaderEvent>,
) {
    if let Err(e) = read(&shared, &target, start, &efo, &tx).await {
        let _ = tx.send(ReaderEvent::Failed(e)).await;
    }
}

/// How a subscription ended.
enum Ended {
    /// The shard is read to its end.
    ShardEnd(Vec<super::shards::ShardInfo>),
    /// Subscribe again at once (the five minutes are up).
    Renew,
    /// Subscribe again after the error backoff.
    Error(String),
    /// The source is closing.
    Closed,
}

async fn read(
    shared: &Shared,
    target: &Target,
    start: Position,
    efo: &Efo,
    tx: &Sender<ReaderEvent>,
) -> Result<()> {
    let consumer_arn = target
        .consumer_arn
        .clone()
        .expect("efo readers get the consumer");
    let mut pacer = Pacer::new(shared.settings.config.retry);
    let mut position = check_restored(shared, target, start, tx).await?;
    let mut first = true;
    let mut last_probe: Option<Instant> = None;
    loop {
        let Some(start_at) = starting_position(&position) else {
            return send_end(target, Vec::new(), tx).await;
        };
        if !first {
            target.metrics.resubscriptions.inc();
        }
        first = false;
        // The watchdog also bounds the call itself: a subscription whose answer never comes is
        // as stalled as one whose events stop.
        let subscribed = tokio::time::timeout(
            efo.idle_timeout,
            shared
                .client
                .subscribe_to_shard()
                .consumer_arn(&consumer_arn)
                .shard_id(&target.shard)
                .starting_position(start_at)
                .send(),
        )
        .await;
        let mut sub = match subscribed {
            Ok(Ok(s)) => s,
            Err(_) => {
                tracing::warn!(
                    shard = %target.split,
                    "SubscribeToShard got no answer in {}; subscribing again in {}",
                    humantime::format_duration(efo.idle_timeout),
                    humantime::format_duration(efo.error_backoff)
                );
                if pacer.failed().await.is_err() {
                    return Err(fatal(
                        shared,
                        target,
                        pacer.retries(),
                        "SubscribeToShard never answered",
                    ));
                }
                tokio::time::sleep(efo.error_backoff).await;
                continue;
            }
            Ok(Err(e)) => {
                if let Some(kind) = expired_kind(code(&e), message(&e).unwrap_or_default()) {
                    position = expired(shared, target, kind, &position, &describe(&e), tx).await?;
                    continue;
                }
                match classify(&e) {
                    Failure::Throttled => pacer.throttled(&target.metrics).await,
                    Failure::Transient => {
                        tracing::debug!(shard = %target.split, error = %describe(&e), "SubscribeToShard failed; retrying");
                        if pacer.failed().await.is_err() {
                            return Err(fatal(shared, target, pacer.retries(), &describe(&e)));
                        }
                        tokio::time::sleep(efo.error_backoff).await;
                    }
                    Failure::Fatal => return Err(fatal(shared, target, 0, &describe(&e))),
                }
                continue;
            }
        };
        let ended = loop {
            let next = tokio::time::timeout(efo.idle_timeout, sub.event_stream.recv()).await;
            let event = match next {
                Err(_) => {
                    break Ended::Error(format!(
                        "no event for {}",
                        humantime::format_duration(efo.idle_timeout)
                    ))
                }
                Ok(Ok(None)) => break Ended::Renew,
                Ok(Err(e)) => {
                    if classify(&e) == Failure::Fatal {
                        return Err(fatal(shared, target, 0, &describe(&e)));
                    }
                    break Ended::Error(describe(&e));
                }
                Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(ev)))) => ev,
                Ok(Ok(Some(_))) => continue,
            };
            pacer.reset();
            target.metrics.behind.set(event.millis_behind_latest);
            let caught_up = event.records.is_empty() && event.millis_behind_latest == 0;
            if !event.records.is_empty() {
                match send_records(shared, target, event.records, tx).await? {
                    Some(p) => position = p,
                    None => break Ended::Closed,
                }
            }
            // At the shard's end the event carries the children and no continuation.
            let kids = event.child_shards.as_deref().unwrap_or(&[]);
            if !kids.is_empty() || event.continuation_sequence_number.is_empty() {
                break Ended::ShardEnd(children(kids));
            }
            if caught_up
                && target.closed.load(Ordering::Relaxed)
                && last_probe.is_none_or(|t| t.elapsed() >= PROBE_INTERVAL)
            {
                last_probe = Some(Instant::now());
                if let Some(kids) = probe_end(shared, target, &position, &mut pacer, tx).await? {
                    break Ended::ShardEnd(kids);
                }
            }
        };
        match ended {
            Ended::ShardEnd(kids) => return send_end(target, kids, tx).await,
            Ended::Closed => return Ok(()),
            Ended::Renew => {}
            Ended::Error(why) => {
                tracing::warn!(
                    node = %shared.node, shard = %target.split,
                    "subscription ended: {why}; subscribing again in {}",
                    humantime::format_duration(efo.error_backoff)
                );
                if pacer.failed().await.is_err() {
                    return Err(fatal(shared, target, pacer.retries(), &why));
                }
                tokio::time::sleep(efo.error_backoff).await;
            }
        }
    }
}

/// How often a closed, caught-up shard is probed for its end.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the shard has ended at `position`: one GetRecords there answers no next iterator.
/// Records it returns are left to the subscription (nothing is passed on from here).
async fn probe_end(
    shared: &Shared,
    target: &Target,
    position: &Position,
    pacer: &mut Pacer,
    tx: &Sender<ReaderEvent>,
) -> Result<Option<Vec<super::shards::ShardInfo>>> {
    let mut at = position.clone();
    let Some(iterator) = super::polling::shard_iterator(shared, target, &mut at, pacer, tx).await?
    else {
        return Ok(Some(Vec::new()));
    };
    match shared
        .client
        .get_records()
        .shard_iterator(iterator)
        .limit(1)
        .send()
        .await
    {
        Ok(out) if out.records.is_empty() && out.next_shard_iterator.is_none() => {
            Ok(Some(children(out.child_shards.as_deref().unwrap_or(&[]))))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::debug!(shard = %target.split, error = %describe(&e), "probing for the shard's end failed");
            Ok(None)
        }
    }
}

fn fatal(shared: &Shared, target: &Target, retries: u32, why: &str) -> Error {
    let retried = if retries > 0 {
        format!(" (after {retries} retries)")
    } else {
        String::new()
    };
    Error::node(
        &shared.node,
        format!("{}: SubscribeToShard{retried}: {why}", target.describe()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_become_starting_positions() {
        let p = starting_position(&Position::After("42".into())).unwrap();
        assert_eq!(p.r#type(), &ShardIteratorType::AfterSequenceNumber);
        assert_eq!(p.sequence_number(), Some("42"));
        let t = starting_position(&Position::AtTimestamp(1_500)).unwrap();
        assert_eq!(t.timestamp().map(|d| d.to_millis().unwrap()), Some(1_500));
        assert!(starting_position(&Position::Finished).is_none());
    }
}
