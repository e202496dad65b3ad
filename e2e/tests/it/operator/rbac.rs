//! Least privilege, proven with the API server's audit log (e2e/services/kube.sh logs every
//! ServiceAccount request at Metadata level): the operator, running with a token of the chart's
//! ServiceAccount, goes through a job's whole life — a Connector with a Secret, deploy, a Secret
//! rotation (savepoint upgrade), suspend, resume, its NetworkPolicy switched off, delete with a
//! savepoint — and then
//! - no request of it was refused (a missing rule would fail it, and this test), and
//! - every verb the chart grants it was used (an excess rule fails this test).
//!
//! Both scopes are run: the chart installed for its own namespace (a Role), and cluster-wide (a
//! ClusterRole) with a job selector, the job living in another namespace next to an unlabelled job
//! that the operator must leave alone (other tests' jobs share this control plane too).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::Api;

use super::connectors::{connector, deployed_hash, job, secret, wait_upgraded};
use super::{Install, Op};

const MINUTE: Duration = Duration::from_secs(60);

/// (apiGroup, resource[/subresource], verb)
type Grant = (String, String, String);

/// Granted but not exercised by one job's life, each with why it is still needed.
const NOT_EXERCISED: [(&str, &str, &str, &str); 1] = [(
    "weir.dev",
    "streamjobs/finalizers",
    "update",
    "blockOwnerDeletion on owned objects under OwnerReferencesPermissionEnforcement, which this \
     API server does not enable",
)];

fn granted(rules: &[&Option<Vec<PolicyRule>>]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rules in rules {
        for rule in rules.iter().flatten() {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        out.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

/// What the ServiceAccount asked for, and what of it was refused.
fn audited(log: &str, user: &str) -> (BTreeMap<Grant, usize>, Vec<String>) {
    let mut used = BTreeMap::new();
    let mut refused = Vec::new();
    for line in log.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if e["user"]["username"] != user {
            continue;
        }
        // Discovery (`/apis`, `/version`) names no object and needs no rule.
        let o = &e["objectRef"];
        if o.is_null() {
            continue;
        }
        let mut resource = o["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = o["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let key = (
            o["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            e["verb"].as_str().unwrap_or_default().to_string(),
        );
        let code = &e["responseStatus"]["code"];
        if code == 403 {
            refused.push(format!("{key:?} {}", e["requestURI"]));
        }
        // A server-side apply that created its object (201) was also authorized as create.
        if key.2 == "patch" && code == 201 {
            let created = (key.0.clone(), key.1.clone(), "create".to_string());
            *used.entry(created).or_insert(0) += 1;
        }
        *used.entry(key).or_insert(0) += 1;
    }
    (used, refused)
}

/// One job's whole life in `jobs`' namespace, driven through the operator: every verb the chart
/// grants is needed somewhere in it.
async fn a_jobs_life(jobs: &Op) {
    let op = jobs;
    op.apply(&secret("testing"));
    op.apply(&connector(&op.s3, "a").replace("metadata: { name: lake }", &op.metadata("lake")));
    op.apply(
        &job(&op.s3, 1_000_000)
            .replace("metadata: { name: c }", &op.metadata("c"))
            .replace(
                "  parallelism: 2\n",
                "  parallelism: 2\n  deleteWithSavepoint: true\n",
            ),
    );
    let j = op
        .wait_job("c", "deployed", 2 * MINUTE, |j| {
            super::ready(j) && deployed_hash(j).is_some()
        })
        .await;
    // A Secret rotation: savepoint upgrade.
    op.apply(&secret("rotated"));
    wait_upgraded(
        op,
        &deployed_hash(&j).unwrap(),
        "restarted for the rotation",
    )
    .await;
    // Suspend and resume.
    let patch = |p: &str| op.kubectl(&["patch", "sj", "c", "--type", "merge", "-p", p], None);
    assert!(patch(r#"{"spec":{"state":"suspended"}}"#).status.success());
    op.wait_job("c", "suspended", MINUTE, |j| {
        j.status
            .as_ref()
            .is_some_and(|s| format!("{:?}", s.phase) == "Suspended")
    })
    .await;
    assert!(patch(r#"{"spec":{"state":"running"}}"#).status.success());
    op.wait_ready("c", 2 * MINUTE).await;
    // The job's NetworkPolicy switched off: the operator deletes it.
    let policies = op.env.api::<NetworkPolicy>();
    assert!(policies.get_opt("c").await.unwrap().is_some());
    assert!(patch(r#"{"spec":{"networkPolicy":{"enabled":false}}}"#)
        .status
        .success());
    let start = Instant::now();
    while policies.get_opt("c").await.unwrap().is_some() {
        assert!(
            start.elapsed() < MINUTE,
            "the NetworkPolicy was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Delete with a savepoint: the finalizer, then garbage collection.
    assert!(op
        .kubectl(&["delete", "sj", "c", "--wait=false"], None)
        .status
        .success());
    let start = Instant::now();
    while op.jobs().get_opt("c").await.unwrap().is_some() {
        assert!(start.elapsed() < 2 * MINUTE, "finalizer never released");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every request of `user` (the operator's ServiceAccount) in the audit log was allowed, every
/// grant was used and nothing was used without one.
fn assert_least_privilege(user: &str, grants: &BTreeSet<Grant>) {
    let audit_log = std::env::var("KUBE_AUDIT_LOG")
        .expect("KUBE_AUDIT_LOG (e2e/services/kube.sh env) names the API server's audit log");
    let log = std::fs::read_to_string(&audit_log).unwrap();
    let (used, refused) = audited(&log, user);
    assert!(!used.is_empty(), "no request of {user} in {audit_log}");
    assert!(
        refused.is_empty(),
        "refused requests of {user}:\n{refused:#?}"
    );
    let unused: Vec<&Grant> = grants
        .iter()
        .filter(|g| !used.contains_key(*g))
        .filter(|(group, resource, verb)| {
            !NOT_EXERCISED
                .iter()
                .any(|(g, r, v, _)| g == group && r == resource && v == verb)
        })
        .collect();
    assert!(
        unused.is_empty(),
        "granted but never used (drop them from the chart's weir-operator.rules):\n{unused:#?}\nused: {used:#?}"
    );
    let ungranted: Vec<&Grant> = used.keys().filter(|k| !grants.contains(*k)).collect();
    assert!(ungranted.is_empty(), "used without a rule: {ungranted:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_uses_every_rule_it_is_granted_and_needs_no_other() {
    let op = Op::install("rbac", Install::default()).await;
    a_jobs_life(&op).await;
    let roles = op.env.api::<Role>();
    let role = roles.get(&op.fullname).await.unwrap();
    let election = roles
        .get(&format!("{}-leader-election", op.fullname))
        .await
        .unwrap();
    let grants = granted(&[&role.rules, &election.rules]);
    assert_least_privilege(
        &format!("system:serviceaccount:{}:{}", op.env.ns, op.fullname),
        &grants,
    );
    op.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_the_operator_runs_selected_jobs_in_any_namespace_with_the_same_rules() {
    let op = Op::install(
        "rbac-cw",
        Install {
            cluster_wide: true,
            ..Default::default()
        },
    )
    .await;
    let team = op.another_namespace("rbac-team").await;
    // Not labelled: the operator must never touch it.
    team.apply(
        &job(&team.s3, 10)
            .replace("metadata: { name: c }", "metadata: { name: not-mine }")
            .replace("/c/", "/not-mine/"),
    );
    a_jobs_life(&team).await;
    let ignored = team.job("not-mine").await;
    assert!(
        ignored.status.is_none() && ignored.metadata.finalizers.is_none(),
        "the operator acted on a job its selector does not match: {:?}",
        ignored.status
    );
    assert!(team
        .env
        .api::<StatefulSet>()
        .get_opt("not-mine")
        .await
        .unwrap()
        .is_none());
    // The namespace-scoped Role is absent; the ClusterRole carries the same rules.
    let cluster_role = Api::<ClusterRole>::all(op.env.client.clone())
        .get(&op.fullname)
        .await
        .unwrap();
    assert!(op
        .env
        .api::<Role>()
        .get_opt(&op.fullname)
        .await
        .unwrap()
        .is_none());
    let election = op
        .env
        .api::<Role>()
        .get(&format!("{}-leader-election", op.fullname))
        .await
        .unwrap();
    let grants = granted(&[&cluster_role.rules, &election.rules]);
    assert_least_privilege(
        &format!("system:serviceaccount:{}:{}", op.env.ns, op.fullname),
        &grants,
    );
    let cluster_roles = Api::<ClusterRole>::all(op.env.client.clone());
    let fullname = op.fullname.clone();
    team.finish().await;
    op.finish().await;
    // The uninstall took the cluster-scoped objects along.
    assert!(cluster_roles.get_opt(&fullname).await.unwrap().is_none());
}
