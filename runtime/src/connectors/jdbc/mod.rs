//! `jdbc`: a Postgres, MySQL/MariaDB or SQLite sink (upsert, append or an explicit statement) and a bounded
//! Postgres query source. What differs between the databases is `dialect.rs`.
//!
//! ```yaml
//! sinks:
//!   - name: stats
//!     type: jdbc
//!     url: postgres://weir:${PGPASSWORD}@db:5432/app   # or mysql://…/db, sqlite://file.db; or url_env
//!     table: user_stats                               # or schema.table
//!     mode: upsert                                    # upsert | append | sql
//!     key: [user_id]                                  # default: the primary key
//!     columns: {user_id: user, event_count: n, last_seen: ts}   # column: field (default: same names)
//!     batch_size: 1000          # waiting rows (after dedup by key) that start a write
//!     max_batch_size: 10000     # most rows per transaction; rows arriving during a write join it
//!     flush_interval: 200ms     # longest a row waits in memory
//!     retry: { backoff: 100ms, max_backoff: 10s, max_attempts: 11 }   # per batch (weir's RetryPolicy)
//!     pool_size: 2              # connections = writers; a key always uses the same one
//!     on_error: fail            # or skip: count in weir_node_record_errors_total and log
//! sources:
//!   - name: products
//!     type: jdbc
//!     url_env: DATABASE_URL
//!     query: SELECT id, name, category FROM products ORDER BY id
//!     fetch_size: 1000
//! ```
//!
//! # Guarantees
//! The sink is idempotent in upsert mode: it flushes at every barrier and `flush` returns only
//! once every row is committed, so a completed checkpoint means the rows are durable, and a
//! replay after a crash writes the same last value per key again. Rows with the same key are
//! merged while they wait (last write wins), and a key always goes through the same writer, so
//! per-key order holds across the `pool_size` connections. Append and `sql` modes are
//! at-least-once (a replay inserts again), unless the statement itself is idempotent.
//!
//! # Write path
//! Upsert (with `copy: true`, the default): per batch, one transaction that `COPY`s the rows into
//! a per-connection temporary staging table and runs one set-based
//! `INSERT … SELECT DISTINCT ON (key) … ORDER BY key, seq DESC ON CONFLICT … DO UPDATE`.
//! Append `COPY`s straight into the table. `copy: false` and `mode: sql` use statements with
//! text parameters cast to the column types. Connection errors retry the batch with backoff
//! (the pool replaces dead connections, so a database restart is survived); a data error
//! (constraint, invalid value) re-runs the batch row by row under savepoints, and only the
//! rejected rows go to `on_error`. Values are checked against the column types read from
//! `information_schema` before they are sent, so a missing field or a wrong type names the
//! record and the column.
//!
//! SQLite has no COPY: every batch is the multi-row statement path, in one `BEGIN IMMEDIATE`
//! transaction (writers queue for the database's one write lock), on WAL connections.
//!
//! MySQL/MariaDB has no COPY either: multi-row `INSERT … ON DUPLICATE KEY UPDATE` in key order,
//! one READ COMMITTED transaction per batch; `key` must be a unique index (there is no conflict
//! target to name).
//!
//! Credentials: the URL's password is never logged; error texts are scrubbed of it.

pub mod config;
mod dialect;
mod plan;
pub(crate) mod retry;
pub(crate) mod schema;
pub mod sink;
pub mod source;
mod sql;
mod types;

pub use config::{JdbcSinkConfig, JdbcSourceConfig};
pub use sink::JdbcSink;
pub use source::JdbcSource;

use crate::api::{Registry, SinkBox};

pub fn register(r: &mut Registry) {
    r.sink("jdbc", |cfg| {
        Ok(SinkBox::plain(JdbcSink::new(
            cfg.resolve::<JdbcSinkConfig>()?,
            cfg.name(),
        )))
    });
    r.source("jdbc", |cfg| {
        Ok(Box::new(JdbcSource::new(
            cfg.resolve::<JdbcSourceConfig>()?,
            cfg.name(),
        )))
    });
}
