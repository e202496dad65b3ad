//! Where records wait between arrival and emission: the emission rules of both modes as pure data
//! structures, driven by sequence numbers (no I/O, no time).

use std::collections::{HashMap, HashSet, VecDeque};

/// What a queue lets out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit<T> {
    Record(T),
    Watermark(i64),
}

/// A record still in the queue, for snapshots.
#[derive(Debug, PartialEq)]
pub enum Held<'a, T> {
    /// The lookup has not finished: the input must be issued again on restore.
    Pending(u64),
    /// Finished, waiting for its turn.
    Done(u64, &'a T),
}

pub trait CompletionQueue<T>: Send {
    /// A record arrived; its lookup is now in flight.
    fn push(&mut self, seq: u64);
    fn push_watermark(&mut self, watermark: i64);
    /// The record's lookup finished; `None` drops the record. `false` for an unknown `seq`.
    fn complete(&mut self, seq: u64, result: Option<T>) -> bool;
    /// Moves everything that may leave now to `out`.
    fn pop_ready(&mut self, out: &mut Vec<Emit<T>>);
    /// Whether `pop_ready` would return something.
    fn has_ready(&self) -> bool;
    /// Records held: in flight, or finished and not yet emitted (what capacity limits).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every held record that will be emitted, in arrival order.
    fn held(&self) -> Vec<Held<'_, T>>;
}

/// Emits records in arrival order; a watermark leaves once every record before it has.
pub struct OrderedQueue<T> {
    slots: VecDeque<Slot>,
    done: HashMap<u64, Option<T>>,
    pending: HashSet<u64>,
}

enum Slot {
    Record(u64),
    Watermark(i64),
}

impl<T> Default for OrderedQueue<T> {
    fn default() -> Self {
        OrderedQueue {
            slots: VecDeque::new(),
            done: HashMap::new(),
            pending: HashSet::new(),
        }
    }
}

impl<T: Send> CompletionQueue<T> for OrderedQueue<T> {
    fn push(&mut self, seq: u64) {
        self.pending.insert(seq);
        self.slots.push_back(Slot::Record(seq));
    }

    fn push_watermark(&mut self, watermark: i64) {
        // Two watermarks with no record between them: the later one says all.
        if let Some(Slot::Watermark(w)) = self.slots.back_mut() {
            *w = (*w).max(watermark);
        } else {
            self.slots.push_back(Slot::Watermark(watermark));
        }
    }

    fn complete(&mut self, seq: u64, result: Option<T>) -> bool {
        if !self.pending.remove(&seq) {
            return false;
        }
        self.done.insert(seq, result);
        true
    }

    fn pop_ready(&mut self, out: &mut Vec<Emit<T>>) {
        while let Some(front) = self.slots.front() {
            match *front {
                Slot::Watermark(w) => out.push(Emit::Watermark(w)),
                Slot::Record(seq) => match self.done.remove(&seq) {
                    Some(Some(r)) => out.push(Emit::Record(r)),
                    Some(None) => {}
                    None => return,
                },
            }
            self.slots.pop_front();
        }
    }

    fn has_ready(&self) -> bool {
        match self.slots.front() {
            Some(Slot::Watermark(_)) => true,
            Some(Slot::Record(seq)) => self.done.contains_key(seq),
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.pending.len() + self.done.len()
    }

    fn held(&self) -> Vec<Held<'_, T>> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Watermark(_) => None,
                Slot::Record(seq) => match self.done.get(seq) {
                    None => Some(Held::Pending(*seq)),
                    Some(Some(r)) => Some(Held::Done(*seq, r)),
                    Some(None) => None,
                },
            })
            .collect()
    }
}

/// Emits records as they finish, but never across a watermark: records are grouped into segments
/// separated by watermarks (Flink's approach), and only the oldest segment may emit. A watermark
/// leaves once its segment is empty, and the next segment becomes the oldest.
pub struct UnorderedQueue<T> {
    /// Never empty; the last segment is open (no closing watermark), the others are closed.
    segments: VecDeque<Segment<T>>,
    held: usize,
}

struct Segment<T> {
    pending: HashSet<u64>,
    done: Vec<(u64, T)>,
    closed_by: Option<i64>,
}

impl<T> Segment<T> {
    fn open() -> Self {
        Segment {
            pending: HashSet::new(),
            done: Vec::new(),
            closed_by: None,
        }
    }
    fn has_records(&self) -> bool {
        !self.pending.is_empty() || !self.done.is_empty()
    }
}

impl<T> Default for UnorderedQueue<T> {
    fn default() -> Self {
        UnorderedQueue {
            segments: VecDeque::from([Segment::open()]),
            held: 0,
        }
    }
}

impl<T: Send> UnorderedQueue<T> {
    fn last(&mut self) -> &mut Segment<T> {
        self.segments
            .back_mut()
            .expect("an unordered queue always has an open segment")
    }
}

impl<T: Send> CompletionQueue<T> for UnorderedQueue<T> {
    fn push(&mut self, seq: u64) {
        self.held += 1;
        self.last().pending.insert(seq);
    }

    fn push_watermark(&mut self, watermark: i64) {
        let n = self.segments.len();
        if n > 1 && !self.segments[n - 1].has_records() {
            // No record since the previous watermark: raise it instead of adding a segment.
            let prev = &mut self.segments[n - 2];
            prev.closed_by = prev.closed_by.max(Some(watermark));
            return;
        }
        self.last().closed_by = Some(watermark);
        self.segments.push_back(Segment::open());
    }

    fn complete(&mut self, seq: u64, result: Option<T>) -> bool {
        let Some(seg) = self.segments.iter_mut().find(|s| s.pending.contains(&seq)) else {
            return false;
        };
        seg.pending.remove(&seq);
        match result {
            Some(r) => seg.done.push((seq, r)),
            None => self.held -= 1,
        }
        true
    }

    fn pop_ready(&mut self, out: &mut Vec<Emit<T>>) {
        loop {
            let first = self
                .segments
                .front_mut()
                .expect("an unordered queue always has an open segment");
            self.held -= first.done.len();
            out.extend(first.done.drain(..).map(|(_, r)| Emit::Record(r)));
            match first.closed_by {
                Some(w) if first.pending.is_empty() => {
                    out.push(Emit::Watermark(w));
                    self.segments.pop_front();
                }
                _ => return,
            }
        }
    }

    fn has_ready(&self) -> bool {
        self.segments
            .front()
            .is_some_and(|s| !s.done.is_empty() || (s.pending.is_empty() && s.closed_by.is_some()))
    }

    fn len(&self) -> usize {
        self.held
    }

    fn held(&self) -> Vec<Held<'_, T>> {
        let mut v: Vec<Held<'_, T>> = self
            .segments
            .iter()
            .flat_map(|s| {
                s.pending
                    .iter()
                    .map(|seq| Held::Pending(*seq))
                    .chain(s.done.iter().map(|(seq, r)| Held::Done(*seq, r)))
            })
            .collect();
        v.sort_by_key(|h| match h {
            Held::Pending(s) | Held::Done(s, _) => *s,
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<Q: CompletionQueue<&'static str>>(q: &mut Q) -> Vec<Emit<&'static str>> {
        let mut out = Vec::new();
        q.pop_ready(&mut out);
        out
    }

    use Emit::{Record as R, Watermark as W};

    #[test]
    fn ordered_waits_for_the_head_and_keeps_watermarks_in_place() {
        let mut q = OrderedQueue::default();
        q.push(1);
        q.push(2);
        q.push_watermark(10);
        q.push(3);
        assert!(q.complete(2, Some("b")));
        assert!(q.complete(3, Some("c")));
        assert!(!q.has_ready());
        assert_eq!(drain(&mut q), vec![]);
        assert_eq!(q.len(), 3);
        assert!(q.complete(1, Some("a")));
        assert!(q.has_ready());
        assert_eq!(drain(&mut q), vec![R("a"), R("b"), W(10), R("c")]);
        assert!(q.is_empty());
        assert!(!q.complete(1, Some("again")), "a seq completes once");
    }

    #[test]
    fn ordered_drops_keep_their_place_until_the_head_passes() {
        let mut q = OrderedQueue::default();
        q.push(1);
        q.push(2);
        q.complete(2, None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.held(), vec![Held::Pending(1)]);
        q.complete(1, Some("a"));
        assert_eq!(drain(&mut q), vec![R("a")]);
        assert!(q.is_empty());
    }

    #[test]
    fn ordered_watermarks_with_nothing_between_merge() {
        let mut q: OrderedQueue<&str> = OrderedQueue::default();
        q.push(1);
        q.push_watermark(5);
        q.push_watermark(9);
        q.complete(1, Some("a"));
        assert_eq!(drain(&mut q), vec![R("a"), W(9)]);
        q.push_watermark(12);
        assert_eq!(drain(&mut q), vec![W(12)]);
    }

    #[test]
    fn unordered_emits_as_finished_within_a_segment() {
        let mut q = UnorderedQueue::default();
        q.push(1);
        q.push(2);
        q.push(3);
        q.complete(3, Some("c"));
        assert!(q.has_ready());
        assert_eq!(drain(&mut q), vec![R("c")]);
        q.complete(1, Some("a"));
        assert_eq!(drain(&mut q), vec![R("a")]);
        assert_eq!(q.len(), 1);
        assert_eq!(q.held(), vec![Held::Pending(2)]);
    }

    #[test]
    fn unordered_never_lets_a_record_cross_a_watermark() {
        let mut q = UnorderedQueue::default();
        q.push(1);
        q.push_watermark(10);
        q.push(2);
        q.push_watermark(20);
        q.push(3);
        // Records after the watermarks finish first: they must wait for segment 1.
        q.complete(2, Some("b"));
        q.complete(3, Some("c"));
        assert!(!q.has_ready());
        assert_eq!(drain(&mut q), vec![]);
        assert_eq!(
            q.held(),
            vec![Held::Pending(1), Held::Done(2, &"b"), Held::Done(3, &"c")]
        );
        q.complete(1, Some("a"));
        assert_eq!(drain(&mut q), vec![R("a"), W(10), R("b"), W(20), R("c")]);
        assert!(q.is_empty());
    }

    #[test]
    fn unordered_dropped_records_release_their_segment() {
        let mut q: UnorderedQueue<&str> = UnorderedQueue::default();
        q.push(1);
        q.push_watermark(10);
        q.complete(1, None);
        assert_eq!(q.len(), 0);
        assert_eq!(drain(&mut q), vec![W(10)]);
    }

    #[test]
    fn unordered_watermarks_without_records_merge_and_pass_an_empty_queue() {
        let mut q: UnorderedQueue<&str> = UnorderedQueue::default();
        q.push_watermark(1);
        assert_eq!(drain(&mut q), vec![W(1)]);
        q.push(1);
        q.push_watermark(5);
        q.push_watermark(7);
        q.push_watermark(6);
        assert_eq!(q.segments.len(), 2, "no segment per watermark");
        q.complete(1, Some("a"));
        assert_eq!(drain(&mut q), vec![R("a"), W(7)]);
    }

    /// Every order of completions for one arrival sequence: no record leaves after a watermark
    /// that arrived after it, and every record and watermark leaves exactly once. (A record
    /// leaving before an earlier watermark is allowed: holding a watermark back is always safe.)
    #[test]
    fn unordered_respects_watermarks_under_every_completion_order() {
        // Arrival: r0 r1 W100 r2 r3 W200 r4
        let arrivals = ["r0", "r1", "W100", "r2", "r3", "W200", "r4"];
        let records = [0u64, 1, 2, 3, 4];
        let names = ["r0", "r1", "r2", "r3", "r4"];
        let mut perm = records.to_vec();
        let mut count = 0;
        permute(&mut perm, 0, &mut |order| {
            count += 1;
            let mut q = UnorderedQueue::default();
            let mut seq = 0;
            for a in arrivals {
                if let Some(w) = a.strip_prefix('W') {
                    q.push_watermark(w.parse().unwrap());
                } else {
                    q.push(seq);
                    seq += 1;
                }
            }
            let mut out = Vec::new();
            for &s in order {
                q.complete(s, Some(names[s as usize]));
                q.pop_ready(&mut out);
            }
            assert_eq!(out.len(), 7, "{order:?}: {out:?}");
            let pos = |e: Emit<&str>| out.iter().position(|x| *x == e).unwrap();
            for (i, n) in names.iter().enumerate() {
                let before_w100 = i < 2;
                let before_w200 = i < 4;
                if before_w100 {
                    assert!(pos(R(n)) < pos(W(100)), "{order:?}: {out:?}");
                }
                if before_w200 {
                    assert!(pos(R(n)) < pos(W(200)), "{order:?}: {out:?}");
                }
            }
            assert!(pos(W(100)) < pos(W(200)));
        });
        assert_eq!(count, 120);
    }

    fn permute(v: &mut Vec<u64>, k: usize, f: &mut impl FnMut(&[u64])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }
}
