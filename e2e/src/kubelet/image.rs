//! Images without a container runtime: an image reference names a stage of the project's
//! Dockerfile (`ghcr.io/weir/weir-operator:0.1.0` → the stage `AS weir-operator`), whose
//! ENTRYPOINT, CMD, ENV and WORKDIR the kubelet applies as a container runtime would, so a Pod
//! without `command` runs the image's exact entrypoint. The binaries come from a directory on
//! the host that stands in for the image's /usr/local/bin.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    #[error("Dockerfile line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("image {image:?}: the Dockerfile has no stage named {stage:?} (stages: {known})")]
    UnknownStage {
        image: String,
        stage: String,
        known: String,
    },
}

/// The stage name an image reference maps to: its last path segment without tag or digest.
pub fn stage_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

/// The stages of a Dockerfile by name (`FROM … AS name`), each with what it inherits from the
/// stage it is built `FROM`.
#[derive(Clone, Debug, Default)]
pub struct Dockerfile {
    stages: BTreeMap<String, ImageConfig>,
}

impl Dockerfile {
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        let mut stages = BTreeMap::new();
        let mut current: Option<(Option<String>, ImageConfig)> = None;
        for (line_no, line) in logical_lines(text) {
            let err = |message: String| ImageError::Parse {
                line: line_no,
                message,
            };
            let (instr, rest) = line
                .split_once(char::is_whitespace)
                .unwrap_or((line.as_str(), ""));
            let rest = rest.trim();
            match instr.to_ascii_uppercase().as_str() {
                "FROM" => {
                    if let Some((Some(name), cfg)) = current.take() {
                        stages.insert(name, cfg);
                    }
                    let words: Vec<&str> = rest
                        .split_whitespace()
                        .filter(|w| !w.starts_with("--"))
                        .collect();
                    let (base, name) = match words.as_slice() {
                        [base] => (*base, None),
                        [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                            (*base, Some(name.to_string()))
                        }
                        _ => return Err(err(format!("cannot read FROM {rest}"))),
                    };
                    let inherited = stages.get(base).cloned().unwrap_or_default();
                    current = Some((name, inherited));
                }
                other => {
                    let Some((_, cfg)) = current.as_mut() else {
                        if matches!(other, "ARG") {
                            continue;
                        }
                        return Err(err(format!("{instr} before the first FROM")));
                    };
                    match other {
                        "ENTRYPOINT" => {
                            cfg.entrypoint = command_form(rest).map_err(err)?;
                            // Docker: setting ENTRYPOINT clears a CMD inherited from the base.
                            cfg.cmd.clear();
                        }
                        "CMD" => cfg.cmd = command_form(rest).map_err(err)?,
                        "ENV" => {
                            for (k, v) in env_pairs(rest).map_err(err)? {
                                cfg.env.retain(|(name, _)| *name != k);
                                cfg.env.push((k, v));
                            }
                        }
                        "WORKDIR" => cfg.workdir = Some(rest.to_string()),
                        "USER" => cfg.user = Some(rest.to_string()),
                        _ => {}
                    }
                }
            }
        }
        if let Some((Some(name), cfg)) = current {
            stages.insert(name, cfg);
        }
        Ok(Dockerfile { stages })
    }

    /// The configuration of the stage `image` names.
    pub fn image(&self, image: &str) -> Result<&ImageConfig, ImageError> {
        let stage = stage_name(image);
        self.stages
            .get(stage)
            .ok_or_else(|| ImageError::UnknownStage {
                image: image.to_string(),
                stage: stage.to_string(),
                known: self.stages.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Lines with continuations (`\` at the end) joined, comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && buf.is_empty()) {
            continue;
        }
        if buf.is_empty() {
            start = i + 1;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                buf.push_str(part);
                buf.push(' ');
            }
            None => {
                buf.push_str(trimmed);
                out.push((start, std::mem::take(&mut buf).trim().to_string()));
            }
        }
    }
    if !buf.trim().is_empty() {
        out.push((start, buf.trim().to_string()));
    }
    out
}

/// ENTRYPOINT/CMD: the exec form (a JSON array) as it is, the shell form through `/bin/sh -c`.
fn command_form(rest: &str) -> Result<Vec<String>, String> {
    if rest.starts_with('[') {
        serde_json::from_str(rest).map_err(|e| format!("exec form {rest}: {e}"))
    } else if rest.is_empty() {
        Ok(Vec::new())
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
    }
}

/// `ENV a=1 b="two words"` or the legacy `ENV a one value`.
fn env_pairs(rest: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("ENV {rest}: no value"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next() != Some('=') {
            return Err(format!("ENV {rest}: expected key=value"));
        }
        let mut value = String::new();
        let mut quote = None;
        while let Some(c) = chars.peek().copied() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    chars.next();
                    if let Some(escaped) = chars.peek().copied() {
                        value.push(escaped);
                    }
                }
                _ => value.push(c),
            }
            chars.next();
        }
        if quote.is_some() {
            return Err(format!("ENV {rest}: unclosed quote"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = r#"
# syntax=docker/dockerfile:1
ARG RUST_VERSION=1.88
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
RUN cargo build --release \
    --bin weir
ENTRYPOINT ["cargo"]

FROM debian:bookworm-slim AS runtime
ENV LANG=C.UTF-8 WEIR_LOG="info, weir=debug"
ENV LEGACY some value
USER 10001:10001
WORKDIR /home/weir
CMD ["--help"]

FROM runtime AS weir
ENTRYPOINT ["weir"]

FROM runtime AS weir-operator
ENTRYPOINT ["weir-operator"]
CMD ["run"]

from runtime as shell
entrypoint echo "hi there"
"#;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn image_references_name_stages() {
        assert_eq!(
            stage_name("ghcr.io/weir/weir-operator:0.1.0"),
            "weir-operator"
        );
        assert_eq!(stage_name("weir"), "weir");
        assert_eq!(stage_name("localhost:5000/weir:dev"), "weir");
        assert_eq!(stage_name("ghcr.io/weir/weir@sha256:abc"), "weir");
    }

    #[test]
    fn stages_inherit_and_set_entrypoint_cmd_env() {
        let d = Dockerfile::parse(DOCKERFILE).unwrap();
        let op = d.image("ghcr.io/weir/weir-operator:0.1.0").unwrap();
        assert_eq!(op.entrypoint, s(&["weir-operator"]));
        assert_eq!(op.cmd, s(&["run"]));
        assert_eq!(op.workdir.as_deref(), Some("/home/weir"));
        assert_eq!(op.user.as_deref(), Some("10001:10001"));
        assert_eq!(
            op.env,
            vec![
                ("LANG".into(), "C.UTF-8".into()),
                ("WEIR_LOG".into(), "info, weir=debug".into()),
                ("LEGACY".into(), "some value".into())
            ]
        );
        let weir = d.image("weir:dev").unwrap();
        assert_eq!(weir.entrypoint, s(&["weir"]));
        assert!(weir.cmd.is_empty(), "ENTRYPOINT clears the inherited CMD");
        let shell = d.image("shell").unwrap();
        assert_eq!(shell.entrypoint, s(&["/bin/sh", "-c", "echo \"hi there\""]));
        let build = d.image("build").unwrap();
        assert_eq!(build.entrypoint, s(&["cargo"]));
    }

    #[test]
    fn the_projects_dockerfile_gives_both_images_their_entrypoints() {
        let d = Dockerfile::parse(include_str!("../../../Dockerfile")).unwrap();
        let op = d.image("ghcr.io/weir/weir-operator:0.1.0").unwrap();
        assert_eq!(
            (op.entrypoint.clone(), op.cmd.clone()),
            (s(&["weir-operator"]), s(&["run"]))
        );
        assert_eq!(op.user.as_deref(), Some("10001:10001"), "non-root, numeric");
        let weir = d.image("ghcr.io/weir/weir:0.1.0").unwrap();
        assert_eq!(weir.entrypoint, s(&["weir"]));
    }

    #[test]
    fn unknown_images_are_named_with_the_known_stages() {
        let d = Dockerfile::parse(DOCKERFILE).unwrap();
        assert_eq!(
            d.image("busybox:1.36").unwrap_err().to_string(),
            "image \"busybox:1.36\": the Dockerfile has no stage named \"busybox\" \
             (stages: build, runtime, shell, weir, weir-operator)"
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let err = Dockerfile::parse("FROM a AS b\nENTRYPOINT [\"x\"").unwrap_err();
        assert!(
            err.to_string().starts_with("Dockerfile line 2: exec form"),
            "{err}"
        );
        let err = Dockerfile::parse("ENV A=1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dockerfile line 1: ENV before the first FROM"
        );
    }
}
