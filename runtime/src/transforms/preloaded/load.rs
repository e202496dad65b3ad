//! Loading a table from where it lives, and keeping its versions in checkpoint storage.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

use super::config::{Settings, TableSource};
use super::table::{self, Table};
use crate::storage::{self, Location};
use crate::transforms::async_io::mapping::FieldMapping;

/// Why a load failed: worth trying again later, or a table that can never load as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadError {
    /// The database or store did not answer.
    Unavailable(String),
    /// A row without its key, a malformed line, a table beyond its limits.
    Invalid(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Unavailable(m) | LoadError::Invalid(m) => f.write_str(m),
        }
    }
}

/// Loads the whole table of a `file` or `jdbc` source.
pub async fn load(s: &Settings) -> Result<Table, LoadError> {
    match &s.source {
        TableSource::File {
            path,
            storage_options,
        } => {
            let bytes = read_file(path, storage_options).await?;
            let rows = json_lines(&bytes).map_err(LoadError::Invalid)?;
            table::build(rows, &s.row_key, &s.mapping, &s.limits)
                .map_err(|e| LoadError::Invalid(format!("{path}: {e}")))
        }
        #[cfg(feature = "jdbc")]
        TableSource::Jdbc { connection, query } => {
            let url = connection.resolve().map_err(LoadError::Invalid)?;
            let rows = jdbc_rows(&url, query).await?;
            table::build(rows, &s.row_key, &s.mapping, &s.limits).map_err(LoadError::Invalid)
        }
        #[allow(unreachable_patterns)]
        _ => Err(LoadError::Invalid(
            "this table is followed, not loaded".into(),
        )),
    }
}

async fn read_file(
    path: &str,
    options: &BTreeMap<String, String>,
) -> Result<bytes::Bytes, LoadError> {
    let location = Location::parse(path).map_err(|e| LoadError::Invalid(e.to_string()))?;
    match &location {
        Location::Local(p) => tokio::fs::read(p)
            .await
            .map(bytes::Bytes::from)
            .map_err(|e| LoadError::Unavailable(format!("reading {path}: {e}"))),
        Location::Url(_) => {
            let (store, key) =
                storage::open(&location, options).map_err(|e| LoadError::Invalid(e.to_string()))?;
            let got = store
                .get(&key)
                .await
                .map_err(|e| LoadError::Unavailable(format!("reading {path}: {e}")))?;
            got.bytes()
                .await
                .map_err(|e| LoadError::Unavailable(format!("reading {path}: {e}")))
        }
    }
}

/// Non-empty lines as JSON values, each labelled with its line number.
fn json_lines(bytes: &[u8]) -> Result<Vec<(String, Value)>, String> {
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v = serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        rows.push((format!("line {}", i + 1), v));
    }
    Ok(rows)
}

#[cfg(feature = "jdbc")]
async fn jdbc_rows(url: &str, query: &str) -> Result<Vec<(String, Value)>, LoadError> {
    use crate::connectors::jdbc::config::{redact, Scrubber};
    use sqlx::{AssertSqlSafe, ConnectOptions};
    let scrub = Scrubber::for_url(url);
    let failed = |e: sqlx::Error| format!("{}: {}", redact(url), scrub.scrub(&e.to_string()));
    let opts = crate::connectors::jdbc::schema::connect_options(url).map_err(LoadError::Invalid)?;
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| LoadError::Unavailable(failed(e)))?;
    // The simple query protocol: every value as text, typed by its column (as the jdbc source).
    let rows = sqlx::raw_sql(AssertSqlSafe(query.to_string()))
        .fetch_all(&mut conn)
        .await
        .map_err(|e| match crate::connectors::jdbc::retry::classify(&e) {
            // A server restarting (57P01) or a dropped connection: load again later.
            crate::connectors::jdbc::retry::Failure::Transient => LoadError::Unavailable(failed(e)),
            _ => LoadError::Invalid(failed(e)),
        })?;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            crate::connectors::jdbc::source::to_fields(r)
                .map(|m| (format!("row {}", i + 1), Value::Object(m)))
                .map_err(|e| LoadError::Invalid(format!("row {}: {e}", i + 1)))
        })
        .collect()
}

/// Table versions kept in checkpoint storage, so that a restart joins against the version its
/// checkpoint names even when the source has changed since:
/// `<checkpoint.storage>/<job>/lookup-tables/<node>/<version>.jsonl`.
pub struct Snapshots {
    store: Arc<dyn ObjectStore>,
    dir: Path,
}

/// Versions kept besides the newest; older ones are deleted (a savepoint that names one of
/// them loads the table afresh, with a warning).
const KEEP: usize = 10;

impl Snapshots {
    pub fn open(
        storage_text: &str,
        options: &BTreeMap<String, String>,
        job: &str,
        node: &str,
    ) -> crate::error::Result<Snapshots> {
        let location = Location::parse(storage_text)?;
        let (store, prefix) = storage::open(&location, options)?;
        Ok(Snapshots {
            store,
            dir: storage::join(&prefix, &format!("{job}/lookup-tables/{node}")),
        })
    }

    fn path(&self, version: &str) -> Path {
        self.dir.clone().join(format!("{version}.jsonl"))
    }

    /// Writes a table's `lines` ([`Table::to_lines`]) as `version` unless it is there already,
    /// then prunes old versions.
    pub async fn save(&self, version: &str, lines: Vec<u8>) -> Result<(), String> {
        let path = self.path(version);
        if self.store.head(&path).await.is_ok() {
            return Ok(());
        }
        self.store
            .put(&path, PutPayload::from(lines))
            .await
            .map_err(|e| format!("writing the table snapshot {path}: {e}"))?;
        self.prune(version).await;
        Ok(())
    }

    async fn prune(&self, current: &str) {
        use futures::TryStreamExt;
        let Ok(mut all) = self
            .store
            .list(Some(&self.dir))
            .try_collect::<Vec<_>>()
            .await
        else {
            return;
        };
        all.sort_by_key(|o| std::cmp::Reverse(o.last_modified));
        for old in all.iter().skip(KEEP + 1) {
            if old.location != self.path(current) {
                let _ = self.store.delete(&old.location).await;
            }
        }
    }

    /// The table stored as `version`; `Ok(None)` when it is gone or holds other fields than
    /// `fields` (the job's mapping changed since).
    pub async fn load(
        &self,
        version: &str,
        fields: &FieldMapping,
        limits: &table::Limits,
    ) -> Result<Option<Table>, String> {
        let path = self.path(version);
        let got = match self.store.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("reading the table snapshot {path}: {e}")),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| format!("reading the table snapshot {path}: {e}"))?;
        Table::from_lines(&bytes, fields, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_skip_blank_lines_and_name_a_bad_one() {
        let rows = json_lines(b"{\"id\":1}\n\n  \n{\"id\":2}\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].0, "line 4");
        let e = json_lines(b"{\"id\":1}\n{oops\n").unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
    }
}
