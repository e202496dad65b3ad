//! Every example spec, mutated: `weir validate` exits 0 or 2 (never by a signal) within 2 s, and
//! every error names a path that is in the mutated spec or whose parent is (a missing field).

use std::process::Stdio;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_norway::{Mapping, Number, Value};

use super::harness::*;

/// Cases per run (each starts a `weir validate`); `PROPTEST_CASES` overrides.
const CASES: u32 = 500;
const DEADLINE: Duration = Duration::from_secs(2);

fn examples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "examples not found in {dir}");
    out
}

/// Values that broke or fooled weir before, and the edges of every type.
fn nasty_values() -> Vec<Value> {
    let n = |v: Number| Value::Number(v);
    let deep = (0..80).fold(Value::Null, |v, _| Value::Sequence(vec![v]));
    let s = |t: &str| Value::String(t.to_string());
    vec![
        Value::Null,
        Value::Bool(true),
        n(0.into()),
        n((-1).into()),
        n(4_294_967_295u64.into()),
        n(4_294_967_296u64.into()),
        n(u64::MAX.into()),
        n(i64::MIN.into()),
        n(1e308.into()),
        n(f64::NAN.into()),
        n(f64::INFINITY.into()),
        n(f64::NEG_INFINITY.into()),
        s(""),
        s(&"x".repeat(5000)),
        s("99999999999999PiB"),
        s("0s"),
        s("100000000d"),
        s("${env:WEIR_TEST_NOT_SET}"),
        s("'("),
        s(&vec!["1"; 600].join("+")),
        s("[1].map(a, [1].map(b, [1].map(c, c)))"),
        deep,
        Value::Mapping(Mapping::new()),
        Value::Sequence(vec![]),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the node at (index into all nodes) with a nasty value.
    Replace(Index, Index),
    /// Remove the mapping entry or sequence element at the node.
    Remove(Index),
    /// Misspell a mapping key.
    Rename(Index),
    /// Repeat a sequence element (duplicate names and the like).
    Duplicate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Replace(a, b)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Rename),
        1 => any::<Index>().prop_map(Mutation::Duplicate),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(Value),
    At(usize),
}

fn all_paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                all_paths(child, here, out);
                here.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                here.push(Step::At(i));
                all_paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, step| match (v, step) {
        (Value::Mapping(m), Step::Key(k)) => m.get_mut(k),
        (Value::Sequence(s), Step::At(i)) => s.get_mut(*i),
        _ => None,
    })
}

fn apply(doc: &mut Value, m: &Mutation) {
    let mut paths = Vec::new();
    all_paths(doc, &mut Vec::new(), &mut paths);
    let pick = |i: &Index| paths[i.index(paths.len())].clone();
    match m {
        Mutation::Replace(at, with) => {
            let values = nasty_values();
            if let Some(node) = node_mut(doc, &pick(at)) {
                *node = values[with.index(values.len())].clone();
            }
        }
        Mutation::Remove(at) | Mutation::Rename(at) | Mutation::Duplicate(at) => {
            let path = pick(at);
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            let Some(parent) = node_mut(doc, parent) else {
                return;
            };
            match (parent, last, m) {
                (Value::Mapping(map), Step::Key(k), Mutation::Remove(_)) => {
                    map.remove(k);
                }
                (Value::Mapping(map), Step::Key(k), Mutation::Rename(_)) => {
                    if let Some(v) = map.remove(k) {
                        let name = format!("{}x", k.as_str().unwrap_or("key"));
                        map.insert(Value::String(name), v);
                    }
                }
                (Value::Sequence(s), Step::At(i), Mutation::Remove(_)) => {
                    s.remove(*i);
                }
                (Value::Sequence(s), Step::At(i), Mutation::Duplicate(_)) => {
                    let copy = s[*i].clone();
                    s.insert(*i, copy);
                }
                _ => {}
            }
        }
    }
}

/// Whether `path` (`sinks[0].rolling.max_part_size`, keys may contain dots) is in `v`.
fn resolves(v: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    if let Some(rest) = path.strip_prefix('[') {
        let Some((i, rest)) = rest.split_once(']') else {
            return false;
        };
        return match (v, i.parse::<usize>()) {
            (Value::Sequence(s), Ok(i)) => s.get(i).is_some_and(|c| resolves(c, rest)),
            _ => false,
        };
    }
    let path = path.strip_prefix('.').unwrap_or(path);
    let Value::Mapping(m) = v else {
        return false;
    };
    m.iter().any(|(k, child)| {
        let Some(k) = k.as_str() else { return false };
        path.strip_prefix(k).is_some_and(|rest| {
            (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
                && resolves(child, rest)
        })
    })
}

fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

fn last_step(path: &str) -> &str {
    &path[parent(path).len()..]
}

/// Paths have no spaces (keys with spaces are not in any example); messages do.
fn is_path(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}

/// Runs `weir validate` on `text`; checks exit, time and the paths of its errors.
fn check(text: &str, doc: Option<&Value>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", text);
    let started = Instant::now();
    let mut child = weir()
        .current_dir(dir.path())
        .args(["validate", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err(TestCaseError::fail(format!(
                "weir validate ran over {DEADLINE:?} on:\n{text}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    prop_assert!(
        matches!(status.code(), Some(0 | 2)),
        "exit {status} on:\n{text}\nstderr: {err}"
    );
    for line in err.lines() {
        let Some(rest) = line.strip_prefix("error: p.yaml: ") else {
            continue;
        };
        // The path is the text before one of the ": " (keys may hold spaces and colons).
        let named = |doc: &Value| {
            rest.match_indices(": ").any(|(i, _)| {
                let path = &rest[..i];
                resolves(doc, path)
                    || (!last_step(path).contains(char::is_whitespace)
                        && resolves(doc, parent(path)))
            })
        };
        let head = rest.split_once(": ").map(|(p, _)| p).filter(|p| is_path(p));
        match (doc, head) {
            (Some(doc), _) if named(doc) => {}
            (Some(_), Some(path)) => prop_assert!(
                false,
                "{path:?} is not in the spec, nor is its parent: {line}\n{text}"
            ),
            // A text edit left no document to look the path up in.
            (None, Some(_)) => {}
            // An error without a path is about the document's root.
            (Some(_), None) => {}
            // Without a document, it says where the text went wrong.
            (None, None) => prop_assert!(
                rest.contains("line ")
                    || rest.contains("at most")
                    || rest.starts_with("the document"),
                "an error without a path or a line: {line}\n{text}"
            ),
        }
    }
    Ok(())
}

#[test]
fn mutated_examples_exit_0_or_2_quickly_naming_real_paths() {
    let examples = examples();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let text_edit = prop::option::of((
        any::<Index>(),
        prop::sample::select(vec![
            "[", "{", "]", ":", "- ", "'", "\"", "\n", "\t", "&a ", "*a", "!!float ", "? ",
        ]),
    ));
    let strategy = (
        any::<Index>(),
        prop::collection::vec(mutation(), 1..4),
        text_edit,
    );
    runner
        .run(&strategy, |(which, mutations, edit)| {
            let (name, original) = &examples[which.index(examples.len())];
            let mut doc: Value = serde_norway::from_str(original).unwrap();
            for m in &mutations {
                apply(&mut doc, m);
            }
            let mut text = serde_norway::to_string(&doc).unwrap();
            if let Some((at, piece)) = edit {
                let mut i = at.index(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                text.insert_str(i, piece);
            }
            // After a text edit the document is whatever the edit made of it.
            let parsed: Option<Value> = serde_norway::from_str(&text).ok();
            check(&text, parsed.as_ref())
                .map_err(|e| TestCaseError::fail(format!("{name} with {mutations:?}: {e}")))
        })
        .unwrap();
}

#[test]
fn the_path_checks_of_this_test_are_right() {
    let doc: Value = serde_norway::from_str(
        "sources: [{ name: a, properties: { bootstrap.servers: x } }]\ncheckpoint: { interval: 1s }\n",
    )
    .unwrap();
    assert!(resolves(&doc, "sources[0].properties.bootstrap.servers"));
    assert!(resolves(&doc, "checkpoint.interval"));
    assert!(!resolves(&doc, "checkpoint.timeout"));
    assert!(resolves(&doc, parent("checkpoint.timeout")));
    assert!(!resolves(&doc, "sources[1]"));
    assert_eq!(parent("sinks[0].path"), "sinks[0]");
    assert_eq!(parent("sinks[0]"), "sinks");
}
