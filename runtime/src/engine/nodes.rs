//! The task loop of each node kind: sources inject barriers when the coordinator asks, transforms
//! and sinks act on aligned barriers from their input gate.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::{Receiver, UnboundedSender};
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::edge::{EdgeReceiver, EdgeSender};
use super::gate::{GateEvent, InputGate};
use crate::api::{AsyncTransform, DynSink, FlushMark, NodeContext, Output, Source, SourcePoll};
use crate::error::{Error, Result};
use crate::fault;
use crate::record::{Barrier, Batch, Message};
use crate::retry::RetryPolicy;

const TICK: Duration = Duration::from_millis(100);

/// How a failed commit is retried before the worker fails (and its restart recovers it).
const COMMIT_RETRY: RetryPolicy = RetryPolicy {
    backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(5),
    multiplier: 2.0,
    jitter: 0.2,
    max_attempts: Some(6),
    max_elapsed: None,
};

/// What nodes tell their worker's checkpoint coordinator.
#[derive(Debug)]
pub enum Event {
    SourceAck {
        node: String,
        checkpoint: u64,
        splits: BTreeMap<String, Value>,
    },
    OperatorAck {
        node: String,
        checkpoint: u64,
        state: BTreeMap<u32, Value>,
    },
    SinkAck {
        node: String,
        checkpoint: u64,
        committables: Vec<Value>,
        state: Value,
    },
    SourceFinished {
        node: String,
    },
    Committed {
        node: String,
        checkpoint: u64,
    },
    Watermark {
        node: String,
        watermark: i64,
    },
    Failed {
        node: String,
        error: Error,
    },
}

pub enum SourceCtl {
    Trigger(Barrier),
    Complete(u64),
}

pub enum SinkCtl {
    Commit {
        checkpoint: u64,
        committables: Vec<Value>,
    },
    Shutdown,
}

/// The downstream channels of a node.
pub struct Outputs(pub Vec<EdgeSender>);

impl Outputs {
    /// Sends to every output; `false` once every receiver is gone (the job is stopping).
    async fn send(&self, msg: Message) -> bool {
        let mut delivered = false;
        if let Some((last, rest)) = self.0.split_last() {
            for tx in rest {
                delivered |= tx.send(msg.clone()).await.is_ok();
            }
            delivered |= last.send(msg).await.is_ok();
        }
        delivered
    }

    async fn emit(&mut self, out: Output) -> bool {
        for b in out.batches {
            if !b.is_empty() && !self.send(Message::Batch(b)).await {
                return false;
            }
        }
        if let Some(w) = out.watermark {
            return self.send(Message::Watermark(w)).await;
        }
        true
    }
}

fn report(events: &UnboundedSender<Event>, node: &str, r: Result<()>) {
    if let Err(error) = r {
        let _ = events.send(Event::Failed {
            node: node.to_string(),
            error,
        });
    }
}

pub struct SourceTask {
    pub ctx: NodeContext,
    pub source: Box<dyn Source>,
    pub restored: BTreeMap<String, Value>,
    pub control: Receiver<SourceCtl>,
    pub outputs: Outputs,
    pub events: UnboundedSender<Event>,
    pub cancel: CancellationToken,
}

impl SourceTask {
    pub async fn run(mut self) {
        let node = self.ctx.node.clone();
        let events = self.events.clone();
        let r = self.run_inner().await;
        report(&events, &node, r);
    }

    /// Returns true when the source must stop (last barrier passed).
    async fn on_control(&mut self, ctl: SourceCtl) -> Result<bool> {
        match ctl {
            SourceCtl::Trigger(barrier) => {
                let splits = self.source.snapshot()?;
                let ack = Event::SourceAck {
                    node: self.ctx.node.clone(),
                    checkpoint: barrier.id,
                    splits,
                };
                let _ = self.events.send(ack);
                self.outputs.send(Message::Barrier(barrier)).await;
                if barrier.last {
                    self.outputs.send(Message::End).await;
                    self.await_last_completion(barrier.id).await?;
                    self.source.close().await?;
                    return Ok(true);
                }
                Ok(false)
            }
            SourceCtl::Complete(id) => {
                self.source.checkpoint_complete(id).await?;
                Ok(false)
            }
        }
    }

    /// Waits until the last checkpoint completes (or the job ends without it), so that the
    /// source hears of it: a Kafka source commits its final offsets to the group only then.
    async fn await_last_completion(&mut self, last: u64) -> Result<()> {
        loop {
            tokio::select! {
                // The coordinator sends the completion before it cancels the tasks.
                biased;
                ctl = self.control.recv() => match ctl {
                    Some(SourceCtl::Complete(id)) => {
                        self.source.checkpoint_complete(id).await?;
                        if id >= last {
                            return Ok(());
                        }
                    }
                    Some(SourceCtl::Trigger(_)) => {}
                    None => return Ok(()),
                },
                _ = self.cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// Forwards the source's watermark when it advanced.
    async fn forward_watermark(&mut self, last: &mut Option<i64>) -> bool {
        let Some(w) = self.source.watermark() else {
            return true;
        };
        if last.is_some_and(|l| w <= l) {
            return true;
        }
        *last = Some(w);
        let _ = self.events.send(Event::Watermark {
            node: self.ctx.node.clone(),
            watermark: w,
        });
        self.outputs.send(Message::Watermark(w)).await
    }

    async fn run_inner(&mut self) -> Result<()> {
        let restored = std::mem::take(&mut self.restored);
        self.source.open(&self.ctx, restored).await?;
        let mut finished = false;
        let mut watermark = None;
        loop {
            while let Ok(ctl) = self.control.try_recv() {
                if self.on_control(ctl).await? {
                    return Ok(());
                }
            }
            if finished {
                tokio::select! {
                    ctl = self.control.recv() => match ctl {
                        Some(ctl) => if self.on_control(ctl).await? { return Ok(()) },
                        None => return Ok(()),
                    },
                    _ = self.cancel.cancelled() => return Ok(()),
                }
                continue;
            }
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            match self.source.poll().await? {
                SourcePoll::Batch(b) => {
                    // Sources that never wait would otherwise keep the scheduler from timers.
                    tokio::task::yield_now().await;
                    self.ctx.metrics.records_out.inc_by(b.len() as u64);
                    tokio::select! {
                        ok = self.outputs.send(Message::Batch(b)) => if !ok { return Ok(()) },
                        _ = self.cancel.cancelled() => return Ok(()),
                    }
                    if !self.forward_watermark(&mut watermark).await {
                        return Ok(());
                    }
                }
                SourcePoll::Idle => {
                    if !self.forward_watermark(&mut watermark).await {
                        return Ok(());
                    }
                    tokio::select! {
                        ctl = self.control.recv() => match ctl {
                            Some(ctl) => if self.on_control(ctl).await? { return Ok(()) },
                            None => return Ok(()),
                        },
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                        _ = self.cancel.cancelled() => return Ok(()),
                    }
                }
                SourcePoll::Finished => {
                    finished = true;
                    let _ = self.events.send(Event::SourceFinished {
                        node: self.ctx.node.clone(),
                    });
                }
            }
        }
    }
}

pub struct TransformTask {
    pub ctx: NodeContext,
    pub transform: Box<dyn AsyncTransform>,
    pub restored: BTreeMap<u32, Value>,
    pub inputs: Vec<EdgeReceiver>,
    pub outputs: Outputs,
    pub events: UnboundedSender<Event>,
    pub cancel: CancellationToken,
}

impl TransformTask {
    pub async fn run(mut self) {
        let node = self.ctx.node.clone();
        let events = self.events.clone();
        let r = self.run_inner().await;
        report(&events, &node, r);
    }

    async fn run_inner(&mut self) -> Result<()> {
        let restored = std::mem::take(&mut self.restored);
        self.transform.open(&self.ctx, restored).await?;
        let mut gate = InputGate::new(std::mem::take(&mut self.inputs));
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut out = Output::default();
            tokio::select! {
                ev = gate.next() => match ev {
                    GateEvent::Batch(b) => {
                        self.ctx.metrics.records_in.inc_by(b.len() as u64);
                        self.transform.process(b, &mut out).await?;
                    }
                    GateEvent::Watermark(w) => self.transform.on_watermark(w, &mut out).await?,
                    GateEvent::Barrier(b) => {
                        let state = self.transform.snapshot(&b, &mut out).await?;
                        let _ = self.events.send(Event::OperatorAck { node: self.ctx.node.clone(), checkpoint: b.id, state });
                        if !self.emit(out).await || !self.outputs.send(Message::Barrier(b)).await { return Ok(()) }
                        continue;
                    }
                    GateEvent::End => {
                        self.transform.finish(&mut out).await?;
                        if self.emit(out).await {
                            self.outputs.send(Message::End).await;
                        }
                        return Ok(());
                    }
                },
                _ = self.transform.ready() => self.transform.emit_ready(&mut out)?,
                _ = tick.tick() => self.transform.on_tick(chrono::Utc::now().timestamp_millis(), &mut out).await?,
                _ = self.cancel.cancelled() => return Ok(()),
            }
            if !self.emit(out).await {
                return Ok(());
            }
        }
    }

    /// Counts and sends one step's output; `false` once downstream is gone.
    async fn emit(&mut self, out: Output) -> bool {
        let n: usize = out.batches.iter().map(Batch::len).sum();
        self.ctx.metrics.records_out.inc_by(n as u64);
        if let Some(w) = out.watermark {
            let _ = self.events.send(Event::Watermark {
                node: self.ctx.node.clone(),
                watermark: w,
            });
        }
        self.outputs.emit(out).await
    }
}

/// `sink.flushed(mark)`, or never without a mark. (select! builds the future of a disabled
/// branch too: this one boxes `flushed`'s only when polled, not on every turn of the loop.)
async fn flushed(sink: &mut dyn DynSink, mark: Option<FlushMark>) -> Result<()> {
    match mark {
        Some(m) => sink.flushed(m).await,
        None => std::future::pending().await,
    }
}

/// A background pre-commit (`DynSink::begin_pre_commit`): its committables and state.
type Preparing = AbortOnDropHandle<Result<(Vec<Value>, Value)>>;

/// A background pre-commit's result, or never without one (see `flushed`).
async fn prepared(node: &str, preparing: Option<&mut Preparing>) -> Result<(Vec<Value>, Value)> {
    match preparing {
        Some(task) => task
            .await
            .map_err(|e| Error::node(node, format!("the background pre-commit ended: {e}")))?,
        None => std::future::pending().await,
    }
}

pub struct SinkTask {
    pub ctx: NodeContext,
    pub sink: Box<dyn DynSink>,
    pub restored: (Vec<Value>, Vec<Value>),
    pub inputs: Vec<EdgeReceiver>,
    pub control: Receiver<SinkCtl>,
    pub events: UnboundedSender<Event>,
    pub cancel: CancellationToken,
}

impl SinkTask {
    pub async fn run(mut self) {
        let node = self.ctx.node.clone();
        let events = self.events.clone();
        let r = self.run_inner().await;
        if r.is_err() || self.cancel.is_cancelled() {
            if let Err(e) = self.sink.abort().await {
                tracing::warn!(node = %node, error = %e, "abort failed");
            }
        }
        report(&events, &node, r);
    }

    async fn commit(&mut self, checkpoint: u64, committables: Vec<Value>) -> Result<()> {
        // A commit that fails is retried: the checkpoint is already durable, so giving up here
        // only defers the commit to recovery (after a restart).
        let mut delays = COMMIT_RETRY.backoff();
        loop {
            let e = match self.sink.commit(committables.clone()).await {
                Ok(()) => break,
                Err(e) => e,
            };
            let Some(wait) = delays.next() else {
                return Err(e);
            };
            tracing::warn!(node = %self.ctx.node, checkpoint, attempt = delays.retries(), error = %e, "commit failed, retrying");
            tokio::time::sleep(wait).await;
        }
        fault::point("after_commit");
        let _ = self.events.send(Event::Committed {
            node: self.ctx.node.clone(),
            checkpoint,
        });
        Ok(())
    }

    /// Tells the coordinator that the sink pre-committed checkpoint `checkpoint`.
    fn pre_committed(&self, checkpoint: u64, committables: Vec<Value>, state: Value) {
        fault::point("after_precommit");
        let _ = self.events.send(Event::SinkAck {
            node: self.ctx.node.clone(),
            checkpoint,
            committables,
            state,
        });
    }

    async fn run_inner(&mut self) -> Result<()> {
        self.sink.open(&self.ctx).await?;
        let (states, committables) = std::mem::take(&mut self.restored);
        self.sink.recover(states, committables).await?;
        let mut gate = InputGate::new(std::mem::take(&mut self.inputs));
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut input_done = false;
        // Barriers a plain sink marked (`Sink::mark`) and is still making durable, oldest first,
        // while later batches are written.
        let mut marked: VecDeque<(u64, FlushMark)> = VecDeque::new();
        // Barriers a two-phase sink is pre-committing in the background (`begin_pre_commit`),
        // oldest first; dropping one (the attempt ends) cancels it.
        let mut preparing: VecDeque<(u64, Preparing)> = VecDeque::new();
        loop {
            let oldest = marked.front().map(|(_, m)| *m);
            tokio::select! {
                biased;
                ctl = self.control.recv() => match ctl {
                    Some(SinkCtl::Commit { checkpoint, committables }) => self.commit(checkpoint, committables).await?,
                    Some(SinkCtl::Shutdown) | None => {
                        self.sink.close().await?;
                        return Ok(());
                    }
                },
                // Before the input: with the input always ready (the sink is the bottleneck),
                // a later branch would never be polled and the checkpoint never acknowledged.
                r = flushed(self.sink.as_mut(), oldest), if oldest.is_some() => {
                    r?;
                    let (checkpoint, _) = marked.pop_front().expect("a mark was awaited");
                    self.pre_committed(checkpoint, Vec::new(), Value::Null);
                }
                r = prepared(&self.ctx.node, preparing.front_mut().map(|(_, t)| t)), if !preparing.is_empty() => {
                    let (committables, state) = r?;
                    let (checkpoint, _) = preparing.pop_front().expect("a pre-commit was awaited");
                    self.pre_committed(checkpoint, committables, state);
                }
                ev = gate.next(), if !input_done => match ev {
                    GateEvent::Batch(b) => {
                        let n = b.len() as u64;
                        self.ctx.metrics.records_in.inc_by(n);
                        self.sink.write(b).await?;
                        self.ctx.metrics.records_out.inc_by(n);
                    }
                    GateEvent::Watermark(_) => {}
                    GateEvent::Barrier(b) => {
                        fault::point("before_precommit");
                        fault::stall("pre_commit").await;
                        if b.savepoint {
                            fault::stall("savepoint_precommit").await;
                        }
                        if let Some(m) = self.sink.mark() {
                            marked.push_back((b.id, m));
                        } else if let Some(prepare) = self.sink.begin_pre_commit(b).await? {
                            preparing.push_back((b.id, AbortOnDropHandle::new(tokio::spawn(prepare))));
                        } else {
                            // Barriers are acknowledged in order: earlier background ones first.
                            while let Some((checkpoint, task)) = preparing.pop_front() {
                                let (committables, state) = prepared(&self.ctx.node, Some(&mut { task })).await?;
                                self.pre_committed(checkpoint, committables, state);
                            }
                            let (committables, state) = self.sink.pre_commit(b).await?;
                            self.pre_committed(b.id, committables, state);
                        }
                    }
                    GateEvent::End => input_done = true,
                },
                _ = tick.tick() => self.sink.on_tick().await?,
                _ = self.cancel.cancelled() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use tokio::sync::mpsc::{channel, unbounded_channel, Sender, UnboundedReceiver};
    use tokio::sync::watch;

    use super::*;
    use crate::api::{Sink, SinkBox, TwoPhaseSink};
    use crate::engine::test_support::{barrier, batch};

    /// A sink whose writes become durable when the test says so (`acked`, a count of
    /// records), as a publisher's acknowledgements do; `written` counts what it was handed.
    struct Acknowledged {
        written: Arc<AtomicU64>,
        acked: watch::Receiver<u64>,
    }

    #[async_trait]
    impl Sink for Acknowledged {
        async fn write(&mut self, batch: Batch) -> Result<()> {
            self.written.fetch_add(batch.len() as u64, Ordering::SeqCst);
            Ok(())
        }
        async fn flush(&mut self) -> Result<()> {
            Err(Error::node("out", "flushed at a barrier although it marks"))
        }
        fn mark(&mut self) -> Option<FlushMark> {
            Some(FlushMark(self.written.load(Ordering::SeqCst)))
        }
        async fn flushed(&mut self, mark: FlushMark) -> Result<()> {
            while *self.acked.borrow() < mark.0 {
                self.acked
                    .changed()
                    .await
                    .expect("the test holds the sender");
            }
            Ok(())
        }
    }

    /// A two-phase sink whose pre-commits finish in the background once the test releases
    /// them (`released`, a count of checkpoints), as a Kafka transaction's flush does.
    struct Background {
        written: Arc<AtomicU64>,
        released: watch::Receiver<u64>,
        /// From this barrier on, the sink pre-commits in the foreground (`pre_commit`).
        foreground_from: u64,
    }

    #[async_trait]
    impl TwoPhaseSink for Background {
        type Committable = u64;
        type State = ();
        async fn open(&mut self, _: &NodeContext) -> Result<()> {
            Ok(())
        }
        async fn recover(&mut self, _: Vec<()>, _: Vec<u64>) -> Result<()> {
            Ok(())
        }
        async fn write(&mut self, batch: Batch) -> Result<()> {
            self.written.fetch_add(batch.len() as u64, Ordering::SeqCst);
            Ok(())
        }
        async fn pre_commit(&mut self, b: Barrier) -> Result<(Vec<u64>, ())> {
            if b.id < self.foreground_from {
                return Err(Error::node("out", "pre-committed in the foreground"));
            }
            Ok((vec![self.written.load(Ordering::SeqCst)], ()))
        }
        async fn begin_pre_commit(
            &mut self,
            b: Barrier,
        ) -> Result<Option<crate::api::Prepare<u64, ()>>> {
            if b.id >= self.foreground_from {
                return Ok(None);
            }
            let mut released = self.released.clone();
            let staged = self.written.load(Ordering::SeqCst);
            Ok(Some(Box::pin(async move {
                while *released.borrow() < b.id {
                    released.changed().await.expect("the test holds the sender");
                }
                Ok((vec![staged], ()))
            })))
        }
        async fn commit(&mut self, _: Vec<u64>) -> Result<()> {
            Ok(())
        }
        async fn abort(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_background_pre_commit_lets_writes_go_on_and_barriers_are_acked_in_order() {
        let written = Arc::new(AtomicU64::new(0));
        let (release, released) = watch::channel(0);
        let (ctl, mut events, running) = run_sink(SinkBox::two_phase(Background {
            written: written.clone(),
            released,
            foreground_from: u64::MAX,
        }))
        .await;
        written_before_any_ack(&written, &mut events).await;
        // Both released at once: still acknowledged oldest first, each with what it staged.
        release.send(2).unwrap();
        let mut seen = Vec::new();
        until("both acknowledged", || {
            while let Ok(e) = events.try_recv() {
                if let Event::SinkAck {
                    checkpoint,
                    committables,
                    ..
                } = e
                {
                    seen.push((checkpoint, committables));
                }
            }
            seen.len() == 2
        })
        .await;
        assert_eq!(
            seen,
            vec![(1, vec![Value::from(3)]), (2, vec![Value::from(5)])]
        );
        shut_down(ctl, running).await;
    }

    #[tokio::test]
    async fn a_foreground_pre_commit_waits_for_the_background_ones_before_it() {
        let written = Arc::new(AtomicU64::new(0));
        let (release, released) = watch::channel(0);
        // Barrier 1 in the background, barrier 2 in the foreground.
        let (ctl, mut events, running) = run_sink(SinkBox::two_phase(Background {
            written: written.clone(),
            released,
            foreground_from: 2,
        }))
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Barrier 2 is not acknowledged ahead of barrier 1, still in flight.
        assert_eq!(acks(&mut events), Vec::<u64>::new());
        release.send(1).unwrap();
        let mut seen = Vec::new();
        acked_until(&mut events, &mut seen, 2).await;
        assert_eq!(seen, vec![1, 2]);
        shut_down(ctl, running).await;
    }

    /// Collects acknowledged barriers into `seen` until it holds `n`.
    async fn acked_until(events: &mut UnboundedReceiver<Event>, seen: &mut Vec<u64>, n: usize) {
        until(&format!("{n} barriers acknowledged"), || {
            seen.extend(acks(events));
            seen.len() >= n
        })
        .await;
    }

    async fn shut_down(ctl: Sender<SinkCtl>, running: tokio::task::JoinHandle<()>) {
        ctl.send(SinkCtl::Shutdown).await.unwrap();
        running.await.unwrap();
    }

    /// Everything `run_sink` fed, after both barriers too, is written while neither barrier is
    /// acknowledged.
    async fn written_before_any_ack(written: &AtomicU64, events: &mut UnboundedReceiver<Event>) {
        until("9 records written", || written.load(Ordering::SeqCst) == 9).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(acks(events), Vec::<u64>::new());
    }

    /// Runs `sink` in a sink task and feeds it 3 records, barrier 1, 2 records, barrier 2 and 4
    /// records: its control channel, its events and the task.
    async fn run_sink(
        sink: SinkBox,
    ) -> (
        Sender<SinkCtl>,
        UnboundedReceiver<Event>,
        tokio::task::JoinHandle<()>,
    ) {
        let (input, rx) = crate::engine::edge::edge(64);
        let (ctl, control) = channel(4);
        let (tx, events) = unbounded_channel();
        let task = SinkTask {
            ctx: NodeContext::for_test("test", "out"),
            sink: sink.0,
            restored: (Vec::new(), Vec::new()),
            inputs: vec![rx],
            control,
            events: tx,
            cancel: CancellationToken::new(),
        };
        let running = tokio::spawn(task.run());
        for m in [batch(3), barrier(1), batch(2), barrier(2), batch(4)] {
            input.send(m).await.unwrap();
        }
        (ctl, events, running)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn acks(events: &mut UnboundedReceiver<Event>) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::SinkAck { checkpoint, .. } = e {
                ids.push(checkpoint);
            }
        }
        ids
    }

    #[tokio::test]
    async fn a_marking_sink_keeps_writing_after_a_barrier_and_acks_it_once_the_earlier_writes_are_durable(
    ) {
        let written = Arc::new(AtomicU64::new(0));
        let (ack, acked) = watch::channel(0);
        let (ctl, mut events, running) = run_sink(SinkBox::plain(Acknowledged {
            written: written.clone(),
            acked,
        }))
        .await;
        written_before_any_ack(&written, &mut events).await;
        // Durable up to the middle of the second barrier's records: only the first is acked.
        ack.send(4).unwrap();
        let mut seen = Vec::new();
        acked_until(&mut events, &mut seen, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.extend(acks(&mut events));
        assert_eq!(seen, vec![1]);
        ack.send(9).unwrap();
        acked_until(&mut events, &mut seen, 2).await;
        assert_eq!(seen, vec![1, 2]);
        shut_down(ctl, running).await;
    }
}
