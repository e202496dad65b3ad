//! One record's lookup: attempts with a timeout each, retries with backoff, and what the result
//! means for the record under the configured policies.

use std::time::Duration;

use serde_json::{Map, Value};

use super::clients::LookupClient;
use super::config::Policy;
use super::mapping::FieldMapping;
use super::metrics::LookupMetrics;
use crate::retry::RetryPolicy;

/// How a lookup ended, after retries.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Found(Value),
    NotFound,
    TimedOut {
        attempts: u32,
    },
    Failed {
        attempts: u32,
        message: String,
        /// The last attempt's error was a connection failure, 5xx or 429: the service, not the
        /// record, is at fault.
        retryable: bool,
    },
}

/// What happens to the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Emit the record with these fields set.
    Enrich(Map<String, Value>),
    Drop(String),
    /// `on_error`/`on_timeout: fail`. `transient` when the service failed (timeouts, connection
    /// failures, 5xx/429 after the retries): the worker fails into its restart strategy and the
    /// record is looked up again from the last checkpoint, as Flink's async I/O fails over.
    /// Otherwise the record itself cannot be looked up (a bad request, an undecodable answer, a
    /// missing key field) and a replay would meet it again: the job ends naming it.
    Fail {
        why: String,
        transient: bool,
    },
}

/// The record's fate: found keys are mapped, missing ones get null fields, failures follow
/// their policy.
pub fn resolve(
    outcome: &Outcome,
    mapping: &FieldMapping,
    on_timeout: Policy,
    on_error: Policy,
) -> Resolution {
    let (policy, why, transient) = match outcome {
        Outcome::Found(v) => return Resolution::Enrich(mapping.extract(v)),
        Outcome::NotFound => return Resolution::Enrich(mapping.nulls()),
        Outcome::TimedOut { attempts } => (
            on_timeout,
            format!("lookup timed out ({attempts} attempt(s))"),
            true,
        ),
        // No attempt: the record itself could not be looked up (e.g. a key field is missing).
        Outcome::Failed {
            attempts: 0,
            message,
            ..
        } => (on_error, message.clone(), false),
        Outcome::Failed {
            attempts,
            message,
            retryable,
        } => (
            on_error,
            format!("lookup failed ({attempts} attempt(s)): {message}"),
            *retryable,
        ),
    };
    match policy {
        Policy::Null => Resolution::Enrich(mapping.nulls()),
        Policy::Drop => Resolution::Drop(why),
        Policy::Fail => Resolution::Fail { why, transient },
    }
}

/// Runs the attempts. Runs in its own task, so its timeouts hold even while the operator is
/// blocked sending downstream.
pub async fn fetch(
    client: &dyn LookupClient,
    key: &[Value],
    timeout: Duration,
    retry: &RetryPolicy,
    metrics: &LookupMetrics,
) -> Outcome {
    let mut delays = retry.backoff();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let (retryable, outcome) = match tokio::time::timeout(timeout, client.lookup(key)).await {
            Ok(Ok(Some(v))) => return Outcome::Found(v),
            Ok(Ok(None)) => return Outcome::NotFound,
            Ok(Err(e)) => (
                e.retryable,
                Outcome::Failed {
                    attempts,
                    message: e.message,
                    retryable: e.retryable,
                },
            ),
            Err(_) => (true, Outcome::TimedOut { attempts }),
        };
        let Some(delay) = delays.next().filter(|_| retryable) else {
            return outcome;
        };
        metrics.retries.inc();
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::super::clients::LookupError;
    use super::super::mapping::ResponsePath;
    use super::*;

    fn mapping() -> FieldMapping {
        FieldMapping(vec![("n".into(), ResponsePath::parse("name"))])
    }

    #[test]
    fn policies_decide_failed_lookups() {
        let m = mapping();
        let t = Outcome::TimedOut { attempts: 3 };
        let e = Outcome::Failed {
            attempts: 1,
            message: "HTTP 500".into(),
            retryable: true,
        };
        assert_eq!(
            resolve(
                &Outcome::Found(json!({"name": "a"})),
                &m,
                Policy::Fail,
                Policy::Fail
            ),
            Resolution::Enrich(json!({"n": "a"}).as_object().unwrap().clone())
        );
        assert_eq!(
            resolve(&Outcome::NotFound, &m, Policy::Fail, Policy::Fail),
            Resolution::Enrich(json!({"n": null}).as_object().unwrap().clone())
        );
        assert_eq!(
            resolve(&t, &m, Policy::Null, Policy::Fail),
            Resolution::Enrich(m.nulls())
        );
        assert!(
            matches!(resolve(&t, &m, Policy::Drop, Policy::Fail), Resolution::Drop(w) if w.contains("timed out (3"))
        );
        // The service failed (5xx, timeouts): transient, a restart asks again.
        assert!(
            matches!(resolve(&e, &m, Policy::Null, Policy::Fail), Resolution::Fail { why, transient: true } if why.contains("HTTP 500"))
        );
        assert!(matches!(
            resolve(&t, &m, Policy::Fail, Policy::Null),
            Resolution::Fail {
                transient: true,
                ..
            }
        ));
        // The record cannot be looked up (a 400, no key field): a replay meets it again.
        let bad = Outcome::Failed {
            attempts: 1,
            message: "HTTP 400".into(),
            retryable: false,
        };
        assert!(matches!(
            resolve(&bad, &m, Policy::Null, Policy::Fail),
            Resolution::Fail {
                transient: false,
                ..
            }
        ));
        let no_key = Outcome::Failed {
            attempts: 0,
            message: "no field user".into(),
            retryable: false,
        };
        assert!(matches!(
            resolve(&no_key, &m, Policy::Null, Policy::Fail),
            Resolution::Fail { transient: false, why } if why == "no field user"
        ));
        assert!(matches!(
            resolve(&e, &m, Policy::Fail, Policy::Drop),
            Resolution::Drop(_)
        ));
    }

    /// Fails `failures` times, then answers.
    struct Flaky {
        calls: AtomicU32,
        failures: u32,
        retryable: bool,
        hang: bool,
    }

    #[async_trait::async_trait]
    impl LookupClient for Flaky {
        async fn lookup(&self, _key: &[Value]) -> Result<Option<Value>, LookupError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                if self.hang {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                return Err(LookupError {
                    message: "boom".into(),
                    retryable: self.retryable,
                });
            }
            Ok(Some(json!({"name": "ok"})))
        }
    }

    fn flaky(failures: u32, retryable: bool, hang: bool) -> Flaky {
        Flaky {
            calls: AtomicU32::new(0),
            failures,
            retryable,
            hang,
        }
    }

    fn retries(max: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: Some(max + 1),
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    #[tokio::test]
    async fn retries_until_an_answer_and_counts_them() {
        let m = LookupMetrics::detached();
        let c = flaky(2, true, false);
        let o = fetch(&c, &[], Duration::from_secs(1), &retries(3), &m).await;
        assert_eq!(o, Outcome::Found(json!({"name": "ok"})));
        assert_eq!(c.calls.load(Ordering::SeqCst), 3);
        assert_eq!(m.retries.get(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_and_never_retries_permanent_errors() {
        let m = LookupMetrics::detached();
        let c = flaky(10, true, false);
        let o = fetch(&c, &[], Duration::from_secs(1), &retries(2), &m).await;
        assert!(matches!(o, Outcome::Failed { attempts: 3, .. }), "{o:?}");
        let c = flaky(10, false, false);
        let o = fetch(&c, &[], Duration::from_secs(1), &retries(5), &m).await;
        assert!(matches!(o, Outcome::Failed { attempts: 1, .. }), "{o:?}");
    }

    #[tokio::test]
    async fn each_attempt_has_its_own_timeout() {
        let m = LookupMetrics::detached();
        let c = flaky(1, true, true);
        let o = fetch(&c, &[], Duration::from_millis(50), &retries(1), &m).await;
        assert_eq!(o, Outcome::Found(json!({"name": "ok"})));
        let c = flaky(5, true, true);
        let o = fetch(&c, &[], Duration::from_millis(50), &retries(1), &m).await;
        assert_eq!(o, Outcome::TimedOut { attempts: 2 });
    }
}
