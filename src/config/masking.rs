//! `[masking]` from its raw form into typed mask rules: the conversion
//! lives with the config (mask/ knows nothing of the file).

use super::raw::{RawMaskRule, RawMasking};
use super::{ConfigError, Secret};
use crate::mask::rules::{ColumnPattern, MaskConfig, MaskRule};
use crate::mask::strategy::{HashKey, Strategy};
use std::sync::Arc;
use std::time::Duration;

fn err(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        message: message.into(),
    }
}

/// Compiles `[masking]`; `hash_key` is the secret read from the file or
/// environment the section names, if any.
pub fn compile(raw: &RawMasking, hash_key: Option<Secret>) -> Result<MaskConfig, ConfigError> {
    let refresh = match &raw.refresh {
        Some(text) => {
            super::units::parse_duration(text).map_err(|m| err("masking.refresh".into(), m))?
        }
        None => Duration::from_secs(60),
    };
    let catalog_timeout = match &raw.catalog_timeout {
        Some(text) => super::units::parse_duration(text)
            .map_err(|m| err("masking.catalog_timeout".into(), m))?,
        None => Duration::from_secs(10),
    };
    if catalog_timeout.is_zero() {
        return Err(err(
            "masking.catalog_timeout".into(),
            "must be more than 0s",
        ));
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.iter().enumerate() {
        let at = format!("masking.rules[{i}]");
        if rules.iter().any(|x: &MaskRule| *x.name == *r.name) {
            return Err(err(
                format!("{at}.name"),
                format!("\"{}\" is used twice", r.name),
            ));
        }
        rules.push(compile_rule(r, &at, hash_key.is_some())?);
    }
    Ok(MaskConfig {
        rules,
        hash_key: HashKey::new(
            hash_key
                .map(|k| k.expose().as_bytes().to_vec())
                .unwrap_or_default(),
        ),
        refresh,
        catalog_timeout,
        allowed_functions: raw.allowed_functions.iter().cloned().collect(),
    })
}

fn compile_rule(r: &RawMaskRule, at: &str, have_key: bool) -> Result<MaskRule, ConfigError> {
    if r.name.trim().is_empty() {
        return Err(err(format!("{at}.name"), "must not be empty"));
    }
    if r.columns.is_empty() {
        return Err(err(
            format!("{at}.columns"),
            "at least one column pattern is required",
        ));
    }
    let columns = r
        .columns
        .iter()
        .map(|c| {
            ColumnPattern::parse(c).ok_or_else(|| {
                err(
                    format!("{at}.columns"),
                    format!("\"{c}\" is not `column`, `table.column` or `schema.table.column`"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let strategy = match r.strategy.as_str() {
        "redact" => Strategy::Redact(r.replacement.clone().unwrap_or_else(|| "****".into())),
        "null" => Strategy::Null,
        "partial" => {
            let fill = r.fill.as_deref().unwrap_or("*");
            let mut chars = fill.chars();
            let (Some(fill), None) = (chars.next(), chars.next()) else {
                return Err(err(format!("{at}.fill"), "must be exactly one character"));
            };
            Strategy::Partial {
                keep_first: r.keep_first,
                keep_last: r.keep_last,
                fill,
            }
        }
        "email" => Strategy::Email,
        "hash" if !have_key => {
            return Err(err(
                format!("{at}.strategy"),
                "\"hash\" needs masking.hash_key_env or masking.hash_key_file",
            ))
        }
        "hash" => Strategy::Hash,
        "constant" => Strategy::Constant(
            r.value
                .clone()
                .ok_or_else(|| err(format!("{at}.value"), "required for the constant strategy"))?,
        ),
        other => {
            return Err(err(
                format!("{at}.strategy"),
                format!("\"{other}\" is not one of redact, null, partial, email, hash, constant"),
            ))
        }
    };
    Ok(MaskRule {
        name: Arc::from(r.name.as_str()),
        columns,
        strategy: Arc::new(strategy),
        users: r.users.clone(),
        groups: r.groups.clone(),
        exempt_users: r.exempt_users.clone(),
        exempt_groups: r.exempt_groups.clone(),
    })
}
