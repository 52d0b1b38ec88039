//! Rules: an ordered list, first match wins, evaluated as a pure function of
//! (statement facts, identity). No I/O here.

use super::facts::{QualName, Unit};
use super::kind::Kind;
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the statement run (no later rule is consulted).
    Allow,
    /// Refuse it with SQLSTATE 42501.
    Deny,
    /// Hold it for a person's approval (docs/approvals.md): the verdict is
    /// [`Verdict::Approval`] with the rule's [`RuleApproval`].
    RequireApproval,
    /// Write a log line and go on to the next rule.
    Log,
}

impl Action {
    /// Parses a config value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allow" => Self::Allow,
            "deny" => Self::Deny,
            "require_approval" => Self::RequireApproval,
            "log" => Self::Log,
            _ => return None,
        })
    }

    /// Whether an unqualified name must be matched against every schema (a
    /// rule that restricts or watches) rather than only the search path.
    fn restrictive(self) -> bool {
        self != Self::Allow
    }
}

/// A `*`-glob over one name part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A glob from its text.
    pub fn new(s: &str) -> Self {
        Self(s.to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` matches (`*` stands for any run of characters).
    pub fn matches(&self, s: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), s.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == b'*')
    }
}

/// `schema.name` or `name`, each part a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    /// Schema part, if the pattern has one.
    pub schema: Option<Glob>,
    /// Name part.
    pub name: Glob,
}

impl NamePattern {
    /// Parses `schema.name` or `name`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let (a, b) = (parts.next()?, parts.next());
        if parts.next().is_some() || a.is_empty() || b.is_some_and(str::is_empty) {
            return None;
        }
        Some(match b {
            Some(name) => Self {
                schema: Some(Glob::new(a)),
                name: Glob::new(name),
            },
            None => Self {
                schema: None,
                name: Glob::new(a),
            },
        })
    }

    /// Whether the pattern covers `q`. An unqualified `q` may live in any
    /// schema: a restrictive rule assumes the worst (any schema), an allow
    /// rule the least (only schemas on the assumed search path).
    fn covers(&self, q: &QualName, restrictive: bool, search_path: &[String]) -> bool {
        if !self.name.matches(&q.name) {
            return false;
        }
        match (&self.schema, &q.schema) {
            (None, _) => true,
            (Some(p), Some(s)) => p.matches(s),
            (Some(p), None) => restrictive || search_path.iter().any(|s| p.matches(s)),
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name, quoted in denials and logs.
    pub name: Arc<str>,
    /// What it does.
    pub action: Action,
    /// Extra text for the denial message.
    pub message: Option<String>,
    /// Hint for the client.
    pub hint: Option<String>,
    /// Identities it applies to (empty with `groups` empty: everyone).
    pub users: Vec<String>,
    /// Groups it applies to.
    pub groups: Vec<String>,
    /// Statement kinds (`None`: any).
    pub kinds: Option<BTreeSet<Kind>>,
    /// Relations, any of which must be named (empty: no condition).
    pub relations: Vec<NamePattern>,
    /// Functions, any of which must be called (empty: no condition).
    pub functions: Vec<NamePattern>,
    /// Settings (SET / RESET / SHOW / set_config), any of which must be named.
    pub settings: Vec<String>,
    /// Only UPDATE / DELETE without WHERE.
    pub without_where: bool,
    /// A regex over the normalized text (literals as `?`, no comments).
    pub text: Option<Regex>,
    /// `require_approval` only: who approves, how.
    pub approval: Option<Arc<RuleApproval>>,
}

pub use crate::config::approvals::RuleApproval;

pub use crate::auth::identity::Identity;

/// The rules that apply to one identity, as a bitset over their positions in
/// the [`RuleSet`]. A verdict depends on the identity only through this set
/// (a rule's `users` / `groups`), so verdict caches are keyed by it: two
/// identities to which the same rules apply share cached verdicts, whatever
/// way they authenticated. Each [`RuleSet`] (and so each reload) has caches
/// of its own, so the set never outlives the rules it indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Up to 128 rules: inline, so building and cloning a cache key
    /// allocates nothing (this runs on every judged message).
    Small(u128),
    /// More rules.
    Large(Arc<[u64]>),
}

impl Audience {
    fn contains(&self, rule: usize) -> bool {
        match self {
            Self::Small(bits) => rule < 128 && bits & (1 << rule) != 0,
            Self::Large(words) => words
                .get(rule / 64)
                .is_some_and(|word| word & (1 << (rule % 64)) != 0),
        }
    }
}

impl Rule {
    /// Whether the rule applies to `who` (its `users` and `groups`).
    pub fn applies_to(&self, who: &Identity) -> bool {
        (self.users.is_empty() && self.groups.is_empty())
            || self.users.contains(&who.user)
            || self.groups.iter().any(|g| who.groups.contains(g))
    }

    /// Whether the rule matches `unit`, for an identity it applies to; `text`
    /// is the normalized text of the statement the unit belongs to.
    ///
    /// Name lists cut both ways: a restrictive rule (deny, approval, log)
    /// matches when *any* named relation or function is covered, an allow
    /// rule only when *every* one is (`DROP TABLE scratch, orders` is not
    /// allowed by a rule for `scratch`).
    pub fn matches(&self, unit: &Unit, text: &str, search_path: &[String]) -> bool {
        let restrictive = self.action.restrictive();
        let names = |patterns: &[NamePattern], names: &BTreeSet<QualName>| {
            let covered = |q: &QualName| {
                patterns
                    .iter()
                    .any(|p| p.covers(q, restrictive, search_path))
            };
            patterns.is_empty()
                || if restrictive {
                    names.iter().any(covered)
                } else {
                    names.iter().all(covered)
                }
        };
        self.kinds.as_ref().is_none_or(|k| k.contains(&unit.kind))
            && (!self.without_where || unit.unbounded_write)
            && names(&self.relations, &unit.relations)
            && names(&self.functions, &unit.functions)
            && (self.settings.is_empty()
                || unit
                    .setting
                    .as_ref()
                    .is_some_and(|s| self.settings.iter().any(|x| x.eq_ignore_ascii_case(s))))
            && self.text.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// SQLSTATE.
    pub code: &'static str,
    /// The client's message.
    pub message: String,
    /// What was refused (kind and relations).
    pub detail: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// Where in the text (1-based, in characters), for parse errors.
    pub position: Option<u32>,
}

/// A statement that waits for a person's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalNeeded {
    /// The rule that asks (`default_action` for the default action).
    pub rule: Arc<str>,
    /// Its message.
    pub message: Option<String>,
    /// Who approves, how.
    pub approval: Arc<RuleApproval>,
    /// What needs approval (kind and relations).
    pub detail: String,
    /// The rule's hint, if any.
    pub hint: Option<String>,
}

impl ApprovalNeeded {
    /// The refusal where no approval can be asked for (a startup
    /// parameter): the statement does not run.
    pub fn denial(&self) -> Denial {
        let mut message = format!(
            "statement requires approval by pgward rule \"{}\"",
            self.rule
        );
        if let Some(m) = &self.message {
            message.push_str(": ");
            message.push_str(m);
        }
        Denial {
            code: "42501",
            message,
            detail: Some(self.detail.clone()),
            hint: Some(
                self.hint
                    .clone()
                    .unwrap_or_else(|| "It cannot be approved here: run it in a session.".into()),
            ),
            position: None,
        }
    }
}

/// The decision on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it; these `log` rules matched.
    Allow(Vec<Arc<str>>),
    /// Refuse it.
    Deny(Denial),
    /// Hold it for approval (no unit is denied; the first unit that needs
    /// approval names the rule). The whole message waits.
    Approval(Box<ApprovalNeeded>),
}

/// The action for statements no rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    /// Allow (a denylist).
    Allow,
    /// Deny (an allowlist).
    Deny,
    /// Hold for approval.
    RequireApproval,
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// User rules, then the built-in ones when enabled.
    pub rules: Vec<Rule>,
    /// For statements no rule decides.
    pub default_action: DefaultAction,
    /// With `default_action = "require_approval"`: `[approvals]`' approvers.
    pub default_approval: Option<Arc<RuleApproval>>,
    /// Schemas pgward assumes an unqualified name resolves to (for allow rules).
    pub search_path: Vec<String>,
    /// Most cached verdicts.
    pub cache_size: u64,
    /// Whether (and how fresh) the code statements run without naming it
    /// is resolved through the database's catalog (`policy.called_code`);
    /// `None`: only the statement's own text is judged.
    pub called_code: Option<super::called::Freshness>,
}

fn describe(unit: &Unit) -> String {
    let mut d = unit.kind.name().to_owned();
    let names: Vec<String> = unit
        .relations
        .iter()
        .chain(&unit.functions)
        .take(4)
        .map(ToString::to_string)
        .collect();
    if !names.is_empty() {
        d.push_str(" on ");
        d.push_str(&names.join(", "));
    }
    if unit.unbounded_write {
        d.push_str(" without WHERE");
    }
    if let Some(origin) = &unit.origin {
        d.push_str(", ");
        d.push_str(origin);
    }
    d
}

impl RuleSet {
    /// Whether no statement can ever be refused or logged: then pgward does
    /// not even parse.
    pub fn is_inert(&self) -> bool {
        self.rules.is_empty() && self.default_action == DefaultAction::Allow
    }

    /// The rules that apply to `who`.
    pub fn audience(&self, who: &Identity) -> Audience {
        let applies = self.rules.iter().map(|rule| rule.applies_to(who));
        if self.rules.len() <= 128 {
            let bits = applies
                .enumerate()
                .fold(0, |bits, (i, yes)| bits | (u128::from(yes) << i));
            return Audience::Small(bits);
        }
        let mut words = vec![0u64; self.rules.len().div_ceil(64)];
        for (i, yes) in applies.enumerate() {
            words[i / 64] |= u64::from(yes) << (i % 64);
        }
        Audience::Large(words.into())
    }

    /// Judges the units of one message for an identity to which the rules in
    /// `audience` apply: each unit goes through the rules in order; the first
    /// refusal refuses the whole message.
    pub fn judge<'a>(
        &self,
        units: impl IntoIterator<Item = (&'a Unit, &'a str)>,
        audience: &Audience,
    ) -> Verdict {
        let mut logged = Vec::new();
        // The first unit that needs approval; a later unit's denial wins.
        let mut approval: Option<ApprovalNeeded> = None;
        for (unit, text) in units {
            let mut decided = false;
            for (i, rule) in self.rules.iter().enumerate() {
                if !audience.contains(i) || !rule.matches(unit, text, &self.search_path) {
                    continue;
                }
                match rule.action {
                    Action::Log => {
                        if !logged.contains(&rule.name) {
                            logged.push(Arc::clone(&rule.name));
                        }
                    }
                    Action::Allow => {
                        decided = true;
                        break;
                    }
                    Action::Deny => return Verdict::Deny(rule_denial(rule, unit)),
                    Action::RequireApproval => {
                        match &rule.approval {
                            Some(settings) => {
                                approval.get_or_insert_with(|| ApprovalNeeded {
                                    rule: Arc::clone(&rule.name),
                                    message: rule.message.clone(),
                                    approval: Arc::clone(settings),
                                    detail: describe(unit),
                                    hint: rule.hint.clone(),
                                });
                            }
                            // Compiled without approval settings: fail closed.
                            None => return Verdict::Deny(rule_denial(rule, unit)),
                        }
                        decided = true;
                        break;
                    }
                }
            }
            if !decided {
                match (self.default_action, &self.default_approval) {
                    (DefaultAction::Allow, _) => {}
                    (DefaultAction::RequireApproval, None) => {
                        return Verdict::Deny(Denial {
                            code: "42501",
                            message: "statement denied by pgward: it needs approval (default_action = \"require_approval\") and no approvers are configured".into(),
                            detail: Some(describe(unit)),
                            hint: None,
                            position: None,
                        })
                    }
                    (DefaultAction::Deny, _) => {
                        return Verdict::Deny(Denial {
                            code: "42501",
                            message: "statement denied by pgward: no rule allows it (default_action = \"deny\")".into(),
                            detail: Some(describe(unit)),
                            hint: Some("Ask an administrator to add a rule that allows it.".into()),
                            position: None,
                        })
                    }
                    (DefaultAction::RequireApproval, Some(settings)) => {
                        approval.get_or_insert_with(|| ApprovalNeeded {
                            rule: Arc::from("default_action"),
                            message: Some("no rule allows it (default_action = \"require_approval\")".into()),
                            approval: Arc::clone(settings),
                            detail: describe(unit),
                            hint: None,
                        });
                    }
                }
            }
        }
        match approval {
            Some(a) => Verdict::Approval(Box::new(a)),
            None => Verdict::Allow(logged),
        }
    }
}

fn rule_denial(rule: &Rule, unit: &Unit) -> Denial {
    let default_hint =
        "pgward refused this statement before it reached the database; the session goes on.";
    let mut message = format!("statement denied by pgward rule \"{}\"", rule.name);
    if let Some(m) = &rule.message {
        message.push_str(": ");
        message.push_str(m);
    }
    // Code the statement runs without naming it: say where it was found.
    if let Some(origin) = &unit.origin {
        message.push_str(" (");
        message.push_str(origin);
        message.push(')');
    }
    Denial {
        code: "42501",
        message,
        detail: Some(describe(unit)),
        hint: Some(rule.hint.clone().unwrap_or_else(|| default_hint.into())),
        position: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, s, m) in [
            ("dblink*", "dblink_exec", true),
            ("dblink*", "dblink", true),
            ("dblink*", "xdblink", false),
            ("lo_*", "lo_import", true),
            ("pg_ls_*dir", "pg_ls_waldir", true),
            ("pg_ls_*dir", "pg_ls_dir", true),
            ("pg_ls_*dir", "pg_ls_dirs", false),
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(Glob::new(p).matches(s), m, "{p} ~ {s}");
        }
    }

    #[test]
    fn unqualified_names_and_the_search_path() {
        let p = NamePattern::parse("public.orders").unwrap();
        let path = vec!["pg_catalog".to_owned(), "public".to_owned()];
        let bare = QualName::bare("orders");
        assert!(p.covers(&bare, true, &path));
        assert!(p.covers(&bare, false, &path));
        assert!(p.covers(&bare, true, &[]), "a deny rule assumes any schema");
        assert!(
            !p.covers(&bare, false, &[]),
            "an allow rule only the search path"
        );
        assert!(!p.covers(&QualName::qualified("other", "orders"), true, &path));
        assert!(NamePattern::parse("a.b.c").is_none());
        assert!(NamePattern::parse(".b").is_none());
    }
}
