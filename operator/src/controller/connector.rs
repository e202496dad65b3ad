//! The Connector reconciler: validates, checks the referenced Secrets exist, probes the
//! endpoint, and reports a Ready condition with the reason. StreamJobs that use a Connector are
//! reconciled when it changes (see `run.rs`); their config hash changes, which restarts them
//! through their upgrade mode.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use weir_crds::connector::{ConnectorSpec, ConnectorStatus, SecretKeyRef};
use weir_crds::status::Condition;
use weir_crds::Connector;

use crate::controller::stream_job::Context;
use crate::controller::{read_secret_key, SecretKey};
use crate::error::{Error, KubeContext, Result};
use crate::probes;
use crate::resources::FIELD_MANAGER;

pub async fn reconcile(c: Arc<Connector>, ctx: Arc<Context>) -> Result<Requeue> {
    let started = Instant::now();
    ctx.metrics
        .reconciles
        .with_label_values(&["Connector"])
        .inc();
    let ns = c.namespace().unwrap_or_else(|| "default".into());
    let spec = &c.spec;
    let verdict = observe(spec, &ns, &ctx).await?;
    let previous = c.status.clone().unwrap_or_default();
    let (status, event) = plan(&previous, spec, c.metadata.generation, verdict, (ctx.now)());
    apply(&c, &ns, &status, event, &ctx).await?;
    ctx.metrics
        .reconcile_duration
        .with_label_values(&["Connector"])
        .observe(started.elapsed().as_secs_f64());
    Ok(Requeue::requeue(
        spec.probe.interval.as_std().max(Duration::from_secs(5)),
    ))
}

/// What the reads found: the Ready condition's status, reason and message, and the brokers'
/// `transaction.max.timeout.ms` when the probe read it.
#[derive(Clone, Debug, PartialEq)]
struct Verdict {
    ok: bool,
    reason: &'static str,
    message: String,
    probed_max: Option<u64>,
}

/// Every Secret key the Connector names, by the setting it fills.
fn secret_refs(spec: &ConnectorSpec) -> Vec<(String, SecretKeyRef)> {
    let mut refs: Vec<_> = spec
        .credentials
        .iter()
        .map(|c| (c.setting.clone(), c.secret_key_ref.clone()))
        .collect();
    if let Some(e) = &spec.eventhubs {
        refs.push((
            "eventhubs.connectionString".into(),
            e.connection_string.secret_key_ref.clone(),
        ));
    }
    if let Some(s) = spec.kafka.as_ref().and_then(|k| k.sasl.as_ref()) {
        refs.push(("sasl.password".into(), s.password.secret_key_ref.clone()));
        if let Some(u) = &s.username.secret_key_ref {
            refs.push(("sasl.username".into(), u.clone()));
        }
    }
    refs.extend(probes::secret_refs(spec));
    refs
}

/// All reads: validates the spec, reads the Secrets it names and, when both are fine and
/// probing is on, probes the endpoint.
async fn observe(spec: &ConnectorSpec, ns: &str, ctx: &Context) -> Result<Verdict> {
    let mut problems = probes::validate(spec);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    // Secret values by the setting they fill, for the probe only (never logged or stored).
    let mut values = BTreeMap::new();
    for (setting, r) in secret_refs(spec) {
        match read_secret_key(&secrets, ns, &r).await? {
            SecretKey::NoSecret | SecretKey::NoKey => problems.push(format!(
                "Secret {}/{} has no key {:?} (for {setting})",
                ns, r.name, r.key
            )),
            SecretKey::Value(v) => {
                values.insert(setting, String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    let verdict = |ok, reason, message| Verdict {
        ok,
        reason,
        message,
        probed_max: None,
    };
    if !problems.is_empty() {
        return Ok(verdict(false, "Invalid", problems.join("; ")));
    }
    if !spec.probe.enabled {
        return Ok(verdict(true, "NotProbed", "probing is disabled".into()));
    }
    let result = probes::run(&probes::target(spec), &values, spec.probe.timeout.as_std()).await;
    let label = if result.is_ok() { "ok" } else { "failed" };
    ctx.metrics
        .probes
        .with_label_values(&[spec.type_.as_str(), label])
        .inc();
    Ok(match result {
        Ok(p) => Verdict {
            probed_max: p.transaction_max_timeout_ms,
            ..verdict(true, "Reachable", p.message)
        },
        Err(m) => verdict(false, "Unreachable", m),
    })
}

/// The new status and, when Ready changed, the event that says so (pure). Ready keeps its
/// transition time while its status stays.
fn plan(
    previous: &ConnectorStatus,
    spec: &ConnectorSpec,
    generation: Option<i64>,
    v: Verdict,
    now: DateTime<Utc>,
) -> (ConnectorStatus, Option<KubeEvent>) {
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let before = previous.conditions.iter().find(|p| p.type_ == "Ready");
    let status_word = if v.ok { "True" } else { "False" };
    let ready = Condition {
        type_: "Ready".into(),
        status: status_word.into(),
        reason: v.reason.into(),
        message: v.message.clone(),
        observed_generation: generation,
        last_transition_time: before
            .filter(|b| b.status == status_word)
            .map(|b| b.last_transition_time.clone())
            .unwrap_or_else(|| stamp.clone()),
    };
    let changed = before.map(|b| b.status.as_str()) != Some(status_word);
    let event = changed.then(|| KubeEvent {
        type_: if v.ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: v.reason.into(),
        note: Some(v.message),
        action: "Probe".into(),
        secondary: None,
    });
    let status = ConnectorStatus {
        observed_generation: generation,
        conditions: vec![ready],
        last_probe_time: Some(stamp),
        // Read from the brokers when the probe could; the Connector's stated value otherwise.
        transaction_max_timeout_ms: v.probed_max.or_else(|| {
            spec.kafka
                .as_ref()
                .and_then(|k| k.transaction_max_timeout)
                .map(|d| d.as_millis())
        }),
    };
    (status, event)
}

/// All writes: the status patch, then the event (a failed event is logged, not retried).
async fn apply(
    c: &Connector,
    ns: &str,
    status: &ConnectorStatus,
    event: Option<KubeEvent>,
    ctx: &Context,
) -> Result<()> {
    let name = c.name_any();
    let api: Api<Connector> = Api::namespaced(ctx.client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Connector",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .kube_ctx(|| format!("patching the status of Connector {ns}/{name}"))?;
    if let Some(ev) = event {
        if let Err(e) = ctx.recorder.publish(&ev, &c.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
    Ok(())
}

pub fn error_policy(c: Arc<Connector>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["Connector"])
        .inc();
    tracing::warn!(name = %c.name_any(), error = %error, "connector reconcile failed");
    Requeue::requeue(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec() -> ConnectorSpec {
        serde_json::from_value(serde_json::json!({
            "type": "kafka",
            "kafka": {"bootstrapServers": "k:9092", "transactionMaxTimeout": "15m"}
        }))
        .unwrap()
    }

    fn verdict(ok: bool, probed_max: Option<u64>) -> Verdict {
        Verdict {
            ok,
            reason: if ok { "Reachable" } else { "Unreachable" },
            message: "m".into(),
            probed_max,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    /// An event only when Ready flips; while it stays, its transition time stays too and only
    /// the probe time moves.
    #[test]
    fn ready_keeps_its_transition_time_and_only_a_flip_is_an_event() {
        let spec = spec();
        let (first, ev) = plan(
            &ConnectorStatus::default(),
            &spec,
            Some(1),
            verdict(true, None),
            at(0),
        );
        assert_eq!(ev.map(|e| e.type_), Some(EventType::Normal));
        let (second, ev) = plan(&first, &spec, Some(1), verdict(true, None), at(60));
        assert!(ev.is_none(), "no event while Ready stays True");
        assert_eq!(
            second.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );
        assert_ne!(second.last_probe_time, first.last_probe_time);
        let (third, ev) = plan(&second, &spec, Some(2), verdict(false, None), at(120));
        let ev = ev.expect("Ready flipped to False");
        assert_eq!(
            (ev.type_, ev.reason.as_str()),
            (EventType::Warning, "Unreachable")
        );
        assert_eq!(third.conditions[0].status, "False");
        assert_eq!(third.conditions[0].observed_generation, Some(2));
        assert_eq!(
            third.conditions[0].last_transition_time,
            third.last_probe_time.clone().unwrap()
        );
    }

    /// The brokers' `transaction.max.timeout.ms` wins over the Connector's stated one.
    #[test]
    fn the_probed_transaction_limit_wins_over_the_stated_one() {
        let spec = spec();
        let none = ConnectorStatus::default();
        let (s, _) = plan(&none, &spec, None, verdict(true, Some(60_000)), at(0));
        assert_eq!(s.transaction_max_timeout_ms, Some(60_000));
        let (s, _) = plan(&none, &spec, None, verdict(true, None), at(0));
        assert_eq!(s.transaction_max_timeout_ms, Some(900_000));
    }
}
