//! Untrusted spec text and serde's error messages: the limits a document must respect before the
//! YAML parser sees it, the checks serde cannot make (non-finite numbers), and one wording of
//! serde's errors in the README's `path: message` shape.

use crate::pipeline::SpecError;

/// Largest spec document read (1 MiB). Real pipelines are a few KiB; the cap bounds parse time.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// Deepest nesting of flow collections (`[`, `{`) and of compact block sequences (`- - -`).
/// The YAML parser takes superlinear time on deep nesting (100k levels: over 20 s); a real spec
/// nests under 10 levels.
pub const MAX_NESTING: usize = 64;

/// Checks size and nesting before parsing, so that no document makes the parser slow.
pub fn check_text(text: &str) -> Result<(), SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecError::new(
            "",
            format!(
                "the document is {} bytes; at most {MAX_SPEC_BYTES} bytes (1 MiB)",
                text.len()
            ),
        ));
    }
    if let Some(line) = too_deep(text) {
        return Err(SpecError::new(
            "",
            format!("nesting deeper than {MAX_NESTING} levels at line {line}"),
        ));
    }
    Ok(())
}

/// The line where nesting first exceeds [`MAX_NESTING`]. A lexical estimate: brackets inside
/// quoted scalars and comments do not count; a bracket in a plain scalar does (it can only
/// over-count, and a spec with 64 of them is not a real one).
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        // Compact nested block sequences: `- - - x` is three levels on one line.
        let dashes = line
            .trim_start()
            .split_inclusive(' ')
            .take_while(|t| t.trim_end() == "-")
            .count();
        if dashes > MAX_NESTING {
            return Some(n + 1);
        }
        let mut chars = line.chars().peekable();
        let mut prev_blank = true;
        while let Some(c) = chars.next() {
            match c {
                '#' if prev_blank => break,
                '"' => {
                    while let Some(q) = chars.next() {
                        match q {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            _ => {}
                        }
                    }
                }
                '\'' => {
                    while let Some(q) = chars.next() {
                        if q == '\'' {
                            if chars.peek() == Some(&'\'') {
                                chars.next();
                            } else {
                                break;
                            }
                        }
                    }
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(n + 1);
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev_blank = c.is_whitespace();
        }
    }
    None
}

/// Paths of numbers that are not finite (`.nan`, `.inf`, `-.inf`). Settings pass through
/// `serde_json::Value`, which turns them into null ("unset"), so they are found in the YAML.
pub fn non_finite(value: &serde_norway::Value) -> Vec<SpecError> {
    fn walk(v: &serde_norway::Value, path: &mut String, out: &mut Vec<SpecError>) {
        use serde_norway::Value;
        match v {
            Value::Number(n) if n.is_nan() || n.is_infinite() => out.push(SpecError::new(
                path.clone(),
                format!("expected a finite number, got {n}"),
            )),
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            Value::Mapping(m) => {
                for (k, item) in m {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    match k {
                        Value::String(s) => path.push_str(s),
                        other => path.push_str(
                            serde_norway::to_string(other)
                                .unwrap_or_default()
                                .trim_end(),
                        ),
                    }
                    walk(item, path, out);
                    path.truncate(len);
                }
            }
            Value::Tagged(t) => walk(&t.value, path, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}

/// An error from serde at `path` (`.` or empty for the root), worded as `path: message`:
/// - the YAML parser's own copy of the path at the start of its message is dropped;
/// - `missing field `x`` becomes `path.x: required, but missing`, `unknown field `x`` likewise
///   `path.x: unknown field`;
/// - integer types are said in words (`expected u32` → `expected a whole number from 0 to …`);
/// - an integer too large for any setting says so (serde_json says `expected any value`).
pub fn serde_error(path: &str, message: &str) -> SpecError {
    let path = if path == "." { "" } else { path };
    // The YAML parser's untyped parse knows the path only inside its message.
    let (path, message) = match (path, message.split_once(": ")) {
        ("", Some((head, rest))) if is_path(head) => (head, rest),
        _ => (path, strip_path_prefix(path, message)),
    };
    let mut message = message.to_string();
    let mut path = path.to_string();
    for (said, meant) in DOCUMENT_WORDS {
        if let Some(tail) = message.strip_prefix(said) {
            message = format!("{meant}{tail}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`').filter(|(f, _)| !f.is_empty()) {
            // serde_path_to_error has the unknown key in the path already; the YAML parser not.
            if path != field && !path.ends_with(&format!(".{field}")) {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(field);
            }
            message = format!("unknown field{tail}");
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(field);
            message = format!("required, but missing{tail}");
        }
    }
    // serde_json's and serde_norway's untyped values hold integers up to 64 bits only.
    if let Some(at) = message
        .find(" as u128, expected any")
        .or_else(|| message.find(" as i128, expected any"))
    {
        let number = message[..at].rsplit('`').nth(1).unwrap_or("the number");
        let tail = message[at..].split_once("value").map_or("", |(_, t)| t);
        message = format!(
            "{number} is too large; integers range from {} to {}{tail}",
            i64::MIN,
            u64::MAX,
        );
    }
    for (ty, words) in INTEGER_WORDS {
        let needle = format!("expected {ty}");
        if let Some(at) = message.find(&needle) {
            let end = at + needle.len();
            // `expected u32` but not `expected u32s` or a longer word.
            if !message[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                message.replace_range(at..end, &format!("expected {words}"));
            }
        }
    }
    SpecError::new(path, message)
}

/// The YAML parser's messages about the whole document, said as such.
const DOCUMENT_WORDS: [(&str, &str); 4] = [
    (
        "deserializing from YAML containing more than one document is not supported",
        "the document holds more than one YAML document (or text after its end); give one",
    ),
    (
        "EOF while parsing a value",
        "the document ends in the middle of a value",
    ),
    ("recursion limit exceeded", "the document nests too deep"),
    (
        "repetition limit exceeded",
        "the document expands its aliases (*name) too often",
    ),
];

const INTEGER_WORDS: [(&str, &str); 8] = [
    ("u8", "a whole number from 0 to 255"),
    ("u16", "a whole number from 0 to 65535"),
    ("u32", "a whole number from 0 to 4294967295"),
    ("u64", "a whole number from 0 to 18446744073709551615"),
    ("usize", "a whole number from 0 to 18446744073709551615"),
    ("i32", "a whole number from -2147483648 to 2147483647"),
    (
        "i64",
        "a whole number from -9223372036854775808 to 9223372036854775807",
    ),
    ("f64", "a number"),
];

/// The YAML parser starts some messages with its own view of the path (`checkpoint.interval: `),
/// which may be shorter than ours inside flattened settings; drop it when it is part of ours.
fn strip_path_prefix<'a>(path: &str, message: &'a str) -> &'a str {
    let Some((head, rest)) = message.split_once(": ") else {
        return message;
    };
    if is_path(head) && !path.is_empty() && (path.contains(head) || head.contains(path)) {
        rest
    } else {
        message
    }
}

fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_and_compact_sequences_are_refused_before_parsing() {
        assert_eq!(too_deep(&"[".repeat(64)), None);
        assert_eq!(too_deep(&format!("a: 1\nb: {}", "[".repeat(65))), Some(2));
        assert_eq!(too_deep(&"{a: ".repeat(100_000)), Some(1));
        assert_eq!(too_deep(&"- ".repeat(65)), Some(1));
        // Brackets in quotes and comments do not count.
        let quoted = format!(
            "a: \"{}\"\nb: '{}'\n# {}\n",
            "[".repeat(99),
            "{".repeat(99),
            "[".repeat(99)
        );
        assert_eq!(too_deep(&quoted), None);
        let e = check_text(&"x".repeat(MAX_SPEC_BYTES + 1)).unwrap_err();
        assert!(e.message.contains("at most 1048576 bytes"), "{e}");
    }

    #[test]
    fn non_finite_numbers_are_found_with_their_path() {
        let v: serde_norway::Value =
            serde_norway::from_str("a: [1, { rate: .nan }]\nb: { c: -.inf, d: 1.5 }\n").unwrap();
        let errs: Vec<String> = non_finite(&v).iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errs,
            [
                "a[1].rate: expected a finite number, got .nan",
                "b.c: expected a finite number, got -.inf"
            ]
        );
    }

    #[test]
    fn serde_messages_are_reworded_in_the_path_message_shape() {
        let e = serde_error(
            "checkpoint.interval",
            "checkpoint.interval: expected a duration",
        );
        assert_eq!(e.to_string(), "checkpoint.interval: expected a duration");
        let e = serde_error("sinks[0]", "missing field `path`");
        assert_eq!(e.to_string(), "sinks[0].path: required, but missing");
        let e = serde_error(
            "sinks[0]",
            "unknown field `colour`, expected one of `a`, `b`",
        );
        assert_eq!(
            e.to_string(),
            "sinks[0].colour: unknown field, expected one of `a`, `b`"
        );
        let e = serde_error(".", "missing field `sinks` at line 1 column 1");
        assert_eq!(
            e.to_string(),
            "sinks: required, but missing at line 1 column 1"
        );
        let e = serde_error(
            "sources[0].count",
            "invalid type: integer `99999999999999999999` as u128, expected any value",
        );
        assert_eq!(
            e.to_string(),
            "sources[0].count: 99999999999999999999 is too large; integers range from \
             -9223372036854775808 to 18446744073709551615"
        );
        let e = serde_error(
            "",
            "sources[0].count: invalid type: integer `-99999999999999999999` as i128, expected any YAML value at line 5 column 38",
        );
        assert_eq!(
            e.to_string(),
            "sources[0].count: -99999999999999999999 is too large; integers range from \
             -9223372036854775808 to 18446744073709551615 at line 5 column 38"
        );
        let e = serde_error("parallelism", "invalid value: integer `-1`, expected u32");
        assert_eq!(
            e.to_string(),
            "parallelism: invalid value: integer `-1`, expected a whole number from 0 to 4294967295"
        );
        // A colon inside a message that is not a path is kept.
        let e = serde_error("a", "invalid type: string \"x: y\", expected u8");
        assert_eq!(
            e.message,
            "invalid type: string \"x: y\", expected a whole number from 0 to 255"
        );
    }
}
