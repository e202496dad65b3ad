//! PutRecords: records → entries (partition key from a field or random, optional explicit hash
//! key), one request per batch, and each entry's result.

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

use super::config::{EntrySpec, Settings};
use crate::api::{NodeConfig, NodeContext};
use crate::connectors::aws::put::encode::{field_text, payload};
use crate::connectors::aws::put::{check_target_exists, Entry, Outcome, PutService, RequestError};
use crate::error::{Error, Result};
use crate::record::Record;

#[derive(Clone)]
pub struct KinesisService {
    settings: std::sync::Arc<Settings>,
    client: Option<Client>,
}

impl KinesisService {
    pub fn new(settings: Settings) -> Self {
        KinesisService {
            settings: std::sync::Arc::new(settings),
            client: None,
        }
    }
}

/// The PutRecords entry of a record. Pure.
pub fn entry(spec: &EntrySpec, record: &Record) -> std::result::Result<Entry, String> {
    let data = payload(record, spec.value_field.as_deref())?;
    let key = match &spec.partition_key_field {
        Some(f) => {
            let k = field_text(record, f, "partition_key_field")?;
            if k.is_empty() || k.chars().count() > 256 {
                return Err(format!(
                    "partition_key_field {f:?}: a partition key has 1 to 256 characters, got {}",
                    k.chars().count()
                ));
            }
            k
        }
        None => format!("{:032x}", fastrand::u128(..)),
    };
    let hash_key = match &spec.explicit_hash_key_field {
        None => None,
        Some(f) => {
            let h = field_text(record, f, "explicit_hash_key_field")?;
            if h.parse::<u128>().is_err() {
                return Err(format!(
                    "explicit_hash_key_field {f:?}: {h:?} is not a number from 0 to 2^128-1"
                ));
            }
            Some(h)
        }
    };
    Ok(Entry::new(data, Some(key), hash_key))
}

#[async_trait]
impl PutService for KinesisService {
    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        let s = &self.settings;
        let sdk = s.connection.sdk_config(s.request_timeout).await;
        let client = Client::new(&sdk);
        let describe_call = || async {
            let mut call = client.describe_stream_summary();
            call = match &s.stream.arn {
                Some(arn) => call.stream_arn(arn),
                None => call.stream_name(&s.stream.name),
            };
            call.send().await
        };
        let connection = s.connection.describe(&sdk);
        check_target_exists(ctx, &self.target(), &connection, s.put.retry, describe_call).await?;
        self.client = Some(client);
        Ok(())
    }

    fn encode(&self, record: &Record) -> std::result::Result<Entry, String> {
        entry(&self.settings.entry, record)
    }

    async fn preflight(&self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let s = &self.settings;
        let sdk = s.connection.sdk_config(s.request_timeout).await;
        let line = crate::connectors::kinesis::stream::preflight(
            &Client::new(&sdk),
            &s.stream,
            &s.connection.describe(&sdk),
        )
        .await
        .map_err(|(setting, m)| match setting {
            true => cfg.error("stream", m),
            false => Error::node(cfg.name(), m),
        })?;
        Ok(vec![line])
    }

    async fn put(&self, entries: &[Entry]) -> std::result::Result<Vec<Outcome>, RequestError> {
        let client = self.client.as_ref().expect("opened before writing");
        let mut records = Vec::with_capacity(entries.len());
        for e in entries {
            let r = PutRecordsRequestEntry::builder()
                .data(Blob::new(e.data.to_vec()))
                .partition_key(e.key.clone().unwrap_or_default())
                .set_explicit_hash_key(e.hash_key.clone())
                .build()
                .map_err(RequestError::unbuildable)?;
            records.push(r);
        }
        let stream = &self.settings.stream;
        let call = client.put_records().set_records(Some(records));
        let call = match &stream.arn {
            Some(arn) => call.stream_arn(arn),
            None => call.stream_name(&stream.name),
        };
        let answer = call.send().await.map(|out| out.records);
        Outcome::all(answer, |r| (r.error_code, r.error_message))
    }

    fn target(&self) -> String {
        self.settings.stream.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: serde_json::Value) -> Record {
        Record::new(v.as_object().unwrap().clone())
    }

    fn spec(key: Option<&str>, hash: Option<&str>) -> EntrySpec {
        EntrySpec {
            partition_key_field: key.map(String::from),
            explicit_hash_key_field: hash.map(String::from),
            value_field: None,
        }
    }

    #[test]
    fn keys_come_from_the_field_or_at_random() {
        let r = rec(json!({"user": "u7", "h": "340282366920938463463374607431768211455"}));
        let e = entry(&spec(Some("user"), Some("h")), &r).unwrap();
        assert_eq!(e.key.as_deref(), Some("u7"));
        assert_eq!(
            e.hash_key.as_deref(),
            Some("340282366920938463463374607431768211455")
        );
        let a = entry(&spec(None, None), &r).unwrap().key.unwrap();
        let b = entry(&spec(None, None), &r).unwrap().key.unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn bad_keys_are_record_errors() {
        let long = "k".repeat(257);
        for (r, s, needle) in [
            (rec(json!({})), spec(Some("user"), None), "is missing"),
            (
                rec(json!({"user": ""})),
                spec(Some("user"), None),
                "1 to 256",
            ),
            (
                rec(json!({"user": long})),
                spec(Some("user"), None),
                "1 to 256",
            ),
            (
                rec(json!({"h": "340282366920938463463374607431768211456"})),
                spec(None, Some("h")),
                "0 to 2^128-1",
            ),
        ] {
            let e = entry(&s, &r).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
