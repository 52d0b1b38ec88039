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
    /// PEM certificate chain: the admin API speaks HTTPS. Default: none
    /// (plain HTTP).
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for `tls_cert`. Default: none.
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
}

/// `[admin]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Admin groups.
    pub groups: Vec<String>,
    /// HTTPS certificate and key, when TLS is on.
    pub tls: Option<super::TlsFiles>,
}

/// Validates `[admin]`; `None` when it is off.
pub(crate) fn admin_from_raw(
    raw: &RawAdmin,
    base: &std::path::Path,
) -> Result<Option<AdminConfig>, ConfigError> {
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
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => Some(super::TlsFiles {
            cert: super::resolve(base, cert.clone()),
            key: super::resolve(base, key.clone()),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(field_err("admin.tls_key", "tls_cert needs tls_key")),
        (None, Some(_)) => return Err(field_err("admin.tls_cert", "tls_key needs tls_cert")),
    };
    Ok(Some(AdminConfig {
        listen,
        groups,
        tls,
    }))
}
