//! A shard's position as stored in a checkpoint, and the split ids that key it.
//!
//! Split ids are `<stream>/<shard id>` (stream names cannot contain `/`). Beside its shards a
//! source stores `<stream>` → `{"reading": true}` for every stream it has started, so that after
//! a restore a shard without a position is known to be new (read from its start) rather than
//! part of a first start (read from `starting_position`).

use serde_json::{json, Value};

/// Where reading a shard resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The shard's oldest record.
    TrimHorizon,
    /// The first record that arrived at or after this time (ms since the epoch). `latest` is
    /// stored this way, as the time the job first started.
    AtTimestamp(i64),
    /// The record after this sequence number (the last one emitted).
    After(String),
    /// Read to its end; its children may be read.
    Finished,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::TrimHorizon => f.write_str("the trim horizon"),
            Position::AtTimestamp(t) => match chrono::DateTime::from_timestamp_millis(*t) {
                Some(at) => write!(f, "the time {}", at.to_rfc3339()),
                None => write!(f, "the time {t} ms"),
            },
            Position::After(seq) => write!(f, "after sequence number {seq}"),
            Position::Finished => f.write_str("its end"),
        }
    }
}

impl Position {
    pub fn to_value(&self) -> Value {
        match self {
            Position::TrimHorizon => json!({ "trim_horizon": true }),
            Position::AtTimestamp(t) => json!({ "at_timestamp": t }),
            Position::After(seq) => json!({ "after": seq }),
            Position::Finished => json!({ "finished": true }),
        }
    }

    pub fn from_value(v: &Value) -> Result<Position, String> {
        if let Some(seq) = v.get("after").and_then(Value::as_str) {
            if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("sequence number {seq:?} is not a number"));
            }
            return Ok(Position::After(seq.to_string()));
        }
        if let Some(t) = v.get("at_timestamp").and_then(Value::as_i64) {
            return Ok(Position::AtTimestamp(t));
        }
        if v.get("finished") == Some(&Value::Bool(true)) {
            return Ok(Position::Finished);
        }
        if v.get("trim_horizon") == Some(&Value::Bool(true)) {
            return Ok(Position::TrimHorizon);
        }
        Err(format!(
            "expected {{\"after\": SEQUENCE}}, {{\"at_timestamp\": MS}}, {{\"trim_horizon\": true}} \
             or {{\"finished\": true}}, got {v}"
        ))
    }

    pub fn is_finished(&self) -> bool {
        *self == Position::Finished
    }
}

/// `stream/shard`.
pub fn split_id(stream: &str, shard: &str) -> String {
    format!("{stream}/{shard}")
}

/// What a key of the source's checkpoint state names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateKey<'a> {
    Shard {
        stream: &'a str,
        shard: &'a str,
    },
    /// The marker of a stream being read.
    Stream(&'a str),
}

pub fn parse_key(key: &str) -> StateKey<'_> {
    match key.split_once('/') {
        Some((stream, shard)) => StateKey::Shard { stream, shard },
        None => StateKey::Stream(key),
    }
}

/// The value stored under a stream's marker.
pub fn stream_marker() -> Value {
    json!({ "reading": true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for p in [
            Position::TrimHorizon,
            Position::AtTimestamp(1_700_000_000_000),
            Position::After("49680554443512833126027948877340847926300394794405330946".into()),
            Position::Finished,
        ] {
            assert_eq!(Position::from_value(&p.to_value()), Ok(p));
        }
        assert!(Position::from_value(&json!({"after": "12x"})).is_err());
        assert!(Position::from_value(&json!({"offset": 3})).is_err());
        assert!(Position::from_value(&json!(3)).is_err());
        assert_eq!(
            Position::After("7".into()).to_string(),
            "after sequence number 7"
        );
        assert_eq!(
            Position::AtTimestamp(0).to_string(),
            "the time 1970-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn keys() {
        assert_eq!(
            split_id("orders", "shardId-000000000001"),
            "orders/shardId-000000000001"
        );
        assert_eq!(
            parse_key("orders/shardId-1"),
            StateKey::Shard {
                stream: "orders",
                shard: "shardId-1"
            }
        );
        assert_eq!(parse_key("orders"), StateKey::Stream("orders"));
    }
}
