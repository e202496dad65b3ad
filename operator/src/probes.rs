//! Connector validation (pure) and reachability probes (I/O):
//! - Kafka: a TCP connection to a bootstrap server (reachability only; no Kafka protocol, so the
//!   brokers' `transaction.max.timeout.ms` comes from the Connector's `kafka.transactionMaxTimeout`);
//! - Postgres/JDBC: connect and `SELECT 1` (tokio-postgres, without TLS);
//! - HTTP: `GET` the URL over plain HTTP (any answer below 500 counts as reachable); an
//!   `https://` URL is checked by TCP connection only;
//! - Elasticsearch/OpenSearch: `GET /` on each node URL (HTTP or HTTPS, with the Connector's CA
//!   and credentials) until one answers 2xx; refused credentials fail the probe;
//! - Redis: a TCP connection;
//! - S3/Kinesis with an `endpoint`: a TCP connection to it; cloud endpoints and Pub/Sub are not
//!   probed (reported as such).

use std::collections::BTreeMap;
use std::time::Duration;

use weir_crds::connector::{ConnectorSpec, ConnectorType, SecretKeyRef};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Tcp(Vec<String>),
    Postgres {
        url: String,
    },
    Http {
        url: String,
    },
    Elasticsearch {
        urls: Vec<String>,
        auth: EsAuth,
        ca_pem: Option<Redacted>,
        insecure: bool,
    },
    None(String),
}

/// A secret value; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EsAuth {
    None,
    Basic {
        username: String,
        password: Redacted,
    },
    ApiKey(Redacted),
    Bearer(Redacted),
}

/// The Secrets an Elasticsearch probe reads, keyed as [`target_with_secrets`] looks them up.
pub fn secret_refs(spec: &ConnectorSpec) -> Vec<(String, SecretKeyRef)> {
    let mut refs = Vec::new();
    let Some(es) = spec.elasticsearch.as_ref() else {
        return refs;
    };
    if let Some(auth) = &es.auth {
        if let Some(b) = &auth.basic {
            if let Some(r) = &b.username.secret_key_ref {
                refs.push(("elasticsearch.auth.basic.username".into(), r.clone()));
            }
            refs.push((
                "elasticsearch.auth.basic.password".into(),
                b.password.secret_key_ref.clone(),
            ));
        }
        if let Some(k) = &auth.api_key {
            refs.push(("elasticsearch.auth.apiKey".into(), k.secret_key_ref.clone()));
        }
        if let Some(t) = &auth.bearer {
            refs.push(("elasticsearch.auth.bearer".into(), t.secret_key_ref.clone()));
        }
    }
    if let Some(ca) = es.tls.as_ref().and_then(|t| t.ca.as_ref()) {
        refs.push(("elasticsearch.tls.ca".into(), ca.secret_key_ref.clone()));
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
    target_with_secrets(spec, &BTreeMap::new())
}

/// What to probe for a Connector; `secrets` holds the values of [`secret_refs`]. Pure.
pub fn target_with_secrets(spec: &ConnectorSpec, secrets: &BTreeMap<String, String>) -> Probe {
    let url = spec.url.clone().unwrap_or_default();
    if spec.type_ == ConnectorType::Elasticsearch {
        let es = spec.elasticsearch.clone().unwrap_or_default();
        let secret = |k: &str| Redacted(secrets.get(k).cloned().unwrap_or_default());
        let auth = match es.auth.as_ref() {
            Some(a) if a.basic.is_some() => {
                let b = a.basic.as_ref().expect("checked just above");
                EsAuth::Basic {
                    username: b
                        .username
                        .value
                        .clone()
                        .unwrap_or_else(|| secret("elasticsearch.auth.basic.username").0),
                    password: secret("elasticsearch.auth.basic.password"),
                }
            }
            Some(a) if a.api_key.is_some() => EsAuth::ApiKey(secret("elasticsearch.auth.apiKey")),
            Some(a) if a.bearer.is_some() => EsAuth::Bearer(secret("elasticsearch.auth.bearer")),
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
            ca_pem: tls.ca.map(|_| secret("elasticsearch.tls.ca")),
            insecure: tls.insecure_skip_verify,
        };
    }
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
        ConnectorType::Http if url.starts_with("http://") => Probe::Http { url },
        ConnectorType::Http | ConnectorType::Elasticsearch => {
            Probe::Tcp(url_host_port(&url, 443).into_iter().collect())
        }
        ConnectorType::Redis => Probe::Tcp(url_host_port(&url, 6379).into_iter().collect()),
        ConnectorType::S3 | ConnectorType::Kinesis => match &spec.endpoint {
            Some(e) => Probe::Tcp(url_host_port(e, 443).into_iter().collect()),
            None => Probe::None("cloud endpoint; not probed".into()),
        },
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
        Probe::Elasticsearch {
            urls,
            auth,
            ca_pem,
            insecure,
        } => probe_elasticsearch(urls, auth, ca_pem.as_ref(), *insecure, timeout).await,
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

/// `GET /` on each node until one answers 2xx with its version; refused credentials fail at
/// once (every node would refuse them).
async fn probe_elasticsearch(
    urls: &[String],
    auth: &EsAuth,
    ca_pem: Option<&Redacted>,
    insecure: bool,
    timeout: Duration,
) -> Result<String, String> {
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.0.as_bytes())
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
            EsAuth::Basic { username, password } => req.basic_auth(username, Some(&password.0)),
            EsAuth::ApiKey(k) => {
                req.header(reqwest::header::AUTHORIZATION, format!("ApiKey {}", k.0))
            }
            EsAuth::Bearer(t) => {
                req.header(reqwest::header::AUTHORIZATION, format!("Bearer {}", t.0))
            }
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
