//! Which database errors are worth a retry (per dialect: `Dialect::classify_code`) and which are about the data. How long to wait and
//! how often is the node's `retry` setting (`crate::retry::RetryPolicy`, the one policy).

/// What a failed statement means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection or the server (restart, network, overload): retry the batch.
    Transient,
    /// A row's data (constraint, invalid value): find the row and apply `on_error`.
    Data,
    /// Anything else (missing table, syntax, permissions): retrying cannot help.
    Fatal,
}

/// Classifies by SQLSTATE (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub fn classify_sqlstate(code: &str) -> Failure {
    match code {
        // admin/crash shutdown, cannot connect now; serialization failure, deadlock;
        // lock not available; query cancelled (statement_timeout or a restart).
        "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "57014" => Failure::Transient,
        c if c.starts_with("08") || c.starts_with("53") => Failure::Transient,
        c if c.starts_with("22") || c.starts_with("23") => Failure::Data,
        _ => Failure::Fatal,
    }
}

pub fn classify(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => {
            use super::dialect::Dialect;
            // MySQL's `code()` is the SQLSTATE, too coarse (a lock wait timeout is HY000): its
            // error number tells.
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                return Dialect::Mysql.classify_code(&my.number().to_string());
            }
            let dialect = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                Dialect::Sqlite
            } else {
                Dialect::Postgres
            };
            match db.code() {
                Some(code) => dialect.classify_code(&code),
                None => Failure::Fatal,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Failure::Transient,
        _ => Failure::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sort_into_retry_data_and_fatal() {
        assert_eq!(classify_sqlstate("57P01"), Failure::Transient);
        assert_eq!(classify_sqlstate("08006"), Failure::Transient);
        assert_eq!(classify_sqlstate("53300"), Failure::Transient);
        assert_eq!(classify_sqlstate("23514"), Failure::Data); // check violation
        assert_eq!(classify_sqlstate("23502"), Failure::Data); // not null
        assert_eq!(classify_sqlstate("22P02"), Failure::Data); // invalid text representation
        assert_eq!(classify_sqlstate("42P01"), Failure::Fatal); // undefined table
        assert_eq!(classify_sqlstate("42P10"), Failure::Fatal); // no matching unique index
        assert_eq!(
            classify(&sqlx::Error::Io(std::io::Error::other("reset"))),
            Failure::Transient
        );
        assert_eq!(classify(&sqlx::Error::RowNotFound), Failure::Fatal);
    }
}
