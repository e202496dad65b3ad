//! `datagen`: a deterministic generator. Record `i` is the same whatever the parallelism, restarts
//! or timing, so tests can state the exact expected output.

mod config;
mod generate;
mod source;

pub use config::DatagenConfig;
pub use source::DatagenSource;

use crate::api::Registry;

pub fn register(r: &mut Registry) {
    r.source("datagen", |cfg| {
        let (c, gen) = cfg.resolve::<DatagenConfig>()?;
        if cfg.parallelism > c.splits {
            tracing::warn!(
                "{}: {} splits for parallelism {}: some workers will be idle",
                cfg.path,
                c.splits,
                cfg.parallelism
            );
        }
        Ok(Box::new(DatagenSource::new(c, gen)))
    });
}
