//! Azure Event Hubs as a profile of the `kafka` source and sink: the Kafka settings Event Hubs
//! requires, defined once here. The operator's `eventhubs` Connector fills the same `eventhubs`
//! block, so `weir run` and a StreamJob get the same settings.
//!
//! ```yaml
//!     type: kafka                       # source or sink
//!     eventhubs:
//!       namespace: mynamespace          # → mynamespace.servicebus.windows.net:9093
//!       connection_string: ${env:EVENTHUBS_CONNECTION_STRING}
//!       # transactions: true            # Premium/Dedicated only: allows delivery exactly-once
//!     topics: [orders]                  # an event hub is a topic (sink: topic: orders)
//! ```
//!
//! What it sets (Microsoft's recommendations for librdkafka): SASL_SSL with PLAIN, user
//! `$ConnectionString`, the connection string as password; `metadata.max.age.ms` and
//! `connections.max.idle.ms` 180000 (Event Hubs closes idle connections after 240 s);
//! `socket.keepalive.enable`; for the sink `request.timeout.ms` 60000 and `message.max.bytes`
//! (librdkafka's `max.request.size`) 1000000, the most Event Hubs accepts. weir never creates
//! topics. The tuning values may be overridden in `properties`; the login may not.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::api::NodeConfig;

/// The longest transaction Event Hubs allows (`transaction.max.timeout.ms`).
pub const MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The largest request Event Hubs accepts.
pub const MAX_REQUEST_BYTES: u64 = 1_000_000;
/// The user name Event Hubs expects with a connection string as password.
pub const USER: &str = "$ConnectionString";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventHubsConfig {
    /// The namespace: its name (`mynamespace`, in the public cloud) or its host name
    /// (`mynamespace.servicebus.chinacloudapi.cn`). Not needed when `bootstrap_servers` is set.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The namespace's or the event hub's connection string (`Endpoint=sb://…;
    /// SharedAccessKeyName=…;SharedAccessKey=…`). A secret: give it as `${env:NAME}`.
    pub connection_string: String,
    /// The namespace has Kafka transactions (Premium or Dedicated tier): lets a sink use
    /// `delivery: exactly-once`, with a transaction timeout of at most 15 minutes.
    #[serde(default)]
    pub transactions: bool,
}

/// Never shows the connection string.
impl std::fmt::Debug for EventHubsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubsConfig")
            .field("namespace", &self.namespace)
            .field("transactions", &self.transactions)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
}

/// A setting that cannot be used, and why; the caller prefixes the node's path. The message
/// never contains the connection string.
pub type ProfileError = (String, String);

const LOGIN: [&str; 5] = [
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
];

/// The connection string's shape, unless it is still an `${env:…}` reference (`weir validate`
/// sees the spec before expansion).
fn check_connection_string(cs: &str) -> Result<(), String> {
    if cs.contains("${env:") {
        return Ok(());
    }
    let has = |key: &str| {
        cs.split(';').any(|part| {
            part.trim()
                .to_ascii_lowercase()
                .starts_with(&key.to_ascii_lowercase())
        })
    };
    let endpoint = cs
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Endpoint="))
        .is_some_and(|e| e.starts_with("sb://"));
    let key =
        (has("SharedAccessKeyName=") && has("SharedAccessKey=")) || has("SharedAccessSignature=");
    if endpoint && key {
        Ok(())
    } else {
        Err("is not an Event Hubs connection string (Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…); the value is not shown".into())
    }
}

/// A Kafka node's `eventhubs:` (when set) expanded in place into its `bootstrap_servers` and
/// `properties`, as [`apply`] does; errors name the field of `cfg`. The source's and the sink's
/// `resolve` start with it.
pub fn expand(
    cfg: &NodeConfig,
    eventhubs: Option<&EventHubsConfig>,
    bootstrap: &mut String,
    properties: &mut BTreeMap<String, String>,
    role: Role,
) -> crate::error::Result<()> {
    if let Some(eh) = eventhubs {
        *bootstrap = apply(eh, bootstrap.as_str(), properties, role)
            .map_err(|(field, why)| cfg.error(&field, why))?;
    }
    Ok(())
}

/// The bootstrap servers and properties for Event Hubs: `bootstrap` (when set) wins over the
/// namespace; `properties` get the login and the tuning defaults.
pub fn apply(
    eh: &EventHubsConfig,
    bootstrap: &str,
    properties: &mut BTreeMap<String, String>,
    role: Role,
) -> Result<String, ProfileError> {
    check_connection_string(&eh.connection_string)
        .map_err(|m| ("eventhubs.connection_string".to_string(), m))?;
    let bootstrap = match (bootstrap.trim(), eh.namespace.as_deref().map(str::trim)) {
        (b, _) if !b.is_empty() => b.to_string(),
        (_, Some(ns)) if !ns.is_empty() => {
            if ns.contains(':') {
                return Err((
                    "eventhubs.namespace".into(),
                    format!("expected a namespace name or host name without a port, got {ns:?}"),
                ));
            }
            if ns.contains('.') {
                format!("{ns}:9093")
            } else {
                format!("{ns}.servicebus.windows.net:9093")
            }
        }
        _ => {
            return Err((
                "eventhubs.namespace".into(),
                "is required unless bootstrap_servers is set".into(),
            ))
        }
    };
    for k in LOGIN {
        if properties.contains_key(k) {
            return Err((
                format!("properties.{k}"),
                "is set by the eventhubs profile (SASL_SSL, PLAIN, $ConnectionString and the connection string)".into(),
            ));
        }
    }
    properties.insert("security.protocol".into(), "SASL_SSL".into());
    properties.insert("sasl.mechanism".into(), "PLAIN".into());
    properties.insert("sasl.username".into(), USER.into());
    properties.insert("sasl.password".into(), eh.connection_string.clone());
    let mut default = |k: &str, v: &str| {
        properties
            .entry(k.to_string())
            .or_insert_with(|| v.to_string());
    };
    default("metadata.max.age.ms", "180000");
    default("connections.max.idle.ms", "180000");
    default("socket.keepalive.enable", "true");
    if role == Role::Sink {
        default("request.timeout.ms", "60000");
        default("message.max.bytes", &MAX_REQUEST_BYTES.to_string());
        let size = &properties["message.max.bytes"];
        match size.trim().parse::<u64>() {
            Ok(n) if n <= MAX_REQUEST_BYTES => {}
            _ => {
                return Err((
                    "properties.message.max.bytes".into(),
                    format!("Event Hubs accepts requests of at most {MAX_REQUEST_BYTES} bytes, got {size:?}"),
                ))
            }
        }
    }
    Ok(bootstrap)
}

/// Exactly-once needs transactions, which only Premium and Dedicated namespaces have.
pub fn check_exactly_once(eh: &EventHubsConfig) -> Result<(), ProfileError> {
    if eh.transactions {
        Ok(())
    } else {
        Err((
            "delivery".into(),
            "exactly-once on Azure Event Hubs needs Kafka transactions, which only Premium and Dedicated namespaces have: set eventhubs.transactions: true if yours is one (transactions then last at most 15 minutes), or keep delivery: at-least-once (the default, with an idempotent producer)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str =
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s3cr3t=";

    fn eh(ns: Option<&str>, cs: &str) -> EventHubsConfig {
        EventHubsConfig {
            namespace: ns.map(str::to_string),
            connection_string: cs.into(),
            transactions: false,
        }
    }

    #[test]
    fn the_profile_sets_the_login_and_the_tuning() {
        let mut p = BTreeMap::new();
        p.insert("metadata.max.age.ms".to_string(), "60000".to_string());
        let b = apply(&eh(Some("ns"), CS), "", &mut p, Role::Sink).unwrap();
        assert_eq!(b, "ns.servicebus.windows.net:9093");
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "PLAIN");
        assert_eq!(p["sasl.username"], "$ConnectionString");
        assert_eq!(p["sasl.password"], CS);
        assert_eq!(
            p["metadata.max.age.ms"], "60000",
            "tuning may be overridden"
        );
        assert_eq!(p["connections.max.idle.ms"], "180000");
        assert_eq!(p["request.timeout.ms"], "60000");
        assert_eq!(p["message.max.bytes"], "1000000");
        let mut src = BTreeMap::new();
        let b = apply(
            &eh(Some("ns.servicebus.chinacloudapi.cn"), CS),
            "",
            &mut src,
            Role::Source,
        )
        .unwrap();
        assert_eq!(b, "ns.servicebus.chinacloudapi.cn:9093");
        assert!(
            !src.contains_key("request.timeout.ms"),
            "a producer property"
        );
        let b = apply(
            &eh(None, CS),
            "127.0.0.1:9093",
            &mut BTreeMap::new(),
            Role::Source,
        )
        .unwrap();
        assert_eq!(b, "127.0.0.1:9093", "bootstrap_servers wins");
    }

    #[test]
    fn mistakes_name_the_setting_and_never_show_the_secret() {
        let e = |ns: Option<&str>, cs: &str, props: &[(&str, &str)]| {
            let mut p: BTreeMap<String, String> = props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            apply(&eh(ns, cs), "", &mut p, Role::Sink).unwrap_err()
        };
        let (field, msg) = e(Some("ns"), "hunter2", &[]);
        assert_eq!(field, "eventhubs.connection_string");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_eq!(e(None, CS, &[]).0, "eventhubs.namespace");
        assert_eq!(e(Some("ns:9093"), CS, &[]).0, "eventhubs.namespace");
        assert_eq!(
            e(Some("ns"), CS, &[("sasl.username", "me")]).0,
            "properties.sasl.username"
        );
        assert_eq!(
            e(Some("ns"), CS, &[("message.max.bytes", "2000000")]).0,
            "properties.message.max.bytes"
        );
        // Not expanded yet at `weir validate`: accepted.
        assert!(apply(
            &eh(Some("ns"), "${env:EH}"),
            "",
            &mut BTreeMap::new(),
            Role::Source
        )
        .is_ok());
        assert!(!format!("{:?}", eh(Some("ns"), CS)).contains("s3cr3t"));
        assert!(check_exactly_once(&eh(Some("ns"), CS))
            .unwrap_err()
            .1
            .contains("Premium and Dedicated"));
    }
}
