//! The `jdbc` sink on MySQL/MariaDB (`mysql://`), against the MariaDB of
//! `e2e/services/mariadb.sh`: the Postgres sink's crash tests (kill -9 at each checkpoint step
//! and at random moments), a database restart mid-run, concurrent writers of overlapping keys,
//! rows the database rejects, the append and explicit-statement modes, and settings that do not
//! fit named by field — at start and by `weir validate --connect`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection};

use super::harness::*;
use super::jdbc::{
    append_and_sql_modes_write_every_record, bad_input_spec, block_on, crash_then_finish,
    kills_at_random_moments_then_finish, overlapping_keys_never_deadlock, unique,
    upsert_through_an_outage, Db, Overlap,
};

#[test]
fn mysql_upsert_survives_kill_before_pre_commit() {
    crash_then_finish(&Db::mysql(), "before_precommit", 4);
}

#[test]
fn mysql_upsert_survives_kill_after_pre_commit() {
    crash_then_finish(&Db::mysql(), "after_precommit", 4);
}

#[test]
fn mysql_upsert_survives_kill_after_the_manifest() {
    crash_then_finish(&Db::mysql(), "after_manifest", 3);
}

#[test]
fn mysql_upsert_survives_kills_at_random_moments() {
    kills_at_random_moments_then_finish(&Db::mysql());
}

/// `mariadb.sh restart` (a clean shutdown and start, ~2 s) mid-run, within the sink's retries:
/// the writers' connections die, the batches are retried on new ones, and the table ends exact.
#[test]
fn mysql_upsert_rides_out_a_database_restart() {
    let server = PrivateService::up("mariadb", "MYSQL_URL", "restart", &[]);
    let log = upsert_through_an_outage(
        &Db::Mysql(server.value.clone()),
        60_000,
        20_000,
        Duration::from_secs(1),
        || server.must("restart"),
    );
    assert!(
        log.contains("retrying"),
        "the restart never hit the sink (no retry logged):\n{log}"
    );
}

/// Two workers upserting the same keys, meeting them in opposite orders (as the Postgres test:
/// worker 0 goes up through the keys, worker 1 comes down), two writers each. Each batch writes
/// its rows in key order in READ COMMITTED, so InnoDB's row locks are taken in one global order
/// and no batch is ever retried.
#[test]
fn mysql_parallel_upserts_of_overlapping_keys_never_deadlock() {
    overlapping_keys_never_deadlock(&Db::mysql(), "varchar(16)", Overlap::Upsert(""));
}

/// The same through a statement of the user's that adds each record's value to its key's
/// total (`mode: sql`, `key: [k]`): rows go in the order of the `key` fields.
#[test]
fn mysql_parallel_statements_of_overlapping_keys_never_deadlock() {
    overlapping_keys_never_deadlock(
        &Db::mysql(),
        "varchar(16)",
        Overlap::AddUp("ON DUPLICATE KEY UPDATE v = v + VALUES(v)"),
    );
}

fn create_checked(db: &Db, table: &str) {
    db.exec(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, n bigint CHECK (n >= 0), at datetime(3))"
    ));
}

/// A missing field and a wrong type are caught before sending; a CHECK violation (MariaDB error
/// 4025) is found by the row-by-row retry. With `on_error: skip` only those rows are missing.
#[test]
fn mysql_bad_rows_are_skipped_and_the_rest_of_the_batch_lands() {
    let db = Db::mysql();
    let table = unique("bad_skip");
    create_checked(&db, &table);
    let dir = tempfile::tempdir().unwrap();
    let spec = bad_input_spec(dir.path(), db.url(), &table, "skip");
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert!(o.status.success(), "{}\n{log}", o.status);
    let ids: Vec<i64> = block_on(async {
        let mut c = MySqlConnection::connect(db.url()).await.unwrap();
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {table} ORDER BY id")))
            .fetch_all(&mut c)
            .await
            .unwrap()
    });
    let want: Vec<i64> = (0..200).filter(|i| ![50, 60, 70].contains(i)).collect();
    assert_eq!(ids, want);
    assert!(log.contains("the field is missing"), "{log}");
    assert!(log.contains("expected an integer"), "{log}");
    assert!(
        log.contains("CONSTRAINT") && log.contains("failed"),
        "{log}"
    );
    assert!(
        log.contains(r#""id":"70""#) || log.contains(r#"\"id\":\"70\""#),
        "the rejected row is named: {log}"
    );
    // Times went in as UTC DATETIME: record 1's ts is START + 1 ms.
    assert_eq!(
        db.query_i64(&format!(
            "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', at) DIV 1000 AS SIGNED) FROM {table} WHERE id = 1"
        )),
        1_704_067_200_001
    );
}

/// Append, and an explicit statement that uses `:id` twice (MySQL's `?` is bound once per
/// occurrence); booleans land in a BOOLEAN (TINYINT(1)) column as 1/0.
#[test]
fn mysql_append_and_explicit_sql_modes_write_every_record() {
    append_and_sql_modes_write_every_record(
        &Db::mysql(),
        "ON DUPLICATE KEY UPDATE n = n + :id, c = c + 1",
    );
}

fn spec(dir: &Path, url: &str, sink: &str) -> PathBuf {
    write(
        dir,
        "p.yaml",
        &format!(
            "name: mysql-cfg\ncheckpoint: {{ storage: {} }}\n\
             sources: [{{name: g, type: datagen, count: 10, fields: {{seq: {{kind: sequence}}}}}}]\n\
             sinks: [{{name: db, type: jdbc, url: '{url}', {sink}}}]\n",
            dir.join("state").display()
        ),
    )
}

#[test]
fn mysql_settings_that_do_not_fit_are_refused_naming_the_field() {
    let db = Db::mysql();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    let validate = |spec: &Path| {
        let o = weir().arg("validate").arg(spec).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        stderr(&o)
    };
    let e = validate(&spec(dir.path(), url, "table: t, copy: true"));
    assert!(e.contains("sinks[0].copy: COPY is Postgres-only"), "{e}");
    let e = validate(&spec(dir.path(), "mysql://bob:hunter2@h:3306", "table: t"));
    assert!(
        e.contains("sinks[0].url: ") && e.contains("names no database"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");

    // What only the database knows fails at start, naming the table, column or key.
    let table = unique("cfg");
    db.exec(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, n bigint NOT NULL, note text)"
    ));
    let start = |sink: &str, want: &str| {
        let o = run(&spec(dir.path(), url, sink), &[], &[]);
        let log = stderr(&o);
        assert!(!o.status.success() && log.contains(want), "{sink}: {log}");
    };
    start("table: no_such_table", "`no_such_table` does not exist");
    start(
        &format!("table: {table}, columns: {{id: seq, nothere: seq}}"),
        "column \"nothere\" is not in",
    );
    start(
        &format!("table: {table}, key: [n], columns: {{id: seq, n: seq}}"),
        "key (n) is not the primary key or a unique index",
    );
    // A refused login names the URL without its password and fails at once.
    let denied = url.replacen("mysql://root@", "mysql://bob:hunter2@", 1);
    let o = run(
        &spec(
            dir.path(),
            &denied,
            "table: t, retry: {max_attempts: 2, backoff: 10ms}",
        ),
        &[],
        &[],
    );
    let log = stderr(&o);
    assert!(!o.status.success());
    assert!(
        !log.contains("hunter2") && log.contains("bob:***@"),
        "{log}"
    );
    assert!(log.contains("Access denied"), "{log}");
}

/// `weir validate --connect` reads the table, checks the key against its unique indexes and
/// prepares the statement, writing nothing; a misfit exits 2 naming the sink.
#[test]
fn mysql_validate_connect_checks_the_table() {
    let db = Db::mysql();
    let table = unique("pre");
    db.exec(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name varchar(20), UNIQUE KEY by_name (name))"
    ));
    let dir = tempfile::tempdir().unwrap();
    let connect = |sink: &str| validate_connect(&spec(dir.path(), db.url(), sink));
    let (code, out, err) = connect(&format!("table: {table}, columns: {{id: seq, name: seq}}"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("sinks[0] (db): mysql://") && out.contains("2 columns written (upsert)"),
        "{out}"
    );
    // A unique index other than the primary key is a conflict target too.
    let (code, out, err) = connect(&format!(
        "table: {table}, key: [name], columns: {{id: seq, name: seq}}"
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    for (sink, want) in [
        (
            format!("table: {table}, columns: [id, colour]"),
            "\"colour\" is not in",
        ),
        (
            format!("table: {table}, key: [id, name], columns: [id, name]"),
            "is not the primary key or a unique index",
        ),
        ("table: no_such_table".to_string(), "does not exist"),
    ] {
        let (code, out, err) = connect(&sink);
        assert_eq!(code, 2, "{sink}: {out}\n{err}");
        assert!(
            err.contains("sinks[0]") && err.contains(want),
            "{want:?} not in:\n{err}"
        );
    }
    assert_eq!(db.query_i64(&format!("SELECT count(*) FROM {table}")), 0);
}
