//! A fault proxy in front of kinesis-mock or moto, which enforce no limits: it throttles a share
//! of GetRecords calls, or every GetRecords call of one shard for a while, fails a share of
//! PutRecords / PutRecordBatch entries the way a busy service does (the failed entries are not
//! forwarded, so they are really not written), and cuts or stalls SubscribeToShard streams.
//! Every fault is counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, Error>;

/// What to break, changeable while the proxy runs; and what was broken.
#[derive(Default)]
pub struct Faults {
    /// Per mille of GetRecords calls answered ProvisionedThroughputExceededException.
    pub throttle_get_records: AtomicU32,
    /// Per mille of PutRecords / PutRecordBatch entries failed.
    pub fail_entries: AtomicU32,
    /// SubscribeToShard streams are cut this many ms after they start (0: never).
    pub cut_subscriptions_after_ms: AtomicU64,
    /// SubscribeToShard streams stop forwarding (the connection stays open) once cut.
    pub stall_instead_of_cut: AtomicBool,
    pub throttled: AtomicU64,
    pub failed_entries: AtomicU64,
    pub cut: AtomicU64,
    /// One shard whose GetRecords calls are all throttled until the instant (see
    /// [`Faults::throttle_shard`]).
    shard_throttle: Mutex<Option<(String, Instant)>>,
    /// Which shard each iterator handed out belongs to. Iterators are opaque, so the proxy
    /// learns it from GetShardIterator (request ShardId → answer ShardIterator) and from each
    /// GetRecords answer's NextShardIterator (same shard as the iterator it was asked with).
    iterator_shards: Mutex<HashMap<String, String>>,
    /// GetRecords calls throttled per shard (by the share or by `throttle_shard`), of the calls
    /// whose shard the proxy knew.
    throttled_shards: Mutex<HashMap<String, u64>>,
}

impl Faults {
    /// Throttles every GetRecords call of shard `shard` (`shardId-000000000001`) for `window`.
    pub fn throttle_shard(&self, shard: &str, window: Duration) {
        *self.shard_throttle.lock().unwrap() = Some((shard.to_string(), Instant::now() + window));
    }

    /// GetRecords calls of `shard` throttled so far.
    pub fn throttled_in(&self, shard: &str) -> u64 {
        self.throttled_shards
            .lock()
            .unwrap()
            .get(shard)
            .copied()
            .unwrap_or(0)
    }

    /// The shard `iterator` belongs to, when the proxy saw it handed out.
    fn shard_of(&self, iterator: &str) -> Option<String> {
        self.iterator_shards.lock().unwrap().get(iterator).cloned()
    }

    /// Whether a GetRecords call of `shard` is to be throttled now.
    fn throttles(&self, shard: Option<&str>) -> bool {
        if chance(self.throttle_get_records.load(Ordering::Relaxed)) {
            return true;
        }
        let window = self.shard_throttle.lock().unwrap();
        matches!((&*window, shard), (Some((s, until)), Some(shard)) if s == shard && Instant::now() < *until)
    }

    fn count_throttle(&self, shard: Option<String>) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        if let Some(shard) = shard {
            *self
                .throttled_shards
                .lock()
                .unwrap()
                .entry(shard)
                .or_insert(0) += 1;
        }
    }

    /// Learns the shard of the iterator in a GetShardIterator or GetRecords answer.
    fn learn_iterator(&self, op: &str, request: &Value, answer: &Bytes) {
        let shard = match op {
            "GetShardIterator" => request
                .get("ShardId")
                .and_then(Value::as_str)
                .map(String::from),
            "GetRecords" => request
                .get("ShardIterator")
                .and_then(Value::as_str)
                .and_then(|it| self.shard_of(it)),
            _ => None,
        };
        let Some(shard) = shard else { return };
        let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
            return;
        };
        let field = if op == "GetRecords" {
            "NextShardIterator"
        } else {
            "ShardIterator"
        };
        let mut known = self.iterator_shards.lock().unwrap();
        if let Some(used) = request.get("ShardIterator").and_then(Value::as_str) {
            known.remove(used); // one call per iterator: keep the map small
        }
        if let Some(next) = answer.get(field).and_then(Value::as_str) {
            known.insert(next.to_string(), shard);
        }
    }
}

pub struct Proxy {
    pub url: String,
    pub faults: Arc<Faults>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> Proxy {
        let faults = Arc::new(Faults::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let upstream = upstream.trim_end_matches('/').to_string();
        let f = faults.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let client: Client<_, Full<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                loop {
                    let Ok((io, _)) = listener.accept().await else {
                        continue;
                    };
                    let (client, upstream, f) = (client.clone(), upstream.clone(), f.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            handle(req, client.clone(), upstream.clone(), f.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(io), svc)
                            .await;
                    });
                }
            });
        });
        let addr: SocketAddr = rx.recv().unwrap();
        Proxy {
            url: format!("http://{addr}"),
            faults,
        }
    }
}

fn chance(per_mille: u32) -> bool {
    per_mille > 0 && fastrand::u32(0..1000) < per_mille
}

fn json_response(status: u16, v: &Value) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "proxy")
        .body(
            Full::new(Bytes::from(v.to_string()))
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    upstream: String,
    faults: Arc<Faults>,
) -> Result<Response<ProxyBody>, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let op = target.rsplit('.').next().unwrap_or_default().to_string();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // Only the calls whose iterators the proxy follows are parsed.
    let request: Value = match op.as_str() {
        "GetShardIterator" | "GetRecords" => serde_json::from_slice(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let shard = request
        .get("ShardIterator")
        .and_then(Value::as_str)
        .and_then(|it| faults.shard_of(it));
    if op == "GetRecords" && faults.throttles(shard.as_deref()) {
        faults.count_throttle(shard);
        return Ok(json_response(
            400,
            &json!({"__type": "ProvisionedThroughputExceededException",
                    "message": "Rate exceeded for shard (injected by the test proxy)"}),
        ));
    }
    let fail = faults.fail_entries.load(Ordering::Relaxed);
    let (body, failed) = match op.as_str() {
        "PutRecords" | "PutRecordBatch" if fail > 0 => drop_entries(&body, fail),
        _ => (body, Vec::new()),
    };
    faults
        .failed_entries
        .fetch_add(failed.len() as u64, Ordering::Relaxed);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut up = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            up = up.header(k, v);
        }
    }
    let up = up.body(Full::new(body)).unwrap();
    let resp = match client.request(up).await {
        Ok(r) => r,
        Err(e) => return Ok(json_response(502, &json!({"message": e.to_string()}))),
    };
    let (rparts, rbody) = resp.into_parts();
    if op == "SubscribeToShard" {
        let cut = faults.cut_subscriptions_after_ms.load(Ordering::Relaxed);
        let body = Cut {
            inner: rbody,
            deadline: (cut > 0).then(|| Instant::now() + Duration::from_millis(cut)),
            stall: faults.stall_instead_of_cut.load(Ordering::Relaxed),
            stalled: false,
            faults: faults.clone(),
            sleep: None,
        };
        return Ok(Response::from_parts(rparts, body.boxed()));
    }
    let rbytes = rbody
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if rparts.status.is_success() {
        faults.learn_iterator(&op, &request, &rbytes);
    }
    let rbytes = if failed.is_empty() {
        rbytes
    } else {
        merge_results(&op, &rbytes, &failed)
    };
    let mut r = Response::from_parts(
        rparts,
        Full::new(rbytes)
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    r.headers_mut().remove("content-length");
    Ok(r)
}

/// Removes a share of the request's entries (never all of them, so the request stays valid);
/// returns the new body and the removed indexes.
fn drop_entries(body: &Bytes, per_mille: u32) -> (Bytes, Vec<usize>) {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return (body.clone(), Vec::new());
    };
    let Some(records) = v.get_mut("Records").and_then(Value::as_array_mut) else {
        return (body.clone(), Vec::new());
    };
    let all = std::mem::take(records);
    let mut failed: Vec<usize> = (0..all.len()).filter(|_| chance(per_mille)).collect();
    if failed.len() == all.len() {
        failed.remove(0);
    }
    *records = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, r)| r)
        .collect();
    (Bytes::from(v.to_string()), failed)
}

/// Puts failures back at the removed indexes of the service's answer.
fn merge_results(op: &str, body: &Bytes, failed: &[usize]) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    let (list, count, code) = if op == "PutRecords" {
        (
            "Records",
            "FailedRecordCount",
            "ProvisionedThroughputExceededException",
        )
    } else {
        (
            "RequestResponses",
            "FailedPutCount",
            "ServiceUnavailableException",
        )
    };
    let Some(results) = v.get_mut(list).and_then(Value::as_array_mut) else {
        return body.clone();
    };
    let mut upstream = results.drain(..);
    let total = failed.len() + upstream.len();
    let mut merged = Vec::with_capacity(total);
    for i in 0..total {
        if failed.contains(&i) {
            merged.push(json!({"ErrorCode": code, "ErrorMessage": "injected by the test proxy"}));
        } else if let Some(r) = upstream.next() {
            merged.push(r);
        }
    }
    drop(upstream);
    let failures = merged
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    *results = merged;
    v[count] = json!(failures);
    Bytes::from(v.to_string())
}

/// A SubscribeToShard body that ends with an error, or stops forwarding, at a deadline.
struct Cut {
    inner: Incoming,
    deadline: Option<Instant>,
    stall: bool,
    stalled: bool,
    faults: Arc<Faults>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for Cut {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            if sleep.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                this.sleep = None;
                this.faults.cut.fetch_add(1, Ordering::Relaxed);
                if this.stall {
                    this.stalled = true;
                } else {
                    return Poll::Ready(Some(Err("subscription cut by the test proxy".into())));
                }
            }
        }
        if this.stalled {
            // Nothing more is forwarded; the client's watchdog has to notice.
            return Poll::Pending;
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as Error)
    }
}
