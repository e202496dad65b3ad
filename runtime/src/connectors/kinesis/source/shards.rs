//! Shards as splits: which worker owns a shard, where each owned shard stands when the source
//! opens, when a child shard may start, and when a finished shard may leave the checkpoint.
//! Pure; the source feeds it what ListShards, GetRecords and the checkpoints say.
//!
//! The rules, against the bug class of FLINK-32218 and quickwit#5896 (children read before or
//! beside their parents, parents read again after a restore):
//! - a child is read only once every parent is finished: read to its end by this worker, or
//!   marked finished in the checkpoint of the worker that owns it, or gone from the listing
//!   (expired);
//! - a shard with no position in the checkpoint is finished if any descendant has one (it was
//!   dropped from the state once its children were underway);
//! - a finished shard stays in the checkpoint until it has expired or every child is this
//!   worker's own and underway, so no restore can mistake it for a new shard.

use std::collections::{BTreeMap, BTreeSet};

use super::position::Position;

/// A shard as ListShards (or ChildShards at a shard's end) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    /// ParentShardId and AdjacentParentShardId (after a merge), or the ChildShards' parents.
    pub parents: Vec<String>,
    pub hash_start: u128,
    pub hash_end: u128,
    /// Has an ending sequence number: no record will be added.
    pub closed: bool,
    /// The shard's StartingSequenceNumber, where the listing gives it.
    pub first_sequence: Option<String>,
}

/// The worker that owns a shard: the midpoint of its hash-key range, as a fraction of the key
/// space turned by an offset derived from the stream name, times the parallelism. Evenly split
/// shards (what UpdateShardCount makes) spread evenly whatever the offset, a split's children
/// mostly stay with their parent's worker, and streams with one shard each do not all land on
/// the same worker.
pub fn owner(stream: &str, shard: &ShardInfo, parallelism: u32) -> u32 {
    let (lo, hi) = (
        shard.hash_start.min(shard.hash_end),
        shard.hash_start.max(shard.hash_end),
    );
    let mid = lo + (hi - lo) / 2;
    let offset = (crc32fast::hash(stream.as_bytes()) as u64) << 32;
    let turned = ((mid >> 64) as u64).wrapping_add(offset);
    ((turned as u128 * parallelism.max(1) as u128) >> 64) as u32
}

/// The shards of one stream: as last listed, plus children announced at shard ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardGraph {
    shards: BTreeMap<String, ShardInfo>,
}

impl ShardGraph {
    pub fn new(list: impl IntoIterator<Item = ShardInfo>) -> Self {
        ShardGraph {
            shards: list.into_iter().map(|s| (s.id.clone(), s)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&ShardInfo> {
        self.shards.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.shards.contains_key(id)
    }

    pub fn shards(&self) -> impl Iterator<Item = &ShardInfo> {
        self.shards.values()
    }

    /// Learns a shard (a child announced at its parent's end); a listed one keeps its entry.
    pub fn learn(&mut self, info: ShardInfo) -> bool {
        if self.shards.contains_key(&info.id) {
            return false;
        }
        self.shards.insert(info.id.clone(), info);
        true
    }

    /// Takes a new listing; returns the shards it no longer has (expired).
    pub fn relist(&mut self, list: Vec<ShardInfo>) -> Vec<String> {
        let new: BTreeMap<String, ShardInfo> =
            list.into_iter().map(|s| (s.id.clone(), s)).collect();
        let gone = self
            .shards
            .keys()
            .filter(|id| !new.contains_key(*id))
            .cloned()
            .collect();
        self.shards = new;
        gone
    }

    pub fn children<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a ShardInfo> + 'a {
        self.shards
            .values()
            .filter(move |s| s.parents.iter().any(|p| p == id))
    }

    /// Every shard that descends from `id`.
    pub fn descendants(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![id.to_string()];
        while let Some(cur) = todo.pop() {
            for c in self.children(&cur) {
                if out.insert(c.id.clone()) {
                    todo.push(c.id.clone());
                }
            }
        }
        out
    }

    /// Every listed shard `id` descends from.
    pub fn ancestors(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![id.to_string()];
        while let Some(cur) = todo.pop() {
            if let Some(s) = self.shards.get(&cur) {
                for p in &s.parents {
                    if self.shards.contains_key(p) && out.insert(p.clone()) {
                        todo.push(p.clone());
                    }
                }
            }
        }
        out
    }

    /// The parents of `shard` that are still listed (an unlisted parent has expired).
    pub fn listed_parents<'a>(&'a self, shard: &'a ShardInfo) -> impl Iterator<Item = &'a str> {
        shard
            .parents
            .iter()
            .filter(|p| self.shards.contains_key(*p))
            .map(String::as_str)
    }
}

/// Where an owned shard stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its parents to finish; it then starts at its trim horizon.
    Waiting,
    Reading(Position),
    Finished,
}

/// How a stream that this job has never read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstStart {
    /// Every shard from its oldest record, parents before children.
    TrimHorizon,
    /// Records that arrived at or after `at`: the shards open at that time (`frontier`, from
    /// ListShards with a timestamp filter; `latest` is the time of the start with the shards
    /// open now) start there, their ancestors count as finished, their descendants wait.
    AtTimestamp { at: i64, frontier: BTreeSet<String> },
}

/// Whether `id` is finished by what a checkpoint state (shard id → position) says: marked
/// finished, or dropped once a descendant had a position.
pub fn finished_in(graph: &ShardGraph, state: &BTreeMap<String, Position>, id: &str) -> bool {
    match state.get(id) {
        Some(p) => p.is_finished(),
        None => graph.descendants(id).iter().any(|d| state.contains_key(d)),
    }
}

/// Where each owned, listed shard stands when the source opens. `restored` holds the positions
/// of the checkpoint (of this worker, or of every worker after a savepoint); `first` is `None`
/// when the stream was read before (its marker is in the checkpoint): shards without a position
/// then start at their trim horizon, being new.
pub fn plan(
    graph: &ShardGraph,
    restored: &BTreeMap<String, Position>,
    first: Option<&FirstStart>,
    owned: impl Fn(&ShardInfo) -> bool,
) -> BTreeMap<String, Status> {
    let frontier_ancestors: BTreeSet<String> = match first {
        Some(FirstStart::AtTimestamp { frontier, .. }) => {
            frontier.iter().flat_map(|f| graph.ancestors(f)).collect()
        }
        _ => BTreeSet::new(),
    };
    let mut out = BTreeMap::new();
    for s in graph.shards().filter(|s| owned(s)) {
        let has_parents = graph.listed_parents(s).next().is_some();
        let status = match restored.get(&s.id) {
            Some(Position::Finished) => Status::Finished,
            Some(p) => Status::Reading(p.clone()),
            None if finished_in(graph, restored, &s.id) => Status::Finished,
            None => match first {
                None if has_parents => Status::Waiting,
                None => Status::Reading(Position::TrimHorizon),
                Some(FirstStart::TrimHorizon) if has_parents => Status::Waiting,
                Some(FirstStart::TrimHorizon) => Status::Reading(Position::TrimHorizon),
                Some(FirstStart::AtTimestamp { at, frontier }) => {
                    if frontier.contains(&s.id) {
                        Status::Reading(Position::AtTimestamp(*at))
                    } else if frontier_ancestors.contains(&s.id) {
                        Status::Finished
                    } else if has_parents {
                        Status::Waiting
                    } else {
                        Status::Reading(Position::AtTimestamp(*at))
                    }
                }
            },
        };
        out.insert(s.id.clone(), status);
    }
    out
}

/// Whether a waiting shard may start: each listed parent is done (`done` decides for a parent:
/// finished here, or in its owner's checkpoint).
pub fn ready(graph: &ShardGraph, shard: &ShardInfo, done: impl Fn(&str) -> bool) -> bool {
    graph.listed_parents(shard).all(done)
}

/// Whether a finished shard may leave the checkpoint: it has expired, or it has children and
/// each is this worker's and underway (`mine_and_started`), which implies it is finished.
pub fn droppable(graph: &ShardGraph, id: &str, mine_and_started: impl Fn(&str) -> bool) -> bool {
    if !graph.contains(id) {
        return true;
    }
    let mut children = graph.children(id).peekable();
    children.peek().is_some() && children.all(|c| mine_and_started(&c.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u128 = u128::MAX;

    fn shard(id: &str, parents: &[&str], start: u128, end: u128, closed: bool) -> ShardInfo {
        ShardInfo {
            first_sequence: None,
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            hash_start: start,
            hash_end: end,
            closed,
        }
    }

    /// `n` shards splitting the key space evenly, ids s0…
    fn even(n: u128) -> Vec<ShardInfo> {
        let step = MAX / n;
        (0..n)
            .map(|i| {
                let end = if i == n - 1 { MAX } else { (i + 1) * step - 1 };
                shard(&format!("s{i}"), &[], i * step, end, false)
            })
            .collect()
    }

    /// s0 split into s1, s2; s1 and s2 merged into s3.
    fn split_then_merge() -> ShardGraph {
        let half = MAX / 2;
        ShardGraph::new([
            shard("s0", &[], 0, MAX, true),
            shard("s1", &["s0"], 0, half, true),
            shard("s2", &["s0"], half + 1, MAX, true),
            shard("s3", &["s1", "s2"], 0, MAX, false),
        ])
    }

    #[test]
    fn even_shards_spread_evenly_whatever_the_stream() {
        for stream in ["orders", "payments", "x"] {
            for (n, p) in [(4, 2), (4, 4), (8, 2), (6, 3), (12, 4)] {
                let mut per = vec![0; p as usize];
                for s in even(n) {
                    per[owner(stream, &s, p) as usize] += 1;
                }
                assert!(
                    per.iter().all(|c| *c == n / p as u128),
                    "{stream} n={n} p={p}: {per:?}"
                );
            }
            for s in even(4) {
                assert_eq!(owner(stream, &s, 1), 0);
            }
        }
    }

    #[test]
    fn owners_do_not_depend_on_other_shards() {
        let a = even(4);
        let before: Vec<u32> = a.iter().map(|s| owner("t", s, 3)).collect();
        let again: Vec<u32> = even(4).iter().map(|s| owner("t", s, 3)).collect();
        assert_eq!(before, again);
    }

    #[test]
    fn a_first_start_from_the_trim_horizon_waits_for_parents() {
        let g = split_then_merge();
        let p = plan(&g, &BTreeMap::new(), Some(&FirstStart::TrimHorizon), |_| {
            true
        });
        assert_eq!(p["s0"], Status::Reading(Position::TrimHorizon));
        assert_eq!(p["s1"], Status::Waiting);
        assert_eq!(p["s3"], Status::Waiting);
    }

    #[test]
    fn a_first_start_at_a_time_reads_the_shards_open_then() {
        let g = split_then_merge();
        let first = FirstStart::AtTimestamp {
            at: 5_000,
            frontier: ["s1".to_string(), "s2".to_string()].into(),
        };
        let p = plan(&g, &BTreeMap::new(), Some(&first), |_| true);
        assert_eq!(p["s0"], Status::Finished, "closed before the time");
        assert_eq!(p["s1"], Status::Reading(Position::AtTimestamp(5_000)));
        assert_eq!(p["s2"], Status::Reading(Position::AtTimestamp(5_000)));
        assert_eq!(p["s3"], Status::Waiting, "created after the time");
    }

    #[test]
    fn a_restore_keeps_positions_and_infers_dropped_parents() {
        let g = split_then_merge();
        // s0 was dropped from the state once s1 and s2 were underway.
        let restored: BTreeMap<String, Position> = [
            ("s1".to_string(), Position::Finished),
            ("s2".to_string(), Position::After("77".into())),
        ]
        .into();
        let p = plan(&g, &restored, None, |_| true);
        assert_eq!(p["s0"], Status::Finished, "implied by its children");
        assert_eq!(p["s1"], Status::Finished);
        assert_eq!(p["s2"], Status::Reading(Position::After("77".into())));
        assert_eq!(p["s3"], Status::Waiting);
        // A new root (a shard whose parents expired) is read from its start after a restore.
        let g2 = ShardGraph::new([shard("s9", &["gone"], 0, MAX, false)]);
        let p2 = plan(&g2, &BTreeMap::new(), None, |_| true);
        assert_eq!(p2["s9"], Status::Reading(Position::TrimHorizon));
    }

    #[test]
    fn only_owned_shards_are_planned() {
        let g = ShardGraph::new(even(4));
        let p = plan(&g, &BTreeMap::new(), Some(&FirstStart::TrimHorizon), |s| {
            owner("t", s, 2) == 0
        });
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_child_waits_for_every_parent() {
        let g = split_then_merge();
        let s3 = g.get("s3").unwrap();
        assert!(!ready(&g, s3, |p| p == "s1"));
        assert!(ready(&g, s3, |p| p == "s1" || p == "s2"));
        // An expired parent is no longer listed and does not hold the child back.
        let mut g2 = g.clone();
        g2.relist(g.shards().filter(|s| s.id != "s2").cloned().collect());
        assert!(ready(&g2, g2.get("s3").unwrap(), |p| p == "s1"));
    }

    #[test]
    fn finished_shards_leave_the_state_only_when_that_is_safe() {
        let g = split_then_merge();
        assert!(!droppable(&g, "s3", |_| true), "no children: keep");
        assert!(!droppable(&g, "s0", |c| c == "s1"), "s2 not underway here");
        assert!(droppable(&g, "s0", |c| c == "s1" || c == "s2"));
        assert!(droppable(&g, "gone", |_| false), "expired");
    }

    #[test]
    fn finished_in_a_state_by_mark_or_by_descendant() {
        let g = split_then_merge();
        let state: BTreeMap<String, Position> =
            [("s3".to_string(), Position::After("5".into()))].into();
        assert!(finished_in(&g, &state, "s0"));
        assert!(finished_in(&g, &state, "s1"));
        assert!(!finished_in(&g, &state, "s3"));
        let marked: BTreeMap<String, Position> = [("s1".to_string(), Position::Finished)].into();
        assert!(finished_in(&g, &marked, "s1"));
        assert!(!finished_in(&g, &marked, "s2"));
    }
}
