//! Leader election with a coordination.k8s.io Lease: one operator replica reconciles, the others
//! wait. The decision is a pure function of the Lease as read; the write uses the Lease's
//! resourceVersion, so two candidates cannot both win the same round.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::error::{Error, KubeContext, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds it (or the holder let it expire): take it.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds it until it expires.
    Wait { holder: String },
}

fn micro_to_chrono(t: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.0.as_millisecond())
}

fn chrono_to_micro(t: DateTime<Utc>) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_millisecond(t.timestamp_millis())
        .ok()
        .map(MicroTime)
}

/// An identity no other operator process has: the host name plus a random suffix (two
/// out-of-cluster operators on one host must not both believe they hold the Lease).
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir-operator".into());
    format!("{host}-{:08x}", fastrand::u32(..))
}

/// Pure: what to do with the Lease as read.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: DateTime<Utc>) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    if holder == me {
        return LeaseDecision::Renew;
    }
    let duration = chrono::Duration::seconds(spec.lease_duration_seconds.unwrap_or(15).into());
    let renewed = spec.renew_time.as_ref().and_then(micro_to_chrono);
    match renewed {
        Some(t) if t + duration > now => LeaseDecision::Wait { holder },
        _ => LeaseDecision::Acquire,
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// One round: returns whether we lead afterwards.
    pub async fn try_lead(&self) -> Result<bool> {
        let now = Utc::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .kube_ctx(|| format!("reading Lease {}", self.name))?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        if let LeaseDecision::Wait { holder } = &decision {
            tracing::debug!(%holder, "another operator leads");
            return Ok(false);
        }
        let previous = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let transitions = previous.lease_transitions.unwrap_or(0)
            + i32::from(decision == LeaseDecision::Acquire && current.is_some());
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if decision == LeaseDecision::Acquire {
                chrono_to_micro(now)
            } else {
                previous.acquire_time.clone()
            },
            renew_time: chrono_to_micro(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Some(mut lease) => {
                // replace carries the resourceVersion read above: a concurrent writer makes it fail.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::Kube {
                context: format!("writing Lease {}", self.name),
                source: e,
            }),
        }
    }

    /// Gives the Lease up if we hold it, as client-go's `ReleaseOnCancel` does: an empty holder
    /// lets the next candidate take it at once instead of waiting out the lease duration.
    pub async fn release(&self) -> Result<bool> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .kube_ctx(|| format!("reading Lease {}", self.name))?
        else {
            return Ok(false);
        };
        let mine = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !mine {
            return Ok(false);
        }
        let now = chrono_to_micro(Utc::now());
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = now.clone();
            spec.acquire_time = now;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::Kube {
                context: format!("releasing Lease {}", self.name),
                source: e,
            }),
        }
    }

    /// Blocks until this replica leads, then keeps renewing in the background.
    pub async fn lead(self) -> Leadership {
        let renew_every = self.duration / 3;
        loop {
            match self.try_lead().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(renew_every).await;
        }
        tracing::info!(identity = %self.identity, "leading");
        let elector = std::sync::Arc::new(self);
        let (tx, rx) = tokio::sync::watch::channel(true);
        let renewer = elector.clone();
        let renewing = tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                let ok = matches!(renewer.try_lead().await, Ok(true));
                if !ok {
                    tracing::error!("lost the leader Lease");
                    let _ = tx.send(false);
                    return;
                }
            }
        });
        Leadership {
            lost: rx,
            renewing,
            elector,
        }
    }
}

/// Held while this replica leads.
pub struct Leadership {
    /// Flips to false if leadership is lost (the process should then exit).
    pub lost: tokio::sync::watch::Receiver<bool>,
    renewing: tokio::task::JoinHandle<()>,
    elector: std::sync::Arc<Elector>,
}

impl Leadership {
    /// Stops renewing and gives the Lease up (on shutdown).
    pub async fn release(self) {
        self.renewing.abort();
        match self.elector.release().await {
            Ok(true) => tracing::info!("released the leader Lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not release the leader Lease"),
        }
    }
}
