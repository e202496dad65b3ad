//! Connection settings and what the sink asks the database at open: the table's columns and
//! primary key, or the parameter types of an explicit statement.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Either, Executor, Statement, TypeInfo};

use super::config::{redact, TableName};
use super::plan::TableColumn;

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
pub fn pool(opts: PgConnectOptions, size: u32, acquire_timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(true)
        .connect_lazy_with(opts)
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
    .bind(table.quoted())
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
                super::config::quote_ident(&udt_schema),
                super::config::quote_ident(&udt)
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
