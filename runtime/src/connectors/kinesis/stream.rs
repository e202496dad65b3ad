//! A stream named by name or ARN, as the `kinesis` source and sink take it.

use std::fmt;

use crate::connectors::aws::arn::{self, Named, ResourceKind};

/// A Kinesis stream: its name (split ids and messages use it) and, when given as an ARN, the
/// ARN (calls then name the stream by ARN, as cross-account access requires).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef {
    pub name: String,
    pub arn: Option<String>,
    /// The region an ARN names.
    pub region: Option<String>,
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {:?}", self.name)
    }
}

/// How a stream is named, for [`ResourceKind::parse`].
const STREAM: ResourceKind = ResourceKind {
    service: "kinesis",
    resource: "stream",
    arn_is: "Kinesis stream ARN",
    name_is: "stream name",
    max_name: 128,
};

impl StreamRef {
    /// Parses `orders` or `arn:aws:kinesis:us-east-1:123456789012:stream/orders`.
    pub fn parse(text: &str) -> Result<StreamRef, String> {
        let Named { name, arn, region } = STREAM.parse(text)?;
        Ok(StreamRef { name, arn, region })
    }

    /// The region to use: the setting, or the ARN's; an error when the two disagree.
    pub fn region<'a>(&'a self, setting: Option<&'a str>) -> Result<Option<&'a str>, String> {
        arn::region(setting, self.region.as_deref(), || {
            format!("the ARN of {self}")
        })
    }
}

/// `weir validate --connect`: one DescribeStreamSummary of `stream`. `Err((true, why))` when the
/// stream does not exist (the setting is wrong), `Err((false, why))` when the service did not
/// answer; `endpoint` names where it was asked.
pub async fn preflight(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    endpoint: &str,
) -> Result<String, (bool, String)> {
    let mut call = client.describe_stream_summary();
    call = match &stream.arn {
        Some(arn) => call.stream_arn(arn),
        None => call.stream_name(&stream.name),
    };
    match call.send().await {
        Ok(d) => Ok(match d.stream_description_summary() {
            Some(s) => format!(
                "{stream} is {} with {} open shards",
                s.stream_status().as_str(),
                s.open_shard_count()
            ),
            None => format!("{stream} exists"),
        }),
        Err(e) if crate::connectors::aws::errors::code(&e) == Some("ResourceNotFoundException") => {
            Err((true, format!("{stream} does not exist ({endpoint})")))
        }
        Err(e) => Err((
            false,
            format!(
                "{stream} ({endpoint}): {}",
                crate::connectors::aws::errors::describe(&e)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        let s = StreamRef::parse("orders.v2-x_y").unwrap();
        assert_eq!((s.name.as_str(), s.arn.is_none()), ("orders.v2-x_y", true));
        let a = StreamRef::parse("arn:aws:kinesis:eu-west-1:123456789012:stream/orders").unwrap();
        assert_eq!(a.name, "orders");
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        assert_eq!(a.region(None).unwrap(), Some("eu-west-1"));
        assert!(a
            .region(Some("us-east-1"))
            .unwrap_err()
            .contains("eu-west-1"));
        for bad in [
            "",
            "with space",
            "a/b",
            "arn:aws:sqs:eu-west-1:1:stream/x",
            "arn:aws:kinesis:eu-west-1:1:table/x",
            "arn:aws:kinesis::1:stream/x",
        ] {
            assert!(StreamRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StreamRef::parse(&"x".repeat(129)).is_err());
    }
}
