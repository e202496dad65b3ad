//! The StreamJob reconciler, in four steps as controller-rs structures it, and further:
//! [`observe`] does every read (Connectors, Secrets, pods, the workers' admin APIs, the savepoint
//! in progress) → [`decide`] picks the next action (pure, [`crate::lifecycle::decide`]) → [`plan`]
//! turns it into the new status, the events and the writes (pure) → [`apply`] does every write.
//! It never waits: a pending savepoint is polled once per reconcile and the reconcile requeues.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::Instrument;
use weir_crds::status::SavepointRecord;
use weir_crds::stream_job::{
    CheckpointRef, Deployment, DesiredState, Operation, OperationKind, PendingUpgrade,
    StreamJobStatus, WorkerSummary,
};
use weir_crds::{Connector, StreamJob};

use crate::admin::AdminClient;
use crate::admin_secret::{self, SecretWrite, TokenPlan};
use crate::controller::{read_secret_key, SecretKey};
use crate::error::{Error, KubeContext, Result};
use crate::job_status::{self, EventNote, Problem, WorkerAnswer};
use crate::lifecycle::{self, Action, Desired, JobState, Observed, Restore, SavepointOutcome};
use crate::metrics::Metrics;
use crate::pods::{self, PodObservation};
use crate::resolve::{self, Resolved};
use crate::resources::{self, NetworkPolicySettings, WorkerPlan, FIELD_MANAGER};
use crate::savepoint;
use crate::tuning::{self, Tuning};

pub const FINALIZER: &str = "weir.dev/savepoint";

/// Admin API base URL of worker `i` of a job, given its pod (none while it has no IP).
pub type WorkerUrl =
    Arc<dyn Fn(&StreamJob, u32, Option<&PodObservation>) -> Option<String> + Send + Sync>;
/// The clock (fixed in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Everything a reconcile needs besides the object.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub admin: AdminClient,
    /// Admin API base URL of worker `i` (its pod IP in a cluster; loopback in tests).
    pub worker_url: WorkerUrl,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub now: Clock,
    /// Who the jobs' NetworkPolicies let reach the admin port (or none rendered).
    pub network_policies: NetworkPolicySettings,
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
    // `instrument`, not `span.enter()`: a guard held across `.await` would leak this job's span
    // into whatever else the executor polls on this thread.
    let span = tracing::info_span!("reconcile", kind = "StreamJob", namespace = %ns, name = %job.name_any());
    let result = finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => run(job, ctx.clone(), false).await,
            Finalizer::Cleanup(job) => run(job, ctx.clone(), true).await,
        }
    })
    .instrument(span)
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
        return Requeue::requeue(lifecycle::POLL_INTERVAL);
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
    let seen = observe(&job, &ctx, now).await?;
    let action = decide(&job, &seen, deleting, now);
    tracing::info!(?action, job_state = ?seen.job_state, "decided");
    let plan = plan(&job, &seen, &action, deleting, now, &ctx.network_policies)?;
    apply(&job, &ctx, &seen, plan, deleting).await
}

// ---------------------------------------------------------------------------------------------
// Observe: every read.

/// What one reconcile read.
pub struct Observation {
    pub resolved: Resolved,
    /// Spec, resolution and tuning problems (typed: blocking ones hold deployments back).
    pub problems: Vec<Problem>,
    pub tunings: Vec<Tuning>,
    /// Hash of everything whose change needs the workers restarted.
    pub hash: String,
    /// The worker pods by index.
    pub pods: BTreeMap<u32, PodObservation>,
    /// Admin API of each deployed worker (none while its pod has no IP).
    pub urls: Vec<Option<String>>,
    pub job_state: JobState,
    pub workers: Vec<WorkerSummary>,
    /// The newest checkpoint every worker has (as read now).
    pub last_checkpoint: Option<CheckpointRef>,
    /// Within the startup timeout of the deployment.
    pub starting: bool,
    /// The savepoint in progress, polled: the outcome and the workers' complete parts.
    pub poll: Option<(SavepointOutcome, BTreeMap<String, String>)>,
    /// The job's StatefulSet does not exist (deleted by hand or by a cleanup script).
    pub workload_missing: bool,
    /// The admin tokens to authenticate with, and the Secret to write if it is not right yet.
    pub admin_tokens: TokenPlan,
    /// The metadata of the job's StatefulSet, Service, disruption budget and NetworkPolicy.
    pub owned: OwnedObjects,
}

/// The metadata of the job's StatefulSet, Service, PodDisruptionBudget and NetworkPolicy as read
/// (`None`: the object does not exist). A missing StatefulSet is put back through the lifecycle
/// ([`Observed::workload_missing`]); the others' content hashes decide whether they are written
/// ([`owned_writes`]).
#[derive(Clone, Debug, Default)]
pub struct OwnedObjects {
    pub stateful_set: Option<ObjectMeta>,
    pub service: Option<ObjectMeta>,
    pub pdb: Option<ObjectMeta>,
    pub network_policy: Option<ObjectMeta>,
}

async fn observe(job: &StreamJob, ctx: &Context, now: DateTime<Utc>) -> Result<Observation> {
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    let status = job.status.clone().unwrap_or_default();
    let secret_name = admin_secret::secret_name(&name);
    // The reads do not depend on each other: all at once, so that a reconcile waits for about
    // one API round trip here rather than for each in turn (on a busy API server each takes
    // long; see README, "Operator at scale").
    let read_token = async {
        Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&secret_name)
            .await
            .kube_ctx(|| format!("reading Secret {ns}/{secret_name}"))
    };
    let list_pods = async {
        Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default().labels(&resources::selector(&name)))
            .await
            .kube_ctx(|| format!("listing the pods of StreamJob {ns}/{name}"))
    };
    let ((resolved, problems, tunings, mut digests), token_secret, pods, owned) = futures::try_join!(
        resolve_and_check(&ctx.client, &ns, job),
        read_token,
        list_pods,
        observe_owned(&ctx.client, &ns, &name),
    )?;
    let admin_tokens = admin_secret::plan(
        job,
        token_secret.as_ref(),
        weir_runtime::admin::AdminToken::generate(),
    );
    // A new token (a rotation) rolls the workers, so that they take it up.
    digests.insert(
        format!("{secret_name}/{}", admin_secret::TOKEN_KEY),
        admin_tokens.tokens.digest(),
    );
    let hash = resources::spec_hash(job, &resolved, &digests)?;
    let pods = pods::by_worker(&pods.items, &name, resources::HASH_ANNOTATION);
    let workload_missing = owned.stateful_set.is_none();
    let running = status
        .deployed
        .as_ref()
        .filter(|d| !d.suspended)
        .map_or(0, |d| d.parallelism);
    let urls: Vec<Option<String>> = (0..running)
        .map(|w| (ctx.worker_url)(job, w, pods.get(&w)))
        .collect();
    let answers = ask_workers(&ctx.admin, &urls).await;
    let starting = within_startup(job, status.deployed.as_ref(), now);
    let (job_state, workers) = job_status::job_state(&name, &answers, &pods, starting);
    let last_checkpoint = job_status::last_checkpoint(&answers);
    let poll = match &status.operation {
        Some(op) => Some(poll_savepoint(ctx, &resolved, op, &urls, running, now).await),
        None => None,
    };
    Ok(Observation {
        resolved,
        problems,
        tunings,
        hash,
        pods,
        urls,
        job_state,
        workers,
        last_checkpoint,
        starting,
        poll,
        workload_missing,
        admin_tokens,
        owned,
    })
}

/// Every deployed worker's `GET /v1/status`, all at once.
async fn ask_workers(admin: &AdminClient, urls: &[Option<String>]) -> BTreeMap<u32, WorkerAnswer> {
    let asks = urls.iter().enumerate().map(|(w, url)| async move {
        let answer: WorkerAnswer = match url {
            Some(u) => admin.status(u).await.map_err(|e| e.to_string()),
            None => Err(format!("worker {w} has no pod IP yet")),
        };
        (w as u32, answer)
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

/// Whether the deployment is younger than the job's startup timeout (or there is none yet):
/// workers that do not answer then are starting, not failing.
fn within_startup(job: &StreamJob, deployed: Option<&Deployment>, now: DateTime<Utc>) -> bool {
    deployed.is_none_or(|d| {
        DateTime::parse_from_rfc3339(&d.time)
            .map(|t| now - t.with_timezone(&Utc))
            .ok()
            .and_then(|age| age.to_std().ok())
            .is_none_or(|age| age < job.spec.startup_timeout.as_std())
    })
}

/// Reads the metadata (only: small answers) of the job's StatefulSet, Service, disruption budget
/// and NetworkPolicy, all at once.
async fn observe_owned(client: &Client, ns: &str, name: &str) -> Result<OwnedObjects> {
    async fn meta<K>(
        client: &Client,
        ns: &str,
        name: &str,
        what: &str,
    ) -> Result<Option<ObjectMeta>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Ok(Api::<K>::namespaced(client.clone(), ns)
            .get_metadata_opt(name)
            .await
            .kube_ctx(|| format!("reading {what} {ns}/{name}"))?
            .map(|m| m.metadata))
    }
    let (stateful_set, service, pdb, network_policy) = futures::try_join!(
        meta::<StatefulSet>(client, ns, name, "StatefulSet"),
        meta::<Service>(client, ns, name, "Service"),
        meta::<PodDisruptionBudget>(client, ns, name, "PodDisruptionBudget"),
        meta::<NetworkPolicy>(client, ns, name, "NetworkPolicy"),
    )?;
    Ok(OwnedObjects {
        stateful_set,
        service,
        pdb,
        network_policy,
    })
}

type Checked = (
    Resolved,
    Vec<Problem>,
    Vec<Tuning>,
    BTreeMap<String, String>,
);

/// Resolves the pipeline against Connectors and Secrets, validates it exactly as `weir
/// validate` does, tunes Kafka transaction timeouts, and digests the credentials.
async fn resolve_and_check(client: &Client, ns: &str, job: &StreamJob) -> Result<Checked> {
    let mut problems = Vec::new();
    let (mut resolved, broker_max) = match resolve_pipeline(client, ns, job).await? {
        Ok(r) => r,
        Err(errors) => {
            problems.extend(errors.into_iter().map(Problem::blocking));
            (fallback_resolution(job), BTreeMap::new())
        }
    };
    if problems.is_empty() {
        // The same check as `weir validate`, so nothing is deployed that the workers refuse.
        problems.extend(
            resolve::validate(&resolved.pipeline)
                .iter()
                .map(|e| Problem::blocking(format!("pipeline.{e}"))),
        );
    }
    let tunings = tuning::tune(&mut resolved.pipeline, &broker_max);
    problems.extend(
        tunings
            .iter()
            .filter(|t| t.is_problem())
            .map(|t| Problem::blocking(t.message())),
    );
    let storage = &resolved.pipeline.checkpoint.storage;
    if !storage.contains("://") || storage.starts_with("file://") {
        problems.push(Problem::warning(format!(
            "pipeline.checkpoint.storage {storage:?} is a path inside each pod: state is lost when a pod is replaced and the operator cannot write savepoint manifests; use an object store URL (s3://…)"
        )));
    }
    let (digests, missing) = secret_digests(client, ns, &resolved).await?;
    problems.extend(missing.into_iter().map(Problem::blocking));
    Ok((resolved, problems, tunings, digests))
}

/// Polls the savepoint in progress; once every part is written, writes the job's savepoint
/// manifest (idempotent: the last step of the savepoint itself, so it belongs to the poll).
async fn poll_savepoint(
    ctx: &Context,
    resolved: &Resolved,
    op: &Operation,
    urls: &[Option<String>],
    running: u32,
    now: DateTime<Utc>,
) -> (SavepointOutcome, BTreeMap<String, String>) {
    let polled = savepoint::poll_all(&ctx.admin, urls, &op.savepoint_id, &op.completed).await;
    let progress = savepoint::aggregate(running, op.completed.clone(), &polled);
    let mut outcome = progress.outcome;
    if let SavepointOutcome::Completed { path } = &outcome {
        if let Err(e) = savepoint::complete_job_savepoint(
            path,
            &resolved.pipeline.name,
            &op.savepoint_id,
            running,
            &resolved.pipeline.checkpoint.storage_options,
            now,
        )
        .await
        {
            outcome = SavepointOutcome::Failed {
                error: e.to_string(),
            };
        }
    }
    (outcome, progress.completed)
}

// ---------------------------------------------------------------------------------------------
// Decide: pure.

/// The next action: the lifecycle state machine, except that a spec with blocking problems is
/// never rolled out (what runs keeps running).
pub fn decide(job: &StreamJob, seen: &Observation, deleting: bool, now: DateTime<Utc>) -> Action {
    let spec = &job.spec;
    let status = job.status.clone().unwrap_or_default();
    let desired = Desired {
        hash: seen.hash.clone(),
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
        deployed: status.deployed.clone(),
        operation: status.operation.clone(),
        outcome: seen.poll.as_ref().map(|(o, _)| o.clone()),
        job: seen.job_state,
        last_trigger_nonce: status.last_savepoint_trigger_nonce,
        last_savepoint_time: status
            .last_savepoint
            .as_ref()
            .and_then(|s| DateTime::parse_from_rfc3339(&s.time).ok())
            .map(|t| t.with_timezone(&Utc)),
        abandoned_hash: status.abandoned_hash.clone(),
        pending_upgrade: status.pending_upgrade.clone(),
        deletion_started: job
            .metadata
            .deletion_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond())),
        last_checkpoint: seen
            .last_checkpoint
            .clone()
            .or(status.last_checkpoint.clone()),
        workload_missing: seen.workload_missing,
        now,
    };
    let action = lifecycle::decide(&desired, &observed);
    let rolls_out = matches!(
        action,
        Action::Deploy { .. }
            | Action::WaitForWorkers { .. }
            | Action::Trigger {
                kind: OperationKind::Upgrade,
                ..
            }
    );
    if rolls_out && job_status::blocking(&seen.problems) {
        return Action::Wait {
            after: Duration::from_secs(30),
            reason: "the spec has problems; nothing is deployed until they are fixed".into(),
        };
    }
    action
}

// ---------------------------------------------------------------------------------------------
// Plan: pure.

/// A write the reconcile makes (in this order, before the status patch).
#[derive(Clone, Debug)]
pub enum Write {
    /// The job's admin token Secret (created or rotated); first, the pods need it.
    AdminSecret(Box<SecretWrite>),
    Service(Box<Service>),
    NetworkPolicy(Box<NetworkPolicy>),
    /// The job's NetworkPolicy was switched off: delete it (if it is there).
    RemoveNetworkPolicy,
    Pdb(Box<PodDisruptionBudget>),
    ConfigMap(Box<ConfigMap>),
    StatefulSet(Box<StatefulSet>),
    ScaleToZero,
    TriggerSavepoint {
        id: String,
        stop: bool,
    },
}

/// Something to count in the operator's metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Savepoint {
        kind: String,
        completed: bool,
        seconds: Option<f64>,
    },
    Upgrade {
        mode: String,
        how: String,
    },
}

/// Everything a reconcile writes, decided before anything is written.
pub struct Plan {
    pub status: StreamJobStatus,
    pub events: Vec<EventNote>,
    pub writes: Vec<Write>,
    /// Savepoints the retention policy expired, deleted after the writes.
    pub expired: Vec<SavepointRecord>,
    pub outcomes: Vec<Outcome>,
    /// `None`: wait for a change (after releasing the finalizer).
    pub requeue: Option<Duration>,
    pub release: bool,
}

impl Plan {
    fn event(&mut self, warning: bool, reason: &str, note: String) {
        self.events.push(EventNote {
            warning,
            reason: reason.into(),
            note,
        });
    }
}

pub fn plan(
    job: &StreamJob,
    seen: &Observation,
    action: &Action,
    deleting: bool,
    now: DateTime<Utc>,
    network_policies: &NetworkPolicySettings,
) -> Result<Plan> {
    let previous = job.status.clone();
    let mut status = previous.clone().unwrap_or_default();
    status.workers = seen.workers.clone();
    if let Some(c) = &seen.last_checkpoint {
        status.last_checkpoint = Some(c.clone());
    }
    status.transaction_timeouts = seen
        .tunings
        .iter()
        .map(|t| (t.sink().to_string(), t.message()))
        .collect();
    let mut p = Plan {
        status,
        events: Vec::new(),
        writes: Vec::new(),
        expired: Vec::new(),
        outcomes: Vec::new(),
        requeue: Some(Duration::from_secs(30)),
        release: false,
    };
    if let (Some(op), Some((outcome, completed))) = (
        &job.status.as_ref().and_then(|s| s.operation.clone()),
        &seen.poll,
    ) {
        if let Some(cur) = p.status.operation.as_mut() {
            cur.completed = completed.clone();
        }
        record_poll(&mut p, op, outcome, now);
    }
    act(&mut p, job, seen, action, now)?;
    if !deleting && p.status.deployed.is_some() {
        // Only a job that runs (or is about to) gets its Service, disruption budget and
        // NetworkPolicy.
        let owned = owned_writes(job, &seen.owned, network_policies)?;
        p.writes.splice(0..0, owned);
    }
    // Before anything else: the pods read it at start, the savepoint calls need it.
    if let Some(secret) = &seen.admin_tokens.write {
        p.writes
            .insert(0, Write::AdminSecret(Box::new(secret.clone())));
    }
    retention(&mut p, job, now);
    finish_status(&mut p, job, seen, deleting, now);
    p.events
        .extend(job_status::transition_events(previous.as_ref(), &p.status));
    Ok(p)
}

/// The writes that make the job's Service, disruption budget and NetworkPolicy what the job
/// wants, in that order: only those whose content hash differs from the one read (so none in the
/// steady state), and the NetworkPolicy's deletion only while it exists.
pub fn owned_writes(
    job: &StreamJob,
    observed: &OwnedObjects,
    network_policies: &NetworkPolicySettings,
) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    let service = resources::stamped(resources::service(job))?;
    if !resources::up_to_date(&service, observed.service.as_ref()) {
        writes.push(Write::Service(Box::new(service)));
    }
    let pdb = resources::stamped(resources::pdb(job))?;
    if !resources::up_to_date(&pdb, observed.pdb.as_ref()) {
        writes.push(Write::Pdb(Box::new(pdb)));
    }
    match resources::network_policy(job, network_policies) {
        Some(np) => {
            let np = resources::stamped(np)?;
            if !resources::up_to_date(&np, observed.network_policy.as_ref()) {
                writes.push(Write::NetworkPolicy(Box::new(np)));
            }
        }
        None if observed.network_policy.is_some() => writes.push(Write::RemoveNetworkPolicy),
        None => {}
    }
    Ok(writes)
}

/// What the savepoint poll found: the record, events and metrics.
fn record_poll(p: &mut Plan, op: &Operation, outcome: &SavepointOutcome, now: DateTime<Utc>) {
    let seconds = DateTime::parse_from_rfc3339(&op.started_at)
        .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds() as f64 / 1000.0)
        .ok();
    let kind = format!("{:?}", op.kind);
    match outcome {
        SavepointOutcome::Completed { path } => {
            let record = SavepointRecord {
                id: op.savepoint_id.clone(),
                path: path.clone(),
                time: rfc3339(now),
                reason: kind.clone(),
            };
            p.status.savepoint_history.push(record.clone());
            p.status.last_savepoint = Some(record);
            p.outcomes.push(Outcome::Savepoint {
                kind: kind.clone(),
                completed: true,
                seconds,
            });
            p.event(
                false,
                "SavepointCompleted",
                format!("{kind} savepoint {} completed at {path}", op.savepoint_id),
            );
        }
        SavepointOutcome::Failed { error } => {
            p.outcomes.push(Outcome::Savepoint {
                kind: kind.clone(),
                completed: false,
                seconds: None,
            });
            p.event(
                true,
                "SavepointFailed",
                format!(
                    "{kind} savepoint {} (attempt {}): {error}",
                    op.savepoint_id, op.attempt
                ),
            );
        }
        SavepointOutcome::Pending => {}
    }
}

/// The action's writes and its effect on the status.
fn act(
    p: &mut Plan,
    job: &StreamJob,
    seen: &Observation,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<()> {
    let spec = &job.spec;
    if !matches!(action, Action::WaitForWorkers { .. }) {
        p.status.pending_upgrade = None;
    }
    match action {
        Action::Deploy { restore, reason } => deploy(p, job, seen, restore, reason, now)?,
        Action::Trigger {
            kind,
            stop,
            attempt,
        } => trigger(p, job, seen, *kind, *stop, *attempt, now),
        Action::Wait { after, reason } => {
            tracing::debug!(%reason, "waiting");
            p.requeue = Some(*after);
        }
        Action::WaitForWorkers { reason } => wait_for_workers(p, seen, reason, now),
        Action::Suspend { resume_from } => suspend(p, resume_from.as_deref()),
        Action::Finish { kind, failed } => {
            p.status.operation = None;
            if *kind == OperationKind::Manual {
                p.status.last_savepoint_trigger_nonce = spec.savepoint_trigger_nonce;
            }
            if let Some(f) = failed {
                tracing::warn!(reason = %f, "savepoint given up");
            }
            p.requeue = Some(lifecycle::POLL_INTERVAL);
        }
        Action::Abandon { kind, reason } => {
            p.status.operation = None;
            if *kind == OperationKind::Upgrade {
                p.status.abandoned_hash = Some(seen.hash.clone());
                p.outcomes.push(Outcome::Upgrade {
                    mode: format!("{:?}", spec.upgrade_mode),
                    how: "abandoned".into(),
                });
            }
            p.event(true, "UpgradeAbandoned", reason.clone());
        }
        Action::ReleaseFinalizer { reason, warning } => {
            p.release = true;
            p.requeue = None;
            let why = if *warning {
                "ReleasedWithoutSavepoint"
            } else {
                "Released"
            };
            p.event(*warning, why, reason.clone());
        }
        Action::Steady => steady(p, job, now),
    }
    Ok(())
}

/// Ask every worker for a savepoint and record it as the operation in progress.
fn trigger(
    p: &mut Plan,
    job: &StreamJob,
    seen: &Observation,
    kind: OperationKind,
    stop: bool,
    attempt: u32,
    now: DateTime<Utc>,
) {
    let id = savepoint::savepoint_id(kind, attempt, now);
    p.writes.push(Write::TriggerSavepoint {
        id: id.clone(),
        stop,
    });
    p.status.operation = Some(Operation {
        kind,
        savepoint_id: id.clone(),
        stop,
        attempt,
        started_at: rfc3339(now),
        target_hash: (kind == OperationKind::Upgrade).then(|| seen.hash.clone()),
        completed: BTreeMap::new(),
    });
    if kind == OperationKind::Manual {
        p.status.last_savepoint_trigger_nonce = job.spec.savepoint_trigger_nonce;
    }
    p.event(
        false,
        "SavepointTriggered",
        format!("{kind:?} savepoint {id} (attempt {attempt}, stop: {stop})"),
    );
    p.requeue = Some(lifecycle::POLL_INTERVAL);
}

/// An upgrade held back until the workers can take its savepoint: noted once per target spec.
fn wait_for_workers(p: &mut Plan, seen: &Observation, reason: &str, now: DateTime<Utc>) {
    let current = p
        .status
        .pending_upgrade
        .take()
        .filter(|w| w.target_hash == seen.hash);
    if current.is_none() {
        p.event(false, "UpgradeWaitingForWorkers", reason.to_string());
    }
    p.status.pending_upgrade = Some(current.unwrap_or(PendingUpgrade {
        target_hash: seen.hash.clone(),
        since: rfc3339(now),
    }));
    p.requeue = Some(lifecycle::WAIT_INTERVAL);
}

fn suspend(p: &mut Plan, resume_from: Option<&str>) {
    p.writes.push(Write::ScaleToZero);
    if let Some(d) = p.status.deployed.as_mut() {
        d.suspended = true;
        d.resume_from = resume_from.map(str::to_string);
    }
    p.status.operation = None;
    let note = match resume_from {
        Some(path) => format!("scaled to 0; resumes from savepoint {path}"),
        None => "scaled to 0; resumes from the newest checkpoints".into(),
    };
    p.event(false, "Suspended", note);
}

/// Nothing to do: come back no later than the next periodic savepoint is due.
fn steady(p: &mut Plan, job: &StreamJob, now: DateTime<Utc>) {
    let Some(every) = job.spec.periodic_savepoint_interval else {
        return;
    };
    let since = p
        .status
        .last_savepoint
        .as_ref()
        .map(|s| s.time.as_str())
        .or(p.status.deployed.as_ref().map(|d| d.time.as_str()))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let due = lifecycle::periodic_due_in(every.as_std(), since, now).max(lifecycle::POLL_INTERVAL);
    p.requeue = p.requeue.map(|r| r.min(due));
}

/// Write the ConfigMap and roll the StatefulSet to the desired spec.
fn deploy(
    p: &mut Plan,
    job: &StreamJob,
    seen: &Observation,
    restore: &Restore,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let spec = &job.spec;
    let pipeline = &seen.resolved.pipeline;
    p.writes
        .push(Write::ConfigMap(Box::new(resources::config_map(
            job, pipeline, &seen.hash,
        )?)));
    // SIGTERM lets the checkpoint in flight finish first.
    let grace = pipeline.checkpoint.timeout.as_std().as_secs().min(300) as i64 + 30;
    let sts = resources::stateful_set(
        job,
        &WorkerPlan {
            hash: &seen.hash,
            replicas: spec.parallelism,
            restore,
            env: &seen.resolved.env,
            termination_grace_secs: grace,
        },
    );
    p.writes.push(Write::StatefulSet(Box::new(sts)));
    let restored_from = match restore {
        Restore::Savepoint(path) => Some(path.clone()),
        _ => None,
    };
    if p.status.deployed.is_some() {
        let how = match restore {
            Restore::Savepoint(_) => "savepoint",
            Restore::LastState => "last-state",
            Restore::Fresh => "fresh",
        };
        p.outcomes.push(Outcome::Upgrade {
            mode: format!("{:?}", spec.upgrade_mode),
            how: how.into(),
        });
    }
    p.status.deployed = Some(Deployment {
        spec_hash: seen.hash.clone(),
        parallelism: spec.parallelism,
        suspended: false,
        restored_from: restored_from.clone(),
        resume_from: None,
        time: rfc3339(now),
    });
    p.status.operation = None;
    p.status.abandoned_hash = None;
    let from = restored_from
        .map(|path| format!(" from savepoint {path}"))
        .unwrap_or_default();
    p.event(
        false,
        "Deploying",
        format!("{reason}: {} workers{from}", spec.parallelism),
    );
    p.requeue = Some(lifecycle::WAIT_INTERVAL);
    Ok(())
}

/// Savepoints to delete by the retention policy (works while suspended: it only needs the object
/// store). They leave the history here; `apply` puts back any it could not delete.
fn retention(p: &mut Plan, job: &StreamJob, now: DateTime<Utc>) {
    let Some(policy) = &job.spec.savepoint_retention else {
        return;
    };
    let keep: Vec<String> = p
        .status
        .deployed
        .iter()
        .flat_map(|d| [d.restored_from.clone(), d.resume_from.clone()])
        .flatten()
        .collect();
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let expired: Vec<SavepointRecord> =
        savepoint::expired(&p.status.savepoint_history, policy, &keep, now)
            .into_iter()
            .cloned()
            .collect();
    if expired.is_empty() {
        return;
    }
    p.status
        .savepoint_history
        .retain(|h| !expired.iter().any(|e| e.id == h.id));
    p.expired = expired;
}

/// Phase, conditions and the rest of the status, from what was read and what is planned.
fn finish_status(
    p: &mut Plan,
    job: &StreamJob,
    seen: &Observation,
    deleting: bool,
    now: DateTime<Utc>,
) {
    let spec = &job.spec;
    let mut problems = seen.problems.clone();
    if p.status.abandoned_hash.is_some() {
        problems.push(Problem::warning(format!(
            "the upgrade to spec {} was given up; the previous spec keeps running until the spec changes",
            seen.hash
        )));
    }
    let checkpoint = &seen.resolved.pipeline.checkpoint;
    let checkpointing = checkpoint
        .enabled
        .then(|| (checkpoint.interval.as_std(), checkpoint.timeout.as_std()));
    let status = &p.status;
    let rolling = status
        .deployed
        .as_ref()
        .filter(|d| !d.suspended)
        .map_or(0, |d| {
            pods::rolling(&seen.pods, d.parallelism, &d.spec_hash)
        });
    let inputs = job_status::Inputs {
        generation: job.metadata.generation,
        deleting,
        desired_hash: &seen.hash,
        desired_suspended: spec.state == DesiredState::Suspended,
        parallelism: spec.parallelism,
        deployed: status.deployed.as_ref(),
        operation: status.operation.as_ref(),
        pending_upgrade: status.pending_upgrade.as_ref(),
        job: seen.job_state,
        workers: &status.workers,
        rolling,
        problems: &problems,
        abandoned: status.abandoned_hash.is_some(),
        starting: seen.starting,
        checkpointing,
        last_checkpoint: status.last_checkpoint.as_ref(),
        now,
    };
    let phase = job_status::phase(&inputs);
    let previous: Vec<_> = job
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let conditions = job_status::conditions(&inputs, &previous);
    p.status.phase = phase;
    p.status.conditions = conditions;
    p.status.observed_generation = job.metadata.generation;
    p.status.parallelism = p
        .status
        .deployed
        .as_ref()
        .filter(|d| !d.suspended)
        .map_or(0, |d| d.parallelism);
    p.status.selector = Some(resources::selector(&job.name_any()));
}

// ---------------------------------------------------------------------------------------------
// Apply: every write.

async fn apply(
    job: &StreamJob,
    ctx: &Context,
    seen: &Observation,
    mut plan: Plan,
    deleting: bool,
) -> Result<Requeue> {
    let client = &ctx.client;
    let name = job.name_any();
    let ns = job.namespace().unwrap_or_else(|| "default".into());
    for write in std::mem::take(&mut plan.writes) {
        write_one(ctx, seen, &ns, &name, write).await?;
    }
    let options = &seen.resolved.pipeline.checkpoint.storage_options;
    delete_expired(&mut plan, options).await;
    record_metrics(&ctx.metrics, &plan.outcomes);
    if !plan.release && Some(&plan.status) != job.status.as_ref() {
        let api: Api<StreamJob> = Api::namespaced(client.clone(), &ns);
        let body = serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "StreamJob",
            "status": plan.status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .kube_ctx(|| format!("patching the status of StreamJob {ns}/{name}"))?;
    }
    publish(&ctx.recorder, job, &plan.events).await;
    match plan.requeue {
        None => Ok(Requeue::await_change()),
        // kube removes the finalizer when cleanup returns Ok: keep it until the savepoint is done.
        Some(_) if deleting => Err(Error::Pending(format!(
            "waiting for the delete savepoint of {ns}/{name}"
        ))),
        Some(after) => Ok(Requeue::requeue(after)),
    }
}

/// One write to the API server or the workers; the first error ends the reconcile.
async fn write_one(
    ctx: &Context,
    seen: &Observation,
    ns: &str,
    name: &str,
    write: Write,
) -> Result<()> {
    let client = &ctx.client;
    match write {
        Write::AdminSecret(o) => apply_object(client, ns, &o.0, "Secret").await,
        Write::Service(o) => apply_object(client, ns, o.as_ref(), "Service").await,
        Write::NetworkPolicy(o) => apply_object(client, ns, o.as_ref(), "NetworkPolicy").await,
        Write::RemoveNetworkPolicy => {
            let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e).kube_ctx(|| format!("deleting NetworkPolicy {ns}/{name}")),
            }
        }
        Write::Pdb(o) => apply_object(client, ns, o.as_ref(), "PodDisruptionBudget").await,
        Write::ConfigMap(o) => apply_object(client, ns, o.as_ref(), "ConfigMap").await,
        Write::StatefulSet(o) => apply_object(client, ns, o.as_ref(), "StatefulSet").await,
        Write::ScaleToZero => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let patch = serde_json::json!({ "spec": { "replicas": 0 } });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .kube_ctx(|| format!("scaling StatefulSet {ns}/{name} to 0"))?;
            Ok(())
        }
        Write::TriggerSavepoint { id, stop } => {
            let tokens = &seen.admin_tokens.tokens;
            savepoint::trigger_all(&ctx.admin, &seen.urls, &id, stop, tokens).await
        }
    }
}

/// Deletes the savepoints retention expired. One that cannot be deleted goes back into the
/// history (retried next time) instead of failing the reconcile.
async fn delete_expired(plan: &mut Plan, options: &BTreeMap<String, String>) {
    if plan.expired.is_empty() {
        return;
    }
    let mut deleted = Vec::new();
    for sp in std::mem::take(&mut plan.expired) {
        match savepoint::delete_savepoint(&sp.path, options).await {
            Ok(()) => deleted.push(format!("{} ({})", sp.id, sp.path)),
            Err(e) => {
                tracing::warn!(error = %e, savepoint = %sp.id, "retention could not delete");
                plan.status.savepoint_history.push(sp);
            }
        }
    }
    plan.status
        .savepoint_history
        .sort_by(|a, b| a.time.cmp(&b.time));
    if !deleted.is_empty() {
        plan.event(
            false,
            "SavepointDeleted",
            format!("retention deleted savepoints {}", deleted.join(", ")),
        );
    }
}

fn record_metrics(metrics: &Metrics, outcomes: &[Outcome]) {
    for o in outcomes {
        match o {
            Outcome::Savepoint {
                kind,
                completed,
                seconds,
            } => {
                let label = if *completed { "completed" } else { "failed" };
                metrics.savepoints.with_label_values(&[kind, label]).inc();
                if let Some(s) = seconds {
                    metrics
                        .savepoint_duration
                        .with_label_values(&[kind])
                        .observe(*s);
                }
            }
            Outcome::Upgrade { mode, how } => {
                metrics.upgrades.with_label_values(&[mode, how]).inc();
            }
        }
    }
}

async fn publish(recorder: &Recorder, job: &StreamJob, events: &[EventNote]) {
    let reference = job.object_ref(&());
    for e in events {
        let ev = KubeEvent {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.clone(),
            note: Some(truncate(e.note.clone(), 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %err, "could not publish an event");
        }
    }
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

/// Digests of the referenced Secrets' data (a changed credential changes the pod template, and
/// so restarts the job through its upgrade mode, without the value leaving the Secret), and a
/// problem for each Secret or key that does not exist: such a job is held back, because its pods
/// could not even start.
async fn secret_digests(
    client: &Client,
    ns: &str,
    resolved: &Resolved,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut digests = BTreeMap::new();
    let mut missing = Vec::new();
    for used in &resolved.secrets {
        let r = &used.secret;
        let digest = match read_secret_key(&api, ns, r).await? {
            SecretKey::Value(v) => Sha256::digest(&v)
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect(),
            SecretKey::NoSecret => {
                missing.push(format!(
                    "Secret {ns}/{} does not exist (Connector {:?} reads its key {:?} for the setting {})",
                    r.name, used.connector, r.key, used.setting
                ));
                "missing".into()
            }
            SecretKey::NoKey => {
                missing.push(format!(
                    "Secret {ns}/{} has no key {:?} (Connector {:?} reads it for the setting {})",
                    r.name, r.key, used.connector, used.setting
                ));
                "missing".into()
            }
        };
        digests.insert(format!("{}/{}", r.name, r.key), digest);
    }
    missing.dedup();
    Ok((digests, missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(network_policy: bool, admin_port: u16) -> StreamJob {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": "orders", "namespace": "prod", "uid": "u-1"},
            "spec": {"image": "weir:1", "parallelism": 2, "adminPort": admin_port,
                     "networkPolicy": {"enabled": network_policy},
                     "pipeline": {"sources": [{"name": "gen", "type": "datagen"}],
                                  "sinks": [{"name": "out", "type": "blackhole"}]}}
        }))
        .unwrap()
    }

    fn settings() -> NetworkPolicySettings {
        NetworkPolicySettings {
            enabled: true,
            operator_namespace: "weir-system".into(),
            operator_pod_labels: BTreeMap::from([("app".to_string(), "weir-operator".to_string())]),
            metrics_from: None,
        }
    }

    fn kinds(writes: &[Write]) -> Vec<&'static str> {
        writes
            .iter()
            .map(|w| match w {
                Write::Service(_) => "Service",
                Write::Pdb(_) => "Pdb",
                Write::NetworkPolicy(_) => "NetworkPolicy",
                Write::RemoveNetworkPolicy => "RemoveNetworkPolicy",
                other => panic!("not an owned-object write: {other:?}"),
            })
            .collect()
    }

    /// What the API server holds after the writes were applied: their metadata.
    fn as_written(writes: &[Write]) -> OwnedObjects {
        let mut seen = OwnedObjects::default();
        for w in writes {
            match w {
                Write::Service(o) => seen.service = Some(o.metadata.clone()),
                Write::Pdb(o) => seen.pdb = Some(o.metadata.clone()),
                Write::NetworkPolicy(o) => seen.network_policy = Some(o.metadata.clone()),
                Write::RemoveNetworkPolicy => seen.network_policy = None,
                _ => {}
            }
        }
        seen
    }

    #[test]
    fn owned_objects_are_written_when_missing_and_then_left_alone() {
        let j = job(true, 8081);
        let first = owned_writes(&j, &OwnedObjects::default(), &settings()).unwrap();
        assert_eq!(kinds(&first), ["Service", "Pdb", "NetworkPolicy"]);
        let seen = as_written(&first);
        let again = owned_writes(&j, &seen, &settings()).unwrap();
        assert!(again.is_empty(), "nothing changed: {again:?}");
    }

    #[test]
    fn only_the_objects_whose_content_changed_are_written() {
        let seen = as_written(
            &owned_writes(&job(true, 8081), &OwnedObjects::default(), &settings()).unwrap(),
        );
        // The admin port is in the Service and the NetworkPolicy, not in the disruption budget.
        let writes = owned_writes(&job(true, 9000), &seen, &settings()).unwrap();
        assert_eq!(kinds(&writes), ["Service", "NetworkPolicy"]);
        let Write::Service(svc) = &writes[0] else {
            unreachable!()
        };
        assert_eq!(
            svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
            9000
        );
        // Who may reach the workers changed (the operator's settings): only the policy.
        let mut moved = settings();
        moved.operator_namespace = "elsewhere".into();
        let writes = owned_writes(&job(true, 8081), &seen, &moved).unwrap();
        assert_eq!(kinds(&writes), ["NetworkPolicy"]);
    }

    #[test]
    fn an_object_deleted_or_written_by_someone_else_is_put_back() {
        let j = job(true, 8081);
        let mut seen =
            as_written(&owned_writes(&j, &OwnedObjects::default(), &settings()).unwrap());
        seen.pdb = None;
        assert_eq!(
            kinds(&owned_writes(&j, &seen, &settings()).unwrap()),
            ["Pdb"]
        );
        // Present, but without our hash (made by hand, or by an operator before hashes).
        let mut seen =
            as_written(&owned_writes(&j, &OwnedObjects::default(), &settings()).unwrap());
        seen.service.as_mut().unwrap().annotations = None;
        assert_eq!(
            kinds(&owned_writes(&j, &seen, &settings()).unwrap()),
            ["Service"]
        );
    }

    #[test]
    fn a_switched_off_network_policy_is_deleted_once() {
        let seen = as_written(
            &owned_writes(&job(true, 8081), &OwnedObjects::default(), &settings()).unwrap(),
        );
        let off = job(false, 8081);
        let writes = owned_writes(&off, &seen, &settings()).unwrap();
        assert_eq!(kinds(&writes), ["RemoveNetworkPolicy"]);
        let gone = as_written(&writes);
        let seen = OwnedObjects {
            network_policy: gone.network_policy,
            ..seen
        };
        assert!(owned_writes(&off, &seen, &settings()).unwrap().is_empty());
    }
}
