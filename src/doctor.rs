//! `pgward doctor`: logs in to every upstream as every mapped role, checks
//! each against the least-privilege conditions (`crate::privileges`), and
//! says per identity what its role can do, a verdict, and the statements
//! that fix each finding.

use crate::config::roles::LeastPrivilege;
use crate::config::{Config, CATCH_ALL_DATABASE};
use crate::gateway::Gateway;
use crate::policy::rules::Identity;
use crate::privileges::Report;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

/// How one identity stands on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The role passes every condition.
    Pass,
    /// The role fails a condition, and the identity is not refused for it
    /// (no masked columns, not strict): a warning.
    Warn,
    /// The role fails a condition and the identity is refused at login.
    Fail,
    /// No role is mapped: refused at login.
    Unmapped,
    /// The role could not be checked (login or catalog failed).
    Error,
}

/// One identity on one database.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityReport {
    /// The pgward user.
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The client database name.
    pub database: String,
    /// The upstream it leads to.
    pub upstream: String,
    /// The role it logs in as, if mapped.
    pub role: Option<String>,
    /// Whether any of its columns are masked.
    pub masked: bool,
    /// The verdict.
    pub verdict: Verdict,
}

/// One mapped role on one upstream.
#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    /// The upstream.
    pub upstream: String,
    /// The role.
    pub role: String,
    /// What the check found (absent when it could not run).
    pub report: Option<Report>,
    /// Why the role could not be checked.
    pub error: Option<String>,
}

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// Per identity and database.
    pub identities: Vec<IdentityReport>,
    /// Per (upstream, role).
    pub roles: Vec<RoleReport>,
}

impl Diagnosis {
    /// Whether a refused identity's role fails (the exit status).
    pub fn failed(&self) -> bool {
        self.identities
            .iter()
            .any(|i| matches!(i.verdict, Verdict::Fail | Verdict::Error))
    }

    /// The fix statements of every finding of (upstream, role), in order.
    pub fn fixes(&self, upstream: &str, role: &str) -> Vec<String> {
        self.roles
            .iter()
            .filter(|r| r.upstream == upstream && r.role == role)
            .filter_map(|r| r.report.as_ref())
            .flat_map(|r| r.findings.iter().flat_map(|f| f.fixes.clone()))
            .collect()
    }
}

/// Diagnoses every identity of `config` on every database it may open.
pub async fn diagnose(config: Config) -> Result<Diagnosis, crate::gateway::GatewayError> {
    let gw = Gateway::new(config)?;
    let masking = gw.rules.load().masking.clone();
    // (upstream, role) -> whether some identity acting as it is refused
    // when it fails.
    let mut roles: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut identities = Vec::new();
    for (name, user) in &gw.config.users {
        let identity = Identity::new(name.clone(), user.groups.clone());
        let masked = masking.rules.iter().any(|r| r.applies_to(&identity));
        let databases: Vec<&String> = if user.databases.is_empty() {
            gw.config
                .databases
                .keys()
                .filter(|d| *d != CATCH_ALL_DATABASE)
                .collect()
        } else {
            user.databases.iter().collect()
        };
        for database in databases {
            let Some(route) = gw.config.route(database) else {
                continue;
            };
            let upstream = &gw.config.upstreams[route.upstream];
            let explicit = user.roles.get(route.upstream).map(String::as_str);
            let role = upstream
                .roles
                .role_for(name, &user.groups, explicit)
                .map(str::to_owned);
            let strict = masked || upstream.roles.least_privilege == LeastPrivilege::Strict;
            if let Some(role) = &role {
                *roles
                    .entry((route.upstream.to_owned(), role.clone()))
                    .or_default() |= strict;
            }
            identities.push((
                IdentityReport {
                    user: name.clone(),
                    groups: user.groups.clone(),
                    database: database.clone(),
                    upstream: route.upstream.to_owned(),
                    role,
                    masked,
                    verdict: Verdict::Unmapped,
                },
                strict,
            ));
        }
    }
    let mut role_reports = Vec::new();
    for (upstream_name, role) in roles.keys() {
        let upstream = &gw.upstreams[upstream_name];
        let result = check(&gw, upstream, role).await;
        let (report, error) = match result {
            Ok(report) => (Some(report), None),
            Err(e) => (None, Some(format!("role {role}: {e}"))),
        };
        role_reports.push(RoleReport {
            upstream: upstream_name.clone(),
            role: role.clone(),
            report,
            error,
        });
    }
    let identities = identities
        .into_iter()
        .map(|(mut i, strict)| {
            let Some(role) = &i.role else {
                return i;
            };
            let found = role_reports
                .iter()
                .find(|r| r.upstream == i.upstream && &r.role == role);
            i.verdict = match found.and_then(|r| r.report.as_ref()) {
                None => Verdict::Error,
                Some(p) if p.findings.is_empty() => Verdict::Pass,
                Some(_) if strict => Verdict::Fail,
                Some(_) => Verdict::Warn,
            };
            i
        })
        .collect();
    Ok(Diagnosis {
        identities,
        roles: role_reports,
    })
}

/// Logs in as the role (its credential must work), then checks it from
/// the catalog role against the masked tables.
async fn check(
    gw: &Gateway,
    upstream: &crate::auth::backend::Upstream,
    role: &str,
) -> Result<Report, String> {
    let login_role = upstream
        .role(role)
        .ok_or_else(|| "no credential configured".to_owned())?;
    let params = [("application_name".to_owned(), "pgward-doctor".to_owned())];
    let login = upstream
        .login(login_role, &upstream.config.dbname, &params)
        .await
        .map_err(|e| match e {
            crate::error::SessionError::BackendUnavailable { detail, .. } => {
                format!("cannot log in as {role}: {detail}")
            }
            other => format!("cannot log in as {role}: {other}"),
        })?;
    drop(login);
    let map = match gw.masks.get(&upstream.config.name) {
        Some(m) if !gw.rules.load().masking.rules.is_empty() => {
            Some(m.ensure().await.map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let checked = gw
        .role_checks
        .report(upstream, role, map.as_ref(), Duration::ZERO)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::unwrap_or_clone(checked.report))
}

/// The diagnosis as plain text.
pub fn render(d: &Diagnosis) -> String {
    let mut out = String::new();
    for r in &d.roles {
        match (&r.report, &r.error) {
            (Some(p), _) => {
                let verdict = if p.findings.is_empty() {
                    "passes"
                } else {
                    "FAILS"
                };
                let _ = writeln!(
                    out,
                    "upstream {}, role {}: {verdict} the least-privilege check",
                    r.upstream, p.role
                );
                for f in &p.findings {
                    let _ = writeln!(
                        out,
                        "  - {} (must be a role that {})",
                        f.what,
                        f.condition.requirement()
                    );
                    for fix in &f.fixes {
                        let _ = writeln!(out, "      fix: {fix}");
                    }
                }
                let readable = if p.readable_masked.is_empty() {
                    "none".to_owned()
                } else {
                    p.readable_masked.join(", ")
                };
                let _ = writeln!(out, "  reads masked tables: {readable}");
                for rule in &p.rules_needed {
                    let _ = writeln!(out, "  only pgward's built-in rules stop it from: {rule}");
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "upstream {}: cannot check {e}", r.upstream);
            }
            (None, None) => {}
        }
    }
    let _ = writeln!(out);
    for i in &d.identities {
        let role = i.role.as_deref().unwrap_or("(none)");
        let masked = if i.masked { ", masked columns" } else { "" };
        let verdict = match i.verdict {
            Verdict::Pass => "ok",
            Verdict::Warn => "WARN: the role is not least-privilege (logged at each login)",
            Verdict::Fail => "FAIL: refused at login until the role is fixed",
            Verdict::Unmapped => "REFUSED: no role mapped",
            Verdict::Error => "ERROR: the role could not be checked",
        };
        let _ = writeln!(
            out,
            "identity {} [{}] on database {} -> role {role}{masked}: {verdict}",
            i.user,
            i.groups.join(", "),
            i.database
        );
    }
    let _ = writeln!(
        out,
        "\nverdict: {}",
        if d.failed() {
            "FAIL (an identity that must be least-privilege is not)"
        } else {
            "pass"
        }
    );
    out
}
