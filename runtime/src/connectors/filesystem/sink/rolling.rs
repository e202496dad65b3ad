//! When a part is closed ("rolled") and a new one started: pure decisions, tested directly.

use crate::record::Barrier;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingPolicy {
    pub max_part_size: u64,
    pub rollover_ms: i64,
    pub inactivity_ms: i64,
    /// Close every part at every checkpoint (always for Parquet and object stores).
    pub on_checkpoint: bool,
}

/// What the policy looks at in an open part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartStats {
    /// Bytes in the part so far (for Parquet, an estimate including the open row group).
    pub size: u64,
    pub opened_at_ms: i64,
    pub last_write_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollReason {
    Size,
    Rollover,
    Inactivity,
}

/// Whether an open part should be closed now (checked after writes and on every tick).
pub fn should_roll(part: &PartStats, now_ms: i64, policy: &RollingPolicy) -> Option<RollReason> {
    if part.size >= policy.max_part_size {
        Some(RollReason::Size)
    } else if now_ms.saturating_sub(part.opened_at_ms) >= policy.rollover_ms {
        Some(RollReason::Rollover)
    } else if now_ms.saturating_sub(part.last_write_ms) >= policy.inactivity_ms {
        Some(RollReason::Inactivity)
    } else {
        None
    }
}

/// Whether every open part is closed at this barrier; otherwise open parts are only flushed and
/// their valid length recorded.
pub fn rolls_at_barrier(policy: &RollingPolicy, barrier: &Barrier) -> bool {
    policy.on_checkpoint || barrier.rolls_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RollingPolicy = RollingPolicy {
        max_part_size: 1000,
        rollover_ms: 60_000,
        inactivity_ms: 10_000,
        on_checkpoint: false,
    };

    fn part(size: u64, opened: i64, last: i64) -> PartStats {
        PartStats {
            size,
            opened_at_ms: opened,
            last_write_ms: last,
        }
    }

    #[test]
    fn rolls_on_size_age_and_inactivity() {
        assert_eq!(should_roll(&part(999, 0, 5_000), 9_999, &POLICY), None);
        assert_eq!(
            should_roll(&part(1000, 0, 5_000), 5_000, &POLICY),
            Some(RollReason::Size)
        );
        assert_eq!(
            should_roll(&part(1, 0, 59_000), 60_000, &POLICY),
            Some(RollReason::Rollover)
        );
        assert_eq!(
            should_roll(&part(1, 0, 5_000), 15_000, &POLICY),
            Some(RollReason::Inactivity)
        );
        assert_eq!(should_roll(&part(1, 0, 5_000), 14_999, &POLICY), None);
    }

    #[test]
    fn a_clock_going_backwards_rolls_nothing() {
        assert_eq!(should_roll(&part(1, 50_000, 50_000), 0, &POLICY), None);
    }

    #[test]
    fn barriers_roll_when_the_policy_or_the_barrier_says_so() {
        let plain = Barrier {
            id: 1,
            savepoint: false,
            last: false,
        };
        let savepoint = Barrier {
            id: 2,
            savepoint: true,
            last: false,
        };
        let last = Barrier {
            id: 3,
            savepoint: false,
            last: true,
        };
        assert!(!rolls_at_barrier(&POLICY, &plain));
        assert!(rolls_at_barrier(&POLICY, &savepoint));
        assert!(rolls_at_barrier(&POLICY, &last));
        let always = RollingPolicy {
            on_checkpoint: true,
            ..POLICY
        };
        assert!(rolls_at_barrier(&always, &plain));
    }
}
