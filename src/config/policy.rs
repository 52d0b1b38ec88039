//! Turns the `[policy]` section into a [`RuleSet`], checking every field up
//! front; errors name the field, e.g. `policy.rules[2].kinds: "dropp" is not
//! a statement kind`.

use super::approvals::{rule_from_raw, ApprovalsConfig, RuleApproval};
use super::raw::{RawPolicy, RawRule, RawRuleFile};
use super::ConfigError;
use crate::approvals::model::ApprovalMode;
use crate::policy::called::Freshness;
use crate::policy::kind::Kind;
use crate::policy::rules::{Action, DefaultAction, NamePattern, Rule, RuleSet};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The built-in rules, shipped inside the binary.
const BUILTIN: &str = include_str!("../policy/builtin_rules.toml");

fn err(field: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        message: message.into(),
    }
}

/// Compiles `[policy]` with `[approvals]` at its defaults (tests and
/// benches; the configuration uses [`compile_with`]).
pub fn compile(raw: &RawPolicy) -> Result<RuleSet, ConfigError> {
    compile_with(raw, &ApprovalsConfig::default())
}

/// Compiles `[policy]`; `require_approval` rules (and the default action)
/// take their approval settings from the rule and `approvals`.
pub fn compile_with(raw: &RawPolicy, approvals: &ApprovalsConfig) -> Result<RuleSet, ConfigError> {
    let default_action = match raw.default_action.as_str() {
        "allow" => DefaultAction::Allow,
        "deny" => DefaultAction::Deny,
        "require_approval" => DefaultAction::RequireApproval,
        other => {
            return Err(err(
                "policy.default_action".into(),
                format!("\"{other}\" is not one of allow, deny, require_approval"),
            ))
        }
    };
    let default_approval = if default_action == DefaultAction::RequireApproval {
        if approvals.approvers.is_empty() {
            return Err(err(
                "policy.default_action".into(),
                "is \"require_approval\" but [approvals] approvers names no group",
            ));
        }
        Some(Arc::new(RuleApproval {
            mode: ApprovalMode::Hold,
            approvers: approvals.approvers.clone(),
            threshold: 1,
            break_glass: approvals.break_glass.clone(),
            hold_timeout: None,
        }))
    } else {
        None
    };
    if raw.cache_size == 0 {
        return Err(err("policy.cache_size".into(), "must be at least 1"));
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut names = BTreeSet::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let rule = compile_rule(r, &format!("policy.rules[{i}]"), approvals)?;
        if !names.insert(rule.name.clone()) {
            return Err(err(
                format!("policy.rules[{i}].name"),
                format!("\"{}\" is used twice", rule.name),
            ));
        }
        rules.push(rule);
    }
    if raw.builtin_rules {
        rules.extend(builtin_rules()?);
    }
    let called_code = called_code(raw)?;
    let mut search_path = vec!["pg_catalog".to_owned()];
    search_path.extend(raw.search_path.iter().cloned());
    Ok(RuleSet {
        rules,
        default_action,
        default_approval,
        search_path,
        cache_size: raw.cache_size,
        called_code,
    })
}

/// `policy.called_code`, `catalog_refresh` and `catalog_timeout`.
fn called_code(raw: &RawPolicy) -> Result<Option<Freshness>, ConfigError> {
    let duration = |field: &str, value: &Option<String>, default: Duration| match value {
        Some(text) => {
            let d = super::units::parse_duration(text)
                .map_err(|m| err(format!("policy.{field}"), m))?;
            if d.is_zero() {
                return Err(err(format!("policy.{field}"), "must be more than 0s"));
            }
            Ok(d)
        }
        None => Ok(default),
    };
    let refresh = duration(
        "catalog_refresh",
        &raw.catalog_refresh,
        Duration::from_secs(60),
    )?;
    let timeout = duration(
        "catalog_timeout",
        &raw.catalog_timeout,
        Duration::from_secs(10),
    )?;
    Ok(raw.called_code.then_some(Freshness { refresh, timeout }))
}

/// The built-in rules (docs/policy.md lists them).
pub fn builtin_rules() -> Result<Vec<Rule>, ConfigError> {
    let file: RawRuleFile = toml::from_str(BUILTIN).map_err(|e| {
        err(
            "policy.builtin_rules".into(),
            format!("built-in rules: {e}"),
        )
    })?;
    file.rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            compile_rule(
                r,
                &format!("built-in rules[{i}]"),
                &ApprovalsConfig::default(),
            )
        })
        .collect()
}

fn compile_rule(r: &RawRule, at: &str, approvals: &ApprovalsConfig) -> Result<Rule, ConfigError> {
    if r.name.trim().is_empty() {
        return Err(err(format!("{at}.name"), "must not be empty"));
    }
    let action = Action::parse(&r.action).ok_or_else(|| {
        err(
            format!("{at}.action"),
            format!(
                "\"{}\" is not one of allow, deny, require_approval, log",
                r.action
            ),
        )
    })?;
    let kinds = if r.kinds.is_empty() {
        None
    } else {
        let mut set = BTreeSet::new();
        for k in &r.kinds {
            let resolved = Kind::resolve(k).ok_or_else(|| {
                err(
                    format!("{at}.kinds"),
                    format!("\"{k}\" is not a statement kind or family (see docs/policy.md)"),
                )
            })?;
            set.extend(resolved);
        }
        Some(set)
    };
    let patterns = |list: &[String], field: &str| {
        list.iter()
            .map(|p| {
                NamePattern::parse(p).ok_or_else(|| {
                    err(
                        format!("{at}.{field}"),
                        format!("\"{p}\" is not `name` or `schema.name`"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let text = r
        .text_regex
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| err(format!("{at}.text_regex"), e.to_string()))?;
    let approval = if action == Action::RequireApproval {
        Some(Arc::new(rule_from_raw(r, at, approvals)?))
    } else {
        for (set, field) in [
            (r.approval_mode.is_some(), "approval_mode"),
            (!r.approvers.is_empty(), "approvers"),
            (r.approvals_required.is_some(), "approvals_required"),
            (!r.break_glass.is_empty(), "break_glass"),
            (r.hold_timeout.is_some(), "hold_timeout"),
        ] {
            if set {
                return Err(err(
                    format!("{at}.{field}"),
                    format!("is for require_approval rules; this one is {}", r.action),
                ));
            }
        }
        None
    };
    Ok(Rule {
        approval,
        name: Arc::from(r.name.as_str()),
        action,
        message: r.message.clone(),
        hint: r.hint.clone(),
        users: r.users.clone(),
        groups: r.groups.clone(),
        kinds,
        relations: patterns(&r.relations, "relations")?,
        functions: patterns(&r.functions, "functions")?,
        settings: r.settings.clone(),
        without_where: r.without_where,
        text,
    })
}
