//! examples/k8s/*.yaml against the generated CRDs: the OpenAPI schema (jsonschema), the CEL
//! `x-kubernetes-validations` rules (cel-interpreter, evaluated where the API server would),
//! and the operator's own resolution and tuning. Broken variants must be rejected by the rule
//! meant to catch them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use weir_crds::{Connector, StreamJob};
use weir_operator::{resolve, tuning};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// openAPIV3Schema by kind, from crds/generated/.
fn schemas() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for f in ["streamjobs.weir.dev.yaml", "connectors.weir.dev.yaml"] {
        let text = std::fs::read_to_string(root().join("crds/generated").join(f)).unwrap();
        let crd = yaml_docs(&text).remove(0);
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        out.insert(
            kind,
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
        );
    }
    out
}

fn examples() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for (i, d) in yaml_docs(&std::fs::read_to_string(&f).unwrap())
            .into_iter()
            .enumerate()
        {
            out.push((format!("{name}#{i}"), d));
        }
    }
    out
}

/// Evaluates every CEL rule of `schema` on `obj`, recursively, like the API server does.
fn cel_errors(schema: &Value, obj: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
        for r in rules {
            let rule = r["rule"].as_str().unwrap();
            let program = cel_interpreter::Program::compile(rule)
                .unwrap_or_else(|e| panic!("rule {rule:?} does not compile: {e:?}"));
            let mut ctx = cel_interpreter::Context::default();
            ctx.add_variable("self", obj.clone()).unwrap();
            match program.execute(&ctx) {
                Ok(cel_interpreter::Value::Bool(true)) => {}
                Ok(other) => errors.push(format!(
                    "{path}: {} ({rule} gave {other:?})",
                    r["message"].as_str().unwrap_or("")
                )),
                Err(e) => errors.push(format!("{path}: rule {rule:?} failed: {e}")),
            }
        }
    }
    match obj {
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(s) = schema["properties"].get(k) {
                    cel_errors(s, v, &format!("{path}.{k}"), errors);
                } else if schema["additionalProperties"].is_object() {
                    cel_errors(
                        &schema["additionalProperties"],
                        v,
                        &format!("{path}.{k}"),
                        errors,
                    );
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                cel_errors(&schema["items"], v, &format!("{path}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

/// Schema and CEL problems of one object.
fn problems(schemas: &BTreeMap<String, Value>, doc: &Value) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let schema = schemas
        .get(kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind:?}"));
    let validator = jsonschema::draft4::new(schema).unwrap();
    let mut errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("schema: {} at {}", e, e.instance_path()))
        .collect();
    cel_errors(schema, doc, "", &mut errors);
    errors
}

#[test]
fn examples_validate_against_the_generated_crds() {
    let schemas = schemas();
    let docs = examples();
    let mut connectors = BTreeMap::new();
    for (name, doc) in &docs {
        let errors = problems(&schemas, doc);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        if doc["kind"] == "Connector" {
            let c: Connector = serde_json::from_value(doc.clone()).unwrap();
            assert!(
                weir_operator::probes::validate(&c.spec).is_empty(),
                "{name}"
            );
            connectors.insert(c.metadata.name.clone().unwrap(), c.spec);
        }
    }
    let mut jobs = 0;
    for (name, doc) in &docs {
        if doc["kind"] != "StreamJob" {
            continue;
        }
        jobs += 1;
        let job: StreamJob = serde_json::from_value(doc.clone()).unwrap();
        let job_name = job.metadata.name.clone().unwrap();
        let mut resolved = resolve::resolve(&job_name, &job.spec, &connectors)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        // Exactly what `weir validate` (and so the operator before deploying) checks.
        let errors = resolve::validate(&resolved.pipeline);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        let tunings = tuning::tune(&mut resolved.pipeline, &BTreeMap::new());
        assert!(
            tunings.iter().all(|t| !t.is_problem()),
            "{name}: {tunings:?}"
        );
        // Secrets never reach the pipeline document.
        let text = serde_norway::to_string(&resolved.pipeline).unwrap();
        assert!(!text.contains("Endpoint=sb://"), "{name}");
        if job_name == "payments-dedup" {
            let sink = &resolved.pipeline.sinks[0].config;
            assert_eq!(
                sink["bootstrap_servers"],
                "kafka-0.kafka:9092,kafka-1.kafka:9092"
            );
            // 30s + 2m + max(10 %, 20s), as the example's header says.
            assert_eq!(sink["properties"]["transaction.timeout.ms"], "170000");
            assert_eq!(sink["properties"]["client.id"], "weir");
        }
        if job_name == "telemetry-archive" {
            // The eventhubs profile is applied by the runtime; the operator hands it the
            // namespace and the connection string as an environment reference.
            let src = &resolved.pipeline.sources[0].config;
            assert_eq!(src["topics"], serde_json::json!(["telemetry"]));
            assert_eq!(src["eventhubs"]["namespace"], "my-namespace");
            assert_eq!(
                src["eventhubs"]["connection_string"],
                "${env:WEIR_CONN_EVENTHUBS_EVENTHUBS_CONNECTION_STRING}"
            );
            assert_eq!(resolved.env.len(), 1);
        }
        if job_name == "orders-archive" {
            let (src, sink) = (
                &resolved.pipeline.sources[0].config,
                &resolved.pipeline.sinks[0].config,
            );
            assert_eq!(src["region"], "eu-west-1");
            assert_eq!(
                src["credentials"]["access_key_id"],
                "${env:WEIR_CONN_KINESIS_ORDERS_CREDENTIALS_ACCESS_KEY_ID}"
            );
            assert_eq!(sink["delivery_stream"], "orders-to-s3");
            assert_eq!(resolved.env.len(), 4);
        }
        if job_name == "orders-search" {
            let sink = &resolved.pipeline.sinks[0].config;
            assert_eq!(sink["url"], "https://search-es-http.search.svc:9200");
            assert_eq!(sink["auth"]["basic"]["username"], "elastic");
            assert_eq!(
                sink["auth"]["basic"]["password"],
                "${env:WEIR_CONN_SEARCH_AUTH_BASIC_PASSWORD}"
            );
            assert_eq!(sink["tls"]["ca_pem"], "${env:WEIR_CONN_SEARCH_TLS_CA_PEM}");
            assert_eq!(sink["max_in_flight"], 4, "the Connector's properties");
            assert_eq!(sink["index"], "orders-{created|yyyy.MM}", "the node's own");
            assert_eq!(resolved.env.len(), 2);
        }
    }
    // At least the examples of the Connector types present when this was written.
    assert!(jobs >= 5, "{jobs} StreamJob examples");
}

/// crds/tests/rejected.yaml: each case is refused by the rule meant to catch it, and every rule
/// of the CRDs has a case (the real API server gets the same cases in the e2e tests).
#[test]
fn broken_variants_are_rejected_by_their_rule() {
    let schemas = schemas();
    let cases = weir_crds::rejected::cases(&root().join("examples/k8s")).unwrap();
    for case in &cases {
        let errors = problems(&schemas, &case.doc);
        assert!(
            errors.iter().any(|e| e.contains(&case.expect)),
            "{}: expected {:?} in {errors:#?}",
            case.what,
            case.expect
        );
    }
    for message in weir_crds::rejected::rule_messages() {
        assert!(
            cases.iter().any(|c| message.contains(&c.expect)),
            "no case in crds/tests/rejected.yaml exercises the rule {message:?}"
        );
    }
}
