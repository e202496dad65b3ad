//! A record's JSON text, checked once and read lazily: a record that only passes through a
//! pipeline is never turned into a map, and a sink that needs one field (a Kafka key) scans the
//! text for it instead of building every field.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Fields, Value};

/// The text of one JSON object, known to parse into [`Fields`]: [`JsonObject::parse`] runs the
/// same parser over it that [`JsonObject::fields`] runs later, rejecting everything that parser
/// would reject (bad UTF-8, syntax, numbers out of range, lone surrogates, nesting too deep),
/// so reading the fields later cannot fail.
#[derive(Clone, Debug)]
pub struct JsonObject {
    text: Bytes,
    /// Where each top-level key is in `text`, noted by the check so that [`JsonObject::get`]
    /// goes straight to a value; none when a key has escapes (its text is not its name).
    keys: Option<Box<[Range<u32>]>>,
}

impl JsonObject {
    /// Checks `text` without building it; the error says why it is not a JSON object.
    pub fn parse(text: Bytes) -> Result<JsonObject, String> {
        let s = super::utf8(&text).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut de = serde_json::Deserializer::from_str(s);
        let keys = de
            .deserialize_any(TopObject { base: s })
            .and_then(|keys| de.end().map(|()| keys))
            .map_err(|e| {
                // Only `TopObject` raises data errors (a top level that is not an object):
                // `Check` and `KeyIs` accept every value serde_json hands them.
                if e.is_data() {
                    let start: String = s.trim_start().chars().take(80).collect();
                    format!("expected a JSON object, got {start}")
                } else {
                    format!("invalid JSON: {e}")
                }
            })?;
        Ok(JsonObject { text, keys })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.text
    }

    /// Every field. Cannot fail for a checked text; an empty map stands in for the impossible.
    pub fn fields(&self) -> Fields {
        serde_json::from_slice(&self.text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "a checked JSON object failed to parse (a weir bug)");
            Fields::new()
        })
    }

    /// The top-level field `name` (the last one, if the text repeats it, as the map keeps).
    pub fn get(&self, name: &str) -> Option<Value> {
        let Some(keys) = &self.keys else {
            return self.scan(name);
        };
        let t = &self.text[..];
        let i = keys.iter().rposition(|k| &t[range(k)] == name.as_bytes())?;
        // Between a key's closing quote and the next key's opening quote (or the closing
        // brace) lie only whitespace, the colon, the value and a comma.
        let after_key = t[keys[i].end as usize + 1..].trim_ascii_start();
        let start = t.len() - after_key.strip_prefix(b":")?.trim_ascii_start().len();
        let end = match keys.get(i + 1) {
            Some(next) => t[..next.start as usize - 1]
                .trim_ascii_end()
                .strip_suffix(b",")?
                .trim_ascii_end()
                .len(),
            None => t
                .trim_ascii_end()
                .strip_suffix(b"}")?
                .trim_ascii_end()
                .len(),
        };
        serde_json::from_slice(t.get(start..end)?)
            .ok()
            .or_else(|| self.scan(name))
    }

    /// [`JsonObject::get`] by reading the whole text.
    fn scan(&self, name: &str) -> Option<Value> {
        let mut de = serde_json::Deserializer::from_slice(&self.text);
        de.deserialize_map(Find { name }).ok().flatten()
    }
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Checks the top-level object and notes where its keys are.
struct TopObject<'de> {
    base: &'de str,
}

impl<'de> Visitor<'de> for TopObject<'de> {
    type Value = Option<Box<[Range<u32>]>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Some(Vec::new());
        while let Some(key) = map.next_key::<KeyIs<'de>>()? {
            map.next_value_seed(Check)?;
            let at = match key.0 {
                Cow::Borrowed(k) => self.position(k),
                Cow::Owned(_) => None,
            };
            match (at, &mut keys) {
                (Some(r), Some(ks)) => ks.push(r),
                _ => keys = None,
            }
        }
        Ok(keys.map(Vec::into_boxed_slice))
    }
}

impl<'de> TopObject<'de> {
    /// Where `key`, a slice of the text, lies in it.
    fn position(&self, key: &'de str) -> Option<Range<u32>> {
        let start = (key.as_ptr() as usize).checked_sub(self.base.as_ptr() as usize)?;
        let end = start + key.len();
        (self.base.get(start..end)? == key)
            .then(|| Some(u32::try_from(start).ok()?..u32::try_from(end).ok()?))
            .flatten()
    }
}

/// Walks a value the way `Value`'s own deserializer does (`deserialize_any` all the way down,
/// so numbers and escapes are decoded and checked) but keeps nothing.
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry_seed(Check, Check)?.is_some() {}
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads one top-level field of an object, skipping the others without building them.
struct Find<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<KeyIs>()? {
            if key.0 == self.name {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key, borrowed from the text unless it has escapes.
struct KeyIs<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for KeyIs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyIs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyIs<'de>, E> {
                Ok(KeyIs(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyIs<'de>, E> {
                Ok(KeyIs(v.to_string().into()))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<JsonObject, String> {
        JsonObject::parse(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// The check rejects exactly what parsing into a map rejects: anything it let through
    /// would fail later, where no error can be reported.
    #[test]
    fn the_check_agrees_with_the_map_parser() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        let cases = [
            r#"{"a": 1, "b": [true, null, {"c": "d"}], "e": -2.5e3}"#.to_string(),
            r#"{"big": 123456789012345678901234567890}"#.into(),
            r#"{"huge": 1e400}"#.into(),
            r#"{"s": "\ud800"}"#.into(),
            r#"{"s": "\ud83d\ude00 \u00e9 \n"}"#.into(),
            r#"{"s": "\q"}"#.into(),
            r#"{"a": 1,}"#.into(),
            r#"{"a": 1} x"#.into(),
            "{\"a\": 1}\n  ".into(),
            r#"{"a" 1}"#.into(),
            r#"{"a": 01}"#.into(),
            r#"{"a": NaN}"#.into(),
            format!(r#"{{"deep": {deep}}}"#),
            r#"{"dup": 1, "dup": 2}"#.into(),
            "{}".into(),
            "".into(),
            "[1]".into(),
            "5".into(),
            "\"str\"".into(),
            "null".into(),
        ];
        for text in &cases {
            let map = serde_json::from_str::<Fields>(text);
            let checked = parse(text);
            assert_eq!(
                checked.is_ok(),
                map.is_ok(),
                "{text}: {checked:?} vs {map:?}"
            );
            if let (Ok(c), Ok(m)) = (checked, map) {
                assert_eq!(c.fields(), m);
                for (k, v) in &m {
                    assert_eq!(c.get(k).as_ref(), Some(v), "{text}: {k}");
                }
            }
        }
        assert!(JsonObject::parse(Bytes::from_static(b"{\"a\": \"\xff\"}")).is_err());
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(
            parse("[1, 2]").unwrap_err(),
            "expected a JSON object, got [1, 2]"
        );
        assert_eq!(parse(" 42").unwrap_err(), "expected a JSON object, got 42");
        let e = parse(r#"{"a": }"#).unwrap_err();
        assert!(
            e.starts_with("invalid JSON: expected value at line 1"),
            "{e}"
        );
    }

    #[test]
    fn get_reads_one_field_the_way_the_map_does() {
        let text = r#"{"id": 7, "pad": "x\"y", "n": {"id": 9}, "id2": [1], "d": 1, "d": 2, "e\u0073c": true}"#;
        let o = parse(text).unwrap();
        assert!(o.keys.is_none(), "an escaped key makes get scan the text");
        let plain = parse(&text.replace("e\\u0073c", "esc")).unwrap();
        assert!(plain.keys.is_some());
        assert_eq!(o.get("id"), Some(json!(7)));
        assert_eq!(o.get("n"), Some(json!({"id": 9})));
        assert_eq!(
            o.get("d"),
            Some(json!(2)),
            "the last of repeated keys, as in the map"
        );
        assert_eq!(o.get("esc"), Some(json!(true)), "escaped keys are decoded");
        assert_eq!(o.get("missing"), None);
        for name in ["id", "pad", "n", "id2", "d", "esc", "missing"] {
            assert_eq!(o.get(name).as_ref(), o.fields().get(name), "{name}");
            assert_eq!(plain.get(name).as_ref(), plain.fields().get(name), "{name}");
        }
        let value = json!({"a": {"b": [1, 2, {"c": null}]}, "s": "q\"uote,}", "t": true, "e": {}});
        let pretty = parse(&serde_json::to_string_pretty(&value).unwrap()).unwrap();
        for (k, v) in value.as_object().unwrap() {
            assert_eq!(pretty.get(k).as_ref(), Some(v), "{k}");
        }
        let spaced =
            parse(" {\n \"a\" :\t[1, {\"b\": 2}] ,\"c\":\"}\",\r\n\"d\" : -1.5e2 \n} \n").unwrap();
        assert!(spaced.keys.is_some(), "keys without escapes are noted");
        for name in ["a", "b", "c", "d"] {
            assert_eq!(spaced.get(name), spaced.scan(name), "{name}");
            assert_eq!(
                spaced.get(name).as_ref(),
                spaced.fields().get(name),
                "{name}"
            );
        }
    }
}
