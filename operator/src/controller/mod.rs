//! The controllers: StreamJob and Connector reconcilers and the loop that runs them.

pub mod connector;
pub mod run;
pub mod stream_job;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use weir_crds::connector::SecretKeyRef;

use crate::error::{KubeContext, Result};

/// One key of a Secret, as a reconcile finds it.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretKey {
    NoSecret,
    NoKey,
    Value(Vec<u8>),
}

/// Reads the key `r` names from the Secrets of `api` (namespace `ns`, for the error).
pub async fn read_secret_key(api: &Api<Secret>, ns: &str, r: &SecretKeyRef) -> Result<SecretKey> {
    let secret = api
        .get_opt(&r.name)
        .await
        .kube_ctx(|| format!("reading Secret {ns}/{}", r.name))?;
    let Some(secret) = secret else {
        return Ok(SecretKey::NoSecret);
    };
    Ok(match secret.data.and_then(|mut d| d.remove(&r.key)) {
        Some(v) => SecretKey::Value(v.0),
        None => SecretKey::NoKey,
    })
}
