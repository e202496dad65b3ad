//! The `elasticsearch` sink: an idempotent (with ids) or at-least-once [`Sink`] that batches
//! records into `_bulk` requests and, at every barrier, waits until each action is acknowledged
//! or handed to `on_error`, so nothing in flight outlives a checkpoint.
//!
//! Ordering: records are spread over `max_in_flight` lanes by document id, and a lane has at
//! most one request in flight (retries included). So two versions of a document are never in
//! flight at once, and a retried older version cannot land after a newer one. Without ids
//! there is nothing to keep in order and records go round-robin.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::task::JoinSet;

use super::concurrency::Aimd;
use super::config::Settings;
use super::dead_letter::{DeadLetterWriter, Rejection};
use super::metrics::SinkMetrics;
use super::request_builder::{BulkBuffer, ElasticsearchRequestBuilder};
use super::service::{
    check_server, execute, BulkReport, BulkRequest, ElasticsearchService, Shared,
};
use crate::api::{Batch, NodeConfig, NodeContext, Record, Sink};
use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;

struct Lane {
    buf: BulkBuffer,
    /// A request of this lane is in flight.
    busy: bool,
}

type Done = (usize, Result<BulkReport>);

pub struct ElasticsearchSink {
    settings: Arc<Settings>,
    builder: ElasticsearchRequestBuilder,
    node: String,
    ctx: Option<NodeContext>,
    metrics: NodeMetrics,
    shared: Option<Arc<Shared>>,
    lanes: Vec<Lane>,
    tasks: JoinSet<Done>,
    dead_letter: Option<DeadLetterWriter>,
    /// Next lane for records without an id.
    round_robin: usize,
}

impl ElasticsearchSink {
    pub fn new(settings: Settings, node: &str) -> ElasticsearchSink {
        let settings = Arc::new(settings);
        let lanes = (0..settings.max_in_flight)
            .map(|_| Lane {
                buf: BulkBuffer::default(),
                busy: false,
            })
            .collect();
        ElasticsearchSink {
            builder: ElasticsearchRequestBuilder::new(settings.clone()),
            settings,
            node: node.to_string(),
            ctx: None,
            metrics: NodeMetrics::detached(),
            shared: None,
            lanes,
            tasks: JoinSet::new(),
            dead_letter: None,
            round_robin: 0,
        }
    }

    fn shared(&self) -> Result<&Arc<Shared>> {
        self.shared
            .as_ref()
            .ok_or_else(|| Error::node(&self.node, "write before open"))
    }

    fn lane_for(&mut self, id: Option<&str>) -> usize {
        let n = self.lanes.len();
        match id {
            Some(id) => crc32fast::hash(id.as_bytes()) as usize % n,
            None => {
                self.round_robin = (self.round_robin + 1) % n;
                self.round_robin
            }
        }
    }

    /// Sends lane `i`'s actions without waiting (the caller checked it may).
    fn start(&mut self, i: usize) -> Result<()> {
        let shared = self.shared()?.clone();
        let (body, spans) = self.lanes[i].buf.take();
        if spans.is_empty() {
            return Ok(());
        }
        self.metrics.bytes_out.inc_by(body.len() as u64);
        let req = BulkRequest {
            body,
            spans,
            action: self.settings.action,
            versioned: self.settings.versioned(),
        };
        self.lanes[i].busy = true;
        self.tasks
            .spawn(async move { (i, execute(&shared, req).await) });
        Ok(())
    }

    /// Sends lane `i`'s actions once the lane is free and the concurrency limit allows.
    async fn dispatch(&mut self, i: usize) -> Result<()> {
        if self.lanes[i].buf.is_empty() {
            return Ok(());
        }
        while self.lanes[i].busy || self.tasks.len() >= self.shared()?.limit() {
            self.reap_one().await?;
        }
        self.start(i)
    }

    /// Waits for one request to finish and handles its report.
    async fn reap_one(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(done) => self.finished(done),
            None => Ok(()),
        }
    }

    fn finished(&mut self, done: std::result::Result<Done, tokio::task::JoinError>) -> Result<()> {
        let (lane, result) =
            done.map_err(|e| Error::node(&self.node, format!("a bulk request task failed: {e}")))?;
        self.lanes[lane].busy = false;
        let report = result?;
        for r in report.rejected {
            let document = String::from_utf8_lossy(&r.document).into_owned();
            self.reject(Rejection {
                index: r.index,
                id: r.id,
                status: Some(r.status),
                reason: r.reason,
                document,
            })?;
        }
        Ok(())
    }

    /// Applies `on_error` to a document that cannot be written.
    fn reject(&mut self, r: Rejection) -> Result<()> {
        self.metrics.record_errors.inc();
        let what = match r.status {
            Some(s) => format!("rejected by the server (HTTP {s}): {}", r.reason),
            None => r.reason.clone(),
        };
        match &self.settings.on_error {
            OnError::Fail => Err(Error::Record {
                node: self.node.clone(),
                record: excerpt(&r.document),
                message: format!("{}: {what}", r.target()),
            }),
            OnError::Skip => {
                tracing::warn!(node = %self.node, document = %excerpt(&r.document), "{}: {what}; skipped", r.target());
                Ok(())
            }
            OnError::DeadLetter(_) => {
                let (Some(ctx), Some(dlq)) = (&self.ctx, &mut self.dead_letter) else {
                    return Err(Error::node(&self.node, "dead letter before open"));
                };
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                dlq.push(&r, &r.entry(ctx, self.settings.action, &now));
                tracing::debug!(node = %self.node, "{}: {what}; sent to the dead letters", r.target());
                Ok(())
            }
        }
    }

    /// A record the sink cannot turn into an action.
    fn refuse(
        &mut self,
        record: &Record,
        index: Option<String>,
        id: Option<String>,
        why: String,
    ) -> Result<()> {
        if let Some(m) = self.shared.as_ref().map(|s| &s.metrics) {
            m.failed(None);
        }
        let document = match record.json() {
            Some(text) => String::from_utf8_lossy(text).into_owned(),
            None => serde_json::to_string(record.fields()).unwrap_or_default(),
        };
        self.reject(Rejection {
            index,
            id,
            status: None,
            reason: why,
            document,
        })
    }

    async fn flush_dead_letters(&mut self) -> Result<()> {
        let shared = self.shared()?.clone();
        if let Some(dlq) = &mut self.dead_letter {
            dlq.flush(&shared).await?;
        }
        Ok(())
    }
}

/// The start of a document, for messages.
fn excerpt(doc: &str) -> String {
    match doc.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &doc[..cut]),
        None => doc.to_string(),
    }
}

#[async_trait]
impl Sink for ElasticsearchSink {
    /// A node answers (distribution and version, with the configured credentials) and a fixed
    /// index is looked up; a missing one is reported, not refused: the cluster creates it on
    /// the first write unless `action.auto_create_index` forbids it.
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        let service =
            ElasticsearchService::new(&self.settings).map_err(|e| Error::node(cfg.name(), e))?;
        let unreachable = |(i, e): (usize, reqwest::Error)| {
            Error::node(
                cfg.name(),
                format!("{}: {}", service.host(i), super::service::error_chain(&e)),
            )
        };
        let info = service.info().await.map_err(unreachable)?;
        if !(200..300).contains(&info.status) {
            return Err(Error::fatal(
                cfg.name(),
                format!(
                    "GET / answered HTTP {}: {}",
                    info.status,
                    super::retry::error_summary(&info.body)
                ),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap_or_default();
        let mut out = vec![format!(
            "{} {} answers",
            v["version"]["distribution"]
                .as_str()
                .unwrap_or("elasticsearch"),
            v["version"]["number"].as_str().unwrap_or("?")
        )];
        if let Some(index) = self.settings.index.literal() {
            let a = service.index(index).await.map_err(unreachable)?;
            out.push(match a.status {
                200 => format!("index {index:?} exists"),
                404 => format!(
                    "index {index:?} does not exist yet: the cluster creates it on the first \
                     write unless action.auto_create_index forbids it"
                ),
                s => return Err(Error::fatal(cfg.name(), format!("HEAD /{index}: HTTP {s}"))),
            });
        }
        Ok(out)
    }

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        self.ctx = Some(ctx.clone());
        let s = &self.settings;
        let service = ElasticsearchService::new(s).map_err(|e| Error::node(&self.node, e))?;
        let metrics = SinkMetrics::for_node(ctx);
        metrics.limit.set(s.max_in_flight as i64);
        let shared = Arc::new(Shared {
            service,
            limiter: Mutex::new(Aimd::new(s.max_in_flight)),
            retry: s.retry,
            metrics,
            node: self.node.clone(),
        });
        let server = check_server(&shared).await?;
        if let OnError::DeadLetter(target) = &s.on_error {
            self.dead_letter = Some(DeadLetterWriter::open(target, ctx).await?);
        }
        let hosts: Vec<String> = s.hosts.iter().map(|h| h.to_string()).collect();
        tracing::info!(node = %self.node, server = %server, hosts = %hosts.join(","),
            idempotent = s.idempotent(), "elasticsearch sink open");
        self.shared = Some(shared);
        Ok(())
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        self.shared()?;
        let (max_actions, max_bytes) = (self.settings.max_actions, self.settings.max_bytes);
        for r in &batch.records {
            let id = match self.builder.id(r) {
                Ok(id) => id,
                Err(why) => {
                    let index = self.settings.index.render(r).ok().map(|i| i.into_owned());
                    self.refuse(r, index, None, why)?;
                    continue;
                }
            };
            let lane = self.lane_for(id.as_deref());
            if let Err(why) = self
                .builder
                .append(r, id.as_deref(), &mut self.lanes[lane].buf)
            {
                let index = self.settings.index.render(r).ok().map(|i| i.into_owned());
                self.refuse(r, index, id, why)?;
                continue;
            }
            if self.lanes[lane].buf.is_full(max_actions, max_bytes) {
                self.dispatch(lane).await?;
            }
        }
        if self
            .dead_letter
            .as_ref()
            .is_some_and(|d| d.pending() >= max_actions)
        {
            self.flush_dead_letters().await?;
        }
        Ok(())
    }

    /// Everything written so far is acknowledged (or dead-lettered durably) when this returns.
    async fn flush(&mut self) -> Result<()> {
        if self.shared.is_none() {
            return Ok(());
        }
        for i in 0..self.lanes.len() {
            self.dispatch(i).await?;
        }
        while let Some(done) = self.tasks.join_next().await {
            self.finished(done)?;
        }
        self.flush_dead_letters().await
    }

    async fn on_tick(&mut self) -> Result<()> {
        if self.shared.is_none() {
            return Ok(());
        }
        while let Some(done) = self.tasks.try_join_next() {
            self.finished(done)?;
        }
        let interval = self.settings.interval;
        for i in 0..self.lanes.len() {
            let due = self.lanes[i]
                .buf
                .since
                .is_some_and(|t| t.elapsed() >= interval);
            if due && !self.lanes[i].busy && self.tasks.len() < self.shared()?.limit() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.flush().await
    }
}
