//! Which publish failures are worth another attempt: a pure function over the client's error,
//! so the sink's retry loop (weir's one `RetryPolicy`) only sees a yes or no.

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::error::PublishError;

/// Why a publish failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server or the network: try again after a backoff (an emulator restart, a dropped
    /// connection, throttling).
    Transient,
    /// The client paused the message's ordering key after an earlier failure of that key:
    /// resume the key and publish again, in order.
    KeyPaused,
    /// Retrying cannot help: a missing topic, no permission, an invalid message.
    Permanent,
}

/// gRPC codes Google's own publishers retry, plus `INTERNAL`/`UNKNOWN`, which Pub/Sub
/// documents as transient.
fn transient_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
    )
}

pub fn classify(e: &PublishError) -> Failure {
    match e {
        PublishError::OrderingKeyPaused => Failure::KeyPaused,
        PublishError::Shutdown => Failure::Permanent,
        PublishError::Rpc(e) => match e.status() {
            Some(s) => {
                if transient_code(s.code) {
                    Failure::Transient
                } else {
                    Failure::Permanent
                }
            }
            // No answer from the server: connection refused or reset, a timeout.
            None if e.is_timeout() || e.is_connect() || e.is_io() || e.is_transport() => {
                Failure::Transient
            }
            None if e.is_authentication() => Failure::Permanent,
            None => Failure::Transient,
        },
        // A newer client's error kind: not known to be safe to repeat.
        _ => Failure::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;
    use google_cloud_gax::error::Error;
    use std::sync::Arc;

    fn rpc(code: Code) -> PublishError {
        let status = Status::default().set_code(code).set_message("x");
        PublishError::Rpc(Arc::new(Error::service(status)))
    }

    #[test]
    fn server_side_trouble_is_retried_misconfiguration_is_not() {
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
        ] {
            assert_eq!(classify(&rpc(c)), Failure::Transient, "{c:?}");
        }
        for c in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::FailedPrecondition,
        ] {
            assert_eq!(classify(&rpc(c)), Failure::Permanent, "{c:?}");
        }
        assert_eq!(
            classify(&PublishError::OrderingKeyPaused),
            Failure::KeyPaused
        );
        assert_eq!(classify(&PublishError::Shutdown), Failure::Permanent);
        let io = PublishError::Rpc(Arc::new(Error::io("connection reset")));
        assert_eq!(classify(&io), Failure::Transient);
    }
}
