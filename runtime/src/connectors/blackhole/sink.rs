use async_trait::async_trait;

use crate::api::{Batch, NodeContext, Result, Sink};

pub(super) struct Blackhole;

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
