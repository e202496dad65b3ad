//! `redis_events`: a sink written only against weir's public API (`weir_runtime::api`), the way
//! a user adds a connector in their own crate.
//!
//! Each record becomes `HSET <key_prefix>:<user_id> <event_id> <record as JSON>` followed by
//! `EXPIRE <key_prefix>:<user_id> <ttl_seconds>`, sent as one pipeline per flush. The writes
//! are idempotent (a replayed record sets the same field to the same value), so flushing at
//! every checkpoint barrier gives an exactly-once end state without transactions.
//!
//! ```yaml
//! sinks:
//!   - name: events
//!     type: redis_events
//!     url_env: REDIS_URL        # or url: redis://host:6379/0
//!     key_prefix: events
//!     user_field: user_id
//!     event_field: event_id
//!     ttl_seconds: 86400
//!     batch_size: 500           # records per pipeline between checkpoints
//!     flush_interval_ms: 200
//!     retry: { backoff: 100ms, max_attempts: 4 }   # weir's RetryPolicy, for failed pipelines
//! ```

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;
use weir_runtime::api::{
    Batch, ConnectorConfig, Error, NodeConfig, NodeContext, Record, Result, Sink, SinkBox, Value,
};
use weir_runtime::registry::Registry;
use weir_runtime::retry::RetryPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisEventsConfig {
    pub url: Option<String>,
    /// Name of an environment variable holding the URL (keeps credentials out of the spec).
    pub url_env: Option<String>,
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_user_field")]
    pub user_field: String,
    #[serde(default = "default_event_field")]
    pub event_field: String,
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    /// How a pipeline that failed on the connection is sent again (every command in it is
    /// idempotent): weir's one retry policy. Past it the job fails into its restart strategy.
    #[serde(default = "default_retry")]
    pub retry: RetryPolicy,
}

fn default_prefix() -> String {
    "events".into()
}
fn default_user_field() -> String {
    "user_id".into()
}
fn default_event_field() -> String {
    "event_id".into()
}
fn default_ttl() -> u64 {
    86_400
}
fn default_batch() -> usize {
    500
}
fn default_flush_ms() -> u64 {
    200
}
fn default_retry() -> RetryPolicy {
    RetryPolicy {
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
        max_attempts: Some(4),
        ..RetryPolicy::default()
    }
}

/// One buffered write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub key: String,
    pub field: String,
    pub json: String,
}

/// A key or field value as text: strings as they are, numbers and booleans as JSON.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// weir's one shape for a connector's settings: parsed by serde, then checked here, purely.
impl ConnectorConfig for RedisEventsConfig {
    type Settings = RedisEventsConfig;

    fn resolve(self, cfg: &NodeConfig) -> Result<RedisEventsConfig> {
        if self.url.is_some() == self.url_env.is_some() {
            return Err(cfg.error("url", "give exactly one of `url` and `url_env`"));
        }
        if self.batch_size == 0 {
            return Err(cfg.error("batch_size", "must be at least 1"));
        }
        Ok(self)
    }
}

impl RedisEventsConfig {
    /// The write for a record; the error names the missing or unusable field.
    pub fn write_for(&self, r: &Record) -> std::result::Result<Write, String> {
        let get = |f: &str| -> std::result::Result<String, String> {
            let v = r.fields().get(f).ok_or_else(|| format!("no field {f:?}"))?;
            text(v).ok_or_else(|| format!("field {f:?} is {v}, expected a string or number"))
        };
        Ok(Write {
            key: format!("{}:{}", self.key_prefix, get(&self.user_field)?),
            field: get(&self.event_field)?,
            json: serde_json::to_string(r.fields()).map_err(|e| e.to_string())?,
        })
    }
}

/// Whether a failed pipeline may succeed when sent again: the connection, not the commands.
pub fn transient(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// The pipeline for a set of writes: every HSET, then one EXPIRE per distinct key.
pub fn pipeline(writes: &[Write], ttl_seconds: u64) -> redis::Pipeline {
    let mut p = redis::pipe();
    let mut keys = BTreeSet::new();
    for w in writes {
        p.cmd("HSET")
            .arg(&w.key)
            .arg(&w.field)
            .arg(&w.json)
            .ignore();
        keys.insert(w.key.as_str());
    }
    for k in keys {
        p.cmd("EXPIRE").arg(k).arg(ttl_seconds).ignore();
    }
    p
}

/// This sink's own metrics, in the default Prometheus registry (served by the worker's
/// `/metrics` next to weir's).
struct Families {
    commands: IntCounterVec,
    flushes: IntCounterVec,
    flush_seconds: HistogramVec,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let labels = &["job", "worker", "node"];
        let commands = IntCounterVec::new(
            Opts::new(
                "weir_redis_sink_commands_total",
                "HSET and EXPIRE commands sent.",
            ),
            labels,
        )
        .expect("static metric");
        let flushes = IntCounterVec::new(
            Opts::new("weir_redis_sink_flushes_total", "Pipelines sent."),
            labels,
        )
        .expect("static metric");
        let flush_seconds = HistogramVec::new(
            HistogramOpts::new(
                "weir_redis_sink_flush_duration_seconds",
                "Time to send one pipeline.",
            ),
            labels,
        )
        .expect("static metric");
        for c in [
            Box::new(commands.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(flushes.clone()),
            Box::new(flush_seconds.clone()),
        ] {
            // Fails only when registered twice; the counters work either way.
            let _ = prometheus::register(c);
        }
        Families {
            commands,
            flushes,
            flush_seconds,
        }
    })
}

struct Metrics {
    commands: IntCounter,
    flushes: IntCounter,
    flush_seconds: prometheus::Histogram,
}

pub struct RedisEvents {
    config: RedisEventsConfig,
    url: String,
    node: String,
    conn: Option<ConnectionManager>,
    buffer: Vec<Write>,
    oldest: Option<Instant>,
    metrics: Option<Metrics>,
    ctx: Option<NodeContext>,
}

impl RedisEvents {
    /// Checks the settings without connecting (this also runs for `weir validate`).
    pub fn from_config(cfg: &NodeConfig) -> Result<Self> {
        let config = cfg.resolve::<RedisEventsConfig>()?;
        // With `url_env` the URL is read at open, so validation needs no credentials.
        let url = config.url.clone().unwrap_or_default();
        Ok(RedisEvents {
            config,
            url,
            node: cfg.name().to_string(),
            conn: None,
            buffer: Vec::new(),
            oldest: None,
            metrics: None,
            ctx: None,
        })
    }

    async fn send(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::node(&self.node, "write before open"))?;
        let p = pipeline(&self.buffer, self.config.ttl_seconds);
        let started = Instant::now();
        // ConnectionManager reconnects; a pipeline that fails on the connection is sent again,
        // since every command in it is idempotent.
        let mut delays = self.config.retry.backoff();
        loop {
            let e = match p.query_async::<()>(conn).await {
                Ok(()) => break,
                Err(e) => e,
            };
            let wait = if transient(&e) { delays.next() } else { None };
            let Some(wait) = wait else {
                return Err(Error::node(&self.node, format!("redis pipeline: {e}")));
            };
            tracing::warn!(node = %self.node, attempt = delays.retries(), error = %e, "pipeline failed, retrying");
            tokio::time::sleep(wait).await;
        }
        let keys: BTreeSet<&str> = self.buffer.iter().map(|w| w.key.as_str()).collect();
        let bytes: usize = self.buffer.iter().map(|w| w.json.len()).sum();
        if let Some(m) = &self.metrics {
            m.commands.inc_by((self.buffer.len() + keys.len()) as u64);
            m.flushes.inc();
            m.flush_seconds.observe(started.elapsed().as_secs_f64());
        }
        if let Some(ctx) = &self.ctx {
            ctx.metrics.bytes_out.inc_by(bytes as u64);
        }
        self.buffer.clear();
        self.oldest = None;
        Ok(())
    }
}

#[async_trait]
impl Sink for RedisEvents {
    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        if let Some(var) = &self.config.url_env {
            self.url = std::env::var(var).map_err(|_| {
                Error::node(
                    &self.node,
                    format!("environment variable {var} (url_env) is not set"),
                )
            })?;
        }
        // The URL may hold a password: it is never part of a message.
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| Error::node(&self.node, format!("redis client: {e}")))?;
        // The sink's `retry` policy decides how long a write keeps trying. The manager's own
        // reconnect retries (6, doubling from 100 ms, 1 s connect timeout each: about 10 s per
        // command by default) would stretch every attempt of that policy while Redis is away.
        let config = ConnectionManagerConfig::new().set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| Error::node(&self.node, format!("connecting to redis: {e}")))?;
        self.conn = Some(conn);
        let f = families();
        let w = ctx.worker.to_string();
        let l = [ctx.job.as_str(), w.as_str(), ctx.node.as_str()];
        self.metrics = Some(Metrics {
            commands: f.commands.with_label_values(&l),
            flushes: f.flushes.with_label_values(&l),
            flush_seconds: f.flush_seconds.with_label_values(&l),
        });
        self.ctx = Some(ctx.clone());
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        for r in &batch.records {
            let w = self.config.write_for(r).map_err(|message| Error::Record {
                node: self.node.clone(),
                record: r.describe(),
                message,
            })?;
            self.buffer.push(w);
            self.oldest.get_or_insert_with(Instant::now);
        }
        if self.buffer.len() >= self.config.batch_size {
            self.send().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.send().await
    }

    async fn on_tick(&mut self) -> Result<()> {
        let due = self
            .oldest
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.config.flush_interval_ms));
        if due {
            self.send().await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.send().await?;
        self.conn = None;
        Ok(())
    }
}

/// Registers `redis_events` with a registry.
pub fn register(registry: &mut Registry) {
    registry.sink("redis_events", |cfg: &NodeConfig| {
        Ok(SinkBox::plain(RedisEvents::from_config(cfg)?))
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> RedisEventsConfig {
        serde_json::from_value(json!({"url": "redis://x"})).unwrap()
    }

    fn record(v: Value) -> Record {
        Record::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn a_record_becomes_a_hash_field_under_its_user() {
        let w = config()
            .write_for(&record(json!({"user_id": "u1", "event_id": 7, "x": true})))
            .unwrap();
        assert_eq!(w.key, "events:u1");
        assert_eq!(w.field, "7");
        assert_eq!(w.json, r#"{"user_id":"u1","event_id":7,"x":true}"#);
    }

    #[test]
    fn missing_or_unusable_fields_are_named() {
        let e = config()
            .write_for(&record(json!({"event_id": 7})))
            .unwrap_err();
        assert!(e.contains("\"user_id\""), "{e}");
        let e = config()
            .write_for(&record(json!({"user_id": {"a": 1}, "event_id": 7})))
            .unwrap_err();
        assert!(
            e.contains("\"user_id\"") && e.contains("expected a string"),
            "{e}"
        );
    }

    #[test]
    fn one_expire_per_distinct_key() {
        let w = |k: &str, f: &str| Write {
            key: k.into(),
            field: f.into(),
            json: "{}".into(),
        };
        let p = pipeline(&[w("a", "1"), w("b", "2"), w("a", "3")], 60);
        let packed = String::from_utf8_lossy(&p.get_packed_pipeline()).to_string();
        assert_eq!(packed.matches("HSET").count(), 3);
        assert_eq!(packed.matches("EXPIRE").count(), 2);
    }
}
