//! `[audit]`: the audit trail (docs/audit.md), raw and typed.

use super::{field_err, resolve, secret_from, units, ConfigError, Secret};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[audit]` as written. Off unless `enabled = true`.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Record every statement and session. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// `file` (JSON Lines files in `directory`), `stdout`, or `postgres` (a
    /// table on one of the upstreams). Default `"file"`.
    #[serde(default)]
    pub sink: Option<String>,
    /// Directory of the audit files (file sink). Default `"audit"`, relative
    /// to the config file.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// `postgres` sink: the upstream (its database and credentials) that
    /// holds the table. Required for `postgres`.
    #[serde(default)]
    pub postgres_upstream: Option<String>,
    /// `postgres` sink: the table (created if missing). Default
    /// `"pgward_audit"`.
    #[serde(default)]
    pub table: Option<String>,
    /// `postgres` sink: this instance's name; each instance keeps its own
    /// chain in the table. Required for `postgres`.
    #[serde(default)]
    pub instance: Option<String>,
    /// Ed25519 private key (`pgward audit keygen`) that signs checkpoints.
    /// Required with the file sink; optional with stdout.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Bind parameters: `redacted`, `full` or `hash` (HMAC-SHA256). Default
    /// `"redacted"`.
    #[serde(default)]
    pub parameters: Option<String>,
    /// Environment variable holding the HMAC key for `parameters = "hash"`.
    /// Default: none.
    #[serde(default)]
    pub parameter_key_env: Option<String>,
    /// File holding the HMAC key for `parameters = "hash"`. Default: none.
    #[serde(default)]
    pub parameter_key_file: Option<PathBuf>,
    /// How often a signed checkpoint is written. Default `"60s"`.
    #[serde(default)]
    pub checkpoint_interval: Option<String>,
    /// A file is closed and a new one started past this size. Default
    /// `"64MiB"`.
    #[serde(default)]
    pub rotate_size: Option<String>,
    /// ... and past this age (`"0"`: never). Default `"24h"`.
    #[serde(default)]
    pub rotate_interval: Option<String>,
    /// Files kept, the newest; older ones are deleted at rotation (`0`: keep
    /// all). Default 30.
    #[serde(default)]
    pub retain_files: Option<usize>,
    /// Records waiting for the writer, at most. Default 10000.
    #[serde(default)]
    pub queue_capacity: Option<usize>,
    /// When the queue is full: `auto` (fail closed for identities under
    /// masking or approval rules, shed for the others), `fail_closed` or
    /// `shed`. Default `"auto"`.
    #[serde(default)]
    pub on_full: Option<String>,
    /// Groups whose statements wait for room (then are refused) when the
    /// queue is full, whatever `on_full` says. Default: none.
    #[serde(default)]
    pub fail_closed_groups: Vec<String>,
    /// Groups whose records are dropped (and counted) when the queue is
    /// full, unless also in `fail_closed_groups`. Default: none.
    #[serde(default)]
    pub shed_groups: Vec<String>,
    /// How long a fail-closed statement waits for room before it is refused.
    /// Default `"5s"`.
    #[serde(default)]
    pub full_timeout: Option<String>,
    /// Groups whose sessions are also recorded as the client saw them (for
    /// `pgward replay`). Default: none.
    #[serde(default)]
    pub record_groups: Vec<String>,
    /// Directory of session recordings. Default `"recordings"`, relative to
    /// the config file.
    #[serde(default)]
    pub recordings_directory: Option<PathBuf>,
    /// Most bytes sent to the client recorded per session; past it the
    /// recording is marked truncated. Default `"16MiB"`.
    #[serde(default)]
    pub record_max_bytes: Option<String>,
}

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// JSON Lines files in this directory, rotated and retained.
    Files(PathBuf),
    /// Standard output, one record a line.
    Stdout,
    /// A table on an upstream, one row a line, one chain per instance.
    Postgres {
        /// The upstream's name.
        upstream: String,
        /// The table.
        table: String,
        /// This instance's name.
        instance: String,
    },
}

/// How Bind parameters are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterMode {
    /// Only whether each is NULL.
    Redacted,
    /// In clear, except where they may bind to a masked column (then
    /// hashed with a key, else redacted).
    Full,
    /// HMAC-SHA256 of the value under a key: equal values compare equal.
    Hash,
}

/// What happens to an identity's records when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Fail closed for identities under masking or approval rules.
    Auto,
    /// Statements wait for room, then are refused.
    FailClosed,
    /// Records are dropped and counted.
    Shed,
}

/// `[audit]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Where records go.
    pub sink: AuditSink,
    /// The checkpoint signing key file.
    pub signing_key_file: Option<PathBuf>,
    /// Bind parameters.
    pub parameters: ParameterMode,
    /// The HMAC key for hashed parameters.
    pub parameter_key: Option<Secret>,
    /// Signed checkpoint interval.
    pub checkpoint_interval: Duration,
    /// Rotation size.
    pub rotate_size: u64,
    /// Rotation age; `None`: never.
    pub rotate_interval: Option<Duration>,
    /// Files kept; `None`: all.
    pub retain_files: Option<usize>,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// The default when the queue is full.
    pub on_full: OnFull,
    /// Groups that fail closed.
    pub fail_closed_groups: Vec<String>,
    /// Groups that shed.
    pub shed_groups: Vec<String>,
    /// How long a fail-closed statement waits.
    pub full_timeout: Duration,
    /// Groups whose sessions are recorded.
    pub record_groups: Vec<String>,
    /// Where recordings go.
    pub recordings_directory: PathBuf,
    /// Recording cap per session.
    pub record_max_bytes: u64,
}

fn dur(field: &str, text: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    units::parse_duration(text.unwrap_or(default)).map_err(|m| field_err(field, m))
}

/// Validates `[audit]`; `None` when it is off.
pub(crate) fn audit_from_raw(
    raw: &RawAudit,
    base: &Path,
) -> Result<Option<AuditConfig>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let sink = match raw.sink.as_deref().unwrap_or("file") {
        "file" => AuditSink::Files(resolve(
            base,
            raw.directory.clone().unwrap_or_else(|| "audit".into()),
        )),
        "stdout" => AuditSink::Stdout,
        "postgres" => {
            let upstream = raw.postgres_upstream.clone().ok_or_else(|| {
                field_err(
                    "audit.postgres_upstream",
                    "required with sink = \"postgres\"",
                )
            })?;
            let table = raw.table.clone().unwrap_or_else(|| "pgward_audit".into());
            let plain = |s: &str| {
                !s.is_empty()
                    && s.len() <= 63
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !s.as_bytes()[0].is_ascii_digit()
            };
            if !plain(&table) {
                return Err(field_err(
                    "audit.table",
                    "must be a plain lower-case name (letters, digits, _), at most 63 bytes",
                ));
            }
            let instance = raw
                .instance
                .clone()
                .filter(|i| !i.is_empty())
                .ok_or_else(|| field_err("audit.instance", "required with sink = \"postgres\""))?;
            AuditSink::Postgres {
                upstream,
                table,
                instance,
            }
        }
        other => {
            return Err(field_err(
                "audit.sink",
                format!("{other:?} is not one of file, stdout, postgres"),
            ))
        }
    };
    let signing_key_file = raw.signing_key_file.clone().map(|p| resolve(base, p));
    if signing_key_file.is_none() && !matches!(sink, AuditSink::Stdout) {
        return Err(field_err(
            "audit.signing_key_file",
            "required with the file and postgres sinks (make one with `pgward audit keygen`)",
        ));
    }
    let parameters = match raw.parameters.as_deref().unwrap_or("redacted") {
        "redacted" => ParameterMode::Redacted,
        "full" => ParameterMode::Full,
        "hash" => ParameterMode::Hash,
        other => {
            return Err(field_err(
                "audit.parameters",
                format!("{other:?} is not one of redacted, full, hash"),
            ))
        }
    };
    let parameter_key = secret_from(
        raw.parameter_key_env.clone(),
        raw.parameter_key_file.clone(),
        base,
        "audit.parameter_key_env",
        "audit.parameter_key_file",
    )?;
    if parameters == ParameterMode::Hash
        && parameter_key.as_ref().is_none_or(|k| k.expose().is_empty())
    {
        return Err(field_err(
            "audit.parameters",
            "\"hash\" needs parameter_key_env or parameter_key_file",
        ));
    }
    let checkpoint_interval = dur(
        "audit.checkpoint_interval",
        raw.checkpoint_interval.as_deref(),
        "60s",
    )?;
    if checkpoint_interval.is_zero() {
        return Err(field_err(
            "audit.checkpoint_interval",
            "must be more than 0",
        ));
    }
    let rotate_size = units::parse_size(raw.rotate_size.as_deref().unwrap_or("64MiB"))
        .map_err(|m| field_err("audit.rotate_size", m))?;
    if rotate_size < 4096 {
        return Err(field_err("audit.rotate_size", "must be at least 4KiB"));
    }
    let rotate_interval = dur(
        "audit.rotate_interval",
        raw.rotate_interval.as_deref(),
        "24h",
    )?;
    let queue_capacity = raw.queue_capacity.unwrap_or(10_000);
    if !(1..=10_000_000).contains(&queue_capacity) {
        return Err(field_err(
            "audit.queue_capacity",
            "must be between 1 and 10000000",
        ));
    }
    let on_full = match raw.on_full.as_deref().unwrap_or("auto") {
        "auto" => OnFull::Auto,
        "fail_closed" => OnFull::FailClosed,
        "shed" => OnFull::Shed,
        other => {
            return Err(field_err(
                "audit.on_full",
                format!("{other:?} is not one of auto, fail_closed, shed"),
            ))
        }
    };
    Ok(Some(AuditConfig {
        sink,
        signing_key_file,
        parameters,
        parameter_key,
        checkpoint_interval,
        rotate_size: rotate_size as u64,
        rotate_interval: (!rotate_interval.is_zero()).then_some(rotate_interval),
        retain_files: match raw.retain_files.unwrap_or(30) {
            0 => None,
            n => Some(n),
        },
        queue_capacity,
        on_full,
        fail_closed_groups: raw.fail_closed_groups.clone(),
        shed_groups: raw.shed_groups.clone(),
        full_timeout: dur("audit.full_timeout", raw.full_timeout.as_deref(), "5s")?,
        record_groups: raw.record_groups.clone(),
        recordings_directory: resolve(
            base,
            raw.recordings_directory
                .clone()
                .unwrap_or_else(|| "recordings".into()),
        ),
        record_max_bytes: {
            let n = units::parse_size(raw.record_max_bytes.as_deref().unwrap_or("16MiB"))
                .map_err(|m| field_err("audit.record_max_bytes", m))?;
            if n < 1024 {
                return Err(field_err("audit.record_max_bytes", "must be at least 1KiB"));
            }
            n as u64
        },
    }))
}
