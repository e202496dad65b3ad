//! The `jdbc` sink: an idempotent [`Sink`] that writes rows to Postgres, MySQL/MariaDB or SQLite in batches through
//! `pool_size` writers, and flushes at every barrier (so a completed checkpoint means every row
//! before it is committed).

mod metrics;
mod pending;
mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::AssertSqlSafe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::{redact, use_copy, Mode, Scrubber, SinkSettings};
use super::dialect::Dialect;
use super::plan::{Plan, Row};
use super::retry::{classify, Failure};
use super::schema::{self, Pool};
use crate::api::{Batch, NodeConfig, NodeContext, Record, Sink};
use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;
use metrics::JdbcMetrics;
use pending::{should_write, writer_for, Pending};
use writer::{Msg, Writer};

/// Batches queued per writer besides the one it is writing (the backpressure).
const QUEUE: usize = 2;

struct Lane {
    tx: Option<mpsc::Sender<Msg>>,
    task: Option<JoinHandle<Result<()>>>,
    pending: Pending,
    /// Batches handed to the writer and not yet committed.
    in_flight: Arc<AtomicUsize>,
}

impl Lane {
    fn should_write(&self, s: &SinkSettings) -> bool {
        should_write(
            self.pending.len(),
            self.in_flight.load(Ordering::Acquire),
            s.batch_size,
            s.max_batch_size,
        )
    }
}

pub struct JdbcSink {
    settings: SinkSettings,
    node: String,
    metrics: NodeMetrics,
    jdbc_metrics: JdbcMetrics,
    plan: Option<Arc<Plan>>,
    lanes: Vec<Lane>,
    pool: Option<Pool>,
}

impl JdbcSink {
    pub fn new(settings: SinkSettings, node: &str) -> JdbcSink {
        JdbcSink {
            settings,
            node: node.to_string(),
            metrics: NodeMetrics::detached(),
            jdbc_metrics: JdbcMetrics::detached(),
            plan: None,
            lanes: Vec::new(),
            pool: None,
        }
    }

    /// The plan on Postgres: the table's columns, and the real statements planned once
    /// (conflict target, types, permissions) so a mistake fails at start, not at the first
    /// barrier.
    async fn plan_postgres(
        &self,
        pool: &PgPool,
    ) -> sqlx::Result<std::result::Result<Plan, String>> {
        let s = &self.settings;
        let mut conn = pool.acquire().await?;
        let (Some(table), Mode::Upsert | Mode::Append) = (&s.table, s.mode) else {
            let sql = s.sql.as_deref().unwrap_or_default();
            let (numbered, _) = super::sql::rewrite(sql, |i| format!("${i}"));
            let types = schema::param_types(&mut conn, &numbered).await?;
            let route = s.key.clone().unwrap_or_default();
            return Ok(Plan::for_sql(Dialect::Postgres, sql, &types, &route));
        };
        let (columns, pk) = schema::table_columns(&mut conn, table).await?;
        let plan = match Plan::for_table(Dialect::Postgres, s, table, &columns, &pk) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(AssertSqlSafe(plan.create_stage()))
            .execute(&mut *tx)
            .await?;
        if plan.is_upsert() {
            sqlx::raw_sql(AssertSqlSafe(plan.merge_from_stage()))
                .execute(&mut *tx)
                .await?;
        } else {
            schema::param_types(&mut tx, &plan.values_statement(1)).await?;
        }
        tx.rollback().await?;
        Ok(Ok(plan))
    }

    /// The plan on SQLite; preparing the statement checks the columns and the conflict target.
    async fn plan_sqlite(
        &self,
        pool: &SqlitePool,
    ) -> sqlx::Result<std::result::Result<Plan, String>> {
        let s = &self.settings;
        let mut conn = pool.acquire().await?;
        let (Some(table), Mode::Upsert | Mode::Append) = (&s.table, s.mode) else {
            let sql = s.sql.as_deref().unwrap_or_default();
            let (numbered, _) = super::sql::rewrite(sql, |i| format!("?{i}"));
            let n = schema::sqlite_param_count(&mut conn, &numbered).await?;
            let route = s.key.clone().unwrap_or_default();
            let untyped = vec![(String::new(), String::new()); n];
            return Ok(Plan::for_sql(Dialect::Sqlite, sql, &untyped, &route));
        };
        let (columns, pk) = schema::sqlite_table_columns(&mut conn, table).await?;
        let plan = match Plan::for_table(Dialect::Sqlite, s, table, &columns, &pk) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        schema::sqlite_param_count(&mut conn, &plan.values_statement(1)).await?;
        Ok(Ok(plan))
    }

    /// The plan on MySQL/MariaDB: the `key` must be a unique index (MySQL has no conflict
    /// target), and preparing the statement checks the table and its columns.
    async fn plan_mysql(
        &self,
        pool: &MySqlPool,
    ) -> sqlx::Result<std::result::Result<Plan, String>> {
        let s = &self.settings;
        let mut conn = pool.acquire().await?;
        let (Some(table), Mode::Upsert | Mode::Append) = (&s.table, s.mode) else {
            let sql = s.sql.as_deref().unwrap_or_default();
            let (positional, _) = super::sql::rewrite(sql, |_| "?".into());
            let n = schema::mysql_param_count(&mut conn, &positional).await?;
            let route = s.key.clone().unwrap_or_default();
            let untyped = vec![(String::new(), String::new()); n];
            return Ok(Plan::for_sql(Dialect::Mysql, sql, &untyped, &route));
        };
        let (columns, pk, unique) = schema::mysql_table_columns(&mut conn, table).await?;
        let plan = match Plan::for_table(Dialect::Mysql, s, table, &columns, &pk)
            .and_then(|p| p.check_unique_key(&unique).map(|()| p))
        {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        schema::mysql_param_count(&mut conn, &plan.values_statement(1)).await?;
        Ok(Ok(plan))
    }

    /// The plan for this sink's database.
    async fn plan_for(&self, pool: &Pool) -> sqlx::Result<std::result::Result<Plan, String>> {
        match pool {
            Pool::Postgres(p) => self.plan_postgres(p).await,
            Pool::Sqlite(p) => self.plan_sqlite(p).await,
            Pool::Mysql(p) => self.plan_mysql(p).await,
        }
    }

    /// Reads the table (or statement) and builds the plan, retrying while the database is not
    /// reachable yet.
    async fn load_plan(&self, pool: &Pool, scrub: &Scrubber, url: &str) -> Result<Plan> {
        let s = &self.settings;
        let mut delays = s.retry.backoff();
        loop {
            let r = self.plan_for(pool).await;
            let e = match r {
                Ok(Ok(plan)) => return Ok(plan),
                // The table does not fit the settings: a restart meets the same table.
                Ok(Err(e)) => return Err(Error::fatal(&self.node, e)),
                Err(e) => e,
            };
            let failure = classify(&e);
            let wait = match failure {
                Failure::Transient => delays.next(),
                Failure::Data | Failure::Fatal => None,
            };
            let Some(wait) = wait else {
                let message = format!("{}: {}", redact(url), scrub.scrub(&e.to_string()));
                // A missing table, a refused login or permission: no restart can repair it,
                // so the job fails at once instead of burning its restart attempts. A database
                // that stayed unreachable through the retries is worth a restart.
                return Err(match failure {
                    Failure::Transient => Error::node(&self.node, message),
                    Failure::Data | Failure::Fatal => Error::fatal(&self.node, message),
                });
            };
            tracing::warn!(node = %self.node, url = %redact(url), attempt = delays.retries(), error = %scrub.scrub(&e.to_string()),
                "cannot reach the database yet, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn plan(&self) -> Result<&Arc<Plan>> {
        self.plan
            .as_ref()
            .ok_or_else(|| Error::node(&self.node, "write before open"))
    }

    /// The error a writer ended with (its channel is closed).
    async fn lane_failed(&mut self, i: usize) -> Error {
        self.lanes[i].tx = None;
        let Some(task) = self.lanes[i].task.take() else {
            return Error::node(&self.node, "a writer stopped earlier");
        };
        match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => Error::node(&self.node, "a writer stopped unexpectedly"),
            Err(e) => Error::node(&self.node, format!("a writer crashed: {e}")),
        }
    }

    /// Hands lane `i`'s waiting rows to its writer (waits while the writer's queue is full).
    async fn send(&mut self, i: usize) -> Result<()> {
        if self.lanes[i].pending.is_empty() {
            return Ok(());
        }
        let rows = self.lanes[i].pending.take();
        self.lanes[i].in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = match &self.lanes[i].tx {
            Some(tx) => tx.send(Msg::Rows(rows)).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.lane_failed(i).await)
        }
    }

    fn reject(&self, r: &Record, why: String) -> Result<()> {
        self.metrics.record_errors.inc();
        match self.settings.on_error {
            OnError::Fail | OnError::DeadLetter(_) => Err(Error::Record {
                node: self.node.clone(),
                record: r.describe(),
                message: why,
            }),
            OnError::Skip => {
                tracing::warn!(node = %self.node, record = %r.describe(), "skipped: {why}");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Sink for JdbcSink {
    /// The database answers and the table fits the settings: the plan `open` makes (columns,
    /// key, types; on Postgres the staging statements run in a transaction that is rolled back).
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let s = &self.settings;
        let url = s
            .url
            .resolve(|v| std::env::var(v).ok())
            .map_err(|e| cfg.error("url", e))?;
        let scrub = Scrubber::for_url(&url);
        let pool = Pool::open(&url, 1, s.connect_timeout)
            .await
            .map_err(|e| cfg.error("url", e))?;
        let r = self.plan_for(&pool).await;
        match r {
            Ok(Ok(plan)) => Ok(vec![format!(
                "{}: {} columns written ({})",
                redact(&url),
                plan.columns.len(),
                if plan.is_upsert() { "upsert" } else { "append" }
            )]),
            Ok(Err(e)) => Err(cfg.error("", e)),
            Err(e) => {
                let message = format!("{}: {}", redact(&url), scrub.scrub(&e.to_string()));
                Err(match classify(&e) {
                    Failure::Transient => Error::node(cfg.name(), message),
                    Failure::Data | Failure::Fatal => Error::fatal(cfg.name(), message),
                })
            }
        }
    }

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        self.jdbc_metrics = JdbcMetrics::new(ctx);
        let s = &self.settings;
        let url = s
            .url
            .resolve(|v| std::env::var(v).ok())
            .map_err(|e| Error::node(&self.node, e))?;
        let scrub = Scrubber::for_url(&url);
        let pool = Pool::open(&url, s.pool_size, s.connect_timeout)
            .await
            .map_err(|e| Error::fatal(&self.node, e))?;
        let copy = use_copy(pool.dialect(), s.copy)
            .map_err(|e| Error::fatal(&self.node, format!("copy: {e}")))?;
        let plan = Arc::new(self.load_plan(&pool, &scrub, &url).await?);
        let writers = match plan.statement {
            super::plan::Statement::Sql { .. } if plan.route.is_empty() => 1,
            _ => s.pool_size as usize,
        };
        let chunk = plan.rows_per_statement(s.batch_size);
        for _ in 0..writers {
            let (tx, rx) = mpsc::channel(QUEUE);
            let in_flight = Arc::new(AtomicUsize::new(0));
            let w = Writer {
                in_flight: in_flight.clone(),
                pool: pool.clone(),
                plan: plan.clone(),
                copy,
                retry: s.retry,
                on_error: s.on_error,
                node: self.node.clone(),
                metrics: self.metrics.clone(),
                retried_batches: self.jdbc_metrics.retried_batches.clone(),
                scrub: scrub.clone(),
                full_chunk: (chunk, plan.values_statement(chunk).into()),
            };
            self.lanes.push(Lane {
                tx: Some(tx),
                task: Some(tokio::spawn(w.run(rx))),
                pending: Pending::new(plan.is_upsert()),
                in_flight,
            });
        }
        tracing::info!(node = %self.node, url = %redact(&url), writers, "jdbc sink open");
        self.plan = Some(plan);
        self.pool = Some(pool);
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let plan = self.plan()?.clone();
        let n = self.lanes.len();
        let key: Vec<usize> = plan.key().to_vec();
        for r in batch.records {
            let row: Row = match plan.encode(r.fields()) {
                Ok(row) => row,
                Err(why) => {
                    self.reject(&r, why)?;
                    continue;
                }
            };
            let i = writer_for(&row, &plan.route, n);
            self.lanes[i].pending.push(row, &key);
            if self.lanes[i].should_write(&self.settings) {
                self.send(i).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        for i in 0..self.lanes.len() {
            self.send(i).await?;
        }
        let mut waits = Vec::with_capacity(self.lanes.len());
        for i in 0..self.lanes.len() {
            let (done, wait) = oneshot::channel();
            let sent = match &self.lanes[i].tx {
                Some(tx) => tx.send(Msg::Flush(done)).await.is_ok(),
                None => false,
            };
            if !sent {
                return Err(self.lane_failed(i).await);
            }
            waits.push(wait);
        }
        for (i, wait) in waits.into_iter().enumerate() {
            if wait.await.is_err() {
                return Err(self.lane_failed(i).await);
            }
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<()> {
        let max_wait = self.settings.flush_interval;
        for i in 0..self.lanes.len() {
            let lane = &self.lanes[i];
            // A full batch that waited for a busy writer goes as soon as the writer is free.
            if lane.should_write(&self.settings)
                || lane
                    .pending
                    .waiting_since()
                    .is_some_and(|t| t.elapsed() >= max_wait)
            {
                self.send(i).await?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let r = if self.plan.is_some() {
            self.flush().await
        } else {
            Ok(())
        };
        for lane in &mut self.lanes {
            lane.tx = None;
        }
        for i in 0..self.lanes.len() {
            if let Some(task) = self.lanes[i].task.take() {
                if let Ok(Err(e)) = task.await {
                    tracing::warn!(node = %self.node, error = %e, "writer ended with an error");
                }
            }
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        r
    }
}
