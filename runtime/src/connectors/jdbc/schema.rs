//! Connection settings and what the sink asks the database at open: the table's columns and
//! primary key (and, for MySQL, its unique indexes), or the parameter types of an explicit
//! statement.

use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Either, Executor, Statement, TypeInfo};

use super::config::{redact, TableName};
use super::dialect::Dialect;
use super::plan::TableColumn;

/// The sink's connections, of the dialect its URL names.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
    Mysql(MySqlPool),
}

impl Pool {
    /// A lazy pool of `size` connections for `url` (nothing connects yet).
    pub async fn open(url: &str, size: u32, acquire_timeout: Duration) -> Result<Pool, String> {
        Ok(match Dialect::from_url(url)? {
            Dialect::Postgres => {
                Pool::Postgres(pool(connect_options(url)?, size, acquire_timeout).await)
            }
            Dialect::Sqlite => Pool::Sqlite(sqlite_pool(url, size, acquire_timeout)?),
            Dialect::Mysql => Pool::Mysql(mysql_pool(url, size, acquire_timeout).await?),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Mysql(_) => Dialect::Mysql,
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
            Pool::Mysql(p) => p.close().await,
        }
    }
}

/// SQLite connections: the file must exist (a sink writes to a table someone created), WAL so
/// readers never block the writers, `synchronous = FULL` so a committed batch survives a power
/// loss, and writers that wait for each other's write lock up to `acquire_timeout` (then the
/// batch is retried by the `retry` policy).
fn sqlite_pool(url: &str, size: u32, acquire_timeout: Duration) -> Result<SqlitePool, String> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| format!("invalid URL {}: {e}", redact(url)))?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(acquire_timeout);
    Ok(SqlitePoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(opts))
}

/// Columns in table order and the primary key columns (SQLite); empty columns when there is no
/// such table. Generated and hidden columns are never written by default.
pub async fn sqlite_table_columns(
    conn: &mut SqliteConnection,
    table: &TableName,
) -> sqlx::Result<(Vec<TableColumn>, Vec<String>)> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1, ?2) ORDER BY cid",
    )
    .bind(&table.name)
    .bind(table.schema.as_deref().unwrap_or("main"))
    .fetch_all(conn)
    .await?;
    let mut key: Vec<(i64, String)> = rows
        .iter()
        .filter(|r| r.2 > 0)
        .map(|r| (r.2, r.0.clone()))
        .collect();
    key.sort();
    let columns = rows
        .into_iter()
        .map(|(name, declared, _, hidden)| TableColumn {
            name,
            sql_type: declared.clone(),
            udt: declared,
            generated: hidden != 0,
        })
        .collect();
    Ok((columns, key.into_iter().map(|(_, k)| k).collect()))
}

/// How many parameters SQLite counts in `sql` (it reports no types). Preparing also checks
/// the statement: its table, columns and syntax.
pub async fn sqlite_param_count(conn: &mut SqliteConnection, sql: &str) -> sqlx::Result<usize> {
    let stmt = conn.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
    Ok(count(stmt.parameters()))
}

/// As [`sqlite_param_count`], on MySQL (which reports no useful types either).
pub async fn mysql_param_count(conn: &mut MySqlConnection, sql: &str) -> sqlx::Result<usize> {
    let stmt = conn.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
    Ok(count(stmt.parameters()))
}

fn count<T>(params: Option<Either<&[T], usize>>) -> usize {
    match params {
        Some(Either::Right(n)) => n,
        Some(Either::Left(types)) => types.len(),
        None => 0,
    }
}

/// MySQL/MariaDB connections. Every session runs in UTC (sqlx's default `time_zone`, which
/// DATETIME values are written in), with the server's `sql_mode` kept but strict (a value that
/// does not fit is an error, not a silent truncation) and without sqlx's PIPES_AS_CONCAT (a
/// user's statement means what it means in MySQL), in READ COMMITTED: an upsert then takes
/// record locks on the keys it touches and no gap locks on a primary key, so writers of
/// disjoint keys do not block each other.
async fn mysql_pool(url: &str, size: u32, acquire_timeout: Duration) -> Result<MySqlPool, String> {
    let opts = MySqlConnectOptions::from_str(url)
        .map_err(|e| format!("invalid URL {}: {e}", redact(url)))?
        .pipes_as_concat(false)
        .timezone(Some("+00:00".to_string()));
    let peers = peers(opts.get_host(), opts.get_port()).await;
    Ok(MySqlPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(true)
        .after_connect(move |conn, _| {
            let peers = peers.clone();
            Box::pin(async move {
                disable_nagle(&peers);
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                conn.execute(
                    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')",
                )
                .await?;
                Ok(())
            })
        })
        .connect_lazy_with(opts))
}

/// Columns in table order, the primary key, and the columns of every unique index (MySQL);
/// empty columns when there is no such table. `schema.table` names a database; a bare name is
/// looked up in the URL's database.
pub async fn mysql_table_columns(
    conn: &mut MySqlConnection,
    table: &TableName,
) -> sqlx::Result<(Vec<TableColumn>, Vec<String>, Vec<Vec<String>>)> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                CAST(EXTRA LIKE '%GENERATED%' AS SIGNED) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table.schema.as_deref())
    .bind(&table.name)
    .fetch_all(&mut *conn)
    .await?;
    let columns = rows
        .into_iter()
        .map(|(name, column_type, generated)| TableColumn {
            name,
            sql_type: column_type.clone(),
            udt: column_type,
            generated: generated != 0,
        })
        .collect();
    let index_columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) \
         FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(table.schema.as_deref())
    .bind(&table.name)
    .fetch_all(conn)
    .await?;
    let mut unique: Vec<(String, Vec<String>)> = Vec::new();
    for (index, column) in index_columns {
        match unique.last_mut() {
            Some((name, cols)) if *name == index => cols.push(column),
            _ => unique.push((index, vec![column])),
        }
    }
    let primary = unique
        .iter()
        .find(|(name, _)| name == "PRIMARY")
        .map(|(_, cols)| cols.clone())
        .unwrap_or_default();
    Ok((
        columns,
        primary,
        unique.into_iter().map(|(_, cols)| cols).collect(),
    ))
}

/// Options for every connection: UTC and ISO dates (the source parses text results), and no
/// NOTICE chatter (`CREATE TEMP TABLE IF NOT EXISTS` would send one per batch).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, String> {
    let opts =
        PgConnectOptions::from_str(url).map_err(|e| format!("invalid URL {}: {e}", redact(url)))?;
    Ok(opts.application_name("weir").options([
        ("client_min_messages", "warning"),
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO"),
    ]))
}

/// A pool that connects on demand, so that open succeeds only once a connection does (the
/// caller retries), and replaces connections lost to a database restart.
pub async fn pool(opts: PgConnectOptions, size: u32, acquire_timeout: Duration) -> PgPool {
    let peers = peers(opts.get_host(), opts.get_port()).await;
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(true)
        .after_connect(move |_, _| {
            let peers = peers.clone();
            Box::pin(async move {
                disable_nagle(&peers);
                Ok(())
            })
        })
        .connect_lazy_with(opts)
}

/// The addresses a host name resolves to (for [`disable_nagle`]).
async fn peers(host: &str, port: u16) -> Arc<Vec<SocketAddr>> {
    Arc::new(
        tokio::net::lookup_host((host, port))
            .await
            .map(|a| a.collect())
            .unwrap_or_default(),
    )
}

/// Sets TCP_NODELAY on this process's sockets connected to `peers`.
///
/// sqlx 0.9.0 stopped setting it (transact-rs/sqlx#4335; fixed by #4336, not released yet), and
/// exposes no socket (for Postgres and MySQL alike). Without it every COPY stalls ~40 ms: the 5-byte CopyDone waits, by Nagle's
/// algorithm, for the ACK of the data before it, which the server delays. Remove once sqlx sets
/// it again.
pub fn disable_nagle(peers: &[SocketAddr]) {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the stream only borrows the descriptor (ManuallyDrop never closes it); if it
        // is not a socket, or was closed and reused meanwhile, getpeername fails or names
        // another peer and nothing is changed.
        let stream = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
        if stream.peer_addr().is_ok_and(|p| peers.contains(&p)) {
            let _ = stream.set_nodelay(true);
        }
    }
}

/// The table's schema and name as the server resolves them (search_path for an unqualified
/// name); `None` when it does not exist.
async fn resolve_table(
    conn: &mut PgConnection,
    table: &TableName,
) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = to_regclass($1)",
    )
    .bind(table.quoted(Dialect::Postgres))
    .fetch_optional(conn)
    .await
}

/// Columns in table order and the primary key columns; empty columns when there is no such
/// table.
pub async fn table_columns(
    conn: &mut PgConnection,
    table: &TableName,
) -> sqlx::Result<(Vec<TableColumn>, Vec<String>)> {
    let Some((schema, name)) = resolve_table(conn, table).await? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let rows = sqlx::query_as::<_, (String, String, String, bool)>(
        "SELECT column_name::text, udt_schema::text, udt_name::text, \
                (is_generated <> 'NEVER' OR coalesce(identity_generation, '') = 'ALWAYS') \
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 \
         ORDER BY ordinal_position",
    )
    .bind(&schema)
    .bind(&name)
    .fetch_all(&mut *conn)
    .await?;
    let columns = rows
        .into_iter()
        .map(|(name, udt_schema, udt, generated)| TableColumn {
            sql_type: format!(
                "{}.{}",
                Dialect::Postgres.quote_ident(&udt_schema),
                Dialect::Postgres.quote_ident(&udt)
            ),
            name,
            udt,
            generated,
        })
        .collect();
    let key = sqlx::query_scalar::<_, String>(
        "SELECT kcu.column_name::text FROM information_schema.table_constraints tc \
         JOIN information_schema.key_column_usage kcu \
           ON kcu.constraint_name = tc.constraint_name AND kcu.constraint_schema = tc.constraint_schema \
          AND kcu.table_name = tc.table_name \
         WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = $1 AND tc.table_name = $2 \
         ORDER BY kcu.ordinal_position",
    )
    .bind(&schema)
    .bind(&name)
    .fetch_all(conn)
    .await?;
    Ok((columns, key))
}

/// The types Postgres infers for `$1…$n` of `sql`, as (cast type, type name).
pub async fn param_types(
    conn: &mut PgConnection,
    sql: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    let stmt = conn.prepare(AssertSqlSafe(sql).into_sql_str()).await?;
    let types = match stmt.parameters() {
        Some(Either::Left(types)) => types
            .iter()
            .map(|t| (t.name().to_string(), t.name().to_ascii_lowercase()))
            .collect(),
        _ => Vec::new(),
    };
    Ok(types)
}

use sqlx::SqlSafeStr as _;
