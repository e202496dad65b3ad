//! Settings shared by the Kafka source and sink: the bootstrap servers plus any librdkafka
//! property, passed through as given (security, SASL, TLS, tuning).

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// An rdkafka client configuration from `bootstrap_servers` and pass-through `properties`.
/// Properties win over the defaults set here; the caller's own required settings (for example
/// `transactional.id`) are set afterwards.
pub fn client_config(
    bootstrap_servers: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}
