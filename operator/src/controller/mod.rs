//! The controllers: StreamJob and Connector reconcilers and the loop that runs them.

pub mod connector;
pub mod run;
pub mod stream_job;
