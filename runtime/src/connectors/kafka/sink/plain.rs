//! `delivery: none` and `at-least-once`: one idempotent producer, flushed at every checkpoint.
//! At-least-once fails the checkpoint (and so the job, which replays from the last checkpoint)
//! when any record was not delivered; `none` counts and logs the failures.

use std::time::Duration;

use async_trait::async_trait;

use super::broker::Cluster;
use super::config::{Delivery, Settings, TopicSpec};
use super::encode::encode;
use super::producer::Producer;
use crate::api::{Batch, NodeConfig, NodeContext, Sink};
use crate::error::{Error, Result};

pub struct PlainKafkaSink {
    settings: Settings,
    node: String,
    flush_timeout: Duration,
    producer: Option<Producer>,
    ctx: Option<NodeContext>,
}

impl PlainKafkaSink {
    pub fn new(settings: Settings, node: &str) -> Self {
        PlainKafkaSink {
            settings,
            node: node.to_string(),
            flush_timeout: Duration::from_secs(60),
            producer: None,
            ctx: None,
        }
    }

    fn producer(&self) -> Result<&Producer> {
        self.producer
            .as_ref()
            .ok_or_else(|| Error::node(&self.node, "written to before open"))
    }
}

#[async_trait]
impl Sink for PlainKafkaSink {
    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.flush_timeout = ctx.checkpoint.timeout.as_std();
        let s = &self.settings;
        let mut config = super::producer_config(s);
        config.set(
            "enable.idempotence",
            if s.delivery == Delivery::AtLeastOnce {
                "true"
            } else {
                "false"
            },
        );
        let cluster = Cluster::connect(&config, &self.node, &s.bootstrap_servers)?;
        if let TopicSpec::Fixed(t) = &s.topic {
            cluster.require_topic(t).await?;
        }
        self.producer = Some(Producer::create(&config, &self.node)?);
        self.ctx = Some(ctx.clone());
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let producer = self.producer()?;
        let mut bytes = 0u64;
        for r in &batch.records {
            let m = encode(&self.settings, r).map_err(|why| Error::record(&self.node, r, why))?;
            bytes += m.value.len() as u64;
            if let Err(e) = producer.send(&m).await {
                if self.settings.delivery == Delivery::None {
                    tracing::warn!(node = %self.node, error = %e, "record dropped");
                    if let Some(c) = &self.ctx {
                        c.metrics.record_errors.inc();
                    }
                    continue;
                }
                let why = format!("cannot send to topic {}: {e}", m.topic);
                return Err(Error::record(&self.node, r, why));
            }
        }
        if let Some(c) = &self.ctx {
            c.metrics.bytes_out.inc_by(bytes);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let r = self.producer()?.flush(&self.node, self.flush_timeout).await;
        match (r, self.settings.delivery) {
            (Err(e), Delivery::None) => {
                tracing::warn!(node = %self.node, error = %e, "records lost (delivery: none)");
                Ok(())
            }
            (r, _) => r,
        }
    }

    async fn close(&mut self) -> Result<()> {
        if self.producer.is_some() {
            self.flush().await?;
        }
        Ok(())
    }

    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        super::preflight(&self.settings, cfg, false).await
    }
}
