//! What a failed AWS call means: throttled (back off, and send less), transient (retry), or
//! fatal (a wrong setting, a missing stream: fail with the service's own words). The decision
//! is a pure function of the error code and HTTP status ([`failure_of`]); [`classify`] reads
//! them off an SDK error.

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::event_stream::RawMessage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The service refused for load: retry later, and lower the request rate.
    Throttled,
    /// Worth retrying as is (a network error, a timeout, a server error).
    Transient,
    /// Retrying cannot help (not found, access denied, invalid request).
    Fatal,
}

impl Failure {
    pub fn retryable(self) -> bool {
        self != Failure::Fatal
    }
}

/// Codes AWS services use when they refuse for load. Firehose answers
/// `ServiceUnavailableException` for "back off and retry".
const THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KMSThrottlingException",
    "ServiceUnavailableException",
    "SlowDown",
];

/// Codes of failures on the service's side, and of states that pass (a consumer still being
/// registered, a subscription a few seconds too soon, credentials being refreshed).
const TRANSIENT: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "ResourceInUseException",
    "ExpiredTokenException",
    "ExpiredIteratorException",
];

/// The rule, from an error code (when the service sent one) and an HTTP status (when known).
/// Unknown codes are fatal on a 4xx (the request itself is wrong) and transient otherwise.
pub fn failure_of(code: Option<&str>, status: Option<u16>) -> Failure {
    if let Some(code) = code {
        if THROTTLED.contains(&code) {
            return Failure::Throttled;
        }
        if TRANSIENT.contains(&code) {
            return Failure::Transient;
        }
    }
    match status {
        Some(429) => Failure::Throttled,
        Some(s) if s >= 500 => Failure::Transient,
        Some(s) if s >= 400 => Failure::Fatal,
        _ if code.is_some() => Failure::Fatal,
        _ => Failure::Transient,
    }
}

/// The HTTP status of a raw response, where the response is HTTP (not an event-stream message).
pub trait RawStatus {
    fn status_code(&self) -> Option<u16>;
}

impl RawStatus for HttpResponse {
    fn status_code(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

impl RawStatus for RawMessage {
    fn status_code(&self) -> Option<u16> {
        None
    }
}

/// Classifies an SDK error: no response (timeout, connection) is transient, a request that
/// could not be built (e.g. no credentials found) is fatal, a service error goes by its code.
pub fn classify<E: ProvideErrorMetadata, R: RawStatus>(e: &SdkError<E, R>) -> Failure {
    match e {
        SdkError::ConstructionFailure(_) => Failure::Fatal,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Transient
        }
        SdkError::ServiceError(s) => failure_of(s.err().code(), s.raw().status_code()),
        _ => Failure::Transient,
    }
}

/// The error code a service sent, if any.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// The message a service sent with its error, if any.
pub fn message<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().message(),
        _ => None,
    }
}

/// The whole cause chain (the SDK's own `Display` says only "service error").
pub fn describe<E: StdError + 'static, R: std::fmt::Debug + 'static>(e: &SdkError<E, R>) -> String {
    DisplayErrorContext(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_and_429_are_throttled() {
        for code in [
            "ProvisionedThroughputExceededException",
            "LimitExceededException",
        ] {
            assert_eq!(
                failure_of(Some(code), Some(400)),
                Failure::Throttled,
                "{code}"
            );
        }
        assert_eq!(
            failure_of(Some("ServiceUnavailableException"), Some(503)),
            Failure::Throttled
        );
        assert_eq!(failure_of(None, Some(429)), Failure::Throttled);
    }

    #[test]
    fn server_side_and_passing_states_are_transient() {
        assert_eq!(
            failure_of(Some("InternalFailure"), Some(500)),
            Failure::Transient
        );
        assert_eq!(
            failure_of(Some("ResourceInUseException"), Some(400)),
            Failure::Transient
        );
        assert_eq!(failure_of(None, Some(502)), Failure::Transient);
        assert_eq!(failure_of(None, None), Failure::Transient);
        assert_eq!(
            failure_of(Some("SomethingNew"), Some(503)),
            Failure::Transient
        );
    }

    #[test]
    fn wrong_requests_are_fatal() {
        for code in [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "InvalidArgumentException",
            "ValidationException",
            "KMSAccessDeniedException",
            "UnrecognizedClientException",
        ] {
            assert_eq!(failure_of(Some(code), Some(400)), Failure::Fatal, "{code}");
            assert!(!failure_of(Some(code), None).retryable(), "{code}");
        }
        assert_eq!(failure_of(None, Some(403)), Failure::Fatal);
    }
}
