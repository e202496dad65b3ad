//! The CRD YAML in crds/generated/ and in the Helm chart must match the Rust types.
//! Regenerate with `cargo run -p weir-operator -- crds --write` (or `WEIR_UPDATE_CRDS=1 cargo test`).

use std::path::PathBuf;

use kube::CustomResourceExt;
use weir_crds::generated::{crd_files, OUTPUT_DIRS};
use weir_crds::{Connector, StreamJob};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn generated_crds_are_up_to_date() {
    let update = std::env::var_os("WEIR_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for dir in OUTPUT_DIRS {
        for (name, yaml) in crd_files().unwrap() {
            let path = root().join(dir).join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != yaml {
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &yaml).unwrap();
                } else {
                    stale.push(format!("{dir}/{name}"));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated CRDs: {stale:?}; run `cargo run -p weir-operator -- crds --write`"
    );
}

#[test]
fn stream_job_crd_has_names_subresources_and_columns() {
    let crd = serde_json::to_value(StreamJob::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "streamjobs.weir.dev");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "sj");
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(
        v["subresources"]["scale"]["specReplicasPath"],
        ".spec.parallelism"
    );
    assert!(v["subresources"]["status"].is_object());
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Parallelism", "Ready", "Last-Checkpoint", "Age"]
    );
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules = spec["x-kubernetes-validations"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["rule"] == "self.parallelism >= 1"));
    let pipeline = &spec["properties"]["pipeline"];
    // The runtime applies pipeline defaults; the API server must not (see schema.rs).
    assert!(!pipeline.to_string().contains("\"default\""), "{pipeline}");
    assert!(!pipeline["required"]
        .as_array()
        .unwrap()
        .contains(&"name".into()));
    let node = &pipeline["properties"]["sinks"]["items"];
    assert_eq!(node["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(node["properties"]["connectorRef"]["type"], "string");
}

#[test]
fn connector_crd_keeps_properties_and_has_rules() {
    let crd = serde_json::to_value(Connector::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["properties"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
    assert_eq!(
        spec["properties"]["type"]["enum"].as_array().unwrap().len(),
        10
    );
    assert!(spec["x-kubernetes-validations"].as_array().unwrap().len() >= 5);
    let eh = &spec["properties"]["eventhubs"];
    assert_eq!(
        eh["required"],
        serde_json::json!(["connectionString", "namespace"])
    );
}

/// Every schema node of `v` that keeps unknown fields but also declares `additionalProperties`
/// (the API server then prunes nested objects; an offline JSON-schema check cannot see it).
fn pruning_maps(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if m.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::Value::Bool(true))
                && m.contains_key("additionalProperties")
            {
                out.push(path.to_string());
            }
            for (k, child) in m {
                pruning_maps(child, &format!("{path}.{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pruning_maps(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn no_schema_keeps_unknown_fields_and_declares_additional_properties() {
    for crd in [
        serde_json::to_value(StreamJob::crd()).unwrap(),
        serde_json::to_value(Connector::crd()).unwrap(),
    ] {
        let mut found = Vec::new();
        pruning_maps(&crd, "", &mut found);
        assert!(found.is_empty(), "{}: {found:?}", crd["metadata"]["name"]);
    }
    // The Connector's free-form properties still keep unknown (and nested) fields.
    let c = serde_json::to_value(Connector::crd()).unwrap();
    let props = &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["properties"];
    assert_eq!(
        props["x-kubernetes-preserve-unknown-fields"], true,
        "{props}"
    );
    assert_eq!(props["type"], "object");
}
