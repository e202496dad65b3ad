//! Probe verdicts, as the kubelet's prober keeps them: a probe's result flips only after
//! `successThreshold` consecutive successes or `failureThreshold` consecutive failures. The
//! timing (initial delay, period, timeout) is read here and applied by the runner.

use k8s_openapi::api::core::v1::Probe;
use std::time::Duration;

/// Timing and thresholds of a probe, with the API's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl From<&Probe> for ProbeTiming {
    fn from(p: &Probe) -> Self {
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        ProbeTiming {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// What a probe has concluded so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No threshold reached yet: a readiness probe reads it as not ready, a liveness or startup
    /// probe as not failed.
    Unknown,
    Success,
    Failure,
}

#[derive(Clone, Debug)]
pub struct ProbeTracker {
    timing: ProbeTiming,
    successes: u32,
    failures: u32,
    verdict: Verdict,
}

impl ProbeTracker {
    pub fn new(timing: ProbeTiming) -> Self {
        ProbeTracker {
            timing,
            successes: 0,
            failures: 0,
            verdict: Verdict::Unknown,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Records one probe result; returns the new verdict when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<Verdict> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = if self.successes >= self.timing.success_threshold {
            Verdict::Success
        } else if self.failures >= self.timing.failure_threshold {
            Verdict::Failure
        } else {
            self.verdict
        };
        (next != self.verdict).then(|| {
            self.verdict = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(success: u32, failure: u32) -> ProbeTiming {
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn defaults_follow_the_api() {
        let t = ProbeTiming::from(&Probe::default());
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        let t = ProbeTiming::from(&Probe {
            initial_delay_seconds: Some(2),
            period_seconds: Some(0),
            timeout_seconds: Some(5),
            success_threshold: Some(2),
            failure_threshold: Some(0),
            ..Default::default()
        });
        assert_eq!(t.initial_delay, Duration::from_secs(2));
        assert_eq!(
            t.period,
            Duration::from_secs(1),
            "a zero period is clamped to 1 s"
        );
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!((t.success_threshold, t.failure_threshold), (2, 1));
    }

    #[test]
    fn flips_to_failure_after_the_failure_threshold_only() {
        let mut p = ProbeTracker::new(timing(1, 3));
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), Some(Verdict::Failure));
        assert_eq!(p.observe(false), None, "no repeated transition");
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut p = ProbeTracker::new(timing(1, 2));
        assert_eq!(p.observe(true), Some(Verdict::Success));
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(true), None);
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), Some(Verdict::Failure));
    }

    #[test]
    fn needs_consecutive_successes_to_recover() {
        let mut p = ProbeTracker::new(timing(2, 1));
        assert_eq!(p.observe(false), Some(Verdict::Failure));
        assert_eq!(p.observe(true), None);
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(true), None);
        assert_eq!(p.observe(true), Some(Verdict::Success));
        assert_eq!(p.verdict(), Verdict::Success);
    }
}
