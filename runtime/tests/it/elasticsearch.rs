//! The `elasticsearch` sink against a real OpenSearch 2 node (e2e/services/opensearch.sh): kill -9
//! at every checkpoint step and at random moments, 429 storms (injected by a proxy, and real
//! ones from a node with a one-thread write pool), a node stopped for 20 s, poison documents
//! under every `on_error` policy, credentials, HTTPS with the cluster's CA, and bad settings;
//! and the core cases against an OpenSearch 3 node. The index is read back with plain REST
//! calls (scroll), independently of the sink.
#![cfg(feature = "elasticsearch")]

mod opensearch;
mod proxy;

mod auth;
mod crashes;
mod errors;
mod major3;
mod outage;
mod overload;
mod tls;
