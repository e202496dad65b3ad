//! `preloaded_lookup`: joins each record against a table held in memory on every worker (the
//! broadcast-state pattern): no network call per record, so enrichment runs at the engine's
//! own speed.
//!
//! ```yaml
//! transforms:
//!   - name: enrich
//!     type: preloaded_lookup
//!     key: user_id                       # record field(s) looked up
//!     table: { type: file, path: users.jsonl, key: id }          # JSON lines, local or s3://
//!     # table: { type: jdbc, url_env: DATABASE_URL, query: "SELECT id, name FROM users", key: id }
//!     # table: { type: kafka, bootstrap_servers: "k:9092", topic: users }   # compacted, followed
//!     fields: { user_name: name, tier: plan.tier }   # output field ← row path
//!     on_miss: null                      # null (left join, default) | drop (inner join) | fail
//!     reload: 10m                        # file and jdbc: load again this often
//!     max_rows: 10000000                 # limits: beyond them the job fails naming the setting
//!     max_bytes: 512MiB
//! ```
//!
//! # Versions and checkpoints
//! A table holds each row's output fields only (the `fields` paths are read once, at load).
//! A loaded table's version is the SHA-256 of those rows and of the field names and paths. Each version is written once to
//! checkpoint storage (`<job>/lookup-tables/<node>/<version>.jsonl`) before any record is
//! joined against it, and a checkpoint holds only the version: a restart joins against exactly
//! the table its checkpoint saw, even if the file or database changed meanwhile, until the next
//! reload. A Kafka table's checkpoint holds the topic offsets it was built from; a restart
//! rebuilds it from the topic up to them, then follows the topic again.

mod config;
#[cfg(feature = "kafka")]
mod follow;
mod load;
mod table;

use std::collections::BTreeMap;
use std::ops::Range;

use async_trait::async_trait;
use compact_str::CompactString;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{
    AsyncTransform, Barrier, Batch, NodeConfig, NodeContext, Output, Record, Registry,
};
use crate::checkpoint::key_group_range;
use crate::error::{Error, Result};
use crate::metrics::NodeMetrics;
use crate::transforms::async_io::config::Policy;
use config::{PreloadedLookupConfig, Settings};
use load::{LoadError, Snapshots};
use table::Table;

pub fn register(r: &mut Registry) {
    r.async_transform("preloaded_lookup", |cfg| {
        let settings = cfg.resolve::<PreloadedLookupConfig>()?;
        Ok(Box::new(PreloadedLookup::new(settings, cfg.name())) as Box<dyn AsyncTransform>)
    });
}

pub struct PreloadedLookup {
    settings: Settings,
    node: String,
    table: Table,
    /// The loaded table's version (file and jdbc).
    version: String,
    snapshots: Option<Snapshots>,
    reloads: Option<mpsc::Receiver<std::result::Result<Table, LoadError>>>,
    reloader: Option<JoinHandle<()>>,
    #[cfg(feature = "kafka")]
    follower: Option<follow::Follower>,
    key_groups: Range<u32>,
    metrics: NodeMetrics,
}

impl PreloadedLookup {
    pub fn new(settings: Settings, node: &str) -> Self {
        PreloadedLookup {
            table: Table::new(settings.mapping.clone()),
            settings,
            node: node.to_string(),
            version: String::new(),
            snapshots: None,
            reloads: None,
            reloader: None,
            #[cfg(feature = "kafka")]
            follower: None,
            key_groups: 0..0,
            metrics: NodeMetrics::detached(),
        }
    }

    fn load_error(&self, e: LoadError) -> Error {
        match e {
            LoadError::Unavailable(m) => Error::node(&self.node, format!("loading the table: {m}")),
            LoadError::Invalid(m) => Error::fatal(&self.node, format!("loading the table: {m}")),
        }
    }

    /// Makes `table` the one records are joined against, written to checkpoint storage first
    /// so that a checkpoint naming its version can always be restored.
    async fn install(&mut self, table: Table) -> Result<()> {
        let lines = table.to_lines();
        let version = table::version_of(&lines);
        if version == self.version {
            return Ok(());
        }
        if let Some(s) = &self.snapshots {
            s.save(&version, lines)
                .await
                .map_err(|e| Error::node(&self.node, e))?;
        }
        if table.is_empty() {
            tracing::warn!(node = %self.node, %version, "the lookup table is empty: every record misses (on_miss)");
        }
        tracing::info!(node = %self.node, rows = table.len(), bytes = table.bytes(), %version,
            "lookup table loaded");
        self.table = table;
        self.version = version;
        Ok(())
    }

    /// Takes the newest finished reload, if any. A reload the source did not answer keeps the
    /// current table (logged); one that can never load fails the job.
    async fn apply_reloads(&mut self) -> Result<()> {
        let mut newest = None;
        if let Some(rx) = self.reloads.as_mut() {
            while let Ok(r) = rx.try_recv() {
                newest = Some(r);
            }
        }
        match newest {
            None => Ok(()),
            Some(Ok(table)) => self.install(table).await,
            Some(Err(LoadError::Unavailable(m))) => {
                tracing::warn!(node = %self.node, error = %m, "reloading the lookup table failed; joining against the current one until the next reload");
                Ok(())
            }
            Some(Err(e)) => Err(self.load_error(e)),
        }
    }

    fn start_reloads(&mut self) {
        let Some(every) = self.settings.reload else {
            return;
        };
        let (tx, rx) = mpsc::channel(1);
        let settings = self.settings.clone();
        self.reloads = Some(rx);
        self.reloader = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if tx.send(load::load(&settings).await).await.is_err() {
                    return;
                }
            }
        }));
    }

    /// The key text of a record (into `key`, a buffer reused across records), or why the record
    /// cannot be joined. A key of one field (the usual case) is read without allocating.
    fn key_of(&self, r: &Record, key: &mut String) -> std::result::Result<(), String> {
        let field = |f: &String| {
            r.get(f)
                .ok_or_else(|| format!("no field {f:?} (a field of the lookup `key`)"))
        };
        match self.settings.key.as_slice() {
            [f] => table::key_into(&[field(f)?.as_ref()], key),
            fields => {
                let values = fields
                    .iter()
                    .map(field)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let refs: Vec<&Value> = values.iter().map(|v| v.as_ref()).collect();
                table::key_into(&refs, key);
            }
        }
        Ok(())
    }

    /// The table records are joined against: the followed topic's, or the loaded one.
    fn table(&self) -> &Table {
        #[cfg(feature = "kafka")]
        if let Some(f) = &self.follower {
            return f.table();
        }
        &self.table
    }

    /// Every record's row, looked up before any record is written, in two passes: first every
    /// key (reading the record's field and formatting it), then every probe. A table of
    /// 100,000 rows is out of the core's cache and each probe waits for a miss; probes that
    /// follow each other with little work between them are in flight together, while a probe
    /// behind a key's formatting waited for its miss alone (the probe was 18 % of the node's
    /// time with one pass).
    fn rows_of<'a>(&'a self, records: &[Record]) -> Result<Vec<Option<&'a [Value]>>> {
        let mut key = String::new();
        let keys = records
            .iter()
            .map(|r| {
                self.key_of(r, &mut key)
                    .map(|()| CompactString::from(key.as_str()))
                    .map_err(|message| Error::Record {
                        node: self.node.clone(),
                        record: r.describe(),
                        message,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let table = self.table();
        Ok(keys.iter().map(|k| table.get(k)).collect())
    }

    /// Writes a record's output fields from its row: whether it is kept (`on_miss: drop`
    /// drops a miss).
    fn enrich(&self, r: &mut Record, row: Option<&[Value]>) -> Result<bool> {
        let names = &self.settings.mapping.0;
        match (row, self.settings.on_miss) {
            (Some(row), _) => {
                // Straight into the record: the row holds the output fields in the mapping's
                // order, so there is no path to walk and no intermediate map per record.
                let fields = r.fields_mut();
                for ((name, _), value) in names.iter().zip(row) {
                    fields.insert(name.clone(), value.clone());
                }
            }
            (None, Policy::Null) => {
                let fields = r.fields_mut();
                for (name, _) in names {
                    fields.insert(name.clone(), Value::Null);
                }
            }
            (None, Policy::Drop) => {
                self.metrics.record_errors.inc();
                return Ok(false);
            }
            (None, Policy::Fail) => {
                return Err(Error::Record {
                    node: self.node.clone(),
                    record: r.describe(),
                    message: "its key is not in the lookup table (on_miss: fail)".into(),
                })
            }
        }
        Ok(true)
    }

    fn restored_state(&self, restored: &BTreeMap<u32, Value>) -> Option<Value> {
        // Every worker holds the whole table; after a rescale the state of the lowest key group
        // this worker received is as good as any.
        restored.values().next().cloned()
    }
}

#[async_trait]
impl AsyncTransform for PreloadedLookup {
    async fn open(&mut self, ctx: &NodeContext, restored: BTreeMap<u32, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        self.key_groups = key_group_range(ctx.worker, ctx.parallelism, ctx.max_parallelism);
        let state = self.restored_state(&restored);
        #[cfg(feature = "kafka")]
        if let config::TableSource::Kafka { .. } = &self.settings.source {
            let offsets = state
                .as_ref()
                .and_then(|s| s.get("offsets"))
                .map(|o| serde_json::from_value(o.clone()))
                .transpose()
                .map_err(|e| Error::Checkpoint(format!("{}: table offsets: {e}", self.node)))?;
            let f = follow::Follower::start(&self.settings, &self.node, offsets)
                .await
                .map_err(|e| self.load_error(e))?;
            self.follower = Some(f);
            return Ok(());
        }
        let cp = &ctx.checkpoint;
        self.snapshots = Some(Snapshots::open(
            &cp.storage,
            &cp.storage_options,
            &ctx.job,
            &ctx.node,
        )?);
        let wanted = state
            .as_ref()
            .and_then(|s| s.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut restored_table = None;
        if let (Some(v), Some(s)) = (&wanted, &self.snapshots) {
            restored_table = s
                .load(v, &self.settings.mapping, &self.settings.limits)
                .await
                .map_err(|e| Error::node(&self.node, e))?;
            if restored_table.is_none() {
                tracing::warn!(node = %self.node, version = %v,
                    "the checkpoint's table version is no longer in checkpoint storage (pruned), or was taken under other `fields`; loading the table afresh");
            }
        }
        let table = match restored_table {
            Some(t) => t,
            None => load::load(&self.settings)
                .await
                .map_err(|e| self.load_error(e))?,
        };
        self.install(table).await?;
        self.start_reloads();
        Ok(())
    }

    async fn process(&mut self, mut batch: Batch, out: &mut Output) -> Result<()> {
        self.apply_reloads().await?;
        #[cfg(feature = "kafka")]
        if let Some(f) = self.follower.as_mut() {
            f.apply_updates().map_err(|e| Error::fatal(&self.node, e))?;
        }
        let rows = self.rows_of(&batch.records)?;
        table::prefetch(&rows);
        // In place: records are not moved into a new batch (a record is ~150 bytes; moving
        // every one was a tenth of this node's time).
        let mut rows = rows.into_iter();
        let mut failed = None;
        batch.records.retain_mut(|r| {
            let row = rows.next().flatten();
            if failed.is_some() {
                return true;
            }
            self.enrich(r, row).unwrap_or_else(|e| {
                failed = Some(e);
                true
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        out.batches.push(batch);
        Ok(())
    }

    async fn snapshot(
        &mut self,
        _barrier: &Barrier,
        _out: &mut Output,
    ) -> Result<BTreeMap<u32, Value>> {
        let mut state = BTreeMap::new();
        // The table is the same for every key group: one group of this worker holds its version.
        let Some(group) = self.key_groups.clone().next() else {
            return Ok(state);
        };
        #[cfg(feature = "kafka")]
        if let Some(f) = &self.follower {
            state.insert(group, json!({ "offsets": f.offsets() }));
            return Ok(state);
        }
        state.insert(group, json!({ "version": self.version }));
        Ok(state)
    }

    async fn finish(&mut self, _out: &mut Output) -> Result<()> {
        if let Some(t) = self.reloader.take() {
            t.abort();
        }
        Ok(())
    }

    /// The table loads within its limits (file and jdbc: loaded whole, as at open; kafka: the
    /// brokers answer and the topic exists).
    async fn preflight(&mut self, cfg: &NodeConfig) -> Result<Vec<String>> {
        #[cfg(feature = "kafka")]
        if let config::TableSource::Kafka { .. } = &self.settings.source {
            return follow::preflight(&self.settings)
                .await
                .map_err(|e| cfg.error("table", e.to_string()))
                .map(|l| vec![l]);
        }
        match load::load(&self.settings).await {
            Ok(t) => Ok(vec![format!(
                "the table loads: {} rows, about {}",
                t.len(),
                weir_crds::units::ByteSize(t.bytes())
            )]),
            Err(LoadError::Invalid(m)) => Err(cfg.error("table", m)),
            Err(LoadError::Unavailable(m)) => Err(Error::node(cfg.name(), m)),
        }
    }
}

impl Drop for PreloadedLookup {
    fn drop(&mut self) {
        if let Some(t) = self.reloader.take() {
            t.abort();
        }
    }
}
