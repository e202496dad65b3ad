//! `filter`: keeps the records for which a CEL expression is true.

use std::collections::BTreeMap;

use cel_interpreter::{Context, Value as Cel};
use serde::Deserialize;

use super::cel::Expr;
use crate::api::{
    Batch, ConnectorConfig, NodeConfig, NodeContext, Output, Registry, Result, Transform,
};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    expr: String,
    #[serde(default)]
    on_error: OnError,
}

struct Filter {
    expr: Expr,
    on_error: OnError,
    root: Context<'static>,
    node: String,
    metrics: NodeMetrics,
}

impl Transform for Filter {
    fn open(&mut self, ctx: &NodeContext, _: BTreeMap<u32, serde_json::Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        Ok(())
    }

    fn process(&mut self, mut batch: Batch, out: &mut Output) -> Result<()> {
        let mut failure = None;
        batch.records.retain(|r| {
            if failure.is_some() {
                return false;
            }
            let why = match self.expr.eval(&self.root, r) {
                Ok(Cel::Bool(keep)) => return keep,
                Ok(other) => format!(
                    "filter expression {:?} gave {other:?}, not a bool",
                    self.expr.source
                ),
                Err(e) => format!("cannot evaluate {:?}: {e}", self.expr.source),
            };
            self.metrics.record_errors.inc();
            failure = self.on_error.reject(&self.node, r, why).err();
            false
        });
        if let Some(e) = failure {
            return Err(e);
        }
        out.batches.push(batch);
        Ok(())
    }
}

/// What a `filter` node runs with: its expression compiled.
struct FilterSettings {
    expr: Expr,
    on_error: OnError,
}

impl ConnectorConfig for FilterConfig {
    type Settings = FilterSettings;

    fn resolve(self, cfg: &NodeConfig) -> Result<FilterSettings> {
        let expr = Expr::compile(&self.expr).map_err(|e| cfg.error("expr", e))?;
        Ok(FilterSettings {
            expr,
            on_error: self.on_error,
        })
    }
}

pub fn register(r: &mut Registry) {
    r.transform("filter", |cfg| {
        let s = cfg.resolve::<FilterConfig>()?;
        Ok(Box::new(Filter {
            expr: s.expr,
            on_error: s.on_error,
            root: Context::default(),
            node: cfg.name().to_string(),
            metrics: NodeMetrics::detached(),
        }))
    });
}
