//! The restart strategy of a worker as a pure decision: [`Restarts::on_failure`] says whether a
//! worker that just failed restarts, and after how long, from the strategy (`restart:` in the
//! spec, Flink's four strategies) and the failures so far. Time comes in as an argument, so
//! the strategies are tested without waiting.
//!
//! The exponential delays are the one retry policy's ([`RetryPolicy::delay`]): `jitter`
//! scales a delay into `[1 - jitter, 1]` of it (Flink adds ± jitter; weir never exceeds
//! `max_backoff`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use weir_crds::Restart;

use crate::retry::RetryPolicy;

/// What to do about a failure.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Restart after `delay`; `attempt` counts the restarts the strategy has allowed since its
    /// last reset (1 for the first).
    Restart { delay: Duration, attempt: u32 },
    /// The strategy is exhausted: the job fails.
    GiveUp { why: String },
}

/// A worker's failures as its strategy counts them.
#[derive(Clone, Debug)]
pub struct Restarts {
    strategy: Restart,
    /// Restarts since the last reset (exponential-delay) or in all (fixed-delay).
    attempts: u32,
    /// When the last restart's delay ended: the worker has been healthy since.
    running_since: Option<Instant>,
    /// Failure times within the window (failure-rate).
    recent: VecDeque<Instant>,
}

impl Restarts {
    pub fn new(strategy: Restart) -> Self {
        Restarts {
            strategy,
            attempts: 0,
            running_since: None,
            recent: VecDeque::new(),
        }
    }

    pub fn strategy(&self) -> &Restart {
        &self.strategy
    }

    /// A failure at `now`; `unit` ∈ [0, 1) is the random draw for the jitter.
    pub fn on_failure(&mut self, now: Instant, unit: f64) -> Decision {
        match self.strategy {
            Restart::None => Decision::GiveUp {
                why: "the restart strategy is none".into(),
            },
            Restart::FixedDelay { attempts, delay } => {
                if self.attempts >= attempts {
                    return Decision::GiveUp {
                        why: format!("fixed-delay allows {attempts} restart(s), all used"),
                    };
                }
                self.attempts += 1;
                Decision::Restart {
                    delay,
                    attempt: self.attempts,
                }
            }
            Restart::FailureRate {
                max_failures,
                interval,
                delay,
            } => {
                self.recent.push_back(now);
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= interval)
                {
                    self.recent.pop_front();
                }
                if self.recent.len() > max_failures as usize {
                    return Decision::GiveUp {
                        why: format!(
                            "{} failures within {} exceed failure-rate's {max_failures}",
                            self.recent.len(),
                            humantime::format_duration(interval)
                        ),
                    };
                }
                self.attempts += 1;
                Decision::Restart {
                    delay,
                    attempt: self.attempts,
                }
            }
            Restart::ExponentialDelay(e) => {
                // A worker that ran `reset_after` without failing starts over.
                if self
                    .running_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= e.reset_after)
                {
                    self.attempts = 0;
                }
                if e.attempts.is_some_and(|max| self.attempts >= max) {
                    return Decision::GiveUp {
                        why: format!(
                            "exponential-delay allows {} restart(s) without a healthy {} in between, all used",
                            self.attempts,
                            humantime::format_duration(e.reset_after)
                        ),
                    };
                }
                let policy = RetryPolicy {
                    backoff: e.backoff,
                    max_backoff: e.max_backoff,
                    multiplier: e.multiplier,
                    jitter: e.jitter,
                    max_attempts: None,
                    max_elapsed: None,
                };
                let delay = policy.delay(self.attempts, unit);
                self.attempts += 1;
                self.running_since = Some(now + delay);
                Decision::Restart {
                    delay,
                    attempt: self.attempts,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_crds::ExponentialDelay;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn delays(r: &mut Restarts, at: &[f64]) -> Vec<Result<f64, String>> {
        let t0 = Instant::now();
        at.iter()
            .map(|s| match r.on_failure(t0 + secs(*s), 0.0) {
                Decision::Restart { delay, .. } => {
                    Ok((delay.as_secs_f64() * 1000.0).round() / 1000.0)
                }
                Decision::GiveUp { why } => Err(why),
            })
            .collect()
    }

    #[test]
    fn exponential_delay_grows_by_flinks_default_multiplier_up_to_a_minute() {
        let mut r = Restarts::new(Restart::DEFAULT);
        // Failures in quick succession (each right after the previous restart).
        let got = delays(
            &mut r,
            &[
                0.0, 1.0, 2.5, 5.0, 9.0, 15.0, 25.0, 40.0, 70.0, 100.0, 160.0, 230.0,
            ],
        );
        let want = [
            1.0, 1.5, 2.25, 3.375, 5.063, 7.594, 11.391, 17.086, 25.629, 38.443, 57.665, 60.0,
        ];
        assert_eq!(got, want.map(Ok).to_vec());
    }

    #[test]
    fn exponential_delay_jitter_only_shortens() {
        let mut r = Restarts::new(Restart::DEFAULT);
        let t0 = Instant::now();
        let Decision::Restart { delay, .. } = r.on_failure(t0, 0.999) else {
            panic!()
        };
        assert!(delay > secs(0.9) && delay <= secs(1.0), "{delay:?}");
    }

    #[test]
    fn exponential_delay_starts_over_after_an_hour_of_healthy_running() {
        let mut r = Restarts::new(Restart::DEFAULT);
        // Restarted at 0 (+1s) and 10 (+1.5s): healthy since 11.5 s. A failure 3600 s after
        // that counts as the first again; one 2 s after the restart does not.
        let got = delays(&mut r, &[0.0, 10.0, 3612.0, 3614.0, 7300.0]);
        assert_eq!(got, [1.0, 1.5, 1.0, 1.5, 1.0].map(Ok).to_vec());
    }

    #[test]
    fn exponential_delay_with_attempts_gives_up_until_a_reset() {
        let strategy = Restart::ExponentialDelay(ExponentialDelay {
            backoff: secs(1.0),
            max_backoff: secs(4.0),
            multiplier: 2.0,
            jitter: 0.0,
            reset_after: secs(60.0),
            attempts: Some(3),
        });
        let mut r = Restarts::new(strategy);
        let got = delays(&mut r, &[0.0, 2.0, 5.0, 10.0]);
        assert_eq!(got[..3], [Ok(1.0), Ok(2.0), Ok(4.0)]);
        assert!(got[3].as_ref().unwrap_err().contains("all used"), "{got:?}");
    }

    #[test]
    fn fixed_delay_allows_its_attempts_then_gives_up() {
        let mut r = Restarts::new(Restart::FixedDelay {
            attempts: 2,
            delay: secs(10.0),
        });
        let got = delays(&mut r, &[0.0, 5000.0, 10000.0]);
        assert_eq!(got[..2], [Ok(10.0), Ok(10.0)]);
        assert!(got[2].as_ref().unwrap_err().contains("2 restart(s)"));
    }

    #[test]
    fn failure_rate_counts_failures_in_a_sliding_window() {
        let mut r = Restarts::new(Restart::FailureRate {
            max_failures: 2,
            interval: secs(60.0),
            delay: secs(1.0),
        });
        // Two per minute are tolerated, however many in all; a third within 60 s is not.
        let got = delays(&mut r, &[0.0, 30.0, 90.0, 140.0, 145.0]);
        assert_eq!(got[..4], [Ok(1.0), Ok(1.0), Ok(1.0), Ok(1.0)]);
        assert!(
            got[4]
                .as_ref()
                .unwrap_err()
                .contains("3 failures within 1m"),
            "{got:?}"
        );
    }

    #[test]
    fn none_gives_up_at_once() {
        let mut r = Restarts::new(Restart::None);
        assert!(matches!(
            r.on_failure(Instant::now(), 0.0),
            Decision::GiveUp { .. }
        ));
    }
}
