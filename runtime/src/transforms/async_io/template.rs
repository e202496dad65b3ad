//! `{field}` templates for URLs and Redis keys: parsed once, checked against the lookup key, and
//! filled from a record's key values.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// Index into the lookup key.
    Field(usize),
}

/// A template whose placeholders each name one of the lookup key's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text` (`{{` and `}}` are literal braces). Every placeholder must be one of `key`,
    /// so the cache key (the key's values) identifies the request; the error says which is not.
    pub fn parse(text: &str, key: &[String]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!("unclosed placeholder {{{name} in {text:?}"));
                    }
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(format!("empty placeholder {{}} in {text:?}"));
                    }
                    let i = key.iter().position(|k| k == name).ok_or_else(|| {
                        format!(
                            "placeholder {{{name}}} names field {name:?}, which is not in the \
                             lookup key {key:?}"
                        )
                    })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(i));
                }
                '}' => return Err(format!("unmatched }} in {text:?} (write }}}} for a brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Fills the template, passing each key value through `escape` (URL encoding, or none).
    pub fn render(&self, key: &[Value], escape: impl Fn(&str) -> String) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => s.push_str(t),
                Part::Field(i) => s.push_str(&escape(&plain(&key[*i]))),
            }
        }
        s
    }
}

/// A key value as text: strings without quotes, everything else as JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<String> {
        vec!["user".into(), "region".into()]
    }

    #[test]
    fn fills_placeholders_and_literal_braces() {
        let t = Template::parse("http://h/u/{user}?r={ region }&x={{y}}", &key()).unwrap();
        let s = t.render(&[Value::from("a b"), Value::from(7)], |s| {
            s.replace(' ', "%20")
        });
        assert_eq!(s, "http://h/u/a%20b?r=7&x={y}");
    }

    #[test]
    fn a_placeholder_outside_the_key_is_named() {
        let e = Template::parse("http://h/{usr}", &key()).unwrap_err();
        assert!(e.contains("\"usr\""), "{e}");
        assert!(e.contains("not in the lookup key"), "{e}");
    }

    #[test]
    fn malformed_templates_are_rejected() {
        assert!(Template::parse("a{user", &key())
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("a{}", &key())
            .unwrap_err()
            .contains("empty"));
        assert!(Template::parse("a}b", &key())
            .unwrap_err()
            .contains("unmatched"));
    }
}
