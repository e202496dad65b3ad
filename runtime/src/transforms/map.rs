//! `map`: computes fields with CEL expressions. `mode: extend` (default) keeps the input fields
//! and sets the computed ones; `mode: project` keeps only the computed fields (in order).

use std::collections::BTreeMap;

use cel_interpreter::Context;
use serde::Deserialize;

use super::cel::{to_json, Expr};
use crate::api::{
    Batch, ConnectorConfig, NodeConfig, NodeContext, Output, Registry, Result, Transform,
};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;
use crate::ordered::OrderedMap;
use crate::record::Record;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Extend,
    Project,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapConfig {
    fields: OrderedMap<String>,
    #[serde(default)]
    mode: Mode,
    /// Input fields to drop (in `extend` mode).
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    on_error: OnError,
}

struct MapTransform {
    fields: Vec<(String, Expr)>,
    mode: Mode,
    drop: Vec<String>,
    on_error: OnError,
    root: Context<'static>,
    node: String,
    metrics: NodeMetrics,
}

impl MapTransform {
    fn apply(&self, r: &Record) -> std::result::Result<Record, String> {
        let mut fields = match self.mode {
            Mode::Extend => {
                let mut f = r.fields().clone();
                for d in &self.drop {
                    f.shift_remove(d);
                }
                f
            }
            Mode::Project => serde_json::Map::with_capacity(self.fields.len()),
        };
        for (name, expr) in &self.fields {
            let v = expr
                .eval(&self.root, r)
                .map_err(|e| format!("field {name:?}: cannot evaluate {:?}: {e}", expr.source))?;
            let v = to_json(&v).map_err(|e| format!("field {name:?}: {e}"))?;
            fields.insert(name.clone(), v);
        }
        Ok(Record::new(fields).with_event_time(r.event_time))
    }
}

impl Transform for MapTransform {
    fn open(&mut self, ctx: &NodeContext, _: BTreeMap<u32, serde_json::Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        Ok(())
    }

    fn process(&mut self, batch: Batch, out: &mut Output) -> Result<()> {
        let mut records = Vec::with_capacity(batch.records.len());
        for r in &batch.records {
            match self.apply(r) {
                Ok(m) => records.push(m),
                Err(why) => {
                    self.metrics.record_errors.inc();
                    self.on_error.reject(&self.node, r, why)?;
                }
            }
        }
        out.batches.push(Batch::new(batch.split, records));
        Ok(())
    }
}

/// What a `map` node runs with: its expressions compiled.
struct MapSettings {
    fields: Vec<(String, Expr)>,
    mode: Mode,
    drop: Vec<String>,
    on_error: OnError,
}

impl ConnectorConfig for MapConfig {
    type Settings = MapSettings;

    /// Compiles every expression; an error names the field it computes.
    fn resolve(self, cfg: &NodeConfig) -> Result<MapSettings> {
        if self.fields.0.is_empty() {
            return Err(cfg.error("fields", "must compute at least one field"));
        }
        let mut fields = Vec::new();
        for (name, src) in self.fields.0 {
            let e = Expr::compile(&src).map_err(|e| cfg.error(&format!("fields.{name}"), e))?;
            fields.push((name, e));
        }
        Ok(MapSettings {
            fields,
            mode: self.mode,
            drop: self.drop,
            on_error: self.on_error,
        })
    }
}

pub fn register(r: &mut Registry) {
    r.transform("map", |cfg| {
        let s = cfg.resolve::<MapConfig>()?;
        Ok(Box::new(MapTransform {
            fields: s.fields,
            mode: s.mode,
            drop: s.drop,
            on_error: s.on_error,
            root: Context::default(),
            node: cfg.name().to_string(),
            metrics: NodeMetrics::detached(),
        }))
    });
}
