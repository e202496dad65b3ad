//! Which messages wait for which checkpoint, and which ids were seen: the source's decisions
//! about acknowledging and deduplicating, pure (the handler type is a parameter, so the tests
//! use plain values and the source uses the client's ack handlers).
//!
//! A message is *pending* from its first delivery until the checkpoint that covers it
//! completes; then its handlers are acknowledged and its id becomes *recent* for the dedup
//! window. A checkpoint stores the ids of both kinds: on restore they are all in committed
//! output (the checkpoint completed), so a redelivery of any of them is dropped and acked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde_json::{json, Value};

/// What to do with a delivery.
#[derive(Debug, PartialEq)]
pub enum Delivery<H> {
    /// A new message: emit it.
    New,
    /// The message is already emitted and waits for its checkpoint (its lease ran out and it
    /// came again): drop it; the handler is kept and acknowledged with the first one.
    WaitingDuplicate,
    /// The message is in committed output: drop it and acknowledge this handler now.
    CommittedDuplicate(H),
}

struct Pending<H> {
    handlers: Vec<H>,
    /// The checkpoint whose barrier came after the message; `None` until one did.
    checkpoint: Option<u64>,
    received_ms: i64,
}

/// A handler released by a completed checkpoint, with how long its message waited.
pub struct Released<H> {
    pub id: String,
    pub handler: H,
    pub held_ms: i64,
}

pub struct Ledger<H> {
    pending: HashMap<String, Pending<H>>,
    /// Id → when it leaves the window (ms).
    recent: HashMap<String, i64>,
    /// The same entries by deadline, for expiry (an id renewed later appears twice; only the
    /// entry matching `recent` removes it).
    deadlines: BinaryHeap<Reverse<(i64, String)>>,
    window_ms: i64,
    /// How long restored ids are kept, at least: until a crashed run's leases have run out
    /// and their messages came back.
    restore_hold_ms: i64,
}

impl<H> Ledger<H> {
    pub fn new(window_ms: i64, restore_hold_ms: i64) -> Self {
        Ledger {
            pending: HashMap::new(),
            recent: HashMap::new(),
            deadlines: BinaryHeap::new(),
            window_ms,
            restore_hold_ms,
        }
    }

    /// Takes in a delivery of message `id`.
    pub fn receive(&mut self, id: &str, handler: H, now_ms: i64) -> Delivery<H> {
        if let Some(p) = self.pending.get_mut(id) {
            p.handlers.push(handler);
            return Delivery::WaitingDuplicate;
        }
        if self.recent.contains_key(id) {
            return Delivery::CommittedDuplicate(handler);
        }
        self.pending.insert(
            id.to_string(),
            Pending {
                handlers: vec![handler],
                checkpoint: None,
                received_ms: now_ms,
            },
        );
        Delivery::New
    }

    /// Barrier `checkpoint` passed: every pending message without a checkpoint belongs to it.
    /// Returns the state to store: every id whose redelivery must be dropped if the job
    /// restarts from this checkpoint.
    pub fn snapshot(&mut self, checkpoint: u64) -> Value {
        let mut ids: Vec<&str> = Vec::with_capacity(self.pending.len() + self.recent.len());
        for (id, p) in self.pending.iter_mut() {
            p.checkpoint.get_or_insert(checkpoint);
            ids.push(id);
        }
        ids.extend(self.recent.keys().map(String::as_str));
        ids.sort_unstable();
        json!({ "ids": ids })
    }

    /// Checkpoint `checkpoint` is durable: its messages' handlers are returned to be
    /// acknowledged, and their ids enter the window.
    pub fn complete(&mut self, checkpoint: u64, now_ms: i64) -> Vec<Released<H>> {
        let done: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.checkpoint.is_some_and(|c| c <= checkpoint))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::with_capacity(done.len());
        for id in done {
            let p = self.pending.remove(&id).expect("listed above");
            let held_ms = now_ms - p.received_ms;
            out.extend(p.handlers.into_iter().map(|handler| Released {
                id: id.clone(),
                handler,
                held_ms,
            }));
            self.remember(id, now_ms);
        }
        self.expire(now_ms);
        out
    }

    /// Ids from a restored checkpoint: all in committed output.
    pub fn restore(&mut self, state: &Value, now_ms: i64) -> Result<usize, String> {
        let ids = state["ids"]
            .as_array()
            .ok_or_else(|| format!("expected {{\"ids\": [...]}}, got {state}"))?;
        let mut n = 0;
        for id in ids {
            let id = id
                .as_str()
                .ok_or_else(|| format!("a message id is not a string: {id}"))?;
            // Kept even when the window is off: the crash may have lost their
            // acknowledgements, so they come back once the old leases run out.
            let hold = self.window_ms.max(self.restore_hold_ms);
            self.keep_until(id.to_string(), now_ms + hold);
            n += 1;
        }
        Ok(n)
    }

    /// An acknowledgement was refused (exactly-once subscriptions report it): the message will
    /// come again, so its id is kept for another window.
    pub fn refresh(&mut self, id: &str, now_ms: i64) {
        if self.recent.contains_key(id) {
            self.remember(id.to_string(), now_ms);
        }
    }

    fn remember(&mut self, id: String, now_ms: i64) {
        if self.window_ms > 0 {
            self.keep_until(id, now_ms + self.window_ms);
        }
    }

    fn keep_until(&mut self, id: String, deadline: i64) {
        let until = self.recent.entry(id.clone()).or_insert(deadline);
        *until = (*until).max(deadline);
        self.deadlines.push(Reverse((*until, id)));
    }

    /// Forgets ids whose time in the window is over.
    pub fn expire(&mut self, now_ms: i64) {
        while let Some(Reverse((t, _))) = self.deadlines.peek() {
            if *t > now_ms {
                break;
            }
            let Reverse((t, id)) = self.deadlines.pop().expect("checked above");
            if self.recent.get(&id) == Some(&t) {
                self.recent.remove(&id);
            }
        }
    }

    /// Messages emitted and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Ids remembered after their checkpoint.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }

    /// Drops every pending handler (the source is closing): their messages are redelivered.
    pub fn take_pending(&mut self) -> Vec<H> {
        self.pending.drain().flat_map(|(_, p)| p.handlers).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &Value) -> Vec<String> {
        v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }

    fn handlers(r: Vec<Released<u32>>) -> Vec<u32> {
        let mut h: Vec<u32> = r.into_iter().map(|r| r.handler).collect();
        h.sort();
        h
    }

    #[test]
    fn messages_are_released_only_by_the_checkpoint_that_covers_them() {
        let mut l = Ledger::new(60_000, 0);
        assert_eq!(l.receive("a", 1, 0), Delivery::New);
        assert_eq!(l.receive("b", 2, 0), Delivery::New);
        assert_eq!(ids(&l.snapshot(1)), ["a", "b"]);
        assert_eq!(l.receive("c", 3, 10), Delivery::New);
        // c arrived after barrier 1: completing 1 must not release it.
        assert_eq!(handlers(l.complete(1, 100)), [1, 2]);
        assert_eq!(l.pending(), 1);
        assert_eq!(
            ids(&l.snapshot(2)),
            ["a", "b", "c"],
            "recent ids stay in the state"
        );
        let r = l.complete(2, 110);
        assert_eq!(r[0].held_ms, 100);
        assert_eq!(handlers(r), [3]);
    }

    #[test]
    fn a_failed_checkpoint_leaves_its_messages_for_the_next() {
        let mut l = Ledger::new(60_000, 0);
        l.receive("a", 1, 0);
        l.snapshot(1); // checkpoint 1 fails: never completed
        l.receive("b", 2, 0);
        l.snapshot(2);
        assert_eq!(handlers(l.complete(2, 5)), [1, 2]);
    }

    #[test]
    fn redeliveries_are_dropped_and_acknowledged_at_the_right_time() {
        let mut l = Ledger::new(60_000, 0);
        l.receive("a", 1, 0);
        // The lease ran out while waiting: the second handler is kept for the checkpoint.
        assert_eq!(l.receive("a", 2, 5), Delivery::WaitingDuplicate);
        l.snapshot(1);
        assert_eq!(handlers(l.complete(1, 10)), [1, 2]);
        // Acknowledged but delivered again (a lost ack): acknowledge at once.
        assert_eq!(l.receive("a", 3, 20), Delivery::CommittedDuplicate(3));
    }

    #[test]
    fn the_window_forgets_old_ids_and_a_refused_ack_renews_one() {
        let mut l = Ledger::new(1_000, 0);
        l.receive("a", 1, 0);
        l.receive("b", 2, 0);
        l.snapshot(1);
        l.complete(1, 0);
        l.refresh("b", 600);
        l.expire(1_000);
        assert_eq!(l.recent(), 1);
        assert_eq!(l.receive("a", 3, 1_000), Delivery::New, "a left the window");
        assert_eq!(l.receive("b", 4, 1_000), Delivery::CommittedDuplicate(4));
        l.expire(1_600);
        assert_eq!(l.recent(), 0);
    }

    #[test]
    fn restored_ids_are_dropped_on_redelivery_even_without_a_window() {
        let mut l: Ledger<u32> = Ledger::new(0, 500);
        l.receive("x", 9, 0);
        l.snapshot(1);
        l.complete(1, 0);
        assert_eq!(l.recent(), 0, "no window: acked ids are not kept");
        let mut restored: Ledger<u32> = Ledger::new(0, 500);
        assert_eq!(
            restored.restore(&json!({ "ids": ["a", "b"] }), 0).unwrap(),
            2
        );
        restored.expire(499);
        assert_eq!(restored.receive("a", 1, 0), Delivery::CommittedDuplicate(1));
        restored.expire(500);
        assert_eq!(restored.recent(), 0, "held until the old leases ran out");
        assert!(restored.restore(&json!({ "ids": [1] }), 0).is_err());
        assert!(restored.restore(&json!([]), 0).is_err());
    }

    #[test]
    fn closing_hands_back_every_pending_handler() {
        let mut l = Ledger::new(1_000, 0);
        l.receive("a", 1, 0);
        l.receive("a", 2, 0);
        l.receive("b", 3, 0);
        let mut h = l.take_pending();
        h.sort();
        assert_eq!(h, [1, 2, 3]);
        assert_eq!(l.pending(), 0);
    }
}
