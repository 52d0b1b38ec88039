//! Mask rules, typed: column patterns, a strategy, and who they apply to.

use super::strategy::{HashKey, Strategy};
use crate::config::raw::{RawMaskRule, RawMasking};
use crate::config::{ConfigError, Secret};
use crate::policy::rules::{Glob, Identity};
use std::sync::Arc;
use std::time::Duration;

/// `schema.table.column`, each part a glob; missing parts are `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    /// Schema part.
    pub schema: Glob,
    /// Table part.
    pub table: Glob,
    /// Column part.
    pub column: Glob,
}

impl ColumnPattern {
    /// Parses `column`, `table.column` or `schema.table.column`.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let any = || Glob::new("*");
        Some(match parts.as_slice() {
            [c] => Self {
                schema: any(),
                table: any(),
                column: Glob::new(c),
            },
            [t, c] => Self {
                schema: any(),
                table: Glob::new(t),
                column: Glob::new(c),
            },
            [s, t, c] => Self {
                schema: Glob::new(s),
                table: Glob::new(t),
                column: Glob::new(c),
            },
            _ => return None,
        })
    }

    /// Whether the pattern covers this column.
    pub fn covers(&self, schema: &str, table: &str, column: &str) -> bool {
        self.schema.matches(schema) && self.table.matches(table) && self.column.matches(column)
    }
}

/// One compiled mask rule.
#[derive(Debug, Clone)]
pub struct MaskRule {
    /// Its name.
    pub name: Arc<str>,
    /// Columns it covers.
    pub columns: Vec<ColumnPattern>,
    /// What masked values become.
    pub strategy: Arc<Strategy>,
    users: Vec<String>,
    groups: Vec<String>,
    exempt_users: Vec<String>,
    exempt_groups: Vec<String>,
}

impl MaskRule {
    /// Whether `who` sees this rule's columns masked.
    pub fn applies_to(&self, who: &Identity) -> bool {
        let listed = (self.users.is_empty() && self.groups.is_empty())
            || self.users.contains(&who.user)
            || self.groups.iter().any(|g| who.groups.contains(g));
        let exempt = self.exempt_users.contains(&who.user)
            || self.exempt_groups.iter().any(|g| who.groups.contains(g));
        listed && !exempt
    }
}

/// `[masking]`, typed.
#[derive(Debug, Clone, Default)]
pub struct MaskConfig {
    /// Rules, in order.
    pub rules: Vec<MaskRule>,
    /// Key of the `hash` strategy.
    pub hash_key: HashKey,
    /// Catalog re-read interval.
    pub refresh: Duration,
    /// Deadline for reading the column map (login and catalog queries).
    pub catalog_timeout: Duration,
    /// Functions outside pg_catalog masked identities may call.
    pub allowed_functions: std::collections::BTreeSet<String>,
}

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
        Some(text) => crate::config::units::parse_duration(text)
            .map_err(|m| err("masking.refresh".into(), m))?,
        None => Duration::from_secs(60),
    };
    let catalog_timeout = match &raw.catalog_timeout {
        Some(text) => crate::config::units::parse_duration(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).into()).collect(),
            index: 0,
        }
    }

    #[test]
    fn patterns_and_audiences() {
        let p = ColumnPattern::parse("email").unwrap();
        assert!(p.covers("public", "customers", "email"));
        assert!(p.covers("crm", "leads", "email"));
        let p = ColumnPattern::parse("public.customers.ssn").unwrap();
        assert!(!p.covers("other", "customers", "ssn"));
        assert!(ColumnPattern::parse("a.b.c.d").is_none());
        assert!(ColumnPattern::parse("a..c").is_none());

        let raw: RawMasking = toml::from_str(
            r#"
            [[rules]]
            name = "ssn"
            columns = ["customers.ssn"]
            strategy = "partial"
            keep_last = 4
            groups = ["support"]
            exempt_users = ["boss"]
            "#,
        )
        .unwrap();
        let c = compile(&raw, None).unwrap();
        let r = &c.rules[0];
        assert!(r.applies_to(&who("alice", &["support"])));
        assert!(!r.applies_to(&who("boss", &["support"])));
        assert!(!r.applies_to(&who("dba", &["dba"])));
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            (
                "[[rules]]\nname = \"a\"\ncolumns = []\nstrategy = \"null\"",
                "masking.rules[0].columns",
            ),
            (
                "[[rules]]\nname = \"a\"\ncolumns = [\"x\"]\nstrategy = \"blur\"",
                "masking.rules[0].strategy",
            ),
            (
                "[[rules]]\nname = \"a\"\ncolumns = [\"x\"]\nstrategy = \"hash\"",
                "masking.rules[0].strategy",
            ),
            (
                "[[rules]]\nname = \"a\"\ncolumns = [\"x\"]\nstrategy = \"constant\"",
                "masking.rules[0].value",
            ),
            (
                "[[rules]]\nname = \"a\"\ncolumns = [\"x\"]\nstrategy = \"partial\"\nfill = \"ab\"",
                "masking.rules[0].fill",
            ),
            ("refresh = \"soon\"", "masking.refresh"),
        ] {
            let raw: RawMasking = toml::from_str(text).unwrap();
            let e = compile(&raw, None).unwrap_err().to_string();
            assert!(e.starts_with(field), "{text}: {e}");
        }
    }
}
