//! `async_lookup`: enriches each record with the answer of an HTTP, Postgres or Redis lookup,
//! many lookups in flight at once (Flink's async I/O).
//!
//! ```yaml
//! transforms:
//!   - name: enrich
//!     type: async_lookup
//!     mode: ordered              # or unordered: emit as lookups finish, never across a watermark
//!     key: user_id               # field(s) whose values form the request (and cache) key
//!     client: { type: http, url: "http://users/api/{user_id}" }   # or method: post (JSON body)
//!     # client: { type: postgres, url_env: DATABASE_URL, query: "SELECT name FROM users WHERE id = $1" }
//!     # client: { type: redis, url_env: REDIS_URL, command: hgetall, redis_key: "user:{user_id}" }
//!     fields: { user_name: name, tier: plan.tier }   # output field ← response path
//!     timeout: 1s                # per attempt
//!     capacity: 100              # records held at once (backpressure beyond it)
//!     retry: { max_attempts: 3, backoff: 50ms, max_backoff: 1s }   # weir's RetryPolicy
//!     on_timeout: null           # null (emit with null fields) | drop | fail (default)
//!     on_error: drop
//!     cache: { max_entries: 10000, ttl: 60s }
//! ```
//!
//! A key that is not found (HTTP 404, no row, no Redis key) gives null fields; it is not an
//! error. Retries cover timeouts, connection errors and HTTP 5xx/429.
//!
//! # Checkpoints
//! Records held at a barrier (lookup in flight, or finished and waiting for their turn) go into
//! the operator state, spread over key groups; on restore, finished ones are emitted and the
//! others looked up again, in their original order. At the job's last barrier everything is
//! finished and emitted first, since nothing emitted after it would be committed.

mod cache;
mod clients;
pub(crate) mod config;
mod fetch;
mod lookup;
pub(crate) mod mapping;
mod metrics;
mod queue;
mod state;
mod template;

use crate::api::{AsyncTransform, Registry};

pub fn register(r: &mut Registry) {
    r.async_transform("async_lookup", |cfg| {
        let settings = cfg.resolve::<config::AsyncLookupConfig>()?;
        Ok(Box::new(lookup::AsyncLookup::new(settings, cfg.name())) as Box<dyn AsyncTransform>)
    });
}
