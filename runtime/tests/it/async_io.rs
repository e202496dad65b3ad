//! `async_lookup` against real servers: an in-process HTTP server with injected latency,
//! timeouts and 500s; Postgres and Redis from e2e/services. Output is counted record by record.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::harness::*;

// ---------------------------------------------------------------------------------------------
// The lookup server: what it answers for each id is a pure function of the id and the attempt.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Latency {
    /// Every answer after this many ms.
    Fixed(u64),
    /// Most answers fast, every tenth slow: lookups finish out of order.
    Skewed,
}

/// Ids whose every attempt outlasts the client's timeout.
fn times_out(id: i64) -> bool {
    id % 97 == 0
}
/// Ids whose every attempt gets HTTP 500.
fn always_500(id: i64) -> bool {
    !times_out(id) && id % 13 == 0
}
/// Ids whose first attempt gets HTTP 500 and whose retry succeeds.
fn flaky(id: i64) -> bool {
    !times_out(id) && !always_500(id) && id % 11 == 0
}

#[derive(Clone)]
struct Lookups {
    latency: Latency,
    /// Whether the timeouts and 500s above are injected.
    failures: bool,
    attempts: Arc<Mutex<HashMap<i64, u32>>>,
    requests: Arc<AtomicU64>,
}

async fn answer(s: &Lookups, id: i64) -> Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let attempt = {
        let mut a = s.attempts.lock().unwrap();
        let n = a.entry(id).or_insert(0);
        *n += 1;
        *n - 1
    };
    let delay = if s.failures && times_out(id) {
        3_000
    } else {
        match s.latency {
            Latency::Fixed(ms) => ms,
            Latency::Skewed if id % 10 == 3 => 40,
            Latency::Skewed => 1,
        }
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if s.failures && (always_500(id) || (flaky(id) && attempt == 0)) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
    }
    Json(json!({ "name": format!("user-{id}"), "plan": { "tier": id % 3 } })).into_response()
}

async fn by_path(State(s): State<Lookups>, UrlPath(id): UrlPath<i64>) -> Response {
    answer(&s, id).await
}

async fn by_body(State(s): State<Lookups>, Json(body): Json<Value>) -> Response {
    match body["id"].as_i64() {
        Some(id) => answer(&s, id).await,
        None => (StatusCode::BAD_REQUEST, "no id").into_response(),
    }
}

struct Server {
    url: String,
    state: Lookups,
}

impl Server {
    fn start(latency: Latency) -> Server {
        Self::start_with(latency, true)
    }

    fn start_with(latency: Latency, failures: bool) -> Server {
        let state = Lookups {
            latency,
            failures,
            attempts: Arc::default(),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/user/{id}", get(by_path))
            .route("/lookup", post(by_body))
            .with_state(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Its own thread and runtime: the tests themselves are synchronous. The thread ends
        // with the test process.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Server { url, state }
    }

    fn attempts(&self, id: i64) -> u32 {
        self.state
            .attempts
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelines and output.

struct Job {
    parallelism: u32,
    count: i64,
    rate: u32,
    transform: String,
}

fn spec(dir: &Path, job: &Job) -> PathBuf {
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: lookup
parallelism: {p}
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n}
    rate: {rate}
    splits: {splits}
    batch_size: 64
    fields:
      id: {{ kind: sequence }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 10ms }}
    event_time: ts
transforms:
{transform}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            p = job.parallelism,
            n = job.count,
            rate = job.rate,
            // One split on one worker keeps the source's order, so ordered output is checkable.
            splits = if job.parallelism == 1 {
                1
            } else {
                2 * job.parallelism
            },
            transform = job.transform,
            state = dir.join("state").display(),
            out = dir.join("out").display()
        ),
    )
}

/// Every output line, file by file in part order (`part-<worker>-<n>`), each file in line order.
fn output_lines(dir: &Path) -> Vec<Value> {
    let mut files = visible_files(&dir.join("out"));
    let part = |p: &PathBuf| -> (u64, u64) {
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        let mut it = name.trim_start_matches("part-").split('-');
        let w = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let n = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (w, n)
    };
    files.sort_by_key(part);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

/// The timeout is far above the server's normal latency (so a loaded machine does not turn
/// answers into timeouts) and far below the injected 3 s stall.
fn http_transform(server: &Server, extra: &str) -> String {
    format!(
        r#"  - name: enrich
    type: async_lookup
    key: id
    client: {{ type: http, url: "{url}/user/{{id}}" }}
    fields: {{ name: name, tier: plan.tier }}
    timeout: 400ms
    retry: {{ max_attempts: 2, backoff: 5ms, max_backoff: 20ms }}
{extra}"#,
        url = server.url
    )
}

/// What the policies must have made of each id: `Some(enriched?)` if emitted, `None` if
/// dropped.
fn expected(id: i64, on_timeout: &str, on_error: &str) -> Option<bool> {
    let by = |policy: &str| match policy {
        "null" => Some(false),
        "drop" => None,
        other => panic!("policy {other} is not expected in these tests"),
    };
    if times_out(id) {
        by(on_timeout)
    } else if always_500(id) {
        by(on_error)
    } else {
        Some(true)
    }
}

/// Checks every record against the policies; returns the ids in output order.
fn check_policies(lines: &[Value], n: i64, on_timeout: &str, on_error: &str) -> Vec<i64> {
    let mut seen = BTreeMap::new();
    let mut order = Vec::new();
    for v in lines {
        let id = v["id"].as_i64().expect("id");
        *seen.entry(id).or_insert(0) += 1;
        order.push(id);
        match expected(id, on_timeout, on_error) {
            None => panic!("id {id} should have been dropped: {v}"),
            Some(true) => {
                assert_eq!(v["name"], format!("user-{id}"), "{v}");
                assert_eq!(v["tier"], id % 3, "{v}");
            }
            Some(false) => {
                assert_eq!(v["name"], Value::Null, "{v}");
                assert_eq!(v["tier"], Value::Null, "{v}");
                assert!(v.get("name").is_some(), "null fields are present: {v}");
            }
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    let want: Vec<i64> = (0..n)
        .filter(|id| expected(*id, on_timeout, on_error).is_some())
        .collect();
    let got: Vec<i64> = seen.keys().copied().collect();
    assert_eq!(got.len(), want.len(), "record count");
    assert_eq!(got, want);
    order
}

// ---------------------------------------------------------------------------------------------
// The binary: policies, order, retries.

/// Runs `job` to its end in `dir`; it must succeed.
fn run_to_end(dir: &Path, job: Job) {
    let p = spec(dir, &job);
    let o = run(&p, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn ordered_lookup_applies_policies_retries_and_keeps_order() {
    let server = Server::start(Latency::Skewed);
    let dir = tempfile::tempdir().unwrap();
    let n = 1000;
    let t = http_transform(
        &server,
        "    mode: ordered\n    capacity: 50\n    on_timeout: null\n    on_error: drop\n",
    );
    run_to_end(
        dir.path(),
        Job {
            parallelism: 1,
            count: n,
            rate: 5000,
            transform: t,
        },
    );
    let order = check_policies(&output_lines(dir.path()), n, "null", "drop");
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "ordered mode changed the order"
    );
    // Retries, counted at the server: an id that always fails or times out, or fails once, is
    // asked exactly twice (max: 1 retry). A healthy id is asked once, unless a loaded machine
    // stretched an answer past the timeout: allow a handful of those.
    let mut healthy_retried = 0;
    for id in 0..n {
        if times_out(id) || always_500(id) || flaky(id) {
            assert_eq!(server.attempts(id), 2, "attempts for id {id}");
        } else {
            let a = server.attempts(id);
            assert!((1..=2).contains(&a), "attempts for id {id}: {a}");
            healthy_retried += usize::from(a == 2);
        }
    }
    assert!(
        healthy_retried <= 10,
        "{healthy_retried} healthy ids were retried"
    );
}

#[test]
fn unordered_lookup_reorders_and_applies_the_other_policies() {
    let server = Server::start(Latency::Skewed);
    let dir = tempfile::tempdir().unwrap();
    let n = 1000;
    let t = http_transform(
        &server,
        "    mode: unordered\n    capacity: 50\n    on_timeout: drop\n    on_error: null\n",
    );
    run_to_end(
        dir.path(),
        Job {
            parallelism: 1,
            count: n,
            rate: 5000,
            transform: t,
        },
    );
    let order = check_policies(&output_lines(dir.path()), n, "drop", "null");
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(
        inversions > 10,
        "skewed latency should reorder records in unordered mode ({inversions} inversions)"
    );
}

#[test]
fn post_lookups_send_the_key_as_json_and_a_cache_saves_requests() {
    let server = Server::start(Latency::Fixed(1));
    let dir = tempfile::tempdir().unwrap();
    // 600 records over 10 distinct keys, all of which the server answers at the first attempt.
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: post
parallelism: 1
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: 600
    splits: 1
    fields:
      seq: {{ kind: sequence }}
      id: {{ kind: int, min: 1, max: 10 }}
transforms:
  - name: enrich
    type: async_lookup
    key: id
    client: {{ type: http, method: post, url: "{url}/lookup" }}
    fields: {{ name: name }}
    capacity: 1
    cache: {{ max_entries: 100, ttl: 1h }}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            url = server.url,
            state = dir.path().join("state").display(),
            out = dir.path().join("out").display()
        ),
    );
    let o = run(&p, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = output_lines(dir.path());
    assert_eq!(lines.len(), 600);
    let mut keys = std::collections::BTreeSet::new();
    for v in &lines {
        let id = v["id"].as_i64().unwrap();
        keys.insert(id);
        assert!(!always_500(id) && !flaky(id) && !times_out(id));
        assert_eq!(v["name"], format!("user-{id}"), "{v}");
    }
    // Capacity 1 makes each key's first lookup finish before the next record is admitted, so
    // every repeat is a cache hit: exactly one request per distinct key.
    assert_eq!(
        server.state.requests.load(Ordering::Relaxed),
        keys.len() as u64,
        "one request per distinct key"
    );
}

// ---------------------------------------------------------------------------------------------
// Watermarks against in-flight records: the operator driven in-process the way the runtime
// drives it, with the real HTTP server, so every emission's position can be checked.

mod driven {
    use weir_runtime::api::{AsyncTransform, Batch, NodeConfig, NodeContext, Output, Record};
    use weir_runtime::metrics::NodeMetrics;
    use weir_runtime::registry::Registry;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Out {
        Record { id: i64, event_time: i64 },
        Watermark(i64),
    }

    fn build(config: Value) -> Box<dyn AsyncTransform> {
        let mut spec: weir_crds::NodeSpec =
            serde_json::from_value(json!({"name": "enrich", "type": "async_lookup"})).unwrap();
        spec.config = config.as_object().unwrap().clone();
        let cfg = NodeConfig {
            path: "transforms[0]".into(),
            spec,
            parallelism: 1,
            checkpoint: Default::default(),
        };
        Registry::with_builtins()
            .build_transform(&cfg)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ctx() -> NodeContext {
        NodeContext {
            job: "it".into(),
            node: "enrich".into(),
            worker: 0,
            parallelism: 1,
            max_parallelism: 128,
            checkpoint: Default::default(),
            metrics: NodeMetrics::detached(),
        }
    }

    fn collect(out: Output, got: &mut Vec<Out>) -> bool {
        for b in out.batches {
            for r in b.records {
                got.push(Out::Record {
                    id: r.fields()["id"].as_i64().unwrap(),
                    event_time: r.event_time.unwrap(),
                });
            }
        }
        if let Some(w) = out.watermark {
            got.push(Out::Watermark(w));
            return true;
        }
        false
    }

    /// 30 batches of 20 records (event time = id × 10), each followed by a watermark at its
    /// last event time. Returns the emissions and how many watermarks were held back (not
    /// emitted by the call that received them).
    pub async fn run(mode: &str, url: &str) -> (Vec<Out>, usize) {
        let mut t = build(json!({
            "mode": mode,
            "key": "id",
            "client": {"type": "http", "url": format!("{url}/user/{{id}}")},
            "fields": {"name": "name"},
            "capacity": 40,
            "timeout": "100ms",
            "on_timeout": null,
            "on_error": null,
        }));
        t.open(&ctx(), BTreeMap::new()).await.unwrap();
        let mut got = Vec::new();
        let mut held = 0;
        for b in 0..30i64 {
            let records = (b * 20..b * 20 + 20)
                .map(|id| {
                    Record::new(json!({ "id": id }).as_object().unwrap().clone())
                        .with_event_time(Some(id * 10))
                })
                .collect();
            let mut out = Output::default();
            t.process(Batch::new(None, records), &mut out)
                .await
                .unwrap();
            collect(out, &mut got);
            let mut out = Output::default();
            t.on_watermark((b * 20 + 19) * 10, &mut out).await.unwrap();
            if !collect(out, &mut got) {
                held += 1;
            }
            // Between inputs the runtime emits whatever finishes.
            while let Ok(()) = tokio::time::timeout(Duration::from_millis(2), t.ready()).await {
                let mut out = Output::default();
                t.emit_ready(&mut out).unwrap();
                collect(out, &mut got);
            }
        }
        let mut out = Output::default();
        t.finish(&mut out).await.unwrap();
        collect(out, &mut got);
        (got, held)
    }

    /// No record leaves after a watermark at or beyond its event time; every record leaves
    /// once; watermarks rise. Returns the ids in output order.
    pub fn check(got: &[Out]) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut last_wm = i64::MIN;
        for e in got {
            match *e {
                Out::Record { id, event_time } => {
                    assert!(
                        event_time > last_wm,
                        "record {id} (event time {event_time}) emitted after watermark {last_wm}"
                    );
                    ids.push(id);
                }
                Out::Watermark(w) => {
                    assert!(w > last_wm, "watermarks must rise: {w} after {last_wm}");
                    last_wm = w;
                }
            }
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..600).collect::<Vec<_>>(),
            "every record exactly once"
        );
        assert_eq!(last_wm, 5990, "the last watermark is emitted");
        ids
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_mode_holds_watermarks_behind_in_flight_records() {
    let server = Server::start(Latency::Skewed);
    let (got, held) = driven::run("unordered", &server.url).await;
    let ids = driven::check(&got);
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "skewed latency should reorder records"
    );
    assert!(held > 0, "some watermark had to wait for slower records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_mode_keeps_records_and_watermarks_in_input_order() {
    let server = Server::start(Latency::Skewed);
    let (got, held) = driven::run("ordered", &server.url).await;
    let ids = driven::check(&got);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "order changed");
    assert!(held > 0, "some watermark had to wait for slower records");
}

// ---------------------------------------------------------------------------------------------
// kill -9 with lookups in flight: the records held at the checkpoint are re-issued, and the
// exactly-once sink shows every record enriched exactly once.

/// Records the operator held in the newest complete checkpoint of every worker.
fn held_in_latest_checkpoint(dir: &Path) -> usize {
    let mut total = 0;
    let job = dir.join("state").join("lookup");
    for worker in std::fs::read_dir(&job).unwrap().flatten() {
        let mut chks: Vec<PathBuf> = std::fs::read_dir(worker.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("_MANIFEST.json").exists())
            .collect();
        chks.sort();
        let Some(latest) = chks.last() else { continue };
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(latest.join("state.json")).unwrap())
                .unwrap();
        if let Some(groups) = state["operators"]["enrich"].as_object() {
            total += groups
                .values()
                .map(|g| g.as_array().map_or(0, Vec::len))
                .sum::<usize>();
        }
    }
    total
}

fn crash_with_lookups_in_flight(mode: &str, point: &str, hit: u32) {
    let server = Server::start_with(Latency::Fixed(20), false);
    let dir = tempfile::tempdir().unwrap();
    let n = 4000;
    // No injected failures here, and a timeout no loaded machine reaches: every record must
    // come out enriched.
    let t = http_transform(&server, &format!("    mode: {mode}\n    capacity: 64\n"))
        .replace("timeout: 400ms", "timeout: 10s");
    let p = spec(
        dir.path(),
        &Job {
            parallelism: 2,
            count: n,
            rate: 4000,
            transform: t,
        },
    );
    run_until_killed(&p, Kill::At(point, hit));
    let held = held_in_latest_checkpoint(dir.path());
    assert!(
        held > 0,
        "the checkpoint restored from held no in-flight records"
    );
    restart_to_end(&p, &[]);
    let lines = output_lines(dir.path());
    let mut counts = BTreeMap::new();
    for v in &lines {
        let id = v["id"].as_i64().unwrap();
        assert_eq!(v["name"], format!("user-{id}"), "not enriched: {v}");
        *counts.entry(id).or_insert(0usize) += 1;
    }
    assert_exactly_once(&counts, n);
}

#[test]
fn kill_before_pre_commit_with_lookups_in_flight() {
    crash_with_lookups_in_flight("ordered", "before_precommit", 4);
}

#[test]
fn kill_after_the_manifest_with_lookups_in_flight() {
    crash_with_lookups_in_flight("unordered", "after_manifest", 3);
}

// ---------------------------------------------------------------------------------------------
// Bad settings and bad records name the field.

#[test]
fn a_url_placeholder_outside_the_key_fails_validation_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server_url = "http://127.0.0.1:9";
    let t = format!(
        "  - name: enrich\n    type: async_lookup\n    key: id\n    client: {{ type: http, url: \"{server_url}/user/{{usr}}\" }}\n    fields: {{ name: name }}\n"
    );
    let p = spec(
        dir.path(),
        &Job {
            parallelism: 1,
            count: 10,
            rate: 1000,
            transform: t,
        },
    );
    let o = weir().arg("validate").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("transforms[0].client.url"), "{text}");
    assert!(text.contains("\"usr\""), "{text}");
}

#[test]
fn a_key_field_missing_from_records_fails_naming_it() {
    let server = Server::start_with(Latency::Fixed(1), false);
    let dir = tempfile::tempdir().unwrap();
    let t = format!(
        "  - name: enrich\n    type: async_lookup\n    key: [id, user]\n    client: {{ type: http, url: \"{}/user/{{id}}\" }}\n    fields: {{ name: name }}\n",
        server.url
    );
    let p = spec(
        dir.path(),
        &Job {
            parallelism: 1,
            count: 10,
            rate: 1000,
            transform: t,
        },
    );
    let o = run(&p, &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("no field \"user\""), "{e}");
    assert!(
        e.contains("enrich") && e.contains("\"id\":0"),
        "names node and record: {e}"
    );
    assert_eq!(server.state.requests.load(Ordering::Relaxed), 0);
    assert!(visible_files(&dir.path().join("out")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Postgres and Redis lookups against real servers.

#[cfg(feature = "jdbc")]
#[test]
fn postgres_lookup_maps_the_first_row_and_nulls_missing_keys() {
    use sqlx::{AssertSqlSafe, Connection};

    let url = service_env("postgres", "DATABASE_URL");
    let table = format!("lookup_users_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id int8 PRIMARY KEY, name text, tier int4, meta jsonb,
                                   seen timestamptz);
             INSERT INTO {table}
               SELECT i, 'n' || i, i % 4, jsonb_build_object('even', i % 2 = 0),
                      '2024-01-01T00:00:00Z'
               FROM generate_series(0, 99) i WHERE i % 10 <> 9;"
        )))
        .execute(&mut c)
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: pg
parallelism: 1
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: 500
    splits: 1
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 119 }}
transforms:
  - name: enrich
    type: async_lookup
    mode: unordered
    key: user
    client: {{ type: postgres, url_env: DATABASE_URL, query: "SELECT name, tier, meta, seen FROM {table} WHERE id = $1" }}
    fields: {{ name: name, tier: tier, even: meta.even, seen: seen }}
    cache: {{ max_entries: 1000, ttl: 1m }}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            state = dir.path().join("state").display(),
            out = dir.path().join("out").display()
        ),
    );
    let o = run(&p, &[], &[("DATABASE_URL", &url)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = output_lines(dir.path());
    assert_eq!(lines.len(), 500);
    let mut found = 0;
    for v in &lines {
        let u = v["user"].as_i64().unwrap();
        if u < 100 && u % 10 != 9 {
            found += 1;
            assert_eq!(v["name"], format!("n{u}"), "{v}");
            assert_eq!(v["tier"], u % 4, "{v}");
            assert_eq!(v["even"], u % 2 == 0, "{v}");
            assert_eq!(v["seen"], "2024-01-01T00:00:00+00:00", "{v}");
        } else {
            for f in ["name", "tier", "even", "seen"] {
                assert_eq!(v[f], Value::Null, "{f} of a missing row: {v}");
            }
        }
    }
    assert!(found > 300 && found < 500, "{found}");
    rt.block_on(async {
        let mut c = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&mut c)
            .await
            .unwrap();
    });
}

#[cfg(feature = "redis")]
#[test]
fn redis_lookups_read_hashes_and_json_values() {
    let url = service_env("redis", "REDIS_URL");
    let prefix = format!("it{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = redis::aio::ConnectionManager::new(client).await.unwrap();
        let mut pipe = redis::pipe();
        for id in 0..50 {
            if id % 7 == 6 {
                continue;
            }
            pipe.cmd("HSET")
                .arg(format!("{prefix}:user:{id}"))
                .arg("name")
                .arg(format!("u{id}"))
                .arg("region")
                .arg(format!("r{}", id % 3))
                .ignore();
            pipe.cmd("SET")
                .arg(format!("{prefix}:profile:{id}"))
                .arg(json!({"score": id * 2, "tags": [format!("t{id}")]}).to_string())
                .ignore();
        }
        let () = pipe.query_async(&mut c).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: rd
parallelism: 1
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: 300
    splits: 1
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 59 }}
transforms:
  - name: hash
    type: async_lookup
    key: user
    client: {{ type: redis, url_env: REDIS_URL, command: hgetall, redis_key: "{prefix}:user:{{user}}" }}
    fields: {{ name: name, region: region }}
  - name: profile
    type: async_lookup
    key: user
    client: {{ type: redis, url_env: REDIS_URL, command: get, redis_key: "{prefix}:profile:{{user}}" }}
    fields: {{ score: score, tag: tags.0 }}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            state = dir.path().join("state").display(),
            out = dir.path().join("out").display()
        ),
    );
    let o = run(&p, &[], &[("REDIS_URL", &url)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = output_lines(dir.path());
    assert_eq!(lines.len(), 300);
    for v in &lines {
        let u = v["user"].as_i64().unwrap();
        if u < 50 && u % 7 != 6 {
            assert_eq!(v["name"], format!("u{u}"), "{v}");
            assert_eq!(v["region"], format!("r{}", u % 3), "{v}");
            assert_eq!(v["score"], u * 2, "{v}");
            assert_eq!(v["tag"], format!("t{u}"), "{v}");
        } else {
            for f in ["name", "region", "score", "tag"] {
                assert_eq!(v[f], Value::Null, "{f} of a missing key: {v}");
            }
        }
    }
}

/// Postgres stops for 20 s under lookups that fail the job on error (the default): each failed
/// lookup fails the worker, the restart strategy restarts it from its latest checkpoint until
/// the database is back, and the output holds every record once, each enriched.
#[cfg(feature = "jdbc")]
#[test]
fn a_postgres_outage_under_lookups_restarts_until_it_is_back_and_loses_nothing() {
    use sqlx::{AssertSqlSafe, Connection};

    const N: i64 = 6_000;
    let db = PrivateService::up("postgres", "DATABASE_URL", "lookup-outage", &[]);
    let url = db.value.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(
            "CREATE TABLE users (id int8 PRIMARY KEY, name text);
             INSERT INTO users SELECT i, 'n' || i FROM generate_series(0, 99) i;",
        ))
        .execute(&mut c)
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    // 300 records/s for 20 s: the job is mid-stream when the database stops, and no cache, so
    // every record needs the database.
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: pg-outage
parallelism: 1
checkpoint: {{ interval: 200ms, storage: {state} }}
restart: {{ strategy: exponential-delay, backoff: 500ms, max_backoff: 4s }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 300
    splits: 1
    fields:
      id: {{ kind: sequence }}
      user: {{ kind: int, min: 0, max: 99 }}
transforms:
  - name: enrich
    type: async_lookup
    key: user
    timeout: 2s
    client: {{ type: postgres, url_env: DATABASE_URL, query: "SELECT name FROM users WHERE id = $1" }}
    fields: {{ name: name }}
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            state = dir.path().join("state").display(),
            out = dir.path().join("out").display()
        ),
    );
    let job = Running::start_with_env(&p, &[], &[("DATABASE_URL", &url)]);
    std::thread::sleep(Duration::from_secs(4));
    db.must("stop");
    std::thread::sleep(Duration::from_secs(20));
    db.must("start");
    let o = job.wait();
    let log = stderr(&o);
    assert!(o.status.success(), "the job did not survive: {log}");
    assert!(
        log.contains("restarting from its latest complete checkpoint"),
        "the outage never failed a lookup (no restart):\n{log}"
    );
    let lines = output_lines(dir.path());
    let mut ids = BTreeMap::new();
    for v in &lines {
        *ids.entry(v["id"].as_i64().unwrap()).or_insert(0usize) += 1;
        assert_eq!(
            v["name"],
            format!("n{}", v["user"].as_i64().unwrap()),
            "a record not enriched: {v}"
        );
    }
    assert_exactly_once(&ids, N);
}
