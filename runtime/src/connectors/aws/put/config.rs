//! Settings every AWS put sink has, and their checks against the service's limits.

use serde::Deserialize;
use weir_crds::{ByteSize, Duration};

use super::batch::Limits;
use super::dead_letter::DeadLetterPath;
use crate::api::NodeConfig;
use crate::error::Result;
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

/// `batch:` of a put sink: how many records and bytes go in one request, and how long a
/// partial batch waits for more. Defaults: the service's maximum and 100 ms.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    pub max_records: Option<usize>,
    pub max_bytes: Option<ByteSize>,
    /// A batch that is not full is sent this long after its first record (and at every
    /// checkpoint).
    pub linger: Option<Duration>,
}

/// Whether records with the same partition key keep their order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Requests go out concurrently and failed entries are retried later, so two records with
    /// the same key may land in either order.
    #[default]
    None,
    /// One request at a time per partition key: a record is sent only once the one before it
    /// with the same key is acknowledged (or dead-lettered). Slower with few distinct keys.
    PerKey,
}

/// What the generic sink needs, resolved.
#[derive(Debug, Clone)]
pub struct PutSettings {
    pub limits: Limits,
    pub linger: std::time::Duration,
    /// Upper bound of the AIMD concurrency.
    pub max_concurrency: usize,
    pub retry: RetryPolicy,
    pub on_error: OnError<DeadLetterPath>,
    pub ordering: Ordering,
}

/// The retry policy of the put sinks: a throttled service is given time (up to 10 s between
/// attempts) and an entry gets 20 attempts before `on_error` decides.
/// `max_concurrency:` when unset: requests in flight at most (AIMD keeps it lower under
/// throttling).
pub fn default_max_concurrency() -> usize {
    8
}

pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        max_backoff: std::time::Duration::from_secs(10),
        max_attempts: Some(20),
        ..RetryPolicy::default()
    }
}

fn default_linger() -> std::time::Duration {
    std::time::Duration::from_millis(100)
}

/// Builds [`PutSettings`] from a sink's fields; errors name the field.
pub fn resolve(
    cfg: &NodeConfig,
    service_max: Limits,
    batch: &BatchConfig,
    max_concurrency: usize,
    retry: Option<RetryPolicy>,
    on_error: OnError<DeadLetterPath>,
    ordering: Ordering,
) -> Result<PutSettings> {
    let max_records = batch.max_records.unwrap_or(service_max.max_records);
    if max_records == 0 || max_records > service_max.max_records {
        return Err(cfg.error(
            "batch.max_records",
            format!(
                "must be between 1 and {} (the service's limit), got {max_records}",
                service_max.max_records
            ),
        ));
    }
    let max_bytes = batch
        .max_bytes
        .map_or(service_max.max_request_bytes, |b| b.0 as usize);
    if max_bytes < service_max.max_record_bytes || max_bytes > service_max.max_request_bytes {
        return Err(cfg.error(
            "batch.max_bytes",
            format!(
                "must be between {} (one record of the largest size) and {} (the service's \
                 limit per request), got {}",
                ByteSize(service_max.max_record_bytes as u64),
                ByteSize(service_max.max_request_bytes as u64),
                ByteSize(max_bytes as u64)
            ),
        ));
    }
    if max_concurrency == 0 {
        return Err(cfg.error("max_concurrency", "must be at least 1"));
    }
    if let Some(d) = on_error.dead_letter() {
        d.check()
            .map_err(|e| cfg.error("on_error.dead_letter", e))?;
    }
    Ok(PutSettings {
        limits: Limits {
            max_records,
            max_request_bytes: max_bytes,
            max_record_bytes: service_max.max_record_bytes,
        },
        linger: batch.linger.map_or_else(default_linger, Duration::as_std),
        max_concurrency,
        retry: retry.unwrap_or_else(default_retry),
        on_error,
        ordering,
    })
}
