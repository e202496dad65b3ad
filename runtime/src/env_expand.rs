//! `${env:NAME}` references in a pipeline's settings, replaced at `weir run` time. The operator
//! puts Secret values on the pod as env vars and only these references into the ConfigMap, so
//! credentials never land in the resolved pipeline. `$${env:…}` stays literal.

use serde_json::Value;
use weir_crds::{PipelineSpec, SpecError};

/// Replaces every reference in node settings and checkpoint storage options; an unset variable
/// is an error naming the field and the variable.
pub fn expand_spec(
    spec: &mut PipelineSpec,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Vec<SpecError>> {
    let mut errors = Vec::new();
    for (list, role) in [
        (&mut spec.sources, "sources"),
        (&mut spec.transforms, "transforms"),
        (&mut spec.sinks, "sinks"),
    ] {
        for (i, node) in list.iter_mut().enumerate() {
            for (k, v) in node.config.iter_mut() {
                expand_value(v, &format!("{role}[{i}].{k}"), lookup, &mut errors);
            }
        }
    }
    for (k, v) in spec.checkpoint.storage_options.iter_mut() {
        match expand_str(v, lookup) {
            Ok(s) => *v = s,
            Err(name) => errors.push(unset(&format!("checkpoint.storage_options.{k}"), &name)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn unset(path: &str, name: &str) -> SpecError {
    SpecError::new(
        path,
        format!("environment variable {name} (from ${{env:{name}}}) is not set"),
    )
}

fn expand_value(
    v: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<SpecError>,
) {
    match v {
        Value::String(s) => match expand_str(s, lookup) {
            Ok(e) => *s = e,
            Err(name) => errors.push(unset(path, &name)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                expand_value(item, &format!("{path}.{k}"), lookup, errors);
            }
        }
        _ => {}
    }
}

/// Expands one string; `Err` carries the first unset variable's name.
pub fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains("${env:") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${env:") {
        let escaped = rest[..at].ends_with('$');
        let after = &rest[at + 6..];
        let Some(end) = after.find('}') else {
            break;
        };
        if escaped {
            out.push_str(&rest[..at - 1]);
            out.push_str(&rest[at..at + 6 + end + 1]);
        } else {
            out.push_str(&rest[..at]);
            let name = &after[..end];
            out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PASS").then(|| "s3cr=t".to_string())
    }

    #[test]
    fn expands_references_and_keeps_escapes() {
        assert_eq!(expand_str("a${env:PASS}b", &env).unwrap(), "as3cr=tb");
        assert_eq!(expand_str("$${env:PASS}", &env).unwrap(), "${env:PASS}");
        assert_eq!(expand_str("plain $x {y}", &env).unwrap(), "plain $x {y}");
        assert_eq!(expand_str("${env:MISSING}", &env).unwrap_err(), "MISSING");
        assert_eq!(
            expand_str("${env:unterminated", &env).unwrap(),
            "${env:unterminated"
        );
    }

    #[test]
    fn names_the_field_of_an_unset_variable() {
        let mut spec = PipelineSpec::from_yaml(
            "name: j\nsources:\n- name: s\n  type: datagen\n  properties:\n    sasl.password: ${env:PASS}\nsinks:\n- name: k\n  type: blackhole\n  input: s\n  url: ${env:NOPE}\n",
        )
        .unwrap();
        let errors = expand_spec(&mut spec, &env).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "sinks[0].url");
        assert!(errors[0].message.contains("NOPE"), "{}", errors[0].message);
        assert_eq!(
            spec.sources[0].config["properties"]["sasl.password"],
            Value::String("s3cr=t".into())
        );
    }
}
