//! One error type for the runtime; every variant says where it happened.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec or config problem, with the path of the field (`sinks[0].rolling.max_part_size`).
    #[error("{}", format_spec_errors(.0))]
    Spec(Vec<weir_crds::SpecError>),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A record a node could not handle; `record` is a short rendering of it.
    #[error("{node}: record {record}: {message}")]
    Record {
        node: String,
        record: String,
        message: String,
    },
    /// Any other failure of a named node.
    #[error("{node}: {message}")]
    Node { node: String, message: String },
    /// A failure a restart cannot repair (a missing table or topic, a refused password or
    /// certificate): the job fails at once, whatever its restart strategy.
    #[error("{node}: {message}")]
    Fatal { node: String, message: String },
    /// A worker's restart strategy gave up; `causes` are its failures, newest first.
    #[error("{}", format_exhausted(*.worker, .why, .causes))]
    RestartsExhausted {
        worker: u32,
        why: String,
        causes: Vec<String>,
    },
    #[error("{0}")]
    Other(String),
}

fn format_exhausted(worker: u32, why: &str, causes: &[String]) -> String {
    let mut text = format!("worker {worker} failed and is not restarted again: {why}");
    for (i, cause) in causes.iter().enumerate() {
        let label = if i == 0 { "caused by" } else { "after" };
        text.push_str(&format!("\n  {label}: {cause}"));
    }
    text
}

fn format_spec_errors(errors: &[weir_crds::SpecError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    lines.join("\n")
}

impl Error {
    pub fn spec(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Spec(vec![weir_crds::SpecError::new(path, message)])
    }
    pub fn node(node: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Node {
            node: node.into(),
            message: message.to_string(),
        }
    }
    /// A record `node` could not handle, rendered short ([`Record::describe`]).
    ///
    /// [`Record::describe`]: crate::record::Record::describe
    pub fn record(node: &str, record: &crate::record::Record, message: impl Into<String>) -> Self {
        Error::Record {
            node: node.to_string(),
            record: record.describe(),
            message: message.into(),
        }
    }
    pub fn fatal(node: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Fatal {
            node: node.into(),
            message: message.to_string(),
        }
    }

    /// Whether restarting the worker from its last checkpoint may get past this failure. Not
    /// for a bad spec, a bad record (the replay meets the same record), a [`Error::Fatal`]
    /// failure, a local path that is not a directory or not writable, or storage that refuses
    /// the credentials; everything else (connections, timeouts, storage outages) is worth a
    /// restart.
    pub fn restartable(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            Error::Spec(_)
            | Error::Record { .. }
            | Error::Fatal { .. }
            | Error::RestartsExhausted { .. } => false,
            Error::Io { source, .. } => !matches!(
                source.kind(),
                ErrorKind::NotADirectory
                    | ErrorKind::IsADirectory
                    | ErrorKind::PermissionDenied
                    | ErrorKind::ReadOnlyFilesystem
            ),
            Error::Store { source, .. } => !matches!(
                source,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            _ => true,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
    pub fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to I/O and object-store errors: `.ctx(|| format!("writing {path}"))`.
pub trait Context<T> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

impl<T> Context<T> for std::result::Result<T, object_store::Error> {
    fn ctx<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::store(context(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_for_failures_a_restart_can_get_past() {
        let io = |kind: std::io::ErrorKind| Error::io("creating /out", std::io::Error::from(kind));
        assert!(io(std::io::ErrorKind::ConnectionRefused).restartable());
        assert!(io(std::io::ErrorKind::TimedOut).restartable());
        assert!(!io(std::io::ErrorKind::NotADirectory).restartable());
        assert!(!io(std::io::ErrorKind::PermissionDenied).restartable());
        assert!(Error::node("s", "connection reset").restartable());
        assert!(Error::Checkpoint("checkpoint 3 timed out".into()).restartable());
        assert!(!Error::fatal("s", "relation \"events\" does not exist").restartable());
        assert!(!Error::Record {
            node: "m".into(),
            record: "1".into(),
            message: "bad".into()
        }
        .restartable());
    }
}
