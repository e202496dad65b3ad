//! The settings of the `pubsub` source and sink as written in the spec, and their resolution
//! into checked settings: defaults applied, names completed, cross-field rules checked, nothing
//! opened (the factory also runs for `weir validate`).

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use weir_crds::{ByteSize, Duration};

use crate::api::{ConnectorConfig, NodeConfig};
use crate::connectors::message::default_value_field;
pub use crate::connectors::message::ValueFormat;
use crate::error::Result;
use crate::event_time::WatermarkSettings;
use crate::event_time::{EventTime, EventTimeForms, EventTimeSource};
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

/// Where the Pub/Sub API is. Shared by the source and the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Google's service (or `endpoint`), with Application Default Credentials.
    Google { endpoint: Option<String> },
    /// The emulator at `host:port`: plain gRPC, no credentials.
    Emulator(String),
}

/// Settings of a `pubsub` source.
///
/// ```yaml
/// sources:
///   - name: orders
///     type: pubsub
///     project: my-project
///     subscription: orders-weir          # or projects/my-project/subscriptions/orders-weir
///     # endpoint: https://europe-west1-pubsub.googleapis.com   # default: Google's global one
///     # emulator_host: 127.0.0.1:8085    # default: $PUBSUB_EMULATOR_HOST when no endpoint is set
///     max_outstanding_messages: 100000   # flow control: unacked messages per worker
///     max_outstanding_bytes: 1GiB
///     ack_deadline: 60s                  # lease asked for (and extended by) per message, 10s–600s
///     dedup_window: 10m                  # how long acked message ids are remembered
///     format: json                       # | string | bytes (base64), under `value_field`
///     metadata: { message_id: _id, publish_time: _published, ordering_key: _key,
///                 attributes: _attributes }
///     event_time: publish_time           # | {attribute: ts} | {field: ts, format: millis}
///     watermark: { max_out_of_orderness: 5s, idle_timeout: 30s }
///     on_error: fail                     # | skip
///     stop_after_idle: 30s               # optional: finish after this long without a message
/// ```
///
/// Messages are acknowledged only once the checkpoint that covers them is durable; meanwhile
/// their leases are extended (see `source.rs`). Parallel workers share the subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSourceConfig {
    /// The Google Cloud project; optional when `subscription` is a full path.
    #[serde(default)]
    pub project: Option<String>,
    /// A subscription name (with `project`) or `projects/P/subscriptions/S`.
    pub subscription: String,
    /// The gRPC endpoint, e.g. a regional one (default: `https://pubsub.googleapis.com`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The emulator's `host:port`. Default: `$PUBSUB_EMULATOR_HOST`, unless `endpoint` is set.
    #[serde(default)]
    pub emulator_host: Option<String>,
    /// The server stops sending when this many messages are unacknowledged on a worker's stream.
    /// Messages wait for their checkpoint unacknowledged, so this bounds the messages a worker
    /// can take in per checkpoint interval.
    #[serde(default = "default_outstanding_messages")]
    pub max_outstanding_messages: i64,
    /// The same bound in bytes.
    #[serde(default = "default_outstanding_bytes")]
    pub max_outstanding_bytes: ByteSize,
    /// The lease the client asks for each message and extends it by while the message waits
    /// for its checkpoint (10s–600s). A crashed worker's messages are redelivered this long
    /// after its last extension.
    #[serde(default = "default_ack_deadline")]
    pub ack_deadline: Duration,
    /// How long a message id is remembered after its checkpoint completed, to drop a
    /// redelivery of it (an acknowledgement lost in a crash, or refused); `0s` keeps only the
    /// ids still waiting for a checkpoint. Must cover `ack_deadline` plus the time a restart
    /// takes.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: Duration,
    /// Most records returned by one poll.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub format: ValueFormat,
    /// Field holding the data for the `string` and `bytes` formats.
    #[serde(default = "default_value_field")]
    pub value_field: String,
    #[serde(default)]
    pub metadata: MetadataFields,
    #[serde(
        default,
        deserialize_with = "PubsubSourceConfig::deserialize_event_time"
    )]
    pub event_time: Option<EventTime>,
    #[serde(default)]
    pub watermark: Option<WatermarkSettings>,
    /// A message that cannot be decoded: `fail` the job, or `skip` it (counted; it is
    /// acknowledged with its checkpoint). A subscription's own dead-letter topic is the place
    /// for poison messages that should be kept.
    #[serde(default)]
    pub on_error: OnError,
    /// Finish once no message arrived for this long (draining a subscription, tests). Unset:
    /// the source never ends.
    #[serde(default)]
    pub stop_after_idle: Option<Duration>,
}

fn default_outstanding_messages() -> i64 {
    100_000
}
fn default_outstanding_bytes() -> ByteSize {
    ByteSize(1024 * 1024 * 1024)
}
fn default_ack_deadline() -> Duration {
    Duration::from_secs(60)
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(600)
}
fn default_batch_size() -> usize {
    1000
}

/// Names of the fields that receive each message's metadata; unset ones are left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetadataFields {
    pub message_id: Option<String>,
    /// Publish time, ms since the epoch.
    pub publish_time: Option<String>,
    /// The ordering key (absent when the message has none).
    pub ordering_key: Option<String>,
    /// An object of attribute name → value.
    pub attributes: Option<String>,
}

impl EventTimeSource for PubsubSourceConfig {
    const EVENT_TIME: EventTimeForms = EventTimeForms {
        system: "publish_time",
        system_is: "publish time",
        attributes: true,
    };
}

/// A checked source configuration.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub config: PubsubSourceConfig,
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    pub endpoint: Endpoint,
}

/// Settings of a `pubsub` sink.
///
/// ```yaml
/// sinks:
///   - name: out
///     type: pubsub
///     project: my-project
///     topic: orders-enriched             # or projects/my-project/topics/orders-enriched
///     value_fields: [id, total]          # the JSON data (default: the whole record)
///     ordering_key_field: customer       # optional; the topic's subscribers need ordering on
///     attributes: { source: origin }     # attribute name: field (left out when missing)
///     batching: { max_messages: 1000, max_bytes: 1MiB, max_delay: 10ms }
///     max_in_flight: 10000               # unacknowledged publishes before `write` waits
///     retry: { backoff: 100ms, max_backoff: 10s, max_elapsed: 5m }
/// ```
///
/// At-least-once: every message is acknowledged by Pub/Sub before the checkpoint that covers it
/// completes; after a failure the job replays from its last checkpoint, so a message can be
/// published twice (each with its own message id).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSinkConfig {
    #[serde(default)]
    pub project: Option<String>,
    /// A topic name (with `project`) or `projects/P/topics/T`.
    pub topic: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub emulator_host: Option<String>,
    /// The fields that make up the JSON data (default: the whole record).
    #[serde(default)]
    pub value_fields: Option<Vec<String>>,
    /// The record field whose value is each message's ordering key (a string as is, anything
    /// else as JSON); a message whose field is missing or null has no ordering key.
    #[serde(default)]
    pub ordering_key_field: Option<String>,
    /// Attribute name → record field; missing or null fields are left out, strings are taken
    /// as they are and other values as JSON text.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub batching: Batching,
    /// Publishes awaiting Pub/Sub's acknowledgement before `write` waits for them.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How failed publishes are retried (transient errors only; see `retry.rs`).
    #[serde(default = "default_sink_retry")]
    pub retry: RetryPolicy,
}

fn default_max_in_flight() -> usize {
    10_000
}

fn default_sink_retry() -> RetryPolicy {
    RetryPolicy {
        backoff: StdDuration::from_millis(100),
        max_backoff: StdDuration::from_secs(10),
        max_attempts: None,
        max_elapsed: Some(StdDuration::from_secs(300)),
        ..RetryPolicy::default()
    }
}

/// When the client sends a batch: whichever limit is reached first.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// At most 1000 (Pub/Sub's limit per request).
    #[serde(default = "default_batch_messages")]
    pub max_messages: u32,
    /// At most 10MB (Pub/Sub's limit per request).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_batch_delay")]
    pub max_delay: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_messages: default_batch_messages(),
            max_bytes: default_batch_bytes(),
            max_delay: default_batch_delay(),
        }
    }
}

fn default_batch_messages() -> u32 {
    1000
}
fn default_batch_bytes() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_batch_delay() -> Duration {
    Duration::from_millis(10)
}

/// A checked sink configuration.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub config: PubsubSinkConfig,
    /// `projects/P/topics/T`.
    pub topic: String,
    pub endpoint: Endpoint,
}

/// `projects/P/<kind>/NAME` from a short name and a project, or a full path; errors name the
/// field. `kind` is `subscriptions` or `topics`.
fn full_name(
    cfg: &NodeConfig,
    field: &str,
    kind: &str,
    name: &str,
    project: Option<&str>,
) -> Result<String> {
    let name = name.trim();
    let project = project.map(str::trim).filter(|p| !p.is_empty());
    if let Some(rest) = name.strip_prefix("projects/") {
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            [p, k, n] if k == kind && !p.is_empty() && !n.is_empty() => {
                if project.is_some_and(|q| q != p) {
                    return Err(cfg.error(
                        "project",
                        format!("{project:?} differs from the project in {field} ({p:?})"),
                    ));
                }
                check_id(cfg, field, n)?;
                Ok(name.to_string())
            }
            _ => Err(cfg.error(
                field,
                format!("expected a name or projects/PROJECT/{kind}/NAME, got {name:?}"),
            )),
        }
    } else {
        check_id(cfg, field, name)?;
        let Some(p) = project else {
            return Err(cfg.error(
                "project",
                format!("is required unless {field} is a full path projects/PROJECT/{kind}/NAME"),
            ));
        };
        Ok(format!("projects/{p}/{kind}/{name}"))
    }
}

/// Pub/Sub's rule for topic and subscription ids: 3–255 characters, a letter first, then
/// letters, digits and `-_.~+%`.
fn check_id(cfg: &NodeConfig, field: &str, id: &str) -> Result<()> {
    let ok = (3..=255).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(cfg.error(
            field,
            format!("{id:?} is not a Pub/Sub id (3–255 letters, digits and -_.~+%, starting with a letter)"),
        ))
    }
}

fn endpoint(
    cfg: &NodeConfig,
    endpoint: &Option<String>,
    emulator: &Option<String>,
) -> Result<Endpoint> {
    match (endpoint, emulator) {
        (Some(_), Some(_)) => Err(cfg.error(
            "emulator_host",
            "set either endpoint or emulator_host, not both",
        )),
        (_, Some(h)) => {
            check_host_port(h).map_err(|m| cfg.error("emulator_host", m))?;
            Ok(Endpoint::Emulator(h.trim().to_string()))
        }
        (Some(e), None) => {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(cfg.error(
                    "endpoint",
                    format!("expected a URL such as https://europe-west1-pubsub.googleapis.com, got {e:?}"),
                ));
            }
            Ok(Endpoint::Google {
                endpoint: Some(e.trim_end_matches('/').to_string()),
            })
        }
        (None, None) => Ok(Endpoint::Google { endpoint: None }),
    }
}

pub fn check_host_port(h: &str) -> std::result::Result<(), String> {
    let h = h.trim();
    match h.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("expected host:port, got {h:?}")),
    }
}

impl ConnectorConfig for PubsubSourceConfig {
    type Settings = SourceSettings;

    /// Checks a source's settings; errors name the field.
    fn resolve(self, cfg: &NodeConfig) -> Result<SourceSettings> {
        let c = self;
        let subscription = full_name(
            cfg,
            "subscription",
            "subscriptions",
            &c.subscription,
            c.project.as_deref(),
        )?;
        let endpoint = endpoint(cfg, &c.endpoint, &c.emulator_host)?;
        if c.max_outstanding_messages < 1 {
            return Err(cfg.error("max_outstanding_messages", "must be at least 1"));
        }
        if c.max_outstanding_bytes.0 < 1024 {
            return Err(cfg.error("max_outstanding_bytes", "must be at least 1KiB"));
        }
        let deadline = c.ack_deadline.as_std();
        if !(StdDuration::from_secs(10)..=StdDuration::from_secs(600)).contains(&deadline) {
            return Err(cfg.error(
                "ack_deadline",
                format!(
                    "must be between 10s and 600s (Pub/Sub's range), got {}",
                    c.ack_deadline
                ),
            ));
        }
        let window = c.dedup_window.as_std();
        if !window.is_zero() && window < deadline {
            return Err(cfg.error(
            "dedup_window",
            format!(
                "{} is shorter than ack_deadline ({}): a message whose acknowledgement a crash lost comes back up to ack_deadline after the crash, and would no longer be recognised (0s turns the window off)",
                c.dedup_window, c.ack_deadline
            ),
        ));
        }
        if c.batch_size == 0 {
            return Err(cfg.error("batch_size", "must be at least 1"));
        }
        let value_field = c.format.field(&c.value_field);
        let (watermark, event_time) = (c.watermark.is_some(), c.event_time.is_some());
        Self::EVENT_TIME.check_source(cfg, watermark, event_time, value_field, &c.metadata)?;
        if let Some(w) = &c.watermark {
            if w.idle_timeout.is_some_and(|d| d.as_std().is_zero()) {
                return Err(cfg.error("watermark.idle_timeout", "must be more than 0s"));
            }
        }
        if c.stop_after_idle.is_some_and(|d| d.as_std().is_zero()) {
            return Err(cfg.error("stop_after_idle", "must be more than 0s"));
        }
        Ok(SourceSettings {
            config: c,
            subscription,
            endpoint,
        })
    }
}

impl ConnectorConfig for PubsubSinkConfig {
    type Settings = SinkSettings;

    /// Checks a sink's settings; errors name the field.
    fn resolve(self, cfg: &NodeConfig) -> Result<SinkSettings> {
        let c = self;
        let topic = full_name(cfg, "topic", "topics", &c.topic, c.project.as_deref())?;
        let endpoint = endpoint(cfg, &c.endpoint, &c.emulator_host)?;
        if c.value_fields.as_ref().is_some_and(|v| v.is_empty()) {
            return Err(cfg.error("value_fields", "must name at least one field"));
        }
        if c.ordering_key_field.as_ref().is_some_and(|f| f.is_empty()) {
            return Err(cfg.error("ordering_key_field", "must not be empty"));
        }
        for (name, field) in &c.attributes {
            if name.is_empty() || name.starts_with("goog") {
                return Err(cfg.error(
                &format!("attributes.{name}"),
                "attribute names must not be empty nor start with \"goog\" (reserved by Pub/Sub)",
            ));
            }
            if field.is_empty() {
                return Err(cfg.error(&format!("attributes.{name}"), "names no field"));
            }
        }
        let b = &c.batching;
        if !(1..=1000).contains(&b.max_messages) {
            return Err(cfg.error(
                "batching.max_messages",
                "must be between 1 and 1000 (Pub/Sub's limit per request)",
            ));
        }
        if b.max_bytes.0 == 0 || b.max_bytes.0 > 10_000_000 {
            return Err(cfg.error(
                "batching.max_bytes",
                "must be more than 0 and at most 10MB (Pub/Sub's limit per request)",
            ));
        }
        if c.max_in_flight == 0 {
            return Err(cfg.error("max_in_flight", "must be at least 1"));
        }
        Ok(SinkSettings {
            config: c,
            topic,
            endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_source(cfg: &NodeConfig) -> Result<SourceSettings> {
        cfg.resolve::<PubsubSourceConfig>()
    }

    fn resolve_sink(cfg: &NodeConfig) -> Result<SinkSettings> {
        cfg.resolve::<PubsubSinkConfig>()
    }
    use crate::event_time::TimeFormat;
    use weir_crds::{CheckpointSpec, NodeSpec};

    fn node(kind: &str, yaml: &str) -> NodeConfig {
        let spec: NodeSpec =
            serde_norway::from_str(&format!("name: p\ntype: pubsub\n{yaml}")).unwrap();
        NodeConfig {
            path: format!("{kind}[0]"),
            spec,
            parallelism: 1,
            checkpoint: CheckpointSpec::default(),
        }
    }

    fn source_err(yaml: &str) -> String {
        resolve_source(&node("sources", yaml))
            .unwrap_err()
            .to_string()
    }

    fn sink_err(yaml: &str) -> String {
        resolve_sink(&node("sinks", yaml)).unwrap_err().to_string()
    }

    #[test]
    fn names_are_completed_from_the_project_or_taken_whole() {
        let s = resolve_source(&node("sources", "project: p1\nsubscription: orders")).unwrap();
        assert_eq!(s.subscription, "projects/p1/subscriptions/orders");
        assert_eq!(s.endpoint, Endpoint::Google { endpoint: None });
        assert_eq!(s.config.ack_deadline, Duration::from_secs(60));
        let s = resolve_source(&node(
            "sources",
            "subscription: projects/p2/subscriptions/orders\nemulator_host: 127.0.0.1:8085",
        ))
        .unwrap();
        assert_eq!(s.subscription, "projects/p2/subscriptions/orders");
        assert_eq!(s.endpoint, Endpoint::Emulator("127.0.0.1:8085".into()));
        let t = resolve_sink(&node("sinks", "project: p\ntopic: out")).unwrap();
        assert_eq!(t.topic, "projects/p/topics/out");
        assert_eq!(t.config.batching, Batching::default());
    }

    #[test]
    fn bad_names_say_which_field_and_why() {
        assert!(source_err("subscription: orders").starts_with("sources[0].project: is required"));
        assert!(source_err("project: p\nsubscription: 'a b'")
            .starts_with("sources[0].subscription: \"a b\" is not a Pub/Sub id"));
        assert!(source_err("subscription: projects/p/topics/t").starts_with(
            "sources[0].subscription: expected a name or projects/PROJECT/subscriptions/NAME"
        ));
        assert!(
            source_err("project: q\nsubscription: projects/p/subscriptions/sub")
                .starts_with("sources[0].project:")
        );
        assert!(sink_err("project: p\ntopic: 9lives").starts_with("sinks[0].topic:"));
        assert!(
            source_err("project: p\nsubscription: sub\nemulator_host: nowhere")
                .starts_with("sources[0].emulator_host: expected host:port")
        );
        assert!(source_err(
            "project: p\nsubscription: sub\nemulator_host: h:1\nendpoint: https://x"
        )
        .contains("not both"));
        assert!(
            source_err("project: p\nsubscription: sub\nendpoint: pubsub.example")
                .starts_with("sources[0].endpoint: expected a URL")
        );
    }

    #[test]
    fn flow_control_lease_and_window_rules() {
        let base = "project: p\nsubscription: sub\n";
        assert!(source_err(&format!("{base}ack_deadline: 5s"))
            .starts_with("sources[0].ack_deadline: must be between 10s and 600s"));
        assert!(source_err(&format!("{base}ack_deadline: 11m")).contains("600s"));
        let w = source_err(&format!("{base}ack_deadline: 60s\ndedup_window: 30s"));
        assert!(w.starts_with("sources[0].dedup_window:"), "{w}");
        resolve_source(&node("sources", &format!("{base}dedup_window: 0s"))).unwrap();
        assert!(source_err(&format!("{base}max_outstanding_messages: 0"))
            .starts_with("sources[0].max_outstanding_messages"));
        assert!(source_err(&format!("{base}max_outstanding_bytes: 10"))
            .starts_with("sources[0].max_outstanding_bytes"));
        assert!(source_err(&format!("{base}batch_size: 0")).starts_with("sources[0].batch_size"));
        assert!(source_err(&format!("{base}stop_after_idle: 0s"))
            .starts_with("sources[0].stop_after_idle"));
        assert!(source_err(&format!("{base}colour: red")).contains("colour: unknown field"));
    }

    #[test]
    fn event_time_forms() {
        let base = "project: p\nsubscription: sub\n";
        let et = |v: &str| {
            resolve_source(&node("sources", &format!("{base}event_time: {v}")))
                .map(|s| s.config.event_time.unwrap())
        };
        assert_eq!(et("publish_time").unwrap(), EventTime::System);
        assert_eq!(
            et("{attribute: ts}").unwrap(),
            EventTime::Attribute {
                name: "ts".into(),
                format: TimeFormat::Auto
            }
        );
        assert_eq!(
            et("{field: ts, format: seconds}").unwrap(),
            EventTime::Field {
                name: "ts".into(),
                format: TimeFormat::Seconds
            }
        );
        assert!(et("now")
            .unwrap_err()
            .to_string()
            .starts_with("sources[0].event_time:"));
        assert!(et("{field: a, attribute: b}").is_err());
        assert!(
            source_err(&format!("{base}watermark: {{max_out_of_orderness: 1s}}"))
                .starts_with("sources[0].watermark: needs `event_time`")
        );
        assert!(source_err(&format!(
            "{base}metadata: {{message_id: m, ordering_key: m}}"
        ))
        .starts_with("sources[0].metadata.ordering_key: field \"m\" is used twice"));
        assert_eq!(
            EventTime::parse_attribute("1500", TimeFormat::Auto),
            Ok(1500)
        );
        assert_eq!(
            EventTime::parse_attribute("1.5", TimeFormat::Seconds),
            Ok(1500)
        );
        assert_eq!(
            EventTime::parse_attribute("1970-01-01T00:00:02Z", TimeFormat::Auto),
            Ok(2000)
        );
        assert!(EventTime::parse_attribute("soon", TimeFormat::Auto).is_err());
    }

    #[test]
    fn sink_rules() {
        let base = "project: p\ntopic: out\n";
        assert!(sink_err(&format!("{base}batching: {{max_messages: 2000}}"))
            .starts_with("sinks[0].batching.max_messages"));
        assert!(sink_err(&format!("{base}batching: {{max_bytes: 20MB}}"))
            .starts_with("sinks[0].batching.max_bytes"));
        assert!(sink_err(&format!("{base}attributes: {{googx: f}}"))
            .starts_with("sinks[0].attributes.googx"));
        assert!(sink_err(&format!("{base}value_fields: []")).starts_with("sinks[0].value_fields"));
        assert!(
            sink_err(&format!("{base}retry: {{multiplier: 0.5}}")).starts_with("sinks[0].retry")
        );
        assert!(sink_err(&format!("{base}max_in_flight: 0")).starts_with("sinks[0].max_in_flight"));
        let s = resolve_sink(&node(
            "sinks",
            &format!("{base}ordering_key_field: k\nattributes: {{origin: src}}"),
        ))
        .unwrap();
        assert_eq!(s.config.ordering_key_field.as_deref(), Some("k"));
        assert_eq!(s.config.retry.max_attempts, None);
    }
}
