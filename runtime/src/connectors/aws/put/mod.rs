//! The batching sink the Kinesis and Firehose sinks both are. A service ([`PutService`]) says
//! how a record becomes an entry and how one request is sent; [`PutSink`] does the rest:
//! batches within the limits ([`batch`]), requests in flight up to an AIMD limit ([`aimd`]),
//! only the entries the service refused retried, by their error code, with the `retry` policy's
//! jittered backoff, and `on_error` for records that can never go (too large, or still refused
//! when the retries run out): fail naming the record, skip, or a dead-letter file. A flush (at
//! every checkpoint barrier) returns only once every entry is acknowledged or dead-lettered:
//! at-least-once.

pub mod aimd;
pub mod batch;
pub mod config;
pub mod dead_letter;
pub mod encode;
mod metrics;
mod sink;

use async_trait::async_trait;

pub use batch::{Entry, Limits};
pub use config::{BatchConfig, Ordering, PutSettings};
pub use sink::PutSink;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::errors::{classify, describe, Failure, RawStatus};
use crate::api::{NodeConfig, NodeContext};
use crate::error::Result;
use crate::record::Record;

/// What the service said about one entry of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed { code: String, message: String },
}

/// A request that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub failure: Failure,
    pub message: String,
}

impl Outcome {
    /// One entry's result as both put APIs report it: an error code and message, or neither.
    pub fn of(code: Option<String>, message: Option<String>) -> Outcome {
        match code {
            None => Outcome::Ok,
            Some(code) => Outcome::Failed {
                code,
                message: message.unwrap_or_default(),
            },
        }
    }

    /// Every entry's result of one put call, in order, or the call's failure as a whole.
    /// `code_and_message` reads an entry's answer (each API has its own type for it).
    pub fn all<T, E, R>(
        answer: std::result::Result<Vec<T>, SdkError<E, R>>,
        code_and_message: impl Fn(T) -> (Option<String>, Option<String>),
    ) -> std::result::Result<Vec<Outcome>, RequestError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: RawStatus + std::fmt::Debug + 'static,
    {
        let entries = answer.map_err(|e| RequestError::of_call(&e))?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                let (code, message) = code_and_message(entry);
                Outcome::of(code, message)
            })
            .collect())
    }
}

impl RequestError {
    /// An entry the SDK would not build: sending again cannot help.
    pub fn unbuildable(e: impl std::fmt::Display) -> RequestError {
        RequestError {
            failure: Failure::Fatal,
            message: e.to_string(),
        }
    }

    /// A call that failed as a whole, classified for the retry policy.
    pub fn of_call<E, R>(e: &SdkError<E, R>) -> RequestError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: RawStatus + std::fmt::Debug + 'static,
    {
        RequestError {
            failure: classify(e),
            message: describe(e),
        }
    }
}

/// The check at open that the target exists: `describe_call` retried by `retry` while the
/// failure is retryable. `AccessDeniedException` only warns (a writer's role may lack the
/// describe permission; the first put will tell); any other failure stops the node, naming
/// the target and the connection (`connection`, from [`AwsConnection::describe`]).
///
/// [`AwsConnection::describe`]: super::connection::AwsConnection::describe
pub async fn check_target_exists<T, E, R, Fut>(
    ctx: &NodeContext,
    target: &str,
    connection: &str,
    retry: crate::retry::RetryPolicy,
    describe_call: impl FnMut() -> Fut,
) -> Result<()>
where
    Fut: std::future::Future<Output = std::result::Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: RawStatus + std::fmt::Debug + 'static,
{
    use backon::Retryable;
    let described = describe_call
        .retry(retry)
        .when(|e| classify(e).retryable())
        .await;
    match described {
        Ok(_) => Ok(()),
        Err(e) if super::errors::code(&e) == Some("AccessDeniedException") => {
            tracing::warn!(
                node = %ctx.node,
                "cannot check that {target} exists: {}",
                describe(&e)
            );
            Ok(())
        }
        Err(e) => Err(crate::error::Error::node(
            &ctx.node,
            format!("{target} ({connection}): {}", describe(&e)),
        )),
    }
}

/// One AWS put API (Kinesis PutRecords, Firehose PutRecordBatch).
#[async_trait]
pub trait PutService: Clone + Send + Sync + 'static {
    /// Connects and checks that the target exists (the factory does no I/O).
    async fn open(&mut self, ctx: &NodeContext) -> Result<()>;
    /// The entry for a record, or why there is none (the record then follows `on_error`).
    fn encode(&self, record: &Record) -> std::result::Result<Entry, String>;
    /// Sends one request; on success, the outcome of each entry in order.
    async fn put(&self, entries: &[Entry]) -> std::result::Result<Vec<Outcome>, RequestError>;
    /// The target in messages: `stream "orders"`.
    fn target(&self) -> String;
    /// `weir validate --connect`: the target exists (one describe call, no retries, no write).
    async fn preflight(&self, cfg: &NodeConfig) -> Result<Vec<String>>;
}
