//! Runs the controllers for the watched namespaces (all when none are given), serves metrics,
//! and waits for the leader Lease first when leader election is on.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, ResourceExt};
use weir_crds::{Connector, StreamJob};

use crate::admin::AdminClient;
use crate::controller::{connector, stream_job};
use crate::error::{Error, Result};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::resolve::CONNECTOR_REF;
use crate::resources;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Empty: every namespace.
    pub watch_namespaces: Vec<String>,
    /// Only StreamJobs and Connectors with matching labels are managed (`--job-selector`).
    pub job_selector: Option<String>,
    pub metrics_addr: String,
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub network_policies: resources::NetworkPolicySettings,
}

fn uses_connector(job: &StreamJob, connector: &str) -> bool {
    job.spec
        .pipeline
        .nodes()
        .any(|(_, _, n)| n.config.get(CONNECTOR_REF).and_then(|v| v.as_str()) == Some(connector))
}

fn uses_any_connector(job: &StreamJob) -> bool {
    job.spec
        .pipeline
        .nodes()
        .any(|(_, _, n)| n.config.contains_key(CONNECTOR_REF))
}

pub async fn run(client: Client, settings: Settings) -> Result<()> {
    let metrics = Metrics::new().map_err(|e| Error::Other(format!("metrics: {e}")))?;
    serve_metrics(&settings.metrics_addr, metrics.clone()).await?;
    let mut leadership = None;
    if settings.leader_election {
        let elector = Elector::new(
            client.clone(),
            &settings.lease_namespace,
            &settings.lease_name,
            &settings.identity,
            Duration::from_secs(15),
        );
        leadership = Some(elector.lead().await);
    }
    let ctx = Arc::new(stream_job::Context {
        client: client.clone(),
        admin: AdminClient::new(Duration::from_secs(5))?,
        worker_url: Arc::new(resources::worker_url),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "weir-operator".into(),
                instance: Some(settings.identity.clone()),
            },
        ),
        metrics,
        now: Arc::new(chrono::Utc::now),
        network_policies: settings.network_policies.clone(),
    });
    let namespaces: Vec<Option<String>> = if settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    if let Some(selector) = &settings.job_selector {
        check_selector(&client, &namespaces[0], selector).await?;
    }
    let mut tasks = Vec::new();
    for ns in namespaces {
        tasks.push(tokio::spawn(run_namespace(
            client.clone(),
            ns,
            settings.job_selector.clone(),
            ctx.clone(),
        )));
    }
    let all = futures::future::join_all(tasks);
    match leadership {
        Some(leading) => {
            let mut watch = leading.lost.clone();
            let lost = async move { while watch.changed().await.is_ok() && *watch.borrow() {} };
            tokio::select! {
                _ = all => {
                    // The controllers stopped on SIGTERM/SIGINT: hand the Lease over at once.
                    leading.release().await;
                }
                _ = lost => {
                    return Err(Error::Other("lost leadership; exiting so another replica takes over".into()));
                }
            }
        }
        None => {
            all.await;
        }
    }
    Ok(())
}

/// The retry delay of a controller's watches. kube's default (0.8 s doubling to 30 s, reset only
/// after 120 s without errors) is one delay shared by all the watches of a controller: after an
/// API server restart each of the seven watches answers 410 Gone once, each answer doubled the
/// shared delay, and new StreamJobs went unseen for minutes (e2e `operator::restart`). A short
/// constant delay brings every watch back within seconds and still paces a server that stays
/// away (seven watches: about two requests a second).
struct WatchRetry;

impl Iterator for WatchRetry {
    type Item = std::time::Duration;
    fn next(&mut self) -> Option<Self::Item> {
        Some(std::time::Duration::from_millis(500))
    }
}

impl kube::runtime::utils::Backoff for WatchRetry {
    fn reset(&mut self) {}
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A malformed selector would otherwise fail every watch, retried forever, with the operator
/// looking healthy: ask the API server (the one parser of selectors) once, before starting.
async fn check_selector(client: &Client, ns: &Option<String>, selector: &str) -> Result<()> {
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    match api::<StreamJob>(client, ns).list(&params).await {
        Err(kube::Error::Api(e)) if e.code == 400 => Err(Error::Other(format!(
            "--job-selector (JOB_SELECTOR) {selector:?}: {}",
            e.message
        ))),
        // Anything else (RBAC, a server away) shows up in the watches as it would without a
        // selector.
        _ => Ok(()),
    }
}

async fn run_namespace(
    client: Client,
    ns: Option<String>,
    selector: Option<String>,
    ctx: Arc<stream_job::Context>,
) {
    let wc = watcher::Config::default();
    // The jobs and Connectors this operator manages; everything they refer to (Secrets, the
    // Connectors a job uses) is watched unfiltered, as a user would not label those.
    let managed = match &selector {
        Some(s) => watcher::Config::default().labels(s),
        None => wc.clone(),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=weir-operator");
    let jobs = Controller::new(api::<StreamJob>(&client, &ns), managed.clone());
    let store = jobs.store();
    let store2 = store.clone();
    let jobs = jobs
        .owns(api::<StatefulSet>(&client, &ns), owned.clone())
        .owns(api::<ConfigMap>(&client, &ns), owned.clone())
        .owns(api::<Service>(&client, &ns), owned.clone())
        .watches(
            api::<Connector>(&client, &ns),
            wc.clone(),
            move |c: Connector| {
                let name = c.name_any();
                let cns = c.namespace();
                store
                    .state()
                    .into_iter()
                    .filter(|j| j.namespace() == cns && uses_connector(j, &name))
                    .map(|j| ObjectRef::from_obj(&*j))
                    .collect::<Vec<_>>()
            },
        )
        // A worker pod that crashes, restarts or gets its IP changes the job's status.
        .watches(api::<Pod>(&client, &ns), owned.clone(), |p: Pod| {
            let job = p.labels().get(resources::JOB_LABEL).cloned();
            job.map(|j| ObjectRef::new(&j).within(&p.namespace().unwrap_or_default()))
        })
        .watches(api::<Secret>(&client, &ns), wc.clone(), move |s: Secret| {
            // A Secret change matters only to jobs using Connectors in its namespace; their
            // reconcile recomputes the credential digests.
            let sns = s.namespace();
            store2
                .state()
                .into_iter()
                .filter(|j| j.namespace() == sns && uses_any_connector(j))
                .map(|j| ObjectRef::from_obj(&*j))
                .collect::<Vec<_>>()
        })
        .trigger_backoff(WatchRetry)
        .shutdown_on_signal()
        .run(stream_job::reconcile, stream_job::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "StreamJob controller");
            }
        });
    let connectors = Controller::new(api::<Connector>(&client, &ns), managed)
        .trigger_backoff(WatchRetry)
        .shutdown_on_signal()
        .run(connector::reconcile, connector::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Connector controller");
            }
        });
    futures::join!(jobs, connectors);
}

async fn serve_metrics(addr: &str, metrics: Metrics) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Other(format!("binding the metrics address {addr}: {e}")))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}
