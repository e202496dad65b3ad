//! What a node does with a record it cannot handle, defined once for every node: `fail`,
//! `skip`, or `dead_letter: {…}` where the node has a dead-letter target (its own type `D`).

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::error::Error;
use crate::record::Record;

/// `on_error` of a node. Nodes without a dead-letter target use `OnError` (= `OnError<NoDeadLetter>`),
/// which refuses `dead_letter` with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError<D = NoDeadLetter> {
    /// Fail the job with an error naming the node, the record and the reason.
    #[default]
    Fail,
    /// Drop the record, count it in `weir_node_record_errors_total` and log it.
    Skip,
    /// Send the record with the reason to the node's dead-letter target, and count it.
    DeadLetter(D),
}

impl<D> OnError<D> {
    /// A record this node cannot process, for a node that writes no dead letters itself
    /// (`dead_letter` then counts as `fail`): under `fail`, the error that stops the job,
    /// naming the node, the record and `why`; under `skip`, `Ok` after a warning. Counting it
    /// is the caller's.
    pub fn reject(&self, node: &str, record: &Record, why: String) -> crate::error::Result<()> {
        match self {
            OnError::Fail | OnError::DeadLetter(_) => Err(Error::record(node, record, why)),
            OnError::Skip => {
                tracing::warn!(node, record = %record.describe(), "skipped: {why}");
                Ok(())
            }
        }
    }

    /// The dead-letter target, when the policy is `dead_letter`.
    pub fn dead_letter(&self) -> Option<&D> {
        match self {
            OnError::DeadLetter(d) => Some(d),
            _ => None,
        }
    }
}

/// The dead-letter target of a node that has none: it cannot be deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDeadLetter {}

impl<'de> Deserialize<'de> for NoDeadLetter {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "this node has no dead-letter target; use fail or skip",
        ))
    }
}

impl fmt::Display for NoDeadLetter {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Topic {
        topic: String,
    }

    // Node settings reach a node as JSON values (`NodeConfig::parse`), so that is what is read.
    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_nodes_take_fail_or_skip_and_refuse_dead_letter() {
        let p: OnError = parse(serde_json::json!("skip")).unwrap();
        assert_eq!(p, OnError::Skip);
        let e = parse::<OnError>(serde_json::json!({"dead_letter": {"topic": "x"}})).unwrap_err();
        assert!(e.contains("no dead-letter target"), "{e}");
        assert!(parse::<OnError>(serde_json::json!("retry")).is_err());
    }

    #[test]
    fn nodes_with_a_target_read_it() {
        let p: OnError<Topic> =
            parse(serde_json::json!({"dead_letter": {"topic": "dlq"}})).unwrap();
        assert_eq!(
            p.dead_letter(),
            Some(&Topic {
                topic: "dlq".into()
            })
        );
        assert_eq!(OnError::<Topic>::default(), OnError::Fail);
    }
}
