//! Human-readable durations ("1s", "500ms", "15m") and sizes ("256MiB") used across the spec.

use std::fmt;

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `500ms`, `1s`, `15m`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The longest duration any setting takes (365 days): longer ones are typos, and a deadline
    /// computed as `now + duration` must not overflow the clock.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);
    /// [`Duration::MAX`] as the user writes it (humantime would print 11months 30days …).
    pub const MAX_TEXT: &'static str = "365d";

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(s.trim())
            .map(Duration)
            .map_err(|e| match e {
                humantime::DurationError::NumberOverflow => {
                    format!("{s:?} is too long; at most {}", Duration::MAX_TEXT)
                }
                _ => format!("expected a duration like 500ms, 1s or 15m, got {s:?}"),
            })?;
        if d > Duration::MAX {
            return Err(format!("{s:?} is too long; at most {}", Duration::MAX_TEXT));
        }
        Ok(d)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 500ms, 1s or 15m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Duration, E> {
                Err(E::custom(
                    "expected a duration with a unit like 500ms, 1s or 15m",
                ))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Duration, E> {
                Err(E::custom(
                    "expected a duration with a unit like 500ms, 1s or 15m",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+ ?(ns|us|ms|s|m|h|d|sec|min|hour|hours|days) ?)+$",
            "description": "a duration like 500ms, 1s, 15m"
        })
    }
}

/// A size written as `256MiB`, `1GB`, `4096` (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The largest size any setting takes (1 TiB): more is a typo or an overflow (the parser
    /// saturates `99999999999999PiB` to 16 EiB), never a part, batch or buffer size.
    pub const MAX: ByteSize = ByteSize(1 << 40);
    pub const MAX_TEXT: &'static str = "1TiB";

    fn checked(self, given: &dyn fmt::Display) -> Result<ByteSize, String> {
        if self > ByteSize::MAX {
            Err(format!(
                "{given} is too large; at most {}",
                ByteSize::MAX_TEXT
            ))
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|_| format!("expected a size like 256MiB, got {s:?}"))?
            .checked(&format_args!("{s:?}"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 256MiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                ByteSize(v).checked(&v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("expected a size like 256MiB, got a negative number"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<ByteSize, E> {
                Err(E::custom(format_args!(
                    "too large; at most {}",
                    ByteSize::MAX_TEXT
                )))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<ByteSize, E> {
                self.visit_u128(v as u128)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ByteSize, E> {
                Err(E::custom(
                    "expected a size like 256MiB or a whole number of bytes",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "a size like 256MiB or a number of bytes"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_bare_numbers() {
        let d: Duration = serde_json::from_str("\"1s\"").unwrap();
        assert_eq!(d.as_millis(), 1000);
        let d: Duration = serde_json::from_str("\"15m\"").unwrap();
        assert_eq!(d.as_millis(), 900_000);
        let e = serde_json::from_str::<Duration>("5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("with a unit"), "{e}");
        let b: ByteSize = serde_json::from_str("\"256MiB\"").unwrap();
        assert_eq!(b.0, 256 * 1024 * 1024);
        let e = serde_json::from_str::<ByteSize>("\"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a size like 256MiB"), "{e}");
    }

    #[test]
    fn overflowing_and_oversized_values_are_errors() {
        for text in ["\"99999999999999PiB\"", "\"2TiB\"", "1099511627777"] {
            let e = serde_json::from_str::<ByteSize>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("too large; at most 1TiB"), "{text}: {e}");
        }
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"1TiB\"").unwrap(),
            ByteSize::MAX
        );
        for text in ["\"366d\"", "\"99999999999999999999999s\""] {
            let e = serde_json::from_str::<Duration>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("is too long; at most 365d"), "{text}: {e}");
        }
    }
}
