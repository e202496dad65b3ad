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

    /// Blocks until this replica leads, then keeps renewing in the background; the returned
    /// receiver flips to false if leadership is lost (the process should then exit).
    pub async fn lead(self) -> tokio::sync::watch::Receiver<bool> {
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
        let (tx, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                let ok = matches!(self.try_lead().await, Ok(true));
                if !ok {
                    tracing::error!("lost the leader Lease");
                    let _ = tx.send(false);
                    return;
                }
            }
        });
        rx
    }
}
