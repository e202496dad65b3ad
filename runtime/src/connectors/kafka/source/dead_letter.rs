//! The dead-letter topic: a poison message is written there as it was read (key, value, headers,
//! timestamp) plus `weir.error.*` headers saying where it came from and why it was rejected.
//! Deliveries are awaited before the poll that met the message returns, so a checkpoint never
//! covers a poison message whose copy could still be lost (at-least-once into the DLQ).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::decode::RawMessage;
use crate::connectors::kafka::client::client_config;
use crate::error::{Error, Result};

pub struct DeadLetterQueue {
    topic: String,
    producer: FutureProducer,
    node: String,
    pending: Vec<(String, DeliveryFuture)>,
}

/// Every header of a dead-lettered message: the original's in their order, then the
/// `weir.error.*` ones. An original that was dead-lettered before (a replay of a dead-letter
/// topic) loses its old `weir.error.*` headers, so each name is there once and says why this
/// copy was rejected; a consumer taking the first header of a name would read the stale one.
pub fn dead_letter_headers<'a>(node: &str, m: &RawMessage<'a>, why: &str) -> Vec<Header<'a>> {
    let mut out: Vec<Header<'a>> = m
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(ERROR_PREFIX))
        .map(|(name, value)| (Cow::Borrowed(*name), value.map(Cow::Borrowed)))
        .collect();
    out.extend(
        error_headers(node, m, why)
            .into_iter()
            .map(|(name, value)| (Cow::Borrowed(name), Some(Cow::Owned(value.into_bytes())))),
    );
    out
}

/// A Kafka header: its name and its value (absent, or bytes).
pub type Header<'a> = (Cow<'a, str>, Option<Cow<'a, [u8]>>);

/// Names of the headers weir adds start with this.
pub const ERROR_PREFIX: &str = "weir.error.";

/// The headers added to a dead-lettered message.
pub fn error_headers(node: &str, m: &RawMessage<'_>, why: &str) -> Vec<(&'static str, String)> {
    vec![
        ("weir.error.message", why.to_string()),
        ("weir.error.node", node.to_string()),
        ("weir.error.topic", m.topic.to_string()),
        ("weir.error.partition", m.partition.to_string()),
        ("weir.error.offset", m.offset.to_string()),
    ]
}

impl DeadLetterQueue {
    pub fn new(
        node: &str,
        bootstrap: &str,
        source_properties: &BTreeMap<String, String>,
        topic: &str,
        extra: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut cfg = client_config(bootstrap, source_properties);
        // Consumer-only settings of the source would only produce warnings here.
        for k in source_properties.keys() {
            if is_consumer_only(k) {
                cfg.remove(k);
            }
        }
        for (k, v) in extra {
            cfg.set(k, v);
        }
        let producer = cfg
            .create()
            .map_err(|e| Error::node(node, format!("creating the dead-letter producer: {e}")))?;
        Ok(DeadLetterQueue {
            topic: topic.to_string(),
            producer,
            node: node.to_string(),
            pending: Vec::new(),
        })
    }

    /// Queues the raw message; [`DeadLetterQueue::flush`] waits for it.
    pub fn send(&mut self, m: &RawMessage<'_>, why: &str) -> Result<()> {
        let all = dead_letter_headers(&self.node, m, why);
        let mut headers = OwnedHeaders::new_with_capacity(all.len());
        for (name, value) in &all {
            headers = headers.insert(rdkafka::message::Header {
                key: name.as_ref(),
                value: value.as_deref(),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = m.key {
            record = record.key(k);
        }
        if let Some(v) = m.value {
            record = record.payload(v);
        }
        if let Some(ts) = m.timestamp {
            record = record.timestamp(ts);
        }
        let origin = format!("{} partition {} offset {}", m.topic, m.partition, m.offset);
        match self.producer.send_result(record) {
            Ok(f) => {
                self.pending.push((origin, f));
                Ok(())
            }
            Err((e, _)) => Err(Error::node(
                &self.node,
                format!("dead-lettering {origin} to {:?}: {e}", self.topic),
            )),
        }
    }

    /// Waits until every queued message is acknowledged; a failure fails the job, since the
    /// poison message would otherwise be lost.
    pub async fn flush(&mut self, timeout: Duration) -> Result<()> {
        for (origin, f) in std::mem::take(&mut self.pending) {
            let outcome = tokio::time::timeout(timeout, f).await;
            let failure = match outcome {
                Ok(Ok(Ok(_))) => continue,
                Ok(Ok(Err((e, _)))) => e.to_string(),
                Ok(Err(_)) => "the producer was dropped".to_string(),
                Err(_) => format!(
                    "no acknowledgement within {}",
                    humantime::format_duration(timeout)
                ),
            };
            return Err(Error::node(
                &self.node,
                format!(
                    "dead-lettering {origin} to {:?} failed: {failure}",
                    self.topic
                ),
            ));
        }
        Ok(())
    }
}

fn is_consumer_only(property: &str) -> bool {
    matches!(
        property,
        "group.id"
            | "group.instance.id"
            | "isolation.level"
            | "auto.offset.reset"
            | "enable.auto.commit"
            | "auto.commit.interval.ms"
            | "enable.auto.offset.store"
            | "enable.partition.eof"
            | "fetch.min.bytes"
            | "fetch.max.bytes"
            | "fetch.wait.max.ms"
            | "max.partition.fetch.bytes"
            | "queued.min.messages"
            | "queued.max.messages.kbytes"
            | "session.timeout.ms"
            | "heartbeat.interval.ms"
            | "max.poll.interval.ms"
            | "partition.assignment.strategy"
            | "check.crcs"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_headers_locate_the_message() {
        let m = RawMessage {
            topic: "orders",
            partition: 3,
            offset: 42,
            ..Default::default()
        };
        let h = error_headers("src", &m, "invalid JSON");
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("weir.error.topic"), "orders");
        assert_eq!(get("weir.error.partition"), "3");
        assert_eq!(get("weir.error.offset"), "42");
        assert_eq!(get("weir.error.message"), "invalid JSON");
    }

    #[test]
    fn a_message_dead_lettered_again_carries_only_the_new_reason() {
        let m = RawMessage {
            topic: "orders.dlq",
            partition: 1,
            offset: 7,
            headers: vec![
                ("trace", Some(&b"\xff\x00"[..])),
                ("weir.error.message", Some(&b"old reason"[..])),
                ("empty", None),
            ],
            ..Default::default()
        };
        let h = dead_letter_headers("replay", &m, "still invalid");
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(
            names,
            [
                "trace",
                "empty",
                "weir.error.message",
                "weir.error.node",
                "weir.error.topic",
                "weir.error.partition",
                "weir.error.offset"
            ]
        );
        assert_eq!(h[0].1.as_deref(), Some(&b"\xff\x00"[..]));
        assert_eq!(h[1].1, None);
        assert_eq!(h[2].1.as_deref(), Some(&b"still invalid"[..]));
    }

    #[test]
    fn consumer_settings_are_not_given_to_the_producer() {
        assert!(is_consumer_only("isolation.level"));
        assert!(!is_consumer_only("security.protocol"));
    }
}
