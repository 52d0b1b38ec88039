//! `[admin]`: the admin HTTP listener (metrics, health, sessions, reload).

use super::{field_err, ConfigError};
use serde::Deserialize;
use std::net::SocketAddr;

/// `[admin]` as written. Off unless `enabled = true`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Serve the admin API. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Listen address. Default `"127.0.0.1:9187"` (localhost only).
    #[serde(default)]
    pub listen: Option<String>,
    /// Groups whose identities may use the admin API and console (HTTP
    /// basic with their pgward password). Default `["admin"]`.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

/// `[admin]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Admin groups.
    pub groups: Vec<String>,
}

/// Validates `[admin]`; `None` when it is off.
pub(crate) fn admin_from_raw(raw: &RawAdmin) -> Result<Option<AdminConfig>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let text = raw.listen.as_deref().unwrap_or("127.0.0.1:9187");
    let listen = text.parse().map_err(|_| {
        field_err(
            "admin.listen",
            format!("{text:?} is not an address such as 127.0.0.1:9187"),
        )
    })?;
    let groups = raw.groups.clone().unwrap_or_else(|| vec!["admin".into()]);
    if groups.is_empty() {
        return Err(field_err("admin.groups", "must name at least one group"));
    }
    Ok(Some(AdminConfig { listen, groups }))
}
