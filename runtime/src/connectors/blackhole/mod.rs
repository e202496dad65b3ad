//! A sink that counts and drops records: the framework's own ceiling in benchmarks.

use async_trait::async_trait;

use crate::api::{Batch, NodeContext, Result, Sink, SinkBox};
use crate::registry::Registry;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BlackholeConfig {}

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
        let _: BlackholeConfig = cfg.parse()?;
        Ok(SinkBox::plain(Blackhole))
    });
}
