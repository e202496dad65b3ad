//! Pub/Sub → files, exactly-once: the job is killed (SIGKILL) at a checkpoint step, at random,
//! or right after it acknowledged a completed checkpoint's messages (so the acknowledgements
//! are lost and the messages come again), restarted, and run until the subscription is drained;
//! every id must be in the files once, each message id once.

use std::time::Duration;

use super::emulator::*;
use crate::harness::*;

const N: i64 = 2_000;
/// Messages of a crash at a checkpoint step: the emulator hands a stream at most 100 messages
/// every 50 ms, so reading them takes 5 s at least, well past a fourth checkpoint at 300 ms
/// (with 2,000, a run on a busy machine had committed them all before its fourth).
const CRASH_N: i64 = 10_000;

fn crash_then_finish(test: &str, point: &str, hit: u32) -> Option<String> {
    let host = emulator(test)?;
    let dir = tempfile::tempdir().unwrap();
    let id = unique(point);
    create(&host, &id, 10, false);
    publish_ids(&host, &id, 0..CRASH_N, 0);
    let spec = spec(
        dir.path(),
        &host,
        &id,
        1,
        "300ms",
        "    stop_after_idle: 10s",
    );
    run_until_killed(&spec, Kill::At(point, hit));
    let out = dir.path().join("out");
    let partial = count_json_field(&out, "id");
    assert!(
        (partial.len() as i64) < CRASH_N && partial.values().all(|c| *c == 1),
        "{point}:{hit}: the crash came part way, with no duplicates ({} ids)",
        partial.len()
    );
    let log = run_until_drained(&host, &id, &spec, &out, CRASH_N);
    assert_once(&out, CRASH_N);
    Some(log)
}

/// One crash per checkpoint step, each with its own subscription, run side by side (most of the
/// time is each run's idle end).
#[test]
fn kill_at_each_checkpoint_step_delivers_every_message_once() {
    let steps = [
        ("before_precommit", 4),
        ("after_precommit", 4),
        ("before_manifest", 4),
        ("after_manifest", 4),
        ("after_commit", 4),
    ];
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = steps
            .iter()
            .map(|(point, hit)| {
                (
                    point,
                    s.spawn(move || {
                        crash_then_finish(
                            "kill_at_each_checkpoint_step_delivers_every_message_once",
                            point,
                            *hit,
                        )
                    }),
                )
            })
            .collect();
        runs.into_iter()
            .filter_map(|(point, h)| {
                h.join().err().map(|e| {
                    let why = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("{point}: {why}")
                })
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The acknowledgements of a completed checkpoint die with the process: every message of that
/// checkpoint is delivered again (what the killed run held is handed out again by the drain),
/// and dropped by its id restored from the checkpoint.
#[test]
fn forced_redelivery_after_lost_acknowledgements_is_dropped() {
    let Some(log) = crash_then_finish(
        "forced_redelivery_after_lost_acknowledgements_is_dropped",
        "after_source_ack",
        3,
    ) else {
        return;
    };
    let s = summary(&log);
    assert!(
        s["deduplicated"] > 0 && s["redelivered"] >= s["deduplicated"],
        "the lost acknowledgements' messages were not seen again: {s:?}"
    );
}

#[test]
fn kill_repeatedly_at_random_moments() {
    let Some(host) = emulator("kill_repeatedly_at_random_moments") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let id = unique("random");
    create(&host, &id, 10, false);
    publish_ids(&host, &id, 0..N, 0);
    let spec = spec(
        dir.path(),
        &host,
        &id,
        1,
        "200ms",
        "    stop_after_idle: 10s",
    );
    let window = ms(300)..ms(1000);
    let kills = run_until_killed(&spec, Kill::AtRandom { runs: 3, window }).kills;
    assert_eq!(kills, 3, "the job ended by itself before a kill");
    let out = dir.path().join("out");
    assert!(
        count_json_field(&out, "id").values().all(|c| *c == 1),
        "duplicates after the kills"
    );
    run_until_drained(&host, &id, &spec, &out, N);
    assert_once(&out, N);
}

/// A 10 s ack deadline and 30 s between checkpoints: every message waits about 30 s for its
/// acknowledgement, its lease extended meanwhile, and none is delivered twice.
#[test]
fn leases_outlive_a_checkpoint_interval_three_times_the_ack_deadline() {
    let Some(host) = emulator("leases_outlive_a_checkpoint_interval_three_times_the_ack_deadline")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let id = unique("lease");
    create(&host, &id, 10, false);
    publish_ids(&host, &id, 0..500, 0);
    let spec = spec(dir.path(), &host, &id, 1, "30s", "    stop_after_idle: 32s");
    let log = run_to_end(&spec);
    assert_once(&dir.path().join("out"), 500);
    let s = summary(&log);
    assert_eq!(s["redelivered"], 0, "{s:?}");
    assert_eq!(s["acked"], 500, "{s:?}");
    assert_eq!(
        s["lease_extended"], 500,
        "every message was held past its first lease: {s:?}"
    );
}

/// The drain's premise ([`release_leases`]): it ends the streams an earlier client left
/// behind, and hands out again every unacknowledged message, leased or not, and no acknowledged
/// one. 100 messages acknowledged, 100 leased by a pull, 100 taken by a stream whose client has
/// gone: the release must bring back exactly the last 200.
#[test]
fn release_hands_out_again_exactly_the_unacknowledged_messages() {
    let Some(host) = emulator("release_hands_out_again_exactly_the_unacknowledged_messages") else {
        return;
    };
    let id = unique("release");
    create(&host, &id, 10, false);
    publish_ids(&host, &id, 0..300, 0);
    let acked = rest_pull(&host, &id);
    let acks: Vec<String> = acked.iter().map(|(_, a)| a.clone()).collect();
    rest_acknowledge(&host, &id, &acks);
    let leased = rest_pull(&host, &id);
    assert_eq!(
        (acked.len(), leased.len()),
        (100, 100),
        "the emulator's pulls"
    );
    abandon_a_stream(&host, &id);
    release_leases(&host, &id);
    // A stream left alive would take whatever is free within 50 ms.
    std::thread::sleep(Duration::from_millis(300));
    let mut back = Vec::new();
    loop {
        let msgs = rest_pull(&host, &id);
        if msgs.is_empty() {
            break;
        }
        back.extend(msgs.into_iter().map(|(i, _)| i));
    }
    back.sort_unstable();
    let mut unacknowledged: Vec<i64> = (0..300)
        .filter(|i| !acked.iter().any(|(a, _)| a == i))
        .collect();
    unacknowledged.sort_unstable();
    assert_eq!(
        back, unacknowledged,
        "what came back after the release (left), every unacknowledged id (right)"
    );
}
