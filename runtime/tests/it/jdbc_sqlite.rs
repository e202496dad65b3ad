//! The `jdbc` sink on SQLite (`sqlite://path`): the Postgres sink's crash tests — kill -9 at each
//! checkpoint step and at random moments, the table read back through a SQLite connection of
//! the test's own — and settings that cannot apply to SQLite, refused by name.

use super::harness::*;
use super::jdbc::{
    append_and_sql_modes_write_every_record, crash_then_finish,
    kills_at_random_moments_then_finish, Db,
};

#[test]
fn sqlite_upsert_survives_kill_before_pre_commit() {
    crash_then_finish(&Db::sqlite(), "before_precommit", 4);
}

#[test]
fn sqlite_upsert_survives_kill_after_pre_commit() {
    crash_then_finish(&Db::sqlite(), "after_precommit", 4);
}

#[test]
fn sqlite_upsert_survives_kill_after_the_manifest() {
    crash_then_finish(&Db::sqlite(), "after_manifest", 3);
}

#[test]
fn sqlite_upsert_survives_kills_at_random_moments() {
    kills_at_random_moments_then_finish(&Db::sqlite());
}

fn spec(dir: &std::path::Path, url: &str, sink: &str) -> std::path::PathBuf {
    write(
        dir,
        "p.yaml",
        &format!(
            "name: sqlite-cfg\ncheckpoint: {{ storage: {} }}\n\
             sources: [{{name: g, type: datagen, count: 10, fields: {{seq: {{kind: sequence}}}}}}]\n\
             sinks: [{{name: db, type: jdbc, url: '{url}', {sink}}}]\n",
            dir.join("state").display()
        ),
    )
}

fn validate(spec: &std::path::Path) -> String {
    let o = weir().arg("validate").arg(spec).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn sqlite_settings_that_cannot_apply_are_refused_naming_the_field() {
    let db = Db::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    let e = validate(&spec(dir.path(), url, "table: t, copy: true"));
    assert!(e.contains("sinks[0].copy: COPY is Postgres-only"), "{e}");
    let e = validate(&spec(dir.path(), url, "table: t, username: bob"));
    assert!(
        e.contains("sinks[0].username: not used with a sqlite:// URL"),
        "{e}"
    );
    let e = validate(&spec(dir.path(), "sqlite://", "table: t"));
    assert!(
        e.contains("sinks[0].url: sqlite://: names no database file"),
        "{e}"
    );
    let e = validate(&spec(dir.path(), "oracle://h/db", "table: t"));
    assert!(
        e.contains("sinks[0].url: unsupported scheme \"oracle\""),
        "{e}"
    );

    // What only the database knows fails at start, naming the table, column or key.
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, note TEXT)");
    let start = |sink: &str, want: &str| {
        let o = run(&spec(dir.path(), url, sink), &[], &[]);
        let log = stderr(&o);
        assert!(!o.status.success() && log.contains(want), "{sink}: {log}");
    };
    start("table: nope", "\"nope\" does not exist");
    start(
        "table: t, columns: {id: seq, nothere: seq}",
        "\"nothere\" is not in \"t\"",
    );
    start(
        "table: t, key: [n], columns: {id: seq, n: seq}",
        "ON CONFLICT clause does not match",
    );
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    let o = run(
        &spec(dir.path(), &missing, "table: t, retry: {max_attempts: 1}"),
        &[],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unable to open database file"),
        "{}",
        stderr(&o)
    );
}

/// Append and an explicit statement write every record; booleans land as 1/0.
#[test]
fn sqlite_append_and_explicit_sql_modes_write_every_record() {
    append_and_sql_modes_write_every_record(
        &Db::sqlite(),
        "ON CONFLICT (k) DO UPDATE SET n = n + :id, c = c + 1",
    );
}
