//! The calls about a stream rather than a shard: DescribeStreamSummary (it exists, its ARN)
//! and ListShards (every page; with a timestamp filter for the shards open at a time).

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Shard, ShardFilter, ShardFilterType};
use aws_sdk_kinesis::Client;
use backon::Retryable;

use super::shards::ShardInfo;
use crate::connectors::aws::errors::{classify, describe};
use crate::connectors::kinesis::stream::StreamRef;
use crate::retry::RetryPolicy;

/// The stream's ARN; an error says what the service said (e.g. that it does not exist).
pub async fn stream_arn(
    client: &Client,
    stream: &StreamRef,
    retry: RetryPolicy,
) -> Result<String, String> {
    let out = (|| async {
        let call = client.describe_stream_summary();
        let call = match &stream.arn {
            Some(arn) => call.stream_arn(arn),
            None => call.stream_name(&stream.name),
        };
        call.send().await
    })
    .retry(retry)
    .when(|e| classify(e).retryable())
    .await
    .map_err(|e| describe(&e))?;
    out.stream_description_summary
        .map(|s| s.stream_arn)
        .ok_or_else(|| "DescribeStreamSummary answered no description".to_string())
}

fn info(s: Shard) -> Option<ShardInfo> {
    let range = s.hash_key_range?;
    Some(ShardInfo {
        parents: s
            .parent_shard_id
            .into_iter()
            .chain(s.adjacent_parent_shard_id)
            .collect(),
        hash_start: range.starting_hash_key.parse().ok()?,
        hash_end: range.ending_hash_key.parse().ok()?,
        closed: s
            .sequence_number_range
            .as_ref()
            .is_some_and(|r| r.ending_sequence_number.is_some()),
        first_sequence: s.sequence_number_range.map(|r| r.starting_sequence_number),
        id: s.shard_id,
    })
}

/// Every shard of the stream (all pages), or those open at `at` (ms since the epoch).
pub async fn shards(
    client: &Client,
    stream: &StreamRef,
    at: Option<i64>,
    retry: RetryPolicy,
) -> Result<Vec<ShardInfo>, String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = (|| async {
            let call = client.list_shards();
            // The first page names the stream (and filter); the next ones only the token.
            let call = match &token {
                Some(t) => call.next_token(t),
                None => {
                    let call = match &stream.arn {
                        Some(arn) => call.stream_arn(arn),
                        None => call.stream_name(&stream.name),
                    };
                    match at {
                        Some(t) => call.shard_filter(
                            ShardFilter::builder()
                                .r#type(ShardFilterType::AtTimestamp)
                                .timestamp(DateTime::from_millis(t))
                                .build()
                                .expect("type is set"),
                        ),
                        None => call,
                    }
                }
            };
            call.send().await
        })
        .retry(retry)
        .when(|e| classify(e).retryable())
        .await
        .map_err(|e| format!("ListShards: {}", describe(&e)))?;
        out.extend(page.shards.unwrap_or_default().into_iter().filter_map(info));
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}
