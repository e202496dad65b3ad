use crate::api::{ConnectorConfig, NodeConfig};
use crate::error::Result;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlackholeConfig {}

/// No settings: an unknown one is an error.
impl ConnectorConfig for BlackholeConfig {
    type Settings = ();

    fn resolve(self, _cfg: &NodeConfig) -> Result<()> {
        Ok(())
    }
}
