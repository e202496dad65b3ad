//! The registry the `weir` command runs with: every connector and transform compiled into this
//! build. The [`Registry`] type itself is in [`crate::api::registry`], below the engine and the
//! connectors (which register into it), so that this module is the only one that knows every
//! connector, and nothing below it imports it back.

pub use crate::api::registry::*;

impl Registry {
    /// Every connector and transform compiled into this build.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        crate::connectors::register(&mut r);
        crate::transforms::register(&mut r);
        r
    }
}
