//! The `firehose` sink: the shared AWS put sink around PutRecordBatch: records → entries (data
//! plus the delimiter), one request per batch, and each entry's result.

use async_trait::async_trait;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record as FirehoseRecord;
use aws_sdk_firehose::Client;
use bytes::{BufMut, Bytes, BytesMut};

use super::config::Settings;
use crate::api::{NodeConfig, NodeContext};
use crate::connectors::aws::errors::{code, describe};
use crate::connectors::aws::put::encode::payload;
use crate::connectors::aws::put::{
    check_target_exists, Entry, Outcome, PutService, PutSink, RequestError,
};
use crate::error::{Error, Result};
use crate::record::Record;

/// The `firehose` sink.
pub type FirehoseSink = PutSink<FirehoseService>;

#[derive(Clone)]
pub struct FirehoseService {
    settings: std::sync::Arc<Settings>,
    client: Option<Client>,
}

impl FirehoseService {
    pub fn new(settings: Settings) -> Self {
        FirehoseService {
            settings: std::sync::Arc::new(settings),
            client: None,
        }
    }
}

/// The entry of a record: its data and the delimiter. Pure.
pub fn entry(
    value_field: Option<&str>,
    delimiter: &[u8],
    record: &Record,
) -> std::result::Result<Entry, String> {
    let data = payload(record, value_field)?;
    let data = if delimiter.is_empty() {
        data
    } else {
        let mut b = BytesMut::with_capacity(data.len() + delimiter.len());
        b.put_slice(&data);
        b.put_slice(delimiter);
        Bytes::from(b)
    };
    Ok(Entry::new(data, None, None))
}

#[async_trait]
impl PutService for FirehoseService {
    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        let s = &self.settings;
        let sdk = s.connection.sdk_config(s.request_timeout).await;
        let client = Client::new(&sdk);
        let describe_call = || async {
            client
                .describe_delivery_stream()
                .delivery_stream_name(&s.delivery_stream)
                .send()
                .await
        };
        let connection = s.connection.describe(&sdk);
        check_target_exists(ctx, &self.target(), &connection, s.put.retry, describe_call).await?;
        self.client = Some(client);
        Ok(())
    }

    fn encode(&self, record: &Record) -> std::result::Result<Entry, String> {
        let s = &self.settings;
        entry(s.value_field.as_deref(), &s.record_delimiter, record)
    }

    async fn preflight(&self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let s = &self.settings;
        let sdk = s.connection.sdk_config(s.request_timeout).await;
        let answer = Client::new(&sdk)
            .describe_delivery_stream()
            .delivery_stream_name(&s.delivery_stream)
            .send()
            .await;
        match answer {
            Ok(d) => Ok(vec![format!(
                "{} is {}",
                self.target(),
                d.delivery_stream_description()
                    .map(|d| d.delivery_stream_status().as_str().to_string())
                    .unwrap_or_else(|| "described".into())
            )]),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => Err(cfg.error(
                "delivery_stream",
                format!(
                    "{} does not exist ({})",
                    self.target(),
                    s.connection.describe(&sdk)
                ),
            )),
            Err(e) => Err(Error::node(
                cfg.name(),
                format!(
                    "{} ({}): {}",
                    self.target(),
                    s.connection.describe(&sdk),
                    describe(&e)
                ),
            )),
        }
    }

    async fn put(&self, entries: &[Entry]) -> std::result::Result<Vec<Outcome>, RequestError> {
        let client = self.client.as_ref().expect("opened before writing");
        let records = entries
            .iter()
            .map(|e| {
                FirehoseRecord::builder()
                    .data(Blob::new(e.data.to_vec()))
                    .build()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(RequestError::unbuildable)?;
        let answer = client
            .put_record_batch()
            .delivery_stream_name(&self.settings.delivery_stream)
            .set_records(Some(records))
            .send()
            .await;
        Outcome::all(answer.map(|out| out.request_responses), |r| {
            (r.error_code, r.error_message)
        })
    }

    fn target(&self) -> String {
        format!("delivery stream {:?}", self.settings.delivery_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_ends_every_record() {
        let r = Record::new(serde_json::json!({"id": 1}).as_object().unwrap().clone());
        assert_eq!(entry(None, b"\n", &r).unwrap().data, "{\"id\":1}\n");
        assert_eq!(entry(None, b"", &r).unwrap().data, "{\"id\":1}");
        assert!(entry(Some("x"), b"\n", &r).is_err());
    }
}
