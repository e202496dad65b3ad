//! Pod volumes on the host. ConfigMap, Secret, projected and downwardAPI volumes are files the
//! kubelet writes (`volume_files`, pure), into a directory updated atomically as the kubelet's
//! AtomicWriter does: the files live in a timestamped directory, `..data` points at it, and each
//! top-level name is a symlink through `..data`, so a refresh swaps one symlink and a process
//! never reads half a version. Containers see the directories at their `mountPath`s through
//! bind mounts in their own mount namespace (`process.rs`).

use super::env::{field_value, resource_value, Objects, PodFacts};
use k8s_openapi::api::core::v1::{KeyToPath, Pod, Volume};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// File path inside the volume → (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// How a volume is provided.
#[derive(Debug, PartialEq)]
pub enum Source {
    /// Files written by the kubelet (and refreshed).
    Files(Files),
    /// An empty directory owned by the Pod.
    EmptyDir,
    /// A directory of the host (hostPath) or a per-claim directory (persistentVolumeClaim).
    HostDir(PathBuf),
}

/// A ServiceAccount token to request: it is fetched through the TokenRequest API (I/O), so
/// `volume_files` leaves a placeholder that the caller fills in.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenNeed {
    pub path: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    pub mode: u32,
}

fn check_path(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "path {path:?} must be relative and must not contain '..'"
        ));
    }
    if path.starts_with("..") {
        return Err(format!("path {path:?} must not start with '..'"));
    }
    Ok(())
}

fn key_files(
    what: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: u32,
    files: &mut Files,
) -> Result<(), String> {
    let Some(data) = data else {
        return if optional {
            Ok(())
        } else {
            Err(format!("{what} not found"))
        };
    };
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!("{what}: no key {:?}", item.key));
                };
                check_path(&item.path)?;
                let mode = item.mode.map(|m| m as u32).unwrap_or(default_mode);
                files.insert(item.path.clone(), (value.clone(), mode));
            }
        }
        _ => {
            for (k, v) in data {
                files.insert(k, (v, default_mode));
            }
        }
    }
    Ok(())
}

/// A ConfigMap or Secret whose keys become files: a volume of its own or one source of a
/// projected volume (the Kubernetes types differ, the rule is one).
struct Keys<'a> {
    secret: bool,
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    optional: Option<bool>,
}

impl<'a> Keys<'a> {
    fn config_map(
        name: &'a str,
        items: &'a Option<Vec<KeyToPath>>,
        optional: Option<bool>,
    ) -> Self {
        Keys {
            secret: false,
            name,
            items: items.as_ref(),
            optional,
        }
    }

    fn secret(name: &'a str, items: &'a Option<Vec<KeyToPath>>, optional: Option<bool>) -> Self {
        Keys {
            secret: true,
            ..Keys::config_map(name, items, optional)
        }
    }

    fn write(&self, objects: &Objects, default_mode: u32, files: &mut Files) -> Result<(), String> {
        let (what, data) = match self.secret {
            false => (
                format!("configmap {:?}", self.name),
                objects.config_map(self.name),
            ),
            true => (format!("secret {:?}", self.name), objects.secret(self.name)),
        };
        let optional = self.optional == Some(true);
        key_files(&what, data, self.items, optional, default_mode, files)
    }
}

/// What a volume provides, for a Pod whose referenced objects are `objects`; tokens to request
/// are returned separately. `claims_dir` holds one directory per PersistentVolumeClaim.
pub fn volume_source(
    pod: &Pod,
    volume: &Volume,
    facts: &PodFacts,
    objects: &Objects,
    claims_dir: &Path,
) -> Result<(Source, Vec<TokenNeed>), String> {
    let name = &volume.name;
    let ctx = |m: String| format!("volume {name:?}: {m}");
    let mut files = Files::new();
    let mut tokens = Vec::new();
    if let Some(cm) = &volume.config_map {
        let mode = cm.default_mode.unwrap_or(0o644) as u32;
        Keys::config_map(&cm.name, &cm.items, cm.optional)
            .write(objects, mode, &mut files)
            .map_err(ctx)?;
    } else if let Some(s) = &volume.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let name = s.secret_name.as_deref().unwrap_or_default();
        Keys::secret(name, &s.items, s.optional)
            .write(objects, mode, &mut files)
            .map_err(ctx)?;
    } else if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for src in p.sources.iter().flatten() {
            let keys = match (&src.config_map, &src.secret) {
                (Some(cm), _) => Some(Keys::config_map(&cm.name, &cm.items, cm.optional)),
                (None, Some(s)) => Some(Keys::secret(&s.name, &s.items, s.optional)),
                (None, None) => None,
            };
            if let Some(keys) = keys {
                keys.write(objects, mode, &mut files).map_err(ctx)?;
            } else if let Some(d) = &src.downward_api {
                downward_files(pod, facts, d.items.iter().flatten(), mode, &mut files)
                    .map_err(ctx)?;
            } else if let Some(t) = &src.service_account_token {
                check_path(&t.path).map_err(ctx)?;
                tokens.push(TokenNeed {
                    path: t.path.clone(),
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                    mode,
                });
            } else {
                return Err(ctx("unsupported projected source (supported: configMap, secret, downwardAPI, serviceAccountToken)".into()));
            }
        }
    } else if let Some(d) = &volume.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        downward_files(pod, facts, d.items.iter().flatten(), mode, &mut files).map_err(ctx)?;
    } else if volume.empty_dir.is_some() {
        return Ok((Source::EmptyDir, tokens));
    } else if let Some(h) = &volume.host_path {
        return Ok((Source::HostDir(PathBuf::from(&h.path)), tokens));
    } else if let Some(c) = &volume.persistent_volume_claim {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        return Ok((
            Source::HostDir(claims_dir.join(ns).join(&c.claim_name)),
            tokens,
        ));
    } else {
        return Err(ctx(
            "unsupported volume type (supported: configMap, secret, projected, downwardAPI, emptyDir, hostPath, persistentVolumeClaim)".into(),
        ));
    }
    Ok((Source::Files(files), tokens))
}

fn downward_files<'a>(
    pod: &Pod,
    facts: &PodFacts,
    items: impl Iterator<Item = &'a k8s_openapi::api::core::v1::DownwardAPIVolumeFile>,
    default_mode: u32,
    files: &mut Files,
) -> Result<(), String> {
    for item in items {
        check_path(&item.path)?;
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, facts, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
            let container = spec
                .containers
                .iter()
                .find(|c| Some(&c.name) == r.container_name.as_ref())
                .ok_or_else(|| {
                    format!(
                        "{}: resourceFieldRef needs an existing containerName",
                        item.path
                    )
                })?;
            resource_value(
                container,
                facts,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
            )?
        } else {
            return Err(format!(
                "{}: neither fieldRef nor resourceFieldRef",
                item.path
            ));
        };
        let mode = item.mode.map(|m| m as u32).unwrap_or(default_mode);
        files.insert(item.path.clone(), (value.into_bytes(), mode));
    }
    Ok(())
}

/// Writes `files` into `dir` atomically (see the module doc); does nothing when the current
/// version already has exactly these contents. Returns whether it wrote.
pub fn write_atomic(dir: &Path, files: &Files) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        if read_version(&dir.join(&current)).ok().as_ref() == Some(files) {
            return Ok(false);
        }
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let version = dir.join(&stamp);
    std::fs::create_dir(&version)?;
    for (path, (content, mode)) in files {
        let target = version.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode & 0o7777))?;
    }
    // Swap `..data` with a rename, the one atomic step.
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;
    // Top-level names through ..data; names gone from the new version are removed.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_string())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            if name != "..data" && name != stamp {
                std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()))?;
            }
        } else if !tops.contains(&name) && entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}

fn read_version(dir: &Path) -> std::io::Result<Files> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Files::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                let mode = entry.metadata()?.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(entry.path())?, mode));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "pipeline.yaml", "path": "conf/pipeline.yaml", "mode": 0o600}]}},
                {"name": "all", "configMap": {"name": "cm"}},
                {"name": "opt", "secret": {"secretName": "absent", "optional": true}},
                {"name": "req", "secret": {"secretName": "absent"}},
                {"name": "sa", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "cm", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                ]}},
                {"name": "bad", "configMap": {"name": "cm", "items": [{"key": "ca.crt", "path": "../escape"}]}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-p"}},
                {"name": "nfs", "nfs": {"server": "x", "path": "/"}}
            ]}
        }))
        .unwrap()
    }

    fn objects() -> Objects {
        let cm = serde_json::from_value(
            json!({"data": {"pipeline.yaml": "sources: []", "ca.crt": "PEM"}}),
        )
        .unwrap();
        Objects {
            config_maps: [("cm".to_string(), cm)].into(),
            secrets: Default::default(),
        }
    }

    fn source(i: usize) -> Result<(Source, Vec<TokenNeed>), String> {
        let p = pod();
        let v = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[i];
        volume_source(
            &p,
            v,
            &PodFacts::default(),
            &objects(),
            Path::new("/claims"),
        )
    }

    fn files(entries: &[(&str, &str, u32)]) -> Source {
        Source::Files(
            entries
                .iter()
                .map(|(p, c, m)| (p.to_string(), (c.as_bytes().to_vec(), *m)))
                .collect(),
        )
    }

    #[test]
    fn configmap_items_and_all_keys() {
        assert_eq!(
            source(0).unwrap().0,
            files(&[("conf/pipeline.yaml", "sources: []", 0o600)])
        );
        assert_eq!(
            source(1).unwrap().0,
            files(&[
                ("ca.crt", "PEM", 0o644),
                ("pipeline.yaml", "sources: []", 0o644)
            ])
        );
    }

    #[test]
    fn missing_objects_fail_unless_optional() {
        assert_eq!(source(2).unwrap().0, files(&[]));
        assert_eq!(
            source(3).unwrap_err(),
            "volume \"req\": secret \"absent\" not found"
        );
    }

    #[test]
    fn projected_service_account_volume() {
        let (src, tokens) = source(4).unwrap();
        assert_eq!(
            src,
            files(&[("ca.crt", "PEM", 0o644), ("namespace", "ns", 0o644)])
        );
        assert_eq!(
            tokens,
            [TokenNeed {
                path: "token".into(),
                audience: None,
                expiration_seconds: 3607,
                mode: 0o644
            }]
        );
    }

    #[test]
    fn paths_cannot_escape_and_unknown_types_are_named() {
        assert!(source(5)
            .unwrap_err()
            .contains("must be relative and must not contain '..'"));
        assert_eq!(source(6).unwrap().0, Source::EmptyDir);
        assert_eq!(
            source(7).unwrap().0,
            Source::HostDir(PathBuf::from("/claims/ns/data-p"))
        );
        assert!(source(8)
            .unwrap_err()
            .starts_with("volume \"nfs\": unsupported volume type"));
    }

    #[test]
    fn atomic_writes_swap_versions_and_skip_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let v1: Files = [
            ("a".to_string(), (b"1".to_vec(), 0o644)),
            ("d/b".to_string(), (b"2".to_vec(), 0o600)),
        ]
        .into();
        assert!(write_atomic(dir.path(), &v1).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("d/b")).unwrap(),
            "2"
        );
        assert!(
            !write_atomic(dir.path(), &v1).unwrap(),
            "same content: no new version"
        );
        let v2: Files = [("a".to_string(), (b"one".to_vec(), 0o644))].into();
        assert!(write_atomic(dir.path(), &v2).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "one"
        );
        assert!(
            std::fs::symlink_metadata(dir.path().join("d")).is_err(),
            "removed names disappear"
        );
        let versions = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(versions, 1, "the old version is removed");
    }
}
