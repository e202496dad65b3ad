//! The admin token of a StreamJob's workers: one Secret per job, owned by it. The workers get the
//! token as `WEIR_ADMIN_TOKEN` (a `secretKeyRef`), the operator sends it with its savepoint calls.
//!
//! Rotation: change the job's annotation `weir.dev/rotate-admin-token` (to any new value, e.g. a
//! date). The operator then writes a new token and keeps the old one as `previous`; the token's
//! digest is part of the spec hash, so the workers roll through the job's upgrade mode, and the
//! upgrade savepoint (sent to workers that still hold the old token) authenticates with
//! `previous`. Decisions here are pure; the fresh token comes in from the caller.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use weir_crds::StreamJob;
use weir_runtime::admin::AdminToken;

use crate::resources;

/// On a StreamJob: change its value to rotate the job's admin token.
pub const ROTATE_ANNOTATION: &str = "weir.dev/rotate-admin-token";
/// On the Secret: the value of [`ROTATE_ANNOTATION`] its token was made for.
pub const ROTATION_ANNOTATION: &str = "weir.dev/admin-token-rotation";
/// The key the workers read.
pub const TOKEN_KEY: &str = "token";
/// The token before the last rotation, still held by workers that have not rolled yet.
pub const PREVIOUS_KEY: &str = "previous";

pub fn secret_name(job: &str) -> String {
    format!("{job}-admin-token")
}

/// The tokens the operator may authenticate with, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminTokens {
    pub current: AdminToken,
    pub previous: Option<AdminToken>,
}

impl AdminTokens {
    pub fn all(&self) -> impl Iterator<Item = &AdminToken> {
        std::iter::once(&self.current).chain(self.previous.iter())
    }

    /// A short digest of the current token for the spec hash (a rotation rolls the workers;
    /// the value itself never leaves the Secret).
    pub fn digest(&self) -> String {
        Sha256::digest(self.current.expose().as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// What to do about the job's Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenPlan {
    pub tokens: AdminTokens,
    /// The Secret to write (created, repaired or rotated); `None`: it is as it should be.
    pub write: Option<SecretWrite>,
}

/// A Secret to apply, with a `Debug` that shows no data.
#[derive(Clone, PartialEq)]
pub struct SecretWrite(pub Secret);

impl std::fmt::Debug for SecretWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({:?}, <data redacted>)", self.0.metadata.name)
    }
}

fn rotation_requested(job: &StreamJob) -> String {
    job.annotations()
        .get(ROTATE_ANNOTATION)
        .cloned()
        .unwrap_or_default()
}

fn read_token(secret: &Secret, key: &str) -> Option<AdminToken> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    AdminToken::new(text, key).ok()
}

/// Keep the Secret's token, or write `fresh`: when there is no Secret (or no usable token in
/// it), and when the job asks for a rotation it has not had yet.
pub fn plan(job: &StreamJob, existing: Option<&Secret>, fresh: AdminToken) -> TokenPlan {
    let wanted = rotation_requested(job);
    let current = existing.and_then(|s| read_token(s, TOKEN_KEY));
    let made_for = existing
        .and_then(|s| s.annotations().get(ROTATION_ANNOTATION).cloned())
        .unwrap_or_default();
    let tokens = match current {
        Some(current) if made_for == wanted => {
            let previous = existing.and_then(|s| read_token(s, PREVIOUS_KEY));
            return TokenPlan {
                tokens: AdminTokens { current, previous },
                write: None,
            };
        }
        // A rotation: the old token stays usable for workers that still hold it.
        Some(old) => AdminTokens {
            current: fresh,
            previous: Some(old),
        },
        None => AdminTokens {
            current: fresh,
            previous: None,
        },
    };
    let write = Some(SecretWrite(secret(job, &tokens, &wanted)));
    TokenPlan { tokens, write }
}

/// The job's Secret holding `tokens`, made for rotation request `rotation`.
pub fn secret(job: &StreamJob, tokens: &AdminTokens, rotation: &str) -> Secret {
    let name = job.name_any();
    let mut data = BTreeMap::from([(
        TOKEN_KEY.to_string(),
        ByteString(tokens.current.expose().as_bytes().to_vec()),
    )]);
    if let Some(p) = &tokens.previous {
        data.insert(
            PREVIOUS_KEY.to_string(),
            ByteString(p.expose().as_bytes().to_vec()),
        );
    }
    let mut meta = resources::owned_meta(job, secret_name(&name));
    meta.annotations = Some(BTreeMap::from([(
        ROTATION_ANNOTATION.to_string(),
        rotation.to_string(),
    )]));
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    fn job(rotate: Option<&str>) -> StreamJob {
        let mut j: StreamJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": "orders", "namespace": "prod", "uid": "u-1"},
            "spec": {"image": "weir:1", "pipeline": {
                "sources": [{"name": "gen", "type": "datagen"}],
                "sinks": [{"name": "out", "type": "blackhole"}]}}
        }))
        .unwrap();
        if let Some(r) = rotate {
            j.meta_mut().annotations = Some(BTreeMap::from([(ROTATE_ANNOTATION.into(), r.into())]));
        }
        j
    }

    fn token(s: &str) -> AdminToken {
        AdminToken::new(s, "test").unwrap()
    }

    #[test]
    fn a_missing_secret_is_created_owned_by_the_job() {
        let p = plan(&job(None), None, token("fresh-token-000000001"));
        assert_eq!(p.tokens.current, token("fresh-token-000000001"));
        assert_eq!(p.tokens.previous, None);
        let s = p.write.expect("created").0;
        assert_eq!(s.metadata.name.as_deref(), Some("orders-admin-token"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("prod"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("StreamJob", "orders", Some(true))
        );
        let data = s.data.unwrap();
        assert_eq!(data[TOKEN_KEY].0, b"fresh-token-000000001");
        assert!(!data.contains_key(PREVIOUS_KEY));
    }

    #[test]
    fn an_existing_token_is_kept_until_a_rotation_is_asked_for() {
        let j = job(Some("2026-01"));
        let first = plan(&j, None, token("first-token-000000001"))
            .write
            .unwrap()
            .0;
        let again = plan(&j, Some(&first), token("never-used-0000000001"));
        assert_eq!(again.write, None);
        assert_eq!(again.tokens.current, token("first-token-000000001"));

        let rotated = plan(
            &job(Some("2026-02")),
            Some(&first),
            token("second-token-00000001"),
        );
        assert_eq!(rotated.tokens.current, token("second-token-00000001"));
        assert_eq!(
            rotated.tokens.previous,
            Some(token("first-token-000000001"))
        );
        assert_ne!(rotated.tokens.digest(), again.tokens.digest());
        let s = rotated.write.unwrap().0;
        assert_eq!(s.annotations()[ROTATION_ANNOTATION], "2026-02");
        // Read back, the rotated Secret is stable and still knows the old token.
        let after = plan(
            &job(Some("2026-02")),
            Some(&s),
            token("never-used-0000000001"),
        );
        assert_eq!(after.write, None);
        assert_eq!(after.tokens, rotated.tokens);
        let order: Vec<&str> = after.tokens.all().map(|t| t.expose()).collect();
        assert_eq!(order, ["second-token-00000001", "first-token-000000001"]);
    }

    #[test]
    fn an_unusable_token_is_replaced_and_nothing_shows_a_value() {
        let mut broken = secret(
            &job(None),
            &AdminTokens {
                current: token("x-token-0000000000001"),
                previous: None,
            },
            "",
        );
        broken
            .data
            .as_mut()
            .unwrap()
            .insert(TOKEN_KEY.into(), ByteString(b"short".to_vec()));
        let p = plan(&job(None), Some(&broken), token("fresh-token-000000001"));
        assert_eq!(p.tokens.current, token("fresh-token-000000001"));
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("fresh-token") && !shown.contains("x-token"),
            "{shown}"
        );
    }
}
