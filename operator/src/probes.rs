//! Connector validation (pure) and reachability probes (I/O):
//! - Kafka: the runtime's own Kafka client connects (with the Connector's security settings and
//!   Secrets) and reads the brokers' `transaction.max.timeout.ms` with DescribeConfigs, which
//!   the transaction-timeout tuning of exactly-once sinks checks against;
//! - Postgres/JDBC: connect and `SELECT 1` (tokio-postgres, without TLS);
//! - HTTP: `GET` the URL over plain HTTP (any answer below 500 counts as reachable); an
//!   `https://` URL is checked by TCP connection only;
//! - Elasticsearch/OpenSearch: `GET /` on each node URL (HTTP or HTTPS, with the Connector's CA
//!   and credentials) until one answers 2xx; refused credentials fail the probe;
//! - Redis: a TCP connection;
//! - S3/Kinesis/Firehose with an `endpoint`: a TCP connection to it; cloud endpoints and
//!   Pub/Sub are not probed (reported as such).

use std::collections::BTreeMap;
use std::time::Duration;

use weir_crds::connector::{ConnectorSpec, ConnectorType, SecretKeyRef};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A Kafka cluster: metadata, then the brokers' transaction maximum. `properties` are the
    /// librdkafka settings besides credentials (added from the Secrets when run).
    Kafka {
        bootstrap: String,
        properties: BTreeMap<String, String>,
    },
    Tcp(Vec<String>),
    Postgres {
        url: String,
    },
    Http {
        url: String,
    },
    /// Elasticsearch/OpenSearch nodes. Secret values (password, key, token, CA) are added from
    /// the Secrets when run, under the names of [`secret_refs`].
    Elasticsearch {
        urls: Vec<String>,
        auth: EsAuth,
        /// Whether `spec.elasticsearch.tls.ca` names a CA Secret.
        ca: bool,
        insecure: bool,
    },
    None(String),
}

/// How an Elasticsearch probe logs in (the secret parts come from the Secrets when run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EsAuth {
    None,
    /// Basic auth; `username` is `None` when it comes from a Secret.
    Basic {
        username: Option<String>,
    },
    ApiKey,
    Bearer,
}

/// Keys of the Secret values an Elasticsearch probe reads (the values map of [`run`]).
pub const ES_USERNAME: &str = "elasticsearch.auth.basic.username";
pub const ES_PASSWORD: &str = "elasticsearch.auth.basic.password";
pub const ES_API_KEY: &str = "elasticsearch.auth.apiKey";
pub const ES_BEARER: &str = "elasticsearch.auth.bearer";
pub const ES_CA: &str = "elasticsearch.tls.ca";

/// The Secrets an Elasticsearch probe reads, keyed as [`run`] looks them up.
pub fn secret_refs(spec: &ConnectorSpec) -> Vec<(String, SecretKeyRef)> {
    let mut refs = Vec::new();
    let Some(es) = spec.elasticsearch.as_ref() else {
        return refs;
    };
    if let Some(auth) = &es.auth {
        if let Some(b) = &auth.basic {
            if let Some(r) = &b.username.secret_key_ref {
                refs.push((ES_USERNAME.into(), r.clone()));
            }
            refs.push((ES_PASSWORD.into(), b.password.secret_key_ref.clone()));
        }
        if let Some(k) = &auth.api_key {
            refs.push((ES_API_KEY.into(), k.secret_key_ref.clone()));
        }
        if let Some(t) = &auth.bearer {
            refs.push((ES_BEARER.into(), t.secret_key_ref.clone()));
        }
    }
    if let Some(ca) = es.tls.as_ref().and_then(|t| t.ca.as_ref()) {
        refs.push((ES_CA.into(), ca.secret_key_ref.clone()));
    }
    refs
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
    if let Some(es) = &spec.elasticsearch {
        if spec.type_ != ConnectorType::Elasticsearch {
            errors.push("spec.elasticsearch is only allowed for type elasticsearch".into());
        }
        for (i, h) in es.hosts.iter().enumerate() {
            match url::Url::parse(h) {
                Ok(u) if u.password().is_some() => errors.push(format!(
                    "spec.elasticsearch.hosts[{i}] contains a password; use spec.elasticsearch.auth"
                )),
                Ok(u) if !matches!(u.scheme(), "http" | "https") => errors.push(format!(
                    "spec.elasticsearch.hosts[{i}] {h:?}: use http:// or https://"
                )),
                Ok(_) => {}
                Err(e) => errors.push(format!(
                    "spec.elasticsearch.hosts[{i}] {h:?} is not a URL: {e}"
                )),
            }
        }
        let all_http = spec
            .url
            .iter()
            .chain(&es.hosts)
            .all(|u| u.starts_with("http://"));
        if es.tls.is_some() && all_http {
            errors.push(
                "spec.elasticsearch.tls: the URLs are http://; TLS settings need https://".into(),
            );
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

/// What to probe for a Connector, without Secret values. Pure.
pub fn target(spec: &ConnectorSpec) -> Probe {
    let url = spec.url.clone().unwrap_or_default();
    if spec.type_ == ConnectorType::Elasticsearch {
        let es = spec.elasticsearch.clone().unwrap_or_default();
        let auth = match es.auth.as_ref() {
            Some(a) if a.basic.is_some() => EsAuth::Basic {
                username: a.basic.as_ref().and_then(|b| b.username.value.clone()),
            },
            Some(a) if a.api_key.is_some() => EsAuth::ApiKey,
            Some(a) if a.bearer.is_some() => EsAuth::Bearer,
            _ => EsAuth::None,
        };
        let tls = es.tls.unwrap_or_default();
        return Probe::Elasticsearch {
            urls: spec
                .url
                .iter()
                .flat_map(|u| u.split(','))
                .chain(es.hosts.iter().map(String::as_str))
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            auth,
            ca: tls.ca.is_some(),
            insecure: tls.insecure_skip_verify,
        };
    }
    match spec.type_ {
        ConnectorType::Kafka => {
            let k = spec.kafka.as_ref();
            let mut properties: BTreeMap<String, String> = spec
                .properties
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| match v {
                            serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                            serde_json::Value::Number(n) => Some((k.clone(), n.to_string())),
                            serde_json::Value::Bool(b) => Some((k.clone(), b.to_string())),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(p) = k.and_then(|k| k.security_protocol) {
                properties.insert("security.protocol".into(), p.as_str().into());
            }
            if let Some(s) = k.and_then(|k| k.sasl.as_ref()) {
                properties.insert("sasl.mechanism".into(), s.mechanism.as_str().into());
                if let Some(u) = &s.username.value {
                    properties.insert("sasl.username".into(), u.clone());
                }
            }
            Probe::Kafka {
                bootstrap: k.map(|k| k.bootstrap_servers.clone()).unwrap_or_default(),
                properties,
            }
        }
        // A SQLite file lives in the worker's pod: nothing the operator could reach.
        ConnectorType::Jdbc if url.starts_with("sqlite:") => {
            Probe::None("a SQLite file in the workers' pods; not probed".into())
        }
        ConnectorType::Postgres | ConnectorType::Jdbc => Probe::Postgres { url },
        ConnectorType::Http if url.starts_with("http://") => Probe::Http { url },
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
        ConnectorType::Eventhubs => Probe::Tcp(
            spec.eventhubs
                .iter()
                .map(|e| {
                    let ns = e.namespace.trim();
                    if ns.contains('.') {
                        format!("{ns}:9093")
                    } else {
                        format!("{ns}.servicebus.windows.net:9093")
                    }
                })
                .collect(),
        ),
    }
}

/// What a successful probe learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probed {
    /// A short description for the Ready condition.
    pub message: String,
    /// A Kafka cluster's `transaction.max.timeout.ms`, when it could be read.
    pub transaction_max_timeout_ms: Option<u64>,
}

impl From<String> for Probed {
    fn from(message: String) -> Self {
        Probed {
            message,
            transaction_max_timeout_ms: None,
        }
    }
}

/// Runs a probe with the Connector's secret values by setting (`password`, `sasl.password`, …);
/// `Err` is the reason it failed.
pub async fn run(
    probe: &Probe,
    secrets: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Probed, String> {
    let password = secrets.get("password").map(String::as_str);
    let outcome = match probe {
        Probe::Kafka {
            bootstrap,
            properties,
        } => {
            let mut props = properties.clone();
            for key in ["sasl.username", "sasl.password"] {
                if let Some(v) = secrets.get(key) {
                    props.insert(key.into(), v.clone());
                }
            }
            let asked = weir_runtime::connectors::kafka::transaction_max_timeout(bootstrap, &props);
            return match tokio::time::timeout(timeout, asked).await {
                Err(_) => Err(format!(
                    "Kafka at {bootstrap} did not answer within {}",
                    humantime::format_duration(timeout)
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(max)) => {
                    let ms = max.map(|d| d.as_millis() as u64);
                    Ok(Probed {
                        message: match ms {
                            Some(ms) => format!(
                                "Kafka at {bootstrap} answered; transaction.max.timeout.ms is {ms}"
                            ),
                            None => format!(
                                "Kafka at {bootstrap} answered; its transaction.max.timeout.ms could not be read (DescribeConfigs refused)"
                            ),
                        },
                        transaction_max_timeout_ms: ms,
                    })
                }
            };
        }
        Probe::None(why) => Ok(why.clone()),
        Probe::Tcp(addrs) => {
            let mut last = "no address to probe".to_string();
            for a in addrs {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a)).await {
                    Ok(Ok(_)) => return Ok(format!("TCP connection to {a} succeeded").into()),
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
        Probe::Elasticsearch {
            urls,
            auth,
            ca,
            insecure,
        } => probe_elasticsearch(urls, auth, *ca, *insecure, secrets, timeout).await,
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
    };
    outcome.map(Probed::from)
}

/// `GET /` on each node until one answers 2xx with its version; refused credentials fail at
/// once (every node would refuse them).
async fn probe_elasticsearch(
    urls: &[String],
    auth: &EsAuth,
    ca: bool,
    insecure: bool,
    secrets: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<String, String> {
    let secret = |k: &str| secrets.get(k).map(String::as_str).unwrap_or_default();
    let mut b = reqwest::Client::builder().timeout(timeout);
    if ca {
        let certs = reqwest::Certificate::from_pem_bundle(secret(ES_CA).as_bytes())
            .map_err(|e| format!("spec.elasticsearch.tls.ca is not PEM certificates: {e}"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    let client = b.build().map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for url in urls {
        let req = client.get(url);
        let req = match auth {
            EsAuth::None => req,
            EsAuth::Basic { username } => req.basic_auth(
                username.as_deref().unwrap_or(secret(ES_USERNAME)),
                Some(secret(ES_PASSWORD)),
            ),
            EsAuth::ApiKey => req.header(
                reqwest::header::AUTHORIZATION,
                format!("ApiKey {}", secret(ES_API_KEY)),
            ),
            EsAuth::Bearer => req.header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", secret(ES_BEARER)),
            ),
        };
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let dist = v["version"]["distribution"]
                    .as_str()
                    .unwrap_or("elasticsearch");
                let number = v["version"]["number"].as_str().unwrap_or("?");
                let cluster = v["cluster_name"].as_str().unwrap_or("?");
                return Ok(format!("GET {url}: {dist} {number}, cluster {cluster}"));
            }
            Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                return Err(format!(
                    "GET {url}: HTTP {}: the credentials were refused",
                    r.status()
                ))
            }
            Ok(r) => failures.push(format!("GET {url}: HTTP {}", r.status())),
            Err(e) => failures.push(format!("GET {url}: {e}")),
        }
    }
    if failures.is_empty() {
        failures.push("no node URL to probe".into());
    }
    Err(failures.join("; "))
}
