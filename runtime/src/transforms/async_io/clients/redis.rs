//! Redis lookups: GET (a JSON or string value) or HGETALL (the hash as a JSON object).

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use serde_json::{Map, Value};

use super::{LookupClient, LookupError};
use crate::transforms::async_io::config::{RedisCommand, RedisValueFormat};
use crate::transforms::async_io::template::Template;

pub struct RedisLookup {
    conn: ConnectionManager,
    command: RedisCommand,
    key: Template,
    format: RedisValueFormat,
}

impl RedisLookup {
    pub async fn connect(
        url: &str,
        command: RedisCommand,
        key: Template,
        format: RedisValueFormat,
    ) -> Result<Self, String> {
        // The URL may hold a password: never put it in a message.
        let client = redis::Client::open(url).map_err(|e| format!("Redis client: {e}"))?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(|e| format!("connecting to Redis: {e}"))?;
        Ok(RedisLookup {
            conn,
            command,
            key,
            format,
        })
    }
}

fn error(key: &str, e: redis::RedisError) -> LookupError {
    let message = format!("redis key {key:?}: {e}");
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        LookupError::retryable(message)
    } else {
        LookupError::permanent(message)
    }
}

/// A GET value as JSON.
pub fn read_value(key: &str, s: String, format: RedisValueFormat) -> Result<Value, LookupError> {
    match format {
        RedisValueFormat::String => Ok(Value::String(s)),
        RedisValueFormat::Json => serde_json::from_str(&s).map_err(|e| {
            LookupError::permanent(format!("redis key {key:?}: the value is not JSON: {e}"))
        }),
    }
}

#[async_trait::async_trait]
impl LookupClient for RedisLookup {
    async fn lookup(&self, key: &[Value]) -> Result<Option<Value>, LookupError> {
        let k = self.key.render(key, str::to_string);
        let mut conn = self.conn.clone();
        match self.command {
            RedisCommand::Get => {
                let v: Option<String> = redis::cmd("GET")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| error(&k, e))?;
                v.map(|s| read_value(&k, s, self.format)).transpose()
            }
            RedisCommand::Hgetall => {
                let h: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| error(&k, e))?;
                if h.is_empty() {
                    return Ok(None);
                }
                let m: Map<String, Value> =
                    h.into_iter().map(|(f, v)| (f, Value::from(v))).collect();
                Ok(Some(Value::Object(m)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_values_read_as_json_or_text() {
        assert_eq!(
            read_value("k", r#"{"a":1}"#.into(), RedisValueFormat::Json).unwrap()["a"],
            1
        );
        assert_eq!(
            read_value("k", "plain".into(), RedisValueFormat::String).unwrap(),
            "plain"
        );
        let e = read_value("k", "plain".into(), RedisValueFormat::Json).unwrap_err();
        assert!(!e.retryable && e.message.contains("not JSON"), "{e:?}");
    }
}
