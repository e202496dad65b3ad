//! Checks against the cluster when the sink opens: reachable, the topic exists, and the
//! broker's `transaction.max.timeout.ms`.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use super::super::client::RecordingContext;
use super::timeout::BROKER_MAX_CONFIG;
use crate::error::{Error, Result};

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Cluster {
    admin: Arc<AdminClient<RecordingContext>>,
    context: RecordingContext,
    node: String,
    bootstrap: String,
}

impl Cluster {
    pub fn connect(config: &ClientConfig, node: &str, bootstrap: &str) -> Result<Cluster> {
        let context = RecordingContext::default();
        let admin = config
            .create_with_context(context.clone())
            .map_err(|e| Error::node(node, format!("cannot create a Kafka admin client: {e}")))?;
        Ok(Cluster {
            admin: Arc::new(admin),
            context,
            node: node.to_string(),
            bootstrap: bootstrap.to_string(),
        })
    }

    async fn metadata(&self, topic: Option<String>) -> Result<Metadata> {
        let admin = self.admin.clone();
        let r = tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(topic.as_deref(), TIMEOUT)
        })
        .await
        .map_err(|e| Error::node(&self.node, e))?;
        r.map_err(|e| {
            let why = self
                .context
                .last_error()
                .map(|l| format!(" (last client error: {l})"))
                .unwrap_or_default();
            Error::node(
                &self.node,
                format!(
                    "cannot reach Kafka at {} within {}s: {e}{why}",
                    self.bootstrap,
                    TIMEOUT.as_secs()
                ),
            )
        })
    }

    /// The partition count of `topic`; `None` when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<usize>> {
        let md = self.metadata(Some(topic.to_string())).await?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t.and_then(|t| t.error()) {
            None => Ok(t.map(|t| t.partitions().len()).filter(|n| *n > 0)),
            Some(e) if RDKafkaErrorCode::from(e) != RDKafkaErrorCode::UnknownTopicOrPartition => {
                Err(Error::node(&self.node, format!("topic {topic:?}: {e:?}")))
            }
            Some(_) => Ok(None),
        }
    }

    pub fn missing_topic(&self, topic: &str) -> String {
        format!("topic {topic:?} does not exist on {}", self.bootstrap)
    }

    /// Fails unless `topic` exists (the sink never creates topics).
    pub async fn require_topic(&self, topic: &str) -> Result<()> {
        match self.partitions(topic).await? {
            Some(_) => Ok(()),
            None => Err(Error::node(&self.node, self.missing_topic(topic))),
        }
    }

    /// The broker's `transaction.max.timeout.ms`; `None` when it cannot be read (e.g. no
    /// DescribeConfigs permission), in which case the broker itself will refuse a timeout above
    /// it when the producer starts.
    pub async fn max_transaction_timeout(&self) -> Result<Option<Duration>> {
        let md = self.metadata(None).await?;
        let Some(broker) = md.brokers().first() else {
            return Ok(None);
        };
        let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
        let spec = ResourceSpecifier::Broker(broker.id());
        let results = match self.admin.describe_configs([&spec], &opts).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "cannot read the broker's {BROKER_MAX_CONFIG}");
                return Ok(None);
            }
        };
        let value = results
            .first()
            .and_then(|r| r.as_ref().ok())
            .and_then(|c| c.get(BROKER_MAX_CONFIG))
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse::<u64>().ok());
        if value.is_none() {
            tracing::warn!(node = %self.node, "the broker did not report {BROKER_MAX_CONFIG}");
        }
        Ok(value.map(Duration::from_millis))
    }
}
