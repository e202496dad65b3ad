//! One writer: a task that writes batches in order through the pool, one transaction per batch.
//! Transient failures retry the whole batch with backoff (every path is idempotent except
//! append, which is at-least-once); a data error re-runs the batch row by row to find the rows
//! the database rejects and applies `on_error` to them alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, MySql, Postgres, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::super::config::{Mode, Scrubber};
use super::super::plan::{Plan, Row, Statement};
use super::super::retry::{classify, Failure};
use super::super::schema::Pool;
use super::pending::key_order;
use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;
use crate::retry::RetryPolicy;

pub enum Msg {
    Rows(Vec<Row>),
    /// Answered once every batch sent before it is committed.
    Flush(oneshot::Sender<()>),
}

pub struct Writer {
    pub pool: Pool,
    pub plan: Arc<Plan>,
    pub copy: bool,
    pub retry: RetryPolicy,
    pub on_error: OnError,
    pub node: String,
    pub metrics: NodeMetrics,
    /// `weir_sink_retried_batches_total`: every transient failure that sends a batch again.
    pub retried_batches: prometheus::IntCounter,
    pub scrub: Scrubber,
    /// Multi-row statement for a full chunk, built once.
    pub full_chunk: (usize, Arc<str>),
    /// Shared with the sink, which merges rows into the next batch while this is non-zero.
    pub in_flight: Arc<AtomicUsize>,
}

/// How a batch is attempted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// One transaction for the batch (COPY + set-based statement, or multi-row statements).
    Batch,
    /// One savepoint per row, to find the rows the database rejects.
    RowByRow,
}

impl Writer {
    pub async fn run(self, mut rx: mpsc::Receiver<Msg>) -> Result<()> {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Rows(rows) => {
                    self.write(&rows).await?;
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
                Msg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
        Ok(())
    }

    fn db_error(&self, what: &str, e: &sqlx::Error) -> Error {
        Error::node(
            &self.node,
            format!("{what}: {}", self.scrub.scrub(&e.to_string())),
        )
    }

    /// Writes one batch durably, or fails the job.
    pub async fn write(&self, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut path = Path::Batch;
        let mut delays = self.retry.backoff();
        loop {
            // A transient failure closes the connection: it may be dead (server restart), and
            // the pool replaces it.
            let dead =
                |r: &sqlx::Result<_>| r.as_ref().is_err_and(|e| classify(e) == Failure::Transient);
            let result = match &self.pool {
                Pool::Postgres(pool) => match pool.acquire().await {
                    Ok(mut conn) => {
                        let r = match path {
                            Path::Batch => {
                                self.batch_pg(&mut conn, rows).await.map(|()| Vec::new())
                            }
                            Path::RowByRow => self.row_by_row_pg(&mut conn, rows).await,
                        };
                        if dead(&r) {
                            conn.close_on_drop();
                        }
                        r
                    }
                    Err(e) => Err(e),
                },
                Pool::Mysql(pool) => match pool.acquire().await {
                    Ok(mut conn) => {
                        let r = match path {
                            Path::Batch => {
                                self.batch_mysql(&mut conn, rows).await.map(|()| Vec::new())
                            }
                            Path::RowByRow => self.row_by_row_mysql(&mut conn, rows).await,
                        };
                        if dead(&r) {
                            conn.close_on_drop();
                        }
                        r
                    }
                    Err(e) => Err(e),
                },
                Pool::Sqlite(pool) => match pool.acquire().await {
                    Ok(mut conn) => {
                        let r = match path {
                            Path::Batch => self
                                .batch_sqlite(&mut conn, rows)
                                .await
                                .map(|()| Vec::new()),
                            Path::RowByRow => self.row_by_row_sqlite(&mut conn, rows).await,
                        };
                        if dead(&r) {
                            conn.close_on_drop();
                        }
                        r
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(rejected) => {
                    let bytes: usize = rows
                        .iter()
                        .flat_map(|r| r.iter())
                        .flatten()
                        .map(String::len)
                        .sum();
                    self.metrics.bytes_out.inc_by(bytes as u64);
                    return self.apply_policy(rows, rejected);
                }
                Err(e) => match classify(&e) {
                    Failure::Data if path == Path::Batch => {
                        tracing::info!(node = %self.node, rows = rows.len(), error = %self.scrub.scrub(&e.to_string()),
                            "batch rejected, writing it row by row to isolate the bad rows");
                        path = Path::RowByRow;
                    }
                    Failure::Transient => match delays.next() {
                        Some(wait) => {
                            self.retried_batches.inc();
                            tracing::warn!(node = %self.node, attempt = delays.retries(), wait_ms = wait.as_millis() as u64,
                                error = %self.scrub.scrub(&e.to_string()), "write failed, retrying");
                            tokio::time::sleep(wait).await;
                        }
                        None => {
                            return Err(self.db_error(
                                &format!("write failed after {} retries", delays.retries()),
                                &e,
                            ))
                        }
                    },
                    Failure::Data | Failure::Fatal => return Err(self.db_error("write failed", &e)),
                },
            }
        }
    }

    /// Routes rows the database rejected (position, reason) by `on_error`.
    fn apply_policy(&self, rows: &[Row], rejected: Vec<(usize, String)>) -> Result<()> {
        for (i, why) in rejected {
            self.metrics.record_errors.inc();
            let record = self.plan.describe(&rows[i]);
            match self.on_error {
                OnError::Fail | OnError::DeadLetter(_) => {
                    return Err(Error::Record {
                        node: self.node.clone(),
                        record,
                        message: format!("rejected by the database: {why}"),
                    })
                }
                OnError::Skip => {
                    tracing::warn!(node = %self.node, record = %record, error = %why, "record rejected by the database, skipped")
                }
            }
        }
        Ok(())
    }

    /// Postgres: COPY when `copy` is on (a set-based statement that sorts by key itself), else
    /// the multi-row statements every database shares.
    async fn batch_pg(&self, conn: &mut PgConnection, rows: &[Row]) -> sqlx::Result<()> {
        let Statement::Table { mode, .. } = &self.plan.statement else {
            return self.batch_pg_values(conn, rows).await;
        };
        if !self.copy {
            return self.batch_pg_values(conn, rows).await;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let upsert = *mode == Mode::Upsert;
        let copy_sql = if upsert {
            sqlx::raw_sql(AssertSqlSafe(self.plan.create_stage()))
                .execute(&mut *tx)
                .await?;
            self.plan.copy_into_stage()
        } else {
            self.plan.copy_into_table()
        };
        let mut copy = tx.copy_in_raw(&copy_sql).await?;
        copy.send(self.plan.copy_data(rows, upsert)).await?;
        copy.finish().await?;
        if upsert {
            sqlx::raw_sql(AssertSqlSafe(self.plan.merge_from_stage()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// The multi-row statement path (Postgres with `copy: false`, SQLite, MySQL): one transaction
/// per batch opened by `$begin`, chunks in key order, and row by row under a savepoint per row
/// (on a data error only that row is rejected). One body, instantiated per database (sqlx's
/// generic executor bounds would say the same thing less readably).
macro_rules! values_path {
    ($db:ty, $conn:ty, $args:ty, $begin:literal, $batch:ident, $row_by_row:ident, $bind_row:ident) => {
        impl Writer {
            async fn $batch(&self, conn: &mut $conn, rows: &[Row]) -> sqlx::Result<()> {
                let mut tx = sqlx::Connection::begin_with(&mut *conn, $begin).await?;
                // In key order, within each statement and from one statement to the next, so
                // concurrent writers of overlapping keys (two workers reading splits that share
                // keys) take their row locks in one order and wait instead of deadlocking.
                let order = key_order(rows, self.plan.lock_order());
                match &self.plan.statement {
                    Statement::Table { .. } => {
                        for chunk in order.chunks(self.full_chunk.0) {
                            let sql: Arc<str> = if chunk.len() == self.full_chunk.0 {
                                self.full_chunk.1.clone()
                            } else {
                                self.plan.values_statement(chunk.len()).into()
                            };
                            let mut q = sqlx::query::<$db>(AssertSqlSafe(sql));
                            for &i in chunk {
                                for cell in rows[i].iter() {
                                    q = q.bind(cell.as_deref());
                                }
                            }
                            q.execute(&mut *tx).await?;
                        }
                    }
                    Statement::Sql { .. } => {
                        let sql: Arc<str> = self.plan.values_statement(1).into();
                        for i in order {
                            $bind_row(&sql, &rows[i]).execute(&mut *tx).await?;
                        }
                    }
                }
                tx.commit().await
            }

            /// Every row under its own savepoint in one transaction; returns the rejected rows.
            /// With `on_error: fail` it stops at the first (and commits nothing: the job fails
            /// anyway).
            async fn $row_by_row(
                &self,
                conn: &mut $conn,
                rows: &[Row],
            ) -> sqlx::Result<Vec<(usize, String)>> {
                let sql: Arc<str> = self.plan.values_statement(1).into();
                let mut tx = sqlx::Connection::begin_with(&mut *conn, $begin).await?;
                let mut rejected = Vec::new();
                // Key order, as in the batch path: the row locks accumulate in this transaction.
                for i in key_order(rows, self.plan.lock_order()) {
                    sqlx::raw_sql("SAVEPOINT weir_row")
                        .execute(&mut *tx)
                        .await?;
                    match $bind_row(&sql, &rows[i]).execute(&mut *tx).await {
                        Ok(_) => {
                            sqlx::raw_sql("RELEASE SAVEPOINT weir_row")
                                .execute(&mut *tx)
                                .await?;
                        }
                        Err(e) if classify(&e) == Failure::Data => {
                            sqlx::raw_sql("ROLLBACK TO SAVEPOINT weir_row")
                                .execute(&mut *tx)
                                .await?;
                            rejected.push((i, self.scrub.scrub(&db_message(&e))));
                            if self.on_error == OnError::Fail {
                                tx.rollback().await?;
                                return Ok(rejected);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                tx.commit().await?;
                Ok(rejected)
            }
        }

        fn $bind_row<'q>(sql: &Arc<str>, row: &'q Row) -> sqlx::query::Query<'q, $db, $args> {
            let mut q = sqlx::query(AssertSqlSafe(sql.clone()));
            for cell in row.iter() {
                q = q.bind(cell.as_deref());
            }
            q
        }
    };
}

values_path!(
    Postgres,
    PgConnection,
    sqlx::postgres::PgArguments,
    "BEGIN",
    batch_pg_values,
    row_by_row_pg,
    bind_row_pg
);
// SQLite: `BEGIN IMMEDIATE` takes the write lock first, so two writers queue for it (up to the
// busy timeout) instead of one failing at its first write.
values_path!(
    Sqlite,
    SqliteConnection,
    sqlx::sqlite::SqliteArguments,
    "BEGIN IMMEDIATE",
    batch_sqlite,
    row_by_row_sqlite,
    bind_row_sqlite
);
// MySQL: row locks are taken as the sorted rows are written (READ COMMITTED, see
// `schema::mysql_pool`).
values_path!(
    MySql,
    MySqlConnection,
    sqlx::mysql::MySqlArguments,
    "BEGIN",
    batch_mysql,
    row_by_row_mysql,
    bind_row_mysql
);

/// The server's message with its detail (which names the failing values).
fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            match pg.and_then(|p| p.detail()) {
                Some(d) => format!("{} ({d})", db.message()),
                None => db.message().to_string(),
            }
        }
        other => other.to_string(),
    }
}
