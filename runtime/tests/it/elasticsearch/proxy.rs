//! A fault-injecting HTTP proxy in front of the test node: it forwards every request, and for a
//! number of `_bulk` requests it can
//! - reject some items with the item-level 429 a node with a full write queue sends (the
//!   rejected actions are not forwarded, so they really are not indexed),
//! - answer the whole request with a status (429, 503) without forwarding it,
//! - refuse requests whose `Authorization` header is not the expected one (401).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub enum Fault {
    None,
    /// For the next `requests` bulk requests, reject every `every`-th action with a 429.
    RejectItems {
        every: usize,
        requests: usize,
    },
    /// Answer the next `requests` bulk requests with `status`.
    Whole {
        status: u16,
        requests: usize,
    },
}

struct Inner {
    upstream: String,
    fault: Mutex<Fault>,
    auth: Option<String>,
    client: reqwest::Client,
    bulks: AtomicU64,
    /// Actions seen by `RejectItems`; every `every`-th is rejected (so a retried action is
    /// not always the one rejected again).
    actions_seen: AtomicU64,
    rejected_items: AtomicU64,
    refused_requests: AtomicU64,
    unauthorized: AtomicU64,
}

pub struct Proxy {
    pub url: String,
    inner: Arc<Inner>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// A proxy to `upstream` on a free loopback port; `auth`: the `Authorization` value every
    /// request must carry.
    pub fn start(upstream: &str, fault: Fault, auth: Option<&str>) -> Proxy {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            fault: Mutex::new(fault),
            auth: auth.map(str::to_string),
            client: reqwest::Client::new(),
            bulks: AtomicU64::new(0),
            actions_seen: AtomicU64::new(0),
            rejected_items: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Proxy {
            url,
            inner,
            _runtime: runtime,
        }
    }

    pub fn bulks(&self) -> u64 {
        self.inner.bulks.load(Ordering::SeqCst)
    }
    pub fn rejected_items(&self) -> u64 {
        self.inner.rejected_items.load(Ordering::SeqCst)
    }
    pub fn refused_requests(&self) -> u64 {
        self.inner.refused_requests.load(Ordering::SeqCst)
    }
    pub fn unauthorized(&self) -> u64 {
        self.inner.unauthorized.load(Ordering::SeqCst)
    }
}

fn status(code: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Splits an NDJSON bulk body into actions (action line plus source line, except `delete`).
fn actions(body: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut out = Vec::new();
    while let Some(action) = lines.next() {
        let mut a = action.to_vec();
        a.push(b'\n');
        if !action.starts_with(b"{\"delete\"") {
            if let Some(source) = lines.next() {
                a.extend_from_slice(source);
                a.push(b'\n');
            }
        }
        out.push(a);
    }
    out
}

async fn forward(
    inner: &Inner,
    method: &str,
    path_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (u16, Bytes) {
    let mut req = inner
        .client
        .request(
            method.parse().unwrap(),
            format!("{}{path_query}", inner.upstream),
        )
        .body(body);
    if let Some(ct) = headers.get("content-type") {
        req = req.header("content-type", ct.as_bytes());
    }
    match req.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.bytes().await.unwrap_or_default())
        }
        Err(_) => (502, Bytes::from_static(b"upstream unreachable")),
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Some(want) = &inner.auth {
        let got = parts.headers.get("authorization").map(|v| v.as_bytes());
        if got != Some(want.as_bytes()) {
            inner.unauthorized.fetch_add(1, Ordering::SeqCst);
            return status(
                401,
                json!({"error": {"type": "security_exception", "reason": "weir test proxy: wrong or missing credentials"}, "status": 401}),
            );
        }
    }
    let method = parts.method.as_str().to_string();
    if !parts.uri.path().ends_with("/_bulk") {
        let (s, b) = forward(&inner, &method, &path_query, &parts.headers, body).await;
        return (StatusCode::from_u16(s).unwrap(), b).into_response();
    }
    inner.bulks.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut f = inner.fault.lock().unwrap();
        let now = f.clone();
        match &mut *f {
            Fault::RejectItems { requests, .. } | Fault::Whole { requests, .. } => {
                *requests -= 1;
                if *requests == 0 {
                    *f = Fault::None;
                }
            }
            Fault::None => {}
        }
        now
    };
    match fault {
        Fault::None => {
            let (s, b) = forward(&inner, &method, &path_query, &parts.headers, body).await;
            (StatusCode::from_u16(s).unwrap(), b).into_response()
        }
        Fault::Whole { status: code, .. } => {
            inner.refused_requests.fetch_add(1, Ordering::SeqCst);
            status(
                code,
                json!({"error": {"type": "es_rejected_execution_exception", "reason": "weir test proxy: refused"}, "status": code}),
            )
        }
        Fault::RejectItems { every, .. } => {
            let all = actions(&body);
            let first = inner
                .actions_seen
                .fetch_add(all.len() as u64, Ordering::SeqCst);
            // `%` rather than is_multiple_of: the workspace's rust-version is 1.85.
            #[allow(clippy::manual_is_multiple_of)]
            let rejected: Vec<bool> = (0..all.len())
                .map(|i| (first + i as u64) % every as u64 == 0)
                .collect();
            let kept: Vec<u8> = all
                .iter()
                .zip(&rejected)
                .filter(|(_, r)| !**r)
                .flat_map(|(a, _)| a.clone())
                .collect();
            let mut upstream_items = Vec::new();
            if !kept.is_empty() {
                let (s, b) = forward(
                    &inner,
                    &method,
                    &path_query,
                    &parts.headers,
                    Bytes::from(kept),
                )
                .await;
                if s != 200 {
                    return (StatusCode::from_u16(s).unwrap(), b).into_response();
                }
                let v: Value = serde_json::from_slice(&b).unwrap();
                upstream_items = v["items"].as_array().cloned().unwrap_or_default();
            }
            let mut up = upstream_items.into_iter();
            let mut items = Vec::new();
            for (a, r) in all.iter().zip(&rejected) {
                if *r {
                    let kind = if a.starts_with(b"{\"create\"") {
                        "create"
                    } else {
                        "index"
                    };
                    items.push(json!({kind: {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "weir test proxy: rejected execution (write queue full)"}}}));
                    inner.rejected_items.fetch_add(1, Ordering::SeqCst);
                } else {
                    items.push(up.next().expect("an upstream item per forwarded action"));
                }
            }
            status(200, json!({"errors": true, "items": items}))
        }
    }
}
