//! `watermark`: sets each record's event time from a field and emits watermarks with bounded
//! out-of-orderness, tracked per split so one slow split does not let the others overtake it and
//! an idle split (no record for `idleness`) does not hold the rest back.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;
use weir_crds::Duration;

use crate::api::{
    Batch, ConnectorConfig, NodeConfig, NodeContext, Output, Registry, Result, Transform,
};
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;

use crate::event_time::{combined, parse_time, SplitClock, TimeFormat};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Field holding the event time; without it, the time the source set is used.
    pub field: Option<String>,
    #[serde(default)]
    pub format: TimeFormat,
    pub max_out_of_orderness: Duration,
    /// A split without records for this long stops holding the watermark back.
    pub idleness: Option<Duration>,
    #[serde(default)]
    pub on_error: OnError,
}

struct Watermarks {
    config: WatermarkConfig,
    splits: HashMap<String, SplitClock>,
    current: i64,
    node: String,
    metrics: NodeMetrics,
}

impl Watermarks {
    fn advance(&mut self, now_ms: i64, out: &mut Output) {
        let bound = self.config.max_out_of_orderness.as_millis() as i64;
        let idle = self.config.idleness.map(|d| d.as_millis() as i64);
        if let Some(w) = combined(&self.splits, bound, idle, now_ms) {
            if w > self.current {
                self.current = w;
                out.watermark = Some(w);
            }
        }
    }
}

impl Transform for Watermarks {
    fn open(&mut self, ctx: &NodeContext, _: BTreeMap<u32, Value>) -> Result<()> {
        self.node = ctx.node.clone();
        self.metrics = ctx.metrics.clone();
        Ok(())
    }

    fn process(&mut self, mut batch: Batch, out: &mut Output) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let split = batch.split.as_deref().unwrap_or("").to_string();
        let mut max = i64::MIN;
        let mut failure = None;
        batch.records.retain_mut(|r| {
            if failure.is_some() {
                return false;
            }
            let t = match &self.config.field {
                None => r
                    .event_time
                    .ok_or_else(|| "the record has no event time (set `field`)".to_string()),
                // One field: read without building a record still in its JSON text.
                Some(f) => match r.get(f) {
                    None => Err(format!("no field {f:?}")),
                    Some(v) => parse_time(&v, self.config.format),
                },
            };
            match t {
                Ok(t) => {
                    r.event_time = Some(t);
                    max = max.max(t);
                    true
                }
                Err(why) => {
                    self.metrics.record_errors.inc();
                    failure = self.config.on_error.reject(&self.node, r, why).err();
                    false
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let clock = self.splits.entry(split).or_insert(SplitClock {
            max_event: i64::MIN,
            last_seen_ms: now,
        });
        clock.last_seen_ms = now;
        clock.max_event = clock.max_event.max(max);
        out.batches.push(batch);
        self.advance(now, out);
        Ok(())
    }

    fn on_watermark(&mut self, _: i64, _: &mut Output) -> Result<()> {
        // This node assigns watermarks; upstream ones are replaced, not forwarded.
        Ok(())
    }

    fn on_tick(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        self.advance(now_ms, out);
        Ok(())
    }
}

/// The settings are what the node runs with, once checked.
impl ConnectorConfig for WatermarkConfig {
    type Settings = WatermarkConfig;

    fn resolve(self, cfg: &NodeConfig) -> Result<WatermarkConfig> {
        if self.field.as_deref().is_some_and(str::is_empty) {
            return Err(cfg.error(
                "field",
                "must not be empty (leave it out to use the time the source set)",
            ));
        }
        if self.idleness.is_some_and(|d| d.as_millis() == 0) {
            return Err(cfg.error(
                "idleness",
                "must be more than 0s (every split would count as idle)",
            ));
        }
        Ok(self)
    }
}

pub fn register(r: &mut Registry) {
    r.transform("watermark", |cfg| {
        let config = cfg.resolve::<WatermarkConfig>()?;
        Ok(Box::new(Watermarks {
            config,
            splits: HashMap::new(),
            current: i64::MIN,
            node: cfg.name().to_string(),
            metrics: NodeMetrics::detached(),
        }))
    });
    r.spec_check(check_event_time_sources);
}

/// A `watermark` without `field` reads the event time its sources set, which they do only with
/// their `event_time` setting: name every source upstream that sets none (found through the
/// built-in transforms that pass event times on unchanged; a custom transform may set them).
pub fn check_event_time_sources(
    spec: &weir_crds::PipelineSpec,
    topology: &weir_crds::pipeline::Topology,
) -> Vec<weir_crds::SpecError> {
    const PASS_THROUGH: [&str; 3] = ["filter", "map", "async_lookup"];
    let mut errors = Vec::new();
    for (i, t) in spec.transforms.iter().enumerate() {
        if t.kind != "watermark" || t.config.contains_key("field") {
            continue;
        }
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<&str> = topology
            .inputs
            .get(&t.name)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            if let Some(src) = spec.sources.iter().find(|s| s.name == name) {
                if !src.config.contains_key("event_time") {
                    missing.push(format!("{name:?}"));
                }
            } else if let Some(up) = spec.transforms.iter().find(|u| u.name == name) {
                if PASS_THROUGH.contains(&up.kind.as_str()) {
                    todo.extend(
                        topology
                            .inputs
                            .get(name)
                            .into_iter()
                            .flatten()
                            .map(String::as_str),
                    );
                }
            }
        }
        if !missing.is_empty() {
            missing.sort();
            errors.push(weir_crds::SpecError::new(
                format!("transforms[{i}].field"),
                format!(
                    "required: the source {} sets no event time (name the record's time field \
                     here, or give the source an event_time setting)",
                    missing.join(", ")
                ),
            ));
        }
    }
    errors
}
