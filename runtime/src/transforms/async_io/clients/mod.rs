//! Lookup clients: one request per key, `Ok(None)` when the key is not found.

mod http;
#[cfg(feature = "jdbc")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::config::{ClientSettings, Settings};

/// Why a lookup failed, and whether asking again may help.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupError {
    pub message: String,
    /// Connection failures, 5xx and 429 answers; not bad requests or undecodable answers.
    pub retryable: bool,
}

impl LookupError {
    pub fn retryable(message: impl Into<String>) -> Self {
        LookupError {
            message: message.into(),
            retryable: true,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        LookupError {
            message: message.into(),
            retryable: false,
        }
    }
}

#[async_trait]
pub trait LookupClient: Send + Sync + 'static {
    /// The response for the key's values (in the order of the `key` setting).
    async fn lookup(&self, key: &[Value]) -> Result<Option<Value>, LookupError>;
}

/// Builds and connects the configured client.
pub async fn connect(settings: &Settings) -> Result<Arc<dyn LookupClient>, String> {
    match &settings.client {
        ClientSettings::Http {
            url,
            method,
            headers,
        } => Ok(Arc::new(http::HttpLookup::new(
            url.clone(),
            *method,
            headers,
            settings.key.clone(),
            settings.capacity,
        )?)),
        #[cfg(feature = "jdbc")]
        ClientSettings::Postgres {
            connection,
            query,
            pool_size,
        } => Ok(Arc::new(
            postgres::PgLookup::connect(&connection.resolve()?, query, *pool_size).await?,
        )),
        #[cfg(feature = "redis")]
        ClientSettings::Redis {
            connection,
            command,
            key,
            format,
        } => Ok(Arc::new(
            redis::RedisLookup::connect(&connection.resolve()?, *command, key.clone(), *format)
                .await?,
        )),
        #[allow(unreachable_patterns)]
        _ => Err("this lookup client is not compiled into this build".into()),
    }
}

/// `weir validate --connect`: connects as `open` does; Postgres also prepares the query, so a
/// missing table or column shows. `Err((Some(field), why))` when a setting does not fit the
/// server, `Err((None, why))` when it cannot be reached. HTTP lookups have nothing to check
/// before a key exists (`Ok(None)`).
pub async fn preflight(
    settings: &Settings,
) -> Result<Option<String>, (Option<&'static str>, String)> {
    match &settings.client {
        ClientSettings::Http { .. } => Ok(None),
        #[cfg(feature = "jdbc")]
        ClientSettings::Postgres {
            connection, query, ..
        } => {
            let url = connection
                .resolve()
                .map_err(|e| (Some("client.connection"), e))?;
            let pool = postgres::pool(&url, 1).await.map_err(|e| (None, e))?;
            let params = postgres::prepare(&pool, query)
                .await
                .map_err(|e| (Some("client.query"), e))?;
            Ok(Some(format!(
                "Postgres answers; the query prepares with parameters ({})",
                params.join(", ")
            )))
        }
        #[cfg(feature = "redis")]
        ClientSettings::Redis { .. } => {
            connect(settings).await.map_err(|e| (None, e))?;
            Ok(Some("Redis answers".to_string()))
        }
        #[allow(unreachable_patterns)]
        _ => Err((
            None,
            "this lookup client is not compiled into this build".into(),
        )),
    }
}
