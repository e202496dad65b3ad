//! The `jdbc` sink and source against a real Postgres: kill -9 at each checkpoint step and at
//! random moments, a database restart mid-run, bad records, and a bounded query source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::str::FromStr;

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, Connection};

use super::harness::*;

fn pg() -> String {
    service_env("postgres", "DATABASE_URL")
}

pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub(super) fn exec(url: &str, sql: &str) {
    block_on(async {
        let mut c = PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
}

/// A table name no other test (or earlier run) uses.
pub(super) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Where an upsert test writes, and the independent reader that checks it (a connection of
/// the test's own): the shared Postgres or MariaDB, or a SQLite file in a directory of the
/// test's own.
pub(super) enum Db {
    Postgres(String),
    Mysql(String),
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
}

impl Db {
    fn postgres() -> Db {
        Db::Postgres(pg())
    }

    /// The shared MariaDB (`MYSQL_URL`, or `e2e/services/mariadb.sh up`).
    pub(super) fn mysql() -> Db {
        Db::Mysql(service_env("mariadb", "MYSQL_URL"))
    }

    /// A new, empty SQLite database file.
    pub(super) fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("weir.db").display());
        block_on(async {
            let opts = SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true);
            SqliteConnection::connect_with(&opts).await.unwrap();
        });
        Db::Sqlite { _dir: dir, url }
    }

    pub(super) fn url(&self) -> &str {
        match self {
            Db::Postgres(url) | Db::Mysql(url) | Db::Sqlite { url, .. } => url,
        }
    }

    pub(super) fn exec(&self, sql: &str) {
        match self {
            Db::Postgres(url) => exec(url, sql),
            Db::Mysql(url) => block_on(async {
                let mut c = MySqlConnection::connect(url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }),
            Db::Sqlite { url, .. } => block_on(async {
                let mut c = SqliteConnection::connect(url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }),
        }
    }

    /// Makes every row inserted into `table` take about 0.1 ms more (a `BEFORE INSERT` trigger
    /// that sleeps; it fires for upserted rows too), so that the database, not a debug build of
    /// weir, is the bottleneck, as it is in a release build: two writers' transactions then
    /// overlap in time and would deadlock if they took their row locks in different orders.
    pub(super) fn slow_inserts(&self, table: &str) {
        match self {
            Db::Postgres(_) => self.exec(&format!(
                "CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN PERFORM pg_sleep(0.0001); RETURN NEW; END $$; \
                 CREATE TRIGGER slow BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {table}_slow()"
            )),
            Db::Mysql(_) => self.exec(&format!(
                "CREATE TRIGGER {table}_slow BEFORE INSERT ON {table} \
                 FOR EACH ROW SET @weir_slow = SLEEP(0.0001)"
            )),
            Db::Sqlite { .. } => panic!("SQLite has one writer at a time: nothing to overlap"),
        }
    }

    /// One integer from a query (SQLite, MySQL).
    pub(super) fn query_i64(&self, sql: &str) -> i64 {
        block_on(async {
            let q = sqlx::query_scalar::<_, i64>;
            match self {
                Db::Sqlite { url, .. } => {
                    let mut c = SqliteConnection::connect(url).await.unwrap();
                    q(AssertSqlSafe(sql.to_string())).fetch_one(&mut c).await
                }
                Db::Mysql(url) => {
                    let mut c = MySqlConnection::connect(url).await.unwrap();
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
                        .fetch_one(&mut c)
                        .await
                }
                Db::Postgres(_) => panic!("query_i64 reads SQLite or MySQL"),
            }
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// A table's `k, v` rows (text key, integer value).
    pub(super) fn key_values(&self, table: &str) -> BTreeMap<String, i64> {
        let sql = format!("SELECT k, v FROM {table}");
        block_on(async {
            match self {
                Db::Postgres(url) => {
                    let mut c = PgConnection::connect(url).await.unwrap();
                    sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql.clone()))
                        .fetch_all(&mut c)
                        .await
                }
                Db::Mysql(url) => {
                    let mut c = MySqlConnection::connect(url).await.unwrap();
                    sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql.clone()))
                        .fetch_all(&mut c)
                        .await
                }
                Db::Sqlite { url, .. } => {
                    let mut c = SqliteConnection::connect(url).await.unwrap();
                    sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql.clone()))
                        .fetch_all(&mut c)
                        .await
                }
            }
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .collect()
        })
    }

    /// user_stats rows: user_id → (event_count, last_seen in epoch ms).
    fn user_stats(&self, table: &str) -> BTreeMap<String, (i64, i64)> {
        match self {
            Db::Postgres(url) => block_on(async {
                let mut c = PgConnection::connect(url).await.unwrap();
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT user_id, event_count, (extract(epoch FROM last_seen) * 1000)::bigint FROM {table}"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                rows.into_iter().map(|(k, n, t)| (k, (n, t))).collect()
            }),
            // DATETIME(3) in UTC (the sink's sessions run in UTC).
            Db::Mysql(url) => block_on(async {
                let mut c = MySqlConnection::connect(url).await.unwrap();
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT user_id, event_count, \
                     CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', last_seen) DIV 1000 AS SIGNED) FROM {table}"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                rows.into_iter().map(|(k, n, t)| (k, (n, t))).collect()
            }),
            // SQLite keeps the times as the RFC 3339 text the sink wrote.
            Db::Sqlite { url, .. } => block_on(async {
                let mut c = SqliteConnection::connect(url).await.unwrap();
                let rows: Vec<(String, i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT user_id, event_count, last_seen FROM {table}"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                rows.into_iter()
                    .map(|(k, n, t)| {
                        let ms = chrono::DateTime::parse_from_rfc3339(&t)
                            .unwrap_or_else(|e| panic!("{t}: {e}"))
                            .timestamp_millis();
                        (k, (n, ms))
                    })
                    .collect()
            }),
        }
    }
}

const KEYS: i64 = 1000;
const START_MS: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z

/// The last write per key of the generator below: record i has user `u{i % KEYS}`,
/// event_count i and last_seen START + i ms; each key lives in one split (4 divides KEYS), so
/// its records arrive in index order and the last one is the largest index.
fn expected_state(n: i64) -> BTreeMap<String, (i64, i64)> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        m.insert(format!("u{}", i % KEYS), (i, START_MS + i));
    }
    m
}

/// The same DDL for Postgres and SQLite (which reads `bigint` as INTEGER affinity and
/// `timestamptz` as a time); MySQL's key needs a length and its times are DATETIME.
pub(super) fn create_user_stats(db: &Db, table: &str) {
    let columns = match db {
        Db::Mysql(_) => {
            "user_id varchar(64) PRIMARY KEY, event_count bigint NOT NULL, last_seen datetime(3)"
        }
        _ => "user_id text PRIMARY KEY, event_count bigint NOT NULL, last_seen timestamptz",
    };
    db.exec(&format!("CREATE TABLE {table} ({columns})"));
}

pub(super) fn upsert_spec(
    dir: &Path,
    url: &str,
    table: &str,
    n: i64,
    rate: u32,
    sink_extra: &str,
) -> PathBuf {
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: jdbc-upsert
parallelism: 2
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {n}
    rate: {rate}
    splits: 4
    batch_size: 200
    fields:
      seq: {{ kind: sequence }}
      ts: {{ kind: timestamp, start: "2024-01-01T00:00:00Z", step: 1ms }}
transforms:
  - name: key
    type: map
    fields:
      uid: "'u' + string(seq % {KEYS})"
sinks:
  - name: db
    type: jdbc
    url: {url}
    table: {table}
    columns: {{ user_id: uid, event_count: seq, last_seen: ts }}
    batch_size: 300
    retry: {{ backoff: 50ms, max_backoff: 1s, max_attempts: 21 }}
{sink_extra}"#,
            state = dir.join("state").display(),
        ),
    )
}

pub(super) fn assert_state(db: &Db, table: &str, n: i64) {
    let got = db.user_stats(table);
    let want = expected_state(n);
    assert_eq!(got.len(), want.len(), "distinct keys in {table}");
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(5)
        .map(|(k, v)| (k.clone(), *v, got.get(k).copied()))
        .collect();
    assert!(wrong.is_empty(), "(key, expected, got): {wrong:?}");
}

pub(super) fn crash_then_finish(db: &Db, point: &str, hit: u32) {
    const N: i64 = 40_000;
    let table = unique(&format!("us_{point}"));
    create_user_stats(db, &table);
    let dir = tempfile::tempdir().unwrap();
    let spec = upsert_spec(dir.path(), db.url(), &table, N, 20_000, "");
    run_until_killed(&spec, Kill::At(point, hit));
    // Mid-run: the crash left the table short of the final state.
    let partial: i64 = db.user_stats(&table).values().map(|(n, _)| *n).sum();
    let full: i64 = expected_state(N).values().map(|(n, _)| *n).sum();
    assert!(
        partial < full,
        "{point}:{hit}: the job had already finished"
    );
    restart_to_end(&spec, &[]);
    assert_state(db, &table, N);
}

#[test]
fn upsert_survives_kill_before_pre_commit() {
    crash_then_finish(&Db::postgres(), "before_precommit", 4);
}

#[test]
fn upsert_survives_kill_after_pre_commit() {
    crash_then_finish(&Db::postgres(), "after_precommit", 4);
}

#[test]
fn upsert_survives_kill_after_the_manifest() {
    crash_then_finish(&Db::postgres(), "after_manifest", 3);
}

#[test]
fn upsert_survives_kills_at_random_moments() {
    kills_at_random_moments_then_finish(&Db::postgres());
}

pub(super) fn kills_at_random_moments_then_finish(db: &Db) {
    const N: i64 = 40_000;
    let table = unique("us_random");
    create_user_stats(db, &table);
    let dir = tempfile::tempdir().unwrap();
    let spec = upsert_spec(dir.path(), db.url(), &table, N, 20_000, "");
    let window = ms(300)..ms(800);
    let kills = run_until_killed(&spec, Kill::AtRandom { runs: 3, window }).kills;
    assert!(
        kills >= 2,
        "only {kills} of 3 runs were still going when killed"
    );
    restart_to_end(&spec, &[]);
    assert_state(db, &table, N);
}

/// Two workers upserting the same keys through multi-row statements (`copy: false`), meeting
/// them in opposite orders: worker 0 reads the even records and worker 1 the odd ones, and
/// record i has key i/2 mod 1009 when i is even and 1008 − (i/2 mod 1009) when it is odd, so
/// one goes up through the keys while the other comes down. A statement's rows go in key
/// order, so two writers wait for each other's row locks instead of deadlocking; a batch
/// retried for any transient error counts in `weir_sink_retried_batches_total`, which the run
/// summary reports. Without the ordering this fails with 9–26 retries a run.
#[test]
fn parallel_multi_row_upserts_of_overlapping_keys_never_deadlock() {
    overlapping_keys_never_deadlock(&Db::postgres(), "text", Overlap::Upsert("copy: false"));
}

/// The same two workers through COPY into a staging table and one set-based upsert per batch
/// (the default): its `SELECT DISTINCT ON (key) … ORDER BY key` hands the rows to the insert in
/// the key column's own order, the same in every writer.
#[test]
fn parallel_copy_upserts_of_overlapping_keys_never_deadlock() {
    overlapping_keys_never_deadlock(&Db::postgres(), "text", Overlap::Upsert("copy: true"));
}

/// The same two workers through a statement of the user's (`mode: sql`, one row at a time in a
/// transaction per batch) that adds each record's value to its key's total: the rows go in the
/// order of the `key` fields, each key's rows in arrival order.
#[test]
fn parallel_statements_of_overlapping_keys_never_deadlock() {
    overlapping_keys_never_deadlock(
        &Db::postgres(),
        "text",
        Overlap::AddUp("ON CONFLICT (k) DO UPDATE SET v = {table}.v + EXCLUDED.v"),
    );
}

/// What the two workers of the overlapping-keys test write.
pub(super) enum Overlap<'a> {
    /// Upserts of `(k, v)` into the table (the last value wins), with more sink settings
    /// (inline YAML).
    Upsert(&'a str),
    /// `mode: sql`, `key: [k]`: `INSERT … VALUES (:k, :v)` with this conflict clause, which
    /// adds `v` to the key's total (`{table}` stands for the table).
    AddUp(&'a str),
}

/// The body of the overlapping-keys test for any database: `key_type` is the key column's SQL
/// type. Asserts the table is exact and that no batch was retried (a deadlock is one).
pub(super) fn overlapping_keys_never_deadlock(db: &Db, key_type: &str, how: Overlap) {
    const N: i64 = 30_000;
    const KEYS: i64 = 1009;
    // Worker 0 (even records) goes up through the keys, worker 1 (odd records) comes down.
    const KEY: &str = "seq % 2 == 0 ? seq / 2 % 1009 : 1008 - seq / 2 % 1009";
    let key_of = |i: i64| match i % 2 {
        0 => i / 2 % KEYS,
        _ => KEYS - 1 - i / 2 % KEYS,
    };
    let table = unique("overlap");
    db.exec(&format!(
        "CREATE TABLE {table} (k {key_type} PRIMARY KEY, v bigint NOT NULL)"
    ));
    db.slow_inserts(&table);
    let (writes, want): (String, BTreeMap<String, i64>) = match how {
        Overlap::Upsert(sink) => (
            format!("table: {table}\n    columns: [k, v]\n    {sink}"),
            (0..KEYS).map(|k| (format!("k{k}"), k * 3)).collect(),
        ),
        Overlap::AddUp(conflict) => {
            let conflict = conflict.replace("{table}", &table);
            let mut totals = BTreeMap::new();
            for i in 0..N {
                *totals.entry(format!("k{}", key_of(i))).or_insert(0) += key_of(i) * 3;
            }
            (
                format!(
                    "mode: sql\n    key: [k]\n    sql: \"INSERT INTO {table} (k, v) VALUES (:k, :v) {conflict}\""
                ),
                totals,
            )
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: jdbc-overlap
parallelism: 2
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: {N}
    splits: 2
    batch_size: 500
    fields:
      seq: {{ kind: sequence }}
transforms:
  - name: key
    type: map
    fields:
      k: "'k' + string({KEY})"
      v: "({KEY}) * 3"
sinks:
  - name: db
    type: jdbc
    url: {url}
    batch_size: 500
    pool_size: 2
    retry: {{ backoff: 10ms, max_backoff: 200ms, max_attempts: 50 }}
    {writes}
"#,
            state = dir.path().join("state").display(),
            url = db.url(),
        ),
    );
    let summary = dir.path().join("summary.json");
    let o = run(
        &spec,
        &["--summary-json", summary.to_str().unwrap()],
        &[("WEIR_LOG", "warn")],
    );
    let log = stderr(&o);
    assert!(o.status.success(), "{}\n{log}", o.status);
    assert_eq!(db.key_values(&table), want);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let sink = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "db")
        .unwrap();
    assert_eq!(sink["records_in"], N, "{s}");
    assert_eq!(sink["retried"], 0, "batches retried:\n{log}");
    assert!(!log.to_lowercase().contains("deadlock"), "{log}");
}

/// A Postgres of this test's own (a restart would disturb other tests sharing the default one),
/// stopped and deleted on drop.
pub(super) struct PrivatePostgres {
    run_dir: PathBuf,
    pub(super) url: String,
}

impl PrivatePostgres {
    pub(super) fn script(&self, cmd: &str) -> std::process::Output {
        let script = format!("{}/../e2e/services/postgres.sh", env!("CARGO_MANIFEST_DIR"));
        Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("WEIR_SERVICES_RUN", &self.run_dir)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    }

    /// `name` keeps the servers of concurrent tests apart.
    pub(super) fn up(name: &str) -> PrivatePostgres {
        let run_dir = std::env::temp_dir().join(format!("weir-jdbc-{name}-{}", std::process::id()));
        let mut p = PrivatePostgres {
            run_dir,
            url: String::new(),
        };
        let o = p.script("up");
        assert!(
            o.status.success(),
            "postgres.sh up: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        p.url = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL="))
            .expect("DATABASE_URL printed")
            .to_string();
        p
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.script("down");
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Runs `n` upserts at `rate`/s into `target` (a database of the test's own) and calls
/// `outage` `after` into the run (it stops and starts the database); the job must survive, and
/// the table must be exactly what an uninterrupted run leaves. Returns the job's log.
pub(super) fn upsert_through_an_outage(
    target: &Db,
    n: i64,
    rate: u32,
    after: Duration,
    outage: impl FnOnce(),
) -> String {
    let table = "user_stats";
    create_user_stats(target, table);
    let dir = tempfile::tempdir().unwrap();
    // A short acquire timeout, so the outage reaches the sink's own retries rather than being
    // absorbed by the pool's wait for a connection; restarts close together, so the job is back
    // soon after the database.
    let spec = upsert_spec(
        dir.path(),
        target.url(),
        table,
        n,
        rate,
        "    connect_timeout: 300ms\n",
    );
    let spec_text = std::fs::read_to_string(&spec).unwrap().replace(
        "checkpoint: {",
        "restart: { strategy: exponential-delay, backoff: 500ms, max_backoff: 4s }\ncheckpoint: {",
    );
    std::fs::write(&spec, spec_text).unwrap();
    let job = Running::start(&spec, &[]);
    std::thread::sleep(after);
    outage();
    let out = job.wait();
    let log = stderr(&out);
    assert!(
        out.status.success(),
        "the job did not survive the outage: {}\n{log}",
        out.status
    );
    assert!(!log.contains("hunter2"));
    assert_state(target, table, n);
    log
}

/// A private Postgres stopped for `down`, then started again.
fn postgres_outage(name: &str, n: i64, rate: u32, after: Duration, down: Duration) -> String {
    let db = PrivatePostgres::up(name);
    upsert_through_an_outage(&Db::Postgres(db.url.clone()), n, rate, after, || {
        for (cmd, pause) in [("stop", down), ("start", Duration::ZERO)] {
            let o = db.script(cmd);
            assert!(
                o.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(pause);
        }
    })
}

/// A restart of the database within the sink's retries: ridden out by retrying.
#[test]
fn upsert_rides_out_a_database_restart() {
    let log = postgres_outage(
        "restart",
        60_000,
        20_000,
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    assert!(
        log.contains("retrying"),
        "the restart never hit the sink (no retry logged):\n{log}"
    );
}

/// Postgres stopped for 20 s mid-run, longer than the sink's retries last: the worker fails and
/// the restart strategy restarts it from its latest checkpoint until the database is back.
#[test]
fn upsert_rides_out_a_20s_database_outage_through_restarts() {
    let log = postgres_outage(
        "outage",
        40_000,
        2_000,
        Duration::from_secs(4),
        Duration::from_secs(20),
    );
    assert!(
        log.contains("restarting from its latest complete checkpoint"),
        "20 s outlasted no retry budget (no restart):\n{log}"
    );
}

/// JSON lines for the bad-input tests: ids 0..200 are good, a few in the middle are not.
fn bad_input(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for i in 0..200 {
        let line = match i {
            50 => r#"{"id": 50, "ts": "2024-01-01T00:00:00Z"}"#.to_string(), // no "n"
            60 => r#"{"id": 60, "n": "lots", "ts": "2024-01-01T00:00:00Z"}"#.to_string(),
            70 => r#"{"id": 70, "n": -5, "ts": "2024-01-01T00:00:00Z"}"#.to_string(), // CHECK
            i => format!(r#"{{"id": {i}, "n": {}, "ts": {}}}"#, i * 10, START_MS + i),
        };
        lines.push(line);
    }
    write(dir, "in.jsonl", &(lines.join("\n") + "\n"))
}

pub(super) fn bad_input_spec(dir: &Path, url: &str, table: &str, on_error: &str) -> PathBuf {
    let input = bad_input(dir);
    write(
        dir,
        "p.yaml",
        &format!(
            r#"name: jdbc-bad
checkpoint: {{ interval: 1s, storage: {state} }}
sources:
  - name: in
    type: file
    path: {input}
    format: json
sinks:
  - name: db
    type: jdbc
    url: {url}
    table: {table}
    columns: {{ id: id, n: n, at: ts }}
    on_error: {on_error}
"#,
            state = dir.join("state").display(),
            input = input.display(),
        ),
    )
}

fn create_checked(url: &str, table: &str) {
    exec(
        url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, n bigint CHECK (n >= 0), at timestamptz)"
        ),
    );
}

pub(super) fn ids(url: &str, table: &str) -> Vec<i64> {
    block_on(async {
        let mut c = PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {table} ORDER BY id")))
            .fetch_all(&mut c)
            .await
            .unwrap()
    })
}

#[test]
fn bad_rows_are_skipped_and_the_rest_of_the_batch_lands() {
    let url = pg();
    let table = unique("bad_skip");
    create_checked(&url, &table);
    let dir = tempfile::tempdir().unwrap();
    let spec = bad_input_spec(dir.path(), &url, &table, "skip");
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(o.status.success(), "{}\n{log}", o.status);
    let want: Vec<i64> = (0..200).filter(|i| ![50, 60, 70].contains(i)).collect();
    assert_eq!(ids(&url, &table), want);
    // Each skipped record is logged with the reason, naming the column.
    assert!(
        log.contains(r#"column \"n\" ← field \"n\": the field is missing"#)
            || log.contains(r#"column "n" ← field "n": the field is missing"#),
        "{log}"
    );
    assert!(log.contains("expected an integer"), "{log}");
    assert!(log.contains("check constraint"), "{log}");
    assert!(
        log.contains(r#""id":"70""#) || log.contains(r#"\"id\":\"70\""#),
        "the rejected row is named: {log}"
    );
}

#[test]
fn bad_rows_fail_the_job_naming_the_record() {
    let url = pg();
    // A missing field: fails before anything is sent, naming record and column.
    let table = unique("bad_fail");
    create_checked(&url, &table);
    let dir = tempfile::tempdir().unwrap();
    let spec = bad_input_spec(dir.path(), &url, &table, "fail");
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(!o.status.success(), "a bad record must fail the job: {log}");
    assert!(
        log.contains(r#""id":50"#) && log.contains("the field is missing"),
        "{log}"
    );

    // A row the database rejects (CHECK): found by the row-by-row retry and named.
    let table = unique("bad_fail_db");
    create_checked(&url, &table);
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.jsonl",
        &(0..100)
            .map(|i| {
                format!(
                    r#"{{"id": {i}, "n": {}, "ts": 0}}"#,
                    if i == 42 { -1 } else { i }
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: jdbc-bad-db\ncheckpoint: {{ storage: {} }}\nsources: [{{name: in, type: file, path: {}, format: json}}]\n\
             sinks: [{{name: db, type: jdbc, url: '{url}', table: {table}, columns: {{id: id, n: n, at: ts}}}}]\n",
            dir.path().join("state").display(),
            input.display()
        ),
    );
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("check constraint") && log.contains(r#""n":"-1""#),
        "{log}"
    );
}

#[test]
fn a_missing_table_or_column_fails_at_start_with_a_clear_error() {
    let url = pg();
    let table = unique("cfg");
    create_user_stats(&Db::Postgres(url.clone()), &table);
    let dir = tempfile::tempdir().unwrap();
    let spec = |extra: &str| {
        write(
            dir.path(),
            "p.yaml",
            &format!(
                "name: jdbc-cfg\ncheckpoint: {{ storage: {} }}\n\
                 sources: [{{name: g, type: datagen, count: 10, fields: {{seq: {{kind: sequence}}}}}}]\n\
                 sinks: [{{name: db, type: jdbc, url: '{url}', {extra}}}]\n",
                dir.path().join("state").display()
            ),
        )
    };
    let o = run(&spec("table: no_such_table"), &[], &[]);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = run(
        &spec(&format!(
            "table: {table}, columns: {{user_id: seq, nope: seq}}"
        )),
        &[],
        &[],
    );
    assert!(
        stderr(&o).contains("\\\"nope\\\" is not in") || stderr(&o).contains("\"nope\" is not in"),
        "{}",
        stderr(&o)
    );
    // A conflict key without a unique index is caught by the probe at open.
    let o = run(
        &spec(&format!(
            "table: {table}, key: [event_count], columns: {{user_id: seq, event_count: seq}}"
        )),
        &[],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ON CONFLICT"), "{}", stderr(&o));
    // The password never shows, even in a failure to connect.
    let o = run(
        &write(
            dir.path(),
            "p.yaml",
            &format!(
                "name: jdbc-pw\ncheckpoint: {{ storage: {} }}\n\
                 sources: [{{name: g, type: datagen, count: 10, fields: {{seq: {{kind: sequence}}}}}}]\n\
                 sinks: [{{name: db, type: jdbc, url: 'postgres://bob:hunter2@127.0.0.1:1/x', table: t, retry: {{max_attempts: 2, backoff: 10ms}}}}]\n",
                dir.path().join("state").display()
            ),
        ),
        &[],
        &[],
    );
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    assert!(stderr(&o).contains("bob:***@"), "{}", stderr(&o));
}

fn create_products(url: &str, table: &str, n: i64) {
    exec(
        url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text, category text, price numeric(10,2), \
             active boolean, created timestamptz, attrs jsonb, note text);
             INSERT INTO {table} SELECT i, 'product ' || i, 'cat' || (i % 7), (i * 1.25)::numeric(10,2), i % 2 = 0,
               timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second', jsonb_build_object('rank', i), NULL
             FROM generate_series(1, {n}) i"
        ),
    );
}

#[test]
fn the_query_source_emits_every_row_typed() {
    const N: i64 = 5000;
    let url = pg();
    let table = unique("products");
    create_products(&url, &table, N);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: jdbc-src
parallelism: 2
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - name: products
    type: jdbc
    url_env: WEIR_TEST_PG_URL
    query: SELECT id, name, category, price, active, created, attrs, note FROM {table} ORDER BY id
    fetch_size: 700
sinks:
  - name: out
    type: filesystem
    path: {out}
    format: json
"#,
            state = dir.path().join("state").display(),
            out = out.display()
        ),
    );
    let o = run(&spec, &[], &[("WEIR_TEST_PG_URL", &url)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let counts = count_json_field(&out, "id");
    let shifted: BTreeMap<i64, usize> = counts.iter().map(|(k, v)| (k - 1, *v)).collect();
    assert_exactly_once(&shifted, N);
    let first = visible_files(&out)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .map(|l| serde_json::from_str::<serde_json::Value>(&l).unwrap())
        .find(|v| v["id"] == 3)
        .unwrap();
    assert_eq!(
        first,
        serde_json::json!({"id": 3, "name": "product 3", "category": "cat3", "price": 3.75,
            "active": false, "created": "2024-01-01T00:00:03Z", "attrs": {"rank": 3}, "note": null})
    );
}

#[test]
fn the_query_source_resumes_after_its_position() {
    use weir_runtime::api::{NodeConfig, NodeContext, Source, SourcePoll};
    let url = pg();
    let table = unique("resume");
    create_products(&url, &table, 1000);
    let cfg = NodeConfig {
        path: "sources[0]".into(),
        spec: weir_crds::NodeSpec {
            name: "src".into(),
            kind: "jdbc".into(),
            config: serde_json::json!({"url": url, "query": format!("SELECT id FROM {table} ORDER BY id"), "fetch_size": 300})
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        },
        parallelism: 2,
        checkpoint: Default::default(),
    };
    let ctx = |worker| NodeContext {
        job: "j".into(),
        node: "src".into(),
        worker,
        parallelism: 2,
        max_parallelism: 128,
        checkpoint: Default::default(),
        metrics: weir_runtime::metrics::NodeMetrics::detached(),
    };
    block_on(async {
        let restored: BTreeMap<String, serde_json::Value> =
            [("jdbc-0".to_string(), serde_json::json!(650))].into();
        let mut s = weir_runtime::connectors::jdbc::JdbcSource::new(
            cfg.resolve::<weir_runtime::connectors::jdbc::JdbcSourceConfig>()
                .unwrap(),
            cfg.name(),
        );
        s.open(&ctx(0), restored.clone()).await.unwrap();
        let mut ids = Vec::new();
        loop {
            match s.poll().await.unwrap() {
                SourcePoll::Batch(b) => {
                    ids.extend(b.records.iter().map(|r| r.fields()["id"].as_i64().unwrap()))
                }
                SourcePoll::Finished => break,
                SourcePoll::Idle => {}
            }
        }
        assert_eq!(ids, (651..=1000).collect::<Vec<_>>());
        assert_eq!(s.snapshot().unwrap()["jdbc-0"], 1000);
        // Worker 1 owns no split: it finishes at once and reports no position.
        let mut other = weir_runtime::connectors::jdbc::JdbcSource::new(
            cfg.resolve::<weir_runtime::connectors::jdbc::JdbcSourceConfig>()
                .unwrap(),
            cfg.name(),
        );
        other.open(&ctx(1), restored).await.unwrap();
        assert!(matches!(other.poll().await.unwrap(), SourcePoll::Finished));
        assert!(other.snapshot().unwrap().is_empty());
    });
}

#[test]
fn append_statement_and_explicit_sql_modes_write_every_record() {
    let url = pg();
    let (app, ups, tot) = (unique("app"), unique("ups"), unique("tot"));
    exec(
        &url,
        &format!(
            "CREATE TABLE {app} (id bigint, user_id text, n bigint);
             CREATE TABLE {ups} (user_id text PRIMARY KEY, n bigint);
             CREATE TABLE {tot} (user_id text PRIMARY KEY, total bigint)"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"id": {i}, "user": "u{}", "n": {i}}}"#, i % 10))
        .collect();
    let input = write(dir.path(), "in.jsonl", &(lines.join("\n") + "\n"));
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: jdbc-modes
checkpoint: {{ interval: 100ms, storage: {state} }}
sources:
  - {{ name: in, type: file, path: {input}, format: json, batch_size: 64 }}
sinks:
  - name: appended
    input: in
    type: jdbc
    url: "${{WEIR_TEST_PG_URL}}"
    table: {app}
    mode: append
    columns: {{ id: id, user_id: user, n: n }}
  - name: upserted_by_statements
    input: in
    type: jdbc
    url_env: WEIR_TEST_PG_URL
    table: {ups}
    copy: false
    batch_size: 7
    columns: {{ user_id: user, n: n }}
  - name: summed
    input: in
    type: jdbc
    url_env: WEIR_TEST_PG_URL
    mode: sql
    key: [user]
    sql: "INSERT INTO {tot} (user_id, total) VALUES (:user, :n) ON CONFLICT (user_id) DO UPDATE SET total = {tot}.total + EXCLUDED.total"
"#,
            state = dir.path().join("state").display(),
            input = input.display(),
        ),
    );
    let o = run(&spec, &[], &[("WEIR_TEST_PG_URL", &url)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (appended, ups_rows, totals) = block_on(async {
        let mut c = PgConnection::connect(&url).await.unwrap();
        let a: Vec<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {app} ORDER BY id")))
                .fetch_all(&mut c)
                .await
                .unwrap();
        let u: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT user_id, n FROM {ups} ORDER BY user_id"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        let t: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT user_id, total FROM {tot} ORDER BY user_id"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        (a, u, t)
    });
    assert_eq!(appended, (0..300).collect::<Vec<i64>>());
    let want_last: Vec<(String, i64)> = (0..10).map(|k| (format!("u{k}"), 290 + k)).collect();
    assert_eq!(ups_rows, want_last);
    // Explicit SQL is not deduplicated: every record adds to its key's total.
    let want_sum: Vec<(String, i64)> = (0..10)
        .map(|k| (format!("u{k}"), (0..300).filter(|i| i % 10 == k).sum()))
        .collect();
    assert_eq!(totals, want_sum);
}

/// Append, and an explicit statement (`upsert`: the database's own conflict clause) that uses
/// `:id` twice, write every record; booleans land as 1/0. The casts make MySQL's DECIMAL sums
/// integers (SQLite reads `SIGNED` as a numeric type and keeps them integers).
pub(super) fn append_and_sql_modes_write_every_record(db: &Db, upsert: &str) {
    let (events, totals) = (unique("events"), unique("totals"));
    db.exec(&format!(
        "CREATE TABLE {events} (id bigint, even boolean); \
         CREATE TABLE {totals} (k varchar(8) PRIMARY KEY, n bigint NOT NULL, c bigint NOT NULL)"
    ));
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "p.yaml",
        &format!(
            r#"name: jdbc-modes
parallelism: 2
checkpoint: {{ interval: 200ms, storage: {state} }}
sources:
  - name: gen
    type: datagen
    count: 1000
    splits: 2
    fields:
      id: {{ kind: sequence }}
transforms:
  - name: m
    type: map
    fields:
      even: "id % 2 == 0"
      k: "'k' + string(id % 10)"
sinks:
  - name: log
    type: jdbc
    input: m
    url: {url}
    table: {events}
    mode: append
    columns: [id, even]
  - name: sum
    type: jdbc
    input: m
    url: {url}
    mode: sql
    key: [k]
    sql: "INSERT INTO {totals} (k, n, c) VALUES (:k, :id, 1) {upsert}"
"#,
            state = dir.path().join("state").display(),
            url = db.url(),
        ),
    );
    restart_to_end(&spec, &[]);
    let q = |sql: String| db.query_i64(&sql);
    assert_eq!(q(format!("SELECT count(*) FROM {events}")), 1000);
    assert_eq!(
        q(format!("SELECT CAST(sum(even) AS SIGNED) FROM {events}")),
        500
    );
    assert_eq!(q(format!("SELECT count(DISTINCT id) FROM {events}")), 1000);
    assert_eq!(
        q(format!("SELECT CAST(sum(c) AS SIGNED) FROM {totals}")),
        1000
    );
    assert_eq!(
        q(format!("SELECT CAST(sum(n) AS SIGNED) FROM {totals}")),
        (0..1000).sum::<i64>()
    );
    assert_eq!(
        q(format!("SELECT count(*) FROM {totals} WHERE c = 100")),
        10
    );
}
