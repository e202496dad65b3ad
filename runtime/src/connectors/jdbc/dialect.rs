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
    /// `mysql://` / `mariadb://`: multi-row `INSERT … ON DUPLICATE KEY UPDATE` in
    /// `READ COMMITTED` transactions, `?` parameters (one per occurrence) converted by the server
    /// to the column type, backquoted identifiers.
    Mysql,
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
                let u = url::Url::parse(url)
                    .map_err(|e| format!("not a URL ({e}): {}", redact(url)))?;
                if u.path().trim_matches('/').is_empty() {
                    return Err(format!(
                        "{}: names no database (mysql://user:password@host:port/database)",
                        redact(url)
                    ));
                }
                Ok(Dialect::Mysql)
            }
            Some(other) if url::Url::parse(url).is_ok() => Err(format!(
                "unsupported scheme {other:?}: use postgres://user:password@host:port/database, \
                 mysql://user:password@host:port/database or sqlite://path/to/file.db"
            )),
            _ => Err(format!(
                "not a URL: {} (postgres://…, mysql://… or sqlite://…)",
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
            Dialect::Mysql => "?".into(),
        }
    }

    /// The placeholder of parameter `n` in a multi-row `VALUES` list, where every parameter
    /// occurs once and in order. SQLite gets anonymous `?`s, which take positions 1, 2, … in
    /// order just as `?1`, `?2`, … did: sqlx asks SQLite for each parameter's name as it binds
    /// it, and SQLite looks a `?n` name up by a linear search of the statement's names, so
    /// binding a 1,000-row statement (3,000 parameters) was quadratic, 74 % of a SQLite sink's
    /// CPU (`perf`, the jdbc bench's 500,000 rows).
    pub fn values_placeholder(self, n: usize, sql_type: &str) -> String {
        match self {
            Dialect::Sqlite => "?".into(),
            _ => self.placeholder(n, sql_type),
        }
    }

    /// Whether a placeholder names its parameter's position (`$n`, `?n`), so a statement that
    /// uses a value twice binds it once; MySQL's `?` binds one value per occurrence.
    pub fn numbered_params(self) -> bool {
        self != Dialect::Mysql
    }

    /// An identifier quoted for this database: `"x"` (standard SQL) or `` `x` `` (MySQL, whose
    /// double quotes are strings unless the server runs with ANSI_QUOTES).
    pub fn quote_ident(self, s: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Sqlite => format!("\"{}\"", s.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", s.replace('`', "``")),
        }
    }

    /// Most parameters one statement may bind (SQLite: SQLITE_MAX_VARIABLE_NUMBER since 3.32).
    pub fn max_params(self) -> usize {
        match self {
            Dialect::Postgres => 65_535,
            Dialect::Sqlite => 32_766,
            // The prepared-statement protocol counts parameters in 16 bits.
            Dialect::Mysql => 65_535,
        }
    }

    /// What the sink checks values against, from the type the database reports: Postgres's
    /// `udt_name`, or SQLite's declared type read by its affinity rules
    /// (<https://www.sqlite.org/datatype3.html#determination_of_column_affinity>), with the
    /// common spellings of booleans, times, dates and JSON recognized first.
    pub fn column_kind(self, declared: &str) -> ColumnKind {
        match self {
            Dialect::Postgres => return ColumnKind::from_udt(declared),
            Dialect::Mysql => return mysql_column_kind(declared),
            Dialect::Sqlite => {}
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
    /// database's error code (SQLSTATE for Postgres, the extended result code for SQLite, the
    /// error number for MySQL/MariaDB).
    pub fn classify_code(self, code: &str) -> Failure {
        match self {
            Dialect::Mysql => classify_mysql(code.parse().unwrap_or(0)),
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

/// A MySQL `information_schema.COLUMNS.COLUMN_TYPE` (`bigint(20) unsigned`, `tinyint(1)`,
/// `varchar(64)`, `datetime(6)`, …) read as what the sink checks values against.
fn mysql_column_kind(column_type: &str) -> ColumnKind {
    let t = column_type.trim().to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or_default();
    let unsigned = t.contains("unsigned");
    match base {
        // BOOLEAN is an alias of TINYINT(1): written as 1/0.
        "tinyint" if t.starts_with("tinyint(1)") => ColumnKind::Flag,
        "bool" | "boolean" => ColumnKind::Flag,
        // Unsigned columns hold more than the signed type: the server checks the range.
        "tinyint" if !unsigned => ColumnKind::Int { bits: 8 },
        "smallint" if !unsigned => ColumnKind::Int { bits: 16 },
        "mediumint" | "int" | "integer" if !unsigned => ColumnKind::Int { bits: 32 },
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            ColumnKind::Int { bits: 64 }
        }
        "float" | "double" | "real" => ColumnKind::Float,
        "decimal" | "numeric" | "dec" | "fixed" => ColumnKind::Numeric,
        "datetime" | "timestamp" => ColumnKind::DateTime,
        "date" => ColumnKind::Date,
        "json" => ColumnKind::Json,
        // MariaDB's JSON is LONGTEXT with a json_valid check: strings as they are, objects and
        // arrays as JSON text (the check rejects what is not JSON, as a data error).
        "longtext" => ColumnKind::Any,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" => ColumnKind::Text,
        // A statement's parameter (MySQL reports no types): any scalar, booleans as 1/0.
        "" => ColumnKind::Any,
        // enum, set, time, binary, blobs, uuid, inet…: strings, converted by the server.
        _ => ColumnKind::Other,
    }
}

/// MySQL/MariaDB error numbers
/// (<https://mariadb.com/kb/en/mariadb-error-code-reference/>).
fn classify_mysql(number: u16) -> Failure {
    match number {
        // Too many connections, server shutdown, network read/write errors, lock wait timeout,
        // deadlock, query interrupted (a KILL or a restart), connection killed (MariaDB),
        // statement timeout (MariaDB max_statement_time, MySQL max_execution_time), read-only
        // (a failover in progress), client disconnected for inactivity (MySQL 8).
        1040
        | 1053
        | 1152..=1161
        | 1205
        | 1213
        | 1290
        | 1317
        | 1836
        | 1927
        | 1969
        | 3024
        | 4031 => Failure::Transient,
        // A row's data: NOT NULL, duplicate on another unique key, missing default, out of
        // range, truncated, incorrect value, too long, foreign keys, CHECK (MariaDB 4025,
        // MySQL 3819), invalid JSON, division by zero.
        1048 | 1062 | 1216 | 1217 | 1264 | 1265 | 1292 | 1364 | 1365 | 1366 | 1367 | 1406
        | 1411 | 1451 | 1452 | 1690 | 3140 | 3819 | 4025 => Failure::Data,
        // Unknown column (1054), no such table (1146), syntax, access denied, …
        _ => Failure::Fatal,
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
        assert_eq!(
            Dialect::from_url("mysql://u:p@h:3306/db"),
            Ok(Dialect::Mysql)
        );
        assert_eq!(Dialect::from_url("mariadb://h/db"), Ok(Dialect::Mysql));
        assert!(Dialect::from_url("mysql://u:hunter2@h:3306")
            .unwrap_err()
            .contains("names no database"));
        assert!(!Dialect::from_url("mysql://u:hunter2@h:3306")
            .unwrap_err()
            .contains("hunter2"));
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
        assert_eq!(Dialect::Sqlite.values_placeholder(3, "INTEGER"), "?");
        assert_eq!(Dialect::Postgres.values_placeholder(3, ""), "$3");
        assert!(Dialect::Sqlite.max_params() < Dialect::Postgres.max_params());
        assert_eq!(Dialect::Mysql.placeholder(3, "int"), "?");
        assert!(!Dialect::Mysql.numbered_params());
        assert_eq!(Dialect::Mysql.quote_ident("we`ird"), "`we``ird`");
        assert_eq!(Dialect::Postgres.quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn mysql_column_types_map_to_checks() {
        let k = |d: &str| Dialect::Mysql.column_kind(d);
        assert_eq!(k("tinyint(1)"), ColumnKind::Flag);
        assert_eq!(k("tinyint(4)"), ColumnKind::Int { bits: 8 });
        assert_eq!(k("int(10) unsigned"), ColumnKind::Int { bits: 64 });
        assert_eq!(k("int(11)"), ColumnKind::Int { bits: 32 });
        assert_eq!(k("bigint(20)"), ColumnKind::Int { bits: 64 });
        assert_eq!(k("varchar(64)"), ColumnKind::Text);
        assert_eq!(k("datetime(6)"), ColumnKind::DateTime);
        assert_eq!(k("timestamp"), ColumnKind::DateTime);
        assert_eq!(k("decimal(10,2)"), ColumnKind::Numeric);
        assert_eq!(k("double"), ColumnKind::Float);
        assert_eq!(k("longtext"), ColumnKind::Any);
        assert_eq!(k("enum('a','b')"), ColumnKind::Other);
        assert_eq!(k(""), ColumnKind::Any);
    }

    #[test]
    fn mysql_errors_by_number() {
        let c = |n: &str| Dialect::Mysql.classify_code(n);
        assert_eq!(c("1213"), Failure::Transient); // deadlock
        assert_eq!(c("1205"), Failure::Transient); // lock wait timeout
        assert_eq!(c("1927"), Failure::Transient); // connection killed
        assert_eq!(c("1054"), Failure::Fatal); // unknown column
        assert_eq!(c("1146"), Failure::Fatal); // no such table
        assert_eq!(c("1064"), Failure::Fatal); // syntax
        assert_eq!(c("1048"), Failure::Data); // NOT NULL
        assert_eq!(c("1406"), Failure::Data); // too long
        assert_eq!(c("4025"), Failure::Data); // CHECK
        assert_eq!(c("junk"), Failure::Fatal);
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
