//! Built-in transforms: CEL filter and map/project, and event-time watermarks.

pub mod async_io;
pub mod cel;
mod filter;
mod map;
pub mod preloaded;
pub mod watermark;

use crate::api::Registry;

pub fn register(r: &mut Registry) {
    async_io::register(r);
    filter::register(r);
    map::register(r);
    preloaded::register(r);
    watermark::register(r);
}
