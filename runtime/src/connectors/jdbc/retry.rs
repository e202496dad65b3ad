//! Which database errors are worth a retry, which are about the data, and how long to wait.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::config::RetryPolicy;

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
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => classify_sqlstate(&code),
            None => Failure::Fatal,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Failure::Transient,
        _ => Failure::Fatal,
    }
}

/// Delay before retry number `attempt` (0-based): `base · 2^attempt`, capped at `max`, with
/// "equal jitter" (a random point in the upper half) so that writers that failed together do
/// not retry together. `unit` is a random number in [0, 1).
pub fn backoff(p: &RetryPolicy, attempt: u32, unit: f64) -> Duration {
    let exp = p
        .base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(p.max);
    exp / 2 + exp.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

/// A random number in [0, 1) from the standard library's per-process random hash keys.
pub fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
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

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff(&p, 0, 0.0), Duration::from_millis(50));
        assert!(backoff(&p, 0, 0.999) < Duration::from_millis(100));
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(&p, 10, 0.0), Duration::from_millis(500));
        assert!(backoff(&p, 60, 1.0) <= Duration::from_secs(1));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
