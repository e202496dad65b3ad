//! The connectors and transforms compiled into this build. Kept apart from [`Registry`] so that
//! the registry knows no connector and connectors only know the registry.

use crate::registry::Registry;

impl Registry {
    /// Every connector and transform compiled into this build.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        crate::connectors::register(&mut r);
        crate::transforms::register(&mut r);
        r
    }
}
