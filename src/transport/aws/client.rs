//! The shared AWS plumbing: SDK configuration from the standard chain plus the
//! `[aws]` overrides, one error type that says what a failure *means* for
//! delivery, and the back-off every retry loop uses.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::AwsConfig;

/// Attempts the SDK itself makes per call (on throttling, 5xx and connection
/// errors) before our loops see the failure.
const SDK_ATTEMPTS: u32 = 3;

/// Loads region and credentials through the standard chain (environment,
/// profile, web identity, container and instance roles) with the config's
/// overrides. `AWS_ENDPOINT_URL` is honoured by the chain itself. Without a
/// region no call can work, so that is refused here, at start-up.
pub async fn sdk_config(cfg: &AwsConfig) -> Result<aws_config::SdkConfig, AwsError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(SDK_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(cfg.backoff_ms))
                .with_max_backoff(Duration::from_millis(cfg.max_backoff_ms)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
                .operation_attempt_timeout(Duration::from_millis(cfg.call_timeout_ms))
                .build(),
        );
    if let Some(region) = &cfg.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url.get_ref().clone());
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        let msg = "no AWS region: set aws.region in the config, or AWS_REGION".to_string();
        return Err(AwsError::new(
            FailureKind::Denied,
            "configuration",
            "NoRegion",
            msg,
        ));
    }
    Ok(sdk)
}

/// What a failed AWS call means for the message it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer, a timeout, a 5xx or throttling: the broker is (for now) not
    /// there. Retry; an outbox holds its events meanwhile.
    Unreachable,
    /// The topic or queue does not exist (yet): retry, it may be created.
    Missing,
    /// Credentials are missing or refused: retry, and shout about it.
    Denied,
    /// The broker refused this request for what it contains: retrying the
    /// same message cannot help.
    Rejected,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Unreachable => "unreachable",
            FailureKind::Missing => "missing",
            FailureKind::Denied => "denied",
            FailureKind::Rejected => "rejected",
        }
    }
}

/// A failed AWS call, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed ({}): {code}: {message}", kind.as_str())]
pub struct AwsError {
    pub kind: FailureKind,
    /// The AWS operation, e.g. `PublishBatch`.
    pub operation: &'static str,
    /// AWS error code (`NotFound`, `ThrottlingException`, ...) or what kind
    /// of transport failure it was (`DispatchFailure`, `TimeoutError`).
    pub code: String,
    /// The AWS message, or the error chain.
    pub message: String,
}

impl AwsError {
    pub fn new(kind: FailureKind, operation: &'static str, code: &str, message: String) -> Self {
        Self {
            kind,
            operation,
            code: code.to_string(),
            message,
        }
    }

    /// Retrying the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind != FailureKind::Rejected
    }

    /// Classifies an SDK error of any SNS or SQS operation.
    pub fn from_sdk<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let chain = DisplayErrorContext(err).to_string();
        match err {
            SdkError::TimeoutError(_) => {
                Self::new(FailureKind::Unreachable, operation, "TimeoutError", chain)
            }
            SdkError::DispatchFailure(_) => Self::new(
                FailureKind::Unreachable,
                operation,
                "DispatchFailure",
                chain,
            ),
            SdkError::ResponseError(_) => {
                Self::new(FailureKind::Unreachable, operation, "ResponseError", chain)
            }
            SdkError::ConstructionFailure(_) => {
                // Missing credentials or region end up here: configuration.
                Self::new(FailureKind::Denied, operation, "ConstructionFailure", chain)
            }
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let e = se.err();
                let code = e.code().unwrap_or("Unknown").to_string();
                let message = e.message().map(str::to_string).unwrap_or(chain);
                let kind = classify(status, &code);
                Self {
                    kind,
                    operation,
                    code,
                    message,
                }
            }
            _ => Self::new(FailureKind::Unreachable, operation, "Unknown", chain),
        }
    }
}

/// Maps an HTTP status and AWS error code to what the failure means.
pub fn classify(status: u16, code: &str) -> FailureKind {
    const THROTTLED: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottling",
        "KMSThrottlingException",
        "AWS.SimpleQueueService.RequestThrottled",
    ];
    const MISSING: &[&str] = &[
        "NotFound",
        "NotFoundException",
        "ResourceNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    ];
    const DENIED: &[&str] = &[
        "AuthorizationError",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSecurity",
        "KMSAccessDenied",
    ];
    if THROTTLED.contains(&code) || status == 429 || status >= 500 {
        FailureKind::Unreachable
    } else if MISSING.contains(&code) || status == 404 {
        FailureKind::Missing
    } else if DENIED.contains(&code) || status == 401 || status == 403 {
        FailureKind::Denied
    } else {
        FailureKind::Rejected
    }
}

/// Exponential back-off with jitter, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn from_config(cfg: &AwsConfig) -> Self {
        Self {
            base: Duration::from_millis(cfg.backoff_ms),
            max: Duration::from_millis(cfg.max_backoff_ms),
        }
    }

    /// The wait before attempt `attempt + 1` (`attempt` ≥ 1): doubled per
    /// attempt, capped, then scaled to 50–100 % so that many routers retrying
    /// at once do not hit a recovering broker in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = 0.5 + f64::from(nanos % 1000) / 2000.0;
        capped.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_status_and_code() {
        assert_eq!(classify(400, "Throttling"), FailureKind::Unreachable);
        assert_eq!(classify(503, "Whatever"), FailureKind::Unreachable);
        assert_eq!(classify(404, "NotFound"), FailureKind::Missing);
        assert_eq!(
            classify(400, "AWS.SimpleQueueService.NonExistentQueue"),
            FailureKind::Missing
        );
        assert_eq!(classify(403, "AuthorizationError"), FailureKind::Denied);
        assert_eq!(classify(400, "InvalidParameter"), FailureKind::Rejected);
        assert!(!AwsError::new(FailureKind::Rejected, "op", "x", "y".into()).is_retryable());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let d = b.delay(attempt).as_millis() as u64;
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} ms");
        }
    }
}
