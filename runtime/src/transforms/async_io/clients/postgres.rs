//! Postgres lookups: a query with `$1…$n` bound to the key's values (converted to the types
//! Postgres infers for the parameters), the first row's columns as a JSON object.

use serde_json::{Map, Value};
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Column, Either, Executor, Row, SqlSafeStr, Statement, TypeInfo};

use super::{LookupClient, LookupError};
use crate::connectors::jdbc::retry::{self, Failure};

pub struct PgLookup {
    pool: PgPool,
    query: String,
    param_types: Vec<String>,
}

impl PgLookup {
    pub async fn connect(url: &str, query: &str, pool_size: u32) -> Result<Self, String> {
        let pool = pool(url, pool_size).await?;
        let param_types = prepare(&pool, query).await?;
        Ok(PgLookup {
            pool,
            query: query.to_string(),
            param_types,
        })
    }
}

pub async fn pool(url: &str, size: u32) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(size)
        .connect(url)
        .await
        // The URL may hold a password: never put it in a message.
        .map_err(|e| format!("connecting to Postgres: {e}"))
}

/// Prepares the query (the server checks its tables and columns); returns its parameter types.
pub async fn prepare(pool: &PgPool, query: &str) -> Result<Vec<String>, String> {
    let statement = pool
        .prepare(AssertSqlSafe(query.to_string()).into_sql_str())
        .await
        .map_err(|e| format!("client.query: {e}"))?;
    Ok(match statement.parameters() {
        Some(Either::Left(types)) => types.iter().map(|t| t.name().to_string()).collect(),
        _ => Vec::new(),
    })
}

/// A key value converted to a parameter of Postgres type `ty`.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Json(Value),
}

pub fn to_param(v: &Value, ty: &str) -> Result<Param, String> {
    if v.is_null() {
        return Ok(Param::Null);
    }
    let int = |v: &Value| -> Option<i64> {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let float = |v: &Value| -> Option<f64> {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let bad = || format!("{v} does not convert to Postgres {ty}");
    Ok(match ty {
        "BOOL" => Param::Bool(v.as_bool().ok_or_else(bad)?),
        "INT2" => Param::I16(int(v).and_then(|i| i.try_into().ok()).ok_or_else(bad)?),
        "INT4" => Param::I32(int(v).and_then(|i| i.try_into().ok()).ok_or_else(bad)?),
        "INT8" => Param::I64(int(v).ok_or_else(bad)?),
        "FLOAT4" => Param::F32(float(v).ok_or_else(bad)? as f32),
        "FLOAT8" => Param::F64(float(v).ok_or_else(bad)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "UNKNOWN" => Param::Text(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        "JSON" | "JSONB" => Param::Json(v.clone()),
        other => {
            return Err(format!(
                "parameters of type {other} are not supported; cast in the query, e.g. $1::text"
            ))
        }
    })
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    p: Param,
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    match p {
        Param::Null => q.bind(None::<String>),
        Param::Bool(b) => q.bind(b),
        Param::I16(i) => q.bind(i),
        Param::I32(i) => q.bind(i),
        Param::I64(i) => q.bind(i),
        Param::F32(f) => q.bind(f),
        Param::F64(f) => q.bind(f),
        Param::Text(s) => q.bind(s),
        Param::Json(v) => q.bind(sqlx::types::Json(v)),
    }
}

/// A row's columns as JSON, by their Postgres types.
fn row_to_json(row: &PgRow) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_info().name().to_string();
        let err = |e: sqlx::Error| format!("column {:?} ({ty}): {e}", col.name());
        let v = match ty.as_str() {
            "BOOL" => row
                .try_get::<Option<bool>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "INT2" => row
                .try_get::<Option<i16>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "INT4" => row
                .try_get::<Option<i32>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "INT8" => row
                .try_get::<Option<i64>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "FLOAT4" => row
                .try_get::<Option<f32>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "FLOAT8" => row
                .try_get::<Option<f64>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => row
                .try_get::<Option<String>, _>(i)
                .map_err(err)?
                .map(Value::from),
            "JSON" | "JSONB" => row
                .try_get::<Option<sqlx::types::Json<Value>>, _>(i)
                .map_err(err)?
                .map(|j| j.0),
            "TIMESTAMPTZ" => row
                .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)
                .map_err(err)?
                .map(|t| Value::from(t.to_rfc3339())),
            "TIMESTAMP" => row
                .try_get::<Option<chrono::NaiveDateTime>, _>(i)
                .map_err(err)?
                .map(|t| Value::from(t.to_string())),
            "DATE" => row
                .try_get::<Option<chrono::NaiveDate>, _>(i)
                .map_err(err)?
                .map(|t| Value::from(t.to_string())),
            other => {
                return Err(format!(
                    "column {:?} has type {other}, which lookups do not read; cast it in the \
                     query (e.g. {0}::text)",
                    col.name()
                ))
            }
        };
        m.insert(col.name().to_string(), v.unwrap_or(Value::Null));
    }
    Ok(m)
}

#[async_trait::async_trait]
impl LookupClient for PgLookup {
    async fn lookup(&self, key: &[Value]) -> Result<Option<Value>, LookupError> {
        let mut q = sqlx::query(AssertSqlSafe(self.query.clone()));
        for (i, ty) in self.param_types.iter().enumerate() {
            let v = key.get(i).unwrap_or(&Value::Null);
            let p = to_param(v, ty)
                .map_err(|e| LookupError::permanent(format!("parameter ${}: {e}", i + 1)))?;
            q = bind(q, p);
        }
        let row = q.fetch_optional(&self.pool).await.map_err(|e| match e {
            // A server shutting down or restarting answers with an error too (57P01 when it is
            // stopped): that one passes, as the jdbc sink knows.
            sqlx::Error::Database(_) if retry::classify(&e) == Failure::Transient => {
                LookupError::retryable(format!("query: {e}"))
            }
            sqlx::Error::Database(_) | sqlx::Error::ColumnDecode { .. } => {
                LookupError::permanent(format!("query: {e}"))
            }
            other => LookupError::retryable(format!("query: {other}")),
        })?;
        match row {
            None => Ok(None),
            Some(r) => row_to_json(&r)
                .map(|m| Some(Value::Object(m)))
                .map_err(LookupError::permanent),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_values_convert_to_parameter_types() {
        assert_eq!(to_param(&json!(7), "INT8"), Ok(Param::I64(7)));
        assert_eq!(to_param(&json!("7"), "INT4"), Ok(Param::I32(7)));
        assert_eq!(to_param(&json!(7), "TEXT"), Ok(Param::Text("7".into())));
        assert_eq!(to_param(&json!("u7"), "TEXT"), Ok(Param::Text("u7".into())));
        assert_eq!(to_param(&json!(null), "INT8"), Ok(Param::Null));
        assert_eq!(to_param(&json!(1.5), "FLOAT8"), Ok(Param::F64(1.5)));
        assert!(to_param(&json!("u7"), "INT8").unwrap_err().contains("INT8"));
        assert!(to_param(&json!(70000), "INT2").is_err());
        assert!(to_param(&json!("x"), "UUID")
            .unwrap_err()
            .contains("::text"));
    }
}
