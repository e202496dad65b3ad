//! Schema adjustments that make the embedded pipeline spec a valid structural CRD schema.

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

use crate::pipeline::PipelineSpec;

/// The schema of `spec.pipeline`: the runtime's own schema, with
/// - no defaults (the runtime applies them; API-server defaulting would also make
///   `pipeline.parallelism` look set, which a validation rule forbids),
/// - `name` optional (the operator fills in the StreamJob's name),
/// - nodes keeping their connector settings (`x-kubernetes-preserve-unknown-fields`, otherwise
///   the API server would prune every key the schema does not list) plus `connectorRef` and the
///   one-of rule between it and inline connection settings,
/// - no `additionalProperties: false` (pruning already drops unknown fields).
pub fn pipeline_schema(_: &mut SchemaGenerator) -> Schema {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut value = generator.into_root_schema_for::<PipelineSpec>().to_value();
    if let Value::Object(root) = &mut value {
        for key in ["$schema", "title", "definitions", "$defs"] {
            root.remove(key);
        }
        if let Some(Value::Array(required)) = root.get_mut("required") {
            required.retain(|r| r != "name");
        }
    }
    strip(&mut value);
    if let Some(props) = value.get_mut("properties").and_then(Value::as_object_mut) {
        for list in ["sources", "transforms", "sinks"] {
            if let Some(items) = props.get_mut(list).and_then(|l| l.get_mut("items")) {
                extend_node(items);
            }
        }
    }
    Schema::try_from(value).unwrap_or_default()
}

/// A map of any settings kept as written: `type: object` with
/// `x-kubernetes-preserve-unknown-fields` and NO `additionalProperties` (what schemars derives for
/// a `serde_json::Map`). With both, the API server treats the object as a map of untyped values
/// and prunes every nested object: strict field validation then rejects `{a: {b: 1}}` and other
/// clients silently store `{a: {}}`.
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("default");
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            // See `free_form_object`: the two together make the server prune nested objects.
            if map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                map.remove("additionalProperties");
            }
            for (_, child) in map.iter_mut() {
                strip(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

fn extend_node(node: &mut Value) {
    let (props, rules) = crate::stream_job::node_schema_additions();
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    obj.insert(
        "x-kubernetes-preserve-unknown-fields".into(),
        Value::Bool(true),
    );
    obj.insert("x-kubernetes-validations".into(), rules);
    let properties = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Default::default()));
    if let (Some(existing), Value::Object(extra)) = (properties.as_object_mut(), props) {
        existing.extend(extra);
    }
}
