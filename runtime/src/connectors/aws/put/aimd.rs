//! AIMD concurrency: how many requests a sink keeps in flight. Each request that goes through
//! unthrottled adds `1/limit` (about one more request per round of requests), a throttled one
//! halves the limit, at most once per round: requests sent before the last cut were sent at the
//! old rate, so their throttling says nothing new (TCP's rule, as in Vector's adaptive
//! concurrency). Pure.

#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    max: f64,
    /// Increases with every cut; a request remembers the epoch it was sent in.
    epoch: u64,
}

impl Aimd {
    /// Starts at `max`: throughput first, backing off only when the service says so.
    pub fn new(max: usize) -> Self {
        Aimd {
            limit: max.max(1) as f64,
            max: max.max(1) as f64,
            epoch: 0,
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }

    /// The epoch a request sent now belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A request sent in `epoch` came back; `throttled` if the service refused any of it for load.
    pub fn completed(&mut self, epoch: u64, throttled: bool) {
        if throttled {
            if epoch >= self.epoch {
                self.limit = (self.limit / 2.0).max(1.0);
                self.epoch += 1;
            }
        } else {
            self.limit = (self.limit + 1.0 / self.limit).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_once_per_round() {
        let mut a = Aimd::new(16);
        let e = a.epoch();
        a.completed(e, true);
        assert_eq!(a.limit(), 8);
        // Three more requests of the same round come back throttled: no further cut.
        for _ in 0..3 {
            a.completed(e, true);
        }
        assert_eq!(a.limit(), 8);
        a.completed(a.epoch(), true);
        assert_eq!(a.limit(), 4);
    }

    #[test]
    fn success_grows_by_about_one_per_round_up_to_the_max() {
        let mut a = Aimd::new(8);
        let e = a.epoch();
        a.completed(e, true);
        a.completed(a.epoch(), true);
        assert_eq!(a.limit(), 2);
        // A round of two requests adds one.
        a.completed(a.epoch(), false);
        a.completed(a.epoch(), false);
        assert!(a.limit() >= 2 && a.limit() <= 3);
        for _ in 0..1000 {
            a.completed(a.epoch(), false);
        }
        assert_eq!(a.limit(), 8);
    }

    #[test]
    fn never_below_one() {
        let mut a = Aimd::new(1);
        for _ in 0..10 {
            a.completed(a.epoch(), true);
        }
        assert_eq!(a.limit(), 1);
        assert_eq!(Aimd::new(0).limit(), 1);
    }
}
