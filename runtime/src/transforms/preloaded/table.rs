//! The in-memory table of a `preloaded_lookup`: rows by key, built within its limits, and the
//! version that names its content. Pure: loading and storing are elsewhere.

use std::collections::HashMap;

use compact_str::CompactString;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::transforms::async_io::mapping::FieldMapping;

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
        // Integers through itoa: `write!` goes through the formatting machinery, several
        // times the instructions for the same digits.
        [Value::Number(n)] => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => out.push_str(itoa::Buffer::new().format(i)),
            (_, Some(u)) => out.push_str(itoa::Buffer::new().format(u)),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
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

/// Asks the CPU to bring the rows a batch joins, then the text of their string values, into
/// cache before any record is written. A table of 100,000 rows is out of the core's cache, and
/// the join reads each row and clones its strings one record at a time: without this every
/// record waited for two misses in turn. Prefetches never fault and change no result; off
/// x86_64 this does nothing.
pub fn prefetch(rows: &[Option<&[Value]>]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for row in rows.iter().flatten() {
            // SAFETY: a prefetch is a hint; it reads nothing architecturally and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().cast()) };
        }
        for row in rows.iter().flatten() {
            for v in row.iter() {
                if let Value::String(s) = v {
                    // SAFETY: as above.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().cast()) };
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rows;
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

/// A row as records are joined against it: the value of each output field, in the mapping's
/// order. Only these are kept, not the row: the join of a record is one probe and a clone per
/// field, with no path walked through a JSON object per record (three cache misses and a SipHash
/// each), and a column no field reads takes no memory.
pub type Row = Box<[Value]>;

/// Rows by key text. Every record looks its key up here, so the hasher is foldhash rather than
/// SipHash (several times faster on short keys); its per-process seed still spreads keys an
/// outsider picks, and the keys that are stored come from the operator's own table. A key of
/// up to 24 bytes (ids, codes, short names) is held inside the map's slot, so a probe compares
/// it without reading a second heap allocation (another cache miss per record on a large table).
type Rows = HashMap<CompactString, Row, foldhash::fast::RandomState>;

#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Which output fields a row holds, and where in a loaded row each comes from.
    fields: FieldMapping,
    rows: Rows,
    bytes: u64,
}

fn cost(key: &str, row: &[Value]) -> u64 {
    let text: usize = row.iter().map(|v| v.to_string().len()).sum();
    key.len() as u64 + 2 * text as u64 + ROW_OVERHEAD
}

/// The first line of a snapshot: the fields its rows hold, so that a snapshot taken under
/// another `fields` mapping is never joined as if it were this one's.
#[derive(serde::Serialize, serde::Deserialize, PartialEq)]
struct Header {
    fields: Vec<(String, Vec<String>)>,
}

impl Header {
    fn of(fields: &FieldMapping) -> Header {
        Header {
            fields: fields
                .0
                .iter()
                .map(|(name, path)| (name.clone(), path.steps().to_vec()))
                .collect(),
        }
    }
}

impl Table {
    pub fn new(fields: FieldMapping) -> Table {
        Table {
            fields,
            rows: Rows::default(),
            bytes: 0,
        }
    }

    /// The output fields of a loaded row; a path the row lacks gives null.
    fn project(&self, row: &Value) -> Row {
        self.fields
            .0
            .iter()
            .map(|(_, path)| path.get(row).cloned().unwrap_or(Value::Null))
            .collect()
    }

    /// Adds or replaces a loaded row (kept as its output fields); refuses one that would take
    /// the table past its limits, with a message naming the setting to raise.
    pub fn insert(&mut self, key: String, row: &Value, limits: &Limits) -> Result<(), String> {
        let row = self.project(row);
        self.insert_row(key, row, limits)
    }

    fn insert_row(&mut self, key: String, row: Row, limits: &Limits) -> Result<(), String> {
        let added = cost(&key, &row);
        let replaced = self.rows.get(key.as_str()).map_or(0, |old| cost(&key, old));
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
                 worker's memory) or map fewer fields or load fewer rows",
                weir_crds::units::ByteSize(limits.max_bytes),
                self.rows.len()
            ));
        }
        self.bytes = bytes;
        self.rows.insert(CompactString::from(key), row);
        Ok(())
    }

    // Only the Kafka follower removes rows (a tombstone); other sources reload the table whole.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub fn remove(&mut self, key: &str) {
        if let Some(old) = self.rows.remove(key) {
            self.bytes -= cost(key, &old);
        }
    }

    /// The output fields of the row with this key text, in the mapping's order.
    pub fn get(&self, key: &str) -> Option<&[Value]> {
        self.rows.get(key).map(|r| &r[..])
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

    fn sorted(&self) -> Vec<(&CompactString, &Row)> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        rows
    }

    /// The snapshot kept in checkpoint storage: a [`Header`] line naming the fields, then lines
    /// `[key, [value of each field]]` in key order.
    pub fn to_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes as usize / 2);
        serde_json::to_writer(&mut out, &Header::of(&self.fields)).expect("JSON serializes");
        out.push(b'\n');
        for (k, v) in self.sorted() {
            serde_json::to_writer(&mut out, &(k.as_str(), v)).expect("JSON values serialize");
            out.push(b'\n');
        }
        out
    }

    /// A snapshot written by [`Table::to_lines`], as a table of `fields`; `None` when it was
    /// taken under another mapping (the job's `fields` changed), so it cannot be joined as is.
    /// A snapshot without a header (stop 28's format: lines `[key, whole row]`) is projected.
    pub fn from_lines(
        bytes: &[u8],
        fields: &FieldMapping,
        limits: &Limits,
    ) -> Result<Option<Table>, String> {
        let mut t = Table::new(fields.clone());
        let mut lines = bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .peekable();
        let projected = match lines.peek() {
            Some((_, first)) if first.starts_with(b"{") => {
                let header: Header = serde_json::from_slice(first)
                    .map_err(|e| format!("line 1 of the table snapshot: {e}"))?;
                if header != Header::of(fields) {
                    return Ok(None);
                }
                lines.next();
                true
            }
            _ => false,
        };
        for (i, line) in lines {
            let at = |e: serde_json::Error| format!("line {} of the table snapshot: {e}", i + 1);
            if projected {
                let (k, row): (String, Vec<Value>) = serde_json::from_slice(line).map_err(at)?;
                if row.len() != fields.0.len() {
                    return Err(format!(
                        "line {} of the table snapshot: {} values for {} fields",
                        i + 1,
                        row.len(),
                        fields.0.len()
                    ));
                }
                t.insert_row(k, row.into_boxed_slice(), limits)?;
            } else {
                let (k, v): (String, Value) = serde_json::from_slice(line).map_err(at)?;
                t.insert(k, &v, limits)?;
            }
        }
        Ok(Some(t))
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
    fields: &FieldMapping,
    limits: &Limits,
) -> Result<Table, String> {
    let mut t = Table::new(fields.clone());
    for (what, row) in rows {
        let k = row_key(&row, key).map_err(|e| format!("{what}: {e}"))?;
        t.insert(k, &row, limits)?;
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

    fn fields() -> FieldMapping {
        use crate::transforms::async_io::mapping::ResponsePath;
        FieldMapping(vec![
            ("name".into(), ResponsePath::parse("name")),
            ("v".into(), ResponsePath::parse("v")),
        ])
    }

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
        let a = build(rows(&[1, 2, 3]), &["id".into()], &fields(), &ROOMY).unwrap();
        let b = build(rows(&[3, 1, 2]), &["id".into()], &fields(), &ROOMY).unwrap();
        assert_eq!(version_of(&a.to_lines()), version_of(&b.to_lines()));
        let c = build(rows(&[1, 2]), &["id".into()], &fields(), &ROOMY).unwrap();
        assert_ne!(version_of(&a.to_lines()), version_of(&c.to_lines()));
        let back = Table::from_lines(&a.to_lines(), &fields(), &ROOMY)
            .unwrap()
            .unwrap();
        assert_eq!(back, a);
        // Output fields in the mapping's order; a path the row lacks is null.
        assert_eq!(back.get("2").unwrap(), &[json!("n2"), Value::Null]);
    }

    #[test]
    fn a_snapshot_of_other_fields_is_not_joined_and_an_old_one_is_projected() {
        use crate::transforms::async_io::mapping::ResponsePath;
        let rows = vec![("row 1".to_string(), json!({"id": 1, "name": "ann", "v": 7}))];
        let t = build(rows, &["id".into()], &fields(), &ROOMY).unwrap();
        let other = FieldMapping(vec![("name".into(), ResponsePath::parse("/name"))]);
        assert_ne!(
            version_of(&t.to_lines()),
            version_of(
                &build(vec![], &["id".into()], &other, &ROOMY)
                    .unwrap()
                    .to_lines()
            )
        );
        assert_eq!(Table::from_lines(&t.to_lines(), &other, &ROOMY), Ok(None));
        // Lines `[key, whole row]` without a header: the format before rows were projected.
        let old = b"[\"1\",{\"id\":1,\"name\":\"ann\",\"v\":7}]\n";
        let back = Table::from_lines(old, &fields(), &ROOMY).unwrap().unwrap();
        assert_eq!(back.get("1").unwrap(), &[json!("ann"), json!(7)]);
        let e = Table::from_lines(
            b"{\"fields\":[]}\n[\"1\",[7]]\n",
            &FieldMapping(vec![]),
            &ROOMY,
        )
        .unwrap_err();
        assert!(
            e.contains("line 2 of the table snapshot: 1 values for 0 fields"),
            "{e}"
        );
    }

    #[test]
    fn limits_name_the_setting_and_replacing_a_row_is_not_a_new_row() {
        let limits = Limits {
            max_rows: 2,
            max_bytes: 1 << 20,
        };
        let mut t = Table::new(fields());
        t.insert("a".into(), &json!({"v": 1}), &limits).unwrap();
        t.insert("b".into(), &json!({"v": 1}), &limits).unwrap();
        t.insert("b".into(), &json!({"v": 2}), &limits).unwrap();
        let e = t.insert("c".into(), &json!({"v": 1}), &limits).unwrap_err();
        assert!(e.contains("max_rows (2)"), "{e}");
        t.remove("a");
        t.insert("c".into(), &json!({"v": 1}), &limits).unwrap();
        let before = t.bytes();
        t.remove("c");
        assert!(t.bytes() < before);

        let tight = Limits {
            max_rows: 100,
            max_bytes: 300,
        };
        let e = build(
            (0..100).map(|i| {
                (
                    format!("line {i}"),
                    json!({"id": i, "name": "x".repeat(50)}),
                )
            }),
            &["id".into()],
            &fields(),
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
            &fields(),
            &ROOMY,
        )
        .unwrap_err();
        assert!(e.starts_with("line 7: no key field \"id\""), "{e}");
        let e = build(
            vec![("line 2".to_string(), json!([1]))],
            &["id".into()],
            &fields(),
            &ROOMY,
        )
        .unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}
