//! A small in-process Kubernetes API server behind a kube `Client` (a `tower_test` mock
//! service): it stores what is applied, answers gets and lists, and records every request, so
//! a reconcile's writes can be asserted. Plus a fake worker admin API (axum on loopback).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Objects by API path (`/api/v1/namespaces/ns/secrets/x`).
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
}

impl FakeApi {
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = this.answer(req).await;
                send.send_response(resp);
            }
        });
        Client::new(service, "default")
    }

    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.requests.lock().unwrap().push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            body: body.clone(),
        });
        let mut objects = self.objects.lock().unwrap();
        let (status, out) = match method.as_str() {
            "GET" => match objects.get(&path) {
                Some(v) => (StatusCode::OK, v.clone()),
                None if path.ends_with("/connectors") || path.ends_with("/pods") => {
                    let items: Vec<Value> = objects
                        .iter()
                        .filter(|(k, _)| k.starts_with(&format!("{path}/")))
                        .map(|(_, v)| v.clone())
                        .collect();
                    let (api_version, kind) = if path.ends_with("/pods") {
                        ("v1", "PodList")
                    } else {
                        ("weir.dev/v1alpha1", "ConnectorList")
                    };
                    (
                        StatusCode::OK,
                        json!({"apiVersion": api_version, "kind": kind,
                               "metadata": {}, "items": items}),
                    )
                }
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "not found", "reason": "NotFound", "code": 404}),
                ),
            },
            "PATCH" if body.is_array() => {
                // JSON patch (the finalizer helper): apply add/remove on metadata.finalizers.
                let key = path.clone();
                let mut obj = objects.get(&key).cloned().unwrap_or(json!({}));
                for op in body.as_array().unwrap() {
                    if op["path"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("/metadata/finalizers")
                    {
                        match op["op"].as_str() {
                            Some("add") => {
                                let v = &op["value"];
                                if v.is_array() {
                                    obj["metadata"]["finalizers"] = v.clone();
                                } else {
                                    let mut list = obj["metadata"]["finalizers"]
                                        .as_array()
                                        .cloned()
                                        .unwrap_or_default();
                                    list.push(v.clone());
                                    obj["metadata"]["finalizers"] = Value::Array(list);
                                }
                            }
                            Some("remove") => {
                                obj["metadata"]["finalizers"] = json!([]);
                            }
                            _ => {}
                        }
                    }
                }
                objects.insert(key, obj.clone());
                (StatusCode::OK, obj)
            }
            "PATCH" => {
                let key = path.trim_end_matches("/status").to_string();
                let mut obj = objects.get(&key).cloned().unwrap_or(json!({}));
                if path.ends_with("/status") {
                    obj["status"] = body["status"].clone();
                } else {
                    let meta = obj.get("metadata").cloned();
                    obj = merge(obj, body.clone());
                    if let (Some(m), Some(o)) = (meta, obj.as_object_mut()) {
                        o.entry("metadata").or_insert(m);
                    }
                }
                if obj.get("apiVersion").is_none() {
                    obj["apiVersion"] = body["apiVersion"].clone();
                    obj["kind"] = body["kind"].clone();
                }
                if obj["metadata"].get("name").is_none() {
                    obj["metadata"]["name"] =
                        Value::String(key.rsplit('/').next().unwrap_or("").to_string());
                }
                objects.insert(key, obj.clone());
                (StatusCode::OK, obj)
            }
            "POST" => (StatusCode::CREATED, body.clone()),
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&out).unwrap()))
            .unwrap()
    }
}

fn merge(base: Value, top: Value) -> Value {
    match (base, top) {
        (Value::Object(mut b), Value::Object(t)) => {
            for (k, v) in t {
                let merged = match b.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Object(b)
        }
        (_, t) => t,
    }
}

/// A fake worker admin API for `workers` workers under `/w<i>/…`: every worker runs, and a
/// savepoint completes on the second poll with its part at `<storage>/<job>/savepoints/<id>`.
#[derive(Clone, Default)]
pub struct FakeWorkers {
    pub triggers: Arc<Mutex<Vec<(u32, Value)>>>,
    /// The `Authorization` header of each trigger.
    pub auths: Arc<Mutex<Vec<String>>>,
    pub polls: Arc<Mutex<BTreeMap<(u32, String), u32>>>,
    pub state: Arc<Mutex<String>>,
}

impl FakeWorkers {
    pub async fn serve(&self, savepoint_root: String) -> String {
        use axum::extract::{Path, State};
        use axum::routing::{get, post};
        use axum::Json;
        *self.state.lock().unwrap() = "running".into();
        type S = (FakeWorkers, String);
        async fn status(State((f, _)): State<S>, Path(w): Path<String>) -> Json<Value> {
            let w: u32 = w.trim_start_matches('w').parse().unwrap_or(0);
            let state = f.state.lock().unwrap().clone();
            Json(
                json!({"job": "orders", "parallelism": 2, "state": state, "workers": [
                {"worker": w, "state": state, "last_checkpoint":
                    {"id": 7, "completed_at": "2026-01-01T11:59:58Z", "duration_ms": 5, "bytes": 10, "savepoint": false},
                 "last_error": null}]}),
            )
        }
        async fn trigger(
            State((f, _)): State<S>,
            Path(w): Path<String>,
            headers: axum::http::HeaderMap,
            Json(body): Json<Value>,
        ) -> (axum::http::StatusCode, Json<Value>) {
            let w: u32 = w.trim_start_matches('w').parse().unwrap_or(0);
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            f.auths
                .lock()
                .unwrap()
                .push(auth.unwrap_or_default().to_string());
            let id = body["id"].clone();
            f.triggers.lock().unwrap().push((w, body));
            (axum::http::StatusCode::ACCEPTED, Json(json!({ "id": id })))
        }
        async fn poll(
            State((f, root)): State<S>,
            Path((w, id)): Path<(String, String)>,
        ) -> Json<Value> {
            let w: u32 = w.trim_start_matches('w').parse().unwrap_or(0);
            let n = {
                let mut polls = f.polls.lock().unwrap();
                let n = polls.entry((w, id.clone())).or_insert(0);
                *n += 1;
                *n
            };
            if n < 2 {
                Json(json!({"id": id, "state": "pending", "path": null, "error": null}))
            } else {
                let dir = format!("{root}/savepoints/{id}");
                std::fs::create_dir_all(format!("{dir}/worker-{w}")).unwrap();
                Json(json!({"id": id, "state": "completed", "path": dir, "error": null}))
            }
        }
        let app = axum::Router::new()
            .route("/{w}/v1/status", get(status))
            .route("/{w}/v1/savepoints", post(trigger))
            .route("/{w}/v1/savepoints/{id}", get(poll))
            .with_state((self.clone(), savepoint_root));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}
