//! Apache Kafka source and sink (exactly-once through transactions), on rdkafka.

pub mod client;
pub mod eventhubs;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::Registry;
use crate::error::Result;

pub fn register(r: &mut Registry) {
    source::register(r);
    sink::register(r);
}

/// Asks a Kafka cluster what an exactly-once sink must respect: it answers (an error names the
/// bootstrap servers and the client's last error, e.g. a refused login), and its brokers'
/// `transaction.max.timeout.ms` (`None` when DescribeConfigs is not allowed). The operator's
/// Connector probe uses it, so transaction timeouts are tuned against the broker's real maximum.
pub async fn transaction_max_timeout(
    bootstrap_servers: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Option<Duration>> {
    let config = client::client_config(bootstrap_servers, properties);
    let cluster = sink::broker::Cluster::connect(&config, "probe", bootstrap_servers)?;
    cluster.max_transaction_timeout().await
}
