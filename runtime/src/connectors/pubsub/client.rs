//! Clients of the Pub/Sub API (google-cloud-pubsub, Google's own Rust client) for an
//! [`Endpoint`]: Google's service with Application Default Credentials, or the emulator over
//! plain gRPC without credentials.

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};

use super::config::Endpoint;
use crate::error::{Error, Result};

/// The variable Google's client libraries read to talk to an emulator.
pub const EMULATOR_ENV: &str = "PUBSUB_EMULATOR_HOST";

/// `endpoint` as configured, with `$PUBSUB_EMULATOR_HOST` taking the place of Google's default
/// endpoint when set (as in Google's other client libraries).
pub fn effective(endpoint: &Endpoint) -> Endpoint {
    match endpoint {
        Endpoint::Google { endpoint: None } => match std::env::var(EMULATOR_ENV) {
            Ok(h) if !h.trim().is_empty() => Endpoint::Emulator(h.trim().to_string()),
            _ => endpoint.clone(),
        },
        other => other.clone(),
    }
}

/// Where requests go, for messages (`the emulator at 127.0.0.1:8085`).
pub fn describe(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Emulator(h) => format!("the Pub/Sub emulator at {h}"),
        Endpoint::Google { endpoint: Some(e) } => e.clone(),
        Endpoint::Google { endpoint: None } => "pubsub.googleapis.com".into(),
    }
}

/// Applies the endpoint to any of the crate's client builders (they share no trait).
macro_rules! configure {
    ($builder:expr, $endpoint:expr) => {{
        // Service-account credentials sign their token requests with the process's default
        // rustls provider (google-cloud-auth is built without its own); custom binaries built
        // on the library may not have installed it.
        crate::tls::install_crypto_provider();
        match $endpoint {
            Endpoint::Emulator(h) => $builder
                .with_endpoint(format!("http://{h}"))
                .with_credentials(Anonymous::new().build()),
            Endpoint::Google { endpoint: Some(e) } => $builder.with_endpoint(e.clone()),
            Endpoint::Google { endpoint: None } => $builder,
        }
    }};
}

fn failed(node: &str, what: &str, endpoint: &Endpoint, e: impl std::fmt::Display) -> Error {
    Error::node(
        node,
        format!(
            "cannot create the Pub/Sub {what} for {}: {e}",
            describe(endpoint)
        ),
    )
}

pub async fn subscriber(node: &str, endpoint: &Endpoint) -> Result<Subscriber> {
    configure!(Subscriber::builder(), endpoint)
        .build()
        .await
        .map_err(|e| failed(node, "subscriber", endpoint, e))
}

pub async fn publisher(
    node: &str,
    endpoint: &Endpoint,
    topic: &str,
    configure_batching: impl FnOnce(
        google_cloud_pubsub::builder::publisher::PublisherBuilder,
    ) -> google_cloud_pubsub::builder::publisher::PublisherBuilder,
) -> Result<Publisher> {
    let b = configure!(Publisher::builder(topic), endpoint);
    configure_batching(b)
        .build()
        .await
        .map_err(|e| failed(node, "publisher", endpoint, e))
}

pub async fn topic_admin(node: &str, endpoint: &Endpoint) -> Result<TopicAdmin> {
    configure!(TopicAdmin::builder(), endpoint)
        .build()
        .await
        .map_err(|e| failed(node, "topic admin client", endpoint, e))
}

pub async fn subscription_admin(node: &str, endpoint: &Endpoint) -> Result<SubscriptionAdmin> {
    configure!(SubscriptionAdmin::builder(), endpoint)
        .build()
        .await
        .map_err(|e| failed(node, "subscription admin client", endpoint, e))
}

/// `weir validate --connect`: one GetTopic (`subscription: false`) or GetSubscription of `name`.
/// `Err((true, why))` when it does not exist (the setting is wrong), `Err((false, why))` when
/// the service did not answer.
pub async fn preflight(
    endpoint: &Endpoint,
    name: &str,
    subscription: bool,
) -> std::result::Result<String, (bool, String)> {
    use google_cloud_gax::error::rpc::Code;
    let endpoint = effective(endpoint);
    let at = describe(&endpoint);
    let answer = if subscription {
        subscription_admin("preflight", &endpoint)
            .await
            .map_err(|e| (false, e.to_string()))?
            .get_subscription()
            .set_subscription(name)
            .send()
            .await
            .map(|_| ())
    } else {
        topic_admin("preflight", &endpoint)
            .await
            .map_err(|e| (false, e.to_string()))?
            .get_topic()
            .set_topic(name)
            .send()
            .await
            .map(|_| ())
    };
    match answer {
        Ok(()) => Ok(format!("{name} exists ({at})")),
        Err(e) if e.status().is_some_and(|s| s.code == Code::NotFound) => {
            Err((true, format!("{name} does not exist ({at})")))
        }
        Err(e) => Err((false, format!("{name} ({at}): {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_server() {
        assert_eq!(
            describe(&Endpoint::Emulator("127.0.0.1:1".into())),
            "the Pub/Sub emulator at 127.0.0.1:1"
        );
        assert_eq!(
            describe(&Endpoint::Google { endpoint: None }),
            "pubsub.googleapis.com"
        );
        let set = Endpoint::Google {
            endpoint: Some("https://x".into()),
        };
        assert_eq!(
            effective(&set),
            set,
            "an explicit endpoint is never replaced"
        );
    }
}
