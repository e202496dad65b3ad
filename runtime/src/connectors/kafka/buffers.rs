//! librdkafka's queue and prefetch sizes, chosen from the pipeline's batch settings.
//!
//! librdkafka's defaults are sized for a client that owns the machine: a consumer with one queue
//! per partition (as weir's source has) prefetches up to 64 MiB per partition, and a producer
//! queues up to 100,000 messages / 1 GiB. On Kafka → Kafka with 1 KiB records that made
//! ~450 MiB of a 520 MiB peak RSS, while weir itself never takes more than a couple of batches
//! from either queue at a time. The sizes here keep two batches ahead on each side, enough to
//! keep the broker round trips full, and no more. Every key is a default: a user's
//! `properties` entry of the same name wins.

use std::collections::BTreeMap;

/// librdkafka's own defaults of the producer batch settings the producer queue is sized from.
const BATCH_NUM_MESSAGES: u64 = 10_000;
const BATCH_SIZE: u64 = 1_000_000;
/// librdkafka's defaults, which the chosen sizes never exceed.
const QUEUED_MAX_KBYTES: u64 = 65_536;
const QUEUE_BUFFERING_MAX_KBYTES: u64 = 1_048_576;
/// librdkafka's upper limit of `queued.min.messages`.
const QUEUED_MIN_MESSAGES_MAX: u64 = 10_000_000;

/// Largest record, in KiB, for which two of the source's batches fit the consumer's byte cap;
/// bigger records are prefetched by bytes instead (record sizes are not known in advance).
const ASSUMED_RECORD_KIB: u64 = 2;
/// Full producer batches the producer queue holds: batches for several partitions being
/// filled while earlier ones are in flight (measured: 4 and 16 give the same records/s on
/// Kafka → Kafka with 4 partitions).
const PRODUCER_BATCHES: u64 = 16;

/// Consumer properties for a source that polls up to `batch_size` records at a time from
/// each partition's queue. Sizes apply per partition (weir gives each partition its own queue).
pub fn consumer(batch_size: usize) -> BTreeMap<&'static str, String> {
    let batch = batch_size.max(1) as u64;
    // Two batches ahead: one being taken while the next fetch is under way.
    let min_messages = (2 * batch).min(QUEUED_MIN_MESSAGES_MAX);
    // At least one default fetch (`max.partition.fetch.bytes`, 1 MiB) fits.
    let kbytes = (2 * batch * ASSUMED_RECORD_KIB).clamp(1024, QUEUED_MAX_KBYTES);
    BTreeMap::from([
        ("queued.min.messages", min_messages.to_string()),
        ("queued.max.messages.kbytes", kbytes.to_string()),
        // With a queue only two batches deep, librdkafka's 1 s pause after finding it full
        // starved the source (27k → 17k records/s measured); 10 ms is far below the time one
        // batch takes to drain.
        ("fetch.queue.backoff.ms", "10".to_string()),
    ])
}

/// Producer properties from the producer's own batch settings (`batch.num.messages`,
/// `batch.size`, librdkafka's defaults unless `properties` sets them).
pub fn producer(properties: &BTreeMap<String, String>) -> BTreeMap<&'static str, String> {
    // A value librdkafka will reject is left for it to name; sizing uses the default.
    let read = |key: &str, default: u64| {
        properties
            .get(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    let batch_messages = read("batch.num.messages", BATCH_NUM_MESSAGES);
    let batch_bytes = read("batch.size", BATCH_SIZE);
    let kbytes = (PRODUCER_BATCHES * batch_bytes)
        .div_ceil(1024)
        .clamp(1, QUEUE_BUFFERING_MAX_KBYTES);
    BTreeMap::from([
        (
            "queue.buffering.max.messages",
            (2 * batch_messages).to_string(),
        ),
        ("queue.buffering.max.kbytes", kbytes.to_string()),
    ])
}

/// `properties` with `defaults` added where the user set nothing: explicit properties win.
pub fn with_defaults(
    properties: &BTreeMap<String, String>,
    defaults: BTreeMap<&'static str, String>,
) -> BTreeMap<String, String> {
    let mut out = properties.clone();
    for (k, v) in defaults {
        out.entry(k.to_string()).or_insert(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_consumer_prefetches_two_source_batches_per_partition() {
        let c = consumer(2048);
        assert_eq!(c["queued.min.messages"], "4096");
        assert_eq!(c["queued.max.messages.kbytes"], "8192");
        assert_eq!(c["fetch.queue.backoff.ms"], "10");
        // Tiny batches still hold one whole fetch; huge ones never exceed librdkafka's default.
        assert_eq!(consumer(1)["queued.max.messages.kbytes"], "1024");
        assert_eq!(consumer(1)["queued.min.messages"], "2");
        assert_eq!(consumer(100_000)["queued.max.messages.kbytes"], "65536");
        assert_eq!(consumer(100_000)["queued.min.messages"], "200000");
        assert_eq!(
            consumer(usize::MAX / 4)["queued.min.messages"],
            QUEUED_MIN_MESSAGES_MAX.to_string()
        );
    }

    #[test]
    fn the_producer_queue_follows_its_batch_settings() {
        let p = producer(&BTreeMap::new());
        assert_eq!(p["queue.buffering.max.messages"], "20000");
        assert_eq!(p["queue.buffering.max.kbytes"], "15625");
        let p = producer(&props(&[
            ("batch.num.messages", "500"),
            ("batch.size", "65536"),
        ]));
        assert_eq!(p["queue.buffering.max.messages"], "1000");
        assert_eq!(p["queue.buffering.max.kbytes"], "1024");
        // A value librdkafka will reject sizes as the default; librdkafka names it.
        let p = producer(&props(&[("batch.size", "lots")]));
        assert_eq!(p["queue.buffering.max.kbytes"], "15625");
        let p = producer(&props(&[("batch.size", "2147483647")]));
        assert_eq!(p["queue.buffering.max.kbytes"], "1048576");
    }

    #[test]
    fn explicit_properties_win_over_the_chosen_sizes() {
        let user = props(&[
            ("queued.max.messages.kbytes", "65536"),
            ("fetch.queue.backoff.ms", "1000"),
            ("security.protocol", "SSL"),
        ]);
        let all = with_defaults(&user, consumer(2048));
        assert_eq!(all["queued.max.messages.kbytes"], "65536");
        assert_eq!(all["fetch.queue.backoff.ms"], "1000");
        assert_eq!(all["queued.min.messages"], "4096");
        assert_eq!(all["security.protocol"], "SSL");
        let user = props(&[("queue.buffering.max.messages", "100000")]);
        let all = with_defaults(&user, producer(&user));
        assert_eq!(all["queue.buffering.max.messages"], "100000");
        assert_eq!(all["queue.buffering.max.kbytes"], "15625");
    }
}
