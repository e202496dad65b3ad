//! The one retry policy: every connector and async I/O read the same settings (`backoff`,
//! `max_backoff`, `multiplier`, `jitter`, `max_attempts`, `max_elapsed`) and retry through
//! [`backon`] with the delays computed here.
//!
//! Why not backon's own `ExponentialBuilder`: its jitter is all or nothing (a random extra in
//! `[0, delay)`), and the settings follow Flink's restart strategies, where `jitter` is a factor.
//! The delay sequence is a pure function ([`RetryPolicy::delay`]); backon runs the loop.

use std::time::{Duration, Instant};

use serde::Deserialize;
use weir_crds::units::Duration as SpecDuration;

/// How a failed operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "RawRetryPolicy")]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub backoff: Duration,
    /// No delay is longer than this.
    pub max_backoff: Duration,
    /// Each delay is the previous one times this (≥ 1).
    pub multiplier: f64,
    /// Each delay is scaled by a random factor in `[1 - jitter, 1]`, so writers that failed
    /// together do not retry together (0 ≤ jitter ≤ 1).
    pub jitter: f64,
    /// Attempts in all, the first included; `None`: no limit by count.
    pub max_attempts: Option<u32>,
    /// No retry starts after this much time since the first attempt; `None`: no limit by time.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
            max_attempts: Some(10),
            max_elapsed: None,
        }
    }
}

/// The settings as written; every field may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryPolicy {
    backoff: Option<SpecDuration>,
    max_backoff: Option<SpecDuration>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
    max_attempts: Option<u32>,
    max_elapsed: Option<SpecDuration>,
}

impl TryFrom<RawRetryPolicy> for RetryPolicy {
    type Error = String;

    fn try_from(raw: RawRetryPolicy) -> Result<Self, String> {
        let d = RetryPolicy::default();
        let policy = RetryPolicy {
            backoff: raw.backoff.map_or(d.backoff, SpecDuration::as_std),
            max_backoff: raw.max_backoff.map_or(d.max_backoff, SpecDuration::as_std),
            multiplier: raw.multiplier.unwrap_or(d.multiplier),
            jitter: raw.jitter.unwrap_or(d.jitter),
            max_attempts: raw.max_attempts.or(d.max_attempts),
            max_elapsed: raw.max_elapsed.map(SpecDuration::as_std).or(d.max_elapsed),
        };
        policy.check()?;
        Ok(policy)
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: Some(1),
            ..Self::default()
        }
    }

    /// The rules a policy must keep; the message names the setting.
    pub fn check(&self) -> Result<(), String> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(format!(
                "multiplier: must be a number ≥ 1, got {}",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "jitter: must be between 0 and 1, got {}",
                self.jitter
            ));
        }
        if self.max_backoff < self.backoff {
            return Err(format!(
                "max_backoff: {} is shorter than backoff {}",
                humantime::format_duration(self.max_backoff),
                humantime::format_duration(self.backoff)
            ));
        }
        if self.max_attempts == Some(0) {
            return Err("max_attempts: must be at least 1 (the first attempt counts)".into());
        }
        Ok(())
    }

    /// The delay before retry number `retry` (0: the first retry), with `unit` ∈ [0, 1) the
    /// random draw for the jitter. Pure.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let grown = self.backoff.as_secs_f64() * self.multiplier.powi(retry.min(1_000) as i32);
        let capped = grown.min(self.max_backoff.as_secs_f64());
        let scale = 1.0 - self.jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * scale).max(0.0))
    }

    /// Whether another attempt may start after `attempts` attempts over `elapsed`. Pure.
    pub fn allows(&self, attempts: u32, elapsed: Duration) -> bool {
        self.max_attempts.is_none_or(|max| attempts < max)
            && self.max_elapsed.is_none_or(|max| elapsed < max)
    }

    /// A fresh delay sequence for one operation.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            retries: 0,
            started: Instant::now(),
        }
    }
}

/// The delays of one operation's retries; ends when the policy allows no more attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    retries: u32,
    started: Instant,
}

impl Backoff {
    /// Retries handed out so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let attempts = self.retries + 1;
        if !self.policy.allows(attempts, self.started.elapsed()) {
            return None;
        }
        let d = self.policy.delay(self.retries, fastrand::f64());
        self.retries += 1;
        Some(d)
    }
}

/// So `operation.retry(policy).when(is_transient).await` works (backon's `Retryable`).
impl backon::BackoffBuilder for RetryPolicy {
    type Backoff = Backoff;

    fn build(self) -> Backoff {
        self.backoff()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RetryPolicy, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let p = RetryPolicy {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let ms = |r| p.delay(r, 0.7).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4)],
            [100, 200, 400, 800, 1000]
        );
        assert_eq!(ms(u32::MAX), 1000);
    }

    #[test]
    fn jitter_scales_each_delay_into_its_band() {
        let p = RetryPolicy {
            jitter: 0.1,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(100));
        let low = p.delay(0, 0.999_999);
        assert!(low >= Duration::from_millis(90) && low < Duration::from_millis(91));
    }

    #[test]
    fn attempts_and_elapsed_time_both_bound_the_sequence() {
        let p = RetryPolicy {
            max_attempts: Some(3),
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff().count(), 2, "3 attempts = 2 retries");
        assert!(RetryPolicy::none().backoff().next().is_none());
        let timed = RetryPolicy {
            max_attempts: None,
            max_elapsed: Some(Duration::from_secs(5)),
            ..RetryPolicy::default()
        };
        assert!(timed.allows(1_000, Duration::from_secs(4)));
        assert!(!timed.allows(1, Duration::from_secs(5)));
    }

    #[test]
    fn settings_default_field_by_field_and_bad_ones_name_the_setting() {
        let p = parse("backoff: 1s\nmax_backoff: 1m").unwrap();
        assert_eq!(p.backoff, Duration::from_secs(1));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.max_attempts, Some(10));
        for (yaml, needle) in [
            ("multiplier: 0.5", "multiplier"),
            ("multiplier: .nan", "multiplier"),
            ("jitter: 2", "jitter"),
            ("backoff: 10s\nmax_backoff: 1s", "max_backoff"),
            ("max_attempts: 0", "max_attempts"),
            ("retries: 3", "unknown field"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[tokio::test]
    async fn backon_retries_transient_errors_with_these_delays() {
        use backon::Retryable;
        let policy = RetryPolicy {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_attempts: Some(4),
            ..RetryPolicy::default()
        };
        let calls = std::sync::atomic::AtomicU32::new(0);
        let result: Result<(), &str> = (|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err("down")
        })
        .retry(policy)
        .when(|e| *e == "down")
        .await;
        assert_eq!(result, Err("down"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
