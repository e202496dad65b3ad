//! One attempt of a worker: an instance of every node, the channels between them, and the
//! checkpoint coordinator that runs until the attempt ends. A restart is a new attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, Receiver};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_crds::pipeline::{Role, Topology};
use weir_crds::PipelineSpec;

use super::coordinator::machine::{Config, Machine};
use super::coordinator::{Coordinator, WorkerCommand, WorkerOutcome};
use super::edge::{edge, EdgeReceiver, EdgeSender, EDGE_RECORDS};
use super::nodes::{Outputs, SinkTask, SourceTask, TransformTask};
use super::noncritical::{self, NonCriticalSink};
use crate::api::registry::{dead_letter_config, node_config, Registry};
use crate::api::{DynSink, NodeContext};
use crate::checkpoint::{CheckpointStore, Restore};
use crate::error::Result;
use crate::metrics::Metrics;
use weir_crds::contract::WorkerStatus;

/// How long the tasks of an ended attempt get to abort or close before they are cancelled.
const TASK_GRACE: Duration = Duration::from_secs(10);

/// What every attempt of one worker runs with: the job, and this worker's place in it.
pub struct WorkerJob {
    pub spec: Arc<PipelineSpec>,
    pub topology: Arc<Topology>,
    pub registry: Registry,
    pub store: CheckpointStore,
    pub metrics: Metrics,
    pub worker: u32,
}

/// One attempt of a worker: where it starts, and the status and commands it shares with its
/// supervisor.
pub struct Attempt<'a> {
    pub job: &'a WorkerJob,
    pub restore: Restore,
    pub origin: Option<String>,
    pub status: Arc<Mutex<WorkerStatus>>,
    pub commands: Receiver<WorkerCommand>,
}

/// Runs one attempt to its end; returns how it ended and the command channel it borrowed.
pub async fn run(a: Attempt<'_>) -> (Result<WorkerOutcome>, Receiver<WorkerCommand>) {
    let Attempt {
        job,
        mut restore,
        origin,
        status,
        commands,
    } = a;
    let (spec, topology, registry) = (&*job.spec, &*job.topology, &job.registry);
    let (store, metrics, worker) = (job.store.clone(), job.metrics.clone(), job.worker);
    let ctx = |name: &str| NodeContext {
        job: spec.name.clone(),
        node: name.to_string(),
        worker,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        checkpoint: spec.checkpoint.clone(),
        metrics: metrics.node(&spec.name, worker, name),
    };
    let nodes = match build(spec, registry, &status, &metrics, worker, &ctx) {
        Ok(n) => n,
        Err(e) => return (Err(e), commands),
    };

    let cancel = CancellationToken::new();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    // One channel per edge, in the order each node lists its inputs.
    let mut outputs: HashMap<String, Vec<EdgeSender>> = HashMap::new();
    let mut inputs: HashMap<String, Vec<EdgeReceiver>> = HashMap::new();
    for (_, _, node) in spec.nodes().filter(|(r, _, _)| *r != Role::Source) {
        for upstream in &topology.inputs[&node.name] {
            let (tx, rx) = edge(EDGE_RECORDS);
            outputs.entry(upstream.clone()).or_default().push(tx);
            inputs.entry(node.name.clone()).or_default().push(rx);
        }
    }

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut source_ctl = Vec::new();
    for (name, source) in nodes.sources {
        let (tx, rx) = mpsc::channel(8);
        source_ctl.push(tx);
        let task = SourceTask {
            ctx: ctx(&name),
            source,
            restored: restore.sources.remove(&name).unwrap_or_default(),
            control: rx,
            outputs: Outputs(outputs.remove(&name).unwrap_or_default()),
            events: events_tx.clone(),
            cancel: cancel.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    let mut transform_names = Vec::new();
    for (name, transform) in nodes.transforms {
        transform_names.push(name.clone());
        let task = TransformTask {
            ctx: ctx(&name),
            transform,
            restored: restore.operators.remove(&name).unwrap_or_default(),
            inputs: inputs.remove(&name).unwrap_or_default(),
            outputs: Outputs(outputs.remove(&name).unwrap_or_default()),
            events: events_tx.clone(),
            cancel: cancel.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    let mut sink_ctl = HashMap::new();
    for (name, sink) in nodes.sinks {
        let (tx, rx) = mpsc::channel(64);
        sink_ctl.insert(name.clone(), tx);
        let task = SinkTask {
            ctx: ctx(&name),
            sink,
            restored: restore.sinks.remove(&name).unwrap_or_default(),
            inputs: inputs.remove(&name).unwrap_or_default(),
            control: rx,
            events: events_tx.clone(),
            cancel: cancel.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    drop(events_tx);

    if let Ok(mut s) = status.lock() {
        s.restored_from = (restore.checkpoint_id > 0).then_some(restore.checkpoint_id);
    }
    let config = Config {
        job: spec.name.clone(),
        worker,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        origin,
        checkpoint: spec.checkpoint.clone(),
        sources: spec.sources.iter().map(|n| n.name.clone()).collect(),
        transforms: transform_names,
        sinks: spec.sinks.iter().map(|n| n.name.clone()).collect(),
    };
    let coordinator = Coordinator {
        machine: Machine::new(config, restore.checkpoint_id + 1, Instant::now()),
        store,
        events: events_rx,
        commands,
        sources: source_ctl,
        sinks: sink_ctl,
        status,
        metrics,
        cancel: cancel.clone(),
    };
    let (outcome, commands) = coordinator.run().await;
    cancel.cancel();
    // Let sinks abort or close; a task still stuck in I/O after the grace period is cancelled,
    // so that it cannot act next to the next attempt's instances.
    let deadline = tokio::time::Instant::now() + TASK_GRACE;
    for t in &mut tasks {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    for t in &tasks {
        t.abort();
    }
    (outcome, commands)
}

/// Every node of the attempt, built before anything runs so that a bad node fails cleanly.
struct Nodes {
    sources: Vec<(String, Box<dyn crate::api::Source>)>,
    transforms: Vec<(String, Box<dyn crate::api::AsyncTransform>)>,
    sinks: Vec<(String, Box<dyn DynSink>)>,
}

fn build(
    spec: &PipelineSpec,
    registry: &Registry,
    status: &Arc<Mutex<WorkerStatus>>,
    metrics: &Metrics,
    worker: u32,
    ctx: &dyn Fn(&str) -> NodeContext,
) -> Result<Nodes> {
    let mut nodes = Nodes {
        sources: Vec::new(),
        transforms: Vec::new(),
        sinks: Vec::new(),
    };
    for (i, node) in spec.sources.iter().enumerate() {
        let source = registry.build_source(&node_config(spec, Role::Source, i))?;
        nodes.sources.push((node.name.clone(), source));
    }
    for (i, node) in spec.transforms.iter().enumerate() {
        let transform = registry.build_transform(&node_config(spec, Role::Transform, i))?;
        nodes.transforms.push((node.name.clone(), transform));
    }
    for (i, node) in spec.sinks.iter().enumerate() {
        let cfg = node_config(spec, Role::Sink, i);
        let sink = registry.build_sink(&cfg)?.0;
        let sink: Box<dyn DynSink> = match dead_letter_config(spec, i) {
            Some(dl) => {
                let dead_letter = registry.build_sink(&dl)?.0;
                Box::new(NonCriticalSink::new(noncritical::Parts {
                    registry: registry.clone(),
                    dead_letter_ctx: ctx(&dl.spec.name),
                    cfg,
                    sink,
                    dead_letter,
                    status: status.clone(),
                    metrics: metrics.clone(),
                    job: spec.name.clone(),
                    worker,
                }))
            }
            None => sink,
        };
        nodes.sinks.push((node.name.clone(), sink));
    }
    Ok(nodes)
}
