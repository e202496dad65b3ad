//! `elasticsearch`: a sink that indexes records into Elasticsearch (7, 8, 9) or OpenSearch
//! (1, 2, 3) through the `_bulk` API, over HTTP or HTTPS with reqwest.
//!
//! ```yaml
//! sinks:
//!   - name: search
//!     type: elasticsearch
//!     url: https://es-1:9200,https://es-2:9200   # or hosts: [...]; round-robin with failover
//!     index: orders-{yyyy.MM.dd}        # literal, or {field}, {field|yyyy.MM}, {yyyy.MM.dd} (event time)
//!     id_field: order_id                # or [tenant, order_id] joined by id_delimiter ("_")
//!     action: index                     # index | create | update (doc_as_upsert) | delete
//!     routing_field: tenant
//!     version_field: updated_ms         # with version_type external | external_gte (default)
//!     # data_stream: { timestamp_field: ts }   # or { event_time: true }; action create
//!     max_actions: 1000                 # per _bulk request
//!     max_bytes: 5MiB
//!     interval: 1s                      # longest an action waits
//!     max_in_flight: 4                  # requests in flight (lowered on 429, AIMD)
//!     retry: { backoff: 100ms, max_backoff: 30s, max_attempts: 10 }
//!     auth: { basic: { username: elastic, password: "${env:ES_PASSWORD}" } }   # or api_key, bearer
//!     tls: { ca_file: /etc/es/ca.pem }  # or ca_pem: "${env:ES_CA}"
//!     on_error: { dead_letter: { index: orders-dlq } }   # fail | skip | dead_letter {index | path}
//! ```
//!
//! # Guarantees
//! At every barrier the sink sends what it holds and waits until every action is acknowledged,
//! so a completed checkpoint means every record before it is indexed. With `id_field` a replay
//! after a crash writes the same documents again (effectively exactly-once); with
//! `version_type: external_gte` and a version field an older replay can never overwrite a newer
//! document. Without ids the server picks them, so a replay adds documents again
//! (at-least-once; `weir validate` says so).
//!
//! # Failures
//! A `_bulk` answer is read item by item (`retry.rs`): overloaded, unavailable and 5xx items are
//! retried alone with backoff, documents the server refuses (mapping or parsing errors, a
//! missing index) go to `on_error` and are never retried, 409s that mean "already there" count
//! as written. A request that gets no answer, a 429 or a 5xx is retried whole. Every retry
//! follows the sink's `retry` policy; when it is spent the job fails and restarts from its last
//! checkpoint, so nothing is lost. A 429 halves the number of requests in flight, which grows
//! back by one per round of successful requests (`concurrency.rs`). Credentials are sent as an
//! `Authorization` header marked sensitive and never logged.

pub mod concurrency;
pub mod config;
mod dead_letter;
pub mod index;
mod metrics;
pub mod request_builder;
pub mod retry;
mod service;
mod sink;

use std::collections::HashSet;
use std::sync::Mutex;

pub use config::{ElasticsearchSinkConfig, Settings};
pub use sink::ElasticsearchSink;

use crate::api::{NodeConfig, Registry, SinkBox};

/// What `weir validate` (and `weir run`) say about a sink without ids.
pub fn at_least_once_note(cfg: &NodeConfig, s: &Settings) -> Option<String> {
    s.id_fields.is_empty().then(|| {
        format!(
            "{}: no id_field, so the server picks document ids and a replay after a crash indexes documents again (at-least-once); set id_field for effectively exactly-once",
            cfg.path
        )
    })
}

/// Logs the note once per node path and process (the factory runs for validation and for every
/// worker).
fn note_once(note: String) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(note.clone()) {
        tracing::warn!("{note}");
    }
}

pub fn register(r: &mut Registry) {
    r.sink("elasticsearch", |cfg| {
        let settings = cfg.resolve::<ElasticsearchSinkConfig>()?;
        if let Some(note) = at_least_once_note(cfg, &settings) {
            note_once(note);
        }
        Ok(SinkBox::plain(ElasticsearchSink::new(settings, cfg.name())))
    });
}
