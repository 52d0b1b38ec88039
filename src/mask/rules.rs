//! Mask rules, typed: column patterns, a strategy, and who they apply to.

use super::strategy::{HashKey, Strategy};
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
    /// Users the rule applies to (none listed: everyone).
    pub(crate) users: Vec<String>,
    /// Groups the rule applies to.
    pub(crate) groups: Vec<String>,
    /// Users never masked by it.
    pub(crate) exempt_users: Vec<String>,
    /// Groups never masked by it.
    pub(crate) exempt_groups: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::masking::compile;
    use crate::config::raw::RawMasking;

    fn who(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| (*g).into()).collect(),
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
