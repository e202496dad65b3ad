//! Connector validation (pure) and reachability probes (I/O):
//! - Kafka: a TCP connection to a bootstrap server (reachability only; no Kafka protocol, so the
//!   brokers' `transaction.max.timeout.ms` comes from the Connector's `kafka.transactionMaxTimeout`);
//! - Postgres/JDBC: connect and `SELECT 1` (tokio-postgres, without TLS);
//! - HTTP/Elasticsearch: `GET` the URL over plain HTTP (any answer below 500 counts as reachable);
//!   an `https://` URL is checked by TCP connection only (the operator carries no TLS stack here);
//! - Redis: a TCP connection;
//! - S3/Kinesis/Firehose with an `endpoint`: a TCP connection to it; cloud endpoints and
//!   Pub/Sub are not probed (reported as such).

use std::time::Duration;

use weir_crds::connector::{ConnectorSpec, ConnectorType};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Tcp(Vec<String>),
    Postgres { url: String },
    Http { url: String },
    None(String),
}

/// Problems a user must fix, each naming the field.
pub fn validate(spec: &ConnectorSpec) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(url) = &spec.url {
        match url::Url::parse(url) {
            Ok(u) if u.password().is_some() => errors.push(
                "spec.url contains a password; put it in a Secret and reference it from spec.credentials".into(),
            ),
            Ok(_) => {}
            Err(e) => errors.push(format!("spec.url {url:?} is not a URL: {e}")),
        }
    }
    if let Some(k) = &spec.kafka {
        for server in k.bootstrap_servers.split(',') {
            if host_port(server.trim()).is_none() {
                errors.push(format!(
                    "spec.kafka.bootstrapServers: {server:?} is not host:port"
                ));
            }
        }
    }
    for (i, c) in spec.credentials.iter().enumerate() {
        if c.setting.trim().is_empty() {
            errors.push(format!("spec.credentials[{i}].setting must not be empty"));
        }
    }
    errors
}

fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn url_host_port(url: &str, default_port: u16) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?;
    Some(format!(
        "{host}:{}",
        u.port_or_known_default().unwrap_or(default_port)
    ))
}

/// What to probe for a Connector. Pure.
pub fn target(spec: &ConnectorSpec) -> Probe {
    let url = spec.url.clone().unwrap_or_default();
    match spec.type_ {
        ConnectorType::Kafka => Probe::Tcp(
            spec.kafka
                .as_ref()
                .map(|k| {
                    k.bootstrap_servers
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        ),
        ConnectorType::Postgres | ConnectorType::Jdbc => Probe::Postgres { url },
        ConnectorType::Http | ConnectorType::Elasticsearch if url.starts_with("http://") => {
            Probe::Http { url }
        }
        ConnectorType::Http | ConnectorType::Elasticsearch => {
            Probe::Tcp(url_host_port(&url, 443).into_iter().collect())
        }
        ConnectorType::Redis => Probe::Tcp(url_host_port(&url, 6379).into_iter().collect()),
        ConnectorType::S3 | ConnectorType::Kinesis | ConnectorType::Firehose => {
            match &spec.endpoint {
                Some(e) => Probe::Tcp(url_host_port(e, 443).into_iter().collect()),
                None => Probe::None("cloud endpoint; not probed".into()),
            }
        }
        ConnectorType::Pubsub => Probe::None("Pub/Sub is not probed".into()),
    }
}

/// Runs a probe; `Ok` carries a short description, `Err` the reason it failed.
pub async fn run(
    probe: &Probe,
    password: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    match probe {
        Probe::None(why) => Ok(why.clone()),
        Probe::Tcp(addrs) => {
            let mut last = "no address to probe".to_string();
            for a in addrs {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a)).await {
                    Ok(Ok(_)) => return Ok(format!("TCP connection to {a} succeeded")),
                    Ok(Err(e)) => last = format!("TCP connection to {a} failed: {e}"),
                    Err(_) => last = format!("TCP connection to {a} timed out"),
                }
            }
            Err(last)
        }
        Probe::Http { url } => {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| e.to_string())?;
            match client.get(url).send().await {
                Ok(r) if r.status().as_u16() < 500 => Ok(format!("GET {url}: HTTP {}", r.status())),
                Ok(r) => Err(format!("GET {url}: HTTP {}", r.status())),
                Err(e) => Err(format!("GET {url}: {e}")),
            }
        }
        Probe::Postgres { url } => {
            let mut config: tokio_postgres::Config =
                url.parse().map_err(|e| format!("spec.url: {e}"))?;
            if let Some(p) = password {
                config.password(p);
            }
            config.connect_timeout(timeout);
            let fut = async {
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connecting: {e}"))?;
                let task = tokio::spawn(conn);
                let row = client
                    .query_one("SELECT 1", &[])
                    .await
                    .map_err(|e| format!("SELECT 1: {e}"))?;
                let one: i32 = row.get(0);
                drop(client);
                task.abort();
                Ok::<_, String>(format!("SELECT 1 returned {one}"))
            };
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| "SELECT 1 timed out".to_string())?
        }
    }
}
