//! (filled in by the connector's tests)
