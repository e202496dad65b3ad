//! HTTP lookups: GET with the key in the URL, or POST with the key fields as a JSON object;
//! a JSON answer, 404 as not found.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use serde_json::{Map, Value};

use super::{LookupClient, LookupError};
use crate::transforms::async_io::config::HttpMethod;
use crate::transforms::async_io::template::Template;

/// RFC 3986 unreserved characters stay as they are; everything else in a key is escaped, so a
/// key cannot change the URL's structure.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub struct HttpLookup {
    client: reqwest::Client,
    url: Template,
    method: HttpMethod,
    key_names: Vec<String>,
}

impl HttpLookup {
    pub fn new(
        url: Template,
        method: HttpMethod,
        headers: &[(String, String)],
        key_names: Vec<String>,
        capacity: usize,
    ) -> Result<Self, String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|e| format!("client.headers: {k:?} is not a header name: {e}"))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|e| format!("client.headers.{k}: not a header value: {e}"))?;
            map.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(map)
            // Keep a connection per request in flight instead of reconnecting.
            .pool_max_idle_per_host(capacity)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(HttpLookup {
            client,
            url,
            method,
            key_names,
        })
    }

    pub fn url_for(&self, key: &[Value]) -> String {
        self.url
            .render(key, |s| utf8_percent_encode(s, COMPONENT).to_string())
    }
}

/// How an HTTP status is treated.
pub fn classify(status: StatusCode) -> Result<bool, LookupError> {
    if status.is_success() {
        Ok(true)
    } else if status == StatusCode::NOT_FOUND {
        Ok(false)
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(LookupError::retryable(format!("HTTP {status}")))
    } else {
        Err(LookupError::permanent(format!("HTTP {status}")))
    }
}

#[async_trait::async_trait]
impl LookupClient for HttpLookup {
    async fn lookup(&self, key: &[Value]) -> Result<Option<Value>, LookupError> {
        let url = self.url_for(key);
        let request = match self.method {
            HttpMethod::Get => self.client.get(&url),
            HttpMethod::Post => {
                let body: Map<String, Value> = self
                    .key_names
                    .iter()
                    .cloned()
                    .zip(key.iter().cloned())
                    .collect();
                self.client.post(&url).json(&body)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| LookupError::retryable(format!("{url}: {e}")))?;
        let found = classify(response.status()).map_err(|mut e| {
            e.message = format!("{url}: {}", e.message);
            e
        })?;
        if !found {
            return Ok(None);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| LookupError::retryable(format!("{url}: reading the answer: {e}")))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| LookupError::permanent(format!("{url}: the answer is not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_escaped_in_the_url() {
        let t = Template::parse("http://h/u/{id}?q={id}", &["id".into()]).unwrap();
        let h = HttpLookup::new(t, HttpMethod::Get, &[], vec!["id".into()], 4).unwrap();
        assert_eq!(
            h.url_for(&[Value::from("a/b c?&")]),
            "http://h/u/a%2Fb%20c%3F%26?q=a%2Fb%20c%3F%26"
        );
        assert_eq!(h.url_for(&[Value::from(42)]), "http://h/u/42?q=42");
    }

    #[test]
    fn statuses_are_found_missing_retryable_or_permanent() {
        assert_eq!(classify(StatusCode::OK), Ok(true));
        assert_eq!(classify(StatusCode::NOT_FOUND), Ok(false));
        assert!(
            classify(StatusCode::INTERNAL_SERVER_ERROR)
                .unwrap_err()
                .retryable
        );
        assert!(
            classify(StatusCode::TOO_MANY_REQUESTS)
                .unwrap_err()
                .retryable
        );
        assert!(!classify(StatusCode::BAD_REQUEST).unwrap_err().retryable);
    }

    #[test]
    fn a_bad_header_is_named() {
        let t = Template::parse("http://h/", &[]).unwrap();
        let e = HttpLookup::new(
            t,
            HttpMethod::Get,
            &[("bad header".into(), "x".into())],
            vec![],
            1,
        )
        .err()
        .unwrap();
        assert!(e.contains("\"bad header\""), "{e}");
    }
}
