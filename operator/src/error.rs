//! Operator errors, each with the context needed to act on it.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("worker admin API {url}: {message}")]
    Admin { url: String, message: String },
    #[error("savepoint storage {location}: {message}")]
    Storage { location: String, message: String },
    #[error("{0}")]
    Spec(String),
    #[error("serializing {what}: {message}")]
    Serialize { what: String, message: String },
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Not a failure: the reconcile waits for something (a savepoint during deletion).
    #[error("{0}")]
    Pending(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to kube errors: `api.get(..).await.kube_ctx(|| format!(..))`.
pub trait KubeContext<T> {
    fn kube_ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeContext<T> for std::result::Result<T, kube::Error> {
    fn kube_ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            context: context(),
            source,
        })
    }
}

/// An error with its whole cause chain (`a: b: c`): reqwest's own message ("error sending request
/// for url …") hides whether DNS failed or the connection was refused; its sources say which.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some errors repeat their source's text in their own; say each part once.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
