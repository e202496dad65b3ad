//! CrashLoopBackOff: the delay before a container that exited is started again. As in the
//! kubelet: `base`, then doubling up to `max`; a container that ran for `reset_after` (the
//! kubelet uses twice the cap, 10 min) before exiting starts again from `base`.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct CrashBackoff {
    base: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl CrashBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        let max = max.max(base);
        CrashBackoff {
            base,
            max,
            reset_after: max * 2,
            next: base,
        }
    }

    /// The delay before the next start of a container that exited after running for `ran_for`.
    pub fn delay_after(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.next = self.base;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Whether a container that exited with `exit_code` is started again under `restart_policy`
/// (`Always` when unset, as the API server defaults it).
pub fn should_restart(restart_policy: Option<&str>, exit_code: i32) -> bool {
    match restart_policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_from_base_up_to_the_cap() {
        let mut b = CrashBackoff::new(10 * S, 300 * S);
        let delays: Vec<u64> = (0..7).map(|_| b.delay_after(S).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_long_run_resets_the_delay() {
        let mut b = CrashBackoff::new(S, 4 * S);
        assert_eq!(b.delay_after(S), S);
        assert_eq!(b.delay_after(S), 2 * S);
        assert_eq!(b.delay_after(S), 4 * S);
        assert_eq!(
            b.delay_after(7 * S),
            4 * S,
            "ran less than twice the cap: no reset"
        );
        assert_eq!(b.delay_after(8 * S), S, "ran twice the cap: back to base");
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let mut b = CrashBackoff::new(5 * S, S);
        assert_eq!(b.delay_after(S), 5 * S);
        assert_eq!(b.delay_after(S), 5 * S);
    }

    #[test]
    fn restart_policy_decides_per_exit_code() {
        assert!(should_restart(None, 0));
        assert!(should_restart(Some("Always"), 0));
        assert!(should_restart(Some("Always"), 1));
        assert!(!should_restart(Some("OnFailure"), 0));
        assert!(should_restart(Some("OnFailure"), 137));
        assert!(!should_restart(Some("Never"), 1));
        assert!(!should_restart(Some("Never"), 0));
    }
}
