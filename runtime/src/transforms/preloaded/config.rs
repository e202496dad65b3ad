//! `preloaded_lookup` settings as written, resolved into [`Settings`] without I/O (the factory
//! also runs for `weir validate`).

use std::collections::BTreeMap;

use serde::Deserialize;
use weir_crds::units::ByteSize;
use weir_crds::Duration;

use super::table::Limits;
use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;
use crate::ordered::OrderedMap;
use crate::transforms::async_io::config::{key_and_mapping, Connection, OneOrMany, Policy};
use crate::transforms::async_io::mapping::FieldMapping;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadedLookupConfig {
    /// Record fields whose values are looked up.
    pub key: OneOrMany,
    pub table: TableConfig,
    /// Output field ← where its value sits in the row (`.`, `a.b`, `/a/b`).
    pub fields: OrderedMap<String>,
    /// A key the table does not have: `null` (emit with null fields: a left join, the
    /// default), `drop` (an inner join) or `fail`.
    #[serde(default = "left_join")]
    pub on_miss: Policy,
    /// Load the table again this often (`file` and `jdbc`); the new version replaces the old
    /// one between two batches. Default: loaded once.
    pub reload: Option<Duration>,
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Estimated memory of the rows (keys, JSON values and map overhead).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
}

fn left_join() -> Policy {
    Policy::Null
}
fn default_max_rows() -> usize {
    10_000_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize(512 << 20)
}

/// Where the table comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TableConfig {
    /// JSON lines (one object per line), local or `s3://`.
    File {
        path: String,
        #[serde(default)]
        storage_options: BTreeMap<String, String>,
        /// The row fields matched against `key`, in order. Default: the same names.
        key: Option<OneOrMany>,
    },
    /// The rows of a Postgres query, column name → value.
    Jdbc {
        url: Option<String>,
        url_env: Option<String>,
        query: String,
        key: Option<OneOrMany>,
    },
    /// A compacted topic followed from its beginning: each message's JSON value is the row for
    /// the message key (a null value deletes it). `key` names value fields instead.
    Kafka {
        bootstrap_servers: String,
        topic: String,
        #[serde(default)]
        properties: BTreeMap<String, String>,
        key: Option<OneOrMany>,
    },
}

#[derive(Debug, Clone)]
pub enum TableSource {
    File {
        path: String,
        storage_options: BTreeMap<String, String>,
    },
    Jdbc {
        connection: Connection,
        query: String,
    },
    Kafka {
        bootstrap_servers: String,
        topic: String,
        properties: BTreeMap<String, String>,
        /// Value fields forming the key; `None`: the message key.
        value_key: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub key: Vec<String>,
    /// The row fields matched against `key` (for Kafka without `table.key`: unused).
    pub row_key: Vec<String>,
    pub source: TableSource,
    pub mapping: FieldMapping,
    pub on_miss: Policy,
    pub reload: Option<std::time::Duration>,
    pub limits: Limits,
}

impl ConnectorConfig for PreloadedLookupConfig {
    type Settings = Settings;

    /// Checks every setting and parses the templates; nothing is opened.
    fn resolve(self, cfg: &NodeConfig) -> Result<Settings> {
        let c = self;
        let (key, mapping) = key_and_mapping(cfg, &c.key, &c.fields)?;
        if c.max_rows == 0 {
            return Err(cfg.error("max_rows", "must be at least 1"));
        }
        let reload = c.reload.map(|d| d.as_std());
        if reload.is_some_and(|d| d < std::time::Duration::from_secs(1)) {
            return Err(cfg.error("reload", "must be at least 1s"));
        }
        let row_key = |k: Option<OneOrMany>| -> Result<Vec<String>> {
            let k = k.map_or_else(|| key.clone(), |k| k.to_vec());
            if k.len() != key.len() {
                return Err(cfg.error(
                    "table.key",
                    format!(
                        "names {} fields, the lookup key {}: they are matched in order",
                        k.len(),
                        key.len()
                    ),
                ));
            }
            Ok(k)
        };
        let (source, row_key) = match c.table {
            TableConfig::File {
                path,
                storage_options,
                key: k,
            } => {
                if path.trim().is_empty() {
                    return Err(cfg.error("table.path", "must not be empty"));
                }
                (
                    TableSource::File {
                        path,
                        storage_options,
                    },
                    row_key(k)?,
                )
            }
            TableConfig::Jdbc {
                url,
                url_env,
                query,
                key: k,
            } => {
                if !cfg!(feature = "jdbc") {
                    return Err(cfg.error(
                        "table.type",
                        "jdbc tables need weir built with the `jdbc` feature",
                    ));
                }
                let connection = Connection::checked(cfg, "table", url, url_env)?;
                (TableSource::Jdbc { connection, query }, row_key(k)?)
            }
            TableConfig::Kafka {
                bootstrap_servers,
                topic,
                properties,
                key: k,
            } => {
                if !cfg!(feature = "kafka") {
                    return Err(cfg.error(
                        "table.type",
                        "kafka tables need weir built with the `kafka` feature",
                    ));
                }
                if reload.is_some() {
                    return Err(cfg.error(
                        "reload",
                        "a kafka table follows its topic; reload applies to file and jdbc tables",
                    ));
                }
                if k.is_none() && key.len() != 1 {
                    return Err(cfg.error(
                        "table.key",
                        "a key of several fields needs table.key: the value fields that form it \
                         (a message key is one value)",
                    ));
                }
                let value_key = k.is_some();
                (
                    TableSource::Kafka {
                        bootstrap_servers,
                        topic,
                        properties,
                        value_key,
                    },
                    row_key(k)?,
                )
            }
        };
        Ok(Settings {
            key,
            row_key,
            source,
            mapping,
            on_miss: c.on_miss,
            reload,
            limits: Limits {
                max_rows: c.max_rows,
                max_bytes: c.max_bytes.0,
            },
        })
    }
}
