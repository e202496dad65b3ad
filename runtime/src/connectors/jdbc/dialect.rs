//! The databases the `jdbc` connector speaks, chosen from the URL scheme, and everything that
//! differs between them as pure functions: parameter placeholders, the parameter limit, how a
//! declared column type maps to a [`ColumnKind`], and which errors are worth a retry. The rest
//! (plans, batching, dedup, key order, retries, the checkpoint contract) is one code path.

use super::config::redact;
use super::retry::Failure;
use super::types::ColumnKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `postgres://` / `postgresql://`: COPY fast path, typed `$n::type` parameters.
    Postgres,
    /// `sqlite://path` (or `sqlite:path`, `sqlite::memory:`): multi-row `INSERT … ON CONFLICT`
    /// in `BEGIN IMMEDIATE` transactions, `?n` parameters typed by column affinity.
    Sqlite,
}

impl Dialect {
    /// The dialect of a URL, or why weir cannot write to it.
    pub fn from_url(url: &str) -> Result<Dialect, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                url::Url::parse(url).map_err(|e| format!("not a URL ({e}): {}", redact(url)))?;
                Ok(Dialect::Postgres)
            }
            Some("sqlite") => {
                let path = url["sqlite:".len()..].trim_start_matches("//");
                if path.split('?').next().unwrap_or_default().is_empty() {
                    return Err(format!(
                        "{url}: names no database file (sqlite://path/to/file.db)"
                    ));
                }
                Ok(Dialect::Sqlite)
            }
            Some("mysql" | "mariadb") => {
                Err("MySQL/MariaDB is not supported yet: use a postgres:// or sqlite:// URL".into())
            }
            Some(other) if url::Url::parse(url).is_ok() => Err(format!(
                "unsupported scheme {other:?}: use postgres://user:password@host:port/database \
                 or sqlite://path/to/file.db"
            )),
            _ => Err(format!(
                "not a URL: {} (postgres://… or sqlite://…)",
                redact(url)
            )),
        }
    }

    /// The placeholder of parameter `n` (1-based) for a column of `sql_type`. Postgres casts the
    /// text value to the column type; SQLite converts it by the column's affinity.
    pub fn placeholder(self, n: usize, sql_type: &str) -> String {
        match self {
            Dialect::Postgres if sql_type.is_empty() => format!("${n}"),
            Dialect::Postgres => format!("${n}::{sql_type}"),
            Dialect::Sqlite => format!("?{n}"),
        }
    }

    /// Most parameters one statement may bind (SQLite: SQLITE_MAX_VARIABLE_NUMBER since 3.32).
    pub fn max_params(self) -> usize {
        match self {
            Dialect::Postgres => 65_535,
            Dialect::Sqlite => 32_766,
        }
    }

    /// What the sink checks values against, from the type the database reports: Postgres's
    /// `udt_name`, or SQLite's declared type read by its affinity rules
    /// (<https://www.sqlite.org/datatype3.html#determination_of_column_affinity>), with the
    /// common spellings of booleans, times, dates and JSON recognized first.
    pub fn column_kind(self, declared: &str) -> ColumnKind {
        if self == Dialect::Postgres {
            return ColumnKind::from_udt(declared);
        }
        let d = declared.to_ascii_uppercase();
        match d.as_str() {
            _ if d.contains("BOOL") => ColumnKind::Flag,
            _ if d.contains("DATETIME") || d.contains("TIMESTAMP") => ColumnKind::Timestamptz,
            "DATE" => ColumnKind::Date,
            "JSON" | "JSONB" => ColumnKind::Json,
            _ if d.contains("INT") => ColumnKind::Int { bits: 64 },
            _ if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") => ColumnKind::Text,
            _ if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") => {
                ColumnKind::Float
            }
            _ if d.contains("DEC") || d.contains("NUMERIC") => ColumnKind::Numeric,
            // BLOB or no type: no affinity, any scalar goes in as text.
            _ => ColumnKind::Any,
        }
    }

    /// Whether a failed statement is retried, is about a row's data, or is fatal, from the
    /// database's error code (SQLSTATE for Postgres, the extended result code for SQLite).
    pub fn classify_code(self, code: &str) -> Failure {
        match self {
            Dialect::Postgres => super::retry::classify_sqlstate(code),
            Dialect::Sqlite => match code.parse::<i32>().map(|c| c & 0xff) {
                // SQLITE_BUSY, SQLITE_LOCKED: another connection holds the write lock longer
                // than the busy timeout.
                Ok(5 | 6) => Failure::Transient,
                // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE.
                Ok(18 | 19 | 20 | 25) => Failure::Data,
                _ => Failure::Fatal,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_dialect_or_says_what_is_supported() {
        assert_eq!(Dialect::from_url("postgres://h/db"), Ok(Dialect::Postgres));
        assert_eq!(
            Dialect::from_url("postgresql://h/db"),
            Ok(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::from_url("sqlite://data/app.db"),
            Ok(Dialect::Sqlite)
        );
        assert_eq!(
            Dialect::from_url("sqlite:///tmp/app.db?mode=rw"),
            Ok(Dialect::Sqlite)
        );
        assert_eq!(Dialect::from_url("sqlite::memory:"), Ok(Dialect::Sqlite));
        assert!(Dialect::from_url("sqlite://")
            .unwrap_err()
            .contains("names no database file"));
        assert!(Dialect::from_url("mysql://h/db")
            .unwrap_err()
            .contains("MySQL"));
        assert!(Dialect::from_url("oracle://h/db")
            .unwrap_err()
            .contains("unsupported scheme \"oracle\""));
        assert!(Dialect::from_url("jdbc:oracle:thin:@h").is_err());
    }

    #[test]
    fn placeholders_and_limits_per_dialect() {
        assert_eq!(
            Dialect::Postgres.placeholder(3, "\"pg_catalog\".\"int8\""),
            "$3::\"pg_catalog\".\"int8\""
        );
        assert_eq!(Dialect::Sqlite.placeholder(3, "INTEGER"), "?3");
        assert!(Dialect::Sqlite.max_params() < Dialect::Postgres.max_params());
    }

    #[test]
    fn sqlite_declared_types_map_by_affinity() {
        let k = |d: &str| Dialect::Sqlite.column_kind(d);
        assert_eq!(k("INTEGER"), ColumnKind::Int { bits: 64 });
        assert_eq!(k("bigint"), ColumnKind::Int { bits: 64 });
        assert_eq!(k("VARCHAR(20)"), ColumnKind::Text);
        assert_eq!(k("DOUBLE PRECISION"), ColumnKind::Float);
        assert_eq!(k("DECIMAL(10,2)"), ColumnKind::Numeric);
        assert_eq!(k("BOOLEAN"), ColumnKind::Flag);
        assert_eq!(k("DATETIME"), ColumnKind::Timestamptz);
        assert_eq!(k("DATE"), ColumnKind::Date);
        assert_eq!(k(""), ColumnKind::Any);
        assert_eq!(k("BLOB"), ColumnKind::Any);
        assert_eq!(
            Dialect::Postgres.column_kind("int8"),
            ColumnKind::Int { bits: 64 }
        );
    }

    #[test]
    fn sqlite_busy_retries_and_constraints_are_data() {
        assert_eq!(Dialect::Sqlite.classify_code("5"), Failure::Transient);
        assert_eq!(Dialect::Sqlite.classify_code("517"), Failure::Transient); // BUSY_SNAPSHOT
        assert_eq!(Dialect::Sqlite.classify_code("1299"), Failure::Data); // NOT NULL
        assert_eq!(Dialect::Sqlite.classify_code("2067"), Failure::Data); // UNIQUE
        assert_eq!(Dialect::Sqlite.classify_code("1"), Failure::Fatal); // syntax, no table
        assert_eq!(Dialect::Postgres.classify_code("40P01"), Failure::Transient);
    }
}
