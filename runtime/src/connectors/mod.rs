//! Built-in connectors, one folder each, every folder in the same shape (checked by
//! `tests::every_connector_folder_has_the_same_shape`). A connector `<name>/` has:
//!
//! - `mod.rs`: a module doc saying what the connector does (with a YAML example), and
//!   `pub fn register(r: &mut Registry)`, which resolves the config and builds the source/sink.
//! - One module per side it provides: `source.rs` and/or `sink.rs`, or a folder `source/`,
//!   `sink/` (with `mod.rs`) once a side needs more than one file. At least one side.
//! - Its settings: one `config.rs` next to the sides, or, when it has folders, `source/config.rs`
//!   and/or `sink/config.rs` in each side's folder (not both). A config file holds the serde
//!   structs as written in the spec, with `#[serde(deny_unknown_fields)]`, and each side's
//!   `impl ConnectorConfig`, whose `resolve` is pure (no I/O: `weir validate` runs it) and does
//!   all the validation, returning the `Settings` the source or sink is built from.
//! - Anything else is named for what it does (`client.rs`, `retry.rs`, `metrics.rs`, …), and
//!   storage pieces a family's sides share sit beside them in the family folder.
//! - Tests: `#[cfg(test)] mod tests` in the file they test, or `tests.rs` in the side's folder.
//!
//! A family with a source and a sink (`kafka/`, `filesystem/` for the `file` source and the
//! `filesystem` sink) is one folder; the spec's type names need not match the folder's name.

#[cfg(any(feature = "kinesis", feature = "firehose"))]
pub mod aws;
pub mod blackhole;
pub mod datagen;
#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
pub mod filesystem;
#[cfg(feature = "firehose")]
pub mod firehose;
#[cfg(feature = "jdbc")]
pub mod jdbc;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kinesis")]
pub mod kinesis;
#[cfg(any(feature = "kafka", feature = "kinesis", feature = "pubsub"))]
pub mod message;
#[cfg(feature = "pubsub")]
pub mod pubsub;

use crate::api::Registry;

pub fn register(r: &mut Registry) {
    datagen::register(r);
    filesystem::register(r);
    blackhole::register(r);
    #[cfg(feature = "elasticsearch")]
    elasticsearch::register(r);
    #[cfg(feature = "jdbc")]
    jdbc::register(r);
    #[cfg(feature = "kafka")]
    kafka::register(r);
    #[cfg(feature = "kinesis")]
    kinesis::register(r);
    #[cfg(feature = "firehose")]
    firehose::register(r);
    #[cfg(feature = "pubsub")]
    pubsub::register(r);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Folders under `connectors/` that are not connectors, and why.
    const NOT_CONNECTORS: &[&str] = &[
        // Shared by the AWS connectors (credentials, endpoints, the batching put sink); it
        // registers nothing itself.
        "aws",
    ];

    const SIDES: [&str; 2] = ["source", "sink"];

    fn read(path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// Every `.rs` file under `dir`, recursively.
    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = entry.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(read(&p).unwrap());
            }
        }
    }

    /// How the connector folder `dir` breaks the shape of the module doc above, one line per
    /// problem, each naming the folder and the file.
    fn shape_problems(dir: &Path) -> Vec<String> {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut problems = Vec::new();
        let mut problem = |what: String| problems.push(format!("connectors/{name}/: {what}"));

        match read(&dir.join("mod.rs")) {
            None => problem("missing mod.rs".into()),
            Some(m) => {
                if !m.starts_with("//!") {
                    problem("mod.rs does not start with a module doc (//!)".into());
                }
                if !m.contains("pub fn register(") {
                    problem("mod.rs has no `pub fn register(`".into());
                }
            }
        }

        let file = |side: &str| dir.join(format!("{side}.rs")).is_file();
        let folder = |side: &str| dir.join(side).join("mod.rs").is_file();
        let sides: Vec<&str> = SIDES.into_iter().filter(|s| file(s) || folder(s)).collect();
        if sides.is_empty() {
            problem("missing source.rs, sink.rs, source/mod.rs or sink/mod.rs".into());
        }
        for side in &sides {
            if file(side) && dir.join(side).exists() {
                problem(format!("both {side}.rs and {side}/: keep one"));
            }
        }

        let top = dir.join("config.rs");
        let per_side: Vec<String> = sides
            .iter()
            .filter(|s| dir.join(s).join("config.rs").is_file())
            .map(|s| format!("{s}/config.rs"))
            .collect();
        let configs: Vec<String> = if top.is_file() {
            if !per_side.is_empty() {
                problem(format!(
                    "both config.rs and {}: keep one",
                    per_side.join(", ")
                ));
            }
            vec!["config.rs".into()]
        } else {
            if sides.is_empty() {
                problem("missing config.rs".into());
            }
            for side in &sides {
                if folder(side) && !dir.join(side).join("config.rs").is_file() {
                    problem(format!("missing config.rs (or {side}/config.rs)"));
                } else if file(side) {
                    problem(format!("missing config.rs (for {side}.rs)"));
                }
            }
            per_side
        };
        for config in &configs {
            if !read(&dir.join(config)).is_some_and(|c| c.contains("deny_unknown_fields")) {
                problem(format!("{config} has no #[serde(deny_unknown_fields)]"));
            }
        }

        let mut files = Vec::new();
        sources(dir, &mut files);
        let resolves = files
            .iter()
            .map(|f| f.matches("impl ConnectorConfig for").count())
            .sum::<usize>();
        if resolves < sides.len() {
            problem(format!(
                "{} side(s) but {resolves} `impl ConnectorConfig for` in its files",
                sides.len()
            ));
        }
        problems
    }

    #[test]
    fn every_connector_folder_has_the_same_shape() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/connectors");
        let mut folders: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        let mut checked = Vec::new();
        let mut problems = Vec::new();
        for dir in folders {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            if !NOT_CONNECTORS.contains(&name.as_str()) {
                problems.extend(shape_problems(&dir));
                checked.push(name);
            }
        }
        assert!(
            checked.len() >= 9,
            "found only {checked:?} under {}",
            root.display()
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_shape_check_names_the_folder_and_the_missing_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("carrier");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("mod.rs"), "//! Pigeons.\npub fn register() {}\n").unwrap();
        std::fs::write(dir.join("service.rs"), "").unwrap();
        assert_eq!(
            shape_problems(&dir),
            [
                "connectors/carrier/: missing source.rs, sink.rs, source/mod.rs or sink/mod.rs",
                "connectors/carrier/: missing config.rs",
            ]
        );

        std::fs::rename(dir.join("service.rs"), dir.join("sink.rs")).unwrap();
        std::fs::create_dir(dir.join("source")).unwrap();
        std::fs::write(dir.join("source/mod.rs"), "").unwrap();
        std::fs::write(
            dir.join("source/config.rs"),
            "#[serde(deny_unknown_fields)]\nimpl ConnectorConfig for S {}",
        )
        .unwrap();
        assert_eq!(
            shape_problems(&dir),
            [
                "connectors/carrier/: missing config.rs (for sink.rs)",
                "connectors/carrier/: 2 side(s) but 1 `impl ConnectorConfig for` in its files",
            ]
        );

        std::fs::write(
            dir.join("config.rs"),
            "#[serde(deny_unknown_fields)]\nimpl ConnectorConfig for K {}",
        )
        .unwrap();
        assert_eq!(
            shape_problems(&dir),
            ["connectors/carrier/: both config.rs and source/config.rs: keep one"]
        );
        std::fs::remove_file(dir.join("source/config.rs")).unwrap();
        assert_eq!(
            shape_problems(&dir),
            ["connectors/carrier/: 2 side(s) but 1 `impl ConnectorConfig for` in its files"]
        );
    }
}
