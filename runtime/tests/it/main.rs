//! Integration tests: the real `weir` binary, real files, real kills.

mod exactly_once;
mod harness;
mod s3;
mod savepoints;
mod spec_errors;
