//! The worker admin API (one port): health, readiness, metrics, status and savepoints. The
//! operator talks to workers only through this.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::engine::{JobControl, WorkerState, WorkerStatus};
use crate::error::{Error, Result};

#[derive(Serialize)]
pub struct JobStatus {
    pub job: String,
    pub parallelism: u32,
    /// The least advanced state over this process's workers.
    pub state: WorkerState,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SavepointRequest {
    #[serde(default)]
    pub stop: bool,
    /// Optional id, so every worker of a job can be given the same one.
    pub id: Option<String>,
}

/// The aggregate state shown for a set of workers: failure wins, then the earliest phase.
pub fn aggregate(workers: &[WorkerStatus]) -> WorkerState {
    use WorkerState::*;
    let states: Vec<WorkerState> = workers.iter().map(|w| w.state).collect();
    for s in [Failed, Starting, Running, Finishing, Stopped, Finished] {
        if states.contains(&s) {
            return s;
        }
    }
    Starting
}

async fn status(State(c): State<JobControl>) -> Json<JobStatus> {
    let workers = c.snapshot();
    Json(JobStatus {
        job: c.job.clone(),
        parallelism: c.parallelism,
        state: aggregate(&workers),
        workers,
    })
}

async fn ready(State(c): State<JobControl>) -> Response {
    let workers = c.snapshot();
    match aggregate(&workers) {
        WorkerState::Running | WorkerState::Finishing => {
            (StatusCode::OK, "ready\n").into_response()
        }
        s => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{s:?}\n").to_lowercase(),
        )
            .into_response(),
    }
}

async fn metrics(State(c): State<JobControl>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        c.metrics.render(),
    )
        .into_response()
}

async fn trigger(State(c): State<JobControl>, body: Option<Json<SavepointRequest>>) -> Response {
    let req = body.map(|b| b.0).unwrap_or_default();
    if let Some(id) = &req.id {
        if id.is_empty()
            || !id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            let msg =
                serde_json::json!({"error": "id: use only letters, digits, '-', '_' and '.'"});
            return (StatusCode::BAD_REQUEST, Json(msg)).into_response();
        }
    }
    let id = c.trigger_savepoint(req.id, req.stop);
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id }))).into_response()
}

async fn savepoint(State(c): State<JobControl>, Path(id): Path<String>) -> Response {
    match c.savepoint_status(&id) {
        Some(s) => Json(s).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no savepoint {id}")})),
        )
            .into_response(),
    }
}

pub fn router(control: JobControl) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/savepoints", post(trigger))
        .route("/v1/savepoints/{id}", get(savepoint))
        .with_state(control)
}

/// Binds the admin API; returns the bound address (port 0 picks a free one).
/// `host:port` as the operator writes it (`$(POD_IP):8081`), with an IPv6 host put in brackets
/// so that it parses (`fd00::7:8081` → `[fd00::7]:8081`).
pub fn bindable(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((host, port)) if host.contains(':') && !host.starts_with('[') => {
            format!("[{host}]:{port}")
        }
        _ => addr.to_string(),
    }
}

pub async fn serve(addr: &str, control: JobControl) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bindable(addr).as_str())
        .await
        .map_err(|e| Error::io(format!("binding the admin API to {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("admin API address", e))?;
    let app = router(control);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pod_ip_addresses_bind_in_both_families() {
        assert_eq!(super::bindable("10.0.0.7:8081"), "10.0.0.7:8081");
        assert_eq!(super::bindable("fd00::7:8081"), "[fd00::7]:8081");
        assert_eq!(super::bindable("[::1]:8081"), "[::1]:8081");
        assert_eq!(super::bindable("127.0.0.1:0"), "127.0.0.1:0");
    }
}
