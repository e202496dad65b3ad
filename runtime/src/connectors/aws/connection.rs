//! Region, endpoint and credentials of an AWS connector, and the SDK configuration made of them.
//!
//! Credentials follow the standard AWS chain (environment, profile, web identity / IRSA, ECS,
//! instance metadata) unless the node gives keys, which in Kubernetes come from a Secret as
//! `${env:…}` (a Connector's `credentials` with `setting: credentials.access_key_id`).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use serde::Deserialize;

use crate::api::NodeConfig;
use crate::error::Result;

/// `request_timeout:` of an AWS node when unset: the limit of one request.
pub fn default_request_timeout() -> weir_crds::Duration {
    weir_crds::Duration::from_secs(30)
}

/// `credentials:` of an AWS node; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentials {
    /// Static keys (with `secret_access_key`, and `session_token` for temporary ones).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// A named profile of the shared config and credentials files.
    pub profile: Option<String>,
    /// A role assumed (STS AssumeRole) with the credentials found above.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// Default `weir`.
    pub role_session_name: Option<String>,
}

/// Where and as whom an AWS node connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsConnection {
    /// Default: the standard chain (`AWS_REGION`, profile, instance metadata).
    pub region: Option<String>,
    /// A local server (kinesis-local, moto, LocalStack) or a VPC endpoint.
    pub endpoint_url: Option<String>,
    pub credentials: AwsCredentials,
}

/// Connect timeout of every call; a wrong endpoint fails after it (and is retried by policy).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl AwsConnection {
    /// Checks the settings without I/O; errors name the field of `cfg`. A value that is an
    /// `${env:…}` reference is only known at `weir run` and is taken as it is.
    pub fn check(&self, cfg: &NodeConfig) -> Result<()> {
        let known = |v: &&String| !v.contains("${env:");
        if let Some(r) = self.region.as_ref().filter(known) {
            let ok = !r.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(cfg.error(
                    "region",
                    format!("{r:?} is not an AWS region like us-east-1"),
                ));
            }
        }
        if let Some(e) = self.endpoint_url.as_ref().filter(known) {
            match url::Url::parse(e) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => {
                    return Err(cfg.error(
                        "endpoint_url",
                        format!("{e:?} is not an http:// or https:// URL"),
                    ))
                }
            }
        }
        let c = &self.credentials;
        match (&c.access_key_id, &c.secret_access_key) {
            (Some(_), None) => {
                return Err(cfg.error(
                    "credentials.secret_access_key",
                    "access_key_id is set, secret_access_key is missing",
                ))
            }
            (None, Some(_)) => {
                return Err(cfg.error(
                    "credentials.access_key_id",
                    "secret_access_key is set, access_key_id is missing",
                ))
            }
            (Some(id), Some(_)) if id.trim().is_empty() => {
                return Err(cfg.error("credentials.access_key_id", "must not be empty"))
            }
            _ => {}
        }
        if c.session_token.is_some() && c.access_key_id.is_none() {
            return Err(cfg.error(
                "credentials.session_token",
                "goes with access_key_id and secret_access_key",
            ));
        }
        if c.profile.is_some() && c.access_key_id.is_some() {
            return Err(cfg.error(
                "credentials.profile",
                "set either a profile or access keys, not both",
            ));
        }
        if let Some(arn) = &c.role_arn {
            if known(&arn) && (!arn.starts_with("arn:") || !arn.contains(":role/")) {
                return Err(cfg.error(
                    "credentials.role_arn",
                    format!("{arn:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
                ));
            }
        } else if c.external_id.is_some() || c.role_session_name.is_some() {
            return Err(cfg.error(
                "credentials.role_arn",
                "external_id and role_session_name need role_arn",
            ));
        }
        Ok(())
    }

    /// The SDK configuration: the standard chain with these settings on top. The SDK's own
    /// retries are off: each connector retries through its `retry` policy, by its own rules.
    pub async fn sdk_config(&self, request_timeout: Duration) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(request_timeout)
                    .build(),
            );
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let c = &self.credentials;
        if let Some(p) = &c.profile {
            loader = loader.profile_name(p);
        }
        if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                c.session_token.clone(),
                None,
                "weir node settings",
            ));
        }
        let base = loader.load().await;
        let Some(role) = &c.role_arn else {
            return base;
        };
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role)
            .session_name(c.role_session_name.as_deref().unwrap_or("weir"))
            .configure(&base);
        if let Some(id) = &c.external_id {
            assume = assume.external_id(id);
        }
        let provider = assume.build().await;
        base.into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build()
    }

    /// For error messages: the region and endpoint a call went to.
    pub fn describe(&self, sdk: &SdkConfig) -> String {
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "no region".into());
        match &self.endpoint_url {
            Some(e) => format!("{region}, endpoint {e}"),
            None => region,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig::for_test("sinks[0]", "kinesis", serde_json::json!({}))
    }

    fn err(c: AwsConnection) -> String {
        c.check(&cfg()).unwrap_err().to_string()
    }

    #[test]
    fn good_settings_pass() {
        let c = AwsConnection {
            region: Some("eu-west-1".into()),
            endpoint_url: Some("http://127.0.0.1:4568".into()),
            credentials: AwsCredentials {
                access_key_id: Some("AKIA".into()),
                secret_access_key: Some("s".into()),
                role_arn: Some("arn:aws:iam::123456789012:role/writer".into()),
                external_id: Some("x".into()),
                ..Default::default()
            },
        };
        c.check(&cfg()).unwrap();
        AwsConnection::default().check(&cfg()).unwrap();
        AwsConnection {
            region: Some("${env:AWS_REGION}".into()),
            endpoint_url: Some("${env:KINESIS_ENDPOINT}".into()),
            ..Default::default()
        }
        .check(&cfg())
        .unwrap();
    }

    #[test]
    fn bad_settings_name_the_field() {
        let with = |credentials| AwsConnection {
            credentials,
            ..Default::default()
        };
        assert!(err(AwsConnection {
            region: Some("EU West".into()),
            ..Default::default()
        })
        .starts_with("sinks[0].region:"));
        assert!(err(AwsConnection {
            endpoint_url: Some("localhost:4568".into()),
            ..Default::default()
        })
        .starts_with("sinks[0].endpoint_url:"));
        assert!(err(with(AwsCredentials {
            access_key_id: Some("a".into()),
            ..Default::default()
        }))
        .starts_with("sinks[0].credentials.secret_access_key:"));
        assert!(err(with(AwsCredentials {
            session_token: Some("t".into()),
            ..Default::default()
        }))
        .starts_with("sinks[0].credentials.session_token:"));
        assert!(err(with(AwsCredentials {
            role_arn: Some("writer".into()),
            ..Default::default()
        }))
        .starts_with("sinks[0].credentials.role_arn:"));
        assert!(err(with(AwsCredentials {
            external_id: Some("x".into()),
            ..Default::default()
        }))
        .starts_with("sinks[0].credentials.role_arn:"));
        assert!(err(with(AwsCredentials {
            profile: Some("p".into()),
            access_key_id: Some("a".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        }))
        .starts_with("sinks[0].credentials.profile:"));
    }
}
