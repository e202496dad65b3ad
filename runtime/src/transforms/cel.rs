//! CEL expressions over records: every top-level field is a variable, and `record` is the whole
//! record as a map (for fields whose names are not identifiers).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map as CelMap};
use cel_interpreter::{Context, Program, Value as Cel};
use serde_json::{Number, Value};

use crate::record::Record;

pub struct Expr {
    pub source: String,
    program: Program,
    /// Variables the expression reads (only those are converted per record).
    vars: Vec<String>,
    uses_record: bool,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl Expr {
    pub fn compile(source: &str) -> Result<Expr, String> {
        if source.trim().is_empty() {
            return Err("empty expression".into());
        }
        let program = quietly(|| Program::compile(source))
            .ok_or_else(|| format!("invalid CEL expression {source:?}: the parser rejected it"))?
            .map_err(|e| format!("invalid CEL expression {source:?}: {e}"))?;
        let refs = program.references();
        let mut vars: Vec<String> = refs.variables().into_iter().map(str::to_string).collect();
        vars.sort();
        let uses_record = vars.iter().any(|v| v == "record");
        vars.retain(|v| v != "record");
        Ok(Expr {
            source: source.to_string(),
            program,
            vars,
            uses_record,
        })
    }

    /// Evaluates against a record; `root` holds the standard functions (built once per node).
    pub fn eval(&self, root: &Context<'_>, record: &Record) -> Result<Cel, String> {
        let mut ctx = root.new_inner_scope();
        // A record still in its JSON text is scanned for a field or two rather than built,
        // so a filter passes it on unbuilt; more fields are cheaper read from the built map.
        let scan = self.vars.len() <= 2 && !self.uses_record;
        for v in &self.vars {
            let value = if scan {
                record.get(v)
            } else {
                record.fields().get(v).map(Cow::Borrowed)
            };
            if let Some(value) = value {
                ctx.add_variable_from_value(v.as_str(), to_cel(&value));
            } else {
                return Err(format!("no field {v:?} in the record"));
            }
        }
        if self.uses_record {
            let m: HashMap<Key, Cel> = record
                .fields()
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            ctx.add_variable_from_value("record", Cel::Map(CelMap { map: Arc::new(m) }));
        }
        quietly(|| self.program.execute(&ctx))
            .ok_or_else(|| "the CEL interpreter failed on this record".to_string())?
            .map_err(|e| e.to_string())
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside the CEL crates (its parser panics on some malformed input)
/// into `None` without printing the panic message.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    QUIET.with(|q| q.set(false));
    r
}

pub fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => match n.as_u64() {
                Some(u) => Cel::UInt(u),
                None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => {
            let m: HashMap<Key, Cel> = o
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            Cel::Map(CelMap { map: Arc::new(m) })
        }
    }
}

pub fn to_json(v: &Cel) -> Result<Value, String> {
    Ok(match v {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("result is not a finite number")?,
        Cel::String(s) => Value::String(s.to_string()),
        Cel::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Cel::List(l) => Value::Array(l.iter().map(to_json).collect::<Result<_, _>>()?),
        Cel::Map(m) => {
            let mut out = serde_json::Map::new();
            let mut entries: Vec<_> = m.map.iter().collect();
            entries.sort_by_key(|(k, _)| k.to_string());
            for (k, v) in entries {
                out.insert(k.to_string(), to_json(v)?);
            }
            Value::Object(out)
        }
        Cel::Timestamp(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Cel::Duration(d) => Value::from(d.num_milliseconds()),
        Cel::Function(name, _) => {
            return Err(format!("result is the function {name}, not a value"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn evaluates_fields_and_the_record_map() {
        let root = Context::default();
        let r = rec(json!({"amount": 120, "name": "ann", "odd key": 2}));
        let e = Expr::compile("amount > 100 && name.startsWith('a')").unwrap();
        assert_eq!(e.eval(&root, &r).unwrap(), Cel::Bool(true));
        let e = Expr::compile("record['odd key'] * 2").unwrap();
        assert_eq!(to_json(&e.eval(&root, &r).unwrap()).unwrap(), json!(4));
    }

    #[test]
    fn a_json_record_read_by_one_or_two_fields_stays_unbuilt() {
        let root = Context::default();
        let text = br#"{"amount": 120, "name": "ann", "pad": "xxxx"}"#;
        let json = crate::record::JsonObject::parse(bytes::Bytes::from_static(text)).unwrap();
        let r = Record::from_json(json);
        let e = Expr::compile("amount > 100 && name == 'ann'").unwrap();
        assert_eq!(e.eval(&root, &r).unwrap(), Cel::Bool(true));
        let e = Expr::compile("missing > 1").unwrap();
        assert!(e
            .eval(&root, &r)
            .unwrap_err()
            .contains("no field \"missing\""));
        assert!(!r.is_built());
    }

    #[test]
    fn errors_are_clear() {
        assert!(Expr::compile("amount >")
            .unwrap_err()
            .contains("invalid CEL expression"));
        let root = Context::default();
        let e = Expr::compile("missing + 1").unwrap();
        let err = e.eval(&root, &rec(json!({"a": 1}))).unwrap_err();
        assert!(err.contains("no field \"missing\""), "{err}");
        let e = Expr::compile("name + 1").unwrap();
        assert!(e.eval(&root, &rec(json!({"name": "x"}))).is_err());
    }
}
