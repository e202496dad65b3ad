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
        if source.len() > MAX_EXPR_BYTES {
            return Err(format!(
                "the expression is {} bytes long; at most {MAX_EXPR_BYTES}",
                source.len()
            ));
        }
        let depth = bracket_depth(source);
        if depth > MAX_EXPR_DEPTH {
            return Err(format!(
                "brackets nested {depth} deep; at most {MAX_EXPR_DEPTH}"
            ));
        }
        // The parser (ANTLR) recurses per operator of a chain like `1+1+…`, and the tree it
        // builds is dropped recursively; a thread of its own with a big stack keeps that from
        // overflowing the caller's (a tokio worker has 2 MiB). The stack is reserved, not used.
        let owned = source.to_string();
        let compiled = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn(move || compile_bounded(&owned))
            .map_err(|e| format!("cannot start the CEL compiler thread: {e}"))?
            .join()
            .map_err(|_| format!("invalid CEL expression {source:?}: the parser rejected it"))?;
        let program = compiled.map_err(|e| format!("invalid CEL expression {source:?}: {e}"))?;
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

/// Longest expression accepted (bytes).
pub const MAX_EXPR_BYTES: usize = 4096;
/// Deepest expression tree accepted: evaluation recurses once per level on the worker's stack
/// (about 25 KiB a level in a debug build, so 32 levels fit a 2 MiB tokio worker twice over).
pub const MAX_EXPR_DEPTH: usize = 32;
/// Most macros (`map`, `filter`, `all`, `exists`) nested in one another: each multiplies the
/// work per record by the length of its list, so three nested over literal lists of a few
/// hundred elements take minutes per record.
pub const MAX_MACRO_NESTING: usize = 2;
const COMPILE_STACK_BYTES: usize = 256 << 20;

/// Parses, checks the tree's depth and macro nesting, then compiles (runs on the big stack).
fn compile_bounded(source: &str) -> Result<Program, String> {
    let ast = quietly(|| cel_parser::Parser::default().parse(source))
        .ok_or("the parser rejected it")?
        .map_err(|e| e.to_string())?;
    let shape = shape(&ast);
    if shape.depth > MAX_EXPR_DEPTH {
        return Err(format!(
            "nested {} levels deep; at most {MAX_EXPR_DEPTH} (split a long chain of operators)",
            shape.depth
        ));
    }
    if shape.macros > MAX_MACRO_NESTING {
        return Err(format!(
            "{} macros (map, filter, all, exists) nested in one another; at most {MAX_MACRO_NESTING}",
            shape.macros
        ));
    }
    quietly(|| Program::compile(source))
        .ok_or("the parser rejected it")?
        .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Default)]
struct Shape {
    depth: usize,
    macros: usize,
}

/// Depth of the tree and most macros on one path from the root.
fn shape(e: &cel_parser::Expression) -> Shape {
    use cel_parser::ast::{EntryExpr, Expr, MapExpr, StructExpr};
    let children: Vec<&cel_parser::Expression> = match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &*c.iter_range,
            &*c.accu_init,
            &*c.loop_cond,
            &*c.loop_step,
            &*c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Select(s) => vec![&*s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => vec![],
    };
    let mut out = Shape::default();
    for c in children {
        let s = shape(c);
        out.depth = out.depth.max(s.depth);
        out.macros = out.macros.max(s.macros);
    }
    out.depth += 1;
    if matches!(e.expr, Expr::Comprehension(_)) {
        out.macros += 1;
    }
    out
}

/// Deepest nesting of brackets outside string literals: checked before parsing, because the
/// parser spends several recursive calls per bracket.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut chars = source.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => {
                depth += 1;
                max = max.max(depth);
            }
            (None, ')' | ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
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
    fn deep_long_and_explosive_expressions_are_refused_not_crashed() {
        let chain = vec!["1"; 2000].join("+");
        let e = Expr::compile(&chain).unwrap_err();
        assert!(e.contains("nested 2000 levels deep; at most 32"), "{e}");
        let parens = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
        assert!(Expr::compile(&parens)
            .unwrap_err()
            .contains("brackets nested 2000 deep"));
        // The parser folds chains of unary operators; either way nothing crashes.
        let root = Context::default();
        for (unary, expected) in [
            (format!("{}true", "!".repeat(3999)), Cel::Bool(false)),
            (format!("{}1", "-".repeat(3999)), Cel::Int(-1)),
        ] {
            if let Ok(e) = Expr::compile(&unary) {
                assert_eq!(e.eval(&root, &rec(json!({}))).unwrap(), expected);
            }
        }
        let long = format!("x == '{}'", "a".repeat(5000));
        assert!(Expr::compile(&long).unwrap_err().contains("at most 4096"));
        let nested = "[1].map(a, [1].map(b, [1].map(c, c)))";
        assert!(
            Expr::compile(nested).unwrap_err().contains("3 macros"),
            "{nested}"
        );
        // Brackets inside strings do not count.
        Expr::compile(&format!("x == '{}'", "(".repeat(100))).unwrap();
    }

    #[test]
    fn the_deepest_accepted_expression_evaluates_on_a_small_stack() {
        // 31 operators and the variable at the bottom; on a tokio worker's default stack.
        let e = Expr::compile(&vec!["x"; 32].join(" + ")).unwrap();
        assert!(Expr::compile(&vec!["x"; 33].join(" + ")).is_err());
        let v = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let root = Context::default();
                e.eval(&root, &rec(json!({"x": 1}))).unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(v, Cel::Int(32));
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
