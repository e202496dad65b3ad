//! The StreamJob reconciler: reads (connectors, secrets, workers, the savepoint in progress),
//! asks [`crate::upgrade::decide`] what to do, does it, and writes the status and events.
//! It never waits: a pending savepoint is polled once per reconcile and the reconcile requeues.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use weir_crds::status::SavepointRecord;
use weir_crds::stream_job::{Deployment, DesiredState, Operation, OperationKind};
use weir_crds::{Connector, StreamJob};

use crate::admin::AdminClient;
use crate::error::{Error, KubeContext, Result};
use crate::job_status::{self, WorkerAnswer};
use crate::metrics::Metrics;
use crate::resolve::{self, Resolved};
use crate::resources::{self, WorkerPlan, FIELD_MANAGER};
use crate::savepoint;
use crate::tuning;
use crate::upgrade::{self, Action, Desired, Observed, Restore, SavepointOutcome};

pub const FINALIZER: &str = "weir.dev/savepoint";

/// Admin API base URL of worker `i` of a job.
pub type WorkerUrl = Arc<dyn Fn(&StreamJob, u32) -> String + Send + Sync>;
/// The clock (fixed in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Everything a reconcile needs besides the object.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub admin: AdminClient,
    /// Admin API base URL of worker `i` (pod DNS in a cluster; loopback in tests).
    pub worker_url: WorkerUrl,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub now: Clock,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub async fn reconcile(job: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Requeue> {
    let started = Instant::now();
    ctx.metrics
        .reconciles
        .with_label_values(&["StreamJob"])
        .inc();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let api: Api<StreamJob> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!("reconcile", kind = "StreamJob", namespace = %ns, name = %job.name_any());
    let _guard = span.enter();
    let result = finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => run(job, ctx.clone(), false).await,
            Finalizer::Cleanup(job) => run(job, ctx.clone(), true).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics
        .reconcile_duration
        .with_label_values(&["StreamJob"])
        .observe(started.elapsed().as_secs_f64());
    result
}

pub fn error_policy(job: Arc<StreamJob>, error: &Error, ctx: Arc<Context>) -> Requeue {
    if let Error::Pending(reason) = error {
        tracing::debug!(name = %job.name_any(), %reason, "waiting");
        return Requeue::requeue(upgrade::POLL_INTERVAL);
    }
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["StreamJob"])
        .inc();
    tracing::warn!(name = %job.name_any(), error = %error, "reconcile failed");
    Requeue::requeue(Duration::from_secs(15))
}

/// One reconcile of one StreamJob (apply or cleanup).
async fn run(job: Arc<StreamJob>, ctx: Arc<Context>, deleting: bool) -> Result<Requeue> {
    let now = (ctx.now)();
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;
    let spec = &job.spec;
    let previous = job.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let mut problems: Vec<String> = Vec::new();
    let mut events: Vec<(EventType, &'static str, String)> = Vec::new();

    // 1. Resolve the pipeline against Connectors and Secrets, tune it, hash it.
    let (resolved, broker_max) = match resolve_pipeline(client, &ns, &job).await? {
        Ok(r) => r,
        Err(errors) => {
            problems.extend(errors);
            (fallback_resolution(&job), BTreeMap::new())
        }
    };
    let mut resolved = resolved;
    if let Err(errs) = resolved.pipeline.check_structure() {
        problems.extend(errs.iter().map(|e| format!("pipeline.{e}")));
    }
    let tunings = tuning::tune(&mut resolved.pipeline, &broker_max);
    status.transaction_timeouts = tunings
        .iter()
        .map(|t| (t.sink().to_string(), t.message()))
        .collect();
    problems.extend(
        tunings
            .iter()
            .filter(|t| t.is_problem())
            .map(|t| t.message()),
    );
    let storage = resolved.pipeline.checkpoint.storage.clone();
    if !storage.contains("://") || storage.starts_with("file://") {
        problems.push(format!(
            "pipeline.checkpoint.storage {storage:?} is a path inside each pod: state is lost when a pod is replaced and the operator cannot write savepoint manifests; use an object store URL (s3://…)"
        ));
    }
    let secret_digests = secret_digests(client, &ns, &resolved).await?;
    let hash = resources::spec_hash(&job, &resolved, &secret_digests)?;

    // 2. Read the workers and the savepoint in progress.
    let deployed = status.deployed.clone();
    let running_replicas = deployed
        .as_ref()
        .filter(|d| !d.suspended)
        .map(|d| d.parallelism)
        .unwrap_or(0);
    let urls: Vec<String> = (0..running_replicas)
        .map(|w| (ctx.worker_url)(&job, w))
        .collect();
    let mut answers: BTreeMap<u32, WorkerAnswer> = BTreeMap::new();
    for (w, url) in urls.iter().enumerate() {
        let a = ctx.admin.status(url).await.map_err(|e| e.to_string());
        answers.insert(w as u32, a);
    }
    let (job_state, workers) = job_status::job_state(&name, &answers);
    status.workers = workers;
    if let Some(c) = job_status::last_checkpoint(&answers) {
        status.last_checkpoint = Some(c);
    }
    let storage_options = resolved.pipeline.checkpoint.storage_options.clone();
    let mut outcome = None;
    if let Some(op) = status.operation.clone() {
        let polled = savepoint::poll_all(&ctx.admin, &urls, &op.savepoint_id, &op.completed).await;
        let progress = savepoint::aggregate(running_replicas, op.completed.clone(), &polled);
        let mut o = progress.outcome;
        if let SavepointOutcome::Completed { path } = &o {
            // Every part is written; the job manifest makes it a savepoint.
            if let Err(e) = savepoint::complete_job_savepoint(
                path,
                &resolved.pipeline.name,
                &op.savepoint_id,
                running_replicas,
                &storage_options,
                now,
            )
            .await
            {
                o = SavepointOutcome::Failed {
                    error: e.to_string(),
                };
            }
        }
        if let Some(cur) = status.operation.as_mut() {
            cur.completed = progress.completed;
        }
        outcome = Some(o);
    }

    // 3. Decide.
    let desired = Desired {
        hash: hash.clone(),
        parallelism: spec.parallelism,
        mode: spec.upgrade_mode,
        savepoint: spec.upgrade.savepoint.clone(),
        state: spec.state,
        initial_savepoint: spec.initial_savepoint_path.clone(),
        trigger_nonce: spec.savepoint_trigger_nonce,
        periodic_interval: spec.periodic_savepoint_interval.map(|d| d.as_std()),
        deleting,
        delete_with_savepoint: spec.delete_with_savepoint,
    };
    let observed = Observed {
        deployed: deployed.clone(),
        operation: status.operation.clone(),
        outcome: outcome.clone(),
        job: job_state,
        last_trigger_nonce: status.last_savepoint_trigger_nonce,
        last_savepoint_time: status
            .last_savepoint
            .as_ref()
            .and_then(|s| DateTime::parse_from_rfc3339(&s.time).ok())
            .map(|t| t.with_timezone(&Utc)),
        abandoned_hash: status.abandoned_hash.clone(),
        now,
    };
    let mut action = upgrade::decide(&desired, &observed);
    // A broken spec is never deployed; what runs keeps running.
    if !problems
        .iter()
        .all(|p| p.contains("is a path inside each pod"))
        && matches!(
            action,
            Action::Deploy { .. }
                | Action::Trigger {
                    kind: OperationKind::Upgrade,
                    ..
                }
        )
    {
        action = Action::Wait {
            after: Duration::from_secs(30),
            reason: "the spec has errors; nothing is deployed until they are fixed".into(),
        };
    }
    tracing::info!(?action, job_state = ?job_state, "decided");

    // 4. Record what the poll found.
    if let (Some(op), Some(o)) = (&observed.operation, &outcome) {
        let seconds = DateTime::parse_from_rfc3339(&op.started_at)
            .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(0.0);
        let kind = format!("{:?}", op.kind);
        match o {
            SavepointOutcome::Completed { path } => {
                let record = SavepointRecord {
                    id: op.savepoint_id.clone(),
                    path: path.clone(),
                    time: rfc3339(now),
                    reason: kind.clone(),
                };
                status.savepoint_history.push(record.clone());
                status.last_savepoint = Some(record);
                ctx.metrics
                    .savepoints
                    .with_label_values(&[&kind, "completed"])
                    .inc();
                ctx.metrics
                    .savepoint_duration
                    .with_label_values(&[&kind])
                    .observe(seconds);
                events.push((
                    EventType::Normal,
                    "SavepointCompleted",
                    format!("{kind} savepoint {} completed at {path}", op.savepoint_id),
                ));
            }
            SavepointOutcome::Failed { error } => {
                ctx.metrics
                    .savepoints
                    .with_label_values(&[&kind, "failed"])
                    .inc();
                events.push((
                    EventType::Warning,
                    "SavepointFailed",
                    format!(
                        "{kind} savepoint {} (attempt {}): {error}",
                        op.savepoint_id, op.attempt
                    ),
                ));
            }
            SavepointOutcome::Pending => {}
        }
    }

    // 5. Act.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut requeue = Requeue::requeue(Duration::from_secs(30));
    let mut release = false;
    if !deleting {
        apply_object(client, &ns, &resources::service(&job), "Service").await?;
        apply_object(client, &ns, &resources::pdb(&job), "PodDisruptionBudget").await?;
    }
    match &action {
        Action::Deploy { restore, reason } => {
            let cm = resources::config_map(&job, &resolved.pipeline, &hash)?;
            apply_object(client, &ns, &cm, "ConfigMap").await?;
            let grace = resolved
                .pipeline
                .checkpoint
                .timeout
                .as_std()
                .as_secs()
                .min(300) as i64
                + 30;
            let sts = resources::stateful_set(
                &job,
                &WorkerPlan {
                    hash: &hash,
                    replicas: spec.parallelism,
                    restore,
                    env: &resolved.env,
                    termination_grace_secs: grace,
                },
            );
            sts_api
                .patch(&name, &apply, &Patch::Apply(&sts))
                .await
                .kube_ctx(|| format!("applying StatefulSet {ns}/{name}"))?;
            let restored_from = match restore {
                Restore::Savepoint(p) => Some(p.clone()),
                _ => None,
            };
            if deployed.is_some() {
                let mode = format!("{:?}", spec.upgrade_mode);
                let how = match restore {
                    Restore::Savepoint(_) => "savepoint",
                    Restore::LastState => "last-state",
                    Restore::Fresh => "fresh",
                };
                ctx.metrics.upgrades.with_label_values(&[&mode, how]).inc();
            }
            status.deployed = Some(Deployment {
                spec_hash: hash.clone(),
                parallelism: spec.parallelism,
                suspended: false,
                restored_from: restored_from.clone(),
                resume_from: None,
                time: rfc3339(now),
            });
            status.operation = None;
            status.abandoned_hash = None;
            events.push((
                EventType::Normal,
                "Deploying",
                format!(
                    "{reason}: {} workers{}",
                    spec.parallelism,
                    restored_from
                        .map(|p| format!(" from savepoint {p}"))
                        .unwrap_or_default()
                ),
            ));
            requeue = Requeue::requeue(upgrade::WAIT_INTERVAL);
        }
        Action::Trigger {
            kind,
            stop,
            attempt,
        } => {
            let id = savepoint::savepoint_id(*kind, *attempt, now);
            savepoint::trigger_all(&ctx.admin, &urls, &id, *stop).await?;
            let target_hash = (*kind == OperationKind::Upgrade).then(|| hash.clone());
            status.operation = Some(Operation {
                kind: *kind,
                savepoint_id: id.clone(),
                stop: *stop,
                attempt: *attempt,
                started_at: rfc3339(now),
                target_hash,
                completed: BTreeMap::new(),
            });
            if *kind == OperationKind::Manual {
                status.last_savepoint_trigger_nonce = spec.savepoint_trigger_nonce;
            }
            events.push((
                EventType::Normal,
                "SavepointTriggered",
                format!("{kind:?} savepoint {id} (attempt {attempt}, stop: {stop})"),
            ));
            requeue = Requeue::requeue(upgrade::POLL_INTERVAL);
        }
        Action::Wait { after, reason } => {
            tracing::debug!(%reason, "waiting");
            requeue = Requeue::requeue(*after);
        }
        Action::Suspend { resume_from } => {
            let patch = serde_json::json!({ "spec": { "replicas": 0 } });
            sts_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .kube_ctx(|| format!("scaling StatefulSet {ns}/{name} to 0"))?;
            if let Some(d) = status.deployed.as_mut() {
                d.suspended = true;
                d.resume_from = resume_from.clone();
            }
            status.operation = None;
            events.push((
                EventType::Normal,
                "Suspended",
                match resume_from {
                    Some(p) => format!("scaled to 0; resumes from savepoint {p}"),
                    None => "scaled to 0; resumes from the newest checkpoints".into(),
                },
            ));
        }
        Action::Finish { kind, failed } => {
            status.operation = None;
            if *kind == OperationKind::Manual {
                status.last_savepoint_trigger_nonce = spec.savepoint_trigger_nonce;
            }
            if let Some(f) = failed {
                tracing::warn!(reason = %f, "savepoint given up");
            }
            requeue = Requeue::requeue(upgrade::POLL_INTERVAL);
        }
        Action::Abandon { kind, reason } => {
            status.operation = None;
            if *kind == OperationKind::Upgrade {
                status.abandoned_hash = Some(hash.clone());
                ctx.metrics
                    .upgrades
                    .with_label_values(&[&format!("{:?}", spec.upgrade_mode), "abandoned"])
                    .inc();
            }
            events.push((EventType::Warning, "UpgradeAbandoned", reason.clone()));
        }
        Action::ReleaseFinalizer { reason } => {
            release = true;
            events.push((EventType::Normal, "Released", reason.clone()));
        }
        Action::Steady => {}
    }
    if status.abandoned_hash.is_some() {
        problems.push(format!(
            "the upgrade to spec {hash} was given up; the previous spec keeps running until the spec changes"
        ));
    }

    // 6. Savepoint retention (works while suspended: it only needs the object store).
    if let Some(retention) = &spec.savepoint_retention {
        let keep: Vec<String> = status
            .deployed
            .iter()
            .flat_map(|d| [d.restored_from.clone(), d.resume_from.clone()])
            .flatten()
            .collect();
        let keep_refs: Vec<&str> = keep.iter().map(String::as_str).collect();
        let expired: Vec<SavepointRecord> =
            savepoint::expired(&status.savepoint_history, retention, &keep_refs, now)
                .into_iter()
                .cloned()
                .collect();
        for sp in expired {
            match savepoint::delete_savepoint(&sp.path, &storage_options).await {
                Ok(()) => {
                    status.savepoint_history.retain(|h| h.id != sp.id);
                    events.push((
                        EventType::Normal,
                        "SavepointDeleted",
                        format!("retention deleted savepoint {} ({})", sp.id, sp.path),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, savepoint = %sp.id, "retention could not delete")
                }
            }
        }
    }

    // 7. Status and events.
    let checkpointing = resolved.pipeline.checkpoint.enabled.then(|| {
        (
            resolved.pipeline.checkpoint.interval.as_std(),
            resolved.pipeline.checkpoint.timeout.as_std(),
        )
    });
    let inputs = job_status::Inputs {
        generation: job.metadata.generation,
        deleting,
        desired_hash: &hash,
        desired_suspended: spec.state == DesiredState::Suspended,
        parallelism: spec.parallelism,
        deployed: status.deployed.as_ref(),
        operation: status.operation.as_ref(),
        job: job_state,
        workers: &status.workers,
        problems: &problems,
        abandoned: status.abandoned_hash.is_some(),
        checkpointing,
        last_checkpoint: status.last_checkpoint.as_ref(),
        now,
    };
    status.phase = job_status::phase(&inputs);
    status.conditions = job_status::conditions(&inputs, &previous.conditions);
    status.observed_generation = job.metadata.generation;
    status.parallelism = status
        .deployed
        .as_ref()
        .filter(|d| !d.suspended)
        .map(|d| d.parallelism)
        .unwrap_or(0);
    status.selector = Some(resources::selector(&name));
    for c in &status.conditions {
        let before = previous.conditions.iter().find(|p| p.type_ == c.type_);
        if before.map(|b| &b.status) != Some(&c.status) {
            let warn = (c.type_ == job_status::DEGRADED && c.status == "True")
                || (c.type_ != job_status::DEGRADED && c.status == "False" && before.is_some());
            events.push((
                if warn {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                "ConditionChanged",
                format!("{} is {} ({}): {}", c.type_, c.status, c.reason, c.message),
            ));
        }
    }
    if status.phase != previous.phase || job.status.is_none() {
        events.push((
            EventType::Normal,
            "PhaseChanged",
            format!("{:?} -> {:?}", previous.phase, status.phase),
        ));
    }
    if !release && Some(&status) != job.status.as_ref() {
        let api: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
        let body = serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "StreamJob",
            "status": status,
        });
        api.patch_status(&name, &apply, &Patch::Apply(&body))
            .await
            .kube_ctx(|| format!("patching the status of StreamJob {ns}/{name}"))?;
    }
    let reference = job.object_ref(&());
    for (type_, reason, note) in events {
        let ev = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
    if release {
        return Ok(Requeue::await_change());
    }
    if deleting {
        // kube removes the finalizer when cleanup returns Ok: keep it until the savepoint is done.
        return Err(Error::Pending(format!(
            "waiting for the delete savepoint of {ns}/{name}"
        )));
    }
    Ok(requeue)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Server-side apply of an owned object.
async fn apply_object<K>(client: &Client, ns: &str, obj: &K, what: &str) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .kube_ctx(|| format!("applying {what} {ns}/{name}"))?;
    Ok(())
}

/// The pipeline as written (no connectors resolved), used for status when resolution fails.
fn fallback_resolution(job: &StreamJob) -> Resolved {
    let mut pipeline = job.spec.pipeline.clone();
    if pipeline.name.is_empty() {
        pipeline.name = job.name_any();
    }
    pipeline.parallelism = job.spec.parallelism;
    Resolved {
        pipeline,
        env: Vec::new(),
        connectors: Vec::new(),
        secrets: Vec::new(),
    }
}

type Resolution = std::result::Result<(Resolved, BTreeMap<String, u64>), Vec<String>>;

/// Resolves connectorRefs; the outer error is an API failure, the inner one a spec problem.
async fn resolve_pipeline(client: &Client, ns: &str, job: &StreamJob) -> Result<Resolution> {
    let uses_connectors = job
        .spec
        .pipeline
        .nodes()
        .any(|(_, _, n)| n.config.contains_key(resolve::CONNECTOR_REF));
    let mut connectors = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    if uses_connectors {
        let api: Api<Connector> = Api::namespaced(client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .kube_ctx(|| format!("listing Connectors in {ns}"))?;
        for c in list.items {
            let n = c.name_any();
            statuses.insert(n.clone(), c.status.clone().unwrap_or_default());
            connectors.insert(n, c.spec);
        }
    }
    let resolved = match resolve::resolve(&job.name_any(), &job.spec, &connectors) {
        Ok(r) => r,
        Err(errors) => return Ok(Err(errors.iter().map(|e| e.to_string()).collect())),
    };
    // The brokers' transaction maximum per Kafka sink: probed, or stated on the Connector.
    let mut broker_max = BTreeMap::new();
    for sink in &job.spec.pipeline.sinks {
        let Some(cref) = sink
            .config
            .get(resolve::CONNECTOR_REF)
            .and_then(|v| v.as_str())
        else {
            continue;
        };
        let probed = statuses
            .get(cref)
            .and_then(|s| s.transaction_max_timeout_ms);
        let stated = connectors
            .get(cref)
            .and_then(|c| c.kafka.as_ref())
            .and_then(|k| k.transaction_max_timeout)
            .map(|d| d.as_millis());
        if let Some(max) = probed.or(stated) {
            broker_max.insert(sink.name.clone(), max);
        }
    }
    Ok(Ok((resolved, broker_max)))
}

/// Digests of the referenced Secrets' data: a changed credential changes the pod template
/// (and so restarts the job through its upgrade mode) without the value leaving the Secret.
async fn secret_digests(
    client: &Client,
    ns: &str,
    resolved: &Resolved,
) -> Result<BTreeMap<String, String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for r in &resolved.secrets {
        let key = format!("{}/{}", r.name, r.key);
        let digest = match api
            .get_opt(&r.name)
            .await
            .kube_ctx(|| format!("reading Secret {ns}/{}", r.name))?
        {
            Some(s) => {
                let value = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(|b| b.0.clone())
                    .unwrap_or_default();
                Sha256::digest(&value)
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect()
            }
            None => "missing".to_string(),
        };
        out.insert(key, digest);
    }
    Ok(out)
}
