//! Which top-level modules may use which, checked by reading the sources (`cargo test` fails
//! naming the file and line of a back-edge). From the bottom up:
//!
//! - `api` (the traits and the [`Registry`](crate::api::Registry) type), with `record`, `error`,
//!   `metrics`, `retry`, … beside it, and `event_time` (what sources and the `watermark`
//!   transform share about event time) on top of them;
//! - `engine` (runs nodes it gets from a `Registry`), `connectors`, then `transforms` (which may
//!   reuse a connector's client), each registering into a `Registry` and using only what is
//!   below;
//! - `registry` (fills a `Registry` with every built-in connector and transform), then `cli`.
//!
//! A loop between these makes every change to a connector rebuild the reasoning about the engine,
//! and the engine's tests depend on connectors; a shared piece belongs in the lower module.

/// Everything above `api` and `event_time`.
const ABOVE_THE_CORE: &[&str] = &["engine", "registry", "connectors", "transforms", "cli"];

/// Per directory under `src/`, the top-level modules none of its files may name.
const RULES: &[(&str, &[&str])] = &[
    ("api", ABOVE_THE_CORE),
    ("event_time", ABOVE_THE_CORE),
    ("engine", &["registry", "connectors", "transforms", "cli"]),
    ("connectors", &["engine", "registry", "transforms", "cli"]),
    // Transforms may use connectors' clients (the lookups reuse the JDBC and Kafka ones), so
    // connectors may not use transforms.
    ("transforms", &["engine", "registry", "cli"]),
];

/// The top-level modules `source` names through `crate::…` paths, with their 1-based line:
/// `crate::a::b`, `crate::a;` and each item of `crate::{a, b::c}` (also across lines). Lines that
/// are only a comment are skipped (doc links are not imports).
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let code: String = source
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `weir_crate::x` or `$crate::x` are not this crate's paths.
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            // The group's top-level items: each starts after the `{` or a `,` at depth 1.
            let start = at + "crate::".len();
            let mut depth = 0;
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if (c == ',' || c == '{') && depth == 1 {
                    let item = &rest[i + 1..];
                    let name = ident(item);
                    if !name.is_empty() {
                        let lead = item.len() - item.trim_start().len();
                        found.push((line_of(start + i + 1 + lead), name));
                    }
                }
            }
        } else {
            found.push((line_of(at), ident(rest)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = entry.path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn lower_modules_do_not_import_higher_ones() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut problems = Vec::new();
        for (dir, forbidden) in RULES {
            let mut files = Vec::new();
            rs_files(&src.join(dir), &mut files);
            assert!(!files.is_empty(), "no sources under src/{dir}");
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                for (line, module) in crate_paths(&text) {
                    if forbidden.contains(&module.as_str()) {
                        let rel = file.strip_prefix(&src).unwrap().display();
                        problems.push(format!(
                            "src/{rel}:{line}: `{dir}` uses `crate::{module}`, which is above it"
                        ));
                    }
                }
            }
        }
        assert!(
            problems.is_empty(),
            "imports against the layers (see src/layers.rs):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn crate_paths_are_found_in_every_spelling() {
        let source = "\
//! [`crate::registry::Registry`] in a doc is no import
use crate::api::Batch;
use crate::{
    engine::Job,
    record::{Record, Fields},
};
use weir_crate::x;
fn f() { crate::registry::node_config(); }
";
        let found = crate_paths(source);
        let expected = [(2, "api"), (4, "engine"), (5, "record"), (8, "registry")];
        assert_eq!(
            found,
            expected.map(|(l, m)| (l, m.to_string())),
            "one entry per top-level module named, with its line"
        );
    }
}
