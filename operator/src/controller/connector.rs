//! The Connector reconciler: validates, checks the referenced Secrets exist, probes the
//! endpoint, and reports a Ready condition with the reason. StreamJobs that use a Connector are
//! reconciled when it changes (see `run.rs`); their config hash changes, which restarts them
//! through their upgrade mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use weir_crds::connector::ConnectorStatus;
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
    let name = c.name_any();
    let now = (ctx.now)();
    let spec = &c.spec;

    let mut problems = probes::validate(spec);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
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
    // Secret values by the setting they fill, for the probe only (never logged or stored).
    let mut values = std::collections::BTreeMap::new();
    for (setting, r) in &refs {
        match read_secret_key(&secrets, &ns, r).await? {
            SecretKey::NoSecret | SecretKey::NoKey => problems.push(format!(
                "Secret {}/{} has no key {:?} (for {setting})",
                ns, r.name, r.key
            )),
            SecretKey::Value(v) => {
                values.insert(setting.clone(), String::from_utf8_lossy(&v).into_owned());
            }
        }
    }

    let mut probed_max = None;
    let (ok, reason, message) = if !problems.is_empty() {
        (false, "Invalid", problems.join("; "))
    } else if !spec.probe.enabled {
        (true, "NotProbed", "probing is disabled".to_string())
    } else {
        let target = probes::target(spec);
        let result = probes::run(&target, &values, spec.probe.timeout.as_std()).await;
        let label = if result.is_ok() { "ok" } else { "failed" };
        ctx.metrics
            .probes
            .with_label_values(&[spec.type_.as_str(), label])
            .inc();
        match result {
            Ok(p) => {
                probed_max = p.transaction_max_timeout_ms;
                (true, "Reachable", p.message)
            }
            Err(m) => (false, "Unreachable", m),
        }
    };

    let previous = c.status.clone().unwrap_or_default();
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let before = previous.conditions.iter().find(|p| p.type_ == "Ready");
    let status_word = if ok { "True" } else { "False" };
    let ready = Condition {
        type_: "Ready".into(),
        status: status_word.into(),
        reason: reason.into(),
        message: message.clone(),
        observed_generation: c.metadata.generation,
        last_transition_time: before
            .filter(|b| b.status == status_word)
            .map(|b| b.last_transition_time.clone())
            .unwrap_or_else(|| stamp.clone()),
    };
    let status = ConnectorStatus {
        observed_generation: c.metadata.generation,
        conditions: vec![ready],
        last_probe_time: Some(stamp),
        // Read from the brokers when the probe could; the Connector's stated value otherwise.
        transaction_max_timeout_ms: probed_max.or_else(|| {
            spec.kafka
                .as_ref()
                .and_then(|k| k.transaction_max_timeout)
                .map(|d| d.as_millis())
        }),
    };
    let api: Api<Connector> = Api::namespaced(ctx.client.clone(), &ns);
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
    if before.map(|b| b.status.as_str()) != Some(status_word) {
        let ev = KubeEvent {
            type_: if ok {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: reason.into(),
            note: Some(message),
            action: "Probe".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &c.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
    ctx.metrics
        .reconcile_duration
        .with_label_values(&["Connector"])
        .observe(started.elapsed().as_secs_f64());
    Ok(Requeue::requeue(
        spec.probe.interval.as_std().max(Duration::from_secs(5)),
    ))
}

pub fn error_policy(c: Arc<Connector>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["Connector"])
        .inc();
    tracing::warn!(name = %c.name_any(), error = %error, "connector reconcile failed");
    Requeue::requeue(Duration::from_secs(30))
}
