//! `blackhole`: a sink that counts and drops records: the framework's own ceiling in benchmarks.
//!
//! ```yaml
//! sinks:
//!   - name: out
//!     type: blackhole    # no settings
//! ```

mod config;
mod sink;

use self::config::BlackholeConfig;
use self::sink::Blackhole;
use crate::api::{Registry, SinkBox};

pub fn register(r: &mut Registry) {
    r.sink("blackhole", |cfg| {
        cfg.resolve::<BlackholeConfig>()?;
        Ok(SinkBox::plain(Blackhole))
    });
}
