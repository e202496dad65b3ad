//! The operator's settings as written in the spec, and their resolution into [`Settings`]:
//! templates parsed and checked against the key, nothing opened (the factory also runs for
//! `weir validate`).

use serde::{Deserialize, Deserializer};
use weir_crds::Duration;

use super::mapping::{FieldMapping, ResponsePath};
use super::template::Template;
use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;
use crate::ordered::OrderedMap;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncLookupConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Record fields whose values form the request key (and the cache key).
    pub key: OneOrMany,
    pub client: ClientConfig,
    /// Output field ← where its value sits in the response (`.`, `a.b`, `/a/b`).
    pub fields: OrderedMap<String>,
    /// Per attempt.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Records in the operator at once (in flight, or finished and waiting to be emitted in order).
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// How a lookup that timed out or failed transiently (connection errors, HTTP 5xx/429) is
    /// tried again: weir's one retry policy. Default: no retry (`max_attempts: 1`); with
    /// retries, 100ms doubling up to 5s, jitter 0.5.
    #[serde(default = "default_retry")]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub on_timeout: Policy,
    #[serde(default)]
    pub on_error: Policy,
    pub cache: Option<CacheConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_capacity() -> usize {
    100
}

/// `key: user_id` or `key: [tenant, user_id]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Records leave in the order they arrived.
    #[default]
    Ordered,
    /// Records leave as their lookups finish, but never across a watermark.
    Unordered,
}

/// What to do with a record whose lookup timed out or failed after every retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Emit the record with every output field null, and count it.
    Null,
    /// Drop the record, count it and log it.
    Drop,
    /// Fail the job with an error naming the node, the record and the reason.
    #[default]
    Fail,
}

impl<'de> Deserialize<'de> for Policy {
    /// YAML's `null` is a value, not the string "null", so both spellings mean [`Policy::Null`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("null") => Ok(Policy::Null),
            Some("drop") => Ok(Policy::Drop),
            Some("fail") => Ok(Policy::Fail),
            Some(other) => Err(serde::de::Error::custom(format!(
                "unknown policy {other:?}, expected null, drop or fail"
            ))),
        }
    }
}

fn default_retry() -> RetryPolicy {
    RetryPolicy {
        backoff: std::time::Duration::from_millis(100),
        max_backoff: std::time::Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.5,
        max_attempts: Some(1),
        max_elapsed: None,
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientConfig {
    Http {
        /// `http://users/{user_id}`: placeholders are key fields, URL-encoded.
        url: String,
        #[serde(default)]
        method: HttpMethod,
        #[serde(default)]
        headers: OrderedMap<String>,
    },
    Postgres {
        url: Option<String>,
        /// Name of an environment variable holding the URL (e.g. `DATABASE_URL`), to keep
        /// credentials out of the spec.
        url_env: Option<String>,
        /// `SELECT name, tier FROM users WHERE id = $1`: `$1…$n` are the key's values in order.
        query: String,
        #[serde(default = "default_pool")]
        pool_size: u32,
    },
    Redis {
        url: Option<String>,
        url_env: Option<String>,
        #[serde(default)]
        command: RedisCommand,
        /// The Redis key, e.g. `user:{user_id}`.
        redis_key: String,
        /// How a GET value is read: `json` (mapped by path) or `string` (path `.`).
        #[serde(default)]
        format: RedisValueFormat,
    },
}

fn default_pool() -> u32 {
    8
}

/// A server address given inline or by environment variable.
#[derive(Debug, Clone)]
pub struct Connection {
    pub url: Option<String>,
    pub url_env: Option<String>,
}

impl Connection {
    /// `field`: where the two settings sit (`client`, `table`).
    pub fn checked(
        cfg: &NodeConfig,
        field: &str,
        url: Option<String>,
        url_env: Option<String>,
    ) -> Result<Self> {
        match (&url, &url_env) {
            (Some(_), None) | (None, Some(_)) => Ok(Connection { url, url_env }),
            _ => Err(cfg.error(field, "give exactly one of `url` and `url_env`")),
        }
    }

    /// The URL; read at open so that `weir validate` needs no credentials.
    pub fn resolve(&self) -> std::result::Result<String, String> {
        match (&self.url, &self.url_env) {
            (Some(u), _) => Ok(u.clone()),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} (client.url_env) is not set")),
            (None, None) => Err("no client url".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HttpMethod {
    /// The key goes in the URL template.
    #[default]
    Get,
    /// The key fields are sent as a JSON object body.
    Post,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RedisCommand {
    #[default]
    Get,
    /// The hash's fields become a JSON object of strings.
    Hgetall,
}

/// How a Redis `GET` value is read: a JSON document, or text kept as a string.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RedisValueFormat {
    #[default]
    Json,
    String,
}

/// A client's settings with templates parsed.
#[derive(Debug, Clone)]
pub enum ClientSettings {
    Http {
        url: Template,
        method: HttpMethod,
        headers: Vec<(String, String)>,
    },
    // Read only by the client, compiled with its feature; a build without it rejects the
    // client in `resolve`, so these are built only in a build that reads them.
    #[cfg_attr(not(feature = "jdbc"), allow(dead_code))]
    Postgres {
        connection: Connection,
        query: String,
        pool_size: u32,
    },
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Redis {
        connection: Connection,
        command: RedisCommand,
        key: Template,
        format: RedisValueFormat,
    },
}

/// Everything the operator needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub key: Vec<String>,
    pub client: ClientSettings,
    pub mapping: FieldMapping,
    pub timeout: std::time::Duration,
    pub capacity: usize,
    pub retry: RetryPolicy,
    pub on_timeout: Policy,
    pub on_error: Policy,
    pub cache: Option<CacheConfig>,
}

/// A lookup's `key:` and `fields:` (`async_lookup`, `preloaded_lookup`), checked: the key's
/// record fields, and each output field with where its value sits in the answer.
pub fn key_and_mapping(
    cfg: &NodeConfig,
    key: &OneOrMany,
    fields: &OrderedMap<String>,
) -> Result<(Vec<String>, FieldMapping)> {
    let key = key.to_vec();
    if key.is_empty() {
        return Err(cfg.error("key", "name at least one field"));
    }
    if fields.0.is_empty() {
        return Err(cfg.error("fields", "map at least one output field"));
    }
    let mapping = fields
        .0
        .iter()
        .map(|(name, path)| (name.clone(), ResponsePath::parse(path)))
        .collect();
    Ok((key, FieldMapping(mapping)))
}

impl ConnectorConfig for AsyncLookupConfig {
    type Settings = Settings;

    /// Checks every setting and parses the templates; nothing is opened.
    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let c = self;
        let (key, mapping) = key_and_mapping(cfg, &c.key, &c.fields)?;
        if c.capacity == 0 {
            return Err(cfg.error("capacity", "must be at least 1"));
        }
        if c.timeout.as_std().is_zero() {
            return Err(cfg.error("timeout", "must be more than 0"));
        }
        if let Some(cache) = &c.cache {
            if cache.max_entries == 0 {
                return Err(cfg.error("cache.max_entries", "must be at least 1"));
            }
        }
        let client = match c.client {
            ClientConfig::Http {
                url,
                method,
                headers,
            } => {
                let t = Template::parse(&url, &key).map_err(|e| cfg.error("client.url", e))?;
                let probe = t.render(&vec![serde_json::Value::from("x"); key.len()], |s| {
                    s.to_string()
                });
                url::Url::parse(&probe)
                    .map_err(|e| cfg.error("client.url", format!("not a URL ({e}): {url:?}")))?;
                ClientSettings::Http {
                    url: t,
                    method,
                    headers: headers.0,
                }
            }
            ClientConfig::Postgres {
                url,
                url_env,
                query,
                pool_size,
            } => {
                let connection = Connection::checked(cfg, "client", url, url_env)?;
                if !cfg!(feature = "jdbc") {
                    return Err(cfg.error(
                        "client.type",
                        "postgres lookups need weir built with the `jdbc` feature",
                    ));
                }
                let max = max_param(&query);
                if max > key.len() {
                    return Err(cfg.error(
                        "client.query",
                        format!(
                            "uses ${max} but the key has {} field(s) ({key:?})",
                            key.len()
                        ),
                    ));
                }
                ClientSettings::Postgres {
                    connection,
                    query,
                    pool_size: pool_size.max(1),
                }
            }
            ClientConfig::Redis {
                url,
                url_env,
                command,
                redis_key,
                format,
            } => {
                let connection = Connection::checked(cfg, "client", url, url_env)?;
                if !cfg!(feature = "redis") {
                    return Err(cfg.error(
                        "client.type",
                        "redis lookups need weir built with the `redis` feature",
                    ));
                }
                let t = Template::parse(&redis_key, &key)
                    .map_err(|e| cfg.error("client.redis_key", e))?;
                ClientSettings::Redis {
                    connection,
                    command,
                    key: t,
                    format,
                }
            }
        };
        Ok(Settings {
            mode: c.mode,
            key,
            client,
            mapping,
            timeout: c.timeout.as_std(),
            capacity: c.capacity,
            retry: c.retry,
            on_timeout: c.on_timeout,
            on_error: c.on_error,
            cache: c.cache,
        })
    }
}

/// The highest `$n` placeholder in a query (0 when none).
pub fn max_param(query: &str) -> usize {
    let b = query.as_bytes();
    let mut max = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > start {
                max = max.max(query[start..j].parse().unwrap_or(0));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(config: serde_json::Value) -> NodeConfig {
        NodeConfig::for_test("transforms[0]", "async_lookup", config)
    }

    fn http(url: &str) -> serde_json::Value {
        json!({
            "key": "user",
            "client": {"type": "http", "url": url},
            "fields": {"name": "name"},
            "on_timeout": null,
            "on_error": "drop",
        })
    }

    #[test]
    fn policies_accept_yaml_null() {
        let s = node(http("http://h/u/{user}"))
            .resolve::<AsyncLookupConfig>()
            .unwrap();
        assert_eq!(s.on_timeout, Policy::Null);
        assert_eq!(s.on_error, Policy::Drop);
        assert_eq!(s.mode, Mode::Ordered);
        assert_eq!(s.key, vec!["user".to_string()]);
    }

    #[test]
    fn a_url_placeholder_outside_the_key_names_the_field() {
        let e = node(http("http://h/u/{usr}"))
            .resolve::<AsyncLookupConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("transforms[0].client.url"), "{e}");
        assert!(e.contains("\"usr\""), "{e}");
    }

    #[test]
    fn a_query_parameter_beyond_the_key_is_rejected() {
        let mut c = json!({
            "key": ["user"],
            "client": {"type": "postgres", "url_env": "DATABASE_URL",
                       "query": "SELECT a FROM t WHERE x = $1 AND y = $2"},
            "fields": {"a": "a"},
        });
        let e = node(c.clone())
            .resolve::<AsyncLookupConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("client.query") && e.contains("$2"), "{e}");
        c["client"]["url"] = json!("postgres://x");
        let e = node(c)
            .resolve::<AsyncLookupConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one of `url` and `url_env`"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = http("http://h/{user}");
        c["capacity"] = json!(0);
        let e = node(c)
            .resolve::<AsyncLookupConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("transforms[0].capacity"), "{e}");
        let mut c = http("http://h/{user}");
        c["on_error"] = json!("skip");
        let e = node(c)
            .resolve::<AsyncLookupConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("on_error") && e.contains("\"skip\""), "{e}");
    }

    #[test]
    fn finds_the_highest_query_parameter() {
        assert_eq!(max_param("SELECT 1"), 0);
        assert_eq!(max_param("WHERE a = $1 AND b = $12 OR c = $3"), 12);
        assert_eq!(max_param("SELECT '$' || $2"), 2);
    }
}
