//! The coordinator's decisions, walked through every ordering of barrier acknowledgements and
//! every point at which a failure, a timeout, a savepoint request, a stop or a restart can come.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_crds::CheckpointSpec;

use super::*;
use crate::checkpoint::restore::{self, Plan};

const SOURCES: [&str; 2] = ["s1", "s2"];
const TRANSFORMS: [&str; 1] = ["t"];
const SINKS: [&str; 2] = ["k1", "k2"];

fn spec(tolerable: u32) -> CheckpointSpec {
    CheckpointSpec {
        interval: weir_crds::Duration::from_secs(1),
        timeout: weir_crds::Duration::from_secs(10),
        tolerable_failures: tolerable,
        ..CheckpointSpec::default()
    }
}

fn config(tolerable: u32) -> Config {
    Config {
        job: "j".into(),
        worker: 0,
        parallelism: 1,
        max_parallelism: 128,
        origin: None,
        checkpoint: spec(tolerable),
        sources: SOURCES.map(String::from).to_vec(),
        transforms: TRANSFORMS.map(String::from).to_vec(),
        sinks: SINKS.map(String::from).to_vec(),
    }
}

/// A machine and a clock; every command it ever returned is kept.
struct Sim {
    m: Machine,
    t0: Instant,
    now: Instant,
    log: Vec<String>,
}

impl Sim {
    fn new(tolerable: u32, next_id: u64) -> Sim {
        let t0 = Instant::now();
        Sim {
            m: Machine::new(config(tolerable), next_id, t0),
            t0,
            now: t0,
            log: Vec::new(),
        }
    }

    fn input(&mut self, i: Input) -> Vec<Command> {
        let out = self.m.handle(self.now, i);
        self.log.extend(out.iter().map(describe));
        out
    }

    /// Advances the clock to `secs` after the start and ticks.
    fn tick_at(&mut self, secs: f64) -> Vec<Command> {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self.input(Input::Tick)
    }

    fn ack(&mut self, node: &str, id: u64) -> Vec<Command> {
        self.input(Input::Node(ack(node, id)))
    }

    fn persisted(&mut self, id: u64, ok: bool) -> Vec<Command> {
        let result = if ok {
            Ok(100)
        } else {
            Err("storage down".into())
        };
        self.input(Input::Persisted {
            checkpoint: id,
            result,
        })
    }

    /// Triggers the next periodic checkpoint (one interval after the last trigger).
    fn trigger(&mut self) -> u64 {
        let mut t = self.now.duration_since(self.t0).as_secs_f64();
        for _ in 0..100 {
            t += 0.5;
            for c in self.tick_at(t) {
                if let Command::Trigger(b) = c {
                    return b.id;
                }
            }
        }
        panic!("no checkpoint was triggered: {:?}", self.log)
    }

    /// Every node acknowledges `id`; returns what the last acknowledgement produced.
    fn ack_all(&mut self, id: u64) -> Vec<Command> {
        let mut last = Vec::new();
        for n in nodes() {
            last = self.ack(&n, id);
        }
        last
    }

    fn ended(&self) -> bool {
        self.log.iter().any(|l| l.starts_with("end"))
    }
}

fn nodes() -> Vec<String> {
    SOURCES
        .iter()
        .chain(&TRANSFORMS)
        .chain(&SINKS)
        .map(|s| s.to_string())
        .collect()
}

/// The acknowledgement of `node` for checkpoint `id`; a sink's committable is `"<node>@<id>"`.
fn ack(node: &str, id: u64) -> Event {
    let node = node.to_string();
    if SOURCES.contains(&node.as_str()) {
        Event::SourceAck {
            splits: BTreeMap::from([(format!("{node}/0"), json!(id))]),
            node,
            checkpoint: id,
        }
    } else if TRANSFORMS.contains(&node.as_str()) {
        Event::OperatorAck {
            state: BTreeMap::from([(0, json!(id))]),
            node,
            checkpoint: id,
        }
    } else {
        Event::SinkAck {
            committables: vec![json!(format!("{node}@{id}"))],
            state: json!({ "sink": node }),
            node,
            checkpoint: id,
        }
    }
}

fn committed(node: &str, id: u64) -> Input {
    Input::Node(Event::Committed {
        node: node.into(),
        checkpoint: id,
    })
}

fn failed() -> Input {
    Input::Node(Event::Failed {
        node: "k1".into(),
        error: Error::node("k1", "connection reset"),
    })
}

fn describe(c: &Command) -> String {
    match c {
        Command::Trigger(b) => format!("trigger {} sp={} last={}", b.id, b.savepoint, b.last),
        Command::Persist { data, savepoint } => format!("persist {} sp={savepoint:?}", data.id),
        Command::Commit {
            sink,
            checkpoint,
            committables,
        } => format!("commit {sink} {checkpoint} {committables:?}"),
        Command::Complete(id) => format!("complete {id}"),
        Command::Retain(id) => format!("retain {id}"),
        Command::SavepointDone { id, result } => format!("savepoint {id} {}", result.is_ok()),
        Command::ShutdownSinks => "shutdown".into(),
        Command::Report(r) => format!("report {r:?}"),
        Command::End(r) => format!("end {:?}", r.as_ref().map_err(|e| e.to_string())),
    }
}

fn persist_of(out: &[Command]) -> Option<&WorkerCheckpoint> {
    out.iter().find_map(|c| match c {
        Command::Persist { data, .. } => Some(data.as_ref()),
        _ => None,
    })
}

fn commits(out: &[Command]) -> BTreeMap<String, Vec<Value>> {
    out.iter()
        .filter_map(|c| match c {
            Command::Commit {
                sink, committables, ..
            } => Some((sink.clone(), committables.clone())),
            _ => None,
        })
        .collect()
}

/// Every permutation of `items` (Heap's algorithm).
fn permutations(items: &[String]) -> Vec<Vec<String>> {
    fn heap(k: usize, a: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        heap(k - 1, a, out);
        for i in 0..k - 1 {
            if k.is_multiple_of(2) {
                a.swap(i, k - 1);
            } else {
                a.swap(0, k - 1);
            }
            heap(k - 1, a, out);
        }
    }
    let mut a = items.to_vec();
    let mut out = Vec::new();
    heap(a.len(), &mut a, &mut out);
    out
}

#[test]
fn acks_in_every_order_write_the_checkpoint_once_after_the_last_then_commit() {
    let orders = permutations(&nodes());
    assert_eq!(orders.len(), 120);
    for order in orders {
        let mut sim = Sim::new(0, 1);
        let id = sim.trigger();
        assert_eq!(id, 1);
        for (k, node) in order.iter().enumerate() {
            let out = sim.ack(node, id);
            let written = persist_of(&out);
            assert_eq!(written.is_some(), k == order.len() - 1, "{order:?} at {k}");
        }
        let data = sim.log.iter().filter(|l| l.starts_with("persist")).count();
        assert_eq!(data, 1, "{order:?}");
        assert!(
            !sim.log.iter().any(|l| l.starts_with("commit")),
            "{order:?}"
        );
        let out = sim.persisted(id, true);
        let kinds: Vec<String> = out
            .iter()
            .map(|c| describe(c).split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            ["report", "commit", "commit", "complete", "retain"],
            "{order:?}"
        );
        assert_eq!(
            commits(&out),
            BTreeMap::from([
                ("k1".into(), vec![json!("k1@1")]),
                ("k2".into(), vec![json!("k2@1")])
            ])
        );
    }
}

#[test]
fn the_written_checkpoint_holds_every_ack() {
    let mut sim = Sim::new(0, 5);
    let id = sim.trigger();
    assert_eq!(id, 5, "ids continue from the restored checkpoint");
    let out = sim.ack_all(id);
    let data = persist_of(&out).expect("written after the last ack");
    assert_eq!(data.sources["s1"]["s1/0"], json!(5));
    assert_eq!(data.operators["t"][&0], json!(5));
    assert_eq!(data.sinks["k2"].committables, vec![json!("k2@5")]);
    assert_eq!(data.sinks["k2"].states, vec![json!({"sink": "k2"})]);
}

/// Runs acknowledgements in `order`, with `disrupt` fed after the first `at` of them.
fn run_with(order: &[String], at: usize, tolerable: u32, disrupt: &dyn Fn(&mut Sim)) -> Sim {
    let mut sim = Sim::new(tolerable, 1);
    let id = sim.trigger();
    for (k, node) in order.iter().enumerate() {
        if k == at {
            disrupt(&mut sim);
        }
        sim.ack(node, id);
    }
    if at == order.len() {
        disrupt(&mut sim);
    }
    sim
}

#[test]
fn a_node_failure_at_any_point_ends_the_worker_before_anything_commits() {
    for order in permutations(&nodes()) {
        for at in 0..=order.len() {
            let mut sim = run_with(&order, at, 5, &|sim| {
                sim.input(failed());
            });
            // Even the write finishing afterwards commits nothing: the worker has ended.
            sim.persisted(1, true);
            assert!(sim.ended(), "{order:?} at {at}");
            let end = sim.log.iter().position(|l| l.starts_with("end")).unwrap();
            assert!(
                sim.log[end].contains("connection reset"),
                "{}",
                sim.log[end]
            );
            assert_eq!(
                end,
                sim.log.len() - 1,
                "nothing after the end: {:?}",
                sim.log
            );
            assert!(!sim.log.iter().any(|l| l.starts_with("commit")));
        }
    }
}

#[test]
fn a_failure_while_the_checkpoint_is_written_commits_nothing() {
    let mut sim = Sim::new(5, 1);
    let id = sim.trigger();
    sim.ack_all(id);
    sim.input(failed());
    assert!(sim.persisted(id, true).is_empty());
    assert!(!sim.log.iter().any(|l| l.starts_with("commit")));
}

#[test]
fn a_timeout_at_any_point_below_the_threshold_carries_the_committables_to_the_next_checkpoint() {
    for order in permutations(&nodes()) {
        for at in 0..order.len() {
            // Acks after the timeout are late: only the committables they carry count.
            let mut sim = run_with(&order, at, 1, &|sim| {
                let out = sim.tick_at(sim.now.duration_since(sim.t0).as_secs_f64() + 11.0);
                assert!(matches!(
                    out.as_slice(),
                    [Command::Report(Report::Failed { checkpoint: 1, .. })]
                ));
            });
            assert!(!sim.ended(), "{order:?} at {at}: {:?}", sim.log);
            assert!(!sim.log.iter().any(|l| l.starts_with("persist")));
            let next = sim.trigger();
            assert_eq!(next, 2);
            let out = sim.ack_all(next);
            let data = persist_of(&out).expect("checkpoint 2 written");
            assert_eq!(
                data.sinks["k1"].committables,
                vec![json!("k1@1"), json!("k1@2")],
                "{order:?} at {at}"
            );
            let out = sim.persisted(next, true);
            assert_eq!(
                commits(&out)["k2"],
                vec![json!("k2@1"), json!("k2@2")],
                "{order:?} at {at}"
            );
            assert_eq!(sim.m.consecutive_failures(), 0);
        }
    }
}

#[test]
fn a_timeout_above_the_threshold_ends_the_worker_into_its_restart_strategy() {
    for order in permutations(&nodes()) {
        for at in 0..order.len() {
            let sim = run_with(&order, at, 0, &|sim| {
                sim.tick_at(sim.now.duration_since(sim.t0).as_secs_f64() + 11.0);
            });
            let end = sim
                .log
                .iter()
                .find(|l| l.starts_with("end"))
                .expect("ended");
            assert!(
                end.contains("timed out") && end.contains("exceed tolerable_failures (0)"),
                "{end}"
            );
        }
    }
}

#[test]
fn storage_failures_are_counted_in_a_row_on_both_sides_of_the_threshold() {
    // tolerable 2: two failed writes, then a good one, then two more: the job goes on.
    let mut sim = Sim::new(2, 1);
    for (round, ok) in [false, false, true, false, false, true]
        .into_iter()
        .enumerate()
    {
        let id = sim.trigger();
        assert_eq!(id, round as u64 + 1);
        sim.ack_all(id);
        let out = sim.persisted(id, ok);
        assert!(!sim.ended(), "round {round}: {:?}", sim.log);
        if ok {
            // Every committable since the last success is committed, each exactly once.
            let k1 = &commits(&out)["k1"];
            let want: Vec<Value> = (id - 2..=id).map(|i| json!(format!("k1@{i}"))).collect();
            assert_eq!(k1, &want);
            sim.input(committed("k1", id));
            sim.input(committed("k2", id));
        } else {
            assert!(matches!(
                out.as_slice(),
                [Command::Report(Report::Failed { .. })]
            ));
        }
    }
    // A third failure in a row is one too many.
    for _ in 0..3 {
        let id = sim.trigger();
        sim.ack_all(id);
        sim.persisted(id, false);
    }
    let end = sim
        .log
        .iter()
        .find(|l| l.starts_with("end"))
        .expect("ended");
    assert!(
        end.contains("could not be written: storage down")
            && end.contains("3 consecutive checkpoint failures exceed tolerable_failures (2)"),
        "{end}"
    );
}

#[test]
fn a_write_that_outlives_its_timeout_is_ignored() {
    let mut sim = Sim::new(3, 1);
    let id = sim.trigger();
    sim.ack_all(id);
    sim.tick_at(12.0);
    assert!(sim.persisted(id, true).is_empty(), "{:?}", sim.log);
    assert!(!sim.log.iter().any(|l| l.starts_with("commit")));
}

#[test]
fn a_savepoint_requested_at_any_point_takes_the_next_slot_and_is_answered_once() {
    for order in permutations(&nodes()) {
        for at in 0..=order.len() {
            let mut sim = run_with(&order, at, 0, &|sim| {
                sim.input(Input::Savepoint {
                    id: "sp".into(),
                    stop: false,
                });
            });
            sim.persisted(1, true);
            // Right after the checkpoint in flight, without waiting for the interval.
            let out = sim.input(Input::Tick);
            assert!(
                matches!(
                    out.as_slice(),
                    [Command::Trigger(Barrier {
                        id: 2,
                        savepoint: true,
                        last: false
                    })]
                ),
                "{order:?} at {at}: {:?}",
                sim.log
            );
            let out = sim.ack_all(2);
            assert!(matches!(
                out.last(),
                Some(Command::Persist { savepoint: Some(s), .. }) if s == "sp"
            ));
            sim.persisted(2, true);
            let answers: Vec<&String> = sim
                .log
                .iter()
                .filter(|l| l.starts_with("savepoint"))
                .collect();
            assert_eq!(answers, ["savepoint sp true"]);
            assert!(!sim.ended());
        }
    }
}

#[test]
fn a_savepoint_whose_checkpoint_fails_is_answered_with_the_reason() {
    let mut sim = Sim::new(3, 1);
    sim.input(Input::Savepoint {
        id: "sp".into(),
        stop: true,
    });
    let out = sim.tick_at(0.01);
    assert!(
        matches!(out.as_slice(), [Command::Report(Report::State(WorkerState::Finishing)), Command::Trigger(b)] if b.last && b.savepoint)
    );
    sim.ack_all(1);
    let out = sim.persisted(1, false);
    assert!(out.iter().any(|c| matches!(
        c,
        Command::SavepointDone { id, result: Err(e) } if id == "sp" && e.contains("storage down")
    )));
    // The last barrier failed: the worker ends (and restarts) rather than hang.
    assert!(sim
        .log
        .last()
        .unwrap()
        .contains("the final checkpoint failed"));
}

#[test]
fn stop_with_savepoint_ends_once_every_sink_confirmed_its_commit() {
    for commit_order in permutations(&SINKS.map(String::from)) {
        let mut sim = Sim::new(0, 1);
        sim.input(Input::Savepoint {
            id: "sp".into(),
            stop: true,
        });
        sim.tick_at(0.01);
        sim.ack_all(1);
        sim.persisted(1, true);
        // Savepoints and further checkpoints are refused or not started while closing.
        let out = sim.input(Input::Savepoint {
            id: "late".into(),
            stop: false,
        });
        assert!(matches!(
            out.as_slice(),
            [Command::SavepointDone { result: Err(_), .. }]
        ));
        assert!(sim.tick_at(30.0).is_empty());
        let first = sim.input(committed(&commit_order[0], 1));
        assert!(first.is_empty());
        let last = sim.input(committed(&commit_order[1], 1));
        assert_eq!(
            last.iter().map(describe).collect::<Vec<_>>(),
            ["shutdown", "end Ok(Stopped)"]
        );
    }
}

#[test]
fn stop_finishes_the_checkpoint_in_flight_and_waits_for_its_commits() {
    let mut sim = Sim::new(0, 1);
    let id = sim.trigger();
    sim.ack(SOURCES[0], id);
    assert_eq!(
        sim.input(Input::Stop)
            .iter()
            .map(describe)
            .collect::<Vec<_>>(),
        ["report State(Finishing)"]
    );
    assert!(
        sim.input(Input::Tick).is_empty(),
        "the checkpoint is still in flight"
    );
    for n in nodes().iter().skip(1) {
        sim.ack(n, id);
    }
    sim.persisted(id, true);
    // Then a final checkpoint of the stop's own, which closes every open part (`last`), and
    // the worker ends once every sink has committed it.
    let out = sim.input(Input::Tick);
    assert_eq!(
        out.iter().map(describe).collect::<Vec<_>>(),
        [format!("trigger {} sp=false last=true", id + 1)]
    );
    sim.input(committed("k1", id));
    sim.input(committed("k2", id));
    assert!(!sim
        .input(Input::Tick)
        .iter()
        .any(|c| matches!(c, Command::End(_))));
    sim.ack_all(id + 1);
    sim.persisted(id + 1, true);
    sim.input(committed("k1", id + 1));
    let out = sim.input(committed("k2", id + 1));
    assert_eq!(
        out.iter().map(describe).collect::<Vec<_>>(),
        ["shutdown", "end Ok(Stopped)"]
    );
}

#[test]
fn stop_without_checkpointing_ends_at_once() {
    let mut cfg = config(0);
    cfg.checkpoint.enabled = false;
    let t0 = Instant::now();
    let mut sim = Sim {
        m: Machine::new(cfg, 1, t0),
        t0,
        now: t0,
        log: Vec::new(),
    };
    sim.input(Input::Stop);
    assert_eq!(
        sim.input(Input::Tick)
            .iter()
            .map(describe)
            .collect::<Vec<_>>(),
        ["end Ok(Stopped)"]
    );
}

#[test]
fn bounded_input_ends_with_a_last_checkpoint() {
    let mut sim = Sim::new(0, 1);
    for s in SOURCES {
        sim.input(Input::Node(Event::SourceFinished { node: s.into() }));
    }
    let out = sim.input(Input::Tick);
    assert!(matches!(out.last(), Some(Command::Trigger(b)) if b.last && !b.savepoint));
    sim.ack_all(1);
    sim.persisted(1, true);
    sim.input(committed("k2", 1));
    let out = sim.input(committed("k1", 1));
    assert_eq!(
        out.iter().map(describe).collect::<Vec<_>>(),
        ["shutdown", "end Ok(Finished)"]
    );
}

#[test]
fn late_commit_confirmations_commit_again_and_then_drop_out() {
    let mut sim = Sim::new(0, 1);
    let a = sim.trigger();
    sim.ack_all(a);
    sim.persisted(a, true);
    // Checkpoint 2 completes before the sinks confirmed checkpoint 1: commit both (idempotent).
    let b = sim.trigger();
    sim.ack_all(b);
    let out = sim.persisted(b, true);
    assert_eq!(commits(&out)["k1"], vec![json!("k1@1"), json!("k1@2")]);
    sim.input(committed("k1", b));
    let c = sim.trigger();
    sim.ack_all(c);
    let out = sim.persisted(c, true);
    assert_eq!(commits(&out)["k1"], vec![json!("k1@3")]);
    assert_eq!(
        commits(&out)["k2"],
        vec![json!("k2@1"), json!("k2@2"), json!("k2@3")]
    );
}

#[test]
fn min_pause_and_interval_space_the_checkpoints() {
    let mut sim = Sim::new(0, 1);
    sim.m.cfg.checkpoint.min_pause = weir_crds::Duration::from_secs(3);
    assert!(sim.tick_at(0.5).is_empty());
    assert!(sim.tick_at(2.9).is_empty(), "min pause since the start");
    assert!(matches!(sim.tick_at(3.0).as_slice(), [Command::Trigger(_)]));
    sim.ack_all(1);
    sim.tick_at(4.0);
    sim.persisted(1, true);
    assert!(sim.tick_at(6.9).is_empty(), "3s after the end at 4s");
    assert!(matches!(sim.tick_at(7.0).as_slice(), [Command::Trigger(_)]));
}

/// A failure at every point of a checkpoint's life, then an in-process restart: the restart
/// starts from the newest checkpoint that was written, its sinks get that checkpoint's
/// committables to recover, and nothing of the failed generation is committed.
#[test]
fn a_restart_after_a_failure_at_any_point_resumes_from_the_last_written_checkpoint() {
    // Points: after k acks of checkpoint 2 (0..=4), once its write was asked for (5), and
    // after the write succeeded but before the sinks confirmed their commits (6).
    for point in 0..=6 {
        let mut store: BTreeMap<u64, WorkerCheckpoint> = BTreeMap::new();
        let mut sim = Sim::new(0, 1);
        let one = sim.trigger();
        let out = sim.ack_all(one);
        store.insert(one, persist_of(&out).unwrap().clone());
        sim.persisted(one, true);
        let two = sim.trigger();
        for (k, n) in nodes().iter().enumerate() {
            if k == point {
                break;
            }
            let out = sim.ack(n, two);
            if let Some(d) = persist_of(&out) {
                if point == 6 {
                    store.insert(two, d.clone());
                    sim.persisted(two, true);
                }
            }
        }
        sim.input(failed());
        assert!(sim.ended());
        let commits_of_two = sim.log.iter().filter(|l| l.contains(" 2 [")).count();
        assert_eq!(commits_of_two, if point == 6 { 2 } else { 0 });

        let latest = store.values().last().unwrap();
        let p = restore::plan(&restore::Inputs {
            job: "j",
            worker: 0,
            parallelism: 1,
            max_parallelism: 128,
            latest: Some(latest),
            newest_id: two,
            savepoint: None,
            fresh: None,
        })
        .unwrap();
        let Plan::Resume { restore, .. } = p else {
            panic!("a restart resumes")
        };
        let want = if point == 6 { two } else { one };
        assert_eq!(restore.checkpoint_id, want, "point {point}");
        assert_eq!(
            restore.sinks["k1"].1,
            (1..=want)
                .map(|i| json!(format!("k1@{i}")))
                .collect::<Vec<_>>(),
            "point {point}: the sinks recover every committable of the restored checkpoint"
        );
        // The new generation continues the ids and owes nothing from the old one.
        let mut next = Sim::new(0, restore.checkpoint_id + 1);
        let id = next.trigger();
        assert_eq!(id, want + 1);
        let out = next.ack_all(id);
        assert_eq!(
            persist_of(&out).unwrap().sinks["k1"].committables,
            vec![json!(format!("k1@{id}"))]
        );
    }
}
