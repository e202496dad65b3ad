//! The producers of one worker take turns: while transaction n waits for its checkpoint to be
//! durable, transaction n+1 is already being written on another producer.
//!
//! A producer is reused only once a checkpoint *later* than the one that committed its last
//! transaction is durable. librdkafka's transactions keep the producer epoch from one
//! transaction to the next, so if a producer were reused right after its commit, a crash
//! before the next checkpoint would restore a committable (id, producer id, epoch) that now
//! names the *new* open transaction, and re-committing it would publish records the restarted
//! job writes again. Once a later checkpoint is durable, no restore can hand out that
//! committable any more (it is only in checkpoints up to the one that committed it).

/// What one producer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Its `init_transactions` still runs: only the first producer's is awaited before the
    /// job writes, since the others are not needed before the first checkpoint.
    Starting,
    /// Free to begin a transaction.
    Idle,
    /// Transaction open, records being written.
    Active { records: u64 },
    /// Flushed at checkpoint `checkpoint`, waiting for it to be durable.
    Prepared { checkpoint: u64 },
    /// Committed when checkpoint `durable` was reported durable; reusable after a later one.
    Committed { durable: u64 },
}

#[derive(Debug, Clone)]
pub struct Pool {
    slots: Vec<Slot>,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        Pool {
            slots: vec![Slot::Idle; size],
        }
    }

    /// A pool whose producers from `ready` on are still [`Slot::Starting`].
    pub fn starting_from(size: usize, ready: usize) -> Pool {
        let mut p = Pool::new(size);
        for s in p.slots.iter_mut().skip(ready) {
            *s = Slot::Starting;
        }
        p
    }

    /// Producer `i`'s `init_transactions` returned.
    pub fn started(&mut self, i: usize) {
        if self.slots[i] == Slot::Starting {
            self.slots[i] = Slot::Idle;
        }
    }

    pub fn slot(&self, i: usize) -> Slot {
        self.slots[i]
    }

    pub fn active(&self) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s, Slot::Active { .. }))
    }

    /// Whether a producer is free to begin a transaction.
    pub fn has_idle(&self) -> bool {
        self.slots.contains(&Slot::Idle)
    }

    /// Picks an idle producer for a new transaction (the caller begins it).
    pub fn start(&mut self) -> Option<usize> {
        let i = self.slots.iter().position(|s| *s == Slot::Idle)?;
        self.slots[i] = Slot::Active { records: 0 };
        Some(i)
    }

    pub fn wrote(&mut self, i: usize, n: u64) {
        if let Slot::Active { records } = &mut self.slots[i] {
            *records += n;
        }
    }

    /// At barrier `checkpoint`: the active transaction, if it holds records, becomes prepared.
    /// Returns its slot and record count. An empty one stays open for the next checkpoint.
    pub fn prepare(&mut self, checkpoint: u64) -> Option<(usize, u64)> {
        let i = self.active()?;
        let Slot::Active { records } = self.slots[i] else {
            return None;
        };
        if records == 0 {
            return None;
        }
        self.slots[i] = Slot::Prepared { checkpoint };
        Some((i, records))
    }

    /// Whether slot `i` holds the prepared transaction of `checkpoint`.
    pub fn is_prepared(&self, i: usize, checkpoint: u64) -> bool {
        self.slots[i] == Slot::Prepared { checkpoint }
    }

    pub fn committed(&mut self, i: usize, durable: u64) {
        self.slots[i] = Slot::Committed { durable };
    }

    /// Checkpoint `durable` is durable: producers committed at an earlier one are free again.
    pub fn release(&mut self, durable: u64) {
        for s in &mut self.slots {
            if matches!(s, Slot::Committed { durable: d } if *d < durable) {
                *s = Slot::Idle;
            }
        }
    }

    /// The open (not prepared) transaction was aborted.
    pub fn aborted(&mut self, i: usize) {
        if matches!(self.slots[i], Slot::Active { .. }) {
            self.slots[i] = Slot::Idle;
        }
    }

    /// How many transactions are prepared and not yet committed (for the error when none is free).
    pub fn waiting(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Prepared { .. }))
            .count()
    }
}

/// `prefix-job-sink-worker-index`: stable across restarts, distinct per worker and sink, so that
/// a restarted worker fences exactly its own predecessors.
pub fn transactional_id(prefix: &str, job: &str, sink: &str, worker: u32, index: usize) -> String {
    format!("{prefix}-{job}-{sink}-{worker}-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One checkpoint cycle: write, barrier `n`, checkpoint durable, commit.
    fn cycle(p: &mut Pool, n: u64) -> usize {
        let i = p.active().or_else(|| p.start()).expect("a free producer");
        p.wrote(i, 10);
        let (j, records) = p.prepare(n).unwrap();
        assert_eq!(j, i);
        // 10, plus 1 written right after the previous barrier
        assert_eq!(records, if n == 1 { 10 } else { 11 });
        // the next transaction starts before checkpoint n is durable
        let next = p.start().expect("a producer for the next transaction");
        assert_ne!(next, i);
        p.wrote(next, 1);
        assert!(p.is_prepared(i, n));
        p.committed(i, n);
        p.release(n);
        i
    }

    #[test]
    fn three_producers_rotate_in_steady_state() {
        let mut p = Pool::new(3);
        let mut used = Vec::new();
        for n in 1..=9 {
            used.push(cycle(&mut p, n));
        }
        assert_eq!(used, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn committed_producer_waits_for_a_later_durable_checkpoint() {
        let mut p = Pool::new(3);
        let a = p.start().unwrap();
        p.wrote(a, 5);
        p.prepare(1);
        p.committed(a, 1);
        p.release(1);
        assert_eq!(p.slot(a), Slot::Committed { durable: 1 });
        // a repeated commit of the same checkpoint frees nothing
        p.release(1);
        assert_eq!(p.slot(a), Slot::Committed { durable: 1 });
        p.release(2);
        assert_eq!(p.slot(a), Slot::Idle);
    }

    #[test]
    fn empty_transaction_is_not_prepared() {
        let mut p = Pool::new(3);
        let a = p.start().unwrap();
        assert_eq!(p.prepare(1), None);
        assert_eq!(p.active(), Some(a));
        assert_eq!(p.prepare(2), None);
    }

    #[test]
    fn failed_checkpoints_hold_producers_until_none_is_left() {
        let mut p = Pool::new(3);
        for n in 1..=3 {
            let i = p.active().or_else(|| p.start()).unwrap();
            p.wrote(i, 1);
            p.prepare(n).unwrap();
        }
        assert_eq!(p.waiting(), 3);
        assert_eq!(p.start(), None);
        p.aborted(0); // a prepared transaction is never dropped by abort
        assert_eq!(p.waiting(), 3);
    }

    #[test]
    fn a_starting_producer_is_not_picked_until_started() {
        let mut p = Pool::starting_from(3, 1);
        assert_eq!(p.slot(1), Slot::Starting);
        let a = p.start().unwrap();
        assert_eq!(a, 0);
        assert!(!p.has_idle());
        assert_eq!(p.start(), None);
        p.started(2);
        p.started(2); // idempotent
        assert_eq!(p.slot(2), Slot::Idle);
        p.wrote(a, 1);
        p.prepare(1).unwrap();
        assert_eq!(p.start(), Some(2));
        // started() never disturbs a producer in use
        p.started(2);
        assert_eq!(p.slot(2), Slot::Active { records: 0 });
    }

    #[test]
    fn ids_name_job_sink_worker_and_index() {
        assert_eq!(transactional_id("weir", "j", "out", 1, 2), "weir-j-out-1-2");
    }
}
