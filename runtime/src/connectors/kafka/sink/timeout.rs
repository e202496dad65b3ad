//! The transaction timeout: long enough that the broker never aborts a transaction before its
//! checkpoint commits it, and within the broker's `transaction.max.timeout.ms`.
//!
//! What a transaction needs is `weir_crds::transactions::required` (shared with the operator's
//! tuning); this module checks a chosen value and picks one when the user set none.

use std::time::Duration;

use weir_crds::CheckpointSpec;

pub const TRANSACTION_TIMEOUT_MS: &str = "transaction.timeout.ms";
pub const BROKER_MAX_CONFIG: &str = "transaction.max.timeout.ms";
/// Kafka's default `transaction.max.timeout.ms`. When the user sets nothing we take at least
/// this much: a longer timeout gives a crashed job more time to come back and re-commit.
pub const KAFKA_DEFAULT_MAX: Duration = Duration::from_secs(15 * 60);

/// The smallest safe timeout: interval + timeout + max(10 %, 20 s).
pub fn required(cp: &CheckpointSpec) -> Duration {
    weir_crds::transactions::required(cp.interval.as_std(), cp.timeout.as_std())
}

/// What to shorten the checkpoint settings to so that they fit a broker maximum of `max`.
fn shorten_to(max: Duration) -> String {
    match weir_crds::transactions::longest_checkpoint_within(max) {
        Some(l) => format!(
            "shorten checkpoint.interval + checkpoint.timeout to at most {} ms together",
            ms(l)
        ),
        None => "no checkpoint settings fit such a small maximum".into(),
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Checks a timeout the user chose; `broker_max` once it is known.
pub fn check(
    timeout: Duration,
    cp: &CheckpointSpec,
    broker_max: Option<Duration>,
) -> Result<(), String> {
    let need = required(cp);
    if timeout < need {
        return Err(format!(
            "{TRANSACTION_TIMEOUT_MS} {} is below checkpoint interval ({}) + timeout ({}) + margin = {} ms: the broker would abort transactions before their checkpoint commits them; raise it to at least {} ms, or leave it unset and weir chooses it",
            ms(timeout), cp.interval, cp.timeout, ms(need), ms(need)
        ));
    }
    if let Some(max) = broker_max {
        if timeout > max {
            return Err(format!(
                "{TRANSACTION_TIMEOUT_MS} {} exceeds the broker's {BROKER_MAX_CONFIG} ({}); lower it to between {} and {} ms, or leave it unset and weir chooses it",
                ms(timeout), ms(max), ms(need), ms(max)
            ));
        }
    }
    Ok(())
}

/// The timeout to use: the user's (checked), or else the largest the broker allows up to
/// Kafka's default maximum, and never less than what the checkpoint settings require.
pub fn choose(
    user: Option<Duration>,
    cp: &CheckpointSpec,
    broker_max: Option<Duration>,
) -> Result<Duration, String> {
    if let Some(t) = user {
        check(t, cp, broker_max)?;
        return Ok(t);
    }
    let need = required(cp);
    let wanted = need.max(KAFKA_DEFAULT_MAX);
    let chosen = broker_max.map_or(wanted, |max| wanted.min(max));
    if chosen < need {
        return Err(format!(
            "checkpoint interval ({}) + timeout ({}) + margin = {} ms exceeds the broker's {BROKER_MAX_CONFIG} ({} ms): {}, or raise {BROKER_MAX_CONFIG} on the brokers to at least {} ms",
            cp.interval,
            cp.timeout,
            ms(need),
            broker_max.map_or(0, ms),
            broker_max.map_or_else(String::new, shorten_to),
            ms(need)
        ));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(interval_s: u64, timeout_s: u64) -> CheckpointSpec {
        CheckpointSpec {
            interval: weir_crds::Duration::from_secs(interval_s),
            timeout: weir_crds::Duration::from_secs(timeout_s),
            ..Default::default()
        }
    }
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn margin_is_twenty_seconds_or_ten_percent() {
        assert_eq!(required(&cp(1, 30)), S(51));
        assert_eq!(required(&cp(10, 990)), S(1100));
    }

    #[test]
    fn user_value_must_cover_checkpoints_and_fit_the_broker() {
        let c = cp(1, 30);
        let e = check(S(50), &c, None).unwrap_err();
        assert!(
            e.contains("below") && e.contains("at least 51000 ms"),
            "{e}"
        );
        assert!(check(S(51), &c, None).is_ok());
        let e = check(S(3600), &c, Some(S(900))).unwrap_err();
        assert!(
            e.contains("exceeds the broker's transaction.max.timeout.ms (900000)"),
            "{e}"
        );
        assert_eq!(choose(Some(S(120)), &c, Some(S(900))), Ok(S(120)));
    }

    #[test]
    fn unset_takes_kafkas_default_max_within_the_broker_limit() {
        assert_eq!(choose(None, &cp(1, 30), Some(S(900))), Ok(S(900)));
        assert_eq!(choose(None, &cp(1, 30), Some(S(3600))), Ok(S(900)));
        assert_eq!(choose(None, &cp(1, 30), Some(S(120))), Ok(S(120)));
        assert_eq!(choose(None, &cp(1, 30), None), Ok(S(900)));
        // checkpoint settings longer than the default maximum
        assert_eq!(choose(None, &cp(10, 1790), Some(S(3600))), Ok(S(1980)));
        let e = choose(None, &cp(10, 600), Some(S(300))).unwrap_err();
        assert!(e.contains("exceeds the broker's"), "{e}");
        // The fix it names fits: 272 s of interval + timeout need 299.2 s ≤ 300 s.
        assert!(
            e.contains("to at most 272727 ms together") && e.contains("to at least 671000 ms"),
            "{e}"
        );
        // A broker allowing only 60 s still fits a 1 s interval with a 10 s timeout.
        assert_eq!(choose(None, &cp(1, 10), Some(S(60))), Ok(S(60)));
    }
}
