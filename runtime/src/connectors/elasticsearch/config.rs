//! Settings of the `elasticsearch` sink as written in the spec, and the pure rules that check
//! them (the factory also runs for `weir validate`, so nothing here connects or reads files).

use std::path::PathBuf;

use serde::Deserialize;
use weir_crds::{ByteSize, Duration};

use super::index::{invalid_index_name, IndexTemplate};
use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

/// The bulk action each record becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create or replace the document (with `id_field`, a replay overwrites: idempotent).
    Index,
    /// Create only; a document that already exists (a replay) counts as written.
    Create,
    /// Partial update of the document with the record's fields, creating it when missing
    /// (`doc_as_upsert`). Needs `id_field`.
    Update,
    /// Delete the document with the record's id; a missing one counts as deleted. Needs `id_field`.
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Index => "index",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// How `version_field` is compared with the stored document's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionType {
    /// Written only when greater than the stored version.
    External,
    /// Written when greater than or equal to the stored version (a replay of the same version
    /// rewrites it; an older one never overwrites a newer one).
    ExternalGte,
}

impl VersionType {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionType::External => "external",
            VersionType::ExternalGte => "external_gte",
        }
    }
}

/// `id_field: id` or `id_field: [tenant, id]` (joined with `id_delimiter`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdFields {
    One(String),
    Many(Vec<String>),
}

/// Basic, API-key or bearer authentication (give one). Values are usually `${env:NAME}`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub basic: Option<BasicAuth>,
    /// An API key as Elasticsearch returns it encoded (base64 of `id:key`): sent as
    /// `Authorization: ApiKey <api_key>`.
    pub api_key: Option<String>,
    /// A bearer token (OpenSearch JWT, Elasticsearch service token): `Authorization: Bearer …`.
    pub bearer: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// TLS for `https://` URLs; without it the system's CAs are trusted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The same as text (e.g. `${env:ES_CA}` filled from a Secret).
    pub ca_pem: Option<String>,
    /// Accept any certificate (tests only: it gives up server authentication).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `data_stream`: the index is a data stream; documents are appended with `create` and each
/// needs an `@timestamp` (give where it comes from).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataStreamConfig {
    /// The field holding each document's timestamp (epoch ms or RFC 3339), copied into
    /// `@timestamp`; `"@timestamp"` when the records already carry it.
    pub timestamp_field: Option<String>,
    /// Use the record's event time (from the source or a watermark transform) as `@timestamp`.
    #[serde(default)]
    pub event_time: bool,
}

/// Where a rejected document goes with `on_error: {dead_letter: …}` (give one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// An index of the same cluster; each entry holds the document as text and the reason.
    pub index: Option<String>,
    /// A local directory; entries are appended as JSON lines to `<job>-<node>-<worker>.jsonl`
    /// and synced at every checkpoint.
    pub path: Option<PathBuf>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    /// Node URL, `http://es:9200` or `https://…` (a path prefix is kept); several may be given
    /// separated by commas.
    pub url: Option<String>,
    /// More node URLs. Requests go round-robin over all of them; an unreachable node is left
    /// out for a few seconds (failover).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Target index, or a template: `{field}`, `{field|yyyy.MM.dd}` (a timestamp field) and
    /// `{yyyy.MM.dd}` (the record's event time, UTC). With `data_stream`, the data stream.
    pub index: String,
    /// The field(s) whose value is the document `_id`. Without it the server picks ids, and a
    /// replay after a crash indexes the documents again (at-least-once).
    pub id_field: Option<IdFields>,
    /// Joins the values of several `id_field`s.
    #[serde(default = "default_id_delimiter")]
    pub id_delimiter: String,
    /// `index` (default), `create`, `update` (partial document, `doc_as_upsert`) or `delete`.
    pub action: Option<Action>,
    /// The field whose value is the shard routing key.
    pub routing_field: Option<String>,
    /// The field holding the document's version (a non-negative integer), compared by
    /// `version_type`: replays and late duplicates never overwrite a newer document.
    pub version_field: Option<String>,
    /// `external` or `external_gte` (default, with `version_field`).
    pub version_type: Option<VersionType>,
    /// The index is a data stream.
    pub data_stream: Option<DataStreamConfig>,
    /// An ingest pipeline every document goes through.
    pub pipeline: Option<String>,
    /// Actions per `_bulk` request (Flink's `bulk.flush.max.actions`).
    #[serde(default = "default_max_actions")]
    pub max_actions: usize,
    /// Body size that sends a `_bulk` request (Flink's `bulk.flush.max.size`).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Longest time an action waits before its request is sent.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Most `_bulk` requests in flight. The sink lowers its own limit when the server answers
    /// 429 and raises it back while requests succeed (AIMD).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Retries of a whole request (connection error, 429, 5xx) and of the items a response
    /// marked retryable. When they are spent the job fails and restarts from its checkpoint.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Longest time one `_bulk` request may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    pub auth: Option<AuthConfig>,
    pub tls: Option<TlsConfig>,
    /// A document the server rejects (mapping or parsing error, missing index) or that cannot
    /// be built (missing id field): `fail` (default), `skip` (counted), or `dead_letter`.
    #[serde(default)]
    pub on_error: OnError<DeadLetterConfig>,
}

fn default_id_delimiter() -> String {
    "_".into()
}
fn default_max_actions() -> usize {
    1000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(5 * 1024 * 1024)
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_in_flight() -> usize {
    4
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Credentials, never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic { username: String, password: String },
    ApiKey(String),
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::Basic { .. } => "Basic(***)",
            Auth::ApiKey(_) => "ApiKey(***)",
            Auth::Bearer(_) => "Bearer(***)",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampSource {
    Field(String),
    EventTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    Index(String),
    Path(PathBuf),
}

/// The sink's settings, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hosts: Vec<url::Url>,
    pub index: IndexTemplate,
    pub id_fields: Vec<String>,
    pub id_delimiter: String,
    pub action: Action,
    pub routing_field: Option<String>,
    pub version: Option<(String, VersionType)>,
    pub data_stream: Option<TimestampSource>,
    pub pipeline: Option<String>,
    pub max_actions: usize,
    pub max_bytes: usize,
    pub interval: std::time::Duration,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub request_timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    pub auth: Auth,
    pub tls: TlsConfig,
    pub on_error: OnError<DeadLetter>,
}

impl Settings {
    /// Whether a replay rewrites the same documents (ids), rather than adding new ones.
    pub fn idempotent(&self) -> bool {
        !self.id_fields.is_empty()
    }

    /// Whether a 409 means "a newer or the same version is already there".
    pub fn versioned(&self) -> bool {
        self.version.is_some()
    }
}

/// A node URL: http(s), no credentials (they go in `auth`), no query.
fn parse_host(s: &str) -> std::result::Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{s:?}: use http:// or https://"));
    }
    if u.host_str().is_none() {
        return Err(format!("{s:?} names no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "{}: put credentials in auth.basic, not in the URL",
            redact(&u)
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{s:?}: a node URL takes no query or fragment"));
    }
    Ok(u)
}

fn redact(u: &url::Url) -> String {
    let mut u = u.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// A value that is an unexpanded `${env:…}` reference cannot be checked before `weir run`.
fn is_reference(s: &str) -> bool {
    s.contains("${env:")
}

impl ConnectorConfig for ElasticsearchSinkConfig {
    type Settings = Settings;

    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let mut hosts = Vec::new();
        let listed = self
            .url
            .iter()
            .flat_map(|u| u.split(','))
            .map(|s| ("url", s.trim()))
            .chain(self.hosts.iter().map(|s| ("hosts", s.trim())));
        for (field, h) in listed {
            if h.is_empty() {
                continue;
            }
            // `weir run` replaces `${env:…}` before building the sink; `weir validate` sees the
            // reference, which can only be checked once it is filled in.
            let host = if is_reference(h) {
                url::Url::parse("http://unresolved.invalid/").expect("a valid URL")
            } else {
                parse_host(h).map_err(|e| cfg.error(field, e))?
            };
            hosts.push(host);
        }
        if hosts.is_empty() {
            return Err(cfg.error(
                "url",
                "required: the URL of a node, e.g. http://localhost:9200 (or list them in hosts)",
            ));
        }
        let index = IndexTemplate::parse(&self.index).map_err(|e| cfg.error("index", e))?;

        let id_given = self.id_field.is_some();
        let id_fields = match self.id_field {
            None => Vec::new(),
            Some(IdFields::One(f)) => vec![f],
            Some(IdFields::Many(fs)) => fs,
        };
        if id_given && id_fields.is_empty() {
            return Err(cfg.error("id_field", "must name at least one field"));
        }
        if id_fields.iter().any(|f| f.trim().is_empty()) {
            return Err(cfg.error("id_field", "field names must not be empty"));
        }

        let data_stream = match &self.data_stream {
            None => None,
            Some(ds) => Some(match (&ds.timestamp_field, ds.event_time) {
                (Some(_), true) => {
                    return Err(cfg.error(
                        "data_stream",
                        "give either timestamp_field or event_time: true",
                    ))
                }
                (Some(f), false) if f.trim().is_empty() => {
                    return Err(cfg.error("data_stream.timestamp_field", "must not be empty"))
                }
                (Some(f), false) => TimestampSource::Field(f.clone()),
                (None, true) => TimestampSource::EventTime,
                (None, false) => {
                    return Err(cfg.error(
                        "data_stream.timestamp_field",
                        "required: every data stream document needs an @timestamp; name the field that holds it (\"@timestamp\" when the records carry it) or set event_time: true",
                    ))
                }
            }),
        };

        let action = match (self.action, &data_stream) {
            (None, Some(_)) => Action::Create,
            (None, None) => Action::Index,
            (Some(Action::Create), Some(_)) => Action::Create,
            (Some(a), Some(_)) => {
                return Err(cfg.error(
                    "action",
                    format!(
                        "data streams only accept create (append-only), not {}",
                        a.as_str()
                    ),
                ))
            }
            (Some(a), None) => a,
        };
        if matches!(action, Action::Update | Action::Delete) && id_fields.is_empty() {
            return Err(cfg.error(
                "id_field",
                format!(
                    "required with action: {} (it names the document to {})",
                    action.as_str(),
                    action.as_str()
                ),
            ));
        }

        let version = match (&self.version_field, self.version_type) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(cfg.error(
                    "version_type",
                    "needs version_field (the field holding each document's version)",
                ))
            }
            (Some(f), t) => {
                if f.trim().is_empty() {
                    return Err(cfg.error("version_field", "must not be empty"));
                }
                if !matches!(action, Action::Index | Action::Delete) {
                    return Err(cfg.error(
                        "version_field",
                        format!(
                            "external versions work with action index or delete, not {}",
                            action.as_str()
                        ),
                    ));
                }
                if id_fields.is_empty() {
                    return Err(cfg.error(
                        "version_field",
                        "needs id_field: a version is compared with the stored document of the same id",
                    ));
                }
                Some((f.clone(), t.unwrap_or(VersionType::ExternalGte)))
            }
        };
        if let Some(r) = &self.routing_field {
            if r.trim().is_empty() {
                return Err(cfg.error("routing_field", "must not be empty"));
            }
        }
        if let Some(p) = &self.pipeline {
            if p.trim().is_empty() {
                return Err(cfg.error("pipeline", "must not be empty"));
            }
        }
        if self.id_delimiter.is_empty() && id_fields.len() > 1 {
            return Err(cfg.error(
                "id_delimiter",
                "must not be empty when id_field lists several fields",
            ));
        }
        if self.max_actions == 0 {
            return Err(cfg.error("max_actions", "must be at least 1"));
        }
        if self.max_bytes.0 < 1024 {
            return Err(cfg.error("max_bytes", "must be at least 1KiB"));
        }
        if self.interval.as_millis() == 0 {
            return Err(cfg.error("interval", "must be positive"));
        }
        if !(1..=64).contains(&self.max_in_flight) {
            return Err(cfg.error("max_in_flight", "must be between 1 and 64"));
        }
        if self.request_timeout.as_millis() == 0 {
            return Err(cfg.error("request_timeout", "must be positive"));
        }

        let auth = match self.auth {
            None => Auth::None,
            Some(a) => match (a.basic, a.api_key, a.bearer) {
                (Some(b), None, None) => {
                    if b.username.is_empty() {
                        return Err(cfg.error("auth.basic.username", "must not be empty"));
                    }
                    Auth::Basic {
                        username: b.username,
                        password: b.password,
                    }
                }
                (None, Some(k), None) if k.trim().is_empty() => {
                    return Err(cfg.error("auth.api_key", "must not be empty"))
                }
                (None, Some(k), None) => Auth::ApiKey(k),
                (None, None, Some(t)) if t.trim().is_empty() => {
                    return Err(cfg.error("auth.bearer", "must not be empty"))
                }
                (None, None, Some(t)) => Auth::Bearer(t),
                _ => return Err(cfg.error("auth", "give exactly one of basic, api_key, bearer")),
            },
        };

        let tls = self.tls.unwrap_or_default();
        if tls.ca_file.is_some() && tls.ca_pem.is_some() {
            return Err(cfg.error("tls", "give either ca_file or ca_pem"));
        }
        if let Some(pem) = &tls.ca_pem {
            if !is_reference(pem) && !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(cfg.error(
                    "tls.ca_pem",
                    "expected PEM text (-----BEGIN CERTIFICATE----- …)",
                ));
            }
        }
        let any_tls = tls.ca_file.is_some() || tls.ca_pem.is_some() || tls.insecure_skip_verify;
        if any_tls && hosts.iter().all(|h| h.scheme() == "http") {
            return Err(cfg.error(
                "tls",
                "the node URLs are http://; TLS settings need https:// URLs",
            ));
        }

        let on_error = match self.on_error {
            OnError::Fail => OnError::Fail,
            OnError::Skip => OnError::Skip,
            OnError::DeadLetter(d) => OnError::DeadLetter(match (d.index, d.path) {
                (Some(i), None) => {
                    if let Some(why) = invalid_index_name(&i) {
                        return Err(cfg.error("on_error.dead_letter.index", why));
                    }
                    if index.literal() == Some(i.as_str()) {
                        return Err(cfg.error(
                            "on_error.dead_letter.index",
                            "must differ from the sink's own index",
                        ));
                    }
                    DeadLetter::Index(i)
                }
                (None, Some(p)) if p.as_os_str().is_empty() => {
                    return Err(cfg.error("on_error.dead_letter.path", "must not be empty"))
                }
                (None, Some(p)) => DeadLetter::Path(p),
                _ => {
                    return Err(cfg.error(
                        "on_error.dead_letter",
                        "give exactly one of index (an index of the same cluster) or path (a local directory)",
                    ))
                }
            }),
        };

        Ok(Settings {
            hosts,
            index,
            id_fields,
            id_delimiter: self.id_delimiter,
            action,
            routing_field: self.routing_field,
            version,
            data_stream,
            pipeline: self.pipeline,
            max_actions: self.max_actions,
            max_bytes: self.max_bytes.0 as usize,
            interval: self.interval.as_std(),
            max_in_flight: self.max_in_flight,
            retry: self.retry,
            request_timeout: self.request_timeout.as_std(),
            connect_timeout: self.connect_timeout.as_std(),
            auth,
            tls,
            on_error,
        })
    }
}

/// The settings of a sink node written as YAML (path `sinks[0]`), for the tests of this folder.
#[cfg(test)]
pub(crate) fn parse_yaml(yaml: &str) -> Result<Settings> {
    let config: serde_json::Value = serde_norway::from_str(yaml).expect("test YAML");
    NodeConfig::for_test("sinks[0]", "elasticsearch", config).resolve::<ElasticsearchSinkConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> Result<Settings> {
        parse_yaml(yaml)
    }

    fn error(yaml: &str) -> String {
        settings(yaml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_flinks_bulk_processor() {
        let s = settings("url: http://es:9200\nindex: events\nid_field: id").unwrap();
        assert_eq!(s.action, Action::Index);
        assert_eq!(s.max_actions, 1000);
        assert_eq!(s.max_bytes, 5 * 1024 * 1024);
        assert_eq!(s.interval, std::time::Duration::from_secs(1));
        assert_eq!(s.max_in_flight, 4);
        assert_eq!(s.retry, RetryPolicy::default());
        assert!(s.idempotent());
        assert_eq!(s.on_error, OnError::Fail);
    }

    #[test]
    fn hosts_come_from_url_and_hosts() {
        let s = settings(
            "url: http://a:9200, http://b:9200/prefix\nhosts: [https://c]\nindex: e\ntls: {insecure_skip_verify: true}",
        )
        .unwrap();
        let names: Vec<String> = s.hosts.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            names,
            ["http://a:9200/", "http://b:9200/prefix", "https://c/"]
        );
        assert!(error("index: e").contains("sinks[0].url: required"));
        assert!(error("url: es:9200\nindex: e").contains("sinks[0].url"));
        let e = error("url: http://u:hunter2@es:9200\nindex: e");
        assert!(e.contains("auth.basic") && !e.contains("hunter2"), "{e}");
        assert!(error("url: http://es\nhosts: [ftp://x]\nindex: e").contains("sinks[0].hosts"));
        assert!(
            settings("url: \"${env:ES_URL}\"\nindex: e").is_ok(),
            "checked at run time"
        );
    }

    #[test]
    fn bad_settings_name_the_field() {
        for (yaml, needle) in [
            (
                "index: e\naction: upsert",
                "sinks[0].action: unknown variant `upsert`",
            ),
            (
                "index: e\naction: update",
                "sinks[0].id_field: required with action: update",
            ),
            (
                "index: e\naction: delete",
                "sinks[0].id_field: required with action: delete",
            ),
            (
                "index: e\ndata_stream: {}",
                "sinks[0].data_stream.timestamp_field: required",
            ),
            (
                "index: e\ndata_stream: {event_time: true}\naction: index",
                "sinks[0].action: data streams only accept create",
            ),
            (
                "index: E",
                "sinks[0].index: \"E\": index names must be lowercase",
            ),
            (
                "index: e\nversion_type: external",
                "sinks[0].version_type: needs version_field",
            ),
            (
                "index: e\nversion_field: v",
                "sinks[0].version_field: needs id_field",
            ),
            (
                "index: e\nid_field: id\nversion_field: v\naction: update",
                "sinks[0].version_field: external versions work with action index or delete",
            ),
            ("index: e\nmax_actions: 0", "sinks[0].max_actions"),
            ("index: e\nmax_in_flight: 0", "sinks[0].max_in_flight"),
            ("index: e\nmax_bytes: lots", "sinks[0].max_bytes"),
            (
                "index: e\nretry: {multiplier: 0.5}",
                "sinks[0].retry: multiplier",
            ),
            ("index: e\nauth: {}", "sinks[0].auth: give exactly one"),
            (
                "index: e\nauth: {basic: {username: u, password: p}, bearer: t}",
                "sinks[0].auth: give exactly one",
            ),
            ("index: e\ntls: {ca_pem: nonsense}", "sinks[0].tls"),
            (
                "index: e\ntls: {insecure_skip_verify: true}",
                "sinks[0].tls: the node URLs are http://",
            ),
            (
                "index: e\non_error: {dead_letter: {}}",
                "sinks[0].on_error.dead_letter: give exactly one",
            ),
            (
                "index: e\non_error: {dead_letter: {index: e}}",
                "sinks[0].on_error.dead_letter.index: must differ",
            ),
            (
                "index: e\nid_field: []",
                "sinks[0].id_field: must name at least one field",
            ),
            ("index: e\ncolour: red", "colour: unknown field"),
        ] {
            let e = error(&format!("url: http://es:9200\n{yaml}"));
            assert!(e.contains(needle), "{yaml}:\n{e}");
        }
    }

    #[test]
    fn data_streams_create_and_versions_default_to_external_gte() {
        let s = settings(
            "url: http://es\nindex: logs-app\ndata_stream: {timestamp_field: ts}\nid_field: [a, b]",
        )
        .unwrap();
        assert_eq!(s.action, Action::Create);
        assert_eq!(s.data_stream, Some(TimestampSource::Field("ts".into())));
        assert_eq!(s.id_fields, ["a", "b"]);
        let s = settings("url: http://es\nindex: e\nid_field: id\nversion_field: v").unwrap();
        assert_eq!(s.version, Some(("v".into(), VersionType::ExternalGte)));
        assert!(s.versioned());
    }

    #[test]
    fn credentials_and_references_are_accepted_and_never_printed() {
        let s = settings(
            "url: https://es\nindex: e\nauth: {basic: {username: elastic, password: \"${env:ES_PW}\"}}\ntls: {ca_pem: \"${env:ES_CA}\"}",
        )
        .unwrap();
        assert_eq!(format!("{:?}", s.auth), "Basic(***)");
        let s = settings("url: http://es\nindex: e\nauth: {api_key: abc}").unwrap();
        assert_eq!(s.auth, Auth::ApiKey("abc".into()));
        let s = settings("url: http://es\nindex: e\non_error: {dead_letter: {path: /tmp/dlq}}")
            .unwrap();
        assert_eq!(
            s.on_error,
            OnError::DeadLetter(DeadLetter::Path("/tmp/dlq".into()))
        );
    }
}
