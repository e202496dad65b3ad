//! The source's event-time watermark. A subscription has no partitions, so a worker has one
//! clock: bounded out-of-orderness over the newest event time seen and, after `idle_timeout`
//! without a message, the wall clock minus the same bound (a drained subscription must not hold
//! windows open forever; a message that still comes older than that is late).

use crate::event_time::Monotonic;

pub struct Watermark {
    bound_ms: i64,
    idle_ms: Option<i64>,
    max_event: Option<i64>,
    last_seen_ms: i64,
    current: Monotonic,
}

impl Watermark {
    pub fn new(bound_ms: i64, idle_ms: Option<i64>, now_ms: i64) -> Self {
        Watermark {
            bound_ms,
            idle_ms,
            max_event: None,
            last_seen_ms: now_ms,
            current: Monotonic::default(),
        }
    }

    pub fn observe(&mut self, event_ms: i64, now_ms: i64) {
        self.max_event = Some(self.max_event.map_or(event_ms, |m| m.max(event_ms)));
        self.last_seen_ms = now_ms;
    }

    /// A message arrived (even one without a usable event time): the source is not idle.
    pub fn touch(&mut self, now_ms: i64) {
        self.last_seen_ms = now_ms;
    }

    /// The watermark now; never goes back. `None` until a record was seen or the source idled.
    pub fn current(&mut self, now_ms: i64) -> Option<i64> {
        let from_events = self
            .max_event
            .map(|m| m.saturating_sub(self.bound_ms).saturating_sub(1));
        let idle = self
            .idle_ms
            .filter(|i| now_ms - self.last_seen_ms >= *i)
            .map(|_| now_ms - self.bound_ms - 1);
        self.current.advance(from_events.max(idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_over_the_newest_event() {
        let mut w = Watermark::new(1_000, None, 0);
        assert_eq!(w.current(0), None);
        w.observe(10_000, 1);
        w.observe(8_000, 2);
        assert_eq!(w.current(3), Some(8_999));
        w.observe(5_000, 4);
        assert_eq!(w.current(5), Some(8_999), "never backwards");
    }

    #[test]
    fn an_idle_source_follows_the_wall_clock() {
        let mut w = Watermark::new(1_000, Some(500), 0);
        w.observe(100, 0);
        assert_eq!(w.current(400), Some(-901));
        assert_eq!(w.current(20_000), Some(18_999), "idle after 500 ms");
        w.observe(150, 20_001);
        assert_eq!(
            w.current(20_002),
            Some(18_999),
            "a late message does not move it back"
        );
        let mut never = Watermark::new(0, Some(100), 0);
        assert_eq!(never.current(99), None);
        assert_eq!(never.current(100), Some(99), "idle from the start");
    }
}
