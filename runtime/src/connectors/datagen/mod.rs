//! `datagen`: a deterministic generator. Record `i` is the same whatever the parallelism, restarts
//! or timing, so tests can state the exact expected output.

mod config;
mod generate;
mod source;

pub use config::DatagenConfig;
pub use source::DatagenSource;

use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    r.source("datagen", |cfg| {
        let c: DatagenConfig = cfg.parse()?;
        let gen = generate::Generator::new(&c).map_err(|(field, msg)| cfg.error(&field, msg))?;
        if !(1..=config::SPLITS_LIMIT).contains(&c.splits) {
            return Err(cfg.error(
                "splits",
                format!("must be from 1 to {}", config::SPLITS_LIMIT),
            ));
        }
        if !(1..=config::BATCH_SIZE_LIMIT).contains(&c.batch_size) {
            return Err(cfg.error(
                "batch_size",
                format!("must be from 1 to {}", config::BATCH_SIZE_LIMIT),
            ));
        }
        if c.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err(cfg.error("rate", "must be a positive number of records per second"));
        }
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
