//! Broker look-ups (blocking librdkafka calls, run on the blocking pool): topics and their
//! partitions, and where partitions start or end. The choices over their results are pure.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::super::client::KafkaConsumer;
use super::config::{Reset, StartingOffsets, TopicSelection};
use super::splits::split_id;

/// One topic as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<i32>,
    /// A topic-level error (unknown, not authorized, leader not yet elected).
    pub error: Option<RDKafkaRespErr>,
}

/// Every topic of the cluster. Fails with a message naming `bootstrap_servers` when the brokers
/// cannot be reached within `timeout`.
pub fn topics(
    c: &KafkaConsumer,
    bootstrap: &str,
    timeout: Duration,
) -> Result<Vec<TopicInfo>, String> {
    let md = c.fetch_metadata(None, timeout).map_err(|e| {
        // librdkafka says only "broker transport failure"; its last error says why (a refused
        // login, an untrusted certificate), once the consumer's queue is served. Messages never
        // come through that queue: every assigned partition has its own.
        let _ = c.poll(Duration::from_millis(200));
        let why = c
            .context()
            .last_error()
            .map(|l| format!("; last client error: {l}"))
            .unwrap_or_default();
        format!(
            "could not read topic metadata from bootstrap_servers {bootstrap:?} within {}: {e}{why} \
             (is the address right and the broker reachable? security settings go in `properties`)",
            humantime::format_duration(timeout)
        )
    })?;
    Ok(md
        .topics()
        .iter()
        .map(|t| TopicInfo {
            name: t.name().to_string(),
            partitions: t.partitions().iter().map(|p| p.id()).collect(),
            error: t.error(),
        })
        .collect())
}

/// Every partition of the selected topics, sorted. A listed topic that is missing is an error
/// naming it; topics with a transient error (leader election) are skipped here and picked up by
/// a later look-up.
pub fn select(all: &[TopicInfo], selection: &TopicSelection) -> Result<Vec<(String, i32)>, String> {
    if let TopicSelection::List(list) = selection {
        for want in list {
            match all.iter().find(|t| &t.name == want) {
                None => {
                    return Err(format!(
                        "topic {want:?} does not exist (or this client may not describe it)"
                    ))
                }
                Some(TopicInfo { error: Some(e), .. })
                    if *e == RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART =>
                {
                    return Err(format!("topic {want:?} does not exist"))
                }
                Some(TopicInfo { error: Some(e), .. })
                    if *e == RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED =>
                {
                    return Err(format!("not authorized to read topic {want:?}"))
                }
                Some(_) => {}
            }
        }
    }
    let mut out: Vec<(String, i32)> = all
        .iter()
        .filter(|t| t.error.is_none() && selection.matches(&t.name))
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p)))
        .collect();
    out.sort();
    Ok(out)
}

/// Listed topics that exist but are not usable yet (leader election after creation): worth
/// waiting for at start, so that their partitions start where `starting_offsets` says.
pub fn unavailable(all: &[TopicInfo], selection: &TopicSelection) -> Vec<String> {
    let TopicSelection::List(list) = selection else {
        return Vec::new();
    };
    all.iter()
        .filter(|t| list.contains(&t.name))
        .filter_map(|t| {
            let e = t.error?;
            let permanent = e == RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                || e == RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
            (!permanent).then(|| format!("{} ({e:?})", t.name))
        })
        .collect()
}

fn tpl(
    parts: &[(String, i32)],
    offset: impl Fn(&str, i32) -> Offset,
) -> Result<TopicPartitionList, String> {
    let mut l = TopicPartitionList::with_capacity(parts.len());
    for (t, p) in parts {
        l.add_partition_offset(t, *p, offset(t, *p))
            .map_err(|e| format!("{}: {e}", split_id(t, *p)))?;
    }
    Ok(l)
}

/// The offset each partition holds in `list`, in the order of `parts`.
fn offsets_in(list: &TopicPartitionList, parts: &[(String, i32)]) -> Result<Vec<Offset>, String> {
    parts
        .iter()
        .map(|(t, p)| {
            let e = list
                .find_partition(t, *p)
                .ok_or_else(|| format!("{}: missing from the broker's answer", split_id(t, *p)))?;
            if let Err(err) = e.error() {
                return Err(format!("{}: {err}", split_id(t, *p)));
            }
            Ok(e.offset())
        })
        .collect()
}

fn watermarks(
    c: &KafkaConsumer,
    parts: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<(i64, i64)>, String> {
    parts
        .iter()
        .map(|(t, p)| {
            c.fetch_watermarks(t, *p, timeout)
                .map_err(|e| format!("{}: reading its offsets: {e}", split_id(t, *p)))
        })
        .collect()
}

/// The end offset (high watermark) of each partition now.
pub fn end_offsets(
    c: &KafkaConsumer,
    parts: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<i64>, String> {
    Ok(watermarks(c, parts, timeout)?
        .into_iter()
        .map(|w| w.1)
        .collect())
}

/// The first offset each partition is read from under `how`.
pub fn start_offsets(
    c: &KafkaConsumer,
    parts: &[(String, i32)],
    how: &StartingOffsets,
    group: &str,
    timeout: Duration,
) -> Result<Vec<i64>, String> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    match how {
        StartingOffsets::Earliest => Ok(watermarks(c, parts, timeout)?
            .into_iter()
            .map(|w| w.0)
            .collect()),
        StartingOffsets::Latest => Ok(watermarks(c, parts, timeout)?
            .into_iter()
            .map(|w| w.1)
            .collect()),
        StartingOffsets::Specific(map) => {
            let lows = watermarks(c, parts, timeout)?;
            Ok(parts
                .iter()
                .zip(lows)
                .map(|((t, p), (low, _))| map.get(&split_id(t, *p)).copied().unwrap_or(low))
                .collect())
        }
        StartingOffsets::Timestamp(ts) => {
            let asked = tpl(parts, |_, _| Offset::Offset(*ts))?;
            let found = c
                .offsets_for_times(asked, timeout)
                .map_err(|e| format!("looking up offsets for timestamp {ts}: {e}"))?;
            let offsets = offsets_in(&found, parts)?;
            let ends = watermarks(c, parts, timeout)?;
            offsets
                .into_iter()
                .zip(ends)
                .zip(parts)
                .map(|((o, (_, high)), (t, p))| match o {
                    Offset::Offset(n) => Ok(n),
                    // No record at or after the time: start at the end.
                    Offset::End | Offset::Invalid => Ok(high),
                    other => Err(format!(
                        "{}: unexpected offset {other:?} for timestamp {ts}",
                        split_id(t, *p)
                    )),
                })
                .collect()
        }
        StartingOffsets::Committed { reset } => {
            let asked = tpl(parts, |_, _| Offset::Invalid)?;
            let found = c
                .committed_offsets(asked, timeout)
                .map_err(|e| committed_error(group, e))?;
            let committed = offsets_in(&found, parts)?;
            let marks = watermarks(c, parts, timeout)?;
            let mut out = Vec::with_capacity(parts.len());
            for ((o, (low, high)), (t, p)) in committed.into_iter().zip(marks).zip(parts) {
                out.push(match (o, reset) {
                    (Offset::Offset(n), _) => n,
                    (_, Reset::Earliest) => low,
                    (_, Reset::Latest) => high,
                    (_, Reset::None) => {
                        return Err(format!(
                            "group {group:?} has no committed offset for {} (starting_offsets: committed with reset: none)",
                            split_id(t, *p)
                        ))
                    }
                });
            }
            Ok(out)
        }
    }
}

fn committed_error(group: &str, e: KafkaError) -> String {
    format!("reading the committed offsets of group {group:?}: {e}")
}

/// Where each owned partition starts: its checkpointed position when it has one, else the
/// configured starting offsets (`fresh`), else — for partitions that appeared since the
/// checkpoint — the earliest offset, so nothing written to them in between is skipped.
pub fn start_rule(restored: bool, configured: &StartingOffsets) -> &StartingOffsets {
    static EARLIEST: StartingOffsets = StartingOffsets::Earliest;
    if restored {
        &EARLIEST
    } else {
        configured
    }
}

/// The partitions in `selected` that this worker owns and does not read yet.
pub fn new_owned(
    selected: &[(String, i32)],
    known: &BTreeSet<String>,
    owns: impl Fn(&str, i32) -> bool,
) -> Vec<(String, i32)> {
    selected
        .iter()
        .filter(|(t, p)| owns(t, *p) && !known.contains(&split_id(t, *p)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn topic(name: &str, n: i32, error: Option<RDKafkaRespErr>) -> TopicInfo {
        TopicInfo {
            name: name.into(),
            partitions: (0..n).collect(),
            error,
        }
    }

    #[test]
    fn a_missing_listed_topic_is_named() {
        let all = vec![topic("a", 2, None)];
        let e = select(&all, &TopicSelection::List(vec!["a".into(), "b".into()])).unwrap_err();
        assert!(e.contains("\"b\" does not exist"), "{e}");
        let unknown = vec![topic(
            "b",
            0,
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART),
        )];
        assert!(select(&unknown, &TopicSelection::List(vec!["b".into()])).is_err());
    }

    #[test]
    fn a_pattern_selects_matching_healthy_topics() {
        let all = vec![
            topic("orders-b", 2, None),
            topic("orders-a", 1, None),
            topic("payments", 3, None),
            topic(
                "orders-c",
                1,
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE),
            ),
        ];
        let sel = TopicSelection::Pattern(Regex::new("^(?:orders-.*)$").unwrap());
        assert_eq!(
            select(&all, &sel).unwrap(),
            vec![
                ("orders-a".into(), 0),
                ("orders-b".into(), 0),
                ("orders-b".into(), 1)
            ]
        );
        assert_eq!(select(&[], &sel).unwrap(), vec![]);
    }

    #[test]
    fn only_unknown_owned_partitions_are_new() {
        let selected = vec![
            ("t".to_string(), 0),
            ("t".to_string(), 1),
            ("t".to_string(), 2),
        ];
        let known: BTreeSet<String> = ["t/0".to_string()].into();
        let new = new_owned(&selected, &known, |_, p| p != 2);
        assert_eq!(new, vec![("t".to_string(), 1)]);
    }

    #[test]
    fn after_a_restore_unknown_partitions_start_at_the_beginning() {
        let latest = StartingOffsets::Latest;
        assert_eq!(start_rule(false, &latest), &StartingOffsets::Latest);
        assert_eq!(start_rule(true, &latest), &StartingOffsets::Earliest);
    }
}
