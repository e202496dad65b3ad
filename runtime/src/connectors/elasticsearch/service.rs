//! The HTTP side: a reqwest client over the node URLs (round-robin, an unreachable node left out
//! for a while), authentication and TLS, and [`execute`], which sends one `_bulk` request until
//! every action in it is acknowledged or rejected, retrying only what the answer marks
//! retryable (`retry.rs`) with the sink's [`RetryPolicy`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use super::concurrency::{Aimd, Change};
use super::config::{Action, Auth, Settings};
use super::metrics::SinkMetrics;
use super::request_builder::{describe, subset, Span};
use super::retry::{
    classify_item, classify_status, error_summary, is_transient, parse_items, Cause, ItemOutcome,
    Whole, FILTER_PATH,
};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// How long a node that refused a connection is left out of the rotation.
const DOWN_FOR: Duration = Duration::from_secs(5);

/// An answer with its status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub struct ElasticsearchService {
    client: reqwest::Client,
    /// Root URL of each node (ends with `/`).
    roots: Vec<url::Url>,
    /// `_bulk` URL of each node, with the query.
    bulk: Vec<url::Url>,
    auth: Option<HeaderValue>,
    next: AtomicUsize,
    down_until: Mutex<Vec<Option<Instant>>>,
}

/// The first node, from `start` on in rotation, that is not left out at `now`; when all are,
/// the one that comes back first. Pure.
pub fn pick_host(start: usize, now: Instant, down_until: &[Option<Instant>]) -> usize {
    let n = down_until.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|i| down_until[*i].is_none_or(|t| t <= now))
        .unwrap_or_else(|| {
            (0..n)
                .min_by_key(|i| down_until[*i])
                .expect("at least one host")
        })
}

/// `error sending request … : connection refused`: reqwest's message with its causes.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

fn with_slash(u: &url::Url) -> url::Url {
    let mut u = u.clone();
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

impl ElasticsearchService {
    /// Builds the client (reads `tls.ca_file`); connects nothing yet.
    pub fn new(s: &Settings) -> std::result::Result<ElasticsearchService, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .pool_max_idle_per_host(s.max_in_flight.max(2))
            .tcp_nodelay(true);
        let pem = match (&s.tls.ca_file, &s.tls.ca_pem) {
            (Some(path), _) => Some(
                std::fs::read(path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?,
            ),
            (None, Some(text)) => Some(text.as_bytes().to_vec()),
            (None, None) => None,
        };
        if let Some(pem) = pem {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("tls: the CA is not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err("tls: the CA holds no certificate".into());
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if s.tls.insecure_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        let roots: Vec<url::Url> = s.hosts.iter().map(with_slash).collect();
        let bulk = roots
            .iter()
            .map(|r| {
                let mut u = r.join("_bulk").expect("a relative path joins");
                {
                    let mut q = u.query_pairs_mut();
                    q.append_pair("filter_path", FILTER_PATH);
                    if let Some(p) = &s.pipeline {
                        q.append_pair("pipeline", p);
                    }
                }
                u
            })
            .collect();
        let auth = match &s.auth {
            Auth::None => None,
            Auth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Auth::ApiKey(k) => Some(format!("ApiKey {k}")),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        }
        .map(|v| {
            HeaderValue::from_str(&v)
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
                .map_err(|_| {
                    "auth: the credentials contain characters a header cannot carry".to_string()
                })
        })
        .transpose()?;
        Ok(ElasticsearchService {
            client,
            down_until: Mutex::new(vec![None; roots.len()]),
            roots,
            bulk,
            auth,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> usize {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        pick_host(start, Instant::now(), &down)
    }

    fn mark(&self, i: usize, reachable: bool) {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down[i] = (!reachable).then(|| Instant::now() + DOWN_FOR);
    }

    /// The node URL a request went to, for messages.
    pub fn host(&self, i: usize) -> &url::Url {
        &self.roots[i]
    }

    async fn send(
        &self,
        i: usize,
        req: reqwest::RequestBuilder,
    ) -> std::result::Result<Answer, reqwest::Error> {
        let req = match &self.auth {
            Some(a) => req.header(AUTHORIZATION, a.clone()),
            None => req,
        };
        let result: std::result::Result<Answer, reqwest::Error> = async {
            let r = req.send().await?;
            let status = r.status().as_u16();
            let body = r.bytes().await?;
            Ok(Answer { status, body })
        }
        .await;
        self.mark(i, !result.as_ref().is_err_and(|e| e.is_connect()));
        result
    }

    /// One `_bulk` attempt on the next node; the error names the node.
    pub async fn bulk(&self, body: Bytes) -> std::result::Result<Answer, (usize, reqwest::Error)> {
        let i = self.pick();
        let req = self
            .client
            .post(self.bulk[i].clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        self.send(i, req).await.map_err(|e| (i, e))
    }

    /// `HEAD /<index>` on the next node: 200 when the index (or alias, or data stream) exists.
    pub async fn index(&self, name: &str) -> std::result::Result<Answer, (usize, reqwest::Error)> {
        let i = self.pick();
        // Roots end in `/`; an index name has no `/`, `?` or `#` (invalid_index_name).
        let url = self.roots[i]
            .join(name)
            .unwrap_or_else(|_| self.roots[i].clone());
        let req = self.client.head(url);
        self.send(i, req).await.map_err(|e| (i, e))
    }

    /// `GET /` on the next node (cluster name and version).
    pub async fn info(&self) -> std::result::Result<Answer, (usize, reqwest::Error)> {
        let i = self.pick();
        let req = self.client.get(self.roots[i].clone());
        self.send(i, req).await.map_err(|e| (i, e))
    }
}

/// What a sink's request tasks share.
pub struct Shared {
    pub service: ElasticsearchService,
    pub limiter: Mutex<Aimd>,
    pub retry: RetryPolicy,
    pub metrics: SinkMetrics,
    pub node: String,
}

impl Shared {
    fn limiter(&self) -> std::sync::MutexGuard<'_, Aimd> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        self.limiter().limit()
    }

    fn report(&self, change: Change, why: &str) {
        match change {
            Change::None => {}
            Change::Lowered(n) => {
                self.metrics.limit.set(n as i64);
                tracing::info!(node = %self.node, limit = n, "concurrency limit lowered after {why}");
            }
            Change::Restored(n) => {
                self.metrics.limit.set(n as i64);
                tracing::info!(node = %self.node, limit = n, "concurrency limit back at max_in_flight");
            }
        }
    }
}

/// Actions to send, and how their answers are read.
pub struct BulkRequest {
    pub body: Bytes,
    pub spans: Vec<Span>,
    pub action: Action,
    pub versioned: bool,
}

/// An action the server rejected (poison): for `on_error`.
#[derive(Debug)]
pub struct Rejected {
    pub index: Option<String>,
    pub id: Option<String>,
    pub status: u16,
    pub reason: String,
    /// The source line as sent (without its newline); empty for `delete`.
    pub document: Bytes,
}

#[derive(Debug, Default)]
pub struct BulkReport {
    pub acked: usize,
    pub rejected: Vec<Rejected>,
}

fn document_of(body: &Bytes, s: &Span) -> Bytes {
    let end = if s.end > s.source && body[s.end - 1] == b'\n' {
        s.end - 1
    } else {
        s.end
    };
    body.slice(s.source..end)
}

/// Sends `req` until every action is acknowledged or rejected. Fails (the job then restarts
/// from its last checkpoint, so nothing is lost) when the retry policy is spent, on an answer
/// retrying cannot fix (401, 413, …), and on an item the server refuses for reasons that are not
/// the document's (403).
pub async fn execute(shared: &Shared, req: BulkRequest) -> Result<BulkReport> {
    shared.metrics.in_flight.inc();
    let r = execute_inner(shared, req).await;
    shared.metrics.in_flight.dec();
    r
}

async fn execute_inner(shared: &Shared, req: BulkRequest) -> Result<BulkReport> {
    let BulkRequest {
        mut body,
        mut spans,
        action,
        versioned,
    } = req;
    let m = &shared.metrics;
    let node = &shared.node;
    let mut report = BulkReport::default();
    let mut delays = shared.retry.backoff();
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let epoch = shared.limiter().epoch();
        m.sent.inc_by(spans.len() as u64);
        m.size.observe(body.len() as f64);
        let t = Instant::now();
        let answer = shared.service.bulk(body.clone()).await;
        m.duration.observe(t.elapsed().as_secs_f64());

        let mut retry: Vec<Span> = Vec::new();
        let mut cause: Option<Cause> = None;
        let last_error: String;
        match answer {
            Err((i, e)) if is_transient(&e) => {
                retry = spans.clone();
                cause = Some(Cause::Transport);
                last_error = format!("{}: {}", shared.service.host(i), error_chain(&e));
            }
            Err((i, e)) => {
                return Err(Error::node(
                    node,
                    format!("{}: {}", shared.service.host(i), error_chain(&e)),
                ))
            }
            Ok(a) => match classify_status(a.status, &a.body) {
                Whole::Fatal(msg) => return Err(Error::node(node, msg)),
                Whole::Retry(c) => {
                    retry = spans.clone();
                    cause = Some(c);
                    last_error = format!("HTTP {}: {}", a.status, error_summary(&a.body));
                }
                Whole::Items => {
                    let items =
                        parse_items(&a.body, spans.len()).map_err(|e| Error::node(node, e))?;
                    let Some(items) = items else {
                        report.acked += spans.len();
                        m.acked.inc_by(spans.len() as u64);
                        let change = shared.limiter().on_success();
                        shared.report(change, "");
                        return Ok(report);
                    };
                    let mut why = String::new();
                    let mut acked = 0;
                    for (s, item) in spans.iter().zip(items) {
                        match classify_item(action, versioned, &item) {
                            ItemOutcome::Done => acked += 1,
                            ItemOutcome::Retry(c) => {
                                retry.push(*s);
                                // An overload anywhere in the answer is what the limiter hears.
                                if cause != Some(Cause::Overload) {
                                    cause = Some(c);
                                }
                                if why.is_empty() {
                                    why = reason(&item);
                                }
                            }
                            ItemOutcome::Reject | ItemOutcome::Fatal => {
                                let (index, id) = describe(&body[s.start..s.source]);
                                let r = Rejected {
                                    index,
                                    id,
                                    status: item.status,
                                    reason: reason(&item),
                                    document: document_of(&body, s),
                                };
                                m.failed(Some(item.status));
                                if classify_item(action, versioned, &item) == ItemOutcome::Fatal {
                                    return Err(Error::node(
                                        node,
                                        format!(
                                            "document {} in index {}: HTTP {}: {} (not about the document, so the job fails whatever on_error says)",
                                            quoted(&r.id),
                                            quoted(&r.index),
                                            r.status,
                                            r.reason
                                        ),
                                    ));
                                }
                                report.rejected.push(r);
                            }
                        }
                    }
                    report.acked += acked;
                    m.acked.inc_by(acked as u64);
                    last_error = why;
                }
            },
        }

        let Some(cause) = cause else {
            let change = shared.limiter().on_success();
            shared.report(change, "");
            return Ok(report);
        };
        if cause == Cause::Overload {
            let change = shared.limiter().on_overload(epoch);
            shared.report(change, "a 429 from the server");
        }
        m.retried(cause.label(), retry.len() as u64);
        let Some(delay) = delays.next() else {
            return Err(Error::node(
                node,
                format!(
                    "{} of the actions still failing after {attempts} attempts over {:.1}s ({}); the job fails and restarts from its last checkpoint (retry.max_attempts / retry.max_elapsed allow longer)",
                    retry.len(),
                    started.elapsed().as_secs_f64(),
                    last_error
                ),
            ));
        };
        if retry.len() == spans.len() {
            // Attempts 1, 2, 4, 8, …: an outage is visible without a line per retry.
            if attempts.is_power_of_two() {
                tracing::warn!(node = %node, attempt = attempts, actions = retry.len(), wait_ms = delay.as_millis() as u64,
                    error = %last_error, "bulk request failed, retrying");
            }
        } else {
            tracing::debug!(node = %node, attempt = attempts, retried = retry.len(), of = spans.len(), wait_ms = delay.as_millis() as u64,
                error = %last_error, "bulk items failed, retrying them");
            let (b, s) = subset(&body, &retry);
            body = b;
            spans = s;
        }
        tokio::time::sleep(delay).await;
    }
}

fn reason(item: &super::retry::ItemResult) -> String {
    match &item.error {
        Some(e) => e.describe(),
        None => format!("HTTP {}", item.status),
    }
}

fn quoted(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("{s:?}"),
        None => "(no id)".into(),
    }
}

/// The server's `GET /` answer in a few words (`opensearch 2.19.1`), or why it failed; retried
/// under the sink's policy while the server cannot be reached.
pub async fn check_server(shared: &Arc<Shared>) -> Result<String> {
    let mut delays = shared.retry.backoff();
    loop {
        let err = match shared.service.info().await {
            Ok(a) if (200..300).contains(&a.status) => {
                let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                let dist = v["version"]["distribution"]
                    .as_str()
                    .unwrap_or("elasticsearch");
                let number = v["version"]["number"].as_str().unwrap_or("?");
                return Ok(format!("{dist} {number}"));
            }
            Ok(a) => match classify_status(a.status, &a.body) {
                Whole::Retry(_) => format!("HTTP {}: {}", a.status, error_summary(&a.body)),
                Whole::Fatal(m) => return Err(Error::node(&shared.node, m)),
                Whole::Items => unreachable!("2xx handled above"),
            },
            Err((i, e)) if is_transient(&e) => {
                format!("{}: {}", shared.service.host(i), error_chain(&e))
            }
            Err((i, e)) => {
                return Err(Error::node(
                    &shared.node,
                    format!("{}: {}", shared.service.host(i), error_chain(&e)),
                ))
            }
        };
        match delays.next() {
            Some(d) => {
                tracing::warn!(node = %shared.node, error = %err, wait_ms = d.as_millis() as u64, "cannot reach the cluster yet, retrying");
                tokio::time::sleep(d).await;
            }
            None => {
                return Err(Error::node(
                    &shared.node,
                    format!("cannot reach the cluster: {err}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_rotate_and_skip_the_unreachable() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let sooner = now + Duration::from_secs(1);
        assert_eq!(pick_host(0, now, &[None, None, None]), 0);
        assert_eq!(pick_host(4, now, &[None, None, None]), 1);
        assert_eq!(pick_host(0, now, &[Some(later), None, None]), 1);
        assert_eq!(pick_host(2, now, &[None, Some(later), Some(later)]), 0);
        // Past its time, a node is tried again.
        assert_eq!(pick_host(0, later, &[Some(later), None]), 0);
        // All out: the one back first.
        assert_eq!(pick_host(0, now, &[Some(later), Some(sooner)]), 1);
    }

    use std::collections::VecDeque;

    fn settings(yaml: &str) -> Settings {
        super::super::config::parse_yaml(yaml).unwrap()
    }

    /// A `_bulk` endpoint that answers from a script and keeps the bodies it got.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<(u16, String)>>,
        bodies: Mutex<Vec<String>>,
    }

    async fn serve(answers: &[(u16, &str)]) -> (String, Arc<Script>) {
        let script = Arc::new(Script {
            answers: Mutex::new(answers.iter().map(|(s, b)| (*s, b.to_string())).collect()),
            ..Default::default()
        });
        let app =
            axum::Router::new()
                .route(
                    "/_bulk",
                    axum::routing::post(
                        |axum::extract::State(s): axum::extract::State<Arc<Script>>,
                         body: String| async move {
                            s.bodies.lock().unwrap().push(body);
                            let (status, text) = s
                                .answers
                                .lock()
                                .unwrap()
                                .pop_front()
                                .expect("a scripted answer");
                            (axum::http::StatusCode::from_u16(status).unwrap(), text)
                        },
                    ),
                )
                .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), script)
    }

    fn shared(url: &str, extra: &str) -> Shared {
        let s = settings(&format!(
            "url: {url}\nindex: e\nid_field: id\nretry: {{backoff: 1ms, max_backoff: 2ms, max_attempts: 3}}\n{extra}"
        ));
        Shared {
            service: ElasticsearchService::new(&s).unwrap(),
            limiter: Mutex::new(Aimd::new(s.max_in_flight)),
            retry: s.retry,
            metrics: SinkMetrics::detached(),
            node: "es".into(),
        }
    }

    fn three_docs() -> BulkRequest {
        let mut body = Vec::new();
        let mut spans = Vec::new();
        for i in 0..3 {
            let start = body.len();
            body.extend_from_slice(
                format!("{{\"index\":{{\"_index\":\"e\",\"_id\":\"{i}\"}}}}\n").as_bytes(),
            );
            let source = body.len();
            body.extend_from_slice(format!("{{\"id\":{i}}}\n").as_bytes());
            spans.push(Span {
                start,
                source,
                end: body.len(),
            });
        }
        BulkRequest {
            body: Bytes::from(body),
            spans,
            action: Action::Index,
            versioned: false,
        }
    }

    const MIXED: &str = r#"{"errors":true,"items":[{"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},{"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [id]"}}},{"index":{"status":201}}]}"#;

    #[tokio::test]
    async fn only_the_retryable_items_are_sent_again_and_poison_is_reported() {
        let (url, script) = serve(&[
            (200, MIXED),
            (
                200,
                r#"{"errors":false,"items":[{"index":{"status":201}}]}"#,
            ),
        ])
        .await;
        let sh = shared(&url, "");
        let report = execute(&sh, three_docs()).await.unwrap();
        assert_eq!(report.acked, 2);
        assert_eq!(report.rejected.len(), 1);
        let r = &report.rejected[0];
        assert_eq!(
            (r.index.as_deref(), r.id.as_deref(), r.status),
            (Some("e"), Some("1"), 400)
        );
        assert_eq!(&r.document[..], b"{\"id\":1}");
        assert!(
            r.reason.contains("mapper_parsing_exception"),
            "{}",
            r.reason
        );
        let bodies = script.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2);
        assert_eq!(
            bodies[1],
            "{\"index\":{\"_index\":\"e\",\"_id\":\"0\"}}\n{\"id\":0}\n"
        );
        assert_eq!(sh.limit(), 2, "the 429 halved the limit of 4");
    }

    #[tokio::test]
    async fn whole_request_failures_retry_the_whole_request_within_the_policy() {
        let ok = r#"{"errors":false,"items":[{"index":{"status":201}},{"index":{"status":201}},{"index":{"status":201}}]}"#;
        let (url, script) = serve(&[(503, "busy"), (429, ""), (200, ok)]).await;
        let report = execute(&shared(&url, ""), three_docs()).await.unwrap();
        assert_eq!(report.acked, 3);
        let bodies = script.bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|b| *b == bodies[0]));

        let (url, _) = serve(&[(429, ""), (429, ""), (429, "")]).await;
        let e = execute(&shared(&url, ""), three_docs())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3 of the actions still failing after 3 attempts") && e.contains("HTTP 429"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn answers_no_retry_can_fix_fail_at_once() {
        let (url, script) = serve(&[(
            401,
            r#"{"error":{"type":"security_exception","reason":"bad password"}}"#,
        )])
        .await;
        let e = execute(&shared(&url, ""), three_docs())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("check auth") && e.contains("bad password"),
            "{e}"
        );
        assert_eq!(script.bodies.lock().unwrap().len(), 1);
        let blocked = r#"{"errors":true,"items":[{"index":{"status":201}},{"index":{"status":403,"error":{"type":"cluster_block_exception","reason":"index [e] blocked by: [FORBIDDEN/8/index write (api)]"}}},{"index":{"status":201}}]}"#;
        let (url, _) = serve(&[(200, blocked)]).await;
        let e = execute(&shared(&url, "on_error: skip"), three_docs())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("document \"1\" in index \"e\": HTTP 403")
                && e.contains("whatever on_error says"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_node_is_retried_then_reported_by_name() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = execute(
            &shared(&format!("http://127.0.0.1:{port}"), ""),
            three_docs(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}")) && e.contains("after 3 attempts"),
            "{e}"
        );
    }

    #[test]
    fn the_query_asks_only_for_what_is_classified() {
        let s = settings("url: http://a:9200/es\nindex: e\npipeline: my pipe\nauth: {bearer: tok}");
        let svc = ElasticsearchService::new(&s).unwrap();
        assert_eq!(
            svc.bulk[0].as_str(),
            "http://a:9200/es/_bulk?filter_path=errors%2Citems.*.status%2Citems.*.error&pipeline=my+pipe"
        );
        assert_eq!(svc.roots[0].as_str(), "http://a:9200/es/");
        assert!(svc.auth.as_ref().unwrap().is_sensitive());
    }
}
