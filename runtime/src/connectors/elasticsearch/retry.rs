//! What a `_bulk` answer means, item by item (pure).
//!
//! A `_bulk` request that reaches the server answers 200 even when items failed: the body says
//! `"errors": true` and each item carries its own status. Reading only the HTTP status is how
//! Vector dropped every item of such a response (vector#140, #2968, #25799: a 429
//! `es_rejected_execution_exception` inside a 200 was never retried), and retrying every failed
//! item is how Flink's Elasticsearch 8 sink retried mapping errors forever (FLINK-35546). So each
//! item is sorted into one of four outcomes:
//! - done: 2xx; a 409 where it means "already there" (`create` of an existing document, or an
//!   external version not newer than the stored one: a replay); a 404 `delete` of a missing one;
//! - retry (only that item, with backoff): 429, 5xx, and the overload or availability errors
//!   some versions report with other statuses (`es_rejected_execution_exception`,
//!   `circuit_breaking_exception`, unavailable shards);
//! - reject (poison, the document's own fault: 400 mapping/parsing errors, 404 missing index
//!   when auto-creation is off, other 4xx): goes to `on_error`, never retried;
//! - fatal (401/403: credentials or a write block, not the document): fails the job whatever
//!   `on_error` says, so a revoked password never turns into skipped documents.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::config::Action;

/// Why an attempt is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// 429 and rejected executions: the server asks for less; the sink lowers its concurrency.
    Overload,
    /// 5xx, unavailable shards, update conflicts with other writers.
    Server,
    /// No answer: connection refused or reset, timeout.
    Transport,
}

impl Cause {
    /// The `status` label of the retry metric.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Overload => "429",
            Cause::Server => "5xx",
            Cause::Transport => "transport",
        }
    }
}

/// What the HTTP status of a whole `_bulk` answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whole {
    /// 200: read the items.
    Items,
    Retry(Cause),
    /// Retrying the same request cannot help; the message says what to change.
    Fatal(String),
}

pub fn classify_status(status: u16, body: &[u8]) -> Whole {
    match status {
        200..=299 => Whole::Items,
        429 => Whole::Retry(Cause::Overload),
        408 => Whole::Retry(Cause::Server),
        501 | 505 => Whole::Fatal(format!(
            "HTTP {status} from _bulk: {}",
            error_summary(body)
        )),
        500..=599 => Whole::Retry(Cause::Server),
        413 => Whole::Fatal(format!(
            "HTTP 413: the request is larger than the server accepts (http.max_content_length); lower max_bytes: {}",
            error_summary(body)
        )),
        401 => Whole::Fatal(format!(
            "HTTP 401: authentication failed; check auth: {}",
            error_summary(body)
        )),
        403 => Whole::Fatal(format!(
            "HTTP 403: not allowed to write; check the user's privileges: {}",
            error_summary(body)
        )),
        _ => Whole::Fatal(format!(
            "HTTP {status} from _bulk: {}",
            error_summary(body)
        )),
    }
}

/// The server's error as `type: reason`, or the start of the text when it is not JSON.
pub fn error_summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Top {
        error: Option<serde_json::Value>,
    }
    if let Ok(Top { error: Some(e) }) = serde_json::from_slice::<Top>(body) {
        if let Ok(err) = serde_json::from_value::<ItemError>(e.clone()) {
            return err.describe();
        }
        if let Some(s) = e.as_str() {
            return s.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}

/// An item's `error` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemError {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub caused_by: Option<Box<ItemError>>,
}

impl ItemError {
    /// `mapper_parsing_exception: failed to parse field [n] … (caused by …)`.
    pub fn describe(&self) -> String {
        let mut s = self.kind.clone();
        if let Some(r) = &self.reason {
            s.push_str(": ");
            s.push_str(r);
        }
        if let Some(c) = &self.caused_by {
            s.push_str(" (caused by ");
            s.push_str(&c.describe());
            s.push(')');
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ItemResult {
    pub status: u16,
    #[serde(default)]
    pub error: Option<ItemError>,
}

/// The query the sink sends with every `_bulk`: only what the classification reads comes back
/// (a few bytes per item instead of index, id, version, shards and sequence numbers).
pub const FILTER_PATH: &str = "errors,items.*.status,items.*.error";

/// The items of a 200 answer, in request order; `None` when `errors` is false (all done).
pub fn parse_items(body: &[u8], expected: usize) -> Result<Option<Vec<ItemResult>>, String> {
    #[derive(Deserialize)]
    struct Head {
        errors: bool,
    }
    #[derive(Deserialize)]
    struct Full {
        #[serde(default)]
        items: Vec<BTreeMap<String, ItemResult>>,
    }
    let head: Head = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable _bulk answer ({e}): {}", error_summary(body)))?;
    if !head.errors {
        return Ok(None);
    }
    let full: Full = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable _bulk items ({e}): {}", error_summary(body)))?;
    if full.items.len() != expected {
        return Err(format!(
            "the _bulk answer has {} items for {expected} actions",
            full.items.len()
        ));
    }
    full.items
        .into_iter()
        .map(|m| {
            m.into_values()
                .next()
                .ok_or_else(|| "an empty item in the _bulk answer".to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    Done,
    Retry(Cause),
    Reject,
    Fatal,
}

/// Errors that mean "not now" whatever status they come with.
const RETRYABLE_TYPES: &[&str] = &[
    "es_rejected_execution_exception",
    "rejected_execution_exception",
    "circuit_breaking_exception",
    "unavailable_shards_exception",
    "no_shard_available_action_exception",
    "primary_missing_action_exception",
    "node_not_connected_exception",
    "node_disconnected_exception",
    "process_cluster_event_timeout_exception",
];

const OVERLOAD_TYPES: &[&str] = &[
    "es_rejected_execution_exception",
    "rejected_execution_exception",
    "circuit_breaking_exception",
];

/// `versioned`: the sink sends external versions, so a 409 is a replay of an older version.
pub fn classify_item(action: Action, versioned: bool, item: &ItemResult) -> ItemOutcome {
    let kind = item.error.as_ref().map(|e| e.kind.as_str());
    match item.status {
        200..=299 => return ItemOutcome::Done,
        404 if action == Action::Delete
            && kind.is_none_or(|k| k != "index_not_found_exception") =>
        {
            return ItemOutcome::Done
        }
        409 if action == Action::Create || versioned => return ItemOutcome::Done,
        409 if action == Action::Update => return ItemOutcome::Retry(Cause::Server),
        _ => {}
    }
    if let Some(k) = kind {
        if OVERLOAD_TYPES.contains(&k) {
            return ItemOutcome::Retry(Cause::Overload);
        }
        if RETRYABLE_TYPES.contains(&k) {
            return ItemOutcome::Retry(Cause::Server);
        }
    }
    match item.status {
        429 => ItemOutcome::Retry(Cause::Overload),
        408 | 500..=599 => ItemOutcome::Retry(Cause::Server),
        401 | 403 => ItemOutcome::Fatal,
        _ => ItemOutcome::Reject,
    }
}

/// Whether a request that got no answer may be sent again: everything but a request that could
/// not be built (a bad URL or header) or a redirect loop.
pub fn is_transient(e: &reqwest::Error) -> bool {
    !(e.is_builder() || e.is_redirect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(status: u16, kind: Option<&str>) -> ItemResult {
        ItemResult {
            status,
            error: kind.map(|k| ItemError {
                kind: k.into(),
                reason: None,
                caused_by: None,
            }),
        }
    }

    #[test]
    fn statuses_of_the_whole_request() {
        assert_eq!(classify_status(200, b""), Whole::Items);
        assert_eq!(classify_status(429, b""), Whole::Retry(Cause::Overload));
        assert_eq!(classify_status(503, b""), Whole::Retry(Cause::Server));
        assert_eq!(
            classify_status(502, b"bad gateway"),
            Whole::Retry(Cause::Server)
        );
        let Whole::Fatal(m) = classify_status(401, br#"{"error":{"type":"security_exception","reason":"missing authentication credentials"},"status":401}"#) else {
            panic!()
        };
        assert!(
            m.contains("check auth")
                && m.contains("security_exception: missing authentication credentials"),
            "{m}"
        );
        let Whole::Fatal(m) = classify_status(413, b"") else {
            panic!()
        };
        assert!(m.contains("max_bytes"), "{m}");
        assert!(matches!(classify_status(400, b"x"), Whole::Fatal(_)));
    }

    #[test]
    fn items_are_sorted_into_done_retry_reject_fatal() {
        use Action::*;
        use ItemOutcome::*;
        let cases = [
            (Index, false, item(201, None), Done),
            (
                Create,
                false,
                item(409, Some("version_conflict_engine_exception")),
                Done,
            ),
            (
                Index,
                true,
                item(409, Some("version_conflict_engine_exception")),
                Done,
            ),
            (
                Index,
                false,
                item(409, Some("version_conflict_engine_exception")),
                Reject,
            ),
            (
                Update,
                false,
                item(409, Some("version_conflict_engine_exception")),
                Retry(Cause::Server),
            ),
            (Delete, false, item(404, None), Done),
            (
                Delete,
                false,
                item(404, Some("index_not_found_exception")),
                Reject,
            ),
            (
                Index,
                false,
                item(404, Some("index_not_found_exception")),
                Reject,
            ),
            (
                Index,
                false,
                item(429, Some("es_rejected_execution_exception")),
                Retry(Cause::Overload),
            ),
            (
                Index,
                false,
                item(500, Some("circuit_breaking_exception")),
                Retry(Cause::Overload),
            ),
            (
                Index,
                false,
                item(503, Some("unavailable_shards_exception")),
                Retry(Cause::Server),
            ),
            (
                Index,
                false,
                item(500, Some("whatever")),
                Retry(Cause::Server),
            ),
            (
                Index,
                false,
                item(400, Some("mapper_parsing_exception")),
                Reject,
            ),
            (
                Index,
                false,
                item(400, Some("document_parsing_exception")),
                Reject,
            ),
            (
                Index,
                false,
                item(400, Some("strict_dynamic_mapping_exception")),
                Reject,
            ),
            (
                Index,
                false,
                item(403, Some("cluster_block_exception")),
                Fatal,
            ),
            (
                Index,
                false,
                item(429, Some("cluster_block_exception")),
                Retry(Cause::Overload),
            ),
        ];
        for (action, versioned, it, want) in cases {
            assert_eq!(
                classify_item(action, versioned, &it),
                want,
                "{action:?} {it:?}"
            );
        }
    }

    #[test]
    fn answers_are_read_item_by_item_only_when_something_failed() {
        assert_eq!(
            parse_items(br#"{"errors":false,"items":[{"index":{"status":201}}]}"#, 1),
            Ok(None)
        );
        let body = br#"{"errors":true,"items":[{"index":{"status":201}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}}]}"#;
        let items = parse_items(body, 2).unwrap().unwrap();
        assert_eq!(items[0], item(201, None));
        assert_eq!(
            items[1].error.as_ref().unwrap().describe(),
            "mapper_parsing_exception: failed to parse field [n] (caused by illegal_argument_exception: For input string: \"x\")"
        );
        assert!(parse_items(body, 3)
            .unwrap_err()
            .contains("2 items for 3 actions"));
        assert!(parse_items(b"<html>", 1).unwrap_err().contains("<html>"));
    }
}
