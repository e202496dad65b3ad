//! `delivery: exactly-once`: one Kafka transaction per worker per checkpoint.
//!
//! - `write` sends into the open transaction of the active producer (`pool.rs` picks it).
//! - `pre_commit` flushes it and asks the coordinator (DescribeTransactions) for the producer id
//!   and epoch of the open transaction, which librdkafka keeps to itself; they go into the
//!   committable. The next records go to another producer.
//! - `commit` (checkpoint durable) commits through librdkafka.
//! - `recover` re-commits the restored committables over the protocol (`recovery.rs`), fences
//!   the ids of the workers taken over, and only then initializes this worker's producers, whose
//!   InitProducerId aborts whatever they left open. The order matters: initializing an id first
//!   would abort the very transaction that has to be re-committed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::producer::Producer as _;

use super::broker::Cluster;
use super::config::{Settings, TopicSpec};
use super::encode::encode;
use super::pool::{transactional_id, Pool, Slot};
use super::producer::{blocking, Producer};
use super::protocol::{codes, Described, TxnClient};
use super::recovery::{
    fence, probe, recommit, KafkaCommittable, KafkaSinkState, Probe, Recommitted,
};
use super::security::{Security, Transport};
use super::timeout::TRANSACTION_TIMEOUT_MS;
use crate::api::{Barrier, Batch, NodeConfig, NodeContext, Prepare, TwoPhaseSink};
use crate::error::{Error, Result};

/// How long recovery keeps retrying a coordinator that is unreachable or loading.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(60);
const PROTOCOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Producers per worker probed beyond the parallelism: pools hold at most 8 (`config::pool_size`).
const MAX_PROBED_POOL: usize = 16;

pub struct TxnKafkaSink {
    settings: Settings,
    /// `sinks[i]`, for errors about a setting found only when the sink opens.
    path: String,
    node: String,
    ids: Vec<String>,
    producers: Vec<Producer>,
    pool: Pool,
    /// The `init_transactions` of producers after the first, by slot, still running in the
    /// background (see [`TxnKafkaSink::init_producers`]).
    starting: Vec<(usize, tokio::task::JoinHandle<Result<()>>)>,
    client: Option<TxnClient>,
    /// Its own connection for the background pre-commits' DescribeTransactions, so that they
    /// never wait on (or interleave with) the client's recovery and commit requests.
    describer: Option<Arc<tokio::sync::Mutex<TxnClient>>>,
    config: Option<ClientConfig>,
    transaction_timeout: Duration,
    op_timeout: Duration,
    ctx: Option<NodeContext>,
}

impl TxnKafkaSink {
    pub fn new(settings: Settings, path: &str, node: &str) -> Self {
        let pool = Pool::new(settings.pool_size);
        TxnKafkaSink {
            settings,
            path: path.to_string(),
            node: node.to_string(),
            ids: Vec::new(),
            producers: Vec::new(),
            pool,
            starting: Vec::new(),
            client: None,
            describer: None,
            config: None,
            transaction_timeout: Duration::ZERO,
            op_timeout: Duration::from_secs(60),
            ctx: None,
        }
    }

    fn client(&mut self) -> Result<&mut TxnClient> {
        self.client
            .as_mut()
            .ok_or_else(|| Error::node(&self.node, "used before open"))
    }

    /// Creates this worker's producers; their InitProducerId fences and aborts what earlier
    /// incarnations left open under the same ids.
    ///
    /// Only the first producer's is awaited here; the others run in the background until the
    /// first pre-commit needs them (or a write finds no other producer free). librdkafka's
    /// `init_transactions` can miss its coordinator while the bootstrap connection is being
    /// replaced and then waits for its 500 ms coordinator timer: in a traced start of the
    /// pool's three producers, two did, and the job wrote nothing for that half second.
    async fn init_producers(&mut self) -> Result<()> {
        let config = self
            .config
            .clone()
            .ok_or_else(|| Error::node(&self.node, "recover before open"))?;
        self.outlast_starting().await;
        let mut producers = Vec::with_capacity(self.ids.len());
        let mut starting = Vec::with_capacity(self.ids.len());
        for (i, id) in self.ids.iter().enumerate() {
            let mut c = config.clone();
            c.set("transactional.id", id);
            let p = Producer::create(&c, &self.node)?;
            let inner = p.inner.clone();
            let timeout = self.op_timeout;
            let what = format!("init_transactions for {id}");
            let node = self.node.clone();
            let init = async move {
                blocking(&node, &what, move || inner.init_transactions(timeout)).await
            };
            if i == 0 {
                init.await?;
            } else {
                starting.push((i, tokio::spawn(init)));
            }
            producers.push(p);
        }
        self.producers = producers;
        self.pool = Pool::starting_from(self.ids.len(), 1);
        self.starting = starting;
        Ok(())
    }

    /// Waits until no background `init_transactions` runs, ignoring their results: before an
    /// in-process restart creates new producers (an old init must not fence them) and at close.
    async fn outlast_starting(&mut self) {
        for (_, init) in self.starting.drain(..) {
            let _ = init.await;
        }
    }

    /// Waits for the background `init_transactions` of the next starting producer, or of all
    /// of them; the first that failed fails the sink.
    async fn await_starting(&mut self, all: bool) -> Result<()> {
        while !self.starting.is_empty() {
            let (i, init) = self.starting.remove(0);
            match init.await {
                Ok(r) => r?,
                Err(e) => {
                    return Err(Error::node(
                        &self.node,
                        format!("init_transactions for {} panicked: {e}", self.ids[i]),
                    ))
                }
            }
            self.pool.started(i);
            if !all {
                break;
            }
        }
        Ok(())
    }

    /// Workers at or above the current parallelism that a later run started, even one whose
    /// checkpoints never completed (rescale up, crash, restart from the older savepoint), so
    /// that no restored state names them. Their ids are probed upward from this worker's, a
    /// stride of `parallelism` apart, until a worker's first id was never used (Flink's rule);
    /// open transactions among them are aborted. Usually one DescribeTransactions.
    async fn fence_beyond_parallelism(&mut self, fenced: &[String]) -> Result<()> {
        let ctx = self
            .ctx
            .clone()
            .ok_or_else(|| Error::node(&self.node, "used before open"))?;
        let node = self.node.clone();
        let prefix = self.settings.transactional_id_prefix.clone();
        let timeout = self.transaction_timeout;
        let mut worker = ctx.worker + ctx.parallelism;
        while worker < ctx.max_parallelism.max(ctx.parallelism + 1) {
            let mut used = false;
            for index in 0..MAX_PROBED_POOL {
                let id = transactional_id(&prefix, &ctx.job, &ctx.node, worker, index);
                match probe(self.client()?, &node, &id, RECOVERY_PATIENCE).await? {
                    Probe::Unused | Probe::Retry => break,
                    Probe::Idle => used = true,
                    Probe::Open => {
                        used = true;
                        if !fenced.contains(&id) {
                            tracing::info!(node = %node, transactional_id = %id, "aborting a transaction left open by a worker beyond the current parallelism");
                            fence(self.client()?, &node, &id, timeout, RECOVERY_PATIENCE).await?;
                        }
                    }
                }
            }
            if !used {
                break;
            }
            worker += ctx.parallelism;
        }
        Ok(())
    }

    /// Moves later writes off the active transaction and returns what makes it durable: its
    /// flush and the DescribeTransactions that learns its producer id and epoch. Both wait on
    /// the network (p99 ~80 ms at 100 ms checkpoints), which is why the runtime runs this in the
    /// background (`begin_pre_commit`) while the next transaction is written.
    fn prepare(&mut self, barrier: Barrier) -> Result<Prepare<KafkaCommittable, KafkaSinkState>> {
        let state = KafkaSinkState {
            transactional_ids: self.ids.clone(),
        };
        let Some((i, records)) = self.pool.prepare(barrier.id) else {
            return Ok(async move { Ok((Vec::new(), state)) }.boxed());
        };
        let producer = self.producers[i].clone();
        let describer = self
            .describer
            .clone()
            .ok_or_else(|| Error::node(&self.node, "used before open"))?;
        let (node, id, timeout) = (self.node.clone(), self.ids[i].clone(), self.op_timeout);
        Ok(async move {
            let started = std::time::Instant::now();
            producer.flush(&node, timeout).await?;
            let flushed = started.elapsed();
            let d = describe_open(&mut *describer.lock().await, &node, &id, barrier.id).await?;
            tracing::debug!(node = %node, checkpoint = barrier.id, records, ?flushed, total = ?started.elapsed(), "pre-committed");
            let c = KafkaCommittable {
                transactional_id: id,
                producer_id: d.producer_id,
                producer_epoch: d.producer_epoch,
                checkpoint: barrier.id,
                records,
            };
            Ok((vec![c], state))
        }
        .boxed())
    }
}

#[async_trait]
impl TwoPhaseSink for TxnKafkaSink {
    type Committable = KafkaCommittable;
    type State = KafkaSinkState;

    async fn open(&mut self, ctx: &NodeContext) -> Result<()> {
        self.node = ctx.node.clone();
        self.ids = (0..self.settings.pool_size)
            .map(|i| {
                transactional_id(
                    &self.settings.transactional_id_prefix,
                    &ctx.job,
                    &ctx.node,
                    ctx.worker,
                    i,
                )
            })
            .collect();
        let s = &self.settings;
        let security = Security::from_properties(&s.properties)
            .map_err(|(name, why)| Error::spec(format!("{}.properties.{name}", self.path), why))?;
        let transport = Transport::new(&security).map_err(|e| Error::node(&self.node, e))?;
        let transport = Arc::new(transport);
        let mut client = TxnClient::new(&s.bootstrap_servers, PROTOCOL_TIMEOUT, transport.clone());
        self.describer = Some(Arc::new(tokio::sync::Mutex::new(TxnClient::new(
            &s.bootstrap_servers,
            PROTOCOL_TIMEOUT,
            transport,
        ))));
        // Our own client logs in first: librdkafka reports a refused login or certificate only
        // as "broker transport failure".
        client
            .login()
            .await
            .map_err(|e| Error::node(&self.node, e))?;
        self.client = Some(client);
        let mut config = super::producer_config(s);
        let cluster = Cluster::connect(&config, &self.node, &s.bootstrap_servers)?;
        if let TopicSpec::Fixed(t) = &s.topic {
            cluster.require_topic(t).await?;
        }
        let broker_max = match s.broker_max_timeout {
            Some(known) => Some(known),
            None => cluster.max_transaction_timeout().await?,
        };
        self.transaction_timeout =
            super::transaction_timeout(s, &self.path, &ctx.checkpoint, broker_max)?;
        config.set(
            TRANSACTION_TIMEOUT_MS,
            self.transaction_timeout.as_millis().to_string(),
        );
        if let Some((key, value)) =
            super::exactly_once_linger(&s.properties, ctx.checkpoint.interval.as_std())
        {
            config.set(key, value);
        }
        self.op_timeout = ctx.checkpoint.timeout.as_std().max(Duration::from_secs(10));
        self.config = Some(config);
        self.ctx = Some(ctx.clone());
        tracing::debug!(node = %self.node, timeout_ms = self.transaction_timeout.as_millis() as u64, "transaction timeout");
        Ok(())
    }

    async fn recover(
        &mut self,
        states: Vec<KafkaSinkState>,
        committables: Vec<KafkaCommittable>,
    ) -> Result<()> {
        let node = self.node.clone();
        for c in &committables {
            let outcome = recommit(self.client()?, &node, c, RECOVERY_PATIENCE).await?;
            match &outcome {
                Recommitted::Committed => tracing::info!(
                    node = %node, checkpoint = c.checkpoint, transactional_id = %c.transactional_id,
                    records = c.records, "re-committed a transaction the crash left uncommitted"
                ),
                Recommitted::AlreadyDone(v) => tracing::info!(
                    node = %node, checkpoint = c.checkpoint, transactional_id = %c.transactional_id,
                    verdict = ?v, "restored transaction was committed before"
                ),
                Recommitted::Lost => {
                    if let Some(ctx) = &self.ctx {
                        ctx.metrics.record_errors.inc_by(c.records);
                    }
                }
            }
        }
        // Ids of the workers taken over (other than this one's own, fenced by init_producers):
        // after a rescale those workers no longer exist to abort what they left open.
        let mut others: Vec<String> = states
            .into_iter()
            .flat_map(|s| s.transactional_ids)
            .filter(|id| !self.ids.contains(id))
            .collect();
        others.sort();
        others.dedup();
        let timeout = self.transaction_timeout;
        for id in &others {
            fence(self.client()?, &node, id, timeout, RECOVERY_PATIENCE).await?;
        }
        self.fence_beyond_parallelism(&others).await?;
        self.init_producers().await
    }

    async fn write(&mut self, batch: Batch) -> Result<()> {
        let mut bytes = 0u64;
        let mut sent = 0u64;
        let mut active = self.pool.active();
        if active.is_none() && !self.pool.has_idle() {
            // The next transaction needs a producer whose init may still be running.
            self.await_starting(false).await?;
        }
        for r in &batch.records {
            let m = encode(&self.settings, r).map_err(|why| Error::record(&self.node, r, why))?;
            let i = match active {
                Some(i) => i,
                None => {
                    let i = self.pool.start().ok_or_else(|| {
                        Error::node(
                            &self.node,
                            format!(
                                "all {} transactional producers are busy ({} transactions await checkpoints that did not complete); raise checkpoint.tolerable_failures or fix the failing checkpoints",
                                self.ids.len(),
                                self.pool.waiting()
                            ),
                        )
                    })?;
                    let p = self
                        .producers
                        .get(i)
                        .ok_or_else(|| Error::node(&self.node, "written to before recover"))?;
                    p.inner.begin_transaction().map_err(|e| {
                        Error::node(
                            &self.node,
                            format!("begin_transaction on {}: {e}", self.ids[i]),
                        )
                    })?;
                    active = Some(i);
                    i
                }
            };
            self.producers[i].send(&m).await.map_err(|e| {
                let why = format!("cannot send to topic {}: {e}", m.topic);
                Error::record(&self.node, r, why)
            })?;
            self.pool.wrote(i, 1);
            bytes += m.value.len() as u64;
            sent += 1;
        }
        if let Some(c) = &self.ctx {
            c.metrics.bytes_out.inc_by(bytes);
        }
        tracing::trace!(node = %self.node, sent, "batch sent");
        Ok(())
    }

    async fn pre_commit(
        &mut self,
        barrier: Barrier,
    ) -> Result<(Vec<KafkaCommittable>, KafkaSinkState)> {
        self.await_starting(true).await?;
        self.prepare(barrier)?.await
    }

    async fn begin_pre_commit(
        &mut self,
        barrier: Barrier,
    ) -> Result<Option<Prepare<KafkaCommittable, KafkaSinkState>>> {
        // Every producer's fencing is done before the first checkpoint can commit: until then
        // a transaction an earlier incarnation left open under its id could hold back what
        // read_committed consumers see.
        self.await_starting(true).await?;
        self.prepare(barrier).map(Some)
    }

    async fn commit(&mut self, committables: Vec<KafkaCommittable>) -> Result<()> {
        let Some(durable) = committables.iter().map(|c| c.checkpoint).max() else {
            return Ok(());
        };
        let node = self.node.clone();
        for c in &committables {
            match self.ids.iter().position(|id| *id == c.transactional_id) {
                Some(i) if self.pool.is_prepared(i, c.checkpoint) => {
                    let p = self.producers[i].inner.clone();
                    let timeout = self.op_timeout;
                    let what = format!(
                        "commit of {} (checkpoint {})",
                        c.transactional_id, c.checkpoint
                    );
                    let started = std::time::Instant::now();
                    blocking(&node, &what, move || p.commit_transaction(timeout)).await?;
                    tracing::debug!(node = %node, checkpoint = c.checkpoint, took = ?started.elapsed(), "committed");
                    self.pool.committed(i, durable);
                }
                // A repeated commit call: this transaction was committed by the first one.
                Some(i) => {
                    tracing::debug!(node = %node, checkpoint = c.checkpoint, slot = ?self.pool.slot(i), "already committed")
                }
                None => {
                    recommit(self.client()?, &node, c, RECOVERY_PATIENCE).await?;
                }
            }
        }
        self.pool.release(durable);
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        if let Some(i) = self.pool.active() {
            if matches!(self.pool.slot(i), Slot::Active { .. }) {
                let p = self.producers[i].inner.clone();
                let what = format!("abort of {}", self.ids[i]);
                let r = blocking(&self.node, &what, move || {
                    p.abort_transaction(Duration::from_secs(10))
                })
                .await;
                self.pool.aborted(i);
                r?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.abort().await?;
        self.outlast_starting().await;
        self.producers.clear();
        Ok(())
    }

    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        super::preflight(&self.settings, cfg, true).await
    }
}

/// The open transaction's producer id and epoch, straight from its coordinator.
async fn describe_open(
    client: &mut TxnClient,
    node: &str,
    id: &str,
    checkpoint: u64,
) -> Result<Described> {
    let mut delay = Duration::from_millis(20);
    let mut last = String::new();
    for _ in 0..10 {
        match client.describe(id).await {
            Ok(d) if d.error_code == codes::NONE && d.state == "Ongoing" => return Ok(d),
            Ok(d) if d.error_code == codes::NONE => {
                return Err(Error::node(
                    node,
                    format!(
                        "the transaction of checkpoint {checkpoint} on {id} is {} instead of open (aborted by the broker?)",
                        d.state
                    ),
                ))
            }
            Ok(d) if !codes::retriable(d.error_code) => {
                return Err(Error::node(
                    node,
                    format!("DescribeTransactions for {id}: {}", codes::name(d.error_code)),
                ))
            }
            Ok(d) => last = codes::name(d.error_code),
            Err(
                super::protocol::ProtocolError::Unsupported(m)
                | super::protocol::ProtocolError::Auth(m),
            ) => return Err(Error::node(node, m)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    Err(Error::node(
        node,
        format!("cannot learn the producer id and epoch of {id} from its coordinator: {last}"),
    ))
}
