//! How many `_bulk` requests may be in flight: additive increase, multiplicative decrease
//! (pure). A 429 halves the limit; every request that succeeds without one adds `1/limit`, so
//! the limit grows by one per round of requests until it is back at `max_in_flight`.
//!
//! Requests in flight when the limit drops answered for the old limit: several 429s from one
//! round halve the limit once, not once each. Each request carries the epoch it was sent in,
//! and only a 429 from the current epoch lowers the limit (TCP's "one decrease per round trip").

#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    max: usize,
    limit: f64,
    epoch: u64,
}

/// What a report changed, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Lowered(usize),
    Restored(usize),
}

impl Aimd {
    pub fn new(max: usize) -> Aimd {
        let max = max.max(1);
        Aimd {
            max,
            limit: max as f64,
            epoch: 0,
        }
    }

    /// Requests allowed in flight now (at least one).
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.max)
    }

    /// The epoch a request sent now belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A request sent in `epoch` was answered 429 (or had items rejected for overload).
    pub fn on_overload(&mut self, epoch: u64) -> Change {
        if epoch != self.epoch {
            return Change::None;
        }
        let before = self.limit();
        self.limit = (self.limit / 2.0).max(1.0);
        self.epoch += 1;
        if self.limit() < before {
            Change::Lowered(self.limit())
        } else {
            Change::None
        }
    }

    /// A request was acknowledged without overload.
    pub fn on_success(&mut self) -> Change {
        let before = self.limit();
        self.limit = (self.limit + 1.0 / self.limit).min(self.max as f64);
        if before < self.max && self.limit() == self.max {
            Change::Restored(self.max)
        } else {
            Change::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_once_per_round_and_never_below_one() {
        let mut a = Aimd::new(8);
        let sent_in = a.epoch();
        assert_eq!(a.on_overload(sent_in), Change::Lowered(4));
        // The other requests of the same round add nothing.
        assert_eq!(a.on_overload(sent_in), Change::None);
        assert_eq!(a.limit(), 4);
        assert_eq!(a.on_overload(a.epoch()), Change::Lowered(2));
        assert_eq!(a.on_overload(a.epoch()), Change::Lowered(1));
        assert_eq!(a.on_overload(a.epoch()), Change::None);
        assert_eq!(a.limit(), 1);
    }

    #[test]
    fn grows_back_by_about_one_per_round_of_successes() {
        let mut a = Aimd::new(4);
        a.on_overload(a.epoch());
        a.on_overload(a.epoch());
        assert_eq!(a.limit(), 1);
        assert_eq!(a.on_success(), Change::None);
        assert_eq!(a.limit(), 2, "a round of one request");
        let mut changes = Vec::new();
        while a.limit() < 4 {
            changes.push(a.on_success());
        }
        // 2 → 3 → 4 takes two rounds of two and three requests (+1/limit each).
        assert_eq!(changes.len(), 6, "{changes:?}");
        assert_eq!(changes.last(), Some(&Change::Restored(4)));
        assert_eq!(a.on_success(), Change::None, "at the maximum it stays");
        assert_eq!(a.limit(), 4);
    }
}
