//! A sink that counts and drops records: the framework's own ceiling in benchmarks.

use async_trait::async_trait;

use crate::api::{Batch, ConnectorConfig, NodeConfig, NodeContext, Result, Sink, SinkBox};
use crate::registry::Registry;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BlackholeConfig {}

/// No settings: an unknown one is an error.
impl ConnectorConfig for BlackholeConfig {
    type Settings = ();

    fn resolve(self, _cfg: &NodeConfig) -> Result<()> {
        Ok(())
    }
}

struct Blackhole;

#[async_trait]
impl Sink for Blackhole {
    async fn open(&mut self, _ctx: &NodeContext) -> Result<()> {
        Ok(())
    }
    async fn write(&mut self, batch: Batch) -> Result<()> {
        drop(batch);
        Ok(())
    }
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.sink("blackhole", |cfg| {
        cfg.resolve::<BlackholeConfig>()?;
        Ok(SinkBox::plain(Blackhole))
    });
}
