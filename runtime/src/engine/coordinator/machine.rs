//! The checkpoint coordinator of one worker as a pure state machine: [`Machine::handle`] takes
//! one [`Input`] (a node's acknowledgement, a savepoint or stop request, a clock tick, the
//! outcome of a storage write) and returns the [`Command`]s to carry out, in order. It owns
//! every decision of the checkpoint and two-phase-commit contract; the tokio loop in
//! `coordinator/mod.rs` only moves inputs in and commands out.
//!
//! The contract, as the machine enforces it:
//! - one checkpoint in flight; the next starts `interval` after the last trigger and `min_pause`
//!   after the last end; a savepoint request or the end of every source takes the next slot;
//! - a checkpoint is written once every source, transform and sink acknowledged its barrier;
//! - sinks are told to commit only after the write succeeded, with every committable
//!   pre-committed up to that checkpoint and not yet confirmed as committed;
//! - a checkpoint that times out or cannot be written is counted; its committables ride on the
//!   next one; more than `tolerable_failures` failures in a row end the worker (its restart
//!   strategy takes over);
//! - the last checkpoint (bounded input, or a stop-with-savepoint) ends the worker once every
//!   sink confirmed its commit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_crds::CheckpointSpec;

use crate::checkpoint::{SinkCheckpoint, WorkerCheckpoint};
use crate::engine::nodes::Event;
use crate::error::Error;
use crate::record::Barrier;
use weir_crds::contract::WorkerState;

/// How a worker ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerOutcome {
    /// Bounded input fully processed and committed.
    Finished,
    /// Stopped on request (SIGTERM), or by a stop-with-savepoint.
    Stopped,
}

/// What the machine knows of its worker.
#[derive(Clone, Debug)]
pub struct Config {
    pub job: String,
    pub worker: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// The savepoint or start token this run started from, carried by every checkpoint.
    pub origin: Option<String>,
    pub checkpoint: CheckpointSpec,
    pub sources: Vec<String>,
    pub transforms: Vec<String>,
    pub sinks: Vec<String>,
}

#[derive(Debug)]
pub enum Input {
    Node(Event),
    Savepoint {
        id: String,
        stop: bool,
    },
    /// Finish the checkpoint in flight and the commits it started, then end.
    Stop,
    /// Time passed (the loop ticks every 10 ms).
    Tick,
    /// The outcome of a [`Command::Persist`]: the bytes written, or why not.
    Persisted {
        checkpoint: u64,
        result: Result<u64, String>,
    },
}

#[derive(Debug)]
pub enum Command {
    /// Inject this barrier at every source.
    Trigger(Barrier),
    /// Write this checkpoint (and, for a savepoint, its savepoint part), then report
    /// [`Input::Persisted`].
    Persist {
        data: Box<WorkerCheckpoint>,
        savepoint: Option<String>,
    },
    /// Tell a sink to commit (possibly nothing: the sink then just confirms).
    Commit {
        sink: String,
        checkpoint: u64,
        committables: Vec<Value>,
    },
    /// Tell the sources that checkpoint `n` is durable.
    Complete(u64),
    /// Delete checkpoints older than the retained ones, `n` being the newest complete.
    Retain(u64),
    SavepointDone {
        id: String,
        result: Result<(), String>,
    },
    /// Every sink confirmed the last commit: let them close.
    ShutdownSinks,
    Report(Report),
    /// The worker is done; nothing follows.
    End(Result<WorkerOutcome, Error>),
}

/// What the status and metrics learn.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    State(WorkerState),
    Completed {
        checkpoint: u64,
        duration: Duration,
        bytes: u64,
        savepoint: bool,
        splits: BTreeMap<String, BTreeMap<String, Value>>,
    },
    Failed {
        checkpoint: u64,
        why: String,
    },
    Watermark {
        node: String,
        watermark: i64,
        /// The lowest watermark over the worker's nodes.
        lowest: i64,
    },
}

#[derive(Debug)]
struct InFlight {
    barrier: Barrier,
    started: Instant,
    savepoint: Option<String>,
    /// Nodes whose acknowledgement is missing.
    waiting: BTreeSet<String>,
    data: WorkerCheckpoint,
    sink_states: BTreeMap<String, Value>,
    /// Set once written out: the committables each sink commits when the write succeeds.
    persisting: Option<Vec<(String, Vec<Value>)>>,
}

/// After the last checkpoint: the sinks whose commit is still unconfirmed.
#[derive(Debug)]
struct Closing {
    checkpoint: u64,
    waiting: BTreeSet<String>,
    outcome: WorkerOutcome,
}

pub struct Machine {
    cfg: Config,
    next_id: u64,
    in_flight: Option<InFlight>,
    /// Pre-committed, not yet confirmed as committed, per sink: (checkpoint id, committables).
    pending: BTreeMap<String, Vec<(u64, Vec<Value>)>>,
    finished_sources: BTreeSet<String>,
    savepoints: VecDeque<(String, bool)>,
    last_trigger: Instant,
    last_end: Instant,
    consecutive_failures: u32,
    stopping: bool,
    /// The last barrier went out: no new checkpoint or savepoint starts.
    last_sent: bool,
    closing: Option<Closing>,
    /// Sinks told to commit the newest completed checkpoint that have not confirmed yet.
    uncommitted: BTreeSet<String>,
    uncommitted_id: u64,
    watermarks: BTreeMap<String, i64>,
    ended: bool,
}

impl Machine {
    /// A machine whose first checkpoint is `next_id` (one more than the checkpoint restored).
    pub fn new(cfg: Config, next_id: u64, now: Instant) -> Self {
        Machine {
            cfg,
            next_id,
            in_flight: None,
            pending: BTreeMap::new(),
            finished_sources: BTreeSet::new(),
            savepoints: VecDeque::new(),
            last_trigger: now,
            last_end: now,
            consecutive_failures: 0,
            stopping: false,
            last_sent: false,
            closing: None,
            uncommitted: BTreeSet::new(),
            uncommitted_id: 0,
            watermarks: BTreeMap::new(),
            ended: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Consecutive failed checkpoints so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The commands for one input, in the order they must be carried out. After an
    /// [`Command::End`] every input yields nothing.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Command> {
        if self.ended {
            return Vec::new();
        }
        let mut out = Vec::new();
        match input {
            Input::Node(ev) => self.on_event(ev, &mut out),
            Input::Savepoint { id, stop } => {
                if self.stopping || self.last_sent {
                    out.push(Command::SavepointDone {
                        id,
                        result: Err("the job is stopping; no savepoint can be taken".into()),
                    });
                } else {
                    self.savepoints.push_back((id, stop));
                }
            }
            Input::Stop => {
                if !self.stopping {
                    self.stopping = true;
                    out.push(Command::Report(Report::State(WorkerState::Finishing)));
                }
            }
            Input::Tick => self.on_tick(now, &mut out),
            Input::Persisted { checkpoint, result } => {
                self.on_persisted(now, checkpoint, result, &mut out)
            }
        }
        if out.iter().any(|c| matches!(c, Command::End(_))) {
            self.ended = true;
        }
        out
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Command>) {
        if let Some(f) = &self.in_flight {
            if now.duration_since(f.started) > self.cfg.checkpoint.timeout.as_std() {
                let why = format!(
                    "checkpoint {} timed out after {}",
                    f.barrier.id, self.cfg.checkpoint.timeout
                );
                self.fail_checkpoint(now, why, out);
            }
            return;
        }
        if self.closing.is_some() || self.last_sent {
            return;
        }
        if self.stopping {
            // A graceful stop ends with a checkpoint of its own that closes every open part
            // (`last`), so what the job wrote is committed and visible, not left in hidden
            // in-progress files that only a later run would finish.
            if self.cfg.checkpoint.enabled && !self.cfg.sources.is_empty() {
                let barrier = self.barrier(false, true);
                self.trigger(now, barrier, None, out);
            } else if self.uncommitted.is_empty() {
                out.push(Command::End(Ok(WorkerOutcome::Stopped)));
            }
            return;
        }
        if let Some((id, stop)) = self.savepoints.pop_front() {
            let barrier = self.barrier(true, stop);
            self.trigger(now, barrier, Some(id), out);
            return;
        }
        let sources = &self.cfg.sources;
        if !sources.is_empty() && self.finished_sources.len() == sources.len() {
            let barrier = self.barrier(false, true);
            self.trigger(now, barrier, None, out);
            return;
        }
        let cp = &self.cfg.checkpoint;
        let due = now.duration_since(self.last_trigger) >= cp.interval.as_std()
            && now.duration_since(self.last_end) >= cp.min_pause.as_std();
        if cp.enabled && due {
            let barrier = self.barrier(false, false);
            self.trigger(now, barrier, None, out);
        }
    }

    fn barrier(&mut self, savepoint: bool, last: bool) -> Barrier {
        let id = self.next_id;
        self.next_id += 1;
        Barrier {
            id,
            savepoint,
            last,
        }
    }

    fn trigger(
        &mut self,
        now: Instant,
        barrier: Barrier,
        savepoint: Option<String>,
        out: &mut Vec<Command>,
    ) {
        let c = &self.cfg;
        let waiting = c
            .sources
            .iter()
            .chain(&c.transforms)
            .chain(&c.sinks)
            .cloned()
            .collect();
        let data = WorkerCheckpoint {
            version: crate::checkpoint::model::FORMAT_VERSION,
            job: c.job.clone(),
            id: barrier.id,
            worker: c.worker,
            parallelism: c.parallelism,
            max_parallelism: c.max_parallelism,
            savepoint: barrier.savepoint,
            origin: c.origin.clone(),
            ..Default::default()
        };
        self.in_flight = Some(InFlight {
            barrier,
            started: now,
            savepoint,
            waiting,
            data,
            sink_states: BTreeMap::new(),
            persisting: None,
        });
        self.last_trigger = now;
        if barrier.last {
            self.last_sent = true;
            if !self.stopping {
                // A stop reported it when it came.
                out.push(Command::Report(Report::State(WorkerState::Finishing)));
            }
        }
        out.push(Command::Trigger(barrier));
    }

    fn on_event(&mut self, ev: Event, out: &mut Vec<Command>) {
        match ev {
            Event::Failed { error, .. } => {
                out.push(Command::End(Err(error)));
                return;
            }
            Event::SourceFinished { node } => {
                self.finished_sources.insert(node);
            }
            Event::Watermark { node, watermark } => {
                self.watermarks.insert(node.clone(), watermark);
                let lowest = self.watermarks.values().copied().min().unwrap_or(watermark);
                out.push(Command::Report(Report::Watermark {
                    node,
                    watermark,
                    lowest,
                }));
            }
            Event::Committed { node, checkpoint } => {
                if checkpoint >= self.uncommitted_id {
                    self.uncommitted.remove(&node);
                }
                if let Some(list) = self.pending.get_mut(&node) {
                    list.retain(|(id, _)| *id > checkpoint);
                }
                if let Some(c) = &mut self.closing {
                    if checkpoint >= c.checkpoint {
                        c.waiting.remove(&node);
                        if c.waiting.is_empty() {
                            let outcome = c.outcome.clone();
                            out.push(Command::ShutdownSinks);
                            out.push(Command::End(Ok(outcome)));
                            return;
                        }
                    }
                }
            }
            Event::SinkAck {
                node,
                checkpoint,
                committables,
                state,
            } => {
                // Committables of a checkpoint that failed are kept and ride on the next one.
                if !committables.is_empty() {
                    self.pending
                        .entry(node.clone())
                        .or_default()
                        .push((checkpoint, committables));
                }
                if let Some(f) = self.acking(checkpoint) {
                    f.sink_states.insert(node.clone(), state);
                    f.waiting.remove(&node);
                }
            }
            Event::SourceAck {
                node,
                checkpoint,
                splits,
            } => {
                if let Some(f) = self.acking(checkpoint) {
                    f.data.sources.insert(node.clone(), splits);
                    f.waiting.remove(&node);
                }
            }
            Event::OperatorAck {
                node,
                checkpoint,
                state,
            } => {
                if let Some(f) = self.acking(checkpoint) {
                    if !state.is_empty() {
                        f.data.operators.insert(node.clone(), state);
                    }
                    f.waiting.remove(&node);
                }
            }
        }
        self.persist_when_acknowledged(out);
    }

    /// The checkpoint in flight, if it is `id` and still collecting acknowledgements.
    fn acking(&mut self, id: u64) -> Option<&mut InFlight> {
        self.in_flight
            .as_mut()
            .filter(|f| f.barrier.id == id && f.persisting.is_none())
    }

    /// Once every node acknowledged: the checkpoint to write, with each sink's committables.
    fn persist_when_acknowledged(&mut self, out: &mut Vec<Command>) {
        let Some(f) = self.in_flight.as_mut() else {
            return;
        };
        if !f.waiting.is_empty() || f.persisting.is_some() {
            return;
        }
        let id = f.barrier.id;
        let mut to_commit = Vec::new();
        for sink in &self.cfg.sinks {
            let committables: Vec<Value> = self
                .pending
                .get(sink)
                .into_iter()
                .flatten()
                .filter(|(c, _)| *c <= id)
                .flat_map(|(_, v)| v.iter().cloned())
                .collect();
            let states = f
                .sink_states
                .remove(sink)
                .into_iter()
                .filter(|s| !s.is_null())
                .collect();
            f.data.sinks.insert(
                sink.clone(),
                SinkCheckpoint {
                    states,
                    committables: committables.clone(),
                },
            );
            to_commit.push((sink.clone(), committables));
        }
        f.persisting = Some(to_commit);
        out.push(Command::Persist {
            data: Box::new(f.data.clone()),
            savepoint: f.savepoint.clone(),
        });
    }

    fn on_persisted(
        &mut self,
        now: Instant,
        checkpoint: u64,
        result: Result<u64, String>,
        out: &mut Vec<Command>,
    ) {
        let ours = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.barrier.id == checkpoint && f.persisting.is_some());
        if !ours {
            // A write that outlived its checkpoint's failure: harmless either way (a complete
            // checkpoint on storage whose committables also ride on the next one).
            return;
        }
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(e) => {
                let why = format!("checkpoint {checkpoint} could not be written: {e}");
                self.fail_checkpoint(now, why, out);
                return;
            }
        };
        let Some(f) = self.in_flight.take() else {
            return;
        };
        self.consecutive_failures = 0;
        self.last_end = now;
        out.push(Command::Report(Report::Completed {
            checkpoint,
            duration: now.duration_since(f.started),
            bytes,
            savepoint: f.barrier.savepoint,
            splits: f.data.sources.clone(),
        }));
        self.uncommitted = self.cfg.sinks.iter().cloned().collect();
        self.uncommitted_id = checkpoint;
        for (sink, committables) in f.persisting.unwrap_or_default() {
            out.push(Command::Commit {
                sink,
                checkpoint,
                committables,
            });
        }
        out.push(Command::Complete(checkpoint));
        if let Some(id) = f.savepoint {
            out.push(Command::SavepointDone { id, result: Ok(()) });
        }
        out.push(Command::Retain(checkpoint));
        if f.barrier.last {
            let outcome = if f.barrier.savepoint || self.stopping {
                WorkerOutcome::Stopped
            } else {
                WorkerOutcome::Finished
            };
            if self.cfg.sinks.is_empty() {
                out.push(Command::End(Ok(outcome)));
                return;
            }
            self.closing = Some(Closing {
                checkpoint,
                waiting: self.cfg.sinks.iter().cloned().collect(),
                outcome,
            });
        }
    }

    fn fail_checkpoint(&mut self, now: Instant, why: String, out: &mut Vec<Command>) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        self.last_end = now;
        self.consecutive_failures += 1;
        out.push(Command::Report(Report::Failed {
            checkpoint: f.barrier.id,
            why: why.clone(),
        }));
        if let Some(id) = f.savepoint {
            out.push(Command::SavepointDone {
                id,
                result: Err(why.clone()),
            });
        }
        if f.barrier.last {
            out.push(Command::End(Err(Error::Checkpoint(format!(
                "the final checkpoint failed: {why}"
            )))));
            return;
        }
        let tolerable = self.cfg.checkpoint.tolerable_failures;
        if self.consecutive_failures > tolerable {
            out.push(Command::End(Err(Error::Checkpoint(format!(
                "{why}; {} consecutive checkpoint failures exceed tolerable_failures ({tolerable})",
                self.consecutive_failures
            )))));
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
