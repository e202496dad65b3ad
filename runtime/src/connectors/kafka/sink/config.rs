//! The sink's settings as written in the spec and their resolution into [`Settings`]: defaults
//! applied and cross-field rules checked, nothing opened (the factory also runs for
//! `weir validate`).

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_crds::{CheckpointMode, Duration};

use super::timeout::{self, TRANSACTION_TIMEOUT_MS};
use crate::api::{ConnectorConfig, NodeConfig};
use crate::connectors::kafka::client::deserialize_properties;
use crate::connectors::kafka::eventhubs::{self, EventHubsConfig};
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,…]`; with `eventhubs`, taken from its namespace when left out.
    #[serde(default)]
    pub bootstrap_servers: String,
    /// Azure Event Hubs: the login and settings it needs (see `eventhubs.rs`).
    #[serde(default)]
    pub eventhubs: Option<EventHubsConfig>,
    /// Any librdkafka producer property (security, SASL, TLS, tuning), passed through; numbers
    /// and booleans are taken as written.
    #[serde(default, deserialize_with = "deserialize_properties")]
    pub properties: BTreeMap<String, String>,
    /// The topic every record goes to…
    pub topic: Option<String>,
    /// …or the record field naming each record's topic.
    pub topic_field: Option<String>,
    /// The record key: one field (a string as is, anything else as JSON)…
    pub key_field: Option<String>,
    /// …or several fields, as a JSON array of their values.
    pub key_fields: Option<Vec<String>>,
    /// The fields that make up the JSON value (default: the whole record)…
    pub value_fields: Option<Vec<String>>,
    /// …or one field sent bare: a string as its UTF-8 bytes, anything else as its JSON text
    /// (Flink's `raw` format). A source's `format: string` record is sent as the message's
    /// own bytes.
    pub value_field: Option<String>,
    /// Kafka header name → record field; a header whose field is missing or null is left out.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default = "default_prefix")]
    pub transactional_id_prefix: String,
    /// How long the broker keeps a transaction open (default: chosen from the checkpoint
    /// settings and the broker's maximum). Same as `properties."transaction.timeout.ms"`.
    pub transaction_timeout: Option<Duration>,
}

fn default_prefix() -> String {
    "weir".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Fire and forget: delivery errors are counted and logged, never retried.
    None,
    /// Flushed at every checkpoint; a failed delivery fails the job, which replays from the
    /// last checkpoint (duplicates possible, no loss).
    #[default]
    AtLeastOnce,
    /// One Kafka transaction per worker per checkpoint, committed once the checkpoint is durable.
    ExactlyOnce,
}

/// Where each record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSpec {
    Fixed(String),
    Field(String),
}

/// What the message's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSpec {
    /// The whole record as JSON.
    Record,
    /// These fields as a JSON object.
    Fields(Vec<String>),
    /// This field's value bare.
    Field(String),
}

/// How the key is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    None,
    Field(String),
    Fields(Vec<String>),
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bootstrap_servers: String,
    /// Pass-through properties, without `transaction.timeout.ms` (held in `transaction_timeout`).
    pub properties: BTreeMap<String, String>,
    pub topic: TopicSpec,
    pub key: KeySpec,
    pub value: ValueSpec,
    pub headers: Vec<(String, String)>,
    pub delivery: Delivery,
    pub transactional_id_prefix: String,
    /// As set by the user (checked against the checkpoint settings); the broker's maximum is
    /// checked when the sink opens.
    pub transaction_timeout: Option<std::time::Duration>,
    /// Producers per worker that take turns holding transactions (exactly-once).
    pub pool_size: usize,
    /// The brokers' `transaction.max.timeout.ms` when known without asking (Event Hubs: 15
    /// minutes, and it does not answer DescribeConfigs).
    pub broker_max_timeout: Option<std::time::Duration>,
}

/// Producers per worker: one writing, one pre-committed awaiting its checkpoint, one committed
/// but not yet reusable (see `pool.rs`), plus one per checkpoint that may fail in a row and
/// carry its transaction over to the next one.
pub fn pool_size(tolerable_failures: u32) -> usize {
    3 + tolerable_failures.min(5) as usize
}

impl ConnectorConfig for KafkaSinkConfig {
    type Settings = Settings;

    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let mut c = self;
        let (bootstrap, properties) = (&mut c.bootstrap_servers, &mut c.properties);
        let role = eventhubs::Role::Sink;
        eventhubs::expand(cfg, c.eventhubs.as_ref(), bootstrap, properties, role)?;
        if c.bootstrap_servers.trim().is_empty() {
            return Err(cfg.error("bootstrap_servers", "must not be empty"));
        }
        let topic = match (c.topic, c.topic_field) {
            (Some(t), None) if !t.is_empty() => TopicSpec::Fixed(t),
            (None, Some(f)) if !f.is_empty() => TopicSpec::Field(f),
            (Some(_), Some(_)) => {
                return Err(cfg.error("topic", "set either topic or topic_field, not both"))
            }
            _ => return Err(cfg.error("topic", "set topic or topic_field")),
        };
        let key = match (c.key_field, c.key_fields) {
            (Some(_), Some(_)) => {
                return Err(cfg.error("key_field", "set either key_field or key_fields, not both"))
            }
            (Some(f), None) => KeySpec::Field(f),
            (None, Some(fs)) if fs.is_empty() => {
                return Err(cfg.error("key_fields", "must name at least one field"))
            }
            (None, Some(fs)) => KeySpec::Fields(fs),
            (None, None) => KeySpec::None,
        };
        let value = match (c.value_fields, c.value_field) {
            (Some(_), Some(_)) => {
                return Err(cfg.error(
                    "value_field",
                    "set either value_field or value_fields, not both",
                ))
            }
            (Some(fs), None) if fs.is_empty() => {
                return Err(cfg.error("value_fields", "must name at least one field"))
            }
            (Some(fs), None) => ValueSpec::Fields(fs),
            (None, Some(f)) if f.is_empty() => {
                return Err(cfg.error("value_field", "must not be empty"))
            }
            (None, Some(f)) => ValueSpec::Field(f),
            (None, None) => ValueSpec::Record,
        };
        for k in ["transactional.id", "enable.idempotence"] {
            if c.properties.contains_key(k) {
                return Err(cfg.error(
                    &format!("properties.{k}"),
                    "is set by the sink from `delivery` and `transactional_id_prefix`",
                ));
            }
        }
        let mut properties = c.properties;
        let from_props = match properties.remove(TRANSACTION_TIMEOUT_MS) {
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                cfg.error(
                    &format!("properties.{TRANSACTION_TIMEOUT_MS}"),
                    format!("expected milliseconds, got {v:?}"),
                )
            })?),
            None => None,
        };
        let transaction_timeout = match (c.transaction_timeout, from_props) {
            (Some(_), Some(_)) => {
                return Err(cfg.error(
                    "transaction_timeout",
                    format!("set either transaction_timeout or properties.{TRANSACTION_TIMEOUT_MS}, not both"),
                ))
            }
            (Some(d), None) => Some(d.as_std()),
            (None, Some(ms)) => Some(std::time::Duration::from_millis(ms)),
            (None, None) => None,
        };
        let broker_max_timeout = c
            .eventhubs
            .as_ref()
            .map(|_| eventhubs::MAX_TRANSACTION_TIMEOUT);
        if c.delivery == Delivery::ExactlyOnce {
            if let Some(eh) = &c.eventhubs {
                eventhubs::check_exactly_once(eh).map_err(|(field, why)| cfg.error(&field, why))?;
            }
            check_exactly_once(cfg, &properties, &c.transactional_id_prefix)?;
            match transaction_timeout {
                Some(t) => timeout::check(t, &cfg.checkpoint, broker_max_timeout)
                    .map_err(|m| cfg.error("transaction_timeout", m))?,
                // The maximum is known up front: a checkpoint that cannot fit in it is a spec
                // error now rather than at start.
                None if broker_max_timeout.is_some() => {
                    timeout::choose(None, &cfg.checkpoint, broker_max_timeout).map_err(|m| {
                        cfg.error(
                            "transaction_timeout",
                            format!("{m} (Event Hubs allows at most 15 minutes)"),
                        )
                    })?;
                }
                None => {}
            }
        }
        Ok(Settings {
            bootstrap_servers: c.bootstrap_servers,
            properties,
            topic,
            key,
            value,
            headers: c.headers.into_iter().collect(),
            delivery: c.delivery,
            transactional_id_prefix: c.transactional_id_prefix,
            transaction_timeout,
            pool_size: pool_size(cfg.checkpoint.tolerable_failures),
            broker_max_timeout,
        })
    }
}

fn check_exactly_once(
    cfg: &NodeConfig,
    properties: &BTreeMap<String, String>,
    prefix: &str,
) -> Result<()> {
    if !cfg.checkpoint.enabled {
        return Err(cfg.error(
            "delivery",
            "exactly-once commits a transaction per checkpoint; enable checkpoint.enabled or use at-least-once",
        ));
    }
    if cfg.checkpoint.mode != CheckpointMode::ExactlyOnce {
        return Err(cfg.error(
            "delivery",
            "exactly-once needs checkpoint.mode exactly-once (aligned barriers)",
        ));
    }
    if prefix.is_empty() {
        return Err(cfg.error("transactional_id_prefix", "must not be empty"));
    }
    // Recovery re-commits stored transactions with its own client (protocol.rs), which must
    // reach the brokers the way the producer does.
    super::security::Security::from_properties(properties)
        .map_err(|(name, why)| cfg.error(&format!("properties.{name}"), why))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(cfg: &NodeConfig) -> Result<Settings> {
        cfg.resolve::<KafkaSinkConfig>()
    }
    use weir_crds::{CheckpointSpec, NodeSpec};

    fn cfg(yaml: &str) -> NodeConfig {
        let spec: NodeSpec =
            serde_norway::from_str(&format!("name: out\ntype: kafka\n{yaml}")).unwrap();
        NodeConfig {
            path: "sinks[0]".into(),
            spec,
            parallelism: 2,
            checkpoint: CheckpointSpec {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(30),
                ..Default::default()
            },
        }
    }

    fn err(yaml: &str) -> String {
        resolve(&cfg(yaml)).unwrap_err().to_string()
    }

    /// The producer setting `key` for a sink with the extra settings `yaml`.
    fn producer_setting(yaml: &str, key: &str) -> Option<String> {
        let s = resolve(&cfg(&format!(
            "bootstrap_servers: k:9092\ntopic: t\n{yaml}"
        )))
        .unwrap();
        super::super::producer_config(&s)
            .get(key)
            .map(str::to_string)
    }

    #[test]
    fn the_producer_queue_is_bounded_unless_the_user_sizes_it() {
        let key = "queue.buffering.max.kbytes";
        assert_eq!(producer_setting("", key).as_deref(), Some("4096"));
        let mine = "properties: { queue.buffering.max.kbytes: 65536 }";
        assert_eq!(producer_setting(mine, key).as_deref(), Some("65536"));
    }

    #[test]
    fn only_failed_deliveries_are_reported_unless_the_user_asks_for_all() {
        let key = "delivery.report.only.error";
        assert_eq!(producer_setting("", key).as_deref(), Some("true"));
        let mine = "properties: { delivery.report.only.error: false }";
        assert_eq!(producer_setting(mine, key).as_deref(), Some("false"));
    }

    #[test]
    fn exactly_once_batches_linger_half_the_interval_within_5_to_20_ms() {
        let linger = |ms: u64| {
            super::super::exactly_once_linger(
                &BTreeMap::new(),
                std::time::Duration::from_millis(ms),
            )
            .unwrap()
            .1
        };
        assert_eq!(linger(1_000), "20");
        assert_eq!(linger(30), "15");
        assert_eq!(linger(4), "5");
        assert_eq!(linger(600_000), "20");
    }

    #[test]
    fn a_linger_the_user_sets_under_either_name_wins() {
        for key in ["linger.ms", "queue.buffering.max.ms"] {
            let props = BTreeMap::from([(key.to_string(), "7".to_string())]);
            let added =
                super::super::exactly_once_linger(&props, std::time::Duration::from_secs(1));
            assert_eq!(added, None, "{key}");
        }
    }

    #[test]
    fn minimal_settings() {
        let s = resolve(&cfg("bootstrap_servers: k:9092\ntopic: t")).unwrap();
        assert_eq!(s.topic, TopicSpec::Fixed("t".into()));
        assert_eq!(s.key, KeySpec::None);
        assert_eq!(s.delivery, Delivery::AtLeastOnce);
        assert_eq!(s.transactional_id_prefix, "weir");
        assert_eq!(s.pool_size, 3);
    }

    #[test]
    fn topic_and_key_rules() {
        assert!(err("bootstrap_servers: k\n").contains("sinks[0].topic: set topic or topic_field"));
        assert!(err("bootstrap_servers: k\ntopic: a\ntopic_field: b").contains("not both"));
        assert!(
            err("bootstrap_servers: k\ntopic: a\nkey_field: a\nkey_fields: [b]")
                .contains("sinks[0].key_field")
        );
        assert!(err("bootstrap_servers: k\ntopic: a\nkey_fields: []")
            .contains("sinks[0].key_fields: must name"));
        assert!(err("bootstrap_servers: ''\ntopic: a").contains("sinks[0].bootstrap_servers"));
        assert!(
            err("bootstrap_servers: k\ntopic: a\nvalue_field: v\nvalue_fields: [w]")
                .contains("sinks[0].value_field: set either value_field or value_fields")
        );
        assert!(err("bootstrap_servers: k\ntopic: a\nvalue_field: ''")
            .contains("sinks[0].value_field: must not be empty"));
        let s = resolve(&cfg("bootstrap_servers: k\ntopic: a\nvalue_field: line")).unwrap();
        assert_eq!(s.value, ValueSpec::Field("line".into()));
        assert!(
            err("bootstrap_servers: k\ntopic: a\ndelivery: twice").contains("sinks[0].delivery")
        );
        let s = resolve(&cfg(
            "bootstrap_servers: k\ntopic_field: t\nkey_fields: [a, b]\nheaders: {h: f}",
        ))
        .unwrap();
        assert_eq!(s.topic, TopicSpec::Field("t".into()));
        assert_eq!(s.key, KeySpec::Fields(vec!["a".into(), "b".into()]));
        assert_eq!(s.headers, vec![("h".to_string(), "f".to_string())]);
    }

    #[test]
    fn transaction_timeout_from_either_place() {
        let base = "bootstrap_servers: k\ntopic: a\ndelivery: exactly-once\n";
        let s = resolve(&cfg(&format!(
            "{base}properties: {{transaction.timeout.ms: '300000'}}"
        )))
        .unwrap();
        assert_eq!(
            s.transaction_timeout,
            Some(std::time::Duration::from_secs(300))
        );
        assert!(!s.properties.contains_key(TRANSACTION_TIMEOUT_MS));
        let s = resolve(&cfg(&format!("{base}transaction_timeout: 5m"))).unwrap();
        assert_eq!(
            s.transaction_timeout,
            Some(std::time::Duration::from_secs(300))
        );
        assert!(err(&format!(
            "{base}transaction_timeout: 5m\nproperties: {{transaction.timeout.ms: '300000'}}"
        ))
        .contains("not both"));
        assert!(err(&format!(
            "{base}properties: {{transaction.timeout.ms: soon}}"
        ))
        .contains("sinks[0].properties.transaction.timeout.ms: expected milliseconds"));
        let low = err(&format!("{base}transaction_timeout: 10s"));
        assert!(low.contains("sinks[0].transaction_timeout"), "{low}");
        assert!(low.contains("below"), "{low}");
    }

    #[test]
    fn exactly_once_needs_checkpoints_and_a_login_its_recovery_client_speaks() {
        let base = "bootstrap_servers: k\ntopic: a\ndelivery: exactly-once\n";
        let mut c = cfg(base);
        c.checkpoint.enabled = false;
        let e = resolve(&c).unwrap_err().to_string();
        assert!(
            e.contains("sinks[0].delivery") && e.contains("checkpoint.enabled"),
            "{e}"
        );
        let e = err(&format!(
            "{base}properties: {{security.protocol: SASL_SSL, sasl.mechanism: GSSAPI}}"
        ));
        assert!(
            e.contains("sinks[0].properties.sasl.mechanism") && e.contains("GSSAPI"),
            "{e}"
        );
        assert!(err(&format!("{base}properties: {{transactional.id: x}}"))
            .contains("sinks[0].properties.transactional.id"));
        // at-least-once works over any protocol
        resolve(&cfg(
            "bootstrap_servers: k\ntopic: a\nproperties: {security.protocol: SASL_SSL}",
        ))
        .unwrap();
    }

    #[test]
    fn event_hubs_exactly_once_only_when_enabled_and_within_15_minutes() {
        let eh = "eventhubs: {namespace: ns, connection_string: 'Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=secret'";
        let s = resolve(&cfg(&format!("topic: a\n{eh}}}"))).unwrap();
        assert_eq!(s.bootstrap_servers, "ns.servicebus.windows.net:9093");
        assert_eq!(s.delivery, Delivery::AtLeastOnce);
        assert_eq!(s.properties["sasl.username"], "$ConnectionString");
        let e = err(&format!("topic: a\ndelivery: exactly-once\n{eh}}}"));
        assert!(
            e.starts_with("sinks[0].delivery: exactly-once on Azure Event Hubs"),
            "{e}"
        );
        assert!(!e.contains("secret"));
        let on = format!("topic: a\ndelivery: exactly-once\n{eh}, transactions: true}}");
        let s = resolve(&cfg(&on)).unwrap();
        assert_eq!(
            s.broker_max_timeout,
            Some(std::time::Duration::from_secs(900))
        );
        let e = err(&format!("{on}\ntransaction_timeout: 20m"));
        assert!(
            e.starts_with("sinks[0].transaction_timeout") && e.contains("exceeds"),
            "{e}"
        );
        let mut long = cfg(&on);
        long.checkpoint.interval = Duration::from_secs(600);
        long.checkpoint.timeout = Duration::from_secs(600);
        let e = resolve(&long).unwrap_err().to_string();
        assert!(e.contains("15 minutes"), "{e}");
    }

    #[test]
    fn pool_grows_with_tolerated_failures() {
        assert_eq!(pool_size(0), 3);
        assert_eq!(pool_size(2), 5);
        assert_eq!(pool_size(100), 8);
    }
}
