//! `watermark`: sets each record's event time from a field and emits watermarks with bounded
//! out-of-orderness, tracked per split so one slow split does not let the others overtake it and
//! an idle split (no record for `idleness`) does not hold the rest back.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;
use weir_crds::Duration;

use crate::api::{Batch, NodeContext, Output, Result, Transform};
use crate::error::Error;
use crate::metrics::NodeMetrics;
use crate::on_error::OnError;
use crate::registry::Registry;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default, Debug)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Numbers are milliseconds since the epoch, strings RFC 3339.
    #[default]
    Auto,
    Millis,
    Seconds,
    Rfc3339,
}

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

/// `watermark:` of a source that reads event time itself (Kafka, Kinesis, Pub/Sub): one
/// definition for all of them, so the setting means the same wherever it is written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSettings {
    /// How late (in event time) a record may arrive behind the newest one seen.
    pub max_out_of_orderness: Duration,
    /// A split without records for this long stops holding the watermark back: a Kafka
    /// partition or Kinesis shard that never receives a record would otherwise hold it forever
    /// (a Kinesis shard that ended never holds it), and a Pub/Sub worker without messages follows
    /// the wall clock (minus `max_out_of_orderness`) so a drained subscription does not hold
    /// event time back.
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
}

/// Parses an event time; an error says why.
pub fn parse_time(v: &Value, format: TimeFormat) -> std::result::Result<i64, String> {
    match (v, format) {
        (Value::Number(n), TimeFormat::Auto | TimeFormat::Millis) => {
            n.as_i64().ok_or_else(|| format!("{n} is not an integer"))
        }
        (Value::Number(n), TimeFormat::Seconds) => n
            .as_f64()
            .map(|s| (s * 1000.0) as i64)
            .ok_or_else(|| format!("{n} is not a number")),
        (Value::String(s), TimeFormat::Auto | TimeFormat::Rfc3339) => {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
        }
        (other, f) => Err(format!("{other} is not a {f:?} time")),
    }
}

/// Per-split progress, and the watermark rule as a pure function of it.
#[derive(Debug, Default, Clone)]
pub struct SplitClock {
    pub max_event: i64,
    pub last_seen_ms: i64,
}

/// The worker watermark: minimum over splits that are not idle, each `max - bound - 1`.
/// `None` while no active split has seen a record.
pub fn combined(
    splits: &HashMap<String, SplitClock>,
    bound_ms: i64,
    idle_ms: Option<i64>,
    now_ms: i64,
) -> Option<i64> {
    splits
        .values()
        .filter(|c| idle_ms.is_none_or(|i| now_ms - c.last_seen_ms < i))
        .map(|c| c.max_event.saturating_sub(bound_ms).saturating_sub(1))
        .min()
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
                None => r.event_time.ok_or_else(|| "the record has no event time (set `field`)".to_string()),
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
                    match self.config.on_error {
                        OnError::Fail | OnError::DeadLetter(_) => {
                            failure = Some(Error::Record { node: self.node.clone(), record: r.describe(), message: why })
                        }
                        OnError::Skip => tracing::warn!(node = %self.node, record = %r.describe(), "skipped: {why}"),
                    }
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

pub fn register(r: &mut Registry) {
    r.transform("watermark", |cfg| {
        let config: WatermarkConfig = cfg.parse()?;
        Ok(Box::new(Watermarks {
            config,
            splits: HashMap::new(),
            current: i64::MIN,
            node: cfg.name().to_string(),
            metrics: NodeMetrics::detached(),
        }))
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(max: i64, seen: i64) -> SplitClock {
        SplitClock {
            max_event: max,
            last_seen_ms: seen,
        }
    }

    #[test]
    fn slowest_active_split_sets_the_watermark() {
        let mut s = HashMap::new();
        s.insert("a".into(), clock(10_000, 1000));
        s.insert("b".into(), clock(4_000, 1000));
        assert_eq!(combined(&s, 1000, None, 1500), Some(2_999));
        // b idle for 30 s: only a counts.
        assert_eq!(combined(&s, 1000, Some(30_000), 31_001), None);
        s.insert("a".into(), clock(10_000, 31_000));
        assert_eq!(combined(&s, 1000, Some(30_000), 31_001), Some(8_999));
    }

    #[test]
    fn parses_time_formats() {
        assert_eq!(parse_time(&Value::from(1500), TimeFormat::Auto), Ok(1500));
        assert_eq!(parse_time(&Value::from(1.5), TimeFormat::Seconds), Ok(1500));
        assert_eq!(
            parse_time(&Value::from("1970-01-01T00:00:01.5Z"), TimeFormat::Auto),
            Ok(1500)
        );
        assert!(parse_time(&Value::from("noon"), TimeFormat::Auto)
            .unwrap_err()
            .contains("RFC 3339"));
    }
}
