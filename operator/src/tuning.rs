//! Kafka transaction timeout tuning. An exactly-once Kafka sink keeps a transaction open from one
//! checkpoint to the commit after the next, so the broker must not abort it sooner than
//! `checkpoint interval + checkpoint timeout` plus a margin; and the broker refuses any
//! `transaction.timeout.ms` above its own `transaction.max.timeout.ms`. The runtime's Kafka sink
//! takes the timeout as `transaction_timeout` (a duration) or `properties."transaction.timeout.ms"`
//! and is exactly-once with `delivery: exactly-once`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use weir_crds::{CheckpointMode, PipelineSpec};

pub const TRANSACTION_TIMEOUT: &str = "transaction.timeout.ms";
/// Kafka's default `transaction.max.timeout.ms` (15 minutes), assumed when nothing else is known.
pub const DEFAULT_BROKER_MAX_MS: u64 = 900_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// The operator set the timeout.
    Set { sink: String, ms: u64 },
    /// The user's value is enough.
    Kept { sink: String, ms: u64 },
    /// The user's value is too low: transactions would be aborted before their commit.
    TooLow { sink: String, ms: u64, needed: u64 },
    /// The value (set or needed) is above what the broker allows.
    AboveBrokerMax {
        sink: String,
        ms: u64,
        max: u64,
        /// What the checkpoint settings need.
        needed: u64,
    },
}

impl Tuning {
    pub fn sink(&self) -> &str {
        match self {
            Tuning::Set { sink, .. }
            | Tuning::Kept { sink, .. }
            | Tuning::TooLow { sink, .. }
            | Tuning::AboveBrokerMax { sink, .. } => sink,
        }
    }

    pub fn is_problem(&self) -> bool {
        matches!(self, Tuning::TooLow { .. } | Tuning::AboveBrokerMax { .. })
    }

    /// One line for status and events, naming the fix for problems.
    pub fn message(&self) -> String {
        match self {
            Tuning::Set { sink, ms } => format!("sink {sink}: {TRANSACTION_TIMEOUT} set to {ms}"),
            Tuning::Kept { sink, ms } => format!("sink {sink}: {TRANSACTION_TIMEOUT} {ms} kept"),
            Tuning::TooLow { sink, ms, needed } => format!(
                "sink {sink}: {TRANSACTION_TIMEOUT} {ms} is below checkpoint interval + timeout + margin ({needed}); raise it to at least {needed} or remove it so the operator sets it"
            ),
            // The user's own value is above the maximum but what the checkpoints need fits.
            Tuning::AboveBrokerMax {
                sink,
                ms,
                max,
                needed,
            } if needed <= max => format!(
                "sink {sink}: {TRANSACTION_TIMEOUT} {ms} is above the brokers' transaction.max.timeout.ms ({max}); lower it to between {needed} and {max}, or remove it so the operator sets it"
            ),
            Tuning::AboveBrokerMax {
                sink, ms, max, ..
            } => {
                let shorten = match weir_crds::transactions::longest_checkpoint_within(
                    Duration::from_millis(*max),
                ) {
                    Some(l) => format!(
                        "lower checkpoint.interval + checkpoint.timeout to at most {} ms together",
                        l.as_millis()
                    ),
                    None => "no checkpoint settings fit such a small maximum".into(),
                };
                format!(
                    "sink {sink}: {TRANSACTION_TIMEOUT} {ms} is above the brokers' transaction.max.timeout.ms ({max}); {shorten}, or raise transaction.max.timeout.ms on the brokers to at least {ms}"
                )
            }
        }
    }
}

/// The smallest safe transaction timeout (`weir_crds::transactions::required`), in ms.
pub fn required_ms(interval: Duration, timeout: Duration) -> u64 {
    weir_crds::transactions::required(interval, timeout).as_millis() as u64
}

fn parse_ms(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Tunes every exactly-once Kafka sink of `pipeline` in place. `broker_max` gives the brokers'
/// maximum per sink name where it is known (from the Connector); otherwise Kafka's default.
pub fn tune(pipeline: &mut PipelineSpec, broker_max: &BTreeMap<String, u64>) -> Vec<Tuning> {
    let cp = &pipeline.checkpoint;
    if !cp.enabled || cp.mode != CheckpointMode::ExactlyOnce {
        return Vec::new();
    }
    let needed = required_ms(cp.interval.as_std(), cp.timeout.as_std());
    let mut out = Vec::new();
    let exactly_once = |s: &weir_crds::NodeSpec| {
        s.config.get("delivery").and_then(Value::as_str) == Some("exactly-once")
    };
    for sink in pipeline
        .sinks
        .iter_mut()
        .filter(|s| s.kind == "kafka" && exactly_once(s))
    {
        let as_duration = sink
            .config
            .get("transaction_timeout")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<weir_crds::Duration>().ok())
            .map(|d| d.as_millis());
        let max = broker_max
            .get(&sink.name)
            .copied()
            .unwrap_or(DEFAULT_BROKER_MAX_MS);
        let props = sink
            .config
            .entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
        if !props.is_object() {
            *props = Value::Object(Default::default());
        }
        let Value::Object(props) = props else {
            continue;
        };
        let name = sink.name.clone();
        let result = match props
            .get(TRANSACTION_TIMEOUT)
            .and_then(parse_ms)
            .or(as_duration)
        {
            Some(ms) if ms < needed => Tuning::TooLow {
                sink: name,
                ms,
                needed,
            },
            Some(ms) => Tuning::Kept { sink: name, ms },
            None => {
                props.insert(
                    TRANSACTION_TIMEOUT.into(),
                    Value::String(needed.to_string()),
                );
                Tuning::Set {
                    sink: name,
                    ms: needed,
                }
            }
        };
        let ms = match &result {
            Tuning::Set { ms, .. } | Tuning::Kept { ms, .. } | Tuning::TooLow { ms, .. } => *ms,
            Tuning::AboveBrokerMax { ms, .. } => *ms,
        };
        if ms > max {
            out.push(Tuning::AboveBrokerMax {
                sink: sink.name.clone(),
                ms,
                max,
                needed,
            });
        } else {
            out.push(result);
        }
    }
    out
}
