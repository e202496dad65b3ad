//! How a job meets failures: the restart strategy of its workers (`restart:`), and sinks that
//! may fail without stopping the job (`critical: false` with a circuit breaker and a
//! dead-letter target).
//!
//! The settings are flat structs (a `strategy` field, not a tagged enum) so that the StreamJob's
//! CRD schema stays structural; [`RestartSpec::resolve`] turns them into [`Restart`], and
//! `check` reports a setting that does not belong to the chosen strategy with its path.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pipeline::SpecError;
use crate::units::Duration;

/// Which restart strategy a worker follows (Flink's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartStrategy {
    /// Delays that grow from `backoff` by `multiplier` up to `max_backoff`, reset after
    /// `reset_after` of healthy running; unlimited attempts unless `attempts` is set.
    #[default]
    ExponentialDelay,
    /// Up to `attempts` restarts, each after `delay`.
    FixedDelay,
    /// Restarts after `delay`, until more than `max_failures` failures fall within `interval`.
    FailureRate,
    /// A failure ends the job.
    None,
}

impl RestartStrategy {
    pub fn name(self) -> &'static str {
        match self {
            RestartStrategy::ExponentialDelay => "exponential-delay",
            RestartStrategy::FixedDelay => "fixed-delay",
            RestartStrategy::FailureRate => "failure-rate",
            RestartStrategy::None => "none",
        }
    }
}

/// `restart:` as written. A failed worker restarts inside its process from its latest complete
/// checkpoint (sinks recover, sources seek). Default: `exponential-delay` with Flink ≥ 1.19's
/// values when checkpointing is on, `none` when it is off (a restart would replay from the
/// start).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RestartSpec {
    #[serde(default)]
    pub strategy: RestartStrategy,
    /// exponential-delay: the first delay (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// exponential-delay: the longest delay (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<Duration>,
    /// exponential-delay: each delay is the previous one times this (default 1.5, ≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// exponential-delay: each delay is scaled by a random factor in `[1 - jitter, 1]`, so
    /// workers that failed together do not restart together (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// exponential-delay: a worker that ran this long without failing starts over at
    /// `backoff` with its attempts forgiven (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after: Option<Duration>,
    /// exponential-delay and fixed-delay: restarts allowed before the job fails (exponential:
    /// counted since the last reset, default unlimited; fixed-delay: default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// fixed-delay and failure-rate: the wait before each restart (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// failure-rate: failures tolerated within `interval`; one more fails the job (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// failure-rate: the sliding window failures are counted over (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// exponential-delay with every default filled in: delays grow from `backoff` by `multiplier`
/// up to `max_backoff`, and start over after a worker ran `reset_after` without failing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialDelay {
    pub backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
    pub multiplier: f64,
    pub jitter: f64,
    pub reset_after: std::time::Duration,
    /// Restarts allowed without a healthy `reset_after` in between; `None`: unlimited.
    pub attempts: Option<u32>,
}

impl ExponentialDelay {
    /// Flink ≥ 1.19's default: 1s × 1.5 up to 1m, jitter 0.1, reset after 1h.
    pub const DEFAULT: ExponentialDelay = ExponentialDelay {
        backoff: std::time::Duration::from_secs(1),
        max_backoff: std::time::Duration::from_secs(60),
        multiplier: 1.5,
        jitter: 0.1,
        reset_after: std::time::Duration::from_secs(3600),
        attempts: None,
    };
}

/// A restart strategy with every default filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Restart {
    ExponentialDelay(ExponentialDelay),
    FixedDelay {
        attempts: u32,
        delay: std::time::Duration,
    },
    FailureRate {
        max_failures: u32,
        interval: std::time::Duration,
        delay: std::time::Duration,
    },
    None,
}

impl Restart {
    /// Flink ≥ 1.19's default: exponential-delay ([`ExponentialDelay::DEFAULT`]).
    pub const DEFAULT: Restart = Restart::ExponentialDelay(ExponentialDelay::DEFAULT);
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: &std::time::Duration| humantime::format_duration(*d).to_string();
        match self {
            Restart::ExponentialDelay(e) => {
                write!(
                    f,
                    "exponential-delay ({} × {} up to {}",
                    d(&e.backoff),
                    e.multiplier,
                    d(&e.max_backoff)
                )?;
                match e.attempts {
                    Some(n) => write!(f, ", {n} attempts)"),
                    None => write!(f, ", unlimited attempts)"),
                }
            }
            Restart::FixedDelay { attempts, delay } => {
                write!(f, "fixed-delay ({attempts} attempts, {} apart)", d(delay))
            }
            Restart::FailureRate {
                max_failures,
                interval,
                delay,
            } => write!(
                f,
                "failure-rate (at most {max_failures} failures per {}, {} apart)",
                d(interval),
                d(delay)
            ),
            Restart::None => f.write_str("none"),
        }
    }
}

impl RestartSpec {
    /// The strategy with its defaults.
    pub fn resolve(&self) -> Restart {
        let secs = std::time::Duration::from_secs;
        let or = |v: Option<Duration>, d: std::time::Duration| v.map_or(d, Duration::as_std);
        match self.strategy {
            RestartStrategy::ExponentialDelay => {
                let default = ExponentialDelay::DEFAULT;
                Restart::ExponentialDelay(ExponentialDelay {
                    backoff: or(self.backoff, default.backoff),
                    max_backoff: or(self.max_backoff, default.max_backoff),
                    multiplier: self.multiplier.unwrap_or(default.multiplier),
                    jitter: self.jitter.unwrap_or(default.jitter),
                    reset_after: or(self.reset_after, default.reset_after),
                    attempts: self.attempts,
                })
            }
            RestartStrategy::FixedDelay => Restart::FixedDelay {
                attempts: self.attempts.unwrap_or(1),
                delay: or(self.delay, secs(1)),
            },
            RestartStrategy::FailureRate => Restart::FailureRate {
                max_failures: self.max_failures.unwrap_or(1),
                interval: or(self.interval, secs(60)),
                delay: or(self.delay, secs(1)),
            },
            RestartStrategy::None => Restart::None,
        }
    }

    /// Settings that belong to another strategy, and values out of range; paths under `at`.
    pub fn check(&self, at: &str) -> Vec<SpecError> {
        use RestartStrategy::*;
        let mut errors = Vec::new();
        let s = self.strategy;
        let set: [(&str, bool, &[RestartStrategy]); 9] = [
            ("backoff", self.backoff.is_some(), &[ExponentialDelay]),
            (
                "max_backoff",
                self.max_backoff.is_some(),
                &[ExponentialDelay],
            ),
            ("multiplier", self.multiplier.is_some(), &[ExponentialDelay]),
            ("jitter", self.jitter.is_some(), &[ExponentialDelay]),
            (
                "reset_after",
                self.reset_after.is_some(),
                &[ExponentialDelay],
            ),
            (
                "attempts",
                self.attempts.is_some(),
                &[ExponentialDelay, FixedDelay],
            ),
            ("delay", self.delay.is_some(), &[FixedDelay, FailureRate]),
            ("max_failures", self.max_failures.is_some(), &[FailureRate]),
            ("interval", self.interval.is_some(), &[FailureRate]),
        ];
        for (field, given, allowed) in set {
            if given && !allowed.contains(&s) {
                let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
                errors.push(SpecError::new(
                    format!("{at}.{field}"),
                    format!("only for strategy {}, not {}", names.join(" or "), s.name()),
                ));
            }
        }
        if let Some(m) = self.multiplier {
            if !m.is_finite() || m < 1.0 {
                errors.push(SpecError::new(
                    format!("{at}.multiplier"),
                    format!("must be a number ≥ 1, got {m}"),
                ));
            }
        }
        if let Some(j) = self.jitter {
            if !(0.0..=1.0).contains(&j) {
                errors.push(SpecError::new(
                    format!("{at}.jitter"),
                    format!("must be between 0 and 1, got {j}"),
                ));
            }
        }
        if let Restart::ExponentialDelay(e) = self.resolve() {
            let (backoff, max_backoff) = (e.backoff, e.max_backoff);
            if backoff.is_zero() {
                errors.push(SpecError::new(
                    format!("{at}.backoff"),
                    "must be more than 0",
                ));
            }
            if max_backoff < backoff {
                errors.push(SpecError::new(
                    format!("{at}.max_backoff"),
                    format!(
                        "{} is shorter than backoff {}",
                        humantime::format_duration(max_backoff),
                        humantime::format_duration(backoff)
                    ),
                ));
            }
        }
        if self.interval.is_some_and(|i| i.as_millis() == 0) {
            errors.push(SpecError::new(
                format!("{at}.interval"),
                "must be more than 0",
            ));
        }
        if self.max_failures == Some(0) {
            errors.push(SpecError::new(
                format!("{at}.max_failures"),
                "must be at least 1 (use strategy: none to fail at the first failure)",
            ));
        }
        errors
    }
}

/// `circuit_breaker:` of a sink with `critical: false`. Calls are the sink's writes and flushes
/// (a flush at every checkpoint); the breaker opens after `failures` failed calls in a row, or
/// when at least `min_calls` calls within `window` failed at `error_rate` or more. While open,
/// the sink's records go to its `dead_letter` target; after `open_for` the next records are a
/// probe (half-open) on a fresh instance of the sink: success closes the breaker, failure opens
/// it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct CircuitBreakerSpec {
    /// Failed calls in a row that open the breaker.
    pub failures: u32,
    /// Share of failed calls within `window` that opens the breaker (0 < rate ≤ 1).
    pub error_rate: f64,
    /// The sliding window of `error_rate`.
    pub window: Duration,
    /// Calls within `window` before `error_rate` counts.
    pub min_calls: u32,
    /// How long the breaker stays open before a probe.
    pub open_for: Duration,
    /// A write or flush that takes longer than this counts as failed (and is abandoned), so a
    /// hanging system cannot hold the job back.
    pub call_timeout: Duration,
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        CircuitBreakerSpec {
            failures: 5,
            error_rate: 0.5,
            window: Duration::from_secs(60),
            min_calls: 10,
            open_for: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
        }
    }
}

impl CircuitBreakerSpec {
    pub fn check(&self, at: &str) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.failures == 0 {
            errors.push(SpecError::new(
                format!("{at}.failures"),
                "must be at least 1",
            ));
        }
        if !(self.error_rate > 0.0 && self.error_rate <= 1.0) {
            errors.push(SpecError::new(
                format!("{at}.error_rate"),
                format!("must be above 0 and at most 1, got {}", self.error_rate),
            ));
        }
        for (field, d) in [
            ("window", self.window),
            ("open_for", self.open_for),
            ("call_timeout", self.call_timeout),
        ] {
            if d.as_millis() == 0 {
                errors.push(SpecError::new(
                    format!("{at}.{field}"),
                    "must be more than 0",
                ));
            }
        }
        errors
    }
}

/// `dead_letter:` of a sink with `critical: false`: another sink, given by its `type` and
/// settings as in `sinks:` (e.g. `{type: filesystem, path: ./dead, format: json}` or a `kafka`
/// topic). It receives `{"reason", "sink", "worker", "failed_at", "record"}` for every record
/// the sink could not take, and commits with the job's checkpoints like any sink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct DeadLetterSpec {
    #[serde(rename = "type")]
    pub kind: String,
    /// The dead-letter sink's own settings.
    #[serde(flatten)]
    #[schemars(skip)]
    pub config: serde_json::Map<String, serde_json::Value>,
}
