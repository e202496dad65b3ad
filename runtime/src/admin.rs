//! The worker admin API (one port): health, readiness, metrics, status and savepoints. The
//! operator talks to workers only through this.
//!
//! Requests that change the job (`POST /v1/savepoints`, which can stop it) need
//! `Authorization: Bearer <token>`; the read-only ones (`/healthz`, `/readyz`, `/metrics`,
//! `GET /v1/status`, `GET /v1/savepoints/{id}`) stay open on the same port, because the kubelet's
//! probes and Prometheus scrapes carry no credentials and they reveal nothing secret.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use weir_crds::contract::{
    JobStatus, SavepointAccepted, SavepointRequest, SAVEPOINTS_PATH, STATUS_PATH,
};

use crate::engine::{JobControl, WorkerState, WorkerStatus};
use crate::error::{Error, Result};

/// The state shown for this process's workers.
fn aggregate(workers: &[WorkerStatus]) -> WorkerState {
    WorkerState::aggregate(workers.iter().map(|w| w.state))
}

async fn status(State(c): State<JobControl>) -> Json<JobStatus> {
    let workers = c.snapshot();
    Json(JobStatus {
        job: c.job.clone(),
        parallelism: c.parallelism,
        state: aggregate(&workers),
        restarts: workers.iter().map(|w| w.restarts).sum(),
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
    (StatusCode::ACCEPTED, Json(SavepointAccepted { id })).into_response()
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

/// The bearer token that guards the admin API's mutating endpoints. Neither `Debug` nor any
/// error shows its value; only [`AdminToken::expose`] does, for the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token given by the user (`WEIR_ADMIN_TOKEN`, a token file, a Secret); `what` names
    /// where it came from in the error. Surrounding whitespace (a file's newline) is dropped.
    pub fn new(value: &str, what: &str) -> std::result::Result<AdminToken, String> {
        let v = value.trim();
        if v.len() < 16 {
            return Err(format!(
                "{what}: the admin token must have at least 16 characters"
            ));
        }
        // It travels in an HTTP header: visible ASCII only.
        if !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{what}: the admin token may contain only visible ASCII characters"
            ));
        }
        Ok(AdminToken(v.into()))
    }

    /// 32 random bytes from the operating system, as 64 hex digits.
    pub fn generate() -> AdminToken {
        let mut bytes = [0u8; 32];
        // The OS random source failing is not something to run on without.
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        AdminToken(hex.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header carries this token (`Bearer <token>`), compared in
    /// constant time so that response timing does not reveal how much of a guess was right.
    pub fn authorizes(&self, header: Option<&HeaderValue>) -> bool {
        let Some(given) = header.and_then(|h| h.to_str().ok()).and_then(bearer) else {
            return false;
        };
        given.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Lets a request through with the right token; otherwise 401 and a log line naming the caller
/// (never what it sent).
async fn require_token(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    if token.authorizes(req.headers().get(AUTHORIZATION)) {
        return next.run(req).await;
    }
    let caller = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let reason = if req.headers().contains_key(AUTHORIZATION) {
        "wrong bearer token"
    } else {
        "no bearer token"
    };
    tracing::warn!(%caller, method = %req.method(), path = %req.uri().path(), reason, "admin API refused a request");
    let body = serde_json::json!({
        "error": "this endpoint needs 'Authorization: Bearer <admin token>' (WEIR_ADMIN_TOKEN of the job)"
    });
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        Json(body),
    )
        .into_response()
}

pub fn router(control: JobControl, token: AdminToken) -> Router {
    // Anything that changes the job goes here, behind the token.
    let guarded = Router::new()
        .route(SAVEPOINTS_PATH, post(trigger))
        .route_layer(middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(STATUS_PATH, get(status))
        .route(&format!("{SAVEPOINTS_PATH}/{{id}}"), get(savepoint))
        .merge(guarded)
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

pub async fn serve(addr: &str, control: JobControl, token: AdminToken) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bindable(addr).as_str())
        .await
        .map_err(|e| Error::io(format!("binding the admin API to {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("admin API address", e))?;
    // The peer address reaches `require_token`, which names refused callers.
    let app = router(control, token).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = AdminToken::new("s3cret-token-0123456789", "test").unwrap();
        let h = |v: &str| Some(HeaderValue::from_str(v).unwrap());
        assert!(t.authorizes(h("Bearer s3cret-token-0123456789").as_ref()));
        assert!(t.authorizes(h("bearer s3cret-token-0123456789").as_ref()));
        assert!(!t.authorizes(None));
        assert!(!t.authorizes(h("Bearer").as_ref()));
        assert!(!t.authorizes(h("Bearer ").as_ref()));
        assert!(!t.authorizes(h("Basic s3cret-token-0123456789").as_ref()));
        assert!(!t.authorizes(h("Bearer s3cret-token-012345678").as_ref()));
        assert!(!t.authorizes(h("Bearer s3cret-token-01234567890").as_ref()));
        assert!(!t.authorizes(h("s3cret-token-0123456789").as_ref()));
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let e = AdminToken::new("short", "WEIR_ADMIN_TOKEN").unwrap_err();
        assert!(
            e.starts_with("WEIR_ADMIN_TOKEN:") && !e.contains("short"),
            "{e}"
        );
        let e = AdminToken::new("with a space in the middle", "token file x").unwrap_err();
        assert!(
            e.contains("token file x") && e.contains("visible ASCII"),
            "{e}"
        );
        let t = AdminToken::new("  from-a-file-with-newline\n", "f").unwrap();
        assert_eq!(t.expose(), "from-a-file-with-newline");
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
        let g = AdminToken::generate();
        assert_eq!(g.expose().len(), 64);
        assert_ne!(g, AdminToken::generate());
        assert!(AdminToken::new(g.expose(), "g").is_ok());
    }

    #[test]
    fn pod_ip_addresses_bind_in_both_families() {
        assert_eq!(super::bindable("10.0.0.7:8081"), "10.0.0.7:8081");
        assert_eq!(super::bindable("fd00::7:8081"), "[fd00::7]:8081");
        assert_eq!(super::bindable("[::1]:8081"), "[::1]:8081");
        assert_eq!(super::bindable("127.0.0.1:0"), "127.0.0.1:0");
    }
}
