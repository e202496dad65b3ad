//! kill -9 at every 2PC step and at random moments, datagen → Kafka and Kafka → Kafka, two
//! workers; and a rescale through a savepoint with transactions left open by a killed run.

use std::path::PathBuf;
use std::time::Duration;

use super::kafka::*;
use crate::harness::*;

const N: i64 = 20_000;
const CHECKPOINTS: &str = "interval: 200ms, timeout: 30s";

#[derive(Clone, Copy)]
enum Input {
    Datagen,
    Kafka,
    /// Kafka → Kafka with each message read whole as text (`format: string`) and sent bare
    /// (`value_field`), the pass-through that never parses (Flink's `raw` format). The output
    /// is read as JSON objects, so a value re-encoded as a JSON string fails the test.
    KafkaText,
}

struct Job {
    _dir: tempfile::TempDir,
    /// The job the test kills: datagen at 10,000 records/s, or a Kafka source reading
    /// unbounded while `feed` writes its input at that pace.
    live: PathBuf,
    /// The same job run to the end (for a Kafka source: to the offsets found at its start).
    spec: PathBuf,
    bootstrap: String,
    input: Option<String>,
    out: String,
}

impl Job {
    /// Starts writing the Kafka input (nothing to write for datagen).
    fn feed(&self) -> Option<std::thread::JoinHandle<()>> {
        let topic = self.input.as_ref()?;
        Some(produce_json_slowly(
            &self.bootstrap,
            topic,
            0..N,
            100,
            10_000,
        ))
    }
}

fn job(input: Input) -> Job {
    let bootstrap = bootstrap();
    let out = unique("ks-out");
    create_topic(&bootstrap, &out, 4);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("eo");
    let sink = match input {
        Input::KafkaText => format!(
            "    bootstrap_servers: {bootstrap}\n    topic: {out}\n    value_field: line\n    delivery: exactly-once"
        ),
        _ => eo_sink(&bootstrap, &out),
    };
    let (live, spec, input) = match input {
        Input::Datagen => {
            let s = spec(
                dir.path(),
                &name,
                2,
                CHECKPOINTS,
                &datagen(N, 10_000),
                &sink,
            );
            (s.clone(), s, None)
        }
        Input::Kafka | Input::KafkaText => {
            let topic = unique("ks-in");
            create_topic(&bootstrap, &topic, 4);
            let mut source = kafka_source(&bootstrap, &topic);
            if matches!(input, Input::KafkaText) {
                source.push_str("\n    format: string\n    value_field: line");
            }
            let bounded = spec(dir.path(), &name, 2, CHECKPOINTS, &source, &sink);
            // The same job and state, reading on past the offsets found at start.
            let text = std::fs::read_to_string(&bounded).unwrap();
            let unbounded = text.replace("\n    stop_at: latest", "");
            assert_ne!(text, unbounded);
            let live = dir.path().join(format!("{name}-live.yaml"));
            std::fs::write(&live, unbounded).unwrap();
            (live, bounded, Some(topic))
        }
    };
    Job {
        _dir: dir,
        live,
        spec,
        bootstrap,
        input,
        out,
    }
}

/// Crashes at `point`, restarts; returns the job and the restart's log.
///
/// A crash that came too late or too early would prove nothing, so it is tried again with a
/// fresh job, at most three times:
/// - too late: the whole input was already committed. It happens when the sink starts so slowly
///   (a broker busy with the other tests) that the first checkpoints cover all of the input;
/// - too early, for `after_manifest`: the checkpoint's transactions held no record yet (the
///   source had not fetched any), so recovery has nothing to re-commit. Its records are then
///   visible to a read_uncommitted reader and not yet to a read_committed one.
fn crash_then_finish(input: Input, point: &str, hit: u32) -> (Job, String) {
    let mut attempt = 1;
    let j = loop {
        let j = job(input);
        let feed = j.feed();
        run_until_killed(&j.live, Kill::At(point, hit));
        let read = |isolation| read_ids(&j.bootstrap, &j.out, isolation, 0, Duration::from_secs(2));
        let committed = read(Isolation::Committed).len();
        let in_flight = point != "after_manifest" || read(Isolation::Uncommitted).len() > committed;
        if let Some(f) = feed {
            f.join().unwrap();
        }
        let why = if (committed as i64) >= N {
            "came after the input was all committed"
        } else if !in_flight {
            "came before its checkpoint held any record"
        } else {
            break j;
        };
        assert!(
            attempt < 3,
            "{point}:{hit} {why}, {attempt} times: the test would prove nothing"
        );
        eprintln!("{point}:{hit} {why}; trying again");
        attempt += 1;
    };
    // The sink's info lines say what the recovery re-committed or aborted.
    let log = weir_job(&j.spec)
        .env(
            "WEIR_LOG",
            "warn,weir_runtime::connectors::kafka::sink=info",
        )
        .restart_to_end();
    assert_topic_exactly_once(&j.bootstrap, &j.out, N);
    (j, log)
}

const RECOMMITTED: &str = "re-committed a transaction the crash left uncommitted";

#[test]
fn datagen_kill_before_pre_commit() {
    crash_then_finish(Input::Datagen, "before_precommit", 4);
}

/// Pre-committed (flushed) records of the killed run are in the log but aborted: a
/// read_uncommitted consumer sees them twice, a read_committed one once.
#[test]
fn datagen_kill_after_pre_commit_aborts_the_flushed_transaction() {
    let (j, _) = crash_then_finish(Input::Datagen, "after_precommit", 4);
    let dups = uncommitted_duplicates(&j.bootstrap, &j.out, N);
    assert!(
        dups > 0,
        "read_uncommitted should see the aborted records of the killed run"
    );
}

/// The checkpoint is durable but its transactions were never committed: recovery re-commits
/// them from the stored producer id and epoch.
#[test]
fn datagen_kill_after_the_manifest_before_commit() {
    let (_, log) = crash_then_finish(Input::Datagen, "after_manifest", 4);
    assert!(
        log.contains(RECOMMITTED),
        "recovery re-committed nothing:\n{log}"
    );
}

#[test]
fn datagen_kill_after_commit() {
    crash_then_finish(Input::Datagen, "after_commit", 4);
}

#[test]
fn kafka_to_kafka_kill_before_pre_commit() {
    crash_then_finish(Input::Kafka, "before_precommit", 3);
}

#[test]
fn kafka_to_kafka_kill_after_pre_commit() {
    crash_then_finish(Input::Kafka, "after_precommit", 3);
}

#[test]
fn kafka_to_kafka_kill_after_the_manifest_before_commit() {
    let (_, log) = crash_then_finish(Input::Kafka, "after_manifest", 3);
    assert!(
        log.contains(RECOMMITTED),
        "recovery re-committed nothing:\n{log}"
    );
}

#[test]
fn kafka_to_kafka_as_text_kill_after_the_manifest_before_commit() {
    let (_, log) = crash_then_finish(Input::KafkaText, "after_manifest", 3);
    assert!(
        log.contains(RECOMMITTED),
        "recovery re-committed nothing:\n{log}"
    );
}

#[test]
fn kafka_to_kafka_kill_after_commit() {
    crash_then_finish(Input::Kafka, "after_commit", 3);
}

fn kill_at_random_moments(input: Input) {
    let j = job(input);
    let feed = j.feed();
    let window = ms(300)..ms(1200);
    let kills = run_until_killed(&j.live, Kill::AtRandom { runs: 4, window }).kills;
    assert!(
        kills >= 2,
        "only {kills} of 4 runs were still going when killed"
    );
    if let Some(f) = feed {
        f.join().unwrap();
    }
    restart_to_end(&j.spec, &[]);
    assert_topic_exactly_once(&j.bootstrap, &j.out, N);
}

#[test]
fn datagen_kill_at_random_moments() {
    kill_at_random_moments(Input::Datagen);
}

#[test]
fn kafka_to_kafka_kill_at_random_moments() {
    kill_at_random_moments(Input::Kafka);
}

/// Takes a savepoint of the running job; returns its path.
fn take_savepoint(job: &Running) -> String {
    let o = job.savepoint(false);
    assert!(o.status.success(), "savepoint failed: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The killed run must have left records in open transactions, or the test proves nothing.
fn assert_open_transactions_left(bootstrap: &str, out: &str) {
    let all = read_ids(
        bootstrap,
        out,
        Isolation::Uncommitted,
        0,
        Duration::from_secs(2),
    );
    let committed = read_ids(
        bootstrap,
        out,
        Isolation::Committed,
        0,
        Duration::from_secs(2),
    );
    assert!(
        all.len() > committed.len(),
        "the killed run should have left records in open transactions ({} written, {} committed)",
        all.len(),
        committed.len()
    );
}

/// Two workers take a savepoint and are killed with transactions open under their ids; the
/// job restarts from the savepoint on one worker, which must re-commit both workers'
/// savepoint transactions (already committed: idempotent) and abort what worker 1 left open,
/// or read_committed consumers would stall behind it.
#[test]
fn rescale_two_to_one_aborts_the_old_workers_open_transactions() {
    let bootstrap = bootstrap();
    let out = unique("ks-out");
    create_topic(&bootstrap, &out, 4);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("rs");
    // No periodic checkpoint during the test: the savepoint is the only one.
    let cp = "interval: 40s, timeout: 30s";
    let sink = eo_sink(&bootstrap, &out);
    let p2 = spec(dir.path(), &name, 2, cp, &datagen(N, 5_000), &sink);
    let p1 = spec(dir.path(), &name, 1, cp, &datagen(N, 5_000), &sink);
    let job = Running::start(&p2, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let sp = take_savepoint(&job);
    std::thread::sleep(Duration::from_millis(800));
    assert!(job.kill9(), "the job ended before it was killed");
    assert_open_transactions_left(&bootstrap, &out);
    restart_to_end(&p1, &["--from-savepoint", &sp]);
    assert_topic_exactly_once(&bootstrap, &out, N);
}

/// Rescale up, then a crash before the new parallelism's first checkpoint: the restart from
/// the old savepoint at the old parallelism finds no state naming workers 1 and 2, so it
/// probes their ids (Flink's rule) and aborts what they left open; otherwise read_committed
/// consumers would stall behind those transactions until the broker times them out.
#[test]
fn rescale_up_crash_then_restart_at_the_old_parallelism_aborts_the_new_workers_transactions() {
    let bootstrap = bootstrap();
    let out = unique("ks-out");
    create_topic(&bootstrap, &out, 4);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("ru");
    let cp = "interval: 40s, timeout: 30s";
    let sink = eo_sink(&bootstrap, &out);
    let p1 = spec(dir.path(), &name, 1, cp, &datagen(N, 5_000), &sink);
    let p3 = spec(dir.path(), &name, 3, cp, &datagen(N, 5_000), &sink);
    let job = Running::start(&p1, &[]);
    std::thread::sleep(Duration::from_millis(1000));
    let sp = take_savepoint(&job);
    assert!(job.kill9(), "the job ended before it was killed");
    // Three workers write into open transactions; none of their checkpoints completes.
    let up = Running::start(&p3, &["--from-savepoint", &sp]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(up.kill9(), "the rescaled job ended before it was killed");
    assert_open_transactions_left(&bootstrap, &out);
    restart_to_end(&p1, &["--from-savepoint", &sp]);
    assert_topic_exactly_once(&bootstrap, &out, N);
}
