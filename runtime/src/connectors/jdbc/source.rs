//! The bounded `jdbc` source: runs `query` once through a server-side cursor and emits its rows
//! as records (column name → typed JSON value), `fetch_size` rows per poll, then finishes.
//!
//! One split (`jdbc-0`), read by worker 0; its position is the number of rows emitted. After a
//! restart, or a lost connection mid-read, the query is declared again and the cursor skips
//! (`MOVE`) the rows already emitted on the server, so the query needs a stable `ORDER BY`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Row, TypeInfo, ValueRef};

use super::config::{redact, Scrubber, SourceSettings};
use super::retry::{classify, Failure};
use super::schema;
use super::types::decode;
use crate::api::{Batch, NodeConfig, NodeContext, Record, Result, Source, SourcePoll, SplitId};
use crate::error::Error;

const SPLIT: &str = "jdbc-0";
const CURSOR: &str = "weir_cursor";

pub struct JdbcSource {
    settings: SourceSettings,
    node: String,
    owned: bool,
    emitted: u64,
    done: bool,
    split: SplitId,
    opts: Option<PgConnectOptions>,
    url: String,
    scrub: Scrubber,
    /// A connection inside a read-only transaction with the cursor declared.
    conn: Option<PgConnection>,
}

impl JdbcSource {
    pub fn new(settings: SourceSettings, node: &str) -> JdbcSource {
        JdbcSource {
            settings,
            node: node.to_string(),
            owned: false,
            emitted: 0,
            done: false,
            split: Arc::from(SPLIT),
            opts: None,
            url: String::new(),
            scrub: Scrubber::default(),
            conn: None,
        }
    }

    /// Connects, starts a snapshot and positions the cursor after the rows already emitted.
    async fn start_cursor(&self) -> sqlx::Result<PgConnection> {
        let opts = self.opts.as_ref().ok_or(sqlx::Error::PoolClosed)?;
        // A server that accepts but never answers must not hang the read: time out and retry.
        let mut conn = tokio::time::timeout(self.settings.connect_timeout, opts.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DECLARE {CURSOR} NO SCROLL CURSOR FOR {}",
            self.settings.query
        )))
        .execute(&mut conn)
        .await?;
        if self.emitted > 0 {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "MOVE FORWARD {} FROM {CURSOR}",
                self.emitted
            )))
            .execute(&mut conn)
            .await?;
        }
        Ok(conn)
    }

    /// The next rows; the simple query protocol returns every value as text.
    async fn fetch(&mut self) -> sqlx::Result<Vec<PgRow>> {
        if self.conn.is_none() {
            self.conn = Some(self.start_cursor().await?);
        }
        let conn = self.conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "FETCH FORWARD {} FROM {CURSOR}",
            self.settings.fetch_size
        )))
        .fetch_all(conn)
        .await
    }

    fn error(&self, e: &sqlx::Error) -> Error {
        Error::node(
            &self.node,
            format!(
                "query on {} failed: {}",
                redact(&self.url),
                self.scrub.scrub(&e.to_string())
            ),
        )
    }
}

/// One result row as record fields, typed by column type.
pub fn to_fields(row: &PgRow) -> std::result::Result<Map<String, Value>, sqlx::Error> {
    let mut m = Map::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let text = if raw.is_null() {
            None
        } else {
            Some(raw.as_str().map_err(sqlx::Error::Decode)?)
        };
        m.insert(col.name().to_string(), decode(col.type_info().name(), text));
    }
    Ok(m)
}

#[async_trait]
impl Source for JdbcSource {
    /// The database answers and the query prepares (its tables and columns exist); no row is
    /// read.
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        use sqlx::{Executor, SqlSafeStr};
        let url = self
            .settings
            .url
            .resolve(|v| std::env::var(v).ok())
            .map_err(|e| cfg.error("url", e))?;
        let scrub = Scrubber::for_url(&url);
        let opts = schema::connect_options(&url).map_err(|e| cfg.error("url", e))?;
        let mut conn = tokio::time::timeout(self.settings.connect_timeout, opts.connect())
            .await
            .map_err(|_| Error::node(cfg.name(), format!("{}: no answer", redact(&url))))?
            .map_err(|e| {
                Error::node(
                    cfg.name(),
                    format!("{}: {}", redact(&url), scrub.scrub(&e.to_string())),
                )
            })?;
        let statement = conn
            .prepare(AssertSqlSafe(self.settings.query.clone()).into_sql_str())
            .await
            .map_err(|e| cfg.error("query", scrub.scrub(&e.to_string())))?;
        Ok(vec![format!(
            "{}: the query prepares ({} columns)",
            redact(&url),
            sqlx::Statement::columns(&statement).len()
        )])
    }

    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.owned = ctx.owns_index(0);
        if let Some(k) = restored.keys().find(|k| *k != SPLIT) {
            return Err(Error::Checkpoint(format!(
                "{}: the restored state has split {k:?}; a jdbc source has only {SPLIT}",
                self.node
            )));
        }
        if let Some(v) = restored.get(SPLIT) {
            self.emitted = v.as_u64().ok_or_else(|| {
                Error::Checkpoint(format!(
                    "{}: position of {SPLIT} is not a row count: {v}",
                    self.node
                ))
            })?;
        }
        if !self.owned {
            return Ok(());
        }
        self.url = self
            .settings
            .url
            .resolve(|v| std::env::var(v).ok())
            .map_err(|e| Error::node(&self.node, e))?;
        self.scrub = Scrubber::for_url(&self.url);
        let opts = schema::connect_options(&self.url).map_err(|e| Error::node(&self.node, e))?;
        self.opts = Some(opts);
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        if !self.owned || self.done {
            return Ok(SourcePoll::Finished);
        }
        let mut delays = self.settings.retry.backoff();
        let rows = loop {
            match self.fetch().await {
                Ok(rows) => break rows,
                Err(e) if classify(&e) == Failure::Transient => {
                    let Some(wait) = delays.next() else {
                        return Err(self.error(&e));
                    };
                    // The cursor went with the connection: declare it again and skip ahead.
                    self.conn = None;
                    tracing::warn!(node = %self.node, attempt = delays.retries(), error = %self.scrub.scrub(&e.to_string()),
                        "read failed, reconnecting");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(self.error(&e)),
            }
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let fields = to_fields(row).map_err(|e| self.error(&e))?;
            records.push(Record::new(fields));
        }
        if rows.len() < self.settings.fetch_size {
            self.done = true;
            if let Some(mut conn) = self.conn.take() {
                // Read-only: ending the snapshot has nothing to commit, so an error is moot.
                let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
                let _ = sqlx::Connection::close(conn).await;
            }
        }
        self.emitted += records.len() as u64;
        if records.is_empty() {
            return Ok(SourcePoll::Finished);
        }
        Ok(SourcePoll::Batch(Batch::new(
            Some(self.split.clone()),
            records,
        )))
    }

    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>> {
        let mut m = BTreeMap::new();
        if self.owned {
            m.insert(SPLIT.to_string(), Value::from(self.emitted));
        }
        Ok(m)
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(conn) = self.conn.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(())
    }
}
