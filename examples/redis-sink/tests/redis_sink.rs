//! The example binary on datagen → redis_events against a real Redis: every event is a field
//! of its user's hash holding the record, every hash has the TTL, and the sink's own metrics are
//! served by the worker's /metrics.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The value of a service's env var: taken from the environment when set, otherwise from
/// `e2e/services/<service>.sh up` (as runtime/tests/it/harness.rs does).
fn service_env(service: &str, var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let script = format!(
        "{}/../../e2e/services/{service}.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let o = Command::new("bash")
        .arg(&script)
        .arg("up")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script} up failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("{service}.sh up did not print {var}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics over plain HTTP/1.0 (no client library needed for one request).
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Every hash `events:<run>_*` with its fields, and its TTL, read back through a connection of
/// the test's own.
fn read_hashes(
    url: &str,
    run: &str,
) -> (
    BTreeMap<String, HashMap<String, String>>,
    BTreeMap<String, i64>,
) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = redis::Client::open(url).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("events:{run}_*"))
            .query_async(&mut c)
            .await
            .unwrap();
        let mut hashes = BTreeMap::new();
        let mut ttls = BTreeMap::new();
        for k in keys {
            let h: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap();
            let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut c).await.unwrap();
            hashes.insert(k.clone(), h);
            ttls.insert(k, ttl);
        }
        (hashes, ttls)
    })
}

const N: i64 = 3000;

#[test]
fn datagen_to_redis_sets_every_field_and_ttl() {
    let url = service_env("redis", "REDIS_URL");
    // User ids unique to this run, so the keys `events:<user_id>` belong to this test alone.
    let run = format!("t{}x{}", std::process::id(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("p.yaml");
    std::fs::write(
        &spec,
        format!(
            r#"name: redis-example
parallelism: 2
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 1500
    splits: 4
    fields:
      event_id: {{ kind: sequence }}
      user_id: {{ kind: int, min: 0, max: 49, prefix: "{run}_" }}
      amount: {{ kind: int, min: 1, max: 100 }}
sinks:
  - name: events
    type: redis_events
    url_env: REDIS_URL
    batch_size: 200
"#,
            state = dir.path().join("state").display()
        ),
    )
    .unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-redis-example"))
        .args(["run", "--quiet", "--admin-addr", &admin])
        .arg(&spec)
        .env("REDIS_URL", &url)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs (about 2 s), the sink's own metrics appear on the worker's /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut flushes_seen = false;
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if let Some(m) = scrape(&admin) {
            if m.lines().any(|l| {
                l.starts_with("weir_redis_sink_flushes_total{")
                    && l.contains("node=\"events\"")
                    && !l.ends_with(" 0")
            }) {
                flushes_seen = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        flushes_seen,
        "weir_redis_sink_flushes_total never showed on /metrics"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hashes, ttls) = read_hashes(&url, &run);
    assert_eq!(hashes.len(), 50, "one hash per user");
    let mut events = BTreeMap::new();
    for (key, fields) in &hashes {
        let user = key.strip_prefix("events:").unwrap();
        let ttl = ttls[key];
        assert!(
            (86_300..=86_400).contains(&ttl),
            "{key} has TTL {ttl}, expected about 86400"
        );
        for (field, json) in fields {
            let v: Value = serde_json::from_str(json).unwrap();
            let id: i64 = field.parse().unwrap();
            assert_eq!(v["event_id"], id, "{key} {field}: {json}");
            assert_eq!(v["user_id"], user, "{key} {field}: {json}");
            let amount = v["amount"].as_i64().unwrap();
            assert!((1..=100).contains(&amount), "{json}");
            *events.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(
        events.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>(),
        "every event exactly once"
    );
    assert!(events.values().all(|c| *c == 1));
    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        for k in hashes.keys() {
            let _: () = redis::cmd("DEL").arg(k).query_async(&mut c).await.unwrap();
        }
    });
}

/// Redis (a private instance with an append-only file, so its data outlives the stop) goes away
/// for 20 s mid-run: the sink's retries give out, the worker restarts from its latest
/// checkpoint until Redis is back, and every event is in its hash at the end (the sink writes
/// at least once; HSET of the same field makes a replay land once).
#[test]
fn a_redis_outage_of_20s_is_ridden_out_and_every_event_lands() {
    const N: i64 = 12_000;
    let root = tempfile::tempdir().unwrap();
    let redis_sh = |cmd: &str| {
        let o = Command::new("bash")
            .arg(format!(
                "{}/../../e2e/services/redis.sh",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(cmd)
            .env("WEIR_SERVICES_RUN", root.path())
            .env("REDIS_APPENDONLY", "yes")
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "redis.sh {cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    struct Down<F: Fn(&str) -> String>(F);
    impl<F: Fn(&str) -> String> Drop for Down<F> {
        fn drop(&mut self) {
            (self.0)("down");
        }
    }
    let url = redis_sh("up")
        .lines()
        .find_map(|l| l.strip_prefix("REDIS_URL=").map(str::to_string))
        .expect("redis.sh up prints REDIS_URL");
    let redis = Down(redis_sh);
    let run = format!("o{}x{}", std::process::id(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("p.yaml");
    std::fs::write(
        &spec,
        format!(
            r#"name: redis-outage
parallelism: 2
checkpoint: {{ interval: 500ms, storage: {state} }}
restart: {{ strategy: exponential-delay, backoff: 500ms, max_backoff: 4s }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 400
    splits: 4
    fields:
      event_id: {{ kind: sequence }}
      user_id: {{ kind: int, min: 0, max: 49, prefix: "{run}_" }}
      amount: {{ kind: int, min: 1, max: 100 }}
sinks:
  - name: events
    type: redis_events
    url_env: REDIS_URL
    batch_size: 200
    retry: {{ backoff: 200ms, max_attempts: 3 }}
"#,
            state = dir.path().join("state").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_weir-redis-example"))
        .args([
            "run",
            "--quiet",
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg(&spec)
        .env("REDIS_URL", &url)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained on a thread: the warnings of the outage would fill the pipe and block the job.
    let log = std::thread::spawn(move || child.wait_with_output().unwrap());
    std::thread::sleep(Duration::from_secs(4));
    (redis.0)("stop");
    std::thread::sleep(Duration::from_secs(20));
    (redis.0)("start");
    let deadline = Instant::now() + Duration::from_secs(240);
    while !log.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the job did not end 4 min after the outage"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = log.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the job did not survive: {err}");
    assert!(
        err.contains("restarting from its latest complete checkpoint"),
        "the outage never reached the job (no restart):\n{err}"
    );
    let (hashes, _) = read_hashes(&url, &run);
    let mut events = BTreeMap::new();
    for (k, h) in hashes {
        for (field, json) in h {
            let v: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["event_id"].to_string(), field, "{k}: {json}");
            *events.entry(field.parse::<i64>().unwrap()).or_insert(0) += 1;
        }
    }
    assert_eq!(
        events.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>(),
        "every event in its hash after the outage"
    );
}

/// The recovery proof with weir's crash-test kit (`weir_runtime::testkit`), as a user writing a
/// connector would run it: the job killed at each step of the checkpoint and at random moments,
/// restarted from its checkpoints, and every event read back from Redis exactly once (the sink
/// writes at least once; HSET of the same field makes a replay land once).
#[test]
fn the_sink_recovers_from_a_kill_at_every_checkpoint_step_and_at_random() {
    use weir_runtime::testkit::{exactly_once, prove_recovery, Job};
    const N: i64 = 4000;
    let url = service_env("redis", "REDIS_URL");
    let run = format!("k{}x{}", std::process::id(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("p.yaml");
    let state = dir.path().join("state");
    std::fs::write(
        &spec,
        format!(
            r#"name: redis-crashes
parallelism: 2
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    rate: 1000
    splits: 4
    fields:
      event_id: {{ kind: sequence }}
      user_id: {{ kind: int, min: 0, max: 49, prefix: "{run}_" }}
sinks:
  - name: events
    type: redis_events
    url_env: REDIS_URL
    batch_size: 100
"#,
            state = state.display()
        ),
    )
    .unwrap();
    let job = Job::new(env!("CARGO_BIN_EXE_weir-redis-example"), &spec).env("REDIS_URL", &url);
    let clear = || {
        let _ = std::fs::remove_dir_all(&state);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("events:{run}_*"))
                .query_async(&mut c)
                .await
                .unwrap();
            for k in keys {
                let _: () = redis::cmd("DEL").arg(&k).query_async(&mut c).await.unwrap();
            }
        });
    };
    prove_recovery(
        &job,
        &[
            ("before_precommit", 3),
            ("after_precommit", 3),
            ("after_manifest", 3),
            ("after_commit", 3),
        ],
        3,
        Duration::from_millis(300)..Duration::from_millis(2500),
        clear,
        |case| {
            let (hashes, _) = read_hashes(&url, &run);
            let mut events = BTreeMap::new();
            for h in hashes.values() {
                for field in h.keys() {
                    *events.entry(field.parse::<i64>().unwrap()).or_insert(0) += 1;
                }
            }
            exactly_once(&events, N).unwrap_or_else(|e| panic!("{case}: {e}"));
        },
    );
}
