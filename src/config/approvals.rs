//! `[approvals]`: where tickets and grants live, their lifetimes, who
//! approves by default, and the webhooks told of new tickets; and the
//! approval settings of one `require_approval` rule (docs/approvals.md).

use super::{duration, field_err, resolve, ConfigError};
use crate::approvals::model::ApprovalMode;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[approvals]` as written.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// `file` (embedded, the default) or `postgres`.
    #[serde(default)]
    pub store: Option<String>,
    /// The file store's file. Default `"pgward-approvals.jsonl"` next to
    /// the configuration file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The PostgreSQL store: the upstream whose own `user` connection holds
    /// the store's schema. Required with `store = "postgres"`.
    #[serde(default)]
    pub postgres_upstream: Option<String>,
    /// The PostgreSQL store's schema (created and migrated by pgward).
    /// Default `"pgward_approvals"`.
    #[serde(default)]
    pub postgres_schema: Option<String>,
    /// Approver groups of rules that name none, and of
    /// `default_action = "require_approval"`. Default: none.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Break-glass groups of rules that name none. Default: none.
    #[serde(default)]
    pub break_glass: Vec<String>,
    /// How long a ticket waits for a decision. Default `"15m"`.
    #[serde(default)]
    pub pending_lifetime: Option<String>,
    /// How long a held statement waits outside a transaction (at most
    /// `pending_lifetime`). Default `"5m"`.
    #[serde(default)]
    pub hold_timeout: Option<String>,
    /// How long a held statement waits inside a transaction (it holds that
    /// transaction's locks). Default `"60s"`.
    #[serde(default)]
    pub hold_timeout_in_transaction: Option<String>,
    /// How long a ticket-mode approval may be used. Default `"1h"`.
    #[serde(default)]
    pub ticket_validity: Option<String>,
    /// The longest grant. Default `"8h"`.
    #[serde(default)]
    pub max_grant: Option<String>,
    /// The approvals page's URL as approvers reach it, quoted in notices.
    /// Default: derived from `[admin] listen`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Told of every new ticket. Default: none.
    #[serde(default)]
    pub webhooks: Vec<RawWebhook>,
}

/// `[[approvals.webhooks]]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// `http://` or `https://` URL. Required.
    pub url: String,
    /// `json` (pgward's ticket) or `slack` (an incoming-webhook message).
    /// Default `"json"`.
    #[serde(default)]
    pub format: Option<String>,
    /// Time allowed per attempt. Default `"5s"`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Attempts after the first. Default 3.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// Where tickets and grants live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalStoreConfig {
    /// The embedded file store.
    File(PathBuf),
    /// The PostgreSQL store.
    Postgres {
        /// The upstream whose own connection holds it.
        upstream: String,
        /// Its schema.
        schema: String,
    },
}

/// A webhook's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// pgward's ticket as JSON.
    Json,
    /// A Slack incoming-webhook message (`{"text": ...}`).
    Slack,
}

/// `[[approvals.webhooks]]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The URL.
    pub url: String,
    /// Its format.
    pub format: WebhookFormat,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// `[approvals]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalsConfig {
    /// The store.
    pub store: ApprovalStoreConfig,
    /// Default approver groups.
    pub approvers: Vec<String>,
    /// Default break-glass groups.
    pub break_glass: Vec<String>,
    /// A ticket's pending lifetime.
    pub pending_lifetime: Duration,
    /// A hold's deadline outside a transaction.
    pub hold_timeout: Duration,
    /// A hold's deadline inside one.
    pub hold_timeout_in_transaction: Duration,
    /// A ticket-mode approval's validity.
    pub ticket_validity: Duration,
    /// The longest grant.
    pub max_grant: Duration,
    /// The approvals page's URL, when known.
    pub public_url: Option<String>,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for ApprovalsConfig {
    /// `[approvals]` left out: every setting at its documented default
    /// (the file store relative to the working directory, no approvers).
    fn default() -> Self {
        Self {
            store: ApprovalStoreConfig::File(PathBuf::from("pgward-approvals.jsonl")),
            approvers: Vec::new(),
            break_glass: Vec::new(),
            pending_lifetime: Duration::from_secs(15 * 60),
            hold_timeout: Duration::from_secs(5 * 60),
            hold_timeout_in_transaction: Duration::from_secs(60),
            ticket_validity: Duration::from_secs(60 * 60),
            max_grant: Duration::from_secs(8 * 60 * 60),
            public_url: None,
            webhooks: Vec::new(),
        }
    }
}

/// One rule's approval settings, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleApproval {
    /// Hold or ticket.
    pub mode: ApprovalMode,
    /// Approver groups (never empty).
    pub approvers: Vec<String>,
    /// Approvals needed (at least 1).
    pub threshold: u32,
    /// Break-glass groups.
    pub break_glass: Vec<String>,
    /// The hold deadline outside a transaction, when the rule sets one.
    pub hold_timeout: Option<Duration>,
}

/// Validates `[approvals]`.
pub(crate) fn from_raw(
    raw: &RawApprovals,
    base: &Path,
    upstreams: &std::collections::BTreeMap<String, std::sync::Arc<super::UpstreamConfig>>,
    admin: Option<&super::admin::AdminConfig>,
) -> Result<ApprovalsConfig, ConfigError> {
    let store = match raw.store.as_deref().unwrap_or("file") {
        "file" => {
            if raw.postgres_upstream.is_some() || raw.postgres_schema.is_some() {
                return Err(field_err(
                    "approvals.postgres_upstream",
                    "is set but approvals.store is \"file\"",
                ));
            }
            let path = raw
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("pgward-approvals.jsonl"));
            ApprovalStoreConfig::File(resolve(base, path))
        }
        "postgres" => {
            if raw.path.is_some() {
                return Err(field_err(
                    "approvals.path",
                    "is set but approvals.store is \"postgres\"",
                ));
            }
            let upstream = raw.postgres_upstream.clone().ok_or_else(|| {
                field_err(
                    "approvals.postgres_upstream",
                    "is required with store = \"postgres\"",
                )
            })?;
            if !upstreams.contains_key(&upstream) {
                return Err(field_err(
                    "approvals.postgres_upstream",
                    format!("names upstream {upstream:?}, which is not defined"),
                ));
            }
            let schema = raw
                .postgres_schema
                .clone()
                .unwrap_or_else(|| "pgward_approvals".into());
            if schema.is_empty()
                || schema.len() > 63
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                || schema.as_bytes()[0].is_ascii_digit()
                // PostgreSQL reserves pg_ schema names.
                || schema.starts_with("pg_")
            {
                return Err(field_err(
                    "approvals.postgres_schema",
                    format!(
                        "{schema:?} must be a lower-case identifier (a-z, 0-9, _; at most 63), \
                         not starting with pg_"
                    ),
                ));
            }
            ApprovalStoreConfig::Postgres { upstream, schema }
        }
        other => {
            return Err(field_err(
                "approvals.store",
                format!("{other:?} is not one of file, postgres"),
            ))
        }
    };
    let pending_lifetime = positive(
        raw.pending_lifetime.as_deref(),
        "approvals.pending_lifetime",
        "15m",
    )?;
    let hold_timeout = positive(raw.hold_timeout.as_deref(), "approvals.hold_timeout", "5m")?;
    if hold_timeout > pending_lifetime {
        return Err(field_err(
            "approvals.hold_timeout",
            "is longer than approvals.pending_lifetime",
        ));
    }
    let hold_timeout_in_transaction = positive(
        raw.hold_timeout_in_transaction.as_deref(),
        "approvals.hold_timeout_in_transaction",
        "60s",
    )?;
    let ticket_validity = positive(
        raw.ticket_validity.as_deref(),
        "approvals.ticket_validity",
        "1h",
    )?;
    let max_grant = positive(raw.max_grant.as_deref(), "approvals.max_grant", "8h")?;
    let public_url = match &raw.public_url {
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(field_err(
                    "approvals.public_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            Some(url.trim_end_matches('/').to_owned())
        }
        None => admin.map(|a| {
            let scheme = if a.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}/approvals", a.listen)
        }),
    };
    let mut webhooks = Vec::new();
    for (i, w) in raw.webhooks.iter().enumerate() {
        let at = format!("approvals.webhooks[{i}]");
        // Checked as the webhook task will use it, so it fails here.
        crate::http_client::Url::parse(&w.url).map_err(|m| field_err(format!("{at}.url"), m))?;
        let format = match w.format.as_deref().unwrap_or("json") {
            "json" => WebhookFormat::Json,
            "slack" => WebhookFormat::Slack,
            other => {
                return Err(field_err(
                    format!("{at}.format"),
                    format!("{other:?} is not one of json, slack"),
                ))
            }
        };
        let timeout = positive(w.timeout.as_deref(), &format!("{at}.timeout"), "5s")?;
        let retries = w.retries.unwrap_or(3);
        if retries > 20 {
            return Err(field_err(format!("{at}.retries"), "is more than 20"));
        }
        webhooks.push(WebhookConfig {
            url: w.url.clone(),
            format,
            timeout,
            retries,
        });
    }
    Ok(ApprovalsConfig {
        store,
        approvers: raw.approvers.clone(),
        break_glass: raw.break_glass.clone(),
        pending_lifetime,
        hold_timeout,
        hold_timeout_in_transaction,
        ticket_validity,
        max_grant,
        public_url,
        webhooks,
    })
}

/// A duration above zero, or `default`.
fn positive(text: Option<&str>, field: &str, default: &str) -> Result<Duration, ConfigError> {
    let d = duration(field, text.unwrap_or(default))?;
    if d.is_zero() {
        return Err(field_err(field, "must be more than zero"));
    }
    Ok(d)
}

/// Validates one `require_approval` rule's settings (`at` names the rule
/// for errors), with the section's defaults.
pub(crate) fn rule_from_raw(
    raw: &super::raw::RawRule,
    at: &str,
    defaults: &ApprovalsConfig,
) -> Result<RuleApproval, ConfigError> {
    let mode = match raw.approval_mode.as_deref().unwrap_or("hold") {
        "hold" => ApprovalMode::Hold,
        "ticket" => ApprovalMode::Ticket,
        other => {
            return Err(field_err(
                format!("{at}.approval_mode"),
                format!("{other:?} is not one of hold, ticket"),
            ))
        }
    };
    let approvers = if raw.approvers.is_empty() {
        defaults.approvers.clone()
    } else {
        raw.approvers.clone()
    };
    if approvers.is_empty() {
        return Err(field_err(
            format!("{at}.approvers"),
            "no approver groups: name them here or in [approvals] approvers",
        ));
    }
    let threshold = raw.approvals_required.unwrap_or(1);
    if threshold == 0 || threshold > 16 {
        return Err(field_err(
            format!("{at}.approvals_required"),
            "must be between 1 and 16",
        ));
    }
    let break_glass = if raw.break_glass.is_empty() {
        defaults.break_glass.clone()
    } else {
        raw.break_glass.clone()
    };
    let hold_timeout = match &raw.hold_timeout {
        Some(t) => {
            let field = format!("{at}.hold_timeout");
            let d = positive(Some(t), &field, "")?;
            if d > defaults.pending_lifetime {
                return Err(field_err(
                    field,
                    "is longer than approvals.pending_lifetime",
                ));
            }
            Some(d)
        }
        None => None,
    };
    Ok(RuleApproval {
        mode,
        approvers,
        threshold,
        break_glass,
        hold_timeout,
    })
}
