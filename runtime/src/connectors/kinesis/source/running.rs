//! The running source: one reader task per shard this worker owns and is reading, whose events
//! arrive in one bounded channel (a full channel holds the readers back); batches never mix
//! shards (each batch's split is its shard). The source decides, through `shards.rs`, which
//! shard starts when; readers only read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use serde_json::Value;
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::task::JoinHandle;

use super::config::{ExpiredPolicy, Registration, Settings, StartingPosition, StreamSettings};
use super::decode::Decoder;
use super::metrics::ShardMetrics;
use super::peers::Peers;
use super::position::{parse_key, split_id, stream_marker, Position, StateKey};
use super::reader::{ReaderEvent, Shared, Target};
use super::shards::{droppable, owner, plan, ready, FirstStart, ShardGraph, ShardInfo, Status};
use super::{efo, listing, polling};
use crate::api::{Batch, NodeConfig, NodeContext, Result, Source, SourcePoll, SplitId};
use crate::error::Error;
use crate::event_time::split::SplitWatermarks;

/// Events in the channel at most: a few fetches per reading shard.
const CHANNEL: usize = 64;
/// How long one poll waits for an event.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// How often other workers' checkpoints are read while a child waits for their parent.
const PEER_INTERVAL: Duration = Duration::from_millis(500);

struct StreamRun {
    settings: StreamSettings,
    arn: String,
    graph: ShardGraph,
    consumer_arn: Option<String>,
}

struct Shard {
    stream: usize,
    id: String,
    split: SplitId,
    status: Status,
    metrics: ShardMetrics,
    reader: Option<JoinHandle<()>>,
    /// Shared with the reader: the listing shows the shard closed.
    closed: Arc<AtomicBool>,
}

type Listing = std::result::Result<Vec<Vec<ShardInfo>>, String>;
type PeerAnswer = std::result::Result<BTreeSet<String>, String>;

pub struct KinesisSource {
    settings: Arc<Settings>,
    node: String,
    ctx: Option<NodeContext>,
    client: Option<Client>,
    shared: Option<Arc<Shared>>,
    streams: Vec<StreamRun>,
    /// Owned shards by split id.
    shards: BTreeMap<String, Shard>,
    tx: Sender<ReaderEvent>,
    rx: Receiver<ReaderEvent>,
    watermarks: Option<SplitWatermarks>,
    discovery_last: Instant,
    discovery: Option<JoinHandle<Listing>>,
    peers: Option<Arc<Peers>>,
    peer_task: Option<JoinHandle<PeerAnswer>>,
    peer_last: Option<Instant>,
    /// Split ids of other workers' shards their checkpoints show finished.
    peer_finished: BTreeSet<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl KinesisSource {
    pub fn new(settings: Settings) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        KinesisSource {
            settings: Arc::new(settings),
            node: String::new(),
            ctx: None,
            client: None,
            shared: None,
            streams: Vec::new(),
            shards: BTreeMap::new(),
            tx,
            rx,
            watermarks: None,
            discovery_last: Instant::now(),
            discovery: None,
            peers: None,
            peer_task: None,
            peer_last: None,
            peer_finished: BTreeSet::new(),
        }
    }

    fn ctx(&self) -> &NodeContext {
        self.ctx.as_ref().expect("opened")
    }

    fn owns(&self, stream: &str, s: &ShardInfo) -> bool {
        let ctx = self.ctx();
        owner(stream, s, ctx.parallelism) == ctx.worker
    }

    /// Reads the stream's description and shards, and plans its owned shards.
    async fn open_stream(
        &mut self,
        i: usize,
        client: &Client,
        restored: &BTreeMap<String, Position>,
        was_read: bool,
    ) -> Result<BTreeMap<String, Status>> {
        let s = self.settings.streams[i].clone();
        let retry = self.settings.config.retry;
        let where_ =
            |e: String| Error::node(&self.node, format!("streams[{i}]: {}: {e}", s.stream));
        let arn = listing::stream_arn(client, &s.stream, retry)
            .await
            .map_err(where_)?;
        let all = listing::shards(client, &s.stream, None, retry)
            .await
            .map_err(where_)?;
        let graph = ShardGraph::new(all);
        let first = if was_read {
            None
        } else {
            Some(match s.starting_position {
                StartingPosition::TrimHorizon => FirstStart::TrimHorizon,
                StartingPosition::Latest => FirstStart::AtTimestamp {
                    at: now_ms(),
                    frontier: graph
                        .shards()
                        .filter(|s| !s.closed)
                        .map(|s| s.id.clone())
                        .collect(),
                },
                StartingPosition::AtTimestamp(at) => {
                    let open_then = listing::shards(client, &s.stream, Some(at), retry)
                        .await
                        .map_err(where_)?;
                    FirstStart::AtTimestamp {
                        at,
                        frontier: open_then.into_iter().map(|s| s.id).collect(),
                    }
                }
            })
        };
        // Positions of shards that no longer exist (expired while the job was down).
        for (shard, pos) in restored {
            if graph.contains(shard) || pos.is_finished() {
                continue;
            }
            // (After a savepoint every worker sees every shard's position: the first to open
            // reports it.)
            if self.settings.config.on_expired_position == ExpiredPolicy::Fail {
                // A restart resumes from the same position: only the user can repair this.
                return Err(Error::fatal(
                    &self.node,
                    format!(
                        "{} shard {shard}: the checkpoint has a position ({pos}) but the shard no \
                         longer exists; on_expired_position is fail: set it to trim_horizon or \
                         latest to go on without it",
                        s.stream
                    ),
                ));
            }
            tracing::warn!(node = %self.node, stream = %s.stream.name, shard = %shard, "the checkpointed shard no longer exists; going on without it");
        }
        let name = s.stream.name.clone();
        let planned = plan(&graph, restored, first.as_ref(), |sh| self.owns(&name, sh));
        self.streams.push(StreamRun {
            settings: s,
            arn,
            graph,
            consumer_arn: None,
        });
        Ok(planned)
    }

    /// Adds an owned shard in `status` (a reading one starts at once).
    fn add_shard(&mut self, stream: usize, id: String, status: Status) {
        let split_text = split_id(&self.streams[stream].settings.stream.name, &id);
        if self.shards.contains_key(&split_text) {
            return;
        }
        let metrics = ShardMetrics::new(self.ctx(), &split_text);
        let closed = self.streams[stream]
            .graph
            .get(&id)
            .is_some_and(|s| s.closed);
        let shard = Shard {
            stream,
            id,
            split: Arc::from(split_text.as_str()),
            status: Status::Waiting,
            metrics,
            reader: None,
            closed: Arc::new(AtomicBool::new(closed)),
        };
        self.shards.insert(split_text.clone(), shard);
        match status {
            Status::Reading(p) => self.start(&split_text, p),
            other => {
                if let Some(s) = self.shards.get_mut(&split_text) {
                    s.status = other;
                }
            }
        }
    }

    /// Starts the reader of a shard at `position`.
    fn start(&mut self, split: &str, position: Position) {
        let shared = self.shared.clone().expect("opened");
        let efo = self.settings.efo.clone();
        let tx = self.tx.clone();
        let Some(shard) = self.shards.get_mut(split) else {
            return;
        };
        let run = &self.streams[shard.stream];
        let target = Target {
            stream: run.settings.stream.clone(),
            shard: shard.id.clone(),
            split: shard.split.clone(),
            metrics: shard.metrics.clone(),
            consumer_arn: run.consumer_arn.clone(),
            closed: shard.closed.clone(),
            first_sequence: run
                .graph
                .get(&shard.id)
                .and_then(|s| s.first_sequence.clone()),
        };
        shard.status = Status::Reading(position.clone());
        shard.reader = Some(match efo {
            Some(efo) => tokio::spawn(efo::run(shared, target, position, efo, tx)),
            None => tokio::spawn(polling::run(shared, target, position, tx)),
        });
        if let Some(w) = &mut self.watermarks {
            w.assigned(split, now_ms());
        }
        tracing::debug!(node = %self.node, shard = %split, "reading");
    }

    /// Whether a parent (of stream `stream`) is done, for its waiting child.
    fn parent_done(&self, stream: usize, parent: &str) -> bool {
        let run = &self.streams[stream];
        let name = &run.settings.stream.name;
        let split = split_id(name, parent);
        let Some(info) = run.graph.get(parent) else {
            return true; // expired
        };
        if self.owns(name, info) {
            return self
                .shards
                .get(&split)
                .is_some_and(|s| s.status == Status::Finished);
        }
        match &self.peers {
            Some(_) => self.peer_finished.contains(&split),
            // Without checkpoints there is nothing to read: a closed parent will do.
            None => info.closed,
        }
    }

    /// Starts every waiting shard whose parents are done; notes the parents other workers own
    /// that hold a child back.
    fn start_ready(&mut self) -> BTreeMap<usize, BTreeMap<String, u32>> {
        let mut to_start = Vec::new();
        let mut foreign: BTreeMap<usize, BTreeMap<String, u32>> = BTreeMap::new();
        for (split, shard) in &self.shards {
            if shard.status != Status::Waiting {
                continue;
            }
            let run = &self.streams[shard.stream];
            let Some(info) = run.graph.get(&shard.id) else {
                continue;
            };
            if ready(&run.graph, info, |p| self.parent_done(shard.stream, p)) {
                to_start.push(split.clone());
                continue;
            }
            for p in run.graph.listed_parents(info) {
                let pinfo = run.graph.get(p).expect("listed");
                let name = &run.settings.stream.name;
                if !self.owns(name, pinfo) && !self.parent_done(shard.stream, p) {
                    let w = owner(name, pinfo, self.ctx().parallelism);
                    foreign
                        .entry(shard.stream)
                        .or_default()
                        .insert(p.to_string(), w);
                }
            }
        }
        for split in to_start {
            self.start(&split, Position::TrimHorizon);
        }
        foreign
    }

    /// After a change: start what is ready, and ask other workers' checkpoints when a child
    /// waits for them.
    fn advance(&mut self) {
        let foreign = self.start_ready();
        if foreign.is_empty() || self.peer_task.is_some() {
            return;
        }
        let Some(peers) = self.peers.clone() else {
            return;
        };
        if self.peer_last.is_some_and(|t| t.elapsed() < PEER_INTERVAL) {
            return;
        }
        self.peer_last = Some(Instant::now());
        let asks: Vec<(String, ShardGraph, BTreeMap<String, u32>)> = foreign
            .into_iter()
            .map(|(i, wanted)| {
                let run = &self.streams[i];
                (run.settings.stream.name.clone(), run.graph.clone(), wanted)
            })
            .collect();
        self.peer_task = Some(tokio::spawn(async move {
            let mut out = BTreeSet::new();
            for (stream, graph, wanted) in asks {
                let done = peers
                    .finished(&stream, &graph, &wanted)
                    .await
                    .map_err(|e| e.to_string())?;
                out.extend(done.into_iter().map(|s| split_id(&stream, &s)));
            }
            Ok(out)
        }));
    }

    /// Takes in the answer of other workers' checkpoints.
    fn check_peers(&mut self) {
        let finished = match &self.peer_task {
            Some(t) if t.is_finished() => self.peer_task.take(),
            _ => None,
        };
        if let Some(task) = finished {
            match futures::FutureExt::now_or_never(task) {
                Some(Ok(Ok(done))) => self.peer_finished.extend(done),
                Some(Ok(Err(e))) => {
                    tracing::warn!(node = %self.node, error = %e, "reading other workers' checkpoints failed")
                }
                Some(Err(e)) => {
                    tracing::warn!(node = %self.node, error = %e, "reading other workers' checkpoints failed")
                }
                None => {}
            }
        }
        // Keep asking while children wait.
        self.advance();
    }

    /// Starts a listing when due and takes in a finished one.
    fn discover(&mut self) {
        if let Some(task) = &self.discovery {
            if !task.is_finished() {
                return;
            }
            let task = self.discovery.take().expect("checked");
            self.discovery_last = Instant::now();
            match futures::FutureExt::now_or_never(task) {
                Some(Ok(Ok(lists))) => self.relist(lists),
                Some(Ok(Err(e))) => {
                    tracing::warn!(node = %self.node, error = %e, "shard discovery failed")
                }
                Some(Err(e)) => {
                    tracing::warn!(node = %self.node, error = %e, "shard discovery failed")
                }
                None => {}
            }
            return;
        }
        if self.discovery_last.elapsed() < self.settings.config.shard_discovery_interval.as_std() {
            return;
        }
        let client = self.client.clone().expect("opened");
        let streams: Vec<_> = self
            .streams
            .iter()
            .map(|s| s.settings.stream.clone())
            .collect();
        let retry = self.settings.config.retry;
        self.discovery = Some(tokio::spawn(async move {
            let mut out = Vec::new();
            for s in &streams {
                out.push(listing::shards(&client, s, None, retry).await?);
            }
            Ok(out)
        }));
    }

    /// A new listing: expired shards leave the graph, new owned shards are added (read from
    /// their start once their parents are done).
    fn relist(&mut self, lists: Vec<Vec<ShardInfo>>) {
        for (i, list) in lists.into_iter().enumerate() {
            let gone = self.streams[i].graph.relist(list);
            let run = &self.streams[i];
            let name = run.settings.stream.name.clone();
            if !gone.is_empty() {
                tracing::debug!(node = %self.node, stream = %name, shards = ?gone, "shards expired");
            }
            let new: Vec<(String, bool)> = run
                .graph
                .shards()
                .filter(|s| !self.shards.contains_key(&split_id(&name, &s.id)))
                .filter(|s| self.owns(&name, s))
                .map(|s| (s.id.clone(), run.graph.listed_parents(s).next().is_some()))
                .collect();
            for shard in self.shards.values().filter(|s| s.stream == i) {
                if run.graph.get(&shard.id).is_some_and(|s| s.closed) {
                    shard.closed.store(true, Ordering::Relaxed);
                }
            }
            for (id, has_parents) in new {
                tracing::info!(node = %self.node, stream = %name, shard = %id, "discovered a shard");
                let status = if has_parents {
                    Status::Waiting
                } else {
                    Status::Reading(Position::TrimHorizon)
                };
                self.add_shard(i, id, status);
            }
        }
        self.advance();
    }

    /// A shard was read to its end.
    fn finished(&mut self, split: &str, children: Vec<ShardInfo>) {
        let Some(shard) = self.shards.get_mut(split) else {
            return;
        };
        shard.status = Status::Finished;
        shard.reader = None;
        shard.metrics.remove();
        let stream = shard.stream;
        if let Some(w) = &mut self.watermarks {
            w.remove(split);
        }
        tracing::info!(node = %self.node, shard = %split, children = ?children.iter().map(|c| &c.id).collect::<Vec<_>>(), "shard finished");
        let name = self.streams[stream].settings.stream.name.clone();
        for child in children {
            let mine = self.owns(&name, &child);
            let id = child.id.clone();
            self.streams[stream].graph.learn(child);
            if mine {
                self.add_shard(stream, id, Status::Waiting);
            }
        }
        self.advance();
    }
}

#[async_trait]
impl Source for KinesisSource {
    /// Every stream exists (one DescribeStreamSummary each).
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let s = &self.settings;
        let sdk = s
            .connection
            .sdk_config(s.config.request_timeout.as_std())
            .await;
        let client = aws_sdk_kinesis::Client::new(&sdk);
        let endpoint = s.connection.describe(&sdk);
        let mut lines = Vec::new();
        for (i, st) in s.streams.iter().enumerate() {
            let line =
                crate::connectors::kinesis::stream::preflight(&client, &st.stream, &endpoint)
                    .await
                    .map_err(|(setting, m)| match setting {
                        true => cfg.error(&format!("streams[{i}]"), m),
                        false => crate::error::Error::node(cfg.name(), m),
                    })?;
            lines.push(line);
        }
        Ok(lines)
    }

    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<String, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.ctx = Some(ctx.clone());
        let settings = self.settings.clone();
        let c = &settings.config;
        if let Some(w) = &c.watermark {
            self.watermarks = Some(SplitWatermarks::new(
                w.max_out_of_orderness.as_millis() as i64,
                w.idle_timeout.map(|d| d.as_millis() as i64),
            ));
        }
        // The checkpoint: positions per stream, and the streams read before.
        let mut positions: BTreeMap<String, BTreeMap<String, Position>> = BTreeMap::new();
        let mut was_read = BTreeSet::new();
        for (key, v) in &restored {
            match parse_key(key) {
                StateKey::Stream(s) => {
                    was_read.insert(s.to_string());
                }
                StateKey::Shard { stream, shard } => {
                    let p = Position::from_value(v).map_err(|e| {
                        Error::Checkpoint(format!("{}: split {key}: {e}", ctx.node))
                    })?;
                    positions
                        .entry(stream.to_string())
                        .or_default()
                        .insert(shard.to_string(), p);
                }
            }
        }
        let sdk = settings
            .connection
            .sdk_config(c.request_timeout.as_std())
            .await;
        let client = Client::new(&sdk);
        let mut planned = Vec::new();
        for i in 0..self.settings.streams.len() {
            let name = self.settings.streams[i].stream.name.clone();
            let restored = positions.remove(&name).unwrap_or_default();
            let p = self
                .open_stream(i, &client, &restored, was_read.contains(&name))
                .await
                .map_err(|e| match e {
                    Error::Node { node, message } => Error::Node {
                        node,
                        message: format!("{message} ({})", self.settings.connection.describe(&sdk)),
                    },
                    other => other,
                })?;
            planned.push(p);
        }
        if let Some(efo) = &settings.efo {
            let name = efo
                .consumer_name
                .clone()
                .unwrap_or_else(|| format!("weir-{}-{}", ctx.job, ctx.node));
            for run in &mut self.streams {
                let arn = efo::consumer(&client, &run.arn, &name, efo.registration, c.retry)
                    .await
                    .map_err(|e| Error::node(&ctx.node, format!("{}: {e}", run.settings.stream)))?;
                run.consumer_arn = Some(arn);
            }
        }
        self.shared = Some(Arc::new(Shared {
            client: client.clone(),
            settings: settings.clone(),
            decoder: Decoder::new(c),
            node: ctx.node.clone(),
            node_metrics: ctx.metrics.clone(),
        }));
        self.client = Some(client);
        self.peers = Peers::open(ctx).await?.map(Arc::new);
        for (i, p) in planned.into_iter().enumerate() {
            for (id, status) in p {
                self.add_shard(i, id, status);
            }
        }
        let reading = self
            .shards
            .values()
            .filter(|s| matches!(s.status, Status::Reading(_)))
            .count();
        tracing::info!(node = %self.node, worker = ctx.worker, shards = self.shards.len(), reading, "assigned shards");
        self.discovery_last = Instant::now();
        self.advance();
        Ok(())
    }

    async fn poll(&mut self) -> Result<SourcePoll> {
        self.discover();
        self.check_peers();
        let deadline = tokio::time::Instant::now() + POLL_WAIT;
        loop {
            let event = match self.rx.try_recv() {
                Ok(e) => e,
                Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(e)) => e,
                    _ => return Ok(SourcePoll::Idle),
                },
            };
            match event {
                ReaderEvent::Records {
                    split,
                    records,
                    last,
                } => {
                    let Some(shard) = self.shards.get_mut(&*split) else {
                        continue;
                    };
                    shard.status = Status::Reading(Position::After(last));
                    if records.is_empty() {
                        continue;
                    }
                    if let Some(w) = &mut self.watermarks {
                        let now = now_ms();
                        for t in records.iter().filter_map(|r| r.event_time) {
                            w.observe(&split, t, now);
                        }
                    }
                    return Ok(SourcePoll::Batch(Batch::new(Some(split), records)));
                }
                ReaderEvent::Ended { split, children } => self.finished(&split, children),
                ReaderEvent::Repositioned { split, position } => {
                    if position.is_finished() {
                        self.finished(&split, Vec::new());
                    } else if let Some(s) = self.shards.get_mut(&*split) {
                        s.status = Status::Reading(position);
                    }
                }
                ReaderEvent::Failed(e) => return Err(e),
            }
        }
    }

    fn snapshot(&mut self) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for run in &self.streams {
            out.insert(run.settings.stream.name.clone(), stream_marker());
        }
        for (split, shard) in &self.shards {
            match &shard.status {
                Status::Waiting => {}
                Status::Reading(p) => {
                    out.insert(split.clone(), p.to_value());
                }
                Status::Finished => {
                    let run = &self.streams[shard.stream];
                    let name = &run.settings.stream.name;
                    let mine_and_started = |child: &str| {
                        self.shards
                            .get(&split_id(name, child))
                            .is_some_and(|c| c.status != Status::Waiting)
                    };
                    if !droppable(&run.graph, &shard.id, mine_and_started) {
                        out.insert(split.clone(), Position::Finished.to_value());
                    }
                }
            }
        }
        Ok(out)
    }

    fn watermark(&mut self) -> Option<i64> {
        self.watermarks.as_mut().and_then(|w| w.current(now_ms()))
    }

    async fn close(&mut self) -> Result<()> {
        for s in self.shards.values_mut() {
            if let Some(r) = s.reader.take() {
                r.abort();
            }
        }
        if let Some(t) = self.discovery.take() {
            t.abort();
        }
        if let Some(t) = self.peer_task.take() {
            t.abort();
        }
        let job_registered = self
            .settings
            .efo
            .as_ref()
            .is_some_and(|e| e.registration == Registration::Job);
        // One worker deregisters; the others' calls would only find it gone.
        if job_registered && self.ctx.as_ref().is_some_and(|c| c.worker == 0) {
            if let Some(client) = &self.client {
                for run in &self.streams {
                    if let Some(arn) = &run.consumer_arn {
                        if let Err(e) = efo::deregister(client, arn).await {
                            tracing::warn!(node = %self.node, consumer = %arn, error = %e, "deregistering the stream consumer failed");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
