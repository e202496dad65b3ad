//! The librdkafka producer both sink kinds write through, with delivery errors collected so
//! that a flush can tell whether everything sent so far arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::ClientContext;

use super::encode::Message;
use crate::error::{Error, Result};

/// Counts failed deliveries and keeps the first failure's text.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Deliveries {
    /// Failed deliveries since the last call and the first failure, then starts over.
    pub fn take(&self) -> (u64, Option<String>) {
        let n = self.failed.swap(0, Ordering::SeqCst);
        let first = self.first.lock().map(|mut f| f.take()).unwrap_or(None);
        (n, first)
    }
}

pub struct Context(pub Arc<Deliveries>);

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::connectors::kafka::client::log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::connectors::kafka::client::error_event(&error, reason);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.0.failed.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut first) = self.0.first.lock() {
                first.get_or_insert_with(|| format!("topic {}: {e}", m.topic()));
            }
        }
    }
}

pub type RdProducer = ThreadedProducer<Context>;

/// A producer and its delivery record.
#[derive(Clone)]
pub struct Producer {
    pub inner: Arc<RdProducer>,
    pub deliveries: Arc<Deliveries>,
}

impl Producer {
    pub fn create(config: &ClientConfig, node: &str) -> Result<Producer> {
        let deliveries = Arc::new(Deliveries::default());
        let inner: RdProducer = config
            .create_with_context(Context(deliveries.clone()))
            .map_err(|e| Error::node(node, format!("cannot create the Kafka producer: {e}")))?;
        Ok(Producer {
            inner: Arc::new(inner),
            deliveries,
        })
    }

    /// Queues one message, waiting while librdkafka's queue is full (that is the backpressure).
    pub async fn send(&self, m: &Message<'_>) -> std::result::Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(&m.topic).payload(&m.value);
        if let Some(k) = &m.key {
            record = record.key(k);
        }
        if let Some(ts) = m.timestamp {
            record = record.timestamp(ts);
        }
        if !m.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(m.headers.len());
            for (name, value) in &m.headers {
                h = h.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            record = record.headers(h);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits until every queued message is delivered or failed; an error names the first
    /// failure (the checkpoint must not complete when any record is missing).
    pub async fn flush(&self, node: &str, timeout: Duration) -> Result<()> {
        let p = self.inner.clone();
        blocking(node, "flush", move || flush(&p, timeout)).await?;
        let (failed, first) = self.deliveries.take();
        if failed > 0 {
            return Err(Error::node(
                node,
                format!(
                    "{failed} record(s) could not be delivered; first: {}",
                    first.unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }
}

/// librdkafka's `rd_kafka_flush` with the whole timeout. rdkafka's own `flush` calls it with
/// a zero timeout and then polls the event queue for up to 100 ms at a time; with
/// ThreadedProducer's thread taking the delivery reports from that queue, every flush lasted
/// about 100 ms, a tenth of a 1 s checkpoint interval during which the sink wrote nothing.
/// With delivery reports as events (as rdkafka sets them), `rd_kafka_flush` instead waits for
/// the in-flight count to reach zero and returns as soon as the last report is served.
pub fn flush(p: &RdProducer, timeout: Duration) -> rdkafka::error::KafkaResult<()> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the handle belongs to `p`, which outlives the call; rd_kafka_flush is
    // thread-safe and only waits on the producer's own counters and queues.
    let e = unsafe { rdkafka::bindings::rd_kafka_flush(p.client().native_ptr(), ms) };
    match e {
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        e => Err(KafkaError::Flush(e.into())),
    }
}

/// Runs one of librdkafka's blocking calls (flush, transaction steps) off the async threads.
pub async fn blocking(
    node: &str,
    what: &str,
    f: impl FnOnce() -> rdkafka::error::KafkaResult<()> + Send + 'static,
) -> Result<()> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::node(node, format!("Kafka {what} failed: {e}"))),
        Err(e) => Err(Error::node(node, format!("Kafka {what} panicked: {e}"))),
    }
}
