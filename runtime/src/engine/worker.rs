//! Builds one worker: an instance of every node, the channels between them, and its coordinator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_crds::pipeline::{Role, Topology};
use weir_crds::PipelineSpec;

use super::coordinator::{Coordinator, WorkerCommand, WorkerOutcome};
use super::nodes::{Outputs, SinkTask, SourceTask, TransformTask};
use super::status::WorkerStatus;
use crate::api::NodeContext;
use crate::checkpoint::{CheckpointStore, Restore};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::record::Message;
use crate::registry::{node_config, Registry};

/// Batches in flight between two nodes; a full channel is backpressure.
const CHANNEL_CAPACITY: usize = 16;

pub struct WorkerHandle {
    pub join: JoinHandle<Result<WorkerOutcome>>,
    pub commands: Sender<WorkerCommand>,
    pub status: Arc<Mutex<WorkerStatus>>,
}

pub struct WorkerSetup<'a> {
    pub spec: &'a PipelineSpec,
    pub topology: &'a Topology,
    pub registry: &'a Registry,
    pub store: CheckpointStore,
    pub metrics: Metrics,
    pub worker: u32,
    pub restore: Restore,
    pub origin: Option<String>,
}

pub fn spawn(setup: WorkerSetup<'_>) -> Result<WorkerHandle> {
    let WorkerSetup {
        spec,
        topology,
        registry,
        store,
        metrics,
        worker,
        mut restore,
        origin,
    } = setup;
    let cancel = CancellationToken::new();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let ctx = |name: &str| NodeContext {
        job: spec.name.clone(),
        node: name.to_string(),
        worker,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        checkpoint: spec.checkpoint.clone(),
        metrics: metrics.node(&spec.name, worker, name),
    };

    // One channel per edge, in the order each node lists its inputs.
    let mut outputs: HashMap<String, Vec<Sender<Message>>> = HashMap::new();
    let mut inputs: HashMap<String, Vec<Receiver<Message>>> = HashMap::new();
    for (role, _, node) in spec.nodes().filter(|(r, _, _)| *r != Role::Source) {
        let _ = role;
        for upstream in &topology.inputs[&node.name] {
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            outputs.entry(upstream.clone()).or_default().push(tx);
            inputs.entry(node.name.clone()).or_default().push(rx);
        }
    }

    // Build every instance before spawning anything, so a bad node fails the start cleanly.
    let mut sources = Vec::new();
    for (i, node) in spec.sources.iter().enumerate() {
        sources.push((
            node.name.clone(),
            registry.build_source(&node_config(spec, Role::Source, i))?,
        ));
    }
    let mut transforms = Vec::new();
    for (i, node) in spec.transforms.iter().enumerate() {
        transforms.push((
            node.name.clone(),
            registry.build_transform(&node_config(spec, Role::Transform, i))?,
        ));
    }
    let mut sinks = Vec::new();
    for (i, node) in spec.sinks.iter().enumerate() {
        sinks.push((
            node.name.clone(),
            registry.build_sink(&node_config(spec, Role::Sink, i))?,
        ));
    }

    let mut tasks = Vec::new();
    let mut source_ctl = Vec::new();
    for (name, source) in sources {
        let (tx, rx) = mpsc::channel(8);
        source_ctl.push((name.clone(), tx));
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
    for (name, transform) in transforms {
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
    let mut sink_ctl = Vec::new();
    for (name, sink) in sinks {
        let (tx, rx) = mpsc::channel(64);
        sink_ctl.push((name.clone(), tx));
        let task = SinkTask {
            ctx: ctx(&name),
            sink: sink.0,
            restored: restore.sinks.remove(&name).unwrap_or_default(),
            inputs: inputs.remove(&name).unwrap_or_default(),
            control: rx,
            events: events_tx.clone(),
            cancel: cancel.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    drop(events_tx);

    let status = Arc::new(Mutex::new(WorkerStatus {
        worker,
        restored_from: (restore.checkpoint_id > 0).then_some(restore.checkpoint_id),
        ..Default::default()
    }));
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let coordinator = Coordinator {
        job: spec.name.clone(),
        worker,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        spec: spec.checkpoint.clone(),
        store,
        events: events_rx,
        commands: cmd_rx,
        sources: source_ctl,
        transforms: transform_names,
        sinks: sink_ctl,
        status: status.clone(),
        metrics,
        cancel: cancel.clone(),
        next_id: restore.checkpoint_id + 1,
        origin,
    };
    let join = tokio::spawn(async move {
        let outcome = coordinator.run().await;
        cancel.cancel();
        // Let sinks abort or close before the worker reports; a task stuck in I/O is left behind.
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        outcome
    });
    Ok(WorkerHandle {
        join,
        commands: cmd_tx,
        status,
    })
}
