//! How long an exactly-once Kafka transaction must be allowed to live, for the runtime's sink
//! (which checks and chooses `transaction.timeout.ms`) and the operator (which tunes it against
//! the broker's maximum): one definition.
//!
//! A transaction opens with the first record after checkpoint n-1 and is committed once
//! checkpoint n is durable, so it lives up to `interval + timeout`, plus the commit itself and,
//! after a crash, the restart that re-commits it from the checkpoint. The margin covers the
//! latter: 10 % of `interval + timeout`, at least [`MARGIN_FLOOR`]. A broker that aborts the
//! transaction before the restarted worker re-commits it loses that checkpoint's records.

use std::time::Duration;

/// The least margin: an in-process restart re-commits within seconds (its first backoff is
/// 1 s), a restarted pod within about 10–20 s.
pub const MARGIN_FLOOR: Duration = Duration::from_secs(20);

/// The smallest safe `transaction.timeout.ms`: `interval + timeout + max(10 %, 20 s)`.
pub fn required(interval: Duration, timeout: Duration) -> Duration {
    let base = interval + timeout;
    base + (base / 10).max(MARGIN_FLOOR)
}

/// The longest `checkpoint.interval + checkpoint.timeout` whose [`required`] timeout fits in a
/// broker maximum of `max`, or `None` when not even the margin fits: what a user must shorten
/// the checkpoint settings to.
pub fn longest_checkpoint_within(max: Duration) -> Option<Duration> {
    let floor = MARGIN_FLOOR;
    if max <= floor {
        return None;
    }
    // Where 10 % outgrows the floor (base ≥ 10 × floor), base + base/10 ≤ max gives max/1.1.
    let proportional = max * 10 / 11;
    Some(if proportional >= floor * 10 {
        proportional
    } else {
        max - floor
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_margin_is_ten_percent_or_twenty_seconds() {
        assert_eq!(required(S(1), S(10)), S(31));
        assert_eq!(required(S(30), S(600)), S(693));
        assert_eq!(required(S(10), S(990)), S(1100));
    }

    #[test]
    fn the_longest_checkpoint_a_broker_maximum_allows_is_the_inverse() {
        // A broker that allows 60 s: interval + timeout up to 40 s.
        assert_eq!(longest_checkpoint_within(S(60)), Some(S(40)));
        assert_eq!(required(S(1), S(39)), S(60));
        // Kafka's default 15 min: up to 818 s (818 + 81.8 ≤ 900).
        let l = longest_checkpoint_within(S(900)).unwrap();
        assert!(required(l, S(0)) <= S(900) && required(l + S(1), S(0)) > S(900));
        assert_eq!(longest_checkpoint_within(S(20)), None);
        for max in [21, 30, 100, 219, 220, 221, 250, 3600] {
            let l = longest_checkpoint_within(S(max)).unwrap();
            assert!(required(l, S(0)) <= S(max), "{max}");
        }
    }
}
