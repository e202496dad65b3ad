//! The circuit breaker of a `critical: false` sink as a pure state machine: where the next call
//! goes ([`Breaker::route`]) and what an outcome does to the state ([`Breaker::record`]). Time
//! is an argument, so every transition is tested without waiting.
//!
//! closed ──(`failures` in a row, or `error_rate` of ≥ `min_calls` calls within `window`)──▶
//! open ──(`open_for` passed: the next call is a probe)──▶ half-open ──(probe ok)──▶ closed,
//! half-open ──(probe failed)──▶ open.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use weir_crds::contract::BreakerState;
use weir_crds::CircuitBreakerSpec;

/// Where a call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the sink (closed).
    Sink,
    /// To the sink as a probe (half-open): its outcome closes or reopens the breaker.
    Probe,
    /// To the dead-letter sink (open).
    DeadLetter,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    failures: u32,
    error_rate: f64,
    window: Duration,
    min_calls: u32,
    open_for: Duration,
    state: BreakerState,
    since: Instant,
    consecutive: u32,
    /// Outcomes within `window` (closed only): (time, ok).
    calls: VecDeque<(Instant, bool)>,
}

impl Breaker {
    pub fn new(spec: &CircuitBreakerSpec, now: Instant) -> Self {
        Breaker {
            failures: spec.failures,
            error_rate: spec.error_rate,
            window: spec.window.as_std(),
            min_calls: spec.min_calls,
            open_for: spec.open_for.as_std(),
            state: BreakerState::Closed,
            since: now,
            consecutive: 0,
            calls: VecDeque::new(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Where the next call goes; an open breaker whose `open_for` has passed turns half-open
    /// (returned as the transition).
    pub fn route(&mut self, now: Instant) -> (Route, Option<BreakerState>) {
        match self.state {
            BreakerState::Closed => (Route::Sink, None),
            BreakerState::HalfOpen => (Route::Probe, None),
            BreakerState::Open if now.saturating_duration_since(self.since) >= self.open_for => {
                (Route::Probe, Some(self.enter(BreakerState::HalfOpen, now)))
            }
            BreakerState::Open => (Route::DeadLetter, None),
        }
    }

    /// The outcome of a call routed to the sink; returns the state entered, if any.
    pub fn record(&mut self, now: Instant, ok: bool) -> Option<BreakerState> {
        match self.state {
            BreakerState::Open => None,
            BreakerState::HalfOpen => Some(self.enter(
                if ok {
                    BreakerState::Closed
                } else {
                    BreakerState::Open
                },
                now,
            )),
            BreakerState::Closed => {
                self.calls.push_back((now, ok));
                while self
                    .calls
                    .front()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= self.window)
                {
                    self.calls.pop_front();
                }
                self.consecutive = if ok { 0 } else { self.consecutive + 1 };
                let failed = self.calls.iter().filter(|(_, ok)| !ok).count();
                let calls = self.calls.len();
                let rate_exceeded = calls >= self.min_calls as usize
                    && failed as f64 >= self.error_rate * calls as f64;
                (self.consecutive >= self.failures || (!ok && rate_exceeded))
                    .then(|| self.enter(BreakerState::Open, now))
            }
        }
    }

    fn enter(&mut self, state: BreakerState, now: Instant) -> BreakerState {
        self.state = state;
        self.since = now;
        self.consecutive = 0;
        self.calls.clear();
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CircuitBreakerSpec {
        CircuitBreakerSpec {
            failures: 3,
            error_rate: 0.5,
            window: weir_crds::Duration::from_secs(10),
            min_calls: 6,
            open_for: weir_crds::Duration::from_secs(5),
            call_timeout: weir_crds::Duration::from_secs(1),
        }
    }

    fn at(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn failures_in_a_row_open_it_and_a_success_between_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&spec(), t0);
        assert_eq!(b.record(at(t0, 0.1), false), None);
        assert_eq!(b.record(at(t0, 0.2), false), None);
        assert_eq!(b.record(at(t0, 0.3), true), None);
        assert_eq!(b.record(at(t0, 0.4), false), None);
        assert_eq!(b.record(at(t0, 0.5), false), None);
        assert_eq!(b.record(at(t0, 0.6), false), Some(BreakerState::Open));
        assert_eq!(b.route(at(t0, 0.7)), (Route::DeadLetter, None));
    }

    #[test]
    fn an_error_rate_opens_it_once_enough_calls_fell_in_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&spec(), t0);
        // ok, fail alternating: never 3 in a row; half of the calls fail.
        let outcomes = [true, false, true, false, true];
        for (i, ok) in outcomes.into_iter().enumerate() {
            assert_eq!(b.record(at(t0, i as f64), ok), None, "call {i}");
        }
        // The 6th call (min_calls) fails: 3 of 6 = 0.5.
        assert_eq!(b.record(at(t0, 5.0), false), Some(BreakerState::Open));
    }

    #[test]
    fn old_calls_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&spec(), t0);
        for (i, ok) in [false, true, false, true, false].into_iter().enumerate() {
            assert_eq!(b.record(at(t0, i as f64), ok), None);
        }
        // 30 s later those calls have left the 10 s window; with them, the first failure
        // here would be 4 failed of 6.
        for (i, ok) in [false, true, false].into_iter().enumerate() {
            assert_eq!(b.record(at(t0, 30.0 + i as f64), ok), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn after_open_for_a_probe_closes_it_or_opens_it_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&spec(), t0);
        for i in 0..3 {
            b.record(at(t0, i as f64), false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.route(at(t0, 6.9)), (Route::DeadLetter, None));
        assert_eq!(
            b.route(at(t0, 7.0)),
            (Route::Probe, Some(BreakerState::HalfOpen))
        );
        // A failed probe: open for another `open_for`, counted from the probe.
        assert_eq!(b.record(at(t0, 7.5), false), Some(BreakerState::Open));
        assert_eq!(b.route(at(t0, 12.4)), (Route::DeadLetter, None));
        assert_eq!(b.route(at(t0, 12.5)).0, Route::Probe);
        assert_eq!(b.record(at(t0, 12.6), true), Some(BreakerState::Closed));
        assert_eq!(b.route(at(t0, 12.7)), (Route::Sink, None));
        // Closed again with a clean slate.
        assert_eq!(b.record(at(t0, 12.8), false), None);
    }
}
