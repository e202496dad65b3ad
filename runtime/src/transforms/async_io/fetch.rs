//! One record's lookup: attempts with a timeout each, retries with backoff, and what the result
//! means for the record under the configured policies.

use std::time::Duration;

use serde_json::{Map, Value};

use super::clients::LookupClient;
use super::config::{Policy, RetryConfig};
use super::mapping::FieldMapping;
use super::metrics::LookupMetrics;

/// How a lookup ended, after retries.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Found(Value),
    NotFound,
    TimedOut { attempts: u32 },
    Failed { attempts: u32, message: String },
}

/// What happens to the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Emit the record with these fields set.
    Enrich(Map<String, Value>),
    Drop(String),
    Fail(String),
}

/// The record's fate: found keys are mapped, missing ones get null fields, failures follow
/// their policy.
pub fn resolve(
    outcome: &Outcome,
    mapping: &FieldMapping,
    on_timeout: Policy,
    on_error: Policy,
) -> Resolution {
    let (policy, why) = match outcome {
        Outcome::Found(v) => return Resolution::Enrich(mapping.extract(v)),
        Outcome::NotFound => return Resolution::Enrich(mapping.nulls()),
        Outcome::TimedOut { attempts } => (
            on_timeout,
            format!("lookup timed out ({attempts} attempt(s))"),
        ),
        // No attempt: the record itself could not be looked up (e.g. a key field is missing).
        Outcome::Failed {
            attempts: 0,
            message,
        } => (on_error, message.clone()),
        Outcome::Failed { attempts, message } => (
            on_error,
            format!("lookup failed ({attempts} attempt(s)): {message}"),
        ),
    };
    match policy {
        Policy::Null => Resolution::Enrich(mapping.nulls()),
        Policy::Drop => Resolution::Drop(why),
        Policy::Fail => Resolution::Fail(why),
    }
}

/// Delay before retry `attempt` (0 = the first retry): `backoff × 2^attempt`, capped, then
/// scaled into [½, 1] by `jitter` ∈ [0, 1) so that retries of one burst spread out.
pub fn backoff_delay(retries: &RetryConfig, attempt: u32, jitter: f64) -> Duration {
    let base = retries.backoff.as_std();
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
    let capped = exp.min(retries.max_backoff.as_std());
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A cheap, well-spread number in [0, 1) from a seed (no need for a random generator crate).
fn jitter(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs the attempts. Runs in its own task, so its timeouts hold even while the operator is
/// blocked sending downstream.
pub async fn fetch(
    client: &dyn LookupClient,
    key: &[Value],
    timeout: Duration,
    retries: &RetryConfig,
    seed: u64,
    metrics: &LookupMetrics,
) -> Outcome {
    let mut attempt = 0u32;
    loop {
        let (retryable, outcome) = match tokio::time::timeout(timeout, client.lookup(key)).await {
            Ok(Ok(Some(v))) => return Outcome::Found(v),
            Ok(Ok(None)) => return Outcome::NotFound,
            Ok(Err(e)) => (
                e.retryable,
                Outcome::Failed {
                    attempts: attempt + 1,
                    message: e.message,
                },
            ),
            Err(_) => (
                true,
                Outcome::TimedOut {
                    attempts: attempt + 1,
                },
            ),
        };
        if !retryable || attempt >= retries.max {
            return outcome;
        }
        metrics.retries.inc();
        let delay = backoff_delay(retries, attempt, jitter(seed ^ u64::from(attempt)));
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;
    use weir_crds::Duration as D;

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
        assert!(
            matches!(resolve(&e, &m, Policy::Null, Policy::Fail), Resolution::Fail(w) if w.contains("HTTP 500"))
        );
        assert!(matches!(
            resolve(&e, &m, Policy::Fail, Policy::Drop),
            Resolution::Drop(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let r = RetryConfig {
            max: 10,
            backoff: D::from_millis(100),
            max_backoff: D::from_millis(1000),
        };
        let ms = |a, j| backoff_delay(&r, a, j).as_millis();
        assert_eq!(ms(0, 1.0), 100);
        assert_eq!(ms(1, 1.0), 200);
        assert_eq!(ms(3, 1.0), 800);
        assert_eq!(ms(4, 1.0), 1000);
        assert_eq!(ms(40, 1.0), 1000);
        assert_eq!(ms(1, 0.0), 100);
        for s in 0..100 {
            let j = jitter(s);
            assert!((0.0..1.0).contains(&j));
        }
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

    fn retries(max: u32) -> RetryConfig {
        RetryConfig {
            max,
            backoff: D::from_millis(1),
            max_backoff: D::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_until_an_answer_and_counts_them() {
        let m = LookupMetrics::detached();
        let c = flaky(2, true, false);
        let o = fetch(&c, &[], Duration::from_secs(1), &retries(3), 1, &m).await;
        assert_eq!(o, Outcome::Found(json!({"name": "ok"})));
        assert_eq!(c.calls.load(Ordering::SeqCst), 3);
        assert_eq!(m.retries.get(), 2);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_and_never_retries_permanent_errors() {
        let m = LookupMetrics::detached();
        let c = flaky(10, true, false);
        let o = fetch(&c, &[], Duration::from_secs(1), &retries(2), 1, &m).await;
        assert!(matches!(o, Outcome::Failed { attempts: 3, .. }), "{o:?}");
        let c = flaky(10, false, false);
        let o = fetch(&c, &[], Duration::from_secs(1), &retries(5), 1, &m).await;
        assert!(matches!(o, Outcome::Failed { attempts: 1, .. }), "{o:?}");
    }

    #[tokio::test]
    async fn each_attempt_has_its_own_timeout() {
        let m = LookupMetrics::detached();
        let c = flaky(1, true, true);
        let o = fetch(&c, &[], Duration::from_millis(50), &retries(1), 1, &m).await;
        assert_eq!(o, Outcome::Found(json!({"name": "ok"})));
        let c = flaky(5, true, true);
        let o = fetch(&c, &[], Duration::from_millis(50), &retries(1), 1, &m).await;
        assert_eq!(o, Outcome::TimedOut { attempts: 2 });
    }
}
