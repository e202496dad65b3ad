//! Field values as pure functions of (seed, record index, field position).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::config::{self, DatagenConfig, FieldSpec, TimeFormat};
use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;

/// splitmix64: a tiny, well-mixed hash; the same input always gives the same value.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

enum Gen {
    Sequence(i64),
    Int {
        min: i64,
        span: u64,
        prefix: Option<String>,
    },
    Float {
        min: f64,
        width: f64,
    },
    Str {
        length: usize,
        prefix: String,
    },
    Choice(Vec<Value>),
    Bool,
    Time {
        start_ms: i64,
        step_ms: i64,
        jitter_ms: i64,
        format: TimeFormat,
    },
}

pub struct Generator {
    fields: Vec<(String, Gen)>,
    seed: u64,
    event_time: Option<usize>,
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// 36^6: six base-36 digits fit a `u32`.
const SIX_DIGITS: u64 = 36u64.pow(6);

/// Two base-36 digits at once: entry `v` holds the characters of `v % 36` and `v / 36`, so a
/// division by 1,296 yields two characters where one by 36 yielded one.
const PAIRS: [[u8; 2]; 1296] = {
    let mut t = [[0u8; 2]; 1296];
    let mut v = 0;
    while v < 1296 {
        t[v] = [ALPHABET[v % 36], ALPHABET[v / 36]];
        v += 1;
    }
    t
};

/// Appends `length` characters of [`ALPHABET`] drawn from `state`: the base-36 digits of the
/// state, least significant first. 12 characters use up a 64-bit draw (36^12 ≈ 2^62); the next
/// 12 come from the next state, not from the draw's remainder (which has only 2 bits left:
/// mixing it gave every string one of 4 tails).
///
/// Each draw is split into two 6-digit halves whose digits are taken in two independent `u32`
/// chains: one chain of 12 dependent 64-bit divisions made this loop the largest part of
/// datagen's time (datagen → Pub/Sub bench); the pairs of [`PAIRS`] halve the divisions
/// again. The characters are the same either way.
fn random_text(mut state: u64, length: usize, out: &mut String) {
    let mut left = length;
    let mut first = true;
    while left > 0 {
        if !first {
            state = mix(state);
        }
        first = false;
        let take = left.min(12);
        let (mut lo, mut hi) = (
            (state % SIX_DIGITS) as u32,
            ((state / SIX_DIGITS) % SIX_DIGITS) as u32,
        );
        let mut digits = [0u8; 12];
        for k in 0..3 {
            digits[2 * k..2 * k + 2].copy_from_slice(&PAIRS[(lo % 1296) as usize]);
            digits[6 + 2 * k..8 + 2 * k].copy_from_slice(&PAIRS[(hi % 1296) as usize]);
            lo /= 1296;
            hi /= 1296;
        }
        // Appended as one slice: a char at a time (each UTF-8 encoded and capacity-checked)
        // was most of this function's time.
        out.push_str(std::str::from_utf8(&digits[..take]).expect("ALPHABET is ASCII"));
        left -= take;
    }
}

impl Generator {
    /// Checks every generator; an error is (field path, message).
    pub fn new(c: &DatagenConfig) -> Result<Self, (String, String)> {
        let mut fields = Vec::new();
        for (name, spec) in &c.fields.0 {
            let path = format!("fields.{name}");
            let g = match spec {
                FieldSpec::Sequence { start } => Gen::Sequence(*start),
                FieldSpec::Int { min, max, prefix } => {
                    if max < min {
                        return Err((
                            format!("{path}.max"),
                            format!("must be at least min ({min})"),
                        ));
                    }
                    Gen::Int {
                        min: *min,
                        span: (max.wrapping_sub(*min) as u64).wrapping_add(1),
                        prefix: prefix.clone(),
                    }
                }
                FieldSpec::Float { min, max } => {
                    if max.partial_cmp(min).is_none_or(|o| o.is_lt()) {
                        return Err((
                            format!("{path}.max"),
                            format!("must be at least min ({min})"),
                        ));
                    }
                    if !(max - min).is_finite() {
                        return Err((
                            format!("{path}.max"),
                            "max - min must be a finite number".into(),
                        ));
                    }
                    Gen::Float {
                        min: *min,
                        width: max - min,
                    }
                }
                FieldSpec::String { length, prefix } => {
                    if *length > super::config::STRING_LENGTH_LIMIT {
                        return Err((
                            format!("{path}.length"),
                            format!("must be at most {}", super::config::STRING_LENGTH_LIMIT),
                        ));
                    }
                    Gen::Str {
                        length: *length,
                        prefix: prefix.clone(),
                    }
                }
                FieldSpec::Choice { values } => {
                    if values.is_empty() {
                        return Err((
                            format!("{path}.values"),
                            "must list at least one value".into(),
                        ));
                    }
                    Gen::Choice(values.clone())
                }
                FieldSpec::Bool => Gen::Bool,
                FieldSpec::Timestamp {
                    start,
                    step,
                    jitter,
                    format,
                } => {
                    let start = DateTime::parse_from_rfc3339(start).map_err(|e| {
                        (
                            format!("{path}.start"),
                            format!("expected an RFC 3339 time like 2024-01-01T00:00:00Z: {e}"),
                        )
                    })?;
                    Gen::Time {
                        start_ms: start.timestamp_millis(),
                        step_ms: step.as_millis() as i64,
                        jitter_ms: jitter.as_millis() as i64,
                        format: *format,
                    }
                }
            };
            fields.push((name.clone(), g));
        }
        let event_time = match &c.event_time {
            None => None,
            Some(f) => match fields.iter().position(|(n, _)| n == f) {
                Some(i)
                    if matches!(
                        fields[i].1,
                        Gen::Time { .. } | Gen::Sequence(_) | Gen::Int { prefix: None, .. }
                    ) =>
                {
                    Some(i)
                }
                Some(_) => {
                    return Err((
                        "event_time".into(),
                        format!("field {f:?} is not a timestamp or integer"),
                    ))
                }
                None => return Err(("event_time".into(), format!("no field named {f:?}"))),
            },
        };
        Ok(Generator {
            fields,
            seed: c.seed,
            event_time,
        })
    }

    fn rand(&self, index: u64, field: usize) -> u64 {
        mix(mix(self.seed ^ index.wrapping_mul(0x100_0000_01B3)) ^ field as u64)
    }

    fn event_ms(&self, g: &Gen, index: u64, field: usize) -> i64 {
        match g {
            Gen::Time {
                start_ms,
                step_ms,
                jitter_ms,
                ..
            } => {
                let jitter = if *jitter_ms > 0 {
                    (self.rand(index, field) % (2 * *jitter_ms as u64 + 1)) as i64 - jitter_ms
                } else {
                    0
                };
                start_ms + index as i64 * step_ms + jitter
            }
            _ => 0,
        }
    }

    /// Record `index`: its fields and event time.
    pub fn record(&self, index: u64) -> (Map<String, Value>, Option<i64>) {
        let mut m = Map::with_capacity(self.fields.len());
        let mut event_time = None;
        for (i, (name, g)) in self.fields.iter().enumerate() {
            let v = match g {
                Gen::Sequence(start) => Value::from(start + index as i64),
                Gen::Int { min, span, prefix } => {
                    let r = if *span == 0 {
                        self.rand(index, i)
                    } else {
                        self.rand(index, i) % span
                    };
                    let n = min.wrapping_add(r as i64);
                    match prefix {
                        // `format!` goes through the formatting machinery for two pieces.
                        Some(p) => {
                            let mut digits = itoa::Buffer::new();
                            let digits = digits.format(n);
                            let mut s = String::with_capacity(p.len() + digits.len());
                            s.push_str(p);
                            s.push_str(digits);
                            Value::String(s)
                        }
                        None => Value::from(n),
                    }
                }
                Gen::Float { min, width } => {
                    let unit = (self.rand(index, i) >> 11) as f64 / (1u64 << 53) as f64;
                    Value::from(((min + unit * width) * 100.0).round() / 100.0)
                }
                Gen::Str { length, prefix } => {
                    let mut s = String::with_capacity(prefix.len() + length);
                    s.push_str(prefix);
                    random_text(self.rand(index, i), *length, &mut s);
                    Value::String(s)
                }
                Gen::Choice(values) => {
                    values[(self.rand(index, i) % values.len() as u64) as usize].clone()
                }
                Gen::Bool => Value::Bool(self.rand(index, i) & 1 == 1),
                Gen::Time { format, .. } => {
                    let ms = self.event_ms(g, index, i);
                    match format {
                        TimeFormat::Millis => Value::from(ms),
                        TimeFormat::Rfc3339 => match DateTime::<Utc>::from_timestamp_millis(ms) {
                            Some(t) => {
                                Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
                            }
                            None => Value::Null,
                        },
                    }
                }
            };
            if self.event_time == Some(i) {
                event_time = Some(match g {
                    Gen::Time { .. } => self.event_ms(g, index, i),
                    _ => v.as_i64().unwrap_or(0),
                });
            }
            m.insert(name.clone(), v);
        }
        (m, event_time)
    }
}

/// Here rather than in config.rs: checking the fields is building the generator.
impl ConnectorConfig for DatagenConfig {
    /// The settings and the generator they describe (building it checks the fields).
    type Settings = (DatagenConfig, Generator);

    fn resolve(self, cfg: &NodeConfig) -> Result<(DatagenConfig, Generator)> {
        let gen = Generator::new(&self).map_err(|(field, msg)| cfg.error(&field, msg))?;
        if !(1..=config::SPLITS_LIMIT).contains(&self.splits) {
            return Err(cfg.error(
                "splits",
                format!("must be from 1 to {}", config::SPLITS_LIMIT),
            ));
        }
        if !(1..=config::BATCH_SIZE_LIMIT).contains(&self.batch_size) {
            return Err(cfg.error(
                "batch_size",
                format!("must be from 1 to {}", config::BATCH_SIZE_LIMIT),
            ));
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err(cfg.error("rate", "must be a positive number of records per second"));
        }
        Ok((self, gen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> DatagenConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    /// The split draw gives exactly the characters of the plain one-digit-at-a-time loop, so
    /// a job's generated data did not change with it.
    #[test]
    fn random_text_is_the_base_36_digits_of_each_draw() {
        fn plain(mut state: u64, length: usize) -> String {
            let mut s = String::new();
            let mut r = state;
            for k in 0..length {
                if k > 0 && k % 12 == 0 {
                    state = mix(state);
                    r = state;
                }
                s.push(ALPHABET[(r % 36) as usize] as char);
                r /= 36;
            }
            s
        }
        for (state, length) in [
            (0, 0),
            (0, 13),
            (u64::MAX, 120),
            (1, 1),
            (12345, 12),
            (987654321, 37),
        ]
        .into_iter()
        .chain((0..200).map(|i| (mix(i), (i % 50) as usize)))
        {
            let mut s = String::new();
            random_text(state, length, &mut s);
            assert_eq!(s, plain(state, length), "state {state}, length {length}");
        }
    }

    #[test]
    fn long_strings_differ_past_the_first_twelve_characters() {
        let g = Generator::new(&config("fields:\n  s: {kind: string, length: 40}\n")).unwrap();
        let tails: std::collections::BTreeSet<String> = (0..1000)
            .map(|i| g.record(i).0["s"].as_str().unwrap()[12..].to_string())
            .collect();
        assert_eq!(tails.len(), 1000, "every tail distinct");
        let at = |k: usize| -> std::collections::BTreeSet<char> {
            (0..1000)
                .map(|i| g.record(i).0["s"].as_str().unwrap().as_bytes()[k] as char)
                .collect()
        };
        assert!(at(30).len() > 30, "characters past 24 vary: {:?}", at(30));
    }

    #[test]
    fn records_are_a_function_of_their_index() {
        let c = config(
            "fields:\n  id: {kind: sequence}\n  user: {kind: int, min: 0, max: 9, prefix: user_}\n  \
             ts: {kind: timestamp, start: '2024-01-01T00:00:00Z', step: 1s, jitter: 200ms}\nevent_time: ts\n",
        );
        let g = Generator::new(&c).unwrap();
        let (a, ta) = g.record(5);
        let (b, tb) = g.record(5);
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        assert_eq!(a["id"], 5);
        assert!(a["user"].as_str().unwrap().starts_with("user_"));
        let t = ta.unwrap();
        let base = 1_704_067_200_000 + 5_000;
        assert!((base - 200..=base + 200).contains(&t), "{t}");
        assert_ne!(g.record(6).0, a);
    }

    #[test]
    fn bad_generators_name_the_field() {
        let c = config("fields:\n  n: {kind: int, min: 5, max: 1}\n");
        assert_eq!(Generator::new(&c).err().unwrap().0, "fields.n.max");
        let c = config("fields:\n  t: {kind: timestamp, start: yesterday, step: 1s}\n");
        assert_eq!(Generator::new(&c).err().unwrap().0, "fields.t.start");
        let c = config("fields:\n  n: {kind: bool}\nevent_time: ts\n");
        assert_eq!(Generator::new(&c).err().unwrap().0, "event_time");
    }
}
