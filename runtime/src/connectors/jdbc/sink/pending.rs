//! Rows waiting to be written by one writer. In upsert mode a row replaces the waiting row with
//! the same key in place (last write wins), so a batch never holds a key twice and Postgres never
//! reports "ON CONFLICT DO UPDATE command cannot affect row a second time".

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use super::super::plan::Row;

pub struct Pending {
    rows: Vec<Row>,
    /// Key values → position in `rows` (upsert only).
    by_key: Option<HashMap<Box<[Option<String>]>, usize>>,
    /// When the oldest waiting row arrived.
    since: Option<Instant>,
}

fn key_of(row: &Row, key: &[usize]) -> Box<[Option<String>]> {
    key.iter().map(|i| row[*i].clone()).collect()
}

impl Pending {
    pub fn new(dedup: bool) -> Pending {
        Pending {
            rows: Vec::new(),
            by_key: dedup.then(HashMap::new),
            since: None,
        }
    }

    pub fn push(&mut self, row: Row, key: &[usize]) {
        self.since.get_or_insert_with(Instant::now);
        if let Some(index) = &mut self.by_key {
            let k = key_of(&row, key);
            if let Some(&at) = index.get(&k) {
                self.rows[at] = row;
                return;
            }
            index.insert(k, self.rows.len());
        }
        self.rows.push(row);
    }

    /// Distinct rows waiting.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn waiting_since(&self) -> Option<Instant> {
        self.since
    }

    pub fn take(&mut self) -> Vec<Row> {
        if let Some(index) = &mut self.by_key {
            index.clear();
        }
        self.since = None;
        std::mem::take(&mut self.rows)
    }
}

/// Whether a lane's waiting rows go to its writer now. A write starts at `batch_size` rows when
/// the writer is idle; while it is busy, rows keep merging (and deduplicating) into the next
/// batch up to `max_batch`, so a slow database gets fewer, larger transactions instead of a
/// queue of small ones (group commit).
pub fn should_write(waiting: usize, in_flight: usize, batch_size: usize, max_batch: usize) -> bool {
    waiting >= max_batch || (waiting >= batch_size && in_flight == 0)
}

/// Positions of `rows` ordered by their key values, for statements that lock rows in the order
/// they list them (multi-row `INSERT … VALUES … ON CONFLICT`, or one row after another in a
/// transaction). Two writers whose batches share keys (workers fed by overlapping splits) then
/// take the row locks of their transactions in the same order, so one waits for the other
/// instead of both deadlocking. Any total order shared by every writer does: the byte order of
/// the encoded values is one (no collation involved; numbers compare as text, `"10" < "9"`,
/// which orders locks just as well). An upsert's rows are deduplicated by key first, so no two
/// compare equal; a statement's rows (`mode: sql`) are not, and the sort is stable, so one
/// key's rows keep their arrival order (the statement may add them up, or keep the last).
/// Without a key (append) the arrival order stays.
pub fn key_order(rows: &[Row], key: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    if !key.is_empty() {
        let values = |r: usize| key.iter().map(move |i| &rows[r][*i]);
        // Stable (`sort_by`, not `sort_unstable_by`): equal keys keep their arrival order.
        order.sort_by(|a, b| values(*a).cmp(values(*b)));
    }
    order
}

/// The writer for a row: a stable hash of the routing values, so one key always goes through
/// the same connection and its writes stay in order.
pub fn writer_for(row: &Row, route: &[usize], writers: usize) -> usize {
    if writers <= 1 {
        return 0;
    }
    let mut h = DefaultHasher::new();
    for i in route {
        row[*i].hash(&mut h);
    }
    (h.finish() % writers as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: &str, v: i64) -> Row {
        vec![Some(k.to_string()), Some(v.to_string())].into_boxed_slice()
    }

    #[test]
    fn the_last_write_per_key_wins_in_first_seen_order() {
        let mut p = Pending::new(true);
        for (k, v) in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)] {
            p.push(row(k, v), &[0]);
        }
        assert_eq!(p.len(), 3);
        assert!(p.waiting_since().is_some());
        assert_eq!(p.take(), vec![row("a", 6), row("b", 5), row("c", 4)]);
        assert!(p.is_empty() && p.waiting_since().is_none());
        p.push(row("a", 7), &[0]);
        assert_eq!(p.take(), vec![row("a", 7)]);
    }

    #[test]
    fn a_busy_writer_lets_the_next_batch_grow_up_to_the_maximum() {
        assert!(!should_write(999, 0, 1000, 10_000));
        assert!(should_write(1000, 0, 1000, 10_000));
        assert!(!should_write(1000, 1, 1000, 10_000));
        assert!(!should_write(9_999, 2, 1000, 10_000));
        assert!(should_write(10_000, 2, 1000, 10_000));
        assert!(should_write(1, 0, 1, 1));
    }

    #[test]
    fn rows_go_out_in_key_order_whatever_order_they_arrived_in() {
        let one = [row("c", 1), row("a", 2), row("b", 3)];
        let other = [row("b", 4), row("c", 5), row("a", 6)];
        // Two writers holding the same keys lock them in the same order.
        assert_eq!(key_order(&one, &[0]), [1, 2, 0]);
        assert_eq!(key_order(&other, &[0]), [2, 0, 1]);
        // A composite key compares column by column; NULL sorts first.
        let two = |a: Option<&str>, b: &str| -> Row {
            vec![a.map(str::to_string), Some(b.to_string())].into_boxed_slice()
        };
        let rows = [
            two(Some("x"), "2"),
            two(Some("x"), "1"),
            two(None, "9"),
            two(Some("w"), "5"),
        ];
        assert_eq!(key_order(&rows, &[0, 1]), [2, 3, 1, 0]);
        // No key (append): the arrival order stays.
        assert_eq!(key_order(&one, &[]), [0, 1, 2]);
    }

    #[test]
    fn numbers_order_as_their_text_the_same_for_every_writer() {
        let one = [row("9", 1), row("10", 2), row("-3", 3), row("100", 4)];
        let other = [row("100", 5), row("-3", 6), row("9", 7), row("10", 8)];
        let keys = |rows: &[Row]| -> Vec<String> {
            key_order(rows, &[0])
                .into_iter()
                .map(|i| rows[i][0].clone().unwrap())
                .collect()
        };
        assert_eq!(keys(&one), ["-3", "10", "100", "9"]);
        assert_eq!(keys(&one), keys(&other));
    }

    #[test]
    fn rows_of_one_key_keep_their_arrival_order() {
        // `mode: sql` rows are not deduplicated: `n = n + :n` or last-wins statements rely on
        // each key's rows running in the order they came.
        let rows = [
            row("b", 1),
            row("a", 2),
            row("b", 3),
            row("a", 4),
            row("b", 5),
        ];
        assert_eq!(key_order(&rows, &[0]), [1, 3, 0, 2, 4]);
    }

    #[test]
    fn append_keeps_every_row() {
        let mut p = Pending::new(false);
        p.push(row("a", 1), &[]);
        p.push(row("a", 1), &[]);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_key_always_maps_to_the_same_writer() {
        let spread: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| writer_for(&row(&format!("u{i}"), i), &[0], 4))
            .collect();
        assert_eq!(spread.len(), 4);
        for i in 0..100 {
            let k = format!("u{i}");
            assert_eq!(
                writer_for(&row(&k, 1), &[0], 4),
                writer_for(&row(&k, 2), &[0], 4)
            );
        }
        assert_eq!(writer_for(&row("x", 1), &[0], 1), 0);
    }
}
