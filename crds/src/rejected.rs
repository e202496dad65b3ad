//! Resources the CRDs must reject (`crds/tests/rejected.yaml`), built from the documents of
//! `examples/k8s/`, and the validation rules they exercise: one case list for the offline check
//! (schema + CEL evaluated locally) and for the real API server.

use std::path::Path;

use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::Value;

use crate::{Connector, StreamJob};

/// The case list, next to the CRD tests.
pub const CASES: &str = include_str!("../tests/rejected.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    what: String,
    base: String,
    #[serde(default)]
    set: serde_json::Map<String, Value>,
    #[serde(default)]
    remove: Vec<String>,
    expect: String,
}

/// A resource the API server must refuse, and part of the message it must answer with.
#[derive(Clone, Debug)]
pub struct Case {
    pub what: String,
    pub doc: Value,
    pub expect: String,
}

/// Every document of the YAML files in `dir`, by `<file>#<kind>`.
fn documents(dir: &Path) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).map_err(|e| format!("{file}: {e}"))?;
            if let Some(kind) = v["kind"].as_str() {
                out.push((format!("{file}#{kind}"), v.clone()));
            }
        }
    }
    Ok(out)
}

/// The cases, each applied to its base document from `examples_dir` (examples/k8s).
pub fn cases(examples_dir: &Path) -> Result<Vec<Case>, String> {
    let raw: Vec<Raw> = serde_norway::from_str(CASES).map_err(|e| format!("rejected.yaml: {e}"))?;
    let docs = documents(examples_dir)?;
    raw.into_iter()
        .map(|r| {
            let mut doc = docs
                .iter()
                .find(|(name, _)| *name == r.base)
                .map(|(_, d)| d.clone())
                .ok_or_else(|| format!("{}: no document {}", r.what, r.base))?;
            for (pointer, value) in r.set {
                set(&mut doc, &pointer, value).map_err(|e| format!("{}: {e}", r.what))?;
            }
            for pointer in &r.remove {
                remove(&mut doc, pointer).map_err(|e| format!("{}: {e}", r.what))?;
            }
            Ok(Case {
                what: r.what,
                doc,
                expect: r.expect,
            })
        })
        .collect()
}

fn split(pointer: &str) -> Result<(&str, &str), String> {
    pointer
        .rsplit_once('/')
        .ok_or_else(|| format!("{pointer:?} is not a JSON pointer"))
}

fn set(doc: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let (parent, key) = split(pointer)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(key.to_string(), value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("{pointer}: not an index"))?;
            *items
                .get_mut(i)
                .ok_or_else(|| format!("{pointer}: no item"))? = value;
            Ok(())
        }
        _ => Err(format!("{pointer}: no such parent")),
    }
}

fn remove(doc: &mut Value, pointer: &str) -> Result<(), String> {
    let (parent, key) = split(pointer)?;
    let removed = match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(key),
        _ => None,
    };
    removed
        .map(|_| ())
        .ok_or_else(|| format!("{pointer}: nothing to remove"))
}

/// The message of every `x-kubernetes-validations` rule of the CRDs (each must have a case).
pub fn rule_messages() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                    for r in rules {
                        if let Some(msg) = r["message"].as_str() {
                            out.push(msg.to_string());
                        }
                    }
                }
                m.values().for_each(|c| walk(c, out));
            }
            Value::Array(items) => items.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for crd in [StreamJob::crd(), Connector::crd()] {
        walk(&serde_json::to_value(crd).unwrap_or_default(), &mut out);
    }
    out.sort();
    out.dedup();
    out
}
