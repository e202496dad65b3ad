//! Client of the worker admin API (`GET /v1/status`, `POST /v1/savepoints`,
//! `GET /v1/savepoints/{id}`): the only way the operator talks to workers.

use std::time::Duration;

pub use weir_crds::contract::{JobStatus, SavepointStatus};
use weir_crds::contract::{SavepointAccepted, SavepointRequest, SAVEPOINTS_PATH, STATUS_PATH};

use crate::admin_secret::AdminTokens;
use crate::error::{Error, Result};

/// One worker's answer about a savepoint.
#[derive(Clone, Debug, PartialEq)]
pub enum SavepointAnswer {
    State(SavepointStatus),
    /// 404: the worker does not know the id (it restarted since the trigger).
    Unknown,
    /// No answer (connection refused, timeout): the pod may be restarting or already gone.
    Unreachable(String),
}

#[derive(Clone, Debug)]
pub struct AdminClient {
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Error::Other(format!("building the admin HTTP client: {e}")))?;
        Ok(AdminClient { http })
    }

    fn err(url: &str, e: impl std::fmt::Display) -> Error {
        Error::Admin {
            url: url.to_string(),
            message: e.to_string(),
        }
    }

    /// A transport error with its cause chain (refused, DNS, timeout).
    fn transport(url: &str, e: reqwest::Error) -> Error {
        Self::err(url, crate::error::chain(&e))
    }

    pub async fn status(&self, base: &str) -> Result<JobStatus> {
        let url = format!("{}{STATUS_PATH}", base.trim_end_matches('/'));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Self::transport(&url, e))?;
        if !resp.status().is_success() {
            return Err(Self::err(&url, format!("HTTP {}", resp.status())));
        }
        resp.json().await.map_err(|e| Self::transport(&url, e))
    }

    /// Triggers savepoint `id` on one worker; returns the id the worker accepted. Tries the
    /// job's tokens newest first: a worker started before a rotation holds the previous one.
    pub async fn trigger(
        &self,
        base: &str,
        id: &str,
        stop: bool,
        tokens: &AdminTokens,
    ) -> Result<String> {
        let url = format!("{}{SAVEPOINTS_PATH}", base.trim_end_matches('/'));
        let mut refused = 0;
        for token in tokens.all() {
            let resp = self
                .http
                .post(&url)
                .bearer_auth(token.expose())
                .json(&SavepointRequest {
                    stop,
                    id: Some(id.to_string()),
                })
                .send()
                .await
                .map_err(|e| Self::transport(&url, e))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                refused += 1;
                continue;
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(Self::err(&url, format!("HTTP {status}: {body}")));
            }
            let accepted: SavepointAccepted = resp
                .json()
                .await
                .map_err(|e| Self::err(&url, format!("no savepoint id in the answer: {e}")))?;
            return Ok(accepted.id);
        }
        // The tokens themselves never go into the error.
        Err(Self::err(
            &url,
            format!(
                "HTTP 401: the worker refused the {refused} admin token(s) of the job's Secret <job>-admin-token (was it replaced outside the operator?)"
            ),
        ))
    }

    pub async fn savepoint(&self, base: &str, id: &str) -> SavepointAnswer {
        let url = format!("{}{SAVEPOINTS_PATH}/{id}", base.trim_end_matches('/'));
        let resp = match self.http.get(&url).send().await {
            Ok(r) => r,
            Err(e) => return SavepointAnswer::Unreachable(crate::error::chain(&e)),
        };
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return SavepointAnswer::Unknown;
        }
        if !resp.status().is_success() {
            return SavepointAnswer::Unreachable(format!("HTTP {}", resp.status()));
        }
        match resp.json().await {
            Ok(s) => SavepointAnswer::State(s),
            Err(e) => SavepointAnswer::Unreachable(format!("bad answer: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_worker_says_why() {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = AdminClient::new(Duration::from_secs(2)).unwrap();
        let e = client
            .status(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("Connection refused"), "{e}");
        let e = client
            .status("http://no-such-host.invalid:8081")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dns error") || e.contains("failed to lookup"),
            "{e}"
        );
    }
}
