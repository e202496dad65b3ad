//! The in-memory table of a `preloaded_lookup`: rows by key, built within its limits, and the
//! version that names its content. Pure: loading and storing are elsewhere.

use std::collections::HashMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The text a key is matched by. One value: a string as it is, any other value as its JSON
/// text, so the record field `42` finds the row whose `id` is `42` and the Kafka message keyed
/// `42`. Several values: their JSON array.
pub fn key_text(values: &[&Value]) -> String {
    let mut s = String::new();
    key_into(values, &mut s);
    s
}

/// [`key_text`] into a buffer the caller reuses (the per-record path allocates nothing for a
/// key of one field).
pub fn key_into(values: &[&Value], out: &mut String) {
    use std::fmt::Write;
    out.clear();
    match values {
        [Value::String(s)] => out.push_str(s),
        // The same text as the value's JSON, without going through the serializer.
        [Value::Number(n)] => {
            let _ = write!(out, "{n}");
        }
        [v] => {
            let _ = write!(out, "{v}");
        }
        many => {
            let _ = write!(
                out,
                "{}",
                Value::Array(many.iter().map(|v| (*v).clone()).collect())
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_rows: usize,
    pub max_bytes: u64,
}

/// What one row costs besides its key and JSON text: the map's entry, the `Value` tree's nodes.
/// An estimate that errs high; the limit is a guard against a table outgrowing the worker, not
/// an allocator.
const ROW_OVERHEAD: u64 = 96;

/// Rows by key text. Every record looks its key up here, so the hasher is foldhash rather than
/// SipHash (several times faster on short keys); its per-process seed still spreads keys an
/// outsider picks, and the keys that are stored come from the operator's own table.
type Rows = HashMap<String, Value, foldhash::fast::RandomState>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    rows: Rows,
    bytes: u64,
}

fn cost(key: &str, row: &Value) -> u64 {
    key.len() as u64 + 2 * row.to_string().len() as u64 + ROW_OVERHEAD
}

impl Table {
    /// Adds or replaces a row; refuses one that would take the table past its limits, with a
    /// message naming the setting to raise.
    pub fn insert(&mut self, key: String, row: Value, limits: &Limits) -> Result<(), String> {
        let added = cost(&key, &row);
        let replaced = self.rows.get(&key).map_or(0, |old| cost(&key, old));
        let bytes = self.bytes - replaced + added;
        if replaced == 0 && self.rows.len() >= limits.max_rows {
            return Err(format!(
                "the lookup table outgrew max_rows ({}); raise max_rows (and the worker's memory) \
                 or load fewer rows",
                limits.max_rows
            ));
        }
        if bytes > limits.max_bytes {
            return Err(format!(
                "the lookup table outgrew max_bytes ({}) at {} rows; raise max_bytes (and the \
                 worker's memory) or load fewer columns or rows",
                weir_crds::units::ByteSize(limits.max_bytes),
                self.rows.len()
            ));
        }
        self.bytes = bytes;
        self.rows.insert(key, row);
        Ok(())
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(old) = self.rows.remove(key) {
            self.bytes -= cost(key, &old);
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.rows.get(key)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The estimated memory the rows take.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn sorted(&self) -> Vec<(&String, &Value)> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows
    }

    /// Lines `[key, row]` in key order: the snapshot kept in checkpoint storage.
    pub fn to_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes as usize / 2);
        for (k, v) in self.sorted() {
            serde_json::to_writer(&mut out, &(k, v)).expect("JSON values serialize");
            out.push(b'\n');
        }
        out
    }

    /// A snapshot written by [`Table::to_lines`].
    pub fn from_lines(bytes: &[u8], limits: &Limits) -> Result<Table, String> {
        let mut t = Table::default();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let (k, v): (String, Value) = serde_json::from_slice(line)
                .map_err(|e| format!("line {} of the table snapshot: {e}", i + 1))?;
            t.insert(k, v, limits)?;
        }
        Ok(t)
    }
}

/// The version of a table whose [`Table::to_lines`] are `lines`: their SHA-256, so the same rows
/// give the same version whatever order they were loaded in.
pub fn version_of(lines: &[u8]) -> String {
    hex(&Sha256::digest(lines))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows into a table, each keyed by its `key` fields. A row that is not an object or lacks a key
/// field is an error naming its position (`what` says where rows come from: `line 12`, `row 3`).
pub fn build(
    rows: impl IntoIterator<Item = (String, Value)>,
    key: &[String],
    limits: &Limits,
) -> Result<Table, String> {
    let mut t = Table::default();
    for (what, row) in rows {
        let k = row_key(&row, key).map_err(|e| format!("{what}: {e}"))?;
        t.insert(k, row, limits)?;
    }
    Ok(t)
}

/// The key text of a table row.
pub fn row_key(row: &Value, key: &[String]) -> Result<String, String> {
    let Value::Object(m) = row else {
        return Err(format!("not a JSON object: {}", short(row)));
    };
    let values = key
        .iter()
        .map(|f| {
            m.get(f)
                .filter(|v| !v.is_null())
                .ok_or_else(|| format!("no key field {f:?} in {}", short(row)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(key_text(&values))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ROOMY: Limits = Limits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn keys_match_across_types_and_several_fields_stay_apart() {
        assert_eq!(key_text(&[&json!(42)]), "42");
        assert_eq!(key_text(&[&json!("42")]), "42");
        // A number's key is its JSON text, whatever its kind.
        for n in [
            json!(-7),
            json!(u64::MAX),
            json!(1.5),
            json!(1e300),
            json!(0.1),
        ] {
            assert_eq!(key_text(&[&n]), n.to_string());
        }
        assert_eq!(key_text(&[&json!("a"), &json!(1)]), r#"["a",1]"#);
        assert_ne!(
            key_text(&[&json!("a,b")]),
            key_text(&[&json!("a"), &json!("b")])
        );
    }

    #[test]
    fn the_version_names_the_content_not_the_load_order() {
        let rows = |order: &[i64]| {
            order
                .iter()
                .map(|i| {
                    (
                        format!("row {i}"),
                        json!({"id": i, "name": format!("n{i}")}),
                    )
                })
                .collect::<Vec<_>>()
        };
        let a = build(rows(&[1, 2, 3]), &["id".into()], &ROOMY).unwrap();
        let b = build(rows(&[3, 1, 2]), &["id".into()], &ROOMY).unwrap();
        assert_eq!(version_of(&a.to_lines()), version_of(&b.to_lines()));
        let c = build(rows(&[1, 2]), &["id".into()], &ROOMY).unwrap();
        assert_ne!(version_of(&a.to_lines()), version_of(&c.to_lines()));
        let back = Table::from_lines(&a.to_lines(), &ROOMY).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.get("2").unwrap()["name"], "n2");
    }

    #[test]
    fn limits_name_the_setting_and_replacing_a_row_is_not_a_new_row() {
        let limits = Limits {
            max_rows: 2,
            max_bytes: 1 << 20,
        };
        let mut t = Table::default();
        t.insert("a".into(), json!({"v": 1}), &limits).unwrap();
        t.insert("b".into(), json!({"v": 1}), &limits).unwrap();
        t.insert("b".into(), json!({"v": 2}), &limits).unwrap();
        let e = t.insert("c".into(), json!({"v": 1}), &limits).unwrap_err();
        assert!(e.contains("max_rows (2)"), "{e}");
        t.remove("a");
        t.insert("c".into(), json!({"v": 1}), &limits).unwrap();
        let before = t.bytes();
        t.remove("c");
        assert!(t.bytes() < before);

        let tight = Limits {
            max_rows: 100,
            max_bytes: 300,
        };
        let e = build(
            (0..100).map(|i| (format!("line {i}"), json!({"id": i, "pad": "x".repeat(50)}))),
            &["id".into()],
            &tight,
        )
        .unwrap_err();
        assert!(e.contains("max_bytes (300 B)"), "{e}");
    }

    #[test]
    fn a_row_without_its_key_is_named() {
        let e = build(
            vec![("line 7".to_string(), json!({"name": "x"}))],
            &["id".into()],
            &ROOMY,
        )
        .unwrap_err();
        assert!(e.starts_with("line 7: no key field \"id\""), "{e}");
        let e = build(
            vec![("line 2".to_string(), json!([1]))],
            &["id".into()],
            &ROOMY,
        )
        .unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}
