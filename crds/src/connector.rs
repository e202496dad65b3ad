//! The `Connector` custom resource: an external system's endpoint, credentials (only as Secret
//! references) and default node properties, shared by the StreamJobs that name it with
//! `connectorRef`.

// Several `printcolumn(...)` attributes repeat keys such as `type_`; clippy reads them as
// duplicated attributes, but each is a separate column for the CustomResource derive.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::Condition;
use crate::units::Duration;

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Connector",
    namespaced,
    shortname = "wc",
    category = "weir",
    status = "ConnectorStatus",
    derive = "PartialEq",
    doc = "An external system a StreamJob's sources and sinks connect to.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(self.type == 'kafka') == has(self.kafka)",
        "message": "spec.kafka is required for type kafka and only allowed there"
    },
    {
        "rule": "!(self.type in ['postgres', 'jdbc', 'elasticsearch', 'redis', 'http']) || has(self.url)",
        "message": "spec.url is required for this connector type"
    },
    {
        "rule": "!(self.type in ['kinesis', 'firehose']) || has(self.region)",
        "message": "spec.region is required for types kinesis and firehose"
    },
    {
        "rule": "!has(self.elasticsearch) || self.type == 'elasticsearch'",
        "message": "spec.elasticsearch is only allowed for type elasticsearch"
    },
    {
        "rule": "self.type != 'pubsub' || has(self.project)",
        "message": "spec.project is required for type pubsub"
    },
    {
        "rule": "(self.type == 'eventhubs') == has(self.eventhubs)",
        "message": "spec.eventhubs is required for type eventhubs and only allowed there"
    }
]))]
pub struct ConnectorSpec {
    #[serde(rename = "type")]
    pub type_: ConnectorType,
    /// Kafka endpoint (also Redpanda, MSK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaEndpoint>,
    /// Elasticsearch / OpenSearch: more nodes, authentication and TLS (type elasticsearch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchEndpoint>,
    /// Azure Event Hubs (type eventhubs), used by `kafka` sources and sinks: the runtime's
    /// eventhubs profile sets the login and settings Event Hubs needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventhubs: Option<EventHubsEndpoint>,
    /// URL of the server: `postgres://host:5432/db`, `http://es:9200`, `redis://host:6379`, …
    /// Never put a password in it: use `credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Cloud region (kinesis, firehose, s3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override (s3, kinesis, firehose; e.g. MinIO or LocalStack). Kinesis and
    /// Firehose nodes receive it as `endpoint_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Google Cloud project (pubsub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Node settings filled from Secrets; the value reaches the worker as an environment
    /// variable and the pipeline refers to it as `${env:NAME}`, never by its value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// Default settings of every node that uses this Connector (the node's own settings win).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schemars(schema_with = "crate::schema::free_form_object")]
    pub properties: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub probe: ProbeSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConnectorType {
    Kafka,
    Postgres,
    Jdbc,
    Elasticsearch,
    Redis,
    S3,
    Kinesis,
    Firehose,
    Pubsub,
    Http,
    Eventhubs,
}

impl ConnectorType {
    /// The pipeline node types that can use a Connector of this type (`connectorRef`).
    pub fn node_types(self) -> &'static [&'static str] {
        match self {
            ConnectorType::Kafka => &["kafka"],
            ConnectorType::Postgres | ConnectorType::Jdbc => &["jdbc"],
            ConnectorType::Elasticsearch => &["elasticsearch"],
            ConnectorType::Redis => &["redis"],
            ConnectorType::S3 => &["filesystem"],
            ConnectorType::Kinesis => &["kinesis"],
            ConnectorType::Firehose => &["firehose"],
            ConnectorType::Pubsub => &["pubsub"],
            ConnectorType::Http => &["async_lookup"],
            ConnectorType::Eventhubs => &["kafka"],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorType::Kafka => "kafka",
            ConnectorType::Postgres => "postgres",
            ConnectorType::Jdbc => "jdbc",
            ConnectorType::Elasticsearch => "elasticsearch",
            ConnectorType::Redis => "redis",
            ConnectorType::S3 => "s3",
            ConnectorType::Kinesis => "kinesis",
            ConnectorType::Firehose => "firehose",
            ConnectorType::Pubsub => "pubsub",
            ConnectorType::Http => "http",
            ConnectorType::Eventhubs => "eventhubs",
        }
    }
}

/// An Event Hubs namespace, reached through its Kafka endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventHubsEndpoint {
    /// The namespace name (`mynamespace` → mynamespace.servicebus.windows.net:9093) or its
    /// host name.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// The event hub (a Kafka topic): the default `topics` of sources and `topic` of sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The namespace's or the hub's connection string.
    pub connection_string: SecretSource,
    /// Premium or Dedicated namespace with Kafka transactions: sinks may use exactly-once
    /// (transactions of at most 15 minutes).
    #[serde(default)]
    pub transactions: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.securityProtocol) || !self.securityProtocol.startsWith('SASL') || has(self.sasl)",
        "message": "a SASL security protocol needs kafka.sasl"
    }
]))]
pub struct KafkaEndpoint {
    /// `host:port[,host:port…]`
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<SecurityProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<Sasl>,
    /// The brokers' `transaction.max.timeout.ms`, when the probe cannot read it (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_max_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types)]
pub enum SecurityProtocol {
    PLAINTEXT,
    SSL,
    SASL_PLAINTEXT,
    SASL_SSL,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::PLAINTEXT => "PLAINTEXT",
            SecurityProtocol::SSL => "SSL",
            SecurityProtocol::SASL_PLAINTEXT => "SASL_PLAINTEXT",
            SecurityProtocol::SASL_SSL => "SASL_SSL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: ValueOrSecret,
    pub password: SecretSource,
}

/// An Elasticsearch or OpenSearch cluster besides `spec.url`: more nodes, credentials from
/// Secrets (basic, API key or bearer token) and the CA that signed its certificates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchEndpoint {
    /// More node URLs besides `spec.url`; requests go round-robin and fail over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ElasticsearchAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// One way to log in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.basic) ? 1 : 0) + (has(self.apiKey) ? 1 : 0) + (has(self.bearer) ? 1 : 0) == 1",
        "message": "give exactly one of basic, apiKey, bearer"
    }
]))]
pub struct ElasticsearchAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// An API key as Elasticsearch returns it encoded (base64 of `id:key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretSource>,
    /// A bearer token (Elasticsearch service token, OpenSearch JWT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<SecretSource>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    pub username: ValueOrSecret,
    pub password: SecretSource,
}

/// TLS of `https://` URLs; without it the system's CAs are trusted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// The CA certificate(s), PEM, e.g. the `ca.crt` of the cluster's HTTP certificate Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretSource>,
    /// Accept any certificate (tests only: gives up server authentication).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// A value that only comes from a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    pub secret_key_ref: SecretKeyRef,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A plain value (not secret, e.g. Event Hubs' literal user name `$ConnectionString`) or a
/// Secret reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "has(self.value) != has(self.secretKeyRef)", "message": "give exactly one of value and secretKeyRef" }
]))]
pub struct ValueOrSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct SecretKeyRef {
    /// Secret in the Connector's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// The node setting it fills, e.g. `password`; `map.key` fills the entry `key` of the map
    /// setting `map` (everything after the first dot is the key: `properties.sasl.password`).
    #[schemars(length(min = 1))]
    pub setting: String,
    pub secret_key_ref: SecretKeyRef,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_probe_interval")]
    pub interval: Duration,
    #[serde(default = "default_probe_timeout")]
    pub timeout: Duration,
}

fn yes() -> bool {
    true
}
fn default_probe_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            enabled: true,
            interval: default_probe_interval(),
            timeout: default_probe_timeout(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// RFC 3339 time of the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// The brokers' `transaction.max.timeout.ms` in milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_max_timeout_ms: Option<u64>,
}
